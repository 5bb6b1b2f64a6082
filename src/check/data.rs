//! `--read-data`: downloads packs whole (in parallel, each once), checks each against its name,
//! opens its header, and decrypts and verifies every blob the index places in it.

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::packs::entries_differ;
use super::{CheckProgress, Problem};
use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use crate::index::{IndexedPack, Inventory};
use crate::pack::{read_header_from_bytes, verify_blob};
use crate::repo::Repository;

/// Which packs `--read-data` reads.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSubset {
    All,
    /// `n/m`: the packs whose id, read as a number, is `n - 1` modulo `m`: the same packs on
    /// every run, and runs `1/m` … `m/m` together read every pack once.
    Slice {
        n: u64,
        m: u64,
    },
    /// `p%`: a random share of the packs.
    Share(f64),
    /// A size: random packs until about that many bytes.
    Bytes(u64),
}

impl DataSubset {
    /// Parses `1/10`, `5%` or `500M`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("--read-data-subset {text:?}: {why}"));
        if let Some((n, m)) = text.split_once('/') {
            let n: u64 = n.trim().parse().map_err(|_| bad("expected n/m"))?;
            let m: u64 = m.trim().parse().map_err(|_| bad("expected n/m"))?;
            if n == 0 || m == 0 || n > m {
                return Err(bad("n/m needs 1 <= n <= m"));
            }
            return Ok(DataSubset::Slice { n, m });
        }
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad("expected a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("a percentage must be above 0 and at most 100"));
            }
            return Ok(DataSubset::Share(p / 100.0));
        }
        let bytes = crate::backup::exclude::parse_size(text)
            .map_err(|_| bad("expected n/m, a percentage (5%) or a size (500M)"))?;
        if bytes == 0 {
            return Err(bad("the size must be above zero"));
        }
        Ok(DataSubset::Bytes(bytes))
    }

    /// The indexed packs present on storage that this subset reads.
    pub fn select(&self, inventory: &Inventory, stored: &HashMap<PackId, u64>) -> HashSet<PackId> {
        let mut packs: Vec<(PackId, u64)> = inventory
            .packs
            .iter()
            .filter_map(|p| stored.get(&p.id).map(|&size| (p.id, size)))
            .collect();
        packs.sort_unstable();
        match *self {
            DataSubset::All => packs.into_iter().map(|(id, _)| id).collect(),
            DataSubset::Slice { n, m } => packs
                .into_iter()
                .filter(|(id, _)| {
                    let x = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
                    x % m == n - 1
                })
                .map(|(id, _)| id)
                .collect(),
            DataSubset::Share(share) => {
                packs.shuffle(&mut rand::rng());
                let count = (packs.len() as f64 * share).ceil() as usize;
                packs.into_iter().take(count).map(|(id, _)| id).collect()
            }
            DataSubset::Bytes(limit) => {
                packs.shuffle(&mut rand::rng());
                let mut total = 0u64;
                packs
                    .into_iter()
                    .take_while(|(_, size)| {
                        let take = total < limit;
                        total += size;
                        take
                    })
                    .map(|(id, _)| id)
                    .collect()
            }
        }
    }
}

/// What reading data established: the packs read whole, what is wrong with them, and the
/// damaged blobs in them.
#[derive(Default)]
pub struct Verified {
    pub packs: Vec<PackId>,
    pub bytes: u64,
    pub problems: Vec<Problem>,
    pub damaged: Vec<(BlobId, PackId, String)>,
}

struct PackOutcome {
    problems: Vec<Problem>,
    damaged: Vec<(BlobId, PackId, String)>,
    bytes: u64,
}

pub fn read_packs(
    repo: &Repository,
    inventory: &Inventory,
    selected: &HashSet<PackId>,
    progress: &dyn CheckProgress,
) -> Verified {
    let mut packs: Vec<&IndexedPack> = inventory
        .packs
        .iter()
        .filter(|p| selected.contains(&p.id))
        .collect();
    packs.sort_unstable_by_key(|p| p.id);
    progress.phase("read data", packs.iter().map(|p| p.size).sum());
    let outcomes: Vec<PackOutcome> = packs
        .par_iter()
        .map(|p| {
            let outcome = verify_pack(repo, p);
            progress.advance(p.size);
            outcome
        })
        .collect();
    tracing::debug!("check: data read");
    let mut verified = Verified {
        packs: packs.iter().map(|p| p.id).collect(),
        ..Verified::default()
    };
    for o in outcomes {
        verified.bytes += o.bytes;
        verified.problems.extend(o.problems);
        verified.damaged.extend(o.damaged);
    }
    verified
}

fn verify_pack(repo: &Repository, pack: &IndexedPack) -> PackOutcome {
    let mut out = PackOutcome {
        problems: Vec::new(),
        damaged: Vec::new(),
        bytes: 0,
    };
    let bytes = match repo.read_pack(&pack.id) {
        Ok(bytes) => bytes,
        Err(e) => {
            let reason = format!("cannot be read: {e}");
            out.problems.push(Problem::PackHeaderDamaged {
                pack: pack.id,
                reason: reason.clone(),
            });
            out.damaged = pack
                .entries
                .iter()
                .map(|e| (e.id, pack.id, reason.clone()))
                .collect();
            return out;
        }
    };
    out.bytes = bytes.len() as u64;
    if blake3::hash(&bytes).as_bytes() != &pack.id.0 {
        out.problems
            .push(Problem::PackContentDiffers { pack: pack.id });
    }
    match read_header_from_bytes(repo.keys(), repo.id(), &pack.id, &bytes) {
        Ok(header) => {
            if let Some(reason) = entries_differ(&header, &pack.entries) {
                out.problems.push(Problem::PackHeaderDisagrees {
                    pack: pack.id,
                    reason,
                });
            }
        }
        Err(e) => out.problems.push(Problem::PackHeaderDamaged {
            pack: pack.id,
            reason: e.to_string(),
        }),
    }
    let damaged: Vec<(BlobId, PackId, String)> = pack
        .entries
        .par_iter()
        .filter_map(|e| {
            let sealed = usize::try_from(e.offset)
                .ok()
                .zip(usize::try_from(e.end()).ok())
                .and_then(|(a, b)| bytes.get(a..b));
            let reason = match sealed {
                None => "lies beyond the end of the pack".to_string(),
                Some(sealed) => match verify_blob(repo.keys(), repo.id(), &pack.id, e, sealed) {
                    Ok(_) => return None,
                    Err(Error::BlobIntegrity { reason, .. }) => reason,
                    Err(other) => other.to_string(),
                },
            };
            Some((e.id, pack.id, reason))
        })
        .collect();
    for (blob, pack, reason) in &damaged {
        out.problems.push(Problem::BlobDamaged {
            blob: *blob,
            pack: *pack,
            reason: reason.clone(),
        });
    }
    out.damaged = damaged;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_parse() {
        assert_eq!(
            DataSubset::parse("1/10").unwrap(),
            DataSubset::Slice { n: 1, m: 10 }
        );
        assert_eq!(DataSubset::parse("5%").unwrap(), DataSubset::Share(0.05));
        assert_eq!(
            DataSubset::parse("500M").unwrap(),
            DataSubset::Bytes(500 << 20)
        );
        for bad in ["0/10", "11/10", "1/0", "0%", "101%", "x", "0", "/"] {
            assert!(DataSubset::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
