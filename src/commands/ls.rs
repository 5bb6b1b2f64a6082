//! `cairn ls SNAPSHOT [PATH]`: list a folder of a snapshot (or everything below it with -R).

use cairn::blobs::{find_node, load_tree};
use cairn::error::{Error, Result};
use cairn::host::format_time;
use cairn::ids::TreeId;
use cairn::index::LocalIndex;
use cairn::repo::Repository;
use cairn::snapshot;
use cairn::tree::{Node, NodeKind};

use super::{Context, Outcome, Printer, add_hex, for_terminal_bytes, path_in_snapshot};
use crate::cli::LsArgs;

struct Lister<'a> {
    repo: &'a Repository,
    index: &'a LocalIndex,
    args: &'a LsArgs,
    /// Entries are printed as they are reached: a listing can hold millions.
    out: Printer,
    as_json: bool,
    printed: u64,
}

pub fn run(ctx: &Context, args: &LsArgs) -> Result<Outcome> {
    let (repo, index) = ctx.open()?;
    let (id, snap) = snapshot::find(&index, &args.snapshot)?;
    let path = path_in_snapshot(args.path.as_deref().unwrap_or_default());
    let node = find_node(&repo, &index, &snap.tree, path).map_err(|e| match e {
        Error::PathNotInSnapshot { path, .. } => Error::PathNotInSnapshot {
            snapshot: id.short(),
            path,
        },
        other => other,
    })?;
    let mut lister = Lister {
        repo: &repo,
        index: &index,
        args,
        out: Printer::new(),
        as_json: ctx.json,
        printed: 0,
    };
    let prefix = if path.is_empty() || path.starts_with(b"/") {
        path.to_vec()
    } else {
        [&b"/"[..], path].concat()
    };
    match node {
        None => lister.dir(&snap.tree, b"")?,
        Some(n) => match n.subtree {
            Some(sub) if n.kind == NodeKind::Dir => lister.dir(&sub, &prefix)?,
            _ => lister.print(&n, &prefix),
        },
    }
    if ctx.json {
        lister
            .out
            .write(if lister.printed == 0 { "[]\n" } else { "\n]\n" });
    }
    lister.out.finish()?;
    Ok(Outcome::Success)
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    // Per class: its rwx bits, and the special bit shown in its x place as `ls -l` does
    // (setuid, setgid: s or S; sticky: t or T).
    for (shift, special, shown) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (n.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, n.mode & special != 0) {
            (true, true) => shown,
            (false, true) => shown.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

impl Lister<'_> {
    fn dir(&mut self, tree: &TreeId, prefix: &[u8]) -> Result<()> {
        cairn::walk::check_depth(prefix)?;
        let tree = load_tree(self.repo, self.index, tree)?;
        for node in &tree.nodes {
            let path = [prefix, b"/", &node.name].concat();
            self.print(node, &path);
            if self.args.recursive
                && let Some(sub) = &node.subtree
            {
                self.dir(sub, &path)?;
            }
        }
        Ok(())
    }

    fn print(&mut self, n: &Node, path: &[u8]) {
        let target = n.link_target.as_deref();
        if self.as_json {
            let mut entry = serde_json::json!({
                "path": String::from_utf8_lossy(path),
                "type": n.kind.name(),
                "mode": n.mode,
                "size": n.size,
                "mtime": format_time(n.mtime_ns, 0),
                "uid": n.uid,
                "gid": n.gid,
                "user": n.user,
                "group": n.group,
                "link_target": target.map(String::from_utf8_lossy),
            });
            add_hex(&mut entry, "path_hex", path);
            add_hex(&mut entry, "link_target_hex", target.unwrap_or_default());
            let before = if self.printed == 0 { "[\n  " } else { ",\n  " };
            self.out.json(before, &entry);
            self.printed += 1;
            return;
        }
        if self.args.long {
            let link = n
                .link_target
                .as_ref()
                .map(|t| format!(" -> {}", for_terminal_bytes(t)))
                .unwrap_or_default();
            let line = format!(
                "{} {:>8} {:>8} {:>12} {} {}{link}\n",
                mode_string(n),
                n.user
                    .as_deref()
                    .map_or_else(|| n.uid.to_string(), super::for_terminal),
                n.group
                    .as_deref()
                    .map_or_else(|| n.gid.to_string(), super::for_terminal),
                n.size,
                format_time(
                    n.mtime_ns
                        .div_euclid(1_000_000_000)
                        .saturating_mul(1_000_000_000),
                    0
                ),
                for_terminal_bytes(path),
            );
            self.out.write(&line);
        } else {
            self.out.write(&format!("{}\n", for_terminal_bytes(path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: setuid, setgid and sticky bits were not shown.
    #[test]
    fn modes_show_special_bits_as_ls_does() {
        let mode = |kind, mode| {
            let mut n = Node::new(b"x".to_vec(), kind);
            n.mode = mode;
            mode_string(&n)
        };
        assert_eq!(mode(NodeKind::File, 0o644), "-rw-r--r--");
        assert_eq!(mode(NodeKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode(NodeKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode(NodeKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode(NodeKind::Dir, 0o1770), "drwxrwx--T");
    }
}
