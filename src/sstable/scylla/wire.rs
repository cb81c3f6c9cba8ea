//! A bounds-checked reader for Scylla.db payloads: big-endian framing and payloads, and the
//! little-endian IDL encoding of `scylla_encryption_options` (FORMAT.md 4.5, 4.6).
//!
//! Every read names what it was reading and the offset it failed at. Offsets are counted from
//! `base`, so a payload read inside a whole file reports file offsets.

use crate::error::Malformed;

pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    /// A reader over `buf`, whose first byte is at offset `base` of whatever the messages name.
    pub(super) fn new(buf: &'a [u8], base: usize) -> Self {
        Cursor { buf, pos: 0, base }
    }

    /// The offset of the next byte, counted from `base`.
    pub(super) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// `n` bytes of `what`, or how many were missing and where.
    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(Malformed(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {} left",
                self.offset(),
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        let b = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(super) fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(super) fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(super) fn u32_le(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn uuid(&mut self, what: &str) -> Result<[u8; 16], Malformed> {
        self.array(what)
    }

    /// `str16`: u16 big-endian length + bytes.
    pub(super) fn str16(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let at = self.offset();
        let n = self.u16(what)? as usize;
        self.bounded(n, at, what)
    }

    /// `str32`: u32 big-endian length + bytes.
    pub(super) fn str32(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let at = self.offset();
        let n = self.u32(what)? as usize;
        self.bounded(n, at, what)
    }

    /// The IDL string: u32 little-endian length + bytes.
    pub(super) fn str32_le(&mut self, what: &str) -> Result<&'a [u8], Malformed> {
        let at = self.offset();
        let n = self.u32_le(what)? as usize;
        self.bounded(n, at, what)
    }

    /// `n` bytes whose length was read at `at`: a length past the end is named as such.
    fn bounded(&mut self, n: usize, at: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(Malformed(format!(
                "{what}: length {n} (read at offset {at}) runs past the end: only {} bytes left",
                self.remaining()
            )));
        }
        self.take(n, what)
    }

    /// A big-endian element count, checked against what the rest can hold at `min_item` bytes an
    /// element before anyone loops or allocates on it.
    pub(super) fn count(&mut self, what: &str, min_item: usize) -> Result<usize, Malformed> {
        let at = self.offset();
        let n = self.u32(what)? as usize;
        self.check_count(n, at, what, min_item)
    }

    /// The same for a little-endian count.
    pub(super) fn count_le(&mut self, what: &str, min_item: usize) -> Result<usize, Malformed> {
        let at = self.offset();
        let n = self.u32_le(what)? as usize;
        self.check_count(n, at, what, min_item)
    }

    fn check_count(
        &self,
        n: usize,
        at: usize,
        what: &str,
        min_item: usize,
    ) -> Result<usize, Malformed> {
        let need = (n as u64).saturating_mul(min_item as u64);
        if need > self.remaining() as u64 {
            return Err(Malformed(format!(
                "{what}: count {n} (read at offset {at}) needs at least {need} bytes, only {} left",
                self.remaining()
            )));
        }
        Ok(n)
    }
}

/// Appends a `str32` (u32 big-endian length + bytes). The caller bounds the length.
pub(super) fn put_str32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Appends an IDL string (u32 little-endian length + bytes). The caller bounds the length.
pub(super) fn put_str32_le(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Text for a message: UTF-8 as a quoted string, anything else as hex; the first 64 bytes of a
/// longer value (a hostile file must not make a message megabytes long).
pub(super) fn show(b: &[u8]) -> String {
    const SHOWN: usize = 64;
    let (head, more) = if b.len() > SHOWN {
        (&b[..SHOWN], format!("... ({} bytes)", b.len()))
    } else {
        (b, String::new())
    };
    match std::str::from_utf8(head) {
        Ok(s) => format!("{s:?}{more}"),
        Err(_) => format!("0x{}{more}", hex(head)),
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
