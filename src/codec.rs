//! The tagged field encoding shared by trees, snapshots, keys and the config.
//!
//! An encoded record is a sequence of fields `tag: varint, length: varint, value: length bytes`.
//! Integers inside a value are LEB128 varints (signed ones zigzag-encoded). Writers emit fields
//! in ascending tag order, so equal records encode to equal bytes; readers skip tags they do not
//! know, so a later version can add fields without breaking older readers.
//!
//! Guarantees: decoding never panics and never allocates more than the input's length; any
//! malformed input yields `None` from the reader, which callers turn into a `Corrupt` error.

/// Builds one record.
#[derive(Default)]
pub struct FieldWriter {
    buf: Vec<u8>,
}

pub fn put_varint(buf: &mut Vec<u8>, v: u64) {
    let (bytes, len) = varint(v);
    buf.extend_from_slice(&bytes[..len]);
}

/// `v` as a varint: the bytes and how many of them are used.
fn varint(mut v: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut len = 0;
    while v >= 0x80 {
        bytes[len] = (v as u8) | 0x80;
        v >>= 7;
        len += 1;
    }
    bytes[len] = v as u8;
    (bytes, len + 1)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads a varint from the front of `input`, advancing it.
pub fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

impl FieldWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, tag: u64, value: &[u8]) -> &mut Self {
        put_varint(&mut self.buf, tag);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
        self
    }

    pub fn uint(&mut self, tag: u64, value: u64) -> &mut Self {
        let (bytes, len) = varint(value);
        self.bytes(tag, &bytes[..len])
    }

    /// A field whose value is the concatenation of `parts` (no copy made first).
    pub fn parts<'p>(
        &mut self,
        tag: u64,
        parts: impl Iterator<Item = &'p [u8]> + Clone,
    ) -> &mut Self {
        put_varint(&mut self.buf, tag);
        put_varint(&mut self.buf, parts.clone().map(|p| p.len() as u64).sum());
        parts.for_each(|p| self.buf.extend_from_slice(p));
        self
    }

    /// Writes into `buf` (cleared first), keeping its allocation.
    pub fn reusing(mut buf: Vec<u8>) -> Self {
        buf.clear();
        FieldWriter { buf }
    }

    pub fn int(&mut self, tag: u64, value: i64) -> &mut Self {
        self.uint(tag, zigzag(value))
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// One decoded field: its tag and raw value.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub tag: u64,
    pub value: &'a [u8],
}

impl<'a> Field<'a> {
    pub fn uint(&self) -> Option<u64> {
        let mut v = self.value;
        let n = take_varint(&mut v)?;
        v.is_empty().then_some(n)
    }

    pub fn int(&self) -> Option<i64> {
        self.uint().map(unzigzag)
    }

    pub fn id(&self) -> Option<[u8; 32]> {
        self.value.try_into().ok()
    }

    pub fn string(&self) -> Option<String> {
        String::from_utf8(self.value.to_vec()).ok()
    }
}

/// Splits a record into its fields. Returns `None` if the record is malformed.
pub fn fields(mut input: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let tag = take_varint(&mut input)?;
        let len = usize::try_from(take_varint(&mut input)?).ok()?;
        if len > input.len() {
            return None;
        }
        let (value, rest) = input.split_at(len);
        out.push(Field { tag, value });
        input = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v: u64) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut s = buf.as_slice();
            prop_assert_eq!(take_varint(&mut s), Some(v));
            prop_assert!(s.is_empty());
        }

        #[test]
        fn signed_round_trip(v: i64) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        #[test]
        fn fields_never_panic(bytes: Vec<u8>) {
            let _ = fields(&bytes);
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let mut s: &[u8] = &[0xff; 11];
        assert_eq!(take_varint(&mut s), None);
    }

    #[test]
    fn unknown_fields_are_visible_and_skippable() {
        let mut w = FieldWriter::new();
        w.uint(1, 7).bytes(99, b"future").int(2, -5);
        let buf = w.finish();
        let f = fields(&buf).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].uint(), Some(7));
        assert_eq!(f[1].tag, 99);
        assert_eq!(f[2].int(), Some(-5));
    }
}
