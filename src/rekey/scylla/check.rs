//! Is this the SSTable's key? ScyllaDB's file cipher has no MAC and no key check: a wrong key
//! decrypts to garbage silently (FORMAT.md 4.8). So every encrypted component is decrypted and
//! its plaintext checked against what the SSTable says of itself:
//! - CompressionInfo.db parses, and every Data.db chunk's CRC32 matches (or CRC.db's, uncompressed);
//! - Digest.crc32 holds the CRC32 of the whole Data.db plaintext;
//! - Statistics.db has a sane table of contents;
//! - on 2026.2+ (tag 12), every component's plaintext has the CRC32 ComponentsDigests records;
//! - the bytes between the plaintext's end and its last AES block are zero, as the writer leaves
//!   them (4.3).
//!
//! Files are decrypted a window at a time (blocks in parallel), so any size fits in bounded memory;
//! plaintext buffers are wiped after use.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::crypto::scylla::{cipher_len, plain_len, tail_is_zero, FileCipher, FILE_BLOCK};
use crate::error::{Error, Result};
use crate::rekey::scylla::load::{EncryptedFile, ScyllaLoaded};
use crate::sstable::data::{parse_digest, read_at};
use crate::sstable::integrity::{statistics_toc, DataCheck};
use crate::sstable::scylla::component_number;
use crate::sstable::CompressionInfo;
use crate::util::read_small;

/// File blocks per window: 1 MiB reads, enough blocks to keep every core busy.
const WINDOW_BLOCKS: u64 = 256;
/// Components a check keeps whole in memory (CompressionInfo holds 8 bytes per chunk).
const MAX_KEPT: u64 = 1 << 30;
/// The components whose plaintext a check needs whole.
const KEPT: [&str; 4] = [
    "CompressionInfo.db",
    "CRC.db",
    "Digest.crc32",
    "Statistics.db",
];

/// What a check found, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Checked {
    /// Per component: plaintext length and CRC32.
    pub components: BTreeMap<String, (u64, u32)>,
    /// Data.db records (chunks or CRC.db pieces) whose checksum matched.
    pub records: usize,
}

/// Decrypts the encrypted file `path` (`file_len` bytes on disk) with `cipher`, window by window
/// in file order, giving each window's plaintext to `sink`. Returns false when the bytes after the
/// plaintext's end in its last AES block are not zero (a wrong-key hint, FORMAT.md 4.3).
pub fn decrypt_stream(
    cipher: &FileCipher,
    path: &Path,
    file_len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<bool> {
    let plain = plain_len(file_len).map_err(|m| Error::corrupt(path, m.0))?;
    let blocks = plain.div_ceil(FILE_BLOCK as u64);
    let f = File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut buf = Zeroizing::new(vec![0u8; WINDOW_BLOCKS as usize * FILE_BLOCK]);
    let mut tail_ok = true;
    let mut first = 0;
    while first < blocks {
        let n = WINDOW_BLOCKS.min(blocks - first);
        let last = first + n - 1;
        let bytes = (n - 1) as usize * FILE_BLOCK + cipher_len(plain, last);
        let w = &mut buf[..bytes];
        read_at(&f, path, first * FILE_BLOCK as u64, w)?;
        w.par_chunks_mut(FILE_BLOCK)
            .enumerate()
            .for_each(|(i, b)| cipher.decrypt_block(first + i as u64, b));
        if last + 1 == blocks {
            let start = (n - 1) as usize * FILE_BLOCK;
            tail_ok = tail_is_zero(&w[start..], plain);
        }
        let keep = (plain - first * FILE_BLOCK as u64).min(bytes as u64) as usize;
        sink(&w[..keep])?;
        first += n;
    }
    Ok(tail_ok)
}

/// The old key's evidence before a rekey writes anything: every component but Data.db checked
/// as [`check`] does, and Data.db's first window of records (each a CRC32: a wrong key passes one
/// with probability 2^-32). The whole-file checks are `verify`'s, after the rekey.
pub fn evidence(l: &ScyllaLoaded, cipher: &FileCipher) -> Result<()> {
    check_with(l, cipher, true).map(|_| ())
}

/// Decrypts every encrypted component of `l` with `cipher` and checks the plaintext (see the
/// module comment). An error names the file and what did not match: with a right key that is
/// corruption; almost always it is the wrong key.
pub fn check(l: &ScyllaLoaded, cipher: &FileCipher) -> Result<Checked> {
    check_with(l, cipher, false)
}

/// [`check`], or with `sample` only the first window of Data.db's records.
fn check_with(l: &ScyllaLoaded, cipher: &FileCipher, sample: bool) -> Result<Checked> {
    let key = l.key.to_string();
    let (wrong, as_wrong) = (|p: &Path, m: &str| wrong(p, &key, m), |e| as_wrong(e, &key));
    let mut out = Checked::default();
    let mut kept: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    // Every component but Data.db first: Data.db's check needs CompressionInfo or CRC.db.
    for f in l.files.iter().filter(|f| f.component != "Data.db") {
        let path = l.path(&f.component);
        let keep = KEPT.contains(&f.component.as_str());
        if keep && f.file_len > MAX_KEPT {
            return Err(Error::corrupt(
                &path,
                format!("{} bytes: too large", f.file_len),
            ));
        }
        let mut whole = Zeroizing::new(Vec::new());
        let mut crc = crc32fast::Hasher::new();
        let mut len = 0u64;
        let tail = decrypt_stream(cipher, &path, f.file_len, |p| {
            crc.update(p);
            len += p.len() as u64;
            if keep {
                whole.extend_from_slice(p);
            }
            Ok(())
        })?;
        if !tail {
            return Err(wrong(
                &path,
                "the bytes after its plaintext's end are not zero",
            ));
        }
        out.components
            .insert(f.component.clone(), (len, crc.finalize()));
        if keep {
            kept.insert(f.component.clone(), whole);
        }
    }
    // The ones the check needs that are not encrypted (a Data.db-only mask).
    for c in KEPT {
        if !kept.contains_key(c) && l.toc.iter().any(|t| t == c) {
            let path = l.path(c);
            kept.insert(c.into(), Zeroizing::new(read_small(&path, MAX_KEPT)?));
        }
    }
    if sample {
        return sample_data(l, cipher, &kept, &key).map(|()| out);
    }
    check_data(l, cipher, &kept, &mut out, &key)?;
    if let Some(s) = kept.get("Statistics.db") {
        if l.found.desc.version.starts_with('m') {
            statistics_toc(s, &l.path("Statistics.db")).map_err(as_wrong)?;
        }
    }
    check_components_digests(l, &out, &key)?;
    Ok(out)
}

/// Data.db: every record's CRC32, and Digest.crc32.
fn check_data(
    l: &ScyllaLoaded,
    cipher: &FileCipher,
    kept: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    out: &mut Checked,
    key: &str,
) -> Result<()> {
    let (wrong, as_wrong) = (|p: &Path, m: &str| wrong(p, key, m), |e| as_wrong(e, key));
    let path = l.path("Data.db");
    let (data, plain, mut check) = data_check(l, kept, &path, key)?;
    let mut crc = crc32fast::Hasher::new();
    let tail = decrypt_stream(cipher, &path, data.file_len, |p| {
        crc.update(p);
        check.feed(p).map_err(as_wrong)
    })?;
    if !tail {
        return Err(wrong(
            &path,
            "the bytes after its plaintext's end are not zero",
        ));
    }
    out.records = check.checked();
    let whole = check.finish().map_err(as_wrong)?;
    out.components
        .insert("Data.db".into(), (plain, crc.finalize()));
    if let Some(d) = kept.get("Digest.crc32") {
        let dp = l.path("Digest.crc32");
        let text = std::str::from_utf8(d).map_err(|_| wrong(&dp, "not text"))?;
        let stored = parse_digest(text, &dp).map_err(as_wrong)?;
        if stored != whole {
            return Err(wrong(
                &dp,
                &format!("holds {stored}, the Data.db plaintext has CRC32 {whole}"),
            ));
        }
    }
    Ok(())
}

/// The first window of Data.db's plaintext (every whole record in it checked).
fn sample_data(
    l: &ScyllaLoaded,
    cipher: &FileCipher,
    kept: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    key: &str,
) -> Result<()> {
    let path = l.path("Data.db");
    let as_wrong = |e| as_wrong(e, key);
    let (data, plain, mut check) = data_check(l, kept, &path, key)?;
    let first = (WINDOW_BLOCKS as usize * FILE_BLOCK).min(data.file_len as usize);
    let mut head = Zeroizing::new(vec![0u8; first]);
    let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    read_at(&f, &path, 0, &mut head)?;
    let blocks = plain.div_ceil(FILE_BLOCK as u64);
    for (i, b) in head.chunks_mut(FILE_BLOCK).enumerate() {
        let n = cipher_len(plain, i as u64).min(b.len());
        if (i as u64) < blocks && n > 0 {
            cipher.decrypt_block(i as u64, &mut b[..n]);
        }
    }
    let keep = (plain as usize).min(first);
    check.feed(&head[..keep]).map_err(as_wrong)?;
    if keep as u64 == plain {
        check.finish().map_err(as_wrong)?;
    } else if check.checked() == 0 {
        return Err(wrong(
            &path,
            key,
            "no whole record in its first MiB to check the key on",
        ));
    }
    Ok(())
}

/// Data.db's encrypted file, its plaintext length, and the check of its records against its
/// CompressionInfo.db (or CRC.db, uncompressed), both already decrypted in `kept`.
fn data_check<'a>(
    l: &'a ScyllaLoaded,
    kept: &BTreeMap<String, Zeroizing<Vec<u8>>>,
    path: &'a Path,
    key: &str,
) -> Result<(&'a EncryptedFile, u64, DataCheck<'a>)> {
    let as_wrong = |e| as_wrong(e, key);
    let data = l
        .files
        .iter()
        .find(|f| f.component == "Data.db")
        .expect("Data.db is always encrypted");
    let plain = plain_len(data.file_len).map_err(|m| Error::corrupt(path, m.0))?;
    let check = match (kept.get("CompressionInfo.db"), kept.get("CRC.db")) {
        (Some(ci), _) => {
            let ci_path = l.path("CompressionInfo.db");
            let ci = CompressionInfo::parse(ci, false, Some(plain), &ci_path).map_err(as_wrong)?;
            DataCheck::compressed(&ci, plain, path).map_err(as_wrong)?
        }
        (None, Some(crc_db)) => DataCheck::uncompressed(crc_db, plain, path).map_err(as_wrong)?,
        (None, None) => {
            return Err(Error::corrupt(
                path,
                "neither CompressionInfo.db nor CRC.db: nothing to check Data.db against",
            ))
        }
    };
    Ok((data, plain, check))
}

/// Tag 12 (2026.2+): every listed component's plaintext CRC32.
fn check_components_digests(l: &ScyllaLoaded, out: &Checked, key: &str) -> Result<()> {
    let Some(digests) = l.metadata.components_digests() else {
        return Ok(());
    };
    for c in &l.toc {
        let Some(n) = component_number(c) else {
            continue;
        };
        let Some(&want) = digests.get(&n) else {
            continue;
        };
        let have = match out.components.get(c) {
            Some(&(_, crc)) => crc,
            // Not encrypted: its bytes on disk are its plaintext.
            None => crc32fast::hash(&read_small(&l.path(c), u64::MAX)?),
        };
        if have != want {
            return Err(wrong(
                &l.path(c),
                key,
                &format!("Scylla.db's ComponentsDigests says CRC32 {want:#010x}, its plaintext has {have:#010x}"),
            ));
        }
    }
    Ok(())
}

/// Decrypted bytes that are not what the SSTable says: the key is wrong (or the file damaged).
fn wrong(path: &Path, key: &str, msg: &str) -> Error {
    Error::WrongKey {
        path: path.to_path_buf(),
        what: "its plaintext".into(),
        key: key.to_string(),
        msg: msg.to_string(),
    }
}

/// A format error found in decrypted bytes, as a wrong key.
fn as_wrong(e: Error, key: &str) -> Error {
    match e {
        Error::Corrupt { path, msg } => wrong(&path, key, &msg),
        e => e,
    }
}
