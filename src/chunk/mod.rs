//! Content-defined chunking: FastCDC (2020) with a gear table drawn from the repository's
//! secret chunker key, so chunk boundaries — and hence chunk sizes — reveal nothing to someone
//! without the key.
//!
//! Guarantees: the same key, parameters and bytes always give the same boundaries, whether the
//! bytes come from a slice or a reader, however the reader splits its reads; every chunk is at
//! most `max` bytes and at least `min` bytes except the last.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

/// Chunk-size parameters. Recorded in every snapshot, so a later change of defaults never
/// changes how existing data is read or deduplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// The profile for files: about 1 MiB per chunk.
    pub const FILES: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };

    /// The profile for dump streams and other large files that change in place: about
    /// 16 KiB per chunk, so a small change costs a small chunk.
    pub const SMALL: ChunkerParams = ChunkerParams {
        min: 4 * 1024,
        avg: 16 * 1024,
        max: 64 * 1024,
    };

    /// Whether fastcdc accepts these parameters.
    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::*;
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// Panics only on invalid parameters, which callers validate (`ChunkerParams::is_valid`).
    pub fn new(key: &[u8; 32], params: ChunkerParams) -> Self {
        assert!(params.is_valid(), "invalid chunker parameters {params:?}");
        let mut table = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(key)
            .update(b"cairn fastcdc gear table v1")
            .finalize_xof()
            .fill(&mut table);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        for (i, bytes) in table.chunks_exact(8).enumerate() {
            gear[i] = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            gear_ls[i] = gear[i] << 1;
        }
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            params,
            gear,
            gear_ls,
            mask_s,
            mask_l,
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the chunk that starts at `data[0]`, given that `data` holds at least `max`
    /// bytes or everything up to the end of the input.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let (_, len) = cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len
    }

    /// Chunk lengths of an in-memory input (e.g. a memory-mapped file).
    pub fn cuts<'a>(&'a self, data: &'a [u8]) -> impl Iterator<Item = Range<usize>> + 'a {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= data.len() {
                return None;
            }
            let len = self.next_cut(&data[start..]);
            let range = start..start + len;
            start += len;
            Some(range)
        })
    }

    /// Splits a reader into chunks, holding at most `max` + `READ_AHEAD` bytes at a time.
    pub fn reader<R: Read>(&self, source: R) -> ChunkReader<'_, R> {
        self.reader_with_window(source, Vec::new())
    }

    /// Like `reader`, but reads through `window`, a buffer of an earlier reader (see
    /// `ChunkReader::into_window`), so its pages need not be allocated again.
    pub fn reader_with_window<R: Read>(
        &self,
        source: R,
        mut window: Vec<u8>,
    ) -> ChunkReader<'_, R> {
        window.resize(self.params.max as usize + READ_AHEAD, 0);
        ChunkReader {
            chunker: self,
            source,
            buf: window,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// How far a `ChunkReader` reads beyond one maximal chunk.
const READ_AHEAD: usize = 4 * 1024 * 1024;

/// Chunks of a reader, cut in a window that is refilled only when the chunk at its front
/// runs past what it holds, so that only that partial chunk is moved.
pub struct ChunkReader<'a, R> {
    chunker: &'a Chunker,
    source: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ChunkReader<'_, R> {
    /// Every chunk the window holds whole, as ranges of `window()`, refilling it first if
    /// the chunks it held are taken; empty at the end of the input. The ranges hold until the
    /// next call.
    pub fn next_batch(&mut self) -> io::Result<Vec<Range<usize>>> {
        // Less than a maximal chunk left, not at the end: what is left is a chunk cut short.
        if self.end - self.start < self.chunker.params.max as usize && !self.eof {
            self.refill()?;
        }
        Ok(std::iter::from_fn(|| self.cut()).collect())
    }

    /// The buffer that `next_batch`'s ranges index.
    pub fn window(&self) -> &[u8] {
        &self.buf
    }

    /// Gives the window back, for `Chunker::reader_with_window`.
    pub fn into_window(self) -> Vec<u8> {
        self.buf
    }

    /// The chunk at the front of the window, if the window holds enough to be sure where it
    /// ends: a cut before the end of what is held is where a cut in the whole input would
    /// be, as is one at `max`, or at the end of the input.
    fn cut(&mut self) -> Option<Range<usize>> {
        let held = self.end - self.start;
        if held == 0 {
            return None;
        }
        let len = self.chunker.next_cut(&self.buf[self.start..self.end]);
        if len < held || held >= self.chunker.params.max as usize || self.eof {
            let range = self.start..self.start + len;
            self.start += len;
            return Some(range);
        }
        None
    }

    /// Moves the unfinished chunk to the front and reads until the window is full or the
    /// input ends.
    fn refill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkReader<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.cut() {
                return Some(Ok(self.buf[r].to_vec()));
            }
            if self.eof && self.start == self.end {
                return None;
            }
            if let Err(e) = self.refill() {
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic pseudo-random bytes (xorshift64*), so frozen boundaries stay frozen.
    pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    const SMALL: ChunkerParams = ChunkerParams {
        min: 1024,
        avg: 4096,
        max: 16384,
    };

    /// Reads in awkward, varying sizes to prove boundaries do not depend on read sizes.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7919 + 1;
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn boundaries_are_frozen() {
        // If this fails, chunk boundaries changed: old data would no longer deduplicate.
        let chunker = Chunker::new(&[42; 32], ChunkerParams::FILES);
        let data = seeded_bytes(7, 12 * 1024 * 1024);
        let lens: Vec<usize> = chunker.cuts(&data).map(|r| r.len()).collect();
        assert_eq!(lens, FROZEN_FILE_LENGTHS);
        let small = Chunker::new(&[42; 32], SMALL);
        let lens: Vec<usize> = small.cuts(&data[..64 * 1024]).map(|r| r.len()).collect();
        assert_eq!(lens, FROZEN_SMALL_LENGTHS);
    }

    const FROZEN_FILE_LENGTHS: &[usize] = &[
        1186404, 1754085, 1161547, 1049591, 2712686, 2063687, 1349885, 1305027,
    ];
    const FROZEN_SMALL_LENGTHS: &[usize] = &[
        3540, 3279, 5042, 1837, 8948, 5484, 1841, 3354, 7321, 4313, 5133, 4199, 4947, 6298,
    ];

    #[test]
    fn key_changes_boundaries() {
        let data = seeded_bytes(9, 256 * 1024);
        let a: Vec<_> = Chunker::new(&[1; 32], SMALL).cuts(&data).collect();
        let b: Vec<_> = Chunker::new(&[2; 32], SMALL).cuts(&data).collect();
        assert_ne!(a, b);
    }

    /// Every chunk of a reader's batches, reading through `window`; the window back.
    fn batched(
        chunker: &Chunker,
        data: &[u8],
        seed: usize,
        window: Vec<u8>,
    ) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut reader = chunker.reader_with_window(Dribble(data, seed % 100), window);
        // A window a little over one maximal chunk, so inputs span many refills.
        reader
            .buf
            .truncate(chunker.params.max as usize + 1 + seed % 3000);
        let mut out = Vec::new();
        loop {
            let batch = reader.next_batch().unwrap();
            if batch.is_empty() {
                return (out, reader.into_window());
            }
            out.extend(batch.into_iter().map(|r| reader.window()[r].to_vec()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn batches_match_slice_also_through_a_used_window(seed: u64, len in 0usize..200_000) {
            let chunker = Chunker::new(&[5; 32], SMALL);
            let data = seeded_bytes(seed, len);
            let from_slice: Vec<Vec<u8>> =
                chunker.cuts(&data).map(|r| data[r].to_vec()).collect();
            let (first, window) = batched(&chunker, &data, seed as usize, Vec::new());
            prop_assert_eq!(&from_slice, &first);
            // A window left dirty by other input changes nothing.
            let other = seeded_bytes(!seed, len / 2);
            let (_, window) = batched(&chunker, &other, seed as usize + 7, window);
            let (again, _) = batched(&chunker, &data, seed as usize + 3, window);
            prop_assert_eq!(&from_slice, &again);
        }

        #[test]
        fn reader_matches_slice(seed: u64, len in 0usize..200_000) {
            let chunker = Chunker::new(&[5; 32], SMALL);
            let data = seeded_bytes(seed, len);
            let from_slice: Vec<Vec<u8>> =
                chunker.cuts(&data).map(|r| data[r].to_vec()).collect();
            let from_reader: Vec<Vec<u8>> = chunker
                .reader(Dribble(&data, seed as usize % 100))
                .collect::<io::Result<_>>()
                .unwrap();
            prop_assert_eq!(&from_slice, &from_reader);
            prop_assert_eq!(from_slice.concat(), data);
            for (i, c) in from_slice.iter().enumerate() {
                prop_assert!(c.len() <= SMALL.max as usize);
                if i + 1 < from_slice.len() {
                    prop_assert!(c.len() >= SMALL.min as usize);
                }
            }
        }
    }
}
