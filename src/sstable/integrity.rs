//! Whether a component's bytes are what its format says they are: the checks that tell a right
//! key from a wrong one where the encryption itself cannot (ScyllaDB encrypts whole files with no
//! MAC, FORMAT.md 4.8: a wrong key decrypts to garbage silently). Everything here reads
//! plaintext; nothing knows about keys or ciphers.
//!
//! - a compressed Data.db: every chunk's CRC32 (the 4 bytes after it, FORMAT.md 1.3) against the
//!   chunk offsets of its CompressionInfo.db; an uncompressed one: the per-chunk CRC32s of CRC.db;
//! - either way, the CRC32 of the whole file, which Digest.crc32 holds (1.4);
//! - Statistics.db: a sane table of contents (`ma`–`me` have no checksums, 2.6).
//!
//! Data.db is checked as a stream ([`DataCheck::feed`] in file order), so that a file of any size
//! is checked in bounded memory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::sstable::CompressionInfo;
use crate::util::BeReader;

/// Metadata entries an `m`-format Statistics.db can have (VALIDATION, COMPACTION, STATS, HEADER
/// and a few newer ones): far below this bound.
const MAX_STATISTICS_ENTRIES: u32 = 16;
/// A metadata type number above any Cassandra or ScyllaDB writes.
const MAX_STATISTICS_TYPE: u32 = 16;

/// How a Data.db's records are checksummed.
enum Checksums {
    /// Compressed: chunk `i` is `[offsets[i], offsets[i+1] - 4)`, then its u32be CRC32.
    Chunks { offsets: Vec<u64> },
    /// Uncompressed: CRC.db's CRC32 of every `size`-byte piece of the file.
    CrcDb { size: u64, crcs: Vec<u32> },
}

/// A streaming check of one Data.db's plaintext.
pub struct DataCheck<'a> {
    path: &'a Path,
    file_len: u64,
    sums: Checksums,
    /// File offset of the next byte fed.
    pos: u64,
    /// The record in progress: its index, and its bytes so far (a record can span feeds).
    record: usize,
    pending: Vec<u8>,
    whole: crc32fast::Hasher,
}

impl<'a> DataCheck<'a> {
    /// For a compressed Data.db of `file_len` plaintext bytes described by `ci`.
    pub fn compressed(ci: &CompressionInfo, file_len: u64, path: &'a Path) -> Result<Self> {
        let mut offsets = ci.offsets.clone();
        offsets.push(file_len);
        for (i, w) in offsets.windows(2).enumerate() {
            if w[1] < w[0] + 4 {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "chunk {i} spans {}..{}: shorter than its CRC (CompressionInfo.db does not describe this Data.db)",
                        w[0], w[1]
                    ),
                ));
            }
        }
        if offsets.first() != Some(&0) {
            return Err(Error::corrupt(path, "the first chunk offset is not 0"));
        }
        offsets.pop();
        Ok(Self::new(Checksums::Chunks { offsets }, file_len, path))
    }

    /// For an uncompressed Data.db of `file_len` bytes with the CRC.db `crc_db`
    /// (`u32be piece size`, then one u32be CRC32 per piece).
    pub fn uncompressed(crc_db: &[u8], file_len: u64, path: &'a Path) -> Result<Self> {
        let bad = |m: String| Error::corrupt(path, format!("CRC.db: {m}"));
        let mut r = BeReader::new(crc_db);
        let size = r.u32().map_err(|m| bad(m.into()))? as u64;
        if size == 0 {
            return Err(bad("piece size 0".into()));
        }
        let pieces = file_len.div_ceil(size);
        let have = (crc_db.len() as u64 - 4) / 4;
        if have < pieces || !(crc_db.len() - 4).is_multiple_of(4) {
            return Err(bad(format!(
                "{} bytes of checksums for {pieces} pieces of {size} bytes",
                crc_db.len() - 4
            )));
        }
        let mut crcs = Vec::with_capacity(pieces as usize);
        for _ in 0..pieces {
            crcs.push(r.u32().map_err(|m| bad(m.into()))?);
        }
        Ok(Self::new(Checksums::CrcDb { size, crcs }, file_len, path))
    }

    fn new(sums: Checksums, file_len: u64, path: &'a Path) -> Self {
        DataCheck {
            path,
            file_len,
            sums,
            pos: 0,
            record: 0,
            pending: Vec::new(),
            whole: crc32fast::Hasher::new(),
        }
    }

    /// The end (exclusive) of record `i`'s bytes, CRC included for a chunk.
    fn record_end(&self, i: usize) -> u64 {
        match &self.sums {
            Checksums::Chunks { offsets } => offsets.get(i + 1).copied().unwrap_or(self.file_len),
            Checksums::CrcDb { size, .. } => ((i as u64 + 1) * size).min(self.file_len),
        }
    }

    fn records(&self) -> usize {
        match &self.sums {
            Checksums::Chunks { offsets } => offsets.len(),
            Checksums::CrcDb { crcs, .. } => crcs.len(),
        }
    }

    /// The next bytes of the file, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<()> {
        if self.pos + bytes.len() as u64 > self.file_len {
            return Err(Error::corrupt(self.path, "more bytes than the file holds"));
        }
        self.whole.update(bytes);
        while !bytes.is_empty() {
            let end = self.record_end(self.record);
            let take = ((end - self.pos) as usize).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.pending.extend_from_slice(now);
            self.pos += take as u64;
            bytes = rest;
            if self.pos == end {
                self.check_record()?;
                self.pending.clear();
                self.record += 1;
            }
        }
        Ok(())
    }

    fn check_record(&self) -> Result<()> {
        let i = self.record;
        let (stored, computed) = match &self.sums {
            Checksums::Chunks { .. } => {
                let (body, crc) = self.pending.split_at(self.pending.len() - 4);
                (
                    u32::from_be_bytes(crc.try_into().expect("4 bytes")),
                    crc32fast::hash(body),
                )
            }
            Checksums::CrcDb { crcs, .. } => (crcs[i], crc32fast::hash(&self.pending)),
        };
        if stored != computed {
            return Err(Error::corrupt(
                self.path,
                format!(
                    "chunk {i}: CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})"
                ),
            ));
        }
        Ok(())
    }

    /// Records checked so far.
    pub fn checked(&self) -> usize {
        self.record
    }

    /// After the last byte: every record checked; returns the CRC32 of the whole file (what
    /// Digest.crc32 must hold).
    pub fn finish(self) -> Result<u32> {
        if self.pos != self.file_len || self.record != self.records() {
            return Err(Error::corrupt(
                self.path,
                format!(
                    "{} of {} bytes checked, {} of {} records",
                    self.pos,
                    self.file_len,
                    self.record,
                    self.records()
                ),
            ));
        }
        Ok(self.whole.finalize())
    }
}

/// A Statistics.db table of contents that makes sense: `i32 count`, then `(i32 type, i32 offset)`
/// pairs with types and offsets increasing, the first offset right after the table, all inside
/// the file. For `ma`–`me` (no checksums, FORMAT.md 2.6); checksummed versions are checked whole
/// by [`crate::sstable::statistics::split`].
pub fn statistics_toc(buf: &[u8], path: &Path) -> Result<()> {
    let bad = |m: String| Error::corrupt(path, format!("Statistics.db table of contents: {m}"));
    let mut r = BeReader::new(buf);
    let n = r.u32().map_err(|m| bad(m.into()))?;
    if !(1..=MAX_STATISTICS_ENTRIES).contains(&n) {
        return Err(bad(format!("{n} entries")));
    }
    let mut last: Option<(u32, u32)> = None;
    for k in 0..n {
        let t = r.u32().map_err(|m| bad(m.into()))?;
        let off = r.u32().map_err(|m| bad(m.into()))?;
        let first = 4 + 8 * n;
        let ordered = match last {
            None => off == first,
            Some((lt, lo)) => t > lt && off > lo,
        };
        if t > MAX_STATISTICS_TYPE || !ordered || off as usize >= buf.len() {
            return Err(bad(format!(
                "entry {k}: type {t} at offset {off} in a {}-byte file",
                buf.len()
            )));
        }
        last = Some((t, off));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed Data.db of `chunks` (each followed by its CRC) and its offsets.
    fn framed(chunks: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let (mut data, mut offsets) = (Vec::new(), Vec::new());
        for c in chunks {
            offsets.push(data.len() as u64);
            data.extend_from_slice(c);
            data.extend_from_slice(&crc32fast::hash(c).to_be_bytes());
        }
        (data, offsets)
    }

    fn ci(offsets: Vec<u64>) -> CompressionInfo {
        CompressionInfo {
            class: "LZ4Compressor".into(),
            options: vec![],
            chunk_length: 65536,
            max_compressed_length: None,
            data_length: 1,
            offsets,
        }
    }

    fn check_in_pieces(ci: &CompressionInfo, data: &[u8], piece: usize) -> Result<u32> {
        let p = Path::new("Data.db");
        let mut c = DataCheck::compressed(ci, data.len() as u64, p)?;
        for part in data.chunks(piece) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn chunk_crcs_and_the_whole_crc_whatever_the_feed_sizes() {
        let (data, offsets) = framed(&[b"first chunk", b"", b"the third one, longer"]);
        let ci = ci(offsets);
        for piece in [1, 3, 7, 15, 16, data.len()] {
            assert_eq!(
                check_in_pieces(&ci, &data, piece).unwrap(),
                crc32fast::hash(&data),
                "piece {piece}"
            );
        }
        let mut bad = data.clone();
        bad[16] ^= 1;
        let e = check_in_pieces(&ci, &bad, 5).unwrap_err().to_string();
        assert!(e.contains("chunk 1"), "{e}");
        // Fewer bytes than the file holds: not a pass.
        let mut c = DataCheck::compressed(&ci, data.len() as u64, Path::new("Data.db")).unwrap();
        c.feed(&data[..data.len() - 1]).unwrap();
        let e = c.finish().unwrap_err().to_string();
        assert!(e.contains("records"), "{e}");
    }

    #[test]
    fn offsets_that_do_not_fit_the_file_are_refused() {
        let p = Path::new("Data.db");
        assert!(DataCheck::compressed(&ci(vec![0, 2]), 10, p).is_err());
        assert!(DataCheck::compressed(&ci(vec![4]), 10, p).is_err());
        assert!(DataCheck::compressed(&ci(vec![0, 8]), 10, p).is_err());
    }

    #[test]
    fn crc_db_pieces() {
        let p = Path::new("Data.db");
        let data: Vec<u8> = (0..100u8).collect();
        let mut crc_db = 32u32.to_be_bytes().to_vec();
        for piece in data.chunks(32) {
            crc_db.extend_from_slice(&crc32fast::hash(piece).to_be_bytes());
        }
        let mut c = DataCheck::uncompressed(&crc_db, 100, p).unwrap();
        c.feed(&data[..50]).unwrap();
        c.feed(&data[50..]).unwrap();
        assert_eq!(c.finish().unwrap(), crc32fast::hash(&data));
        let mut c = DataCheck::uncompressed(&crc_db, 100, p).unwrap();
        let mut bad = data.clone();
        bad[99] ^= 0x80;
        assert!(c.feed(&bad).is_err());
        assert!(DataCheck::uncompressed(&crc_db[..12], 100, p).is_err());
        assert!(DataCheck::uncompressed(&[0, 0, 0, 0], 0, p).is_err());
    }

    #[test]
    fn statistics_tables_of_contents() {
        let p = Path::new("Statistics.db");
        let mut s = Vec::new();
        s.extend_from_slice(&2u32.to_be_bytes());
        for (t, o) in [(0u32, 20u32), (2, 30)] {
            s.extend_from_slice(&t.to_be_bytes());
            s.extend_from_slice(&o.to_be_bytes());
        }
        s.resize(40, 7);
        statistics_toc(&s, p).unwrap();
        for (at, v) in [
            (3usize, 0u8),
            (3, 99),
            (11, 21),
            (15, 0),
            (19, 19),
            (19, 200),
        ] {
            let mut b = s.clone();
            b[at] = v;
            assert!(statistics_toc(&b, p).is_err(), "byte {at} = {v}");
        }
        assert!(statistics_toc(&s[..10], p).is_err());
    }
}
