//! Policy tables: every expected list below was worked out by hand from a calendar (UTC, so
//! the tables do not depend on the machine's time zone).

use chrono::{NaiveDate, Utc};

use super::*;
use crate::snapshot::Snapshot;

fn snapshot_at(y: i32, m: u32, d: u32, h: u32, tags: &[&str]) -> Snapshot {
    let t = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, 0, 0)
        .unwrap()
        .and_utc();
    let mut s = crate::snapshot::tests::sample();
    s.time_ns = t.timestamp_nanos_opt().unwrap();
    s.tags = tags.iter().map(|t| t.to_string()).collect();
    s
}

/// Every night of 2025 at 02:00.
fn year_of_nights() -> Vec<Snapshot> {
    let mut out = Vec::new();
    let mut day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    while day.year() == 2025 {
        let tags: &[&str] = if day == NaiveDate::from_ymd_opt(2025, 6, 15).unwrap() {
            &["special"]
        } else {
            &[]
        };
        out.push(snapshot_at(2025, day.month(), day.day(), 2, tags));
        day = day.succ_opt().unwrap();
    }
    out
}

/// The time the tables are computed at: after every snapshot but those dated in the future.
fn now() -> i64 {
    snapshot_at(2026, 1, 1, 0, &[]).time_ns
}

/// The kept snapshots as `MM-DD HH` (or `YYYY-MM-DD` with `full`), oldest first, with reasons.
fn kept(policy: &Policy, snapshots: &[Snapshot]) -> Vec<(String, Vec<String>)> {
    let group: Vec<(SnapshotId, &Snapshot)> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| (SnapshotId([i as u8; 32]), s))
        .collect();
    let decisions = apply_in(policy, &group, &Utc, now());
    let mut out: Vec<(i64, String, Vec<String>)> = group
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d.keep)
        .map(|((_, s), d)| {
            let t = Utc.timestamp_nanos(s.time_ns);
            (s.time_ns, t.format("%Y-%m-%d %H").to_string(), d.reasons)
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, t, r)| (t, r)).collect()
}

fn dates(kept: &[(String, Vec<String>)]) -> Vec<String> {
    kept.iter().map(|(t, _)| t[5..10].to_string()).collect()
}

fn days(month: &str, from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|d| format!("{month}-{d:02}")).collect()
}

#[test]
fn seven_daily_four_weekly_twelve_monthly_over_a_year() {
    let policy = Policy {
        daily: 7,
        weekly: 4,
        monthly: 12,
        ..Policy::default()
    };
    let result = kept(&policy, &year_of_nights());
    // Monthly: the last night of each month from January to December (12). Weekly: the last
    // night of each ISO week: Wed 31 Dec (week 1 of 2026), Sun 28, 21 and 14 Dec. Daily: 25-31
    // Dec.
    let mut expected: Vec<String> = [
        "01-31", "02-28", "03-31", "04-30", "05-31", "06-30", "07-31", "08-31", "09-30", "10-31",
        "11-30", "12-14", "12-21",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(days("12", 25, 31));
    assert_eq!(dates(&result), expected);
    let reasons = |date: &str| {
        result
            .iter()
            .find(|(t, _)| &t[5..10] == date)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    assert_eq!(reasons("12-31"), ["daily", "weekly", "monthly"]);
    assert_eq!(reasons("12-28"), ["daily", "weekly"]);
    assert_eq!(reasons("12-21"), ["weekly"]);
    assert_eq!(reasons("11-30"), ["monthly"]);
    assert_eq!(reasons("12-25"), ["daily"]);
}

#[test]
fn each_rule_alone_over_a_year() {
    let nights = year_of_nights();
    let cases: Vec<(Policy, Vec<String>)> = vec![
        (
            Policy {
                last: 3,
                ..Policy::default()
            },
            days("12", 29, 31),
        ),
        (
            Policy {
                hourly: 5,
                ..Policy::default()
            },
            days("12", 27, 31),
        ),
        (
            Policy {
                daily: 3,
                ..Policy::default()
            },
            days("12", 29, 31),
        ),
        (
            Policy {
                weekly: 2,
                ..Policy::default()
            },
            vec!["12-28".into(), "12-31".into()],
        ),
        (
            Policy {
                monthly: 2,
                ..Policy::default()
            },
            vec!["11-30".into(), "12-31".into()],
        ),
        // One year holds one bucket; the count left keeps the oldest night too.
        (
            Policy {
                yearly: 3,
                ..Policy::default()
            },
            vec!["01-01".into(), "12-31".into()],
        ),
        // Newer than 31 Dec 02:00 minus 10 days, i.e. after 21 Dec 02:00.
        (
            Policy {
                within: Some(CalendarSpan::parse("10d").unwrap()),
                ..Policy::default()
            },
            days("12", 22, 31),
        ),
        // Newer than 30 Nov 02:00.
        (
            Policy {
                within: Some(CalendarSpan::parse("1m").unwrap()),
                ..Policy::default()
            },
            days("12", 1, 31),
        ),
        (
            Policy {
                tags: vec!["special".into()],
                ..Policy::default()
            },
            vec!["06-15".into()],
        ),
    ];
    for (policy, expected) in cases {
        assert_eq!(dates(&kept(&policy, &nights)), expected, "{policy:?}");
    }
}

#[test]
fn irregular_snapshots_gaps_several_a_day_and_a_clock_going_back() {
    // In the order they were made: d was made after c with a clock an hour behind.
    let snapshots = vec![
        snapshot_at(2025, 3, 1, 10, &[]),  // a
        snapshot_at(2025, 3, 1, 22, &[]),  // b: same day as a
        snapshot_at(2025, 3, 3, 9, &[]),   // c: after a day's gap
        snapshot_at(2025, 3, 3, 8, &[]),   // d: made after c, dated before it
        snapshot_at(2025, 3, 10, 12, &[]), // e
        snapshot_at(2025, 4, 2, 12, &[]),  // f
    ];
    let keep = |policy: Policy| -> Vec<String> {
        kept(&policy, &snapshots)
            .into_iter()
            .map(|(t, _)| t[5..].to_string())
            .collect()
    };
    let p = Policy::default;
    assert_eq!(
        keep(Policy { daily: 3, ..p() }),
        ["03-03 09", "03-10 12", "04-02 12"]
    );
    assert_eq!(
        keep(Policy { hourly: 10, ..p() }),
        [
            "03-01 10", "03-01 22", "03-03 08", "03-03 09", "03-10 12", "04-02 12"
        ]
    );
    // 2 Apr is in ISO week 14, 10 Mar in week 11.
    assert_eq!(keep(Policy { weekly: 2, ..p() }), ["03-10 12", "04-02 12"]);
    assert_eq!(keep(Policy { monthly: 1, ..p() }), ["04-02 12"]);
    // March's newest (10 Mar) is kept, and with a count left the oldest snapshot too.
    assert_eq!(
        keep(Policy { monthly: 3, ..p() }),
        ["03-01 10", "03-10 12", "04-02 12"]
    );
    assert_eq!(keep(Policy { last: 2, ..p() }), ["03-10 12", "04-02 12"]);
    // Within a week of the newest (2 Apr 12:00): nothing else.
    assert_eq!(
        keep(Policy {
            within: Some(CalendarSpan::parse("1w").unwrap()),
            ..p()
        }),
        ["04-02 12"]
    );
}

/// Regression: a snapshot dated in the future that was not the newest was removed by
/// `--keep-within`, and one dated in the future moved the window past every real snapshot.
#[test]
fn snapshots_dated_in_the_future_are_never_removed_by_duration() {
    let snapshots = vec![
        snapshot_at(2025, 1, 1, 0, &[]),
        snapshot_at(2025, 6, 1, 0, &[]),
        snapshot_at(2025, 6, 20, 0, &[]),
        snapshot_at(2030, 1, 1, 0, &[]),
        snapshot_at(2099, 1, 1, 0, &[]),
    ];
    let policy = Policy {
        within: Some(CalendarSpan::parse("30d").unwrap()),
        ..Policy::default()
    };
    let result = kept(&policy, &snapshots);
    let future = vec!["dated in the future".to_string()];
    assert_eq!(
        result,
        [
            ("2025-06-01 00".to_string(), vec!["within 30d".to_string()]),
            ("2025-06-20 00".to_string(), vec!["within 30d".to_string()]),
            ("2030-01-01 00".to_string(), future.clone()),
            ("2099-01-01 00".to_string(), future),
        ]
    );
}

/// Regression: snapshots dated in the future (a clock a year ahead for a week) took the
/// newest buckets of every counted rule, so the real nightly backups after them were
/// removed but for one a week.
#[test]
fn snapshots_dated_in_the_future_use_up_no_count() {
    let mut snapshots: Vec<Snapshot> = (1..=7).map(|d| snapshot_at(2027, 3, d, 2, &[])).collect();
    snapshots.extend((20..=31).map(|d| snapshot_at(2025, 12, d, 2, &[])));
    let policy = Policy {
        last: 2,
        daily: 3,
        ..Policy::default()
    };
    let result: Vec<String> = kept(&policy, &snapshots)
        .into_iter()
        .map(|(t, r)| format!("{t}: {}", r.join(", ")))
        .collect();
    let mut want: Vec<String> = (1..=7)
        .map(|d| format!("2027-03-0{d} 02: dated in the future"))
        .collect();
    want.splice(
        0..0,
        [
            "2025-12-29 02: daily".to_string(),
            "2025-12-30 02: last, daily".to_string(),
            "2025-12-31 02: last, daily".to_string(),
        ],
    );
    assert_eq!(result, want);
}

#[test]
fn spans_and_groupings_parse() {
    assert_eq!(
        CalendarSpan::parse("1y2m3d4h").unwrap(),
        CalendarSpan {
            years: 1,
            months: 2,
            days: 3,
            hours: 4
        }
    );
    assert_eq!(CalendarSpan::parse("2w").unwrap().days, 14);
    for bad in [
        "",
        "30",
        "d",
        "3x",
        "1y2",
        "4000000000w",
        "4000000000d4000000000d",
    ] {
        assert!(CalendarSpan::parse(bad).is_err(), "{bad:?}");
    }
    let g = GroupBy::parse("host,tags").unwrap();
    assert!(g.host && g.tags && !g.paths);
    assert!(GroupBy::parse("hosts").is_err());
}

#[test]
fn a_tag_list_keeps_only_snapshots_with_every_tag() {
    let snapshots = vec![
        snapshot_at(2025, 1, 1, 0, &["db"]),
        snapshot_at(2025, 1, 2, 0, &["db", "monthly"]),
        snapshot_at(2025, 1, 3, 0, &["monthly"]),
    ];
    let policy = Policy {
        tags: vec!["db,monthly".into()],
        ..Policy::default()
    };
    assert_eq!(
        kept(&policy, &snapshots),
        [(
            "2025-01-02 00".to_string(),
            vec!["tag db,monthly".to_string()]
        )]
    );
}

/// A year with gaps (no August, nothing 20-23 Dec), two snapshots on 30 Dec and one on 31 Dec
/// made after midnight by a clock an hour behind: the 7-daily/4-weekly/12-monthly policy.
#[test]
fn seven_daily_four_weekly_twelve_monthly_over_an_irregular_year() {
    let mut snapshots: Vec<Snapshot> = year_of_nights()
        .into_iter()
        .filter(|s| {
            let t = Utc.timestamp_nanos(s.time_ns);
            t.month() != 8 && !(t.month() == 12 && (20..=23).contains(&t.day()))
        })
        .collect();
    snapshots.push(snapshot_at(2025, 12, 30, 14, &[]));
    snapshots.push(snapshot_at(2025, 12, 31, 1, &[]));
    let policy = Policy {
        daily: 7,
        weekly: 4,
        monthly: 12,
        ..Policy::default()
    };
    let result = kept(&policy, &snapshots);
    let at = |t: &str| format!("2025-{t}");
    let expected: Vec<(String, Vec<&str>)> = vec![
        // Eleven months have snapshots, so monthly has a count left for the oldest one.
        (at("01-01 02"), vec!["monthly"]),
        (at("01-31 02"), vec!["monthly"]),
        (at("02-28 02"), vec!["monthly"]),
        (at("03-31 02"), vec!["monthly"]),
        (at("04-30 02"), vec!["monthly"]),
        (at("05-31 02"), vec!["monthly"]),
        (at("06-30 02"), vec!["monthly"]),
        (at("07-31 02"), vec!["monthly"]),
        (at("09-30 02"), vec!["monthly"]),
        (at("10-31 02"), vec!["monthly"]),
        (at("11-30 02"), vec!["monthly"]),
        // ISO weeks: 2026-W01 (31 Dec), W52 (28 Dec), W51 (its newest is Fri 19 Dec), W50.
        (at("12-14 02"), vec!["weekly"]),
        (at("12-19 02"), vec!["weekly"]),
        (at("12-25 02"), vec!["daily"]),
        (at("12-26 02"), vec!["daily"]),
        (at("12-27 02"), vec!["daily"]),
        (at("12-28 02"), vec!["daily", "weekly"]),
        (at("12-29 02"), vec!["daily"]),
        // The newest of the day counts: 14:00 on 30 Dec, 02:00 (not 01:00) on 31 Dec.
        (at("12-30 14"), vec!["daily"]),
        (at("12-31 02"), vec!["daily", "weekly", "monthly"]),
    ];
    let expected: Vec<(String, Vec<String>)> = expected
        .into_iter()
        .map(|(t, r)| (t, r.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(result, expected);
}

/// Calendar buckets follow the time zone given: 15:00 UTC is already the next day at +10:00.
#[test]
fn buckets_are_days_of_the_time_zone() {
    let snapshots = [
        snapshot_at(2025, 3, 1, 10, &[]),
        snapshot_at(2025, 3, 1, 15, &[]),
        snapshot_at(2025, 3, 2, 10, &[]),
    ];
    let group: Vec<(SnapshotId, &Snapshot)> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| (SnapshotId([i as u8; 32]), s))
        .collect();
    let policy = Policy {
        daily: 2,
        ..Policy::default()
    };
    let keep = |decisions: Vec<Decision>| decisions.iter().map(|d| d.keep).collect::<Vec<_>>();
    assert_eq!(
        keep(apply_in(&policy, &group, &Utc, now())),
        [false, true, true]
    );
    let east = chrono::FixedOffset::east_opt(10 * 3600).unwrap();
    assert_eq!(
        keep(apply_in(&policy, &group, &east, now())),
        [true, false, true]
    );
}

/// Central European time in 2026, enough of it for the tests: UTC+1, and UTC+2 from
/// 29 March 01:00 UTC to 25 October 01:00 UTC (so 02:00-03:00 local is skipped in March and
/// happens twice in October).
#[derive(Clone, Copy, Debug)]
struct Cet2026;

impl Cet2026 {
    fn winter() -> chrono::FixedOffset {
        chrono::FixedOffset::east_opt(3600).unwrap()
    }
    fn summer() -> chrono::FixedOffset {
        chrono::FixedOffset::east_opt(7200).unwrap()
    }
    fn utc_switches() -> (NaiveDateTime, NaiveDateTime) {
        let at = |m, d| {
            NaiveDate::from_ymd_opt(2026, m, d)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap()
        };
        (at(3, 29), at(10, 25))
    }
}

impl TimeZone for Cet2026 {
    type Offset = chrono::FixedOffset;

    fn from_offset(_: &chrono::FixedOffset) -> Self {
        Cet2026
    }

    fn offset_from_local_date(
        &self,
        local: &NaiveDate,
    ) -> chrono::LocalResult<chrono::FixedOffset> {
        self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_local_datetime(
        &self,
        local: &NaiveDateTime,
    ) -> chrono::LocalResult<chrono::FixedOffset> {
        let fits = |o: chrono::FixedOffset| {
            let utc = *local - chrono::Duration::seconds(o.local_minus_utc().into());
            self.offset_from_utc_datetime(&utc) == o
        };
        match (fits(Self::winter()), fits(Self::summer())) {
            (true, true) => chrono::LocalResult::Ambiguous(Self::summer(), Self::winter()),
            (true, false) => chrono::LocalResult::Single(Self::winter()),
            (false, true) => chrono::LocalResult::Single(Self::summer()),
            (false, false) => chrono::LocalResult::None,
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> chrono::FixedOffset {
        self.offset_from_utc_datetime(&utc.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> chrono::FixedOffset {
        let (spring, autumn) = Self::utc_switches();
        if *utc >= spring && *utc < autumn {
            Self::summer()
        } else {
            Self::winter()
        }
    }
}

/// Regression: `within` a number of months kept nothing but the newest snapshot when that many
/// months earlier the wall clock read a time that happens twice (or never) that day.
#[test]
fn within_months_survives_daylight_saving_changes() {
    let nightly = |from: NaiveDate, to: NaiveDate| {
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            let local = day.and_hms_opt(2, 30, 0).unwrap();
            let t = Cet2026
                .from_local_datetime(&local)
                .earliest()
                .unwrap_or_else(|| {
                    Cet2026
                        .from_local_datetime(&(local + chrono::Duration::hours(1)))
                        .unwrap()
                });
            let mut s = crate::snapshot::tests::sample();
            s.time_ns = t.timestamp_nanos_opt().unwrap();
            out.push(s);
            day = day.succ_opt().unwrap();
        }
        out
    };
    let date = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    let policy = Policy {
        within: Some(CalendarSpan::parse("1m").unwrap()),
        ..Policy::default()
    };
    let now = snapshot_at(2027, 1, 1, 0, &[]).time_ns;
    // A month before 25 November 02:30 is 25 October 02:30, which happens twice (the first
    // counts); a month before 29 April 02:30 is 29 March 02:30, which never happens (03:30
    // counts). Either way the 31 nights after it are kept.
    for (first, newest, expected) in [
        (date(9, 1), date(11, 25), 31),
        (date(2, 1), date(4, 29), 31),
    ] {
        let snapshots = nightly(first, newest);
        let group: Vec<(SnapshotId, &Snapshot)> =
            snapshots.iter().map(|s| (SnapshotId([0; 32]), s)).collect();
        let kept = apply_in(&policy, &group, &Cet2026, now)
            .iter()
            .filter(|d| d.keep)
            .count();
        assert_eq!(kept, expected, "within 1m up to {newest}");
    }
}

/// Regression: sources whose names differ only in bytes that are not UTF-8 were one group
/// (their names compared after replacing those bytes), so a policy removed one source's
/// snapshots for the other's.
#[test]
fn sources_named_apart_only_by_invalid_utf8_are_separate_groups() {
    let mut a = crate::snapshot::tests::sample();
    let mut b = a.clone();
    a.paths = vec![b"/srv/\xff".to_vec()];
    b.paths = vec![b"/srv/\xfe".to_vec()];
    let by = GroupBy::parse("host,paths").unwrap();
    assert_eq!(by.key(&a).paths, by.key(&b).paths, "both display alike");
    assert_ne!(by.key(&a), by.key(&b));
}

/// Regression: a span beyond the calendar's range panicked instead of keeping everything.
#[test]
fn a_huge_within_keeps_everything() {
    let snapshots = year_of_nights();
    for span in ["4000000000d", "4000000000y", "4000000000h"] {
        let policy = Policy {
            within: Some(CalendarSpan::parse(span).unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&policy, &snapshots).len(), snapshots.len(), "{span}");
    }
}

/// Regression: a snapshot that `repair snapshots` replaced (without `--forget`) was counted
/// beside its repaired copy, which has the same time: `--keep-last 2` kept the pair and
/// removed the one real backup before it, and which of the two a bucket kept was chance.
#[test]
fn a_repaired_snapshot_and_its_original_count_once() {
    let older = snapshot_at(2025, 6, 1, 2, &[]);
    let original = snapshot_at(2025, 6, 2, 2, &[]);
    let (original_id, repaired_id) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
    let mut repaired = original.clone();
    repaired.original = Some(original_id);
    repaired.tags.push("repaired".into());
    let all = vec![
        (SnapshotId([0; 32]), older),
        (original_id, original),
        (repaired_id, repaired),
    ];
    let opts = |last| forget::ForgetOptions {
        policy: Policy {
            last,
            ..Policy::default()
        },
        group_by: GroupBy::parse("host,paths").unwrap(),
        filter: crate::snapshot::Filter::default(),
        allow_remove_all: false,
    };
    let ids = |plan: &forget::GroupPlan| {
        let keep: Vec<u8> = plan.keep.iter().map(|k| k.id.0[0]).collect();
        let remove: Vec<u8> = plan.remove.iter().map(|r| r.id.0[0]).collect();
        (keep, remove)
    };
    let plans = forget::plan(&all, &opts(2)).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(ids(&plans[0]), (vec![2, 1, 0], vec![]));
    assert_eq!(plans[0].keep[1].reasons, ["original of repaired 02020202"]);
    // The original stays with its repaired copy, and goes with it.
    let plans = forget::plan(&all, &opts(1)).unwrap();
    assert_eq!(ids(&plans[0]), (vec![2, 1], vec![0]));
    let mut all = all;
    all.push((SnapshotId([3; 32]), snapshot_at(2025, 6, 3, 2, &[])));
    let plans = forget::plan(&all, &opts(1)).unwrap();
    assert_eq!(ids(&plans[0]), (vec![3], vec![2, 1, 0]));

    // An original that a --keep-tag names stays, whatever becomes of its copy.
    all[1].1.tags.push("audit".into());
    let mut tagged = opts(1);
    tagged.policy.tags = vec!["audit".into()];
    let plans = forget::plan(&all, &tagged).unwrap();
    assert_eq!(ids(&plans[0]), (vec![3, 1], vec![2, 0]));
    assert_eq!(plans[0].keep[1].reasons, ["tag audit"]);

    // Retagged since (a new snapshot superseding it), the original still pairs.
    all[1].1.tags.clear();
    let (mut retagged, retagged_id) = (all[1].1.clone(), SnapshotId([4; 32]));
    retagged.supersedes = Some(original_id);
    all[1] = (retagged_id, retagged);
    let plans = forget::plan(&all, &opts(2)).unwrap();
    assert_eq!(ids(&plans[0]), (vec![3, 4, 2], vec![0]));
}

/// Regression: snapshots naming each other as original and as superseded (crafted: no
/// honest run writes this) made `forget` follow the chain for ever.
#[test]
fn a_loop_of_replacements_ends() {
    let (x, y) = (SnapshotId([8; 32]), SnapshotId([9; 32]));
    let mut a = snapshot_at(2025, 6, 1, 2, &[]);
    (a.original, a.supersedes) = (Some(x), Some(y));
    let mut b = snapshot_at(2025, 6, 2, 2, &[]);
    (b.original, b.supersedes) = (Some(y), Some(x));
    let all = vec![(SnapshotId([1; 32]), a), (SnapshotId([2; 32]), b)];
    let opts = forget::ForgetOptions {
        policy: Policy {
            last: 1,
            ..Policy::default()
        },
        group_by: GroupBy::parse("host,paths").unwrap(),
        filter: crate::snapshot::Filter::default(),
        allow_remove_all: false,
    };
    let plans = forget::plan(&all, &opts).unwrap();
    // Each names the other as its original, so neither is counted, and neither goes.
    assert!(
        plans.iter().all(|p| p.remove.is_empty()),
        "nothing is removed"
    );
}
