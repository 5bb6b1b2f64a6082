//! PAX extended headers (POSIX.1-2001) for what a GNU tar header cannot hold: times to the
//! nanosecond and before 1970, owner and group names longer than its fields, and extended
//! attributes (`SCHILY.xattr.NAME`, as GNU tar `--xattrs` and bsdtar read them).

use cairn::tree::{Node, NodeKind};

/// The records of an entry's PAX header; empty when the GNU header says it all. `user` and
/// `group` are the names that did not fit in it.
pub fn records(node: &Node, user: Option<&str>, group: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if node.mtime_ns.rem_euclid(1_000_000_000) != 0 || node.mtime_ns < 0 {
        record(&mut out, b"mtime", time(node.mtime_ns).as_bytes());
    }
    // Folders carry no access time (0 stands for "not recorded").
    if node.kind != NodeKind::Dir {
        record(&mut out, b"atime", time(node.atime_ns).as_bytes());
    }
    if let Some(user) = user {
        record(&mut out, b"uname", user.as_bytes());
    }
    if let Some(group) = group {
        record(&mut out, b"gname", group.as_bytes());
    }
    for (name, value) in &node.xattrs {
        if can_hold(name) {
            record(&mut out, &[b"SCHILY.xattr.", &name[..]].concat(), value);
        }
    }
    out
}

/// Whether an extended attribute of this name can be written: a keyword ends at the first
/// `=`, so a name with one would be read back as another.
pub fn can_hold(xattr_name: &[u8]) -> bool {
    !xattr_name.contains(&b'=')
}

/// Appends `LEN KEY=VALUE\n`, where LEN counts the whole record, its own digits included.
fn record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Nanoseconds since 1970 as PAX writes times: seconds, then a fraction without trailing
/// zeros; negative before 1970 (`-1.5` is half a second before `-1`).
fn time(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    let (secs, frac) = (abs / 1_000_000_000, abs % 1_000_000_000);
    if frac == 0 {
        return format!("{sign}{secs}");
    }
    let digits = format!("{frac:09}");
    format!("{sign}{secs}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_its_own_length() {
        for value_len in [
            0, 1, 5, 6, 7, 90, 91, 92, 93, 94, 95, 994, 995, 996, 997, 9_994,
        ] {
            let mut out = Vec::new();
            record(&mut out, b"k", &vec![b'v'; value_len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{value_len}");
        }
    }

    #[test]
    fn times_are_exact_on_both_sides_of_1970() {
        assert_eq!(time(0), "0");
        assert_eq!(time(1_500_000_000), "1.5");
        assert_eq!(time(1_700_000_000_000_000_123), "1700000000.000000123");
        assert_eq!(time(-1_500_000_000), "-1.5");
        assert_eq!(time(-2_000_000_000), "-2");
        assert_eq!(time(i64::MIN), "-9223372036.854775808");
    }

    #[test]
    fn only_what_the_header_cannot_hold() {
        let mut dir = Node::new(b"d".to_vec(), NodeKind::Dir);
        dir.mtime_ns = 1_000_000_000;
        assert!(records(&dir, None, None).is_empty());
        let mut file = Node::new(b"f".to_vec(), NodeKind::File);
        file.mtime_ns = -1;
        file.atime_ns = 2_000_000_000;
        file.xattrs = vec![
            (b"user.a".to_vec(), b"x\ny".to_vec()),
            (b"user.b=c".to_vec(), b"lost".to_vec()),
        ];
        let text = records(&file, Some("a-very-long-user-name"), None);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "22 mtime=-0.000000001\n\
             11 atime=2\n\
             31 uname=a-very-long-user-name\n\
             27 SCHILY.xattr.user.a=x\ny\n"
        );
    }
}
