//! Step 3, rewrite: records (Data.db chunks today; BTI index pages and metadata components share
//! the machinery) are read in windows, transformed in parallel, and written at precomputed offsets.
//! Memory stays bounded by the window size, whatever the file size.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::crypto::random::IvSource;
use crate::crypto::{AesKey, ChunkClass, Envelope, KeyHeader};
use crate::error::{Error, Result};
use crate::rekey::plan::{ChunkMeta, StatsComponent, RAW};
use crate::sstable::data::{checked_chunk, read_at};
use crate::sstable::{pages, statistics};

/// Input bytes read per window (several MiB: large sequential reads, bounded memory).
pub const WINDOW: u64 = 8 << 20;

/// Where a record is and goes. Lengths include the record's 4-byte CRC, if it has one.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub in_off: u64,
    pub in_len: u32,
    pub out_off: u64,
    pub out_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decrypted with the old key and sealed with the new one.
    Rekeyed,
    /// Already under the target key: copied after its checks.
    Unchanged,
    /// Stored in plaintext by the writer (FORMAT.md 2.5): copied.
    Raw,
}

/// One encrypted record layout. Implementations must append exactly `span.out_len` bytes.
pub trait RecordLayout: Sync {
    fn rewrite(
        &self,
        i: usize,
        input: &[u8],
        out: &mut Vec<u8>,
        iv: &mut IvSource,
    ) -> Result<Outcome>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub rekeyed: usize,
    pub unchanged: usize,
    pub raw: usize,
}

thread_local! {
    static IVS: RefCell<IvSource> = RefCell::new(IvSource::new());
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Splits spans into windows of about [`WINDOW`] input bytes (at least one record each).
pub fn windows(spans: &[Span]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut a = 0;
    while a < spans.len() {
        let mut b = a + 1;
        let mut bytes = spans[a].in_len as u64;
        while b < spans.len() && bytes + spans[b].in_len as u64 <= WINDOW {
            bytes += spans[b].in_len as u64;
            b += 1;
        }
        out.push(a..b);
        a = b;
    }
    out
}

/// The input file and the already created, pre-sized output file.
#[derive(Clone, Copy)]
pub struct Files<'a> {
    pub src: &'a File,
    pub src_path: &'a Path,
    pub dst: &'a File,
    pub dst_path: &'a Path,
}

/// Rewrites `src` into the already created, pre-sized `dst`. Returns the CRC32 of everything
/// written (the Digest.crc32 of a Data.db) and the record counts. `progress` gets input bytes.
pub fn rewrite_file(
    files: &Files,
    spans: &[Span],
    layout: &dyn RecordLayout,
    progress: &(dyn Fn(u64) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<(u32, Counts)> {
    let Files {
        src,
        src_path,
        dst,
        dst_path,
    } = *files;
    let mut crc = crc32fast::Hasher::new();
    let mut counts = Counts::default();
    let mut inbuf = Vec::new();
    let mut outbuf = Vec::new();
    for w in windows(spans) {
        if cancelled() {
            return Err(Error::Interrupted);
        }
        let first = spans[w.start];
        let last = spans[w.end - 1];
        let in_len = (last.in_off + last.in_len as u64 - first.in_off) as usize;
        let out_len = (last.out_off + last.out_len as u64 - first.out_off) as usize;
        inbuf.resize(in_len, 0);
        read_at(src, src_path, first.in_off, &mut inbuf)?;
        outbuf.resize(out_len, 0);
        // Cut the output window into each record's slot, then fill the slots in parallel.
        let mut slots: Vec<(usize, &[u8], &mut [u8])> = Vec::with_capacity(w.len());
        let mut rest: &mut [u8] = &mut outbuf;
        for i in w.clone() {
            let s = spans[i];
            let (slot, tail) = rest.split_at_mut(s.out_len as usize);
            rest = tail;
            let a = (s.in_off - first.in_off) as usize;
            slots.push((i, &inbuf[a..a + s.in_len as usize], slot));
        }
        let results: Vec<Result<Outcome>> = slots
            .into_par_iter()
            .map(|(i, input, slot)| {
                SCRATCH.with(|scratch| {
                    IVS.with(|ivs| {
                        let mut scratch = scratch.borrow_mut();
                        scratch.clear();
                        let o = layout.rewrite(i, input, &mut scratch, &mut ivs.borrow_mut())?;
                        if scratch.len() != slot.len() {
                            return Err(Error::corrupt(
                                src_path,
                                format!(
                                    "record {i}: rewrote to {} bytes, {} were planned (the file changed while running?)",
                                    scratch.len(),
                                    slot.len()
                                ),
                            ));
                        }
                        slot.copy_from_slice(&scratch);
                        // The scratch buffer held plaintext on some paths: wipe it.
                        zeroize::Zeroize::zeroize(&mut scratch[..]);
                        Ok(o)
                    })
                })
            })
            .collect();
        for r in results {
            match r? {
                Outcome::Rekeyed => counts.rekeyed += 1,
                Outcome::Unchanged => counts.unchanged += 1,
                Outcome::Raw => counts.raw += 1,
            }
        }
        dst.write_all_at(&outbuf, first.out_off)
            .map_err(|e| Error::io(dst_path, "write", e))?;
        crc.update(&outbuf);
        progress(in_len as u64);
    }
    Ok((crc.finalize(), counts))
}

/// What every record layout needs to move a record from its old key to the target key.
pub struct Rekeying<'a> {
    pub old: &'a Envelope,
    pub new: &'a Envelope,
    /// Old keys by record key index; `None` for the target key's own index.
    pub keys: &'a [Option<Arc<AesKey>>],
    pub key_names: &'a [String],
    pub target_idx: Option<u32>,
    pub target_key: &'a AesKey,
    pub target_header: &'a KeyHeader,
}

impl Rekeying<'_> {
    fn wrong_key(&self, path: &Path, what: String, key: u32, msg: String) -> Error {
        Error::WrongKey {
            path: path.to_path_buf(),
            what,
            key: self.key_names[key as usize].clone(),
            msg,
        }
    }

    fn old_key(&self, key: u32) -> &AesKey {
        if Some(key) == self.target_idx {
            self.target_key
        } else {
            self.keys[key as usize]
                .as_ref()
                .expect("every non-target key was resolved in the plan")
        }
    }

    /// Decrypts an unprefixed record `H IV E(x)` with the key its header named; returns `x`.
    fn open_record(
        &self,
        path: &Path,
        what: &dyn Fn() -> String,
        key: u32,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let opened = self
            .old
            .open_record(None, blob)
            .map_err(|m| Error::corrupt(path, format!("{}: {m}", what())))?;
        let mut plain = Zeroizing::new(Vec::with_capacity(opened.ciphertext.len()));
        self.old_key(key)
            .decrypt_append(
                self.old.cipher.mode,
                opened.iv,
                opened.ciphertext,
                &mut plain,
            )
            .map_err(|e| self.wrong_key(path, what(), key, e.to_string()))?;
        Ok(plain)
    }

    /// Appends `H' IV' E'(plain)` under the target key with a fresh IV.
    fn seal_record(&self, plain: &[u8], out: &mut Vec<u8>, ivs: &mut IvSource) -> Result<()> {
        let mut iv = [0u8; 16];
        let iv = &mut iv[..self.new.cipher.iv_len];
        ivs.next(iv)?;
        self.new
            .seal_record(self.target_header, self.target_key, iv, plain, out);
        Ok(())
    }
}

/// Data.db chunks (FORMAT.md 1.3, 2.3): CRC, decrypt with the header's key, check the structure,
/// seal with the new key under a fresh IV, new CRC.
pub struct DataChunks<'a> {
    pub path: &'a Path,
    pub chunks: &'a [ChunkMeta],
    pub plain_len: &'a (dyn Fn(usize) -> usize + Sync),
    pub rk: Rekeying<'a>,
}

impl RecordLayout for DataChunks<'_> {
    fn rewrite(
        &self,
        i: usize,
        framed: &[u8],
        out: &mut Vec<u8>,
        ivs: &mut IvSource,
    ) -> Result<Outcome> {
        let chunk = checked_chunk(framed, i, self.path)?;
        let meta = self.chunks[i];
        if meta.key == RAW {
            out.extend_from_slice(framed);
            return Ok(Outcome::Raw);
        }
        let rk = &self.rk;
        let opened = rk
            .old
            .open_chunk(chunk)
            .map_err(|m| Error::corrupt(self.path, format!("chunk {i}: {m}")))?;
        if opened.header_len != meta.header_len as usize {
            return Err(Error::corrupt(
                self.path,
                format!("chunk {i}: key header changed while running"),
            ));
        }
        let mut payload = Zeroizing::new(Vec::with_capacity(opened.ciphertext.len()));
        rk.old_key(meta.key)
            .decrypt_append(
                rk.old.cipher.mode,
                opened.iv,
                opened.ciphertext,
                &mut payload,
            )
            .map_err(|e| rk.wrong_key(self.path, format!("chunk {i}"), meta.key, e.to_string()))?;
        rk.old
            .check_payload(opened.outer, &payload, (self.plain_len)(i))
            .map_err(|m| rk.wrong_key(self.path, format!("chunk {i}"), meta.key, m))?;
        if Some(meta.key) == rk.target_idx {
            // Already under the target key, and checked: copied as it is.
            out.extend_from_slice(framed);
            return Ok(Outcome::Unchanged);
        }
        let start = out.len();
        if let ChunkClass::Chained(_) = rk.new.class {
            out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        }
        rk.seal_record(&payload, out, ivs)?;
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
        Ok(Outcome::Rekeyed)
    }
}

/// Page-encrypted Partitions.db/Rows.db pages (FORMAT.md 2.6): each page's plaintext is
/// re-encrypted in place; page count and positions never change.
pub struct IndexPages<'a> {
    pub path: &'a Path,
    pub pages: &'a [ChunkMeta],
    pub rk: Rekeying<'a>,
}

impl RecordLayout for IndexPages<'_> {
    fn rewrite(
        &self,
        i: usize,
        page: &[u8],
        out: &mut Vec<u8>,
        ivs: &mut IvSource,
    ) -> Result<Outcome> {
        let blob = pages::open_page(page, i, self.path)?;
        let meta = self.pages[i];
        let rk = &self.rk;
        let what = || format!("page {i}");
        let plain = rk.open_record(self.path, &what, meta.key, blob)?;
        // The page capacity of the old provider and cipher (FORMAT.md 2.6) bounds every page.
        let cap = pages::max_bytes_in_page(rk.old.provider.header_bound(), rk.old.cipher.iv_len);
        if plain.len() > cap {
            return Err(rk.wrong_key(
                self.path,
                what(),
                meta.key,
                format!(
                    "{} plain bytes, more than a page holds ({cap})",
                    plain.len()
                ),
            ));
        }
        if Some(meta.key) == rk.target_idx {
            out.extend_from_slice(page);
            return Ok(Outcome::Unchanged);
        }
        let mut blob = Zeroizing::new(Vec::with_capacity(pages::USABLE));
        rk.seal_record(&plain, &mut blob, ivs)?;
        if blob.len() > pages::USABLE {
            return Err(Error::unsupported(
                self.path,
                format!(
                    "page {i}: {} bytes under the new key header, more than the {} a page holds",
                    blob.len(),
                    pages::USABLE
                ),
            ));
        }
        pages::seal_page(&blob, out);
        Ok(Outcome::Rekeyed)
    }
}

/// A new Statistics.db whose encrypted components are re-encrypted under the target key; offsets
/// and all three kinds of CRC are recomputed by [`statistics::join`].
pub fn rekey_statistics(path: &Path, comps: &[StatsComponent], rk: &Rekeying) -> Result<Vec<u8>> {
    let mut ivs = IvSource::new();
    let mut out = Vec::with_capacity(comps.len());
    for c in comps {
        let what = || format!("Statistics.db component {}", c.kind);
        let plain = rk.open_record(path, &what, c.key, &c.body)?;
        if Some(c.key) == rk.target_idx {
            out.push((c.kind, c.body.clone()));
            continue;
        }
        let mut body = Vec::with_capacity(c.body.len() + 64);
        rk.seal_record(&plain, &mut body, &mut ivs)?;
        out.push((c.kind, body));
    }
    Ok(statistics::join(&out))
}

/// Decrypts a chunk and checks its structure; returns the decrypted payload.
pub fn open_and_check(
    env: &Envelope,
    chunk: &[u8],
    plain_len: usize,
    key: &AesKey,
) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    let opened = env.open_chunk(chunk)?;
    let mut payload = Zeroizing::new(Vec::with_capacity(opened.ciphertext.len()));
    key.decrypt_append(env.cipher.mode, opened.iv, opened.ciphertext, &mut payload)
        .map_err(|e| e.to_string())?;
    env.check_payload(opened.outer, &payload, plain_len)?;
    Ok(payload)
}
