//! Small shared helpers: a bounds-checked big-endian reader, and reading a small file whole.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Malformed, Result};

/// A big-endian reader over a byte slice whose every read is bounds-checked (Java `DataInput`).
pub struct BeReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BeReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BeReader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes `n` bytes, or says how many were missing and where.
    pub fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(Malformed(format!(
                "truncated: need {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u16(&mut self) -> std::result::Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    pub fn i32(&mut self) -> std::result::Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn u32(&mut self) -> std::result::Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn i64(&mut self) -> std::result::Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// Java `readUTF`: u16 length + (modified) UTF-8. Non-UTF-8 strings are refused, not guessed.
    pub fn utf(&mut self) -> std::result::Result<String, Malformed> {
        let at = self.pos;
        let n = self.u16()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Malformed(format!("string at offset {at} is not UTF-8 text")))
    }
}

/// Java `writeUTF` for the strings this tool writes (UTF-8 without NUL, which is what DSE writes).
pub fn write_utf(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads a whole small file (metadata components), refusing anything larger than `limit`.
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let len = f.metadata().map_err(|e| Error::io(path, "stat", e))?.len();
    if len > limit {
        return Err(Error::corrupt(
            path,
            format!("{len} bytes, more than the {limit} this component can sensibly have"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.take(limit)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, "read", e))?;
    Ok(buf)
}
