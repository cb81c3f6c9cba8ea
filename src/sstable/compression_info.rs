//! CompressionInfo.db (FORMAT.md 1.2): compressor class, options, chunk length,
//! maxCompressedLength (BIG `na`+ and BTI), data length and absolute chunk offsets.

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::{write_utf, BeReader};

/// Java's Integer.MAX_VALUE: maxCompressedLength when `min_compress_ratio` is 0 (the default).
pub const NO_MAX_COMPRESSED_LENGTH: i32 = i32::MAX;
/// A bound on the option count, far above any real table (a hostile file cannot make us loop).
const MAX_OPTIONS: i32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionInfo {
    /// Class as written: simple (`EncryptingLZ4Compressor`) or fully qualified.
    pub class: String,
    /// Options in file order (order is preserved when rewriting).
    pub options: Vec<(String, String)>,
    pub chunk_length: u32,
    /// `Some` exactly when the version stores it.
    pub max_compressed_length: Option<i32>,
    pub data_length: u64,
    pub offsets: Vec<u64>,
}

impl CompressionInfo {
    /// Parses and validates the structure. `data_file_len`, when given, bounds the offsets.
    pub fn parse(
        buf: &[u8],
        has_max_compressed_length: bool,
        data_file_len: Option<u64>,
        path: &Path,
    ) -> Result<CompressionInfo> {
        let bad = |msg: String| Error::corrupt(path, msg);
        let mut r = BeReader::new(buf);
        let class = r.utf().map_err(|m| bad(m.into()))?;
        let n = r.i32().map_err(|m| bad(m.into()))?;
        if !(0..=MAX_OPTIONS).contains(&n) {
            return Err(bad(format!("option count {n} out of range")));
        }
        let mut options = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let k = r.utf().map_err(|m| bad(m.into()))?;
            let v = r.utf().map_err(|m| bad(m.into()))?;
            options.push((k, v));
        }
        let chunk_length = r.i32().map_err(|m| bad(m.into()))?;
        if chunk_length <= 0 || (chunk_length as u32).count_ones() != 1 {
            return Err(bad(format!(
                "chunk length {chunk_length} is not a positive power of two"
            )));
        }
        let max_compressed_length = if has_max_compressed_length {
            let m = r.i32().map_err(|m| bad(m.into()))?;
            if m <= 0 {
                return Err(bad(format!("maxCompressedLength {m} <= 0")));
            }
            Some(m)
        } else {
            None
        };
        let data_length = r.i64().map_err(|m| bad(m.into()))?;
        if data_length < 0 {
            return Err(bad(format!("data length {data_length} < 0")));
        }
        let count = r.i32().map_err(|m| bad(m.into()))?;
        if count <= 0 {
            return Err(bad(format!("chunk count {count} <= 0")));
        }
        // Bound the allocation by what the file can hold before trusting the count.
        if (count as usize).saturating_mul(8) != r.remaining() {
            return Err(bad(format!(
                "chunk count {count} needs {} bytes of offsets, the file has {} left{}",
                count as u64 * 8,
                r.remaining(),
                if (count as usize).saturating_mul(8) < r.remaining() {
                    " (trailing bytes)"
                } else {
                    " (truncated)"
                }
            )));
        }
        let chunk_len = chunk_length as u64;
        let needed = (data_length as u64).div_ceil(chunk_len);
        // A trailing empty chunk is possible (FORMAT.md 1.3), no more.
        if (count as u64) < needed || (count as u64) > needed + 1 {
            return Err(bad(format!(
                "{count} chunks cannot hold {data_length} bytes in {chunk_length}-byte chunks (expected {needed})"
            )));
        }
        let mut offsets = Vec::with_capacity(count as usize);
        for i in 0..count {
            let o = r.i64().map_err(|m| bad(m.into()))?;
            if o < 0 {
                return Err(bad(format!("chunk {i}: negative offset {o}")));
            }
            let o = o as u64;
            if i == 0 && o != 0 {
                return Err(bad(format!("chunk 0 starts at {o}, not 0")));
            }
            if let Some(&prev) = offsets.last() {
                if o < prev + 4 {
                    return Err(bad(format!(
                        "chunk {i}: offset {o} is less than 4 bytes after chunk {} at {prev}",
                        i - 1
                    )));
                }
            }
            offsets.push(o);
        }
        if let Some(len) = data_file_len {
            let last = *offsets.last().unwrap();
            if last + 4 > len {
                return Err(bad(format!(
                    "chunk {} at offset {last} lies past the end of the {len}-byte Data.db (truncated Data.db?)",
                    offsets.len() - 1
                )));
            }
        }
        Ok(CompressionInfo {
            class,
            options,
            chunk_length: chunk_length as u32,
            max_compressed_length,
            data_length: data_length as u64,
            offsets,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.offsets.len() * 8);
        write_utf(&mut out, &self.class);
        out.extend_from_slice(&(self.options.len() as i32).to_be_bytes());
        for (k, v) in &self.options {
            write_utf(&mut out, k);
            write_utf(&mut out, v);
        }
        out.extend_from_slice(&(self.chunk_length as i32).to_be_bytes());
        if let Some(m) = self.max_compressed_length {
            out.extend_from_slice(&m.to_be_bytes());
        }
        out.extend_from_slice(&(self.data_length as i64).to_be_bytes());
        out.extend_from_slice(&(self.offsets.len() as i32).to_be_bytes());
        for o in &self.offsets {
            out.extend_from_slice(&(*o as i64).to_be_bytes());
        }
        out
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_option(&mut self, key: &str, value: &str) {
        match self.options.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.options.push((key.to_string(), value.to_string())),
        }
    }

    pub fn remove_option(&mut self, key: &str) {
        self.options.retain(|(k, _)| k != key);
    }

    /// The class without a package: `org.apache.cassandra.io.compress.LZ4Compressor` → `LZ4Compressor`.
    pub fn simple_class(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    pub fn chunk_count(&self) -> usize {
        self.offsets.len()
    }

    /// Plain (uncompressed) length of chunk `i`: clamp(dataLength - i*chunkLength, 0, chunkLength).
    pub fn plain_len(&self, i: usize) -> usize {
        let start = i as u64 * self.chunk_length as u64;
        self.data_length
            .saturating_sub(start)
            .min(self.chunk_length as u64) as usize
    }

    /// maxCompressedLength, or `i32::MAX` for versions that do not store it.
    pub fn max_len(&self) -> u64 {
        self.max_compressed_length
            .unwrap_or(NO_MAX_COMPRESSED_LENGTH) as u64
    }

    /// On-disk (not counting the CRC) byte range of chunk `i` in a Data.db of `file_len` bytes.
    pub fn chunk_range(&self, i: usize, file_len: u64) -> (u64, u64) {
        let start = self.offsets[i];
        let end = self.offsets.get(i + 1).copied().unwrap_or(file_len);
        (start, end - 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CompressionInfo {
        CompressionInfo {
            class: "EncryptingLZ4Compressor".into(),
            options: vec![("cipher_algorithm".into(), "AES/CBC/PKCS5Padding".into())],
            chunk_length: 16384,
            max_compressed_length: Some(i32::MAX),
            data_length: 40000,
            offsets: vec![0, 100, 250],
        }
    }

    #[test]
    fn round_trips() {
        let ci = sample();
        let bytes = ci.serialize();
        let back = CompressionInfo::parse(&bytes, true, Some(300), Path::new("x")).unwrap();
        assert_eq!(back, ci);
        assert_eq!(back.plain_len(2), 40000 - 2 * 16384);
    }

    #[test]
    fn rejects_trailing_bytes_truncation_and_offsets_past_the_end() {
        let mut bytes = sample().serialize();
        bytes.push(0);
        let e = CompressionInfo::parse(&bytes, true, None, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        let bytes = sample().serialize();
        let e = CompressionInfo::parse(&bytes[..bytes.len() - 3], true, None, Path::new("x"))
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = CompressionInfo::parse(&bytes, true, Some(200), Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
    }

    #[test]
    fn rejects_zero_chunks() {
        let mut ci = sample();
        ci.offsets.clear();
        ci.data_length = 0;
        let e = CompressionInfo::parse(&ci.serialize(), true, None, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("chunk count 0"), "{e}");
    }
}
