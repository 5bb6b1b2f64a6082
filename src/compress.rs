//! zstd with one reusable context per thread: creating a context per blob costs more (in
//! allocation and page faults) than compressing a small blob.

use std::cell::RefCell;
use std::io;

use zstd::bulk::{Compressor, Decompressor};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data`; `None` if compression fails or does not make it smaller.
pub fn compress_if_smaller(data: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        c.compress(data).ok().filter(|out| out.len() < data.len())
    })
}

/// Runs `f` with this thread's decompressor, creating it on first use.
fn with_decompressor<T>(
    f: impl FnOnce(&mut Decompressor<'static>) -> io::Result<T>,
) -> io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => f(d),
            None => Err(io::Error::other("no zstd decompressor")),
        }
    })
}

/// Decompresses, refusing output beyond `capacity` bytes.
pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    with_decompressor(|d| d.decompress(data, capacity))
}

/// Decompresses into `out` (cleared first, its allocation reused), refusing output beyond
/// `capacity` bytes.
pub fn decompress_into(data: &[u8], capacity: usize, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.reserve(capacity);
    with_decompressor(|d| d.decompress_to_buffer(data, out).map(|_| ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_cap() {
        let data = b"abcabcabc".repeat(1000);
        let c = compress_if_smaller(&data, 3).unwrap();
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
        assert!(decompress(&c, data.len() - 1).is_err());
        assert!(compress_if_smaller(b"x", 3).is_none());
        // A level change on the same thread takes effect.
        assert!(compress_if_smaller(&data, 19).is_some());
    }
}
