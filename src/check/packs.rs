//! The packs on storage against the index: each indexed pack exists with its recorded size and
//! a header that lists exactly the indexed blobs; packs no segment lists are reported.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::{CheckProgress, CheckReport, Damage, Problem, Warning};
use crate::error::{Error, Result};
use crate::ids::PackId;
use crate::index::{IndexedPack, Inventory};
use crate::pack::{self, BlobEntry};
use crate::repo::Repository;

/// Why two lists of blob entries (header and index) differ, if they do.
pub fn entries_differ(header: &[BlobEntry], indexed: &[BlobEntry]) -> Option<String> {
    let (h, i) = (pack::by_offset(header), pack::by_offset(indexed));
    if h.len() != i.len() {
        return Some(format!(
            "the header lists {} blobs, the index {}",
            h.len(),
            i.len()
        ));
    }
    let (a, b) = h.iter().zip(&i).find(|(a, b)| a != b)?;
    Some(format!(
        "blob {} at offset {} in the header, blob {} at offset {} in the index",
        a.id.short(),
        a.offset,
        b.id.short(),
        b.offset
    ))
}

/// Existence, size and header of every indexed pack; headers of packs in `to_read` are left to
/// the data check, which reads them whole anyway.
pub fn check_packs(
    repo: &Repository,
    inventory: &Inventory,
    stored: &HashMap<PackId, u64>,
    to_read: &HashSet<PackId>,
    report: &mut CheckReport,
    damage: &mut Damage,
    progress: &dyn CheckProgress,
) -> Result<()> {
    let mut headers_to_check: Vec<&IndexedPack> = Vec::new();
    for p in &inventory.packs {
        match stored.get(&p.id) {
            None => {
                report.problems.push(Problem::PackMissing {
                    pack: p.id,
                    blobs: p.entries.len(),
                });
                for e in &p.entries {
                    damage.location(e.id, p.id, "is lost: the pack is missing".into());
                }
            }
            Some(&size) if size != p.size => {
                report.problems.push(Problem::PackSizeDiffers {
                    pack: p.id,
                    indexed: p.size,
                    stored: size,
                });
                for e in p.entries.iter().filter(|e| e.end() > size) {
                    damage.location(e.id, p.id, "is lost: the pack was cut short".into());
                }
            }
            Some(_) if !to_read.contains(&p.id) => headers_to_check.push(p),
            Some(_) => {}
        }
    }
    progress.phase("pack headers", headers_to_check.len() as u64);
    let read: Vec<(PackId, Result<Option<Problem>>)> = headers_to_check
        .par_iter()
        .map(|p| {
            let outcome = pack::read_header(repo, &p.id, p.size);
            progress.advance(1);
            let problem = match outcome {
                Ok(header) => Ok(entries_differ(&header, &p.entries)
                    .map(|reason| Problem::PackHeaderDisagrees { pack: p.id, reason })),
                // Unread is not damaged: the check did not run for this pack.
                Err(e) if e.is_unavailable() => Err(e),
                Err(e) => Ok(Some(Problem::PackHeaderDamaged {
                    pack: p.id,
                    reason: e.to_string(),
                })),
            };
            (p.id, problem)
        })
        .collect();
    let mut header_problems = Vec::new();
    for (pack, problem) in read {
        match problem {
            Ok(problem) => header_problems.extend(problem),
            Err(e) => return Err(unread(&pack, e)),
        }
    }
    header_problems.sort_by_key(|p| format!("{p}"));
    report.problems.extend(header_problems);
    let mut unindexed: Vec<_> = stored
        .iter()
        .filter(|(id, _)| inventory.pack(id).is_none())
        .map(|(&pack, &size)| Warning::PackNotIndexed { pack, size })
        .collect();
    unindexed.sort_by_key(|w| format!("{w}"));
    report.warnings.extend(unindexed);
    Ok(())
}

/// A pack that could not be read for a reason that says nothing of it: the check did not run.
pub fn unread(pack: &PackId, e: Error) -> Error {
    Error::Invalid(format!(
        "pack {} could not be read ({e}); run the check again",
        pack.short()
    ))
}
