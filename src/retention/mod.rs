//! Retention policies for `forget`: which snapshots of a group a policy keeps, and by which
//! rule. The semantics are restic's:
//!
//! - Snapshots are taken newest first. `last N` keeps the N newest. `hourly`, `daily`,
//!   `weekly` (ISO weeks), `monthly` and `yearly N` look at the calendar bucket of each
//!   snapshot in local time and keep the newest snapshot of each of the N newest buckets that
//!   hold one; while a rule has count left, the oldest snapshot is kept too (it stands for the
//!   oldest bucket).
//! - `within D` keeps every snapshot newer than the newest snapshot's time minus D (calendar
//!   years and months on the local calendar, then days of 24 hours and hours).
//! - `tag T` keeps every snapshot carrying tag T (`tag a,b`: carrying both).
//! - The rules combine by union; a snapshot's reasons list every rule that kept it.
//! - Unlike restic, snapshots dated after now (a clock gone wrong) are always kept and count
//!   for no rule: they neither take the newest buckets nor push the window of `within` past
//!   the real snapshots.
//!
//! Guarantees: `apply` is pure (time zone from the process and the `now` given); it never keeps
//! nothing when the policy has a rule with a count, unless the group is empty.

use chrono::{DateTime, Datelike, Local, Months, NaiveDateTime, TimeZone, Timelike};

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::snapshot::Snapshot;

/// A span of calendar time, as `1y2m3d4h` (any subset, in that order or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalendarSpan {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl CalendarSpan {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Usage(format!(
                "duration {text:?}: use numbers with units y, m (months), w, d, h, e.g. 30d or 1y2m"
            ))
        };
        let mut span = CalendarSpan::default();
        let mut digits = String::new();
        let mut any = false;
        for c in text.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            let (field, n) = match c {
                'y' => (&mut span.years, n),
                'm' => (&mut span.months, n),
                'w' => (&mut span.days, n.checked_mul(7).ok_or_else(bad)?),
                'd' => (&mut span.days, n),
                'h' => (&mut span.hours, n),
                _ => return Err(bad()),
            };
            *field = field.checked_add(n).ok_or_else(bad)?;
            any = true;
        }
        if !digits.is_empty() || !any {
            return Err(bad());
        }
        Ok(span)
    }

    /// `t` minus this span, on the local calendar: the months are taken from the wall-clock
    /// time, so a result that falls in a daylight-saving change is still a time (the earlier
    /// of two, or the moment after a skipped hour) and never drops the months.
    fn before<Tz: TimeZone>(&self, t: DateTime<Tz>) -> DateTime<Tz> {
        let days_hours = chrono::Duration::try_days(self.days.into())
            .zip(chrono::Duration::try_hours(self.hours.into()))
            .and_then(|(d, h)| d.checked_add(&h));
        // Out of chrono's range: everything is within.
        let tz = t.timezone();
        let all = || tz.timestamp_nanos(i64::MIN);
        let minus = |t: DateTime<Tz>| {
            days_hours
                .and_then(|span| t.checked_sub_signed(span))
                .unwrap_or_else(all)
        };
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        if months == 0 {
            // No detour through the wall clock, which would move a time in a repeated hour.
            return minus(t);
        }
        let months = Months::new(months);
        let shifted = t
            .naive_local()
            .checked_sub_months(months)
            .and_then(|local| {
                let mapped = tz.from_local_datetime(&local);
                mapped.earliest().or_else(|| {
                    // In a skipped hour: an hour later is past the gap.
                    let later = local + chrono::Duration::hours(1);
                    tz.from_local_datetime(&later).earliest()
                })
            });
        shifted.map_or_else(all, minus)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<CalendarSpan>,
    pub tags: Vec<String>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    /// The rules that keep it (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`,
    /// `within 30d`, `tag T`).
    pub reasons: Vec<String>,
}

/// Maps a snapshot's local time (and its place, newest first) to its bucket for one rule.
type Bucketer = fn(&NaiveDateTime, usize) -> i64;

/// One counted rule: its name, count left, and the bucket of the last snapshot it kept.
struct Bucketed {
    name: &'static str,
    left: u32,
    last: Option<i64>,
    bucket: Bucketer,
}

fn buckets(p: &Policy) -> Vec<Bucketed> {
    let rules: [(&'static str, u32, Bucketer); 6] = [
        ("last", p.last, |_, nr| nr as i64),
        ("hourly", p.hourly, |t, _| {
            i64::from(t.year()) * 1_000_000
                + i64::from(t.month()) * 10_000
                + i64::from(t.day()) * 100
                + i64::from(t.hour())
        }),
        ("daily", p.daily, |t, _| {
            i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
        }),
        ("weekly", p.weekly, |t, _| {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }),
        ("monthly", p.monthly, |t, _| {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }),
        ("yearly", p.yearly, |t, _| i64::from(t.year())),
    ];
    rules
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(name, left, bucket)| Bucketed {
            name,
            left,
            last: None,
            bucket,
        })
        .collect()
}

/// True if the snapshot has every tag of `list` (`a,b` means both, as in restic).
pub fn has_tags(snapshot: &Snapshot, list: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|t| snapshot.tags.iter().any(|s| s == t))
}

fn within_label(s: &CalendarSpan) -> String {
    let mut out = String::from("within ");
    for (n, unit) in [
        (s.years, 'y'),
        (s.months, 'm'),
        (s.days, 'd'),
        (s.hours, 'h'),
    ] {
        if n > 0 {
            out += &format!("{n}{unit}");
        }
    }
    out
}

/// Decides for each snapshot of one group (in the order given) whether the policy keeps it,
/// with calendar buckets in the local time zone; `now_ns` tells which snapshots are dated in
/// the future.
pub fn apply(policy: &Policy, group: &[(SnapshotId, &Snapshot)], now_ns: i64) -> Vec<Decision> {
    apply_in(policy, group, &Local, now_ns)
}

/// `apply` with calendar buckets in the time zone `tz`.
pub fn apply_in<Tz: TimeZone>(
    policy: &Policy,
    group: &[(SnapshotId, &Snapshot)],
    tz: &Tz,
    now_ns: i64,
) -> Vec<Decision> {
    let at = |ns: i64| tz.timestamp_nanos(ns);
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by(|&a, &b| (group[b].1.time_ns, group[b].0).cmp(&(group[a].1.time_ns, group[a].0)));
    let mut decisions = vec![
        Decision {
            keep: false,
            reasons: Vec::new(),
        };
        group.len()
    ];
    // A snapshot dated after now (a clock set ahead) is kept and counts for no rule: it must
    // neither push the window of --keep-within past the real snapshots nor use up the
    // buckets and counts that they need.
    let (future, order): (Vec<usize>, Vec<usize>) = order
        .into_iter()
        .partition(|&i| group[i].1.time_ns > now_ns);
    for i in future {
        decisions[i].keep = true;
        decisions[i].reasons.push("dated in the future".into());
    }
    let newest_ns = order.first().map_or(now_ns, |&i| group[i].1.time_ns);
    let within_since = policy.within.map(|span| span.before(at(newest_ns)));
    let mut rules = buckets(policy);
    for (nr, &i) in order.iter().enumerate() {
        let snapshot = group[i].1;
        let time = at(snapshot.time_ns);
        let reasons = &mut decisions[i].reasons;
        for tag in &policy.tags {
            if has_tags(snapshot, tag) {
                reasons.push(format!("tag {tag}"));
            }
        }
        if let (Some(span), Some(since)) = (&policy.within, &within_since)
            && time > *since
        {
            reasons.push(within_label(span));
        }
        let oldest = nr + 1 == order.len();
        for rule in rules.iter_mut().filter(|r| r.left > 0) {
            let bucket = (rule.bucket)(&time.naive_local(), nr);
            if rule.last != Some(bucket) || oldest {
                rule.last = Some(bucket);
                rule.left -= 1;
                reasons.push(rule.name.to_string());
            }
        }
        decisions[i].keep = !decisions[i].reasons.is_empty();
    }
    decisions
}

/// Which fields snapshots are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl GroupBy {
    /// Parses `host,paths,tags` (any subset; empty for one group).
    pub fn parse(text: &str) -> Result<Self> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::Usage(format!(
                        "--group-by {other:?}: use host, paths and/or tags"
                    )));
                }
            }
        }
        Ok(g)
    }

    /// The group key of a snapshot: host, sorted paths, sorted tags (empty when not grouped by).
    pub fn key(&self, s: &Snapshot) -> GroupKey {
        let mut raw_paths = if self.paths {
            s.paths.clone()
        } else {
            Vec::new()
        };
        raw_paths.sort();
        let paths = raw_paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let mut tags = if self.tags {
            s.tags.clone()
        } else {
            Vec::new()
        };
        tags.sort();
        GroupKey {
            host: if self.host {
                s.hostname.clone()
            } else {
                String::new()
            },
            paths,
            paths_hex: crate::tree::all_hex_unless_utf8(&raw_paths),
            raw_paths,
            tags,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct GroupKey {
    pub host: String,
    /// For display: `raw_paths` as UTF-8, invalid bytes replaced.
    pub paths: Vec<String>,
    /// What groups: two sources whose names differ only in bytes that are not UTF-8 stay
    /// apart.
    #[serde(skip)]
    pub raw_paths: Vec<Vec<u8>>,
    /// `raw_paths` in hex, where one of them is not UTF-8 (after `raw_paths`, so that it
    /// does not change how groups sort).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths_hex: Option<Vec<String>>,
    pub tags: Vec<String>,
}

pub mod forget;

#[cfg(test)]
mod tests;
