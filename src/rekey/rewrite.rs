//! Step 3, rewrite: records (Data.db chunks today; BTI index pages and metadata components share
//! the machinery) are read in windows, transformed in parallel, and written at precomputed offsets.
//! Memory stays bounded by the window size, whatever the file size.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::crypto::cipher::CbcJob;
use crate::crypto::envelope::CHECKED_HEAD;
use crate::crypto::fused::ReJob;
use crate::crypto::random::IvSource;
use crate::crypto::{AesKey, ChunkClass, CipherSpec, Envelope, KeyHeader, Mode};
use crate::error::{Error, Result};
use crate::rekey::plan::{ChunkMeta, Span, StatsComponent, RAW};
use crate::sstable::crc;
use crate::sstable::data::{checked_chunk, read_at};
use crate::sstable::{pages, statistics};

/// Input bytes per window: large sequential reads, enough windows to keep every core busy, and
/// memory bounded by threads x 2 windows whatever the file size.
pub const WINDOW: u64 = 2 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decrypted with the old key and sealed with the new one.
    Rekeyed,
    /// Already under the target key: copied after its checks.
    Unchanged,
    /// Stored in plaintext by the writer (FORMAT.md 2.5): copied.
    Raw,
}

/// One encrypted record layout.
pub trait RecordLayout: Sync {
    /// Rewrites record `i` (its framed input) by appending exactly its planned output to `out`.
    fn rewrite(
        &self,
        i: usize,
        input: &[u8],
        out: &mut Vec<u8>,
        ivs: &mut IvSource,
    ) -> Result<Outcome>;

    /// Rewrites the consecutive records starting at `first`, whose inputs lie back to back in
    /// `input`, into `out` (exactly their planned total size). The default goes record by record;
    /// a layout overrides it to batch work across records (multi-buffer encryption). Returns the
    /// counts and, if the layout computed it on the way, the CRC32 of `out`.
    fn rewrite_window(
        &self,
        first: usize,
        spans: &[Span],
        input: &[u8],
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<(Counts, Option<u32>)> {
        let base_in = spans[0].in_off;
        let mut counts = Counts::default();
        let mut pos = 0;
        for (k, s) in spans.iter().enumerate() {
            let a = (s.in_off - base_in) as usize;
            ws.scratch.clear();
            let o = self.rewrite(
                first + k,
                &input[a..a + s.in_len as usize],
                &mut ws.scratch,
                &mut ws.ivs,
            )?;
            if ws.scratch.len() != s.out_len as usize {
                return Err(Error::Usage(format!(
                    "record {}: rewrote to {} bytes, {} were planned (the file changed while running?)",
                    first + k,
                    ws.scratch.len(),
                    s.out_len
                )));
            }
            out[pos..pos + ws.scratch.len()].copy_from_slice(&ws.scratch);
            pos += ws.scratch.len();
            counts.add(o);
        }
        Ok((counts, None))
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub rekeyed: usize,
    pub unchanged: usize,
    pub raw: usize,
}

impl Counts {
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Rekeyed => self.rekeyed += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Raw => self.raw += 1,
        }
    }

    fn merge(&mut self, o: Counts) {
        self.rekeyed += o.rekeyed;
        self.unchanged += o.unchanged;
        self.raw += o.raw;
    }
}

/// Per-thread buffers, reused from window to window. `plain` and `scratch` hold plaintext and
/// are wiped when a file is done.
#[derive(Default)]
pub struct Workspace {
    pub ivs: IvSource,
    pub scratch: Vec<u8>,
    pub plain: Vec<u8>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

impl Workspace {
    /// Zeroes the plaintext the last window left (only the used part: the rest was zeroed the
    /// same way before) and empties the buffers. Called after every window, so plaintext never
    /// outlives its window and no thread has to be stopped to clean up after a file.
    fn wipe(&mut self) {
        for v in [&mut self.plain, &mut self.scratch] {
            zeroize::Zeroize::zeroize(&mut v[..]);
            v.clear();
        }
    }
}

thread_local! {
    static WS: RefCell<Workspace> = RefCell::new(Workspace::default());
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

/// Rewrites `src` into the pre-sized `dst`: windows of records are read, transformed and written
/// at their precomputed offsets in parallel (so reads, AES work and page-cache writes of different
/// windows overlap across cores). Returns the CRC32 of everything written (a Data.db's
/// Digest.crc32) and the record counts. `progress` gets input bytes.
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
    advise_sequential(src);
    let results: Vec<Result<(u32, u64, Counts)>> = windows(spans)
        .into_par_iter()
        .map(|w| {
            if cancelled() {
                return Err(Error::Interrupted);
            }
            WS.with(|ws| {
                let ws = &mut *ws.borrow_mut();
                let first = spans[w.start];
                let last = spans[w.end - 1];
                let in_range = first.in_off..last.in_off + last.in_len as u64;
                let out_len = (last.out_off + last.out_len as u64 - first.out_off) as usize;
                let mut inbuf = std::mem::take(&mut ws.inbuf);
                let mut outbuf = std::mem::take(&mut ws.outbuf);
                let in_len = (in_range.end - in_range.start) as usize;
                // Grown, never shrunk: a resize after a short window would zero-fill megabytes
                // that the read and the rewrite overwrite anyway.
                if inbuf.len() < in_len {
                    inbuf.resize(in_len, 0);
                }
                if outbuf.len() < out_len {
                    outbuf.resize(out_len, 0);
                }
                let r = (|| {
                    let inbuf = &mut inbuf[..in_len];
                    let outbuf = &mut outbuf[..out_len];
                    read_at(src, src_path, in_range.start, inbuf)?;
                    let (counts, crc) =
                        layout.rewrite_window(w.start, &spans[w.clone()], inbuf, outbuf, ws)?;
                    dst.write_all_at(outbuf, first.out_off)
                        .map_err(|e| Error::io(dst_path, "write", e))?;
                    stream_hints(src, &in_range, dst, first.out_off, out_len)
                        .map_err(|e| Error::io(dst_path, "start writeback", e))?;
                    let crc = crc.unwrap_or_else(|| crc32fast::hash(outbuf));
                    progress(in_range.end - in_range.start);
                    Ok((crc, out_len as u64, counts))
                })();
                ws.wipe();
                ws.inbuf = inbuf;
                ws.outbuf = outbuf;
                r
            })
        })
        .collect();
    let mut crc = 0;
    let mut counts = Counts::default();
    for r in results {
        let (window_crc, window_len, c) = r?;
        crc = crc::combine(crc, window_crc, window_len);
        counts.merge(c);
    }
    Ok((crc, counts))
}

/// Streaming hints once a window is written, both advisory (durability still comes from the
/// fsync after the last window): start the disk writing the window now, so that writeback overlaps
/// the rest of the rewrite instead of all waiting in the final fsync; and drop the input window
/// from the page cache, so that a rekey neither evicts the node's hot data nor leaves the old
/// file's pages for the final unlink to free (tmpfs keeps its pages: both are no-ops there).
/// A writeback that reports an I/O error or a full disk fails the SSTable (the final fsync would
/// too); a file system without the call (`EINVAL`, `ENOSYS`, `ESPIPE`) just has no hint.
fn stream_hints(
    src: &File,
    input: &Range<u64>,
    dst: &File,
    out_off: u64,
    out_len: usize,
) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a call on a valid descriptor with an in-file range.
    let r = unsafe {
        libc::sync_file_range(
            dst.as_raw_fd(),
            out_off as libc::off64_t,
            out_len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ESPIPE)
        ) {
            return Err(e);
        }
    }
    // SAFETY: advisory call on a valid descriptor with an in-file range; failure is harmless
    // (the page cache keeps pages it could have dropped).
    unsafe {
        libc::posix_fadvise(
            src.as_raw_fd(),
            input.start as libc::off_t,
            (input.end - input.start) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(())
}

/// Tells the kernel the input is read once, front to back (larger read-ahead).
fn advise_sequential(f: &File) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: advisory call on a valid descriptor; failure is harmless.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
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

    /// The window path. Each chunk is CRC-checked, its header parsed, and its first and last
    /// block decrypted to check padding and structure (a wrong key fails here, before anything
    /// is encrypted). Then, when the CPU has VAES and both sides are CBC with equal key sizes, all
    /// chunks go through the fused kernel (decrypt and re-encrypt in one pass, no plaintext in
    /// memory); otherwise they are decrypted into a plaintext arena and encrypted with the
    /// multi-buffer kernel. New headers, fresh IVs and CRCs are written around them.
    fn rewrite_window(
        &self,
        first: usize,
        spans: &[Span],
        input: &[u8],
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<(Counts, Option<u32>)> {
        /// Where a chunk's new ciphertext comes from.
        enum From {
            /// Plaintext already in the workspace arena.
            Plain(Range<usize>),
            /// Old ciphertext in `input`, re-encrypted by the fused kernel.
            Fused {
                key: u32,
                ct: Range<usize>,
                old_iv: [u8; 16],
            },
        }
        struct Job {
            from: From,
            iv: [u8; 16],
            ct: Range<usize>,
            slot: Range<usize>,
        }
        let rk = &self.rk;
        let base_in = spans[0].in_off;
        let base_out = spans[0].out_off;
        let mode = rk.new.cipher.mode;
        let iv_len = rk.new.cipher.iv_len;
        let cbc_to_cbc = rk.old.cipher.mode == Mode::Cbc && mode == Mode::Cbc;
        let mut counts = Counts::default();
        let mut jobs: Vec<Job> = Vec::with_capacity(spans.len());
        let mut head = Vec::with_capacity(4 + rk.target_header.encoded_len());
        ws.plain.clear();
        // Room for all the window's plaintext up front: a reallocation mid-window would leave a
        // copy of the plaintext so far in freed memory.
        ws.plain.reserve(input.len());
        for (k, s) in spans.iter().enumerate() {
            let i = first + k;
            let a = (s.in_off - base_in) as usize;
            let framed = &input[a..a + s.in_len as usize];
            let o = (s.out_off - base_out) as usize;
            let slot = o..o + s.out_len as usize;
            let chunk = checked_chunk(framed, i, self.path)?;
            let meta = self.chunks[i];
            if meta.key == RAW {
                out[slot].copy_from_slice(framed);
                counts.raw += 1;
                continue;
            }
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
            let key = rk.old_key(meta.key);
            let wrong = |m: String| rk.wrong_key(self.path, format!("chunk {i}"), meta.key, m);
            let fused = cbc_to_cbc && key.can_fuse_with(rk.target_key);
            let (from, payload_len) = if fused {
                let (n, first_block) = key
                    .peek_cbc(opened.iv, opened.ciphertext)
                    .map_err(|e| wrong(e.to_string()))?;
                rk.old
                    .check_payload_head(
                        opened.outer,
                        &first_block[..n.min(CHECKED_HEAD)],
                        n,
                        (self.plain_len)(i),
                    )
                    .map_err(wrong)?;
                let c0 = opened.ciphertext.as_ptr() as usize - input.as_ptr() as usize;
                let from = From::Fused {
                    key: meta.key,
                    ct: c0..c0 + opened.ciphertext.len(),
                    old_iv: opened.iv.try_into().expect("CBC IV"),
                };
                (from, n)
            } else {
                let p0 = ws.plain.len();
                key.decrypt_append(
                    rk.old.cipher.mode,
                    opened.iv,
                    opened.ciphertext,
                    &mut ws.plain,
                )
                .map_err(|e| wrong(e.to_string()))?;
                rk.old
                    .check_payload(opened.outer, &ws.plain[p0..], (self.plain_len)(i))
                    .map_err(wrong)?;
                (From::Plain(p0..ws.plain.len()), ws.plain.len() - p0)
            };
            if Some(meta.key) == rk.target_idx {
                if let From::Plain(p) = from {
                    ws.plain.truncate(p.start);
                }
                out[slot].copy_from_slice(framed);
                counts.unchanged += 1;
                continue;
            }
            // [i32 outer] H' IV' — then the ciphertext, then the CRC.
            head.clear();
            if let ChunkClass::Chained(_) = rk.new.class {
                head.extend_from_slice(&(payload_len as i32).to_be_bytes());
            }
            rk.target_header.write(&mut head);
            let mut iv = [0u8; 16];
            ws.ivs.next(&mut iv[..iv_len])?;
            let h = slot.start;
            out[h..h + head.len()].copy_from_slice(&head);
            out[h + head.len()..h + head.len() + iv_len].copy_from_slice(&iv[..iv_len]);
            let ct_start = h + head.len() + iv_len;
            let ct = ct_start..ct_start + CipherSpec::padded_len(payload_len);
            if ct.end + 4 != slot.end {
                return Err(Error::corrupt(self.path, format!("chunk {i}: planned length does not match (the file changed while running?)")));
            }
            jobs.push(Job { from, iv, ct, slot });
            counts.rekeyed += 1;
        }
        // Encrypt: split `out` into the jobs' disjoint, increasing ciphertext ranges.
        {
            let mut cbc: Vec<CbcJob> = Vec::with_capacity(jobs.len());
            // Fused jobs by old key: one kernel call per key (a window nearly always has one).
            let mut fused: BTreeMap<u32, Vec<ReJob>> = BTreeMap::new();
            let mut rest: &mut [u8] = out;
            let mut at = 0;
            for j in &jobs {
                let (_, tail) = rest.split_at_mut(j.ct.start - at);
                let (ct, tail) = tail.split_at_mut(j.ct.len());
                rest = tail;
                at = j.ct.end;
                match &j.from {
                    From::Fused {
                        key,
                        ct: old,
                        old_iv,
                    } => fused.entry(*key).or_default().push(ReJob {
                        ct: &input[old.clone()],
                        old_iv: *old_iv,
                        new_iv: j.iv,
                        out: ct,
                    }),
                    From::Plain(p) => {
                        let plain = &ws.plain[p.clone()];
                        match mode {
                            Mode::Cbc => cbc.push(CbcJob {
                                plain,
                                iv: j.iv,
                                out: ct,
                            }),
                            Mode::Ecb => rk.target_key.encrypt_ecb_into(plain, ct),
                        }
                    }
                }
            }
            if !cbc.is_empty() {
                rk.target_key.encrypt_cbc_many(&mut cbc);
            }
            for (key, mut batch) in fused {
                rk.old_key(key).rekey_cbc_many(rk.target_key, &mut batch);
            }
        }
        // New chunks get their CRC; copied ones carry their checked CRC. The window's CRC is
        // combined from those, not computed in a second pass.
        let mut rekeyed = jobs.iter().map(|j| j.slot.start).peekable();
        let mut window = 0u32;
        for s in spans {
            let o = (s.out_off - base_out) as usize;
            let slot = &mut out[o..o + s.out_len as usize];
            let (body, tail) = slot.split_at_mut(slot.len() - 4);
            if rekeyed.next_if_eq(&o).is_some() {
                tail.copy_from_slice(&crc32fast::hash(body).to_be_bytes());
            }
            let stored: [u8; 4] = (&*tail).try_into().unwrap();
            let record = crc::extend(u32::from_be_bytes(stored), &stored);
            window = crc::combine(window, record, s.out_len as u64);
        }
        Ok((counts, Some(window)))
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
