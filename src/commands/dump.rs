//! `cairn dump SNAPSHOT PATH`: write one file of a snapshot to standard output, verified blob
//! by blob (`cairn dump latest db.sql | psql mydb` restores a database); for a folder, a tar
//! archive of it.
//!
//! A blob that cannot be read stops the dump with the repository's error (exit code "damaged"),
//! and a tar archive is then left cut short, without the end-of-archive blocks, so that `tar`
//! reading it fails too instead of unpacking a partial tree as if it were whole.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn::blobs::{BlobReader, find_node};
use cairn::error::{Error, Result};
use cairn::ids::{BlobId, TreeId};
use cairn::snapshot;
use cairn::terminal;
use cairn::tree::{Node, NodeKind};
use cairn::walk::os_string;

use cairn::restore::FirstPaths;

use super::{Context, Outcome, path_in_snapshot};

mod pax;
use crate::cli::DumpArgs;

/// A file's content as a reader, one verified blob at a time.
struct ContentReader<'r, 'a> {
    reader: &'r BlobReader<'a>,
    node: &'r Node,
    blobs: std::slice::Iter<'r, BlobId>,
    /// Bytes the blobs held so far: a file must hold exactly its recorded size (a tar
    /// header announces it, and the bytes after it are read as the next header).
    held: u64,
    current: io::Cursor<Vec<u8>>,
    /// The repository's error behind a failed read, to report instead of an I/O error.
    failed: Option<Error>,
}

impl ContentReader<'_, '_> {
    /// The error for a file whose blobs hold more or less than its recorded size.
    fn sizes_differ(&self) -> Error {
        let (size, held) = (self.node.size, self.held);
        let held = match held > size {
            true => format!("more than {size}"),
            false => held.to_string(),
        };
        let name = String::from_utf8_lossy(&self.node.name);
        Error::corrupt(
            "file",
            name,
            format!("its entry says {size} bytes but its blobs hold {held}"),
        )
    }

    /// The error to report for a copy from this reader that failed with `e`.
    fn error(&mut self, e: io::Error) -> Error {
        self.failed.take().unwrap_or_else(|| to_stdout(e))
    }
}

impl Read for ContentReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            let blob = match self.blobs.next() {
                Some(id) => self.reader.blob(id),
                None if self.held == self.node.size => return Ok(0),
                None => Err(self.sizes_differ()),
            };
            let blob = blob.and_then(|data| {
                self.held += data.len() as u64;
                match self.held > self.node.size {
                    true => Err(self.sizes_differ()),
                    false => Ok(data),
                }
            });
            match blob {
                Ok(data) => self.current = io::Cursor::new(data),
                Err(e) => {
                    let message = e.to_string();
                    self.failed = Some(e);
                    return Err(io::Error::other(message));
                }
            }
        }
    }
}

fn content<'r, 'a>(reader: &'r BlobReader<'a>, node: &'r Node) -> ContentReader<'r, 'a> {
    ContentReader {
        reader,
        node,
        blobs: node.content.iter(),
        held: 0,
        current: io::Cursor::new(Vec::new()),
        failed: None,
    }
}

pub fn run(ctx: &Context, args: &DumpArgs) -> Result<Outcome> {
    let preparing = ctx.prepare_index_for_reading();
    let repo = ctx.open_repo()?;
    let _lock = ctx.lock(&repo, false)?;
    let index = ctx.open_prepared_index_for_reading(&repo, preparing)?;
    let (id, snap) = snapshot::find(&index, &args.snapshot)?;
    let path = path_in_snapshot(&args.path);
    let shown = String::from_utf8_lossy(path);
    let not_found = || Error::PathNotInSnapshot {
        snapshot: id.short(),
        path: shown.to_string(),
    };
    let node = find_node(&repo, &index, &snap.tree, path).map_err(|e| match e {
        Error::PathNotInSnapshot { .. } => not_found(),
        other => other,
    })?;
    let reader = BlobReader::new(&repo, index);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let left_out = match node {
        Some(n) if n.kind == NodeKind::File => {
            let mut file = content(&reader, &n);
            io::copy(&mut file, &mut out).map_err(|e| file.error(e))?;
            0
        }
        Some(n) if n.kind == NodeKind::Dir => {
            let base = PathBuf::from(os_string(&n.name));
            write_archive(&mut out, &reader, |archive| archive.dir(&n, &base))?
        }
        None => write_archive(&mut out, &reader, |archive| {
            archive.tree(&snap.tree, &PathBuf::new())
        })?,
        Some(_) => {
            return Err(Error::Invalid(format!(
                "{shown} in snapshot {} is neither a file nor a folder",
                id.short()
            )));
        }
    };
    out.flush().map_err(to_stdout)?;
    Ok(match left_out {
        0 => Outcome::Success,
        _ => Outcome::Partial,
    })
}

/// A tar archive of what `fill` appends, ended only if all of it was appended; returns how
/// many entries were left out of it.
fn write_archive<'r, 'a, W: Write>(
    out: W,
    reader: &'r BlobReader<'a>,
    fill: impl FnOnce(&mut Archive<'r, 'a, W>) -> Result<()>,
) -> Result<u64> {
    let mut archive = Archive {
        tar: tar::Builder::new(out),
        reader,
        first_paths: FirstPaths::default(),
        left_out: 0,
    };
    if let Err(e) = fill(&mut archive) {
        // Dropped, the builder would write the end-of-archive blocks.
        std::mem::forget(archive.tar);
        return Err(e);
    }
    let left_out = archive.left_out;
    archive.tar.into_inner().map_err(to_stdout)?;
    Ok(left_out)
}

/// A tar archive being written: GNU headers (long names and link targets), each preceded by
/// a PAX header when the entry has more to say (see `pax`); the later links of a file with
/// several are hard links to its first path, as restore makes them.
struct Archive<'r, 'a, W: Write> {
    tar: tar::Builder<W>,
    reader: &'r BlobReader<'a>,
    first_paths: FirstPaths,
    /// Entries not archived (the dump is then partial).
    left_out: u64,
}

impl<W: Write> Archive<'_, '_, W> {
    fn dir(&mut self, node: &Node, path: &Path) -> Result<()> {
        let mut h = self.header(node, tar::EntryType::Directory, 0, path)?;
        self.append(&mut h, path, None, io::empty())
            .map_err(to_stdout)?;
        match node.subtree {
            Some(sub) => self.tree(&sub, path),
            None => Ok(()),
        }
    }

    fn tree(&mut self, tree: &TreeId, at: &Path) -> Result<()> {
        if at.components().count() > cairn::walk::MAX_DEPTH {
            let max = cairn::walk::MAX_DEPTH;
            return Err(Error::Invalid(format!(
                "{at:?} is nested deeper than {max} folders"
            )));
        }
        let mut previous: Option<Vec<u8>> = None;
        for node in self.reader.tree(tree)?.nodes {
            cairn::restore::check_name(at, &node.name)?;
            // A name twice (older versions could write such trees): extracting the second
            // entry could replace the first or write through it (a symlink, then a folder of
            // that name), so only the first is archived, as restore does.
            if previous.as_deref() == Some(&node.name) {
                self.left_out += 1;
                eprintln!(
                    "cairn: warning: the snapshot lists {:?} twice in folder {:?}; only the first was archived",
                    String::from_utf8_lossy(&node.name),
                    at.display().to_string()
                );
                continue;
            }
            previous = Some(node.name.clone());
            let path = at.join(os_string(&node.name));
            match node.kind {
                NodeKind::Dir => self.dir(&node, &path)?,
                NodeKind::File => self.file(&node, &path)?,
                NodeKind::Symlink => {
                    let mut h = self.header(&node, tar::EntryType::Symlink, 0, &path)?;
                    let target = node.link_target.as_deref().unwrap_or_default();
                    self.append(&mut h, &path, Some(target), io::empty())
                        .map_err(to_stdout)?;
                }
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                    self.special(&node, &path)?;
                }
                // A socket cannot be archived (tar has no type for it).
                NodeKind::Socket => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, node: &Node, path: &Path) -> Result<()> {
        if let Some(first) = self.first_paths.get(node) {
            let mut h = self.header(node, tar::EntryType::Link, 0, path)?;
            let first = first.as_os_str().as_bytes();
            return self
                .append(&mut h, path, Some(first), io::empty())
                .map_err(to_stdout);
        }
        self.first_paths.remember(node, path);
        let mut h = self.header(node, tar::EntryType::Regular, node.size, path)?;
        let mut file = content(self.reader, node);
        self.append(&mut h, path, None, &mut file)
            .map_err(|e| file.error(e))
    }

    fn special(&mut self, node: &Node, path: &Path) -> Result<()> {
        let kind = match node.kind {
            NodeKind::Fifo => tar::EntryType::Fifo,
            NodeKind::CharDevice => tar::EntryType::Char,
            _ => tar::EntryType::Block,
        };
        let mut h = self.header(node, kind, 0, path)?;
        if node.kind != NodeKind::Fifo {
            let rdev = node.rdev as libc::dev_t;
            h.set_device_major(libc::major(rdev))
                .and_then(|()| h.set_device_minor(libc::minor(rdev)))
                .map_err(to_stdout)?;
        }
        self.append(&mut h, path, None, io::empty())
            .map_err(to_stdout)
    }

    /// Appends an entry with its path and link target exactly as the snapshot has them: a
    /// GNU long-name (`L`) or long-link (`K`) entry before the header for one over 100
    /// bytes, whose header field then holds the first 100 bytes, as GNU tar writes them.
    /// (The tar crate cut such names at their first byte that is not UTF-8, and refused the
    /// entry when that left nothing; it also tidied short link targets: `a//b` became `a/b`.)
    fn append(
        &mut self,
        h: &mut tar::Header,
        path: &Path,
        link: Option<&[u8]>,
        data: impl Read,
    ) -> io::Result<()> {
        let path = path.as_os_str().as_bytes();
        let field = |to: &mut [u8; 100], bytes: &[u8]| {
            let n = bytes.len().min(100);
            to.fill(0);
            to[..n].copy_from_slice(&bytes[..n]);
        };
        if path.len() > 100 {
            self.long_name(tar::EntryType::GNULongName, path)?;
        }
        field(&mut h.as_old_mut().name, path);
        if let Some(link) = link {
            if link.len() > 100 {
                self.long_name(tar::EntryType::GNULongLink, link)?;
            }
            field(&mut h.as_old_mut().linkname, link);
        }
        h.set_cksum();
        self.tar.append(h, data)
    }

    fn long_name(&mut self, kind: tar::EntryType, bytes: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64 + 1);
        h.set_cksum();
        self.tar.append(&h, bytes.chain(&[0u8][..]))
    }

    /// The GNU header of an entry, after writing the PAX header it needs, if any.
    fn header(
        &mut self,
        node: &Node,
        kind: tar::EntryType,
        size: u64,
        path: &Path,
    ) -> Result<tar::Header> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(node.mode);
        h.set_uid(node.uid.into());
        h.set_gid(node.gid.into());
        h.set_mtime(node.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        let user = node.user.as_deref().filter(|u| h.set_username(u).is_err());
        let group = node
            .group
            .as_deref()
            .filter(|g| h.set_groupname(g).is_err());
        let records = pax::records(node, user, group);
        for (name, _) in node.xattrs.iter().filter(|(n, _)| !pax::can_hold(n)) {
            eprintln!(
                "warning: {}: extended attribute {} left out of the archive (PAX cannot \
                 hold a name with '=')",
                terminal::path(path),
                super::for_terminal_bytes(name),
            );
        }
        if !records.is_empty() {
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_size(records.len() as u64);
            x.set_mode(0o644);
            x.set_path("././@PaxHeader").map_err(to_stdout)?;
            x.set_cksum();
            self.tar.append(&x, &records[..]).map_err(to_stdout)?;
        }
        Ok(h)
    }
}

fn to_stdout(e: io::Error) -> Error {
    Error::io("standard output", e)
}
