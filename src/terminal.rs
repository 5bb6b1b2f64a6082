//! How names from the disk or a snapshot are shown to a person. Such a name may hold any
//! byte but `/` and NUL: shown as it is, a newline could fake lines of output and an escape
//! sequence could drive the terminal, and bytes that are not UTF-8 would all look alike.
//! Everything here escapes control characters, and bytes that are not UTF-8 as `\xNN`, so
//! that two names that differ print differently.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `for_terminal` for bytes that may not be UTF-8: a byte that is not part of a character is
/// written as `\xNN`, so that two names that differ only there print differently.
pub fn for_terminal_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&for_terminal(chunk.valid()));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A name or path for a terminal: control characters written as `\n`, `\t`, `\r` or `\xNN`
/// and a backslash as `\\` (as `ls -b` does), so that a file name can neither fake lines of
/// output nor send escape sequences to the terminal.
pub fn for_terminal(text: &str) -> String {
    escaped(text, true)
}

/// A message for a terminal: control characters escaped as by `for_terminal`, backslashes
/// left as they are (names a message quotes with `{:?}` are escaped already).
pub fn message_for_terminal(text: &str) -> String {
    escaped(text, false)
}

fn escaped(text: &str, backslash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// `for_terminal_bytes` of a path (for messages that name one).
pub fn path(path: &Path) -> String {
    for_terminal_bytes(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: names went to the terminal as they were, so a name holding a newline or
    /// an escape sequence could fake lines of `ls` output or drive the terminal.
    #[test]
    fn names_for_the_terminal_have_control_characters_escaped() {
        assert_eq!(for_terminal("plain/ä.txt"), "plain/ä.txt");
        assert_eq!(for_terminal("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(for_terminal("\u{1b}[2J"), "\\x1b[2J");
        assert_eq!(for_terminal("back\\slash"), "back\\\\slash");
        // Regression: invalid bytes were shown as U+FFFD, so `a\xfe` and `a\xff` looked alike.
        assert_eq!(for_terminal_bytes(b"a\xfe"), "a\\xfe");
        assert_eq!(for_terminal_bytes(b"a\xff\n\xc3\xa4"), "a\\xff\\n\u{e4}");
    }
}
