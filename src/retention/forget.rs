//! `forget`: applies a retention policy (or a list of ids) to the snapshots and removes the
//! ones it does not keep; the data they alone referenced stays until `prune`.
//!
//! Guarantees: every check that can refuse (an unknown `--keep-tag`, a group that would lose
//! every snapshot) runs before anything is deleted. A removal is atomic as a whole: one
//! removal record naming every snapshot to go is written first (the commit point: from then
//! on the snapshots it names are hidden from every listing), then the snapshot files are
//! deleted, then the record. Killed in between, the repository shows the state after; the
//! next `forget` or `prune` finishes the deletions.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::{GroupBy, GroupKey, Policy, apply};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ids::SnapshotId;
use crate::repo::{FileKind, Repository, object_path};
use crate::snapshot::{Filter, Snapshot, removal};

pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    pub filter: Filter,
    pub allow_remove_all: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub id: SnapshotId,
    pub time_ns: i64,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Removed {
    pub id: SnapshotId,
    pub time_ns: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct GroupPlan {
    pub group: GroupKey,
    /// Newest first.
    pub keep: Vec<Kept>,
    /// Newest first.
    pub remove: Vec<Removed>,
}

impl GroupPlan {
    /// Puts a snapshot among those kept (with the reasons) or removed; `sort` then orders
    /// both newest first.
    fn place(&mut self, id: SnapshotId, time_ns: i64, kept_for: Option<Vec<String>>) {
        match kept_for {
            Some(reasons) => self.keep.push(Kept {
                id,
                time_ns,
                reasons,
            }),
            None => self.remove.push(Removed { id, time_ns }),
        }
    }

    fn sort(&mut self) {
        let newest_first = |time_ns: i64, id: SnapshotId| std::cmp::Reverse((time_ns, id));
        self.keep.sort_by_key(|k| newest_first(k.time_ns, k.id));
        self.remove.sort_by_key(|r| newest_first(r.time_ns, r.id));
    }
}

/// Decides, group by group, what the policy keeps. Refuses before anything is removed.
pub fn plan(snapshots: &[(SnapshotId, Snapshot)], opts: &ForgetOptions) -> Result<Vec<GroupPlan>> {
    if opts.policy.is_empty() {
        return Err(Error::Usage(
            "no policy given: use --keep-last, --keep-daily, … or name snapshots to forget".into(),
        ));
    }
    let chosen: Vec<&(SnapshotId, Snapshot)> = snapshots
        .iter()
        .filter(|(_, s)| opts.filter.matches(s))
        .collect();
    for tag in &opts.policy.tags {
        if tag.split(',').all(|t| t.trim().is_empty()) {
            return Err(Error::Usage("--keep-tag needs a tag".into()));
        }
        if !chosen.iter().any(|(_, s)| super::has_tags(s, tag)) {
            return Err(Error::Usage(format!(
                "--keep-tag {tag:?}: no snapshot has this tag (or all of these tags), so it would keep nothing; check the spelling"
            )));
        }
    }
    let repaired_by = repaired_by(&chosen);
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, &Snapshot)>> = BTreeMap::new();
    for (id, s) in chosen
        .iter()
        .filter(|(id, _)| !repaired_by.contains_key(id))
    {
        groups
            .entry(opts.group_by.key(s))
            .or_default()
            .push((*id, s));
    }
    let mut plans = Vec::new();
    for (group, members) in groups {
        let decisions = apply(&opts.policy, &members, crate::host::now_ns());
        let mut plan = GroupPlan {
            group,
            keep: Vec::new(),
            remove: Vec::new(),
        };
        for ((id, s), d) in members.iter().zip(decisions) {
            plan.place(*id, s.time_ns, d.keep.then_some(d.reasons));
        }
        plan.sort();
        if plan.keep.is_empty() && !opts.allow_remove_all {
            return Err(Error::Invalid(format!(
                "the policy would remove all {} snapshots of the group (host {:?}, paths {:?}, tags {:?}); nothing was removed. Pass --allow-remove-all if that is meant",
                plan.remove.len(),
                plan.group.host,
                plan.group.paths,
                plan.group.tags
            )));
        }
        plans.push(plan);
    }
    follow_repairs(&mut plans, &chosen, &repaired_by, &opts.policy.tags);
    Ok(plans)
}

/// For each chosen snapshot that `repair snapshots` replaced (without `--forget`), the
/// chosen snapshot that replaced it. An original retagged since (`tag` writes a new snapshot
/// superseding it) is found through its new id.
fn repaired_by(chosen: &[&(SnapshotId, Snapshot)]) -> HashMap<SnapshotId, SnapshotId> {
    let ids: HashSet<SnapshotId> = chosen.iter().map(|(id, _)| *id).collect();
    let retagged: HashMap<SnapshotId, SnapshotId> = chosen
        .iter()
        .filter_map(|(id, s)| s.supersedes.map(|old| (old, *id)))
        .collect();
    let current = |id: SnapshotId| newest(&retagged, id);
    chosen
        .iter()
        .filter_map(|(id, s)| s.original.map(|original| (current(original), *id)))
        .filter(|(original, copy)| original != copy && ids.contains(original))
        .collect()
}

/// The end of a chain of replacements from `id` (old id to new id). Honest chains end;
/// one that loops (crafted snapshots) ends where it would repeat.
fn newest(newer: &HashMap<SnapshotId, SnapshotId>, mut id: SnapshotId) -> SnapshotId {
    let mut seen = HashSet::from([id]);
    while let Some(&next) = newer.get(&id) {
        if !seen.insert(next) {
            break;
        }
        id = next;
    }
    id
}

/// A replaced original has the time, host and paths of its repaired copy: counted as well,
/// it would take a second slot of `--keep-last` or a bucket, and which of the two a bucket
/// kept would be a toss-up. So only the repaired copy is counted, and the original shares
/// its fate (kept beside it, or removed with it), unless a `--keep-tag` keeps it anyway.
fn follow_repairs(
    plans: &mut [GroupPlan],
    chosen: &[&(SnapshotId, Snapshot)],
    repaired_by: &HashMap<SnapshotId, SnapshotId>,
    keep_tags: &[String],
) {
    let mut plan_of: HashMap<SnapshotId, (usize, bool)> = HashMap::new();
    for (n, plan) in plans.iter().enumerate() {
        plan_of.extend(plan.keep.iter().map(|k| (k.id, (n, true))));
        plan_of.extend(plan.remove.iter().map(|r| (r.id, (n, false))));
    }
    for (id, s) in chosen.iter().filter(|(id, _)| repaired_by.contains_key(id)) {
        // A repair of a repair: the newest copy decides.
        let copy = newest(repaired_by, repaired_by[id]);
        let Some(&(n, kept)) = plan_of.get(&copy) else {
            continue;
        };
        let mut reasons: Vec<String> = keep_tags
            .iter()
            .filter(|t| super::has_tags(s, t))
            .map(|t| format!("tag {t}"))
            .collect();
        if kept {
            reasons.push(format!("original of repaired {}", copy.short()));
        }
        plans[n].place(*id, s.time_ns, (!reasons.is_empty()).then_some(reasons));
    }
    plans.iter_mut().for_each(GroupPlan::sort);
}

/// Removes snapshots: the removal record first, then each snapshot file, then the record.
pub fn remove(repo: &Repository, ids: &[SnapshotId]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    let record = repo.save_file(FileKind::Removal, &removal::encode(&sorted))?;
    failpoint::hit("forget-recorded");
    delete_removed(repo, &record, &sorted)
}

fn delete_removed(repo: &Repository, record: &[u8; 32], ids: &[SnapshotId]) -> Result<()> {
    for id in ids {
        repo.storage()
            .delete(&object_path(FileKind::Snapshot, &id.0))?;
        failpoint::hit("forget-removed");
    }
    repo.storage()
        .delete(&object_path(FileKind::Removal, record))
}

/// Finishes removals an interrupted `forget` committed; returns the snapshots that went.
/// A record that cannot be read is deleted (the snapshots it names are visible, as before
/// that forget). Needs the exclusive lock.
pub fn finish_pending(repo: &Repository) -> Result<Vec<SnapshotId>> {
    let mut removed = Vec::new();
    let mut unreadable = Vec::new();
    let pending = removal::pending(repo, &mut |record, e| {
        tracing::warn!("deleting an unreadable removal record: {e}");
        unreadable.push(record);
    })?;
    for record in unreadable {
        repo.storage()
            .delete(&object_path(FileKind::Removal, &record))?;
    }
    for (record, ids) in pending {
        delete_removed(repo, &record, &ids)?;
        removed.extend(ids);
    }
    Ok(removed)
}
