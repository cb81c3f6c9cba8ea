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
use crate::crypto::envelope::{Opened, CHECKED_HEAD};
use crate::crypto::fused::ReJob;
use crate::crypto::random::IvSource;
use crate::crypto::{AesKey, ChunkClass, CipherSpec, Envelope, KeyHeader, Mode};
use crate::error::{Error, Result};
use crate::fsio;
use crate::rekey::plan::{raw_last_chunk_hint, ChunkMeta, Loaded, Span, StatsComponent, RAW};
use crate::sstable::crc;
use crate::sstable::data::{checked_chunk, read_at};
use crate::sstable::CompressionInfo;
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

/// One encrypted record layout, rewritten a window of records at a time.
pub trait RecordLayout: Sync {
    /// Rewrites the consecutive records starting at `first`, whose inputs lie back to back in
    /// `input`, into `out` (exactly their planned total size). Returns the counts and, if the
    /// layout computed it on the way, the CRC32 of `out`.
    fn rewrite_window(
        &self,
        first: usize,
        spans: &[Span],
        input: &[u8],
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<(Counts, Option<u32>)>;
}

/// A layout rewritten record by record (index pages); [`RecordLayout`] follows.
pub trait PerRecord: Sync {
    /// Rewrites record `i` (its framed input) by appending exactly its planned output to `out`.
    fn rewrite(
        &self,
        i: usize,
        input: &[u8],
        out: &mut Vec<u8>,
        ivs: &mut IvSource,
    ) -> Result<Outcome>;

    /// The file the records are read from (for errors).
    fn path(&self) -> &Path;
}

impl<T: PerRecord> RecordLayout for T {
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
                return Err(Error::Changed {
                    path: self.path().to_path_buf(),
                    what: format!(
                        "record {}: rewrote to {} bytes, {} were planned (the file changed while running?)",
                        first + k,
                        ws.scratch.len(),
                        s.out_len
                    ),
                });
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

/// What [`each_window`] runs on a window: `(first record, the window's spans, its input, the
/// thread's workspace)`.
pub type WindowWork<'a, R> = dyn Fn(usize, &[Span], &[u8], &mut Workspace) -> Result<R> + Sync + 'a;

/// Reads `spans` from `src` a window at a time and runs `work(first, window spans, input, ws)`
/// on each, windows in parallel on all cores, in one buffer per thread (grown, never shrunk: a
/// resize after a short window would zero-fill megabytes that the read overwrites anyway). The
/// workspace's plaintext is wiped after every window. The one read loop of the rewrite and verify.
pub fn each_window<R: Send>(
    src: &File,
    src_path: &Path,
    spans: &[Span],
    cancelled: &(dyn Fn() -> bool + Sync),
    work: &WindowWork<R>,
) -> Result<Vec<R>> {
    fsio::advise_sequential(src);
    windows(spans)
        .into_par_iter()
        .map(|w| {
            if cancelled() {
                return Err(Error::Interrupted);
            }
            WS.with(|ws| {
                let ws = &mut *ws.borrow_mut();
                let (first, last) = (spans[w.start], spans[w.end - 1]);
                let in_len = (last.in_off + last.in_len as u64 - first.in_off) as usize;
                let mut inbuf = std::mem::take(&mut ws.inbuf);
                if inbuf.len() < in_len {
                    inbuf.resize(in_len, 0);
                }
                let r = read_at(src, src_path, first.in_off, &mut inbuf[..in_len])
                    .and_then(|()| work(w.start, &spans[w.clone()], &inbuf[..in_len], ws));
                ws.wipe();
                ws.inbuf = inbuf;
                r
            })
        })
        .collect()
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
    let results = each_window(src, src_path, spans, cancelled, &|first, w, input, ws| {
        let (a, z) = (w[0], w[w.len() - 1]);
        let out_len = (z.out_off + z.out_len as u64 - a.out_off) as usize;
        let mut outbuf = std::mem::take(&mut ws.outbuf);
        if outbuf.len() < out_len {
            outbuf.resize(out_len, 0);
        }
        let r = (|| {
            let out = &mut outbuf[..out_len];
            let (counts, crc) = layout.rewrite_window(first, w, input, out, ws)?;
            dst.write_all_at(out, a.out_off)
                .map_err(|e| Error::io(dst_path, "write", e))?;
            let in_range = a.in_off..a.in_off + input.len() as u64;
            stream_hints(src, &in_range, dst, a.out_off, out_len)
                .map_err(|e| Error::io(dst_path, "start writeback", e))?;
            progress(input.len() as u64);
            Ok((
                crc.unwrap_or_else(|| crc32fast::hash(out)),
                out_len as u64,
                counts,
            ))
        })();
        ws.outbuf = outbuf;
        r
    })?;
    let mut crc = 0;
    let mut counts = Counts::default();
    for (window_crc, window_len, c) in results {
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
fn stream_hints(
    src: &File,
    input: &Range<u64>,
    dst: &File,
    out_off: u64,
    out_len: usize,
) -> std::io::Result<()> {
    fsio::start_writeback(dst, out_off, out_len)?;
    fsio::drop_cached(src, input);
    Ok(())
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

/// Opens Data.db chunks the one way every reader of this tool does (FORMAT.md 1.3, 2.3): the CRC,
/// the key header (as the plan read it), decryption with the key that header names, and the
/// structure the class implies, so that a wrong key never passes. Used by the rewrite, by the
/// trial decryption before it, and by verify.
pub struct ChunkOpener<'a> {
    pub path: &'a Path,
    pub env: &'a Envelope,
    pub ci: &'a CompressionInfo,
    pub chunks: &'a [ChunkMeta],
    /// Key names by key index, for errors.
    pub key_names: &'a [String],
}

/// A chunk whose CRC and key header were checked.
pub enum Framed<'b> {
    /// Stored in plaintext by the writer (FORMAT.md 2.5).
    Raw,
    /// Encrypted under the key of index `key`.
    Sealed { key: u32, opened: Opened<'b> },
}

impl<'a> ChunkOpener<'a> {
    /// The opener of a loaded SSTable's Data.db.
    pub fn of(l: &'a Loaded, path: &'a Path, key_names: &'a [String]) -> Self {
        ChunkOpener {
            path,
            env: &l.envelope,
            ci: &l.ci,
            chunks: &l.chunks,
            key_names,
        }
    }

    /// Checks chunk `i`'s CRC (`framed` is the chunk and its CRC) and parses its key header.
    pub fn frame<'b>(&self, i: usize, framed: &'b [u8]) -> Result<Framed<'b>> {
        let chunk = checked_chunk(framed, i, self.path)?;
        let meta = self.chunks[i];
        if meta.key == RAW {
            return Ok(Framed::Raw);
        }
        let opened = self
            .env
            .open_chunk(chunk)
            .map_err(|m| Error::corrupt(self.path, format!("chunk {i}: {m}")))?;
        if opened.header_len != meta.header_len as usize {
            return Err(Error::Changed {
                path: self.path.to_path_buf(),
                what: format!("chunk {i}: key header changed while running"),
            });
        }
        Ok(Framed::Sealed {
            key: meta.key,
            opened,
        })
    }

    /// Decrypts chunk `i` (framed, under key index `k`) with `key`, appending the payload to
    /// `plain`, and checks its structure; returns where the payload is in `plain`.
    pub fn decrypt(
        &self,
        i: usize,
        k: u32,
        opened: &Opened,
        key: &AesKey,
        plain: &mut Vec<u8>,
    ) -> Result<Range<usize>> {
        let p0 = plain.len();
        key.decrypt_append(self.env.cipher.mode, opened.iv, opened.ciphertext, plain)
            .map_err(|e| self.wrong_key(i, k, e.to_string()))?;
        self.env
            .check_payload(opened.outer, &plain[p0..], self.ci.plain_len(i))
            .map_err(|m| self.wrong_key(i, k, m.into()))?;
        Ok(p0..plain.len())
    }

    /// Decrypts only chunk `i`'s first and last blocks (CBC) and checks its structure from them;
    /// returns the payload length. For the fused kernel, which never stores the plaintext.
    pub fn peek(&self, i: usize, k: u32, opened: &Opened, key: &AesKey) -> Result<usize> {
        let (n, first_block) = key
            .peek_cbc(opened.iv, opened.ciphertext)
            .map_err(|e| self.wrong_key(i, k, e.to_string()))?;
        self.env
            .check_payload_head(
                opened.outer,
                &first_block[..n.min(CHECKED_HEAD)],
                n,
                self.ci.plain_len(i),
            )
            .map_err(|m| self.wrong_key(i, k, m.into()))?;
        Ok(n)
    }

    /// Chunk `i` does not decrypt under key index `k` to what its class implies.
    fn wrong_key(&self, i: usize, k: u32, msg: String) -> Error {
        let len = self.chunks[i].len as u64;
        Error::WrongKey {
            path: self.path.to_path_buf(),
            what: format!("chunk {i}"),
            key: self.key_names[k as usize].clone(),
            msg: format!("{msg}{}", raw_last_chunk_hint(self.ci, i, len)),
        }
    }
}

/// Data.db chunks (FORMAT.md 1.3, 2.3): opened ([`ChunkOpener`]), sealed with the new key under a
/// fresh IV, new CRC.
pub struct DataChunks<'a> {
    pub opener: ChunkOpener<'a>,
    pub rk: Rekeying<'a>,
}

/// Where a chunk's new ciphertext comes from.
enum Source {
    /// Plaintext already in the workspace arena.
    Plain(Range<usize>),
    /// Old ciphertext in the window's input, re-encrypted by the fused kernel.
    Fused {
        key: u32,
        ct: Range<usize>,
        old_iv: [u8; 16],
    },
}

/// One chunk of a window to encrypt: its source, its new IV, and where its ciphertext and its
/// whole new record go in the window's output.
struct Sealing {
    from: Source,
    iv: [u8; 16],
    ct: Range<usize>,
    slot: Range<usize>,
}

impl RecordLayout for DataChunks<'_> {
    /// Each chunk is CRC-checked, its header parsed, and (when the CPU has VAES and both sides are
    /// CBC with equal key sizes) only its first and last block decrypted to check padding and
    /// structure, then decrypted and re-encrypted in one pass by the fused kernel with no
    /// plaintext in memory; otherwise decrypted into a plaintext arena and encrypted with the
    /// multi-buffer kernel. A wrong key fails before anything is encrypted.
    fn rewrite_window(
        &self,
        first: usize,
        spans: &[Span],
        input: &[u8],
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<(Counts, Option<u32>)> {
        let (jobs, counts) = self.stage(first, spans, input, out, ws)?;
        self.encrypt(&jobs, input, out, ws);
        Ok((counts, Some(window_crc(spans, &jobs, out))))
    }
}

impl DataChunks<'_> {
    /// Checks every chunk of the window and lays out its output: raw and unchanged chunks copied,
    /// the others given their new header and IV; returns what is left to encrypt.
    fn stage(
        &self,
        first: usize,
        spans: &[Span],
        input: &[u8],
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<(Vec<Sealing>, Counts)> {
        let rk = &self.rk;
        let (base_in, base_out) = (spans[0].in_off, spans[0].out_off);
        let cbc_to_cbc = rk.old.cipher.mode == Mode::Cbc && rk.new.cipher.mode == Mode::Cbc;
        let mut counts = Counts::default();
        let mut jobs = Vec::with_capacity(spans.len());
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
            let Framed::Sealed { key: k, opened } = self.opener.frame(i, framed)? else {
                out[slot].copy_from_slice(framed);
                counts.raw += 1;
                continue;
            };
            let key = rk.old_key(k);
            let (from, payload_len) = if cbc_to_cbc && key.can_fuse_with(rk.target_key) {
                let n = self.opener.peek(i, k, &opened, key)?;
                let c0 = opened.ciphertext.as_ptr() as usize - input.as_ptr() as usize;
                let from = Source::Fused {
                    key: k,
                    ct: c0..c0 + opened.ciphertext.len(),
                    old_iv: opened.iv.try_into().expect("CBC IV"),
                };
                (from, n)
            } else {
                let p = self.opener.decrypt(i, k, &opened, key, &mut ws.plain)?;
                let n = p.len();
                (Source::Plain(p), n)
            };
            if Some(k) == rk.target_idx {
                // Its plaintext stays in the arena (wiped with the window): truncating would
                // leave it past the length the wipe covers.
                out[slot].copy_from_slice(framed);
                counts.unchanged += 1;
                continue;
            }
            jobs.push(self.new_head(i, payload_len, from, slot, out, ws)?);
            counts.rekeyed += 1;
        }
        Ok((jobs, counts))
    }

    /// Writes `[i32 outer] H' IV'` of chunk `i`'s new record into its slot; the ciphertext and
    /// the CRC follow later.
    fn new_head(
        &self,
        i: usize,
        payload_len: usize,
        from: Source,
        slot: Range<usize>,
        out: &mut [u8],
        ws: &mut Workspace,
    ) -> Result<Sealing> {
        let rk = &self.rk;
        let iv_len = rk.new.cipher.iv_len;
        let mut head = Vec::with_capacity(4 + rk.target_header.encoded_len());
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
            return Err(Error::Changed {
                path: self.opener.path.to_path_buf(),
                what: format!(
                    "chunk {i}: planned length does not match (the file changed while running?)"
                ),
            });
        }
        Ok(Sealing { from, iv, ct, slot })
    }

    /// Encrypts every staged chunk into its slot: `out` split into the jobs' disjoint,
    /// increasing ciphertext ranges; fused jobs batched per old key, the others per mode.
    fn encrypt(&self, jobs: &[Sealing], input: &[u8], out: &mut [u8], ws: &Workspace) {
        let rk = &self.rk;
        let mut cbc: Vec<CbcJob> = Vec::with_capacity(jobs.len());
        // Fused jobs by old key: one kernel call per key (a window nearly always has one).
        let mut fused: BTreeMap<u32, Vec<ReJob>> = BTreeMap::new();
        let mut rest: &mut [u8] = out;
        let mut at = 0;
        for j in jobs {
            let (_, tail) = rest.split_at_mut(j.ct.start - at);
            let (ct, tail) = tail.split_at_mut(j.ct.len());
            rest = tail;
            at = j.ct.end;
            match &j.from {
                Source::Fused {
                    key,
                    ct: old,
                    old_iv,
                } => fused.entry(*key).or_default().push(ReJob {
                    ct: &input[old.clone()],
                    old_iv: *old_iv,
                    new_iv: j.iv,
                    out: ct,
                }),
                Source::Plain(p) => {
                    let plain = &ws.plain[p.clone()];
                    match rk.new.cipher.mode {
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
}

/// New chunks get their CRC; copied ones carry their checked CRC. The window's CRC is combined
/// from those, not computed in a second pass.
fn window_crc(spans: &[Span], jobs: &[Sealing], out: &mut [u8]) -> u32 {
    let base_out = spans[0].out_off;
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
    window
}

/// Page-encrypted Partitions.db/Rows.db pages (FORMAT.md 2.6): each page's plaintext is
/// re-encrypted in place; page count and positions never change.
pub struct IndexPages<'a> {
    pub path: &'a Path,
    pub pages: &'a [ChunkMeta],
    pub rk: Rekeying<'a>,
}

impl PerRecord for IndexPages<'_> {
    fn path(&self) -> &Path {
        self.path
    }

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
