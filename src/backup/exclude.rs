//! Which source entries a backup leaves out: glob patterns, marker files, a size limit, and
//! other file systems.
//!
//! Pattern rules: a pattern without `/` matches an entry's name anywhere in the tree
//! (`*.tmp`, `node_modules`); a pattern with `/` matches the entry's absolute path
//! (`/srv/uploads/cache/**`, `**/.git`), or its end if it does not start with `/` or `**`
//! (`uploads/cache` is `**/uploads/cache`). `*` does not cross `/`; `**` does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::walk;

#[derive(Default, Clone)]
pub struct ExcludeOptions {
    pub patterns: Vec<String>,
    pub if_present: Vec<String>,
    pub larger_than: Option<u64>,
    pub one_file_system: bool,
}

pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    if_present: Vec<String>,
    larger_than: Option<u64>,
    pub one_file_system: bool,
}

impl Excludes {
    pub fn new(opts: &ExcludeOptions) -> Result<Self> {
        let mut by_name = GlobSetBuilder::new();
        let mut by_path = GlobSetBuilder::new();
        for p in &opts.patterns {
            let by_path_glob;
            let glob = match p.contains('/') {
                true => {
                    by_path_glob = walk::path_glob(p);
                    &by_path_glob
                }
                false => p,
            };
            let glob = GlobBuilder::new(glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Usage(format!("exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        // A marker is a file name: "", ".", ".." or a path would name something every
        // folder has (itself, its parent, one fixed file), so every folder, the sources
        // included, would be left out (an unset variable in `--exclude-if-present "$M"`).
        if let Some(bad) = opts
            .if_present
            .iter()
            .find(|m| matches!(m.as_str(), "" | "." | "..") || m.contains('/'))
        {
            return Err(Error::Usage(format!(
                "--exclude-if-present {bad:?}: give a file name, such as CACHEDIR.TAG"
            )));
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Usage(format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            by_name: build(by_name)?,
            by_path: build(by_path)?,
            if_present: opts.if_present.clone(),
            larger_than: opts.larger_than,
            one_file_system: opts.one_file_system,
        })
    }

    /// True if the entry at `path` (named `name`, of `size` bytes if a file) is left out.
    pub fn excludes(&self, path: &Path, name: &[u8], file_size: Option<u64>) -> bool {
        if self
            .larger_than
            .zip(file_size)
            .is_some_and(|(limit, size)| size > limit)
        {
            return true;
        }
        self.by_name.is_match(OsStr::from_bytes(name)) || self.by_path.is_match(path)
    }

    /// True if the directory holds one of the marker files (e.g. `CACHEDIR.TAG`).
    pub fn has_marker(&self, dir: &Path) -> bool {
        self.if_present
            .iter()
            .any(|m| crate::walk::long_path::symlink_metadata(&dir.join(m)).is_ok())
    }
}

/// Reads patterns from a file: one per line; blank lines and lines starting with `#` are
/// skipped.
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Parses sizes like `500`, `10k`, `500M`, `2G`, `1T` (binary units, case-insensitive, an
/// optional trailing `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| Error::Usage(format!("not a size: {text:?} (try 500M or 2G)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_or_paths() {
        let ex = Excludes::new(&ExcludeOptions {
            patterns: vec!["*.tmp".into(), "/srv/*/cache".into(), "**/.git".into()],
            larger_than: Some(100),
            ..Default::default()
        })
        .unwrap();
        assert!(ex.excludes(Path::new("/a/b/x.tmp"), b"x.tmp", None));
        assert!(!ex.excludes(Path::new("/a/b/x.tmpl"), b"x.tmpl", None));
        assert!(ex.excludes(Path::new("/srv/app/cache"), b"cache", None));
        assert!(!ex.excludes(Path::new("/srv/app/deep/cache"), b"cache", None));
        assert!(ex.excludes(Path::new("/home/u/p/.git"), b".git", None));
        assert!(ex.excludes(Path::new("/big"), b"big", Some(101)));
        assert!(!ex.excludes(Path::new("/small"), b"small", Some(100)));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("500").unwrap(), 500);
        assert_eq!(parse_size("10k").unwrap(), 10 * 1024);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
