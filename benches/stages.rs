//! Throughput of each stage of the backup data path, and of the whole pipeline over an
//! in-memory source into in-memory storage. Run: `cargo bench --bench stages`.

use std::hint::black_box;

use cairn::chunk::{Chunker, ChunkerParams};
use cairn::crypto::Keys;
use cairn::ids::{BlobType, RepositoryId};
use cairn::index::LocalIndex;
use cairn::pack::{PackWriter, seal_blob};
use cairn::packer::Packer;
use cairn::repo::{KdfParams, Repository};
use cairn::storage::OpendalStorage;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 32 * 1024 * 1024;

/// Half random, half text-like: neither best nor worst case for compression.
fn source() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(LEN);
    while out.len() < LEN / 2 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let mut i = 0u64;
    while out.len() < LEN {
        out.extend_from_slice(
            format!("row {i}, customer {}, amount {}\n", i * 7 % 1000, i % 97).as_bytes(),
        );
        i += 1;
    }
    out.truncate(LEN);
    out
}

fn stages(c: &mut Criterion) {
    let data = source();
    let keys = Keys::from_master([7; 32]);
    let repo_id = RepositoryId([1; 32]);
    let chunker = Chunker::new(keys.chunker_key(), ChunkerParams::FILES);
    let chunks: Vec<&[u8]> = chunker.cuts(&data).map(|r| &data[r]).collect();

    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("chunking", |b| {
        b.iter(|| chunker.cuts(black_box(&data)).count())
    });
    g.bench_function("keyed_hashing", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| keys.blob_id(c).0[0] as usize)
                .sum::<usize>()
        })
    });
    g.bench_function("compression_zstd3", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| zstd::bulk::compress(c, 3).map(|v| v.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    g.bench_function("encryption", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| keys.seal(b"ad", c).len())
                .sum::<usize>()
        })
    });
    let sealed: Vec<_> = chunks.iter().map(|c| (keys.blob_id(c), c)).collect();
    g.bench_function("seal_and_pack", |b| {
        b.iter(|| {
            let mut w = PackWriter::new(BlobType::Data);
            for (id, c) in &sealed {
                w.add(seal_blob(&keys, &repo_id, BlobType::Data, *id, c, 3));
            }
            w.finish(&keys, &repo_id).bytes.len()
        })
    });
    g.bench_function("pipeline_in_memory", |b| {
        b.iter(|| {
            let storage = OpendalStorage::memory().unwrap();
            let fast = KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            };
            let repo = Repository::init(Box::new(storage), b"pw", fast).unwrap();
            let cache = tempfile::tempdir().unwrap();
            let (mut index, _) = LocalIndex::open(cache.path(), &repo).unwrap();
            let mut packer = Packer::new(&repo, &mut index, 3).unwrap();
            let chunker = Chunker::new(repo.keys().chunker_key(), ChunkerParams::FILES);
            for chunk in chunker.reader(&data[..]) {
                packer.add(BlobType::Data, &chunk.unwrap()).unwrap();
            }
            packer.finish().unwrap().stored_bytes
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
