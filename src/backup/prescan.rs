//! A quick pass over the sources beside the backup's walk, for the progress bar's ETA: it
//! lists folders and reads the metadata of their entries, nothing else.
//!
//! Guarantees: reads no file content and writes nothing; follows no symlink; honours excludes,
//! exclude markers and `--one-file-system` as the walk does, so the total it counts is what the
//! walk will read. Errors are ignored (the walk reports them).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::Excludes;
use crate::walk::{self, DirEntry};

/// Visits the sources (as `walk::prepare_sources` returns them) depth first and calls
/// `on_file` with the size of every regular file not excluded.
pub fn prescan(sources: &[PathBuf], excludes: &Excludes, mut on_file: impl FnMut(u64)) {
    let mut stack: Vec<(DirEntry, Option<u64>)> = sources
        .iter()
        .rev()
        .map(|p| {
            let entry = DirEntry {
                name: p.file_name().map(walk::name_bytes).unwrap_or_default(),
                path: p.clone(),
                metadata: walk::long_path::symlink_metadata(p),
            };
            (entry, None)
        })
        .collect();
    while let Some((entry, device)) = stack.pop() {
        let Ok(meta) = &entry.metadata else { continue };
        if excludes.excludes(
            &entry.path,
            &entry.name,
            meta.is_file().then_some(meta.len()),
        ) {
            continue;
        }
        if meta.is_file() {
            on_file(meta.len());
            continue;
        }
        let device = device.unwrap_or(meta.dev());
        let crosses = excludes.one_file_system && meta.dev() != device;
        if !meta.is_dir() || crosses || excludes.has_marker(&entry.path) {
            continue;
        }
        if let Ok(entries) = walk::read_dir_sorted(&entry.path, None) {
            stack.extend(entries.into_iter().rev().map(|e| (e, Some(device))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::ExcludeOptions;

    #[test]
    fn counts_the_bytes_the_walk_would_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::write(root.join("a/one"), vec![1; 10]).unwrap();
        std::fs::write(root.join("a/b/two"), vec![2; 200]).unwrap();
        std::fs::write(root.join("a/skip.tmp"), vec![3; 3000]).unwrap();
        std::fs::write(root.join("cache/CACHEDIR.TAG"), b"x").unwrap();
        std::fs::write(root.join("cache/big"), vec![4; 40000]).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link")).unwrap();
        let excludes = Excludes::new(&ExcludeOptions {
            patterns: vec!["*.tmp".into()],
            if_present: vec!["CACHEDIR.TAG".into()],
            ..Default::default()
        })
        .unwrap();
        let mut total = 0;
        prescan(&[root.to_path_buf()], &excludes, |n| total += n);
        assert_eq!(
            total, 210,
            "excluded, marked and linked-to bytes are not counted"
        );
    }
}
