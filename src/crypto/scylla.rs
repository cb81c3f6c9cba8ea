//! ScyllaDB file encryption at rest (FORMAT.md 4.3): the cipher of one encrypted file, block by
//! block, and the re-cipher of a window of such a file from one key to another.
//!
//! A file's plaintext is cut into independent 4096-byte blocks. Block `n` is encrypted alone,
//! unpadded, AES-CBC with `IV_n = AES-256-ECB_h(00 x 8 || u64le(n))`, `h = SHA-256(raw key)`
//! (ESSIV; the IV is never stored), or AES-ECB. Nothing marks a file as encrypted and nothing
//! checks a key: a wrong key decrypts to garbage silently (FORMAT.md 4.8).
//!
//! The file length says where the plaintext ends (`L`, FORMAT.md 4.3): the writer zero-fills the
//! last block to 4096 bytes, encrypts it whole and cuts the file to `L` rounded up to whole AES
//! blocks plus, when `L % 16 != 0`, 16 bytes more so a reader can tell `L` from the size. The
//! `L % 16` bytes after the last data cipher block are junk (ciphertext of zeros, or zeros where
//! the cut grew the file): [`recipher`] never reads them and writes them again the way the writer
//! makes them, so a re-keyed file is byte-identical to what ScyllaDB would write with the new key.
//!
//! This module knows ciphers and lengths, not files: callers read and write the bytes.

use crate::error::Malformed;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256, Block};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::cipher::{AesKey, CbcJob, Mode, BLOCK};
use super::fused::ReJob;

/// ScyllaDB's encryption block: plaintext bytes `[4096 n, 4096 n + 4096)` are file block `n`.
pub const FILE_BLOCK: usize = 4096;

/// File blocks per pass of the two-pass path: 64 KiB, in L2 between decryption and encryption.
const GROUP: usize = 16;

/// The length of an encrypted file whose plaintext is `plain_len` bytes (FORMAT.md 4.3): whole
/// AES blocks, plus 16 bytes when the plaintext does not end on one, so the reader can tell.
pub fn file_len(plain_len: u64) -> u64 {
    if plain_len.is_multiple_of(BLOCK as u64) {
        plain_len
    } else {
        plain_len + BLOCK as u64
    }
}

/// The plaintext length of an encrypted file of `file_len` bytes (FORMAT.md 4.3, reader). A
/// non-empty file shorter than one AES block cannot have been written by ScyllaDB.
pub fn plain_len(file_len: u64) -> Result<u64, Malformed> {
    match file_len {
        0 => Ok(0),
        1..=15 => Err(Malformed(format!(
            "an encrypted file of {file_len} bytes is shorter than one AES block (FORMAT.md 4.3)"
        ))),
        n if n.is_multiple_of(BLOCK as u64) => Ok(n),
        n => Ok(n - BLOCK as u64),
    }
}

/// How many cipher bytes of file block `block` hold data for a plaintext of `plain_len` bytes:
/// what a reader decrypts ([`FileCipher::decrypt_block`]). 4096 for every block but the last;
/// for the last, its plaintext rounded up to whole AES blocks; 0 past the end. The file may
/// hold up to 15 bytes more (junk, FORMAT.md 4.3).
pub fn cipher_len(plain_len: u64, block: u64) -> usize {
    let end = plain_len.next_multiple_of(BLOCK as u64);
    match block.checked_mul(FILE_BLOCK as u64) {
        Some(start) if start < end => (end - start).min(FILE_BLOCK as u64) as usize,
        _ => 0,
    }
}

/// Where the plaintext ends in the last file block: (its index, the plaintext bytes in it
/// (1..=4096), its cipher bytes). `None` for an empty file.
fn last_block(plain_len: u64) -> Option<(u64, usize, usize)> {
    let last = plain_len.checked_sub(1)? / FILE_BLOCK as u64;
    let r = (plain_len - last * FILE_BLOCK as u64) as usize;
    Some((last, r, r.next_multiple_of(BLOCK)))
}

/// True when the plaintext bytes between `plain_len` and the end of its last AES block are zero,
/// as the writer leaves them (it zero-fills the last block, FORMAT.md 4.3). `last_plain` is the
/// file's last block as [`FileCipher::decrypt_block`] left it: [`cipher_len`] bytes (or more) from
/// the start of block `(plain_len - 1) / 4096`.
///
/// A cheap wrong-key hint, not a proof: when `plain_len % 16 != 0` a wrong key passes with
/// probability `2^(-8 (16 - plain_len % 16))`; when it is 0 there is nothing to check (true).
///
/// Panics if `last_plain` is shorter than the last block's cipher bytes (a caller bug).
pub fn tail_is_zero(last_plain: &[u8], plain_len: u64) -> bool {
    let Some((_, r, d)) = last_block(plain_len) else {
        return true;
    };
    assert!(
        last_plain.len() >= d,
        "tail_is_zero: {} bytes given, the last block of a {plain_len}-byte plaintext has {d}",
        last_plain.len()
    );
    last_plain[r..d].iter().all(|&b| b == 0)
}

/// An expanded AES key for bulk ECB work without padding (what [`AesKey`] does not offer): CBC
/// decryption of whole blocks, the ECB mode, and the last AES block of each CBC message. The
/// `aes` crate's `zeroize` feature wipes the round keys on drop.
enum Ecb {
    A128(Box<Aes128>),
    A192(Box<Aes192>),
    A256(Box<Aes256>),
}

impl Ecb {
    /// `key` is 16, 24 or 32 bytes (checked by the caller).
    fn new(key: &[u8]) -> Ecb {
        match key.len() {
            16 => Ecb::A128(Box::new(Aes128::new_from_slice(key).expect("16-byte key"))),
            24 => Ecb::A192(Box::new(Aes192::new_from_slice(key).expect("24-byte key"))),
            _ => Ecb::A256(Box::new(Aes256::new_from_slice(key).expect("32-byte key"))),
        }
    }

    /// Encrypts whole AES blocks in place.
    fn enc(&self, buf: &mut [u8]) {
        let (b, rest) = Block::slice_as_chunks_mut(buf);
        debug_assert!(rest.is_empty());
        match self {
            Ecb::A128(k) => k.encrypt_blocks(b),
            Ecb::A192(k) => k.encrypt_blocks(b),
            Ecb::A256(k) => k.encrypt_blocks(b),
        }
    }

    /// Decrypts whole AES blocks from `ct` into `out` (one pass, no copy first).
    fn dec_into(&self, ct: &[u8], out: &mut [u8]) {
        let (i, _) = Block::slice_as_chunks(ct);
        let (o, _) = Block::slice_as_chunks_mut(out);
        let r = match self {
            Ecb::A128(k) => k.decrypt_blocks_b2b(i, o),
            Ecb::A192(k) => k.decrypt_blocks_b2b(i, o),
            Ecb::A256(k) => k.decrypt_blocks_b2b(i, o),
        };
        r.expect("equal lengths");
    }

    /// Decrypts whole AES blocks in place.
    fn dec(&self, buf: &mut [u8]) {
        let (b, _) = Block::slice_as_chunks_mut(buf);
        match self {
            Ecb::A128(k) => k.decrypt_blocks(b),
            Ecb::A192(k) => k.decrypt_blocks(b),
            Ecb::A256(k) => k.decrypt_blocks(b),
        }
    }
}

/// Which CBC path a re-cipher takes: the fastest the CPU allows, or (tests) a forced slower one
/// so every path can be compared byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Fused VAES when both keys are CBC of one size and the CPU and `SSTABLE_REKEY_KERNEL` allow
    /// it; else decrypt, then multi-buffer encrypt (AES-NI kernel when the CPU has it).
    Auto,
    /// Never fused: decrypt, then the AES-NI multi-buffer kernel when the CPU has it.
    #[cfg_attr(not(test), allow(dead_code))]
    TwoPass,
    /// Never fused, RustCrypto backends only (`encrypt_cbc_many_portable`).
    #[cfg_attr(not(test), allow(dead_code))]
    Portable,
}

/// The cipher of one ScyllaDB encrypted file (FORMAT.md 4.2, 4.3): the data key, the mode and, for
/// CBC, the ESSIV key. All key material is wiped on drop.
pub struct FileCipher {
    mode: Mode,
    /// The first `bits / 8` raw bytes: the fused and multi-buffer kernels' key.
    key: AesKey,
    /// The same key, for unpadded bulk ECB work.
    ecb: Ecb,
    /// AES-256 keyed with SHA-256 of **all** raw bytes: IV_n = E(00 x 8 || u64le(n)).
    iv_key: Box<Aes256>,
}

impl FileCipher {
    /// `raw`: the key bytes as the provider gives them; `bits`: `secret_key_strength` (128, 192
    /// or 256); `mode`: CBC or ECB. AES takes the first `bits / 8` bytes and a longer key is
    /// accepted, but the IV key hashes all of it (FORMAT.md 4.2): keep the whole decoded key.
    pub fn new(raw: &[u8], bits: u32, mode: Mode) -> Result<FileCipher, Malformed> {
        if !matches!(bits, 128 | 192 | 256) {
            return Err(Malformed(format!(
                "secret_key_strength {bits}: AES keys are 128, 192 or 256 bits"
            )));
        }
        let n = bits as usize / 8;
        if raw.len() < n {
            return Err(Malformed(format!(
                "a {}-byte key is too short for AES-{bits} ({n} bytes)",
                raw.len()
            )));
        }
        let key = AesKey::new(&raw[..n])?;
        let ecb = Ecb::new(&raw[..n]);
        // sha2's `zeroize` feature wipes the hasher's state and buffer (raw key bytes) on drop;
        // the digest is wiped here once the IV key is expanded.
        let mut h = Sha256::digest(raw);
        let iv_key = Box::new(Aes256::new(&h));
        let hb: &mut [u8] = &mut h;
        hb.zeroize();
        Ok(FileCipher {
            mode,
            key,
            ecb,
            iv_key,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The AES key size in bits.
    pub fn bits(&self) -> u32 {
        self.key.bits()
    }

    /// IV_block (FORMAT.md 4.3). Defined for either mode; only CBC uses it.
    pub fn iv(&self, block: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        self.ivs(block, &mut iv);
        iv
    }

    /// IVs of blocks `first, first + 1, …` into `out` (16 bytes each), in one bulk AES call.
    fn ivs(&self, first: u64, out: &mut [u8]) {
        for (i, c) in out.chunks_exact_mut(BLOCK).enumerate() {
            c[..8].fill(0);
            c[8..].copy_from_slice(&first.wrapping_add(i as u64).to_le_bytes());
        }
        let (b, rest) = Block::slice_as_chunks_mut(out);
        debug_assert!(rest.is_empty());
        self.iv_key.encrypt_blocks(b);
    }

    /// Decrypts, in place, `buf` = the cipher bytes of file block `block`: a multiple of 16, at
    /// most 4096 ([`cipher_len`] says how many; never the junk after them).
    ///
    /// Panics on another length (a caller bug).
    pub fn decrypt_block(&self, block: u64, buf: &mut [u8]) {
        check_block_len(buf.len());
        let mut ct = [0u8; FILE_BLOCK];
        let ct = &mut ct[..buf.len()];
        ct.copy_from_slice(buf);
        self.decrypt_run(block, ct, buf);
    }

    /// Encrypts, in place, `buf` = plaintext of file block `block` (a multiple of 16, at most
    /// 4096; a writer zero-fills the last block first).
    ///
    /// Panics on another length (a caller bug).
    pub fn encrypt_block(&self, block: u64, buf: &mut [u8]) {
        check_block_len(buf.len());
        let mut plain = Zeroizing::new([0u8; FILE_BLOCK]);
        let plain = &mut plain[..buf.len()];
        plain.copy_from_slice(buf);
        self.encrypt_run(block, plain, buf, Path::Auto);
    }

    /// Decrypts consecutive file blocks from `ct` into `out` (same length). `ct` starts at block
    /// `first`; every block is 4096 bytes but the last, which may be any multiple of 16 (at most
    /// [`GROUP`] blocks, for the IV buffer).
    fn decrypt_run(&self, first: u64, ct: &[u8], out: &mut [u8]) {
        debug_assert_eq!(ct.len(), out.len());
        debug_assert!(ct.len().is_multiple_of(BLOCK) && ct.len() <= GROUP * FILE_BLOCK);
        // CBC decryption is parallel across AES blocks: decrypt all of them in one call, then
        // XOR each with the previous cipher block (or the block's IV).
        self.ecb.dec_into(ct, out);
        if self.mode == Mode::Ecb {
            return;
        }
        let mut ivs = [0u8; BLOCK * GROUP];
        let n = ct.len().div_ceil(FILE_BLOCK);
        self.ivs(first, &mut ivs[..BLOCK * n]);
        for ((p, c), iv) in out
            .chunks_mut(FILE_BLOCK)
            .zip(ct.chunks(FILE_BLOCK))
            .zip(ivs.chunks_exact(BLOCK))
        {
            xor_blocks(&mut p[..BLOCK], iv);
            xor_blocks(&mut p[BLOCK..], &c[..c.len() - BLOCK]);
        }
    }

    /// Encrypts consecutive file blocks from `plain` into `out`, laid out as in
    /// [`decrypt_run`](Self::decrypt_run).
    fn encrypt_run(&self, first: u64, plain: &[u8], out: &mut [u8], path: Path) {
        debug_assert_eq!(plain.len(), out.len());
        debug_assert!(plain.len().is_multiple_of(BLOCK) && plain.len() <= GROUP * FILE_BLOCK);
        if self.mode == Mode::Ecb {
            out.copy_from_slice(plain);
            self.ecb.enc(out);
            return;
        }
        let mut ivs = [0u8; BLOCK * GROUP];
        let n = plain.len().div_ceil(FILE_BLOCK);
        self.ivs(first, &mut ivs[..BLOCK * n]);
        // Each block is its own CBC message, so the multi-buffer kernel runs them side by side.
        // It always adds a PKCS#5 block: give it all but the last AES block of each message, so
        // its padding block lands where that last block goes, then overwrite it with the real
        // one, E(p_last ^ c_prev), all messages' in one bulk ECB call (1/256 of the work).
        {
            let mut jobs: Vec<CbcJob<'_>> = plain
                .chunks(FILE_BLOCK)
                .zip(out.chunks_mut(FILE_BLOCK))
                .zip(ivs.chunks_exact(BLOCK))
                .map(|((p, o), iv)| CbcJob {
                    plain: &p[..p.len() - BLOCK],
                    iv: iv.try_into().expect("16 bytes"),
                    out: o,
                })
                .collect();
            if path == Path::Portable {
                self.key.encrypt_cbc_many_portable(&mut jobs);
            } else {
                self.key.encrypt_cbc_many(&mut jobs);
            }
        }
        let mut last = Zeroizing::new([0u8; BLOCK * GROUP]);
        for (((t, p), o), iv) in last
            .chunks_exact_mut(BLOCK)
            .zip(plain.chunks(FILE_BLOCK))
            .zip(out.chunks(FILE_BLOCK))
            .zip(ivs.chunks_exact(BLOCK))
        {
            let m = p.len();
            t.copy_from_slice(&p[m - BLOCK..]);
            xor_blocks(
                t,
                if m == BLOCK {
                    iv
                } else {
                    &o[m - 2 * BLOCK..m - BLOCK]
                },
            );
        }
        self.ecb.enc(&mut last[..BLOCK * n]);
        for (t, o) in last.chunks_exact(BLOCK).zip(out.chunks_mut(FILE_BLOCK)) {
            let m = o.len();
            o[m - BLOCK..].copy_from_slice(t);
        }
    }
}

fn check_block_len(n: usize) {
    assert!(
        n.is_multiple_of(BLOCK) && n <= FILE_BLOCK,
        "a file block's cipher bytes are a multiple of 16, at most 4096: {n}"
    );
}

/// `a ^= b` over whole 16-byte blocks (`a` and `b` of equal length), 128 bits at a time.
#[inline]
fn xor_blocks(a: &mut [u8], b: &[u8]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, y) in a.chunks_exact_mut(BLOCK).zip(b.chunks_exact(BLOCK)) {
        let v = u128::from_ne_bytes((&*x).try_into().unwrap())
            ^ u128::from_ne_bytes(y.try_into().unwrap());
        x.copy_from_slice(&v.to_ne_bytes());
    }
}

/// Re-ciphers, in place, a window of an encrypted file from `old` to `new` (FORMAT.md 4.7): the
/// result is byte-identical to what ScyllaDB writes for the same plaintext with `new`.
///
/// `buf` holds the file bytes from offset `first_block * 4096`: whole 4096-byte blocks, except
/// that it may end at the file's end ([`file_len`]`(plain_len)`), inside a block. `plain_len` is
/// the file's plaintext length ([`plain_len`]); it places the last block. Windows may be
/// re-ciphered in any order, in parallel.
///
/// The last block is made again the way the writer makes it (FORMAT.md 4.3, "Writer"): the
/// plaintext after `plain_len` is zeros, the `plain_len % 16` bytes after the last data cipher
/// block are the new key's ciphertext of zeros (CBC continues the block's chain) or zero bytes
/// where they fall past the 4096-byte block. Those junk bytes are never read.
///
/// Returns false when the window holds the last block and `old` decrypted its plaintext after
/// `plain_len` (to the end of its AES block) to something other than zeros: almost surely the
/// wrong old key ([`tail_is_zero`]); the output is then garbage under `new`. True otherwise,
/// which proves nothing: check the plaintext (FORMAT.md 4.8).
///
/// In place, the fused kernel writes into a scratch buffer, copied back (it cannot write over
/// what it reads): [`recipher_into`] saves that copy, about a fifth of the time, when the caller
/// has two buffers anyway.
///
/// Panics if the window does not fit the file (a caller bug).
#[must_use = "false means the old key is almost surely wrong"]
pub fn recipher(
    old: &FileCipher,
    new: &FileCipher,
    first_block: u64,
    buf: &mut [u8],
    plain_len: u64,
) -> bool {
    recipher_with(old, new, first_block, None, buf, plain_len, Path::Auto)
}

/// [`recipher`] from `src` into `dst` (of equal length), leaving `src` as it was.
///
/// Panics if the lengths differ or the window does not fit the file (a caller bug).
#[must_use = "false means the old key is almost surely wrong"]
pub fn recipher_into(
    old: &FileCipher,
    new: &FileCipher,
    first_block: u64,
    src: &[u8],
    dst: &mut [u8],
    plain_len: u64,
) -> bool {
    assert_eq!(
        src.len(),
        dst.len(),
        "recipher_into: source and destination lengths"
    );
    recipher_with(old, new, first_block, Some(src), dst, plain_len, Path::Auto)
}

/// The window rules of [`recipher`]; `src` is `None` in place (the ciphertext is in `dst`).
fn recipher_with(
    old: &FileCipher,
    new: &FileCipher,
    first_block: u64,
    src: Option<&[u8]>,
    dst: &mut [u8],
    plain_len: u64,
    path: Path,
) -> bool {
    let flen = file_len(plain_len);
    let start = first_block
        .checked_mul(FILE_BLOCK as u64)
        .filter(|s| s.checked_add(dst.len() as u64).is_some_and(|e| e <= flen));
    let Some(start) = start else {
        panic!(
            "recipher: {} bytes at block {first_block} do not fit a {flen}-byte file",
            dst.len()
        );
    };
    assert!(
        dst.len().is_multiple_of(FILE_BLOCK) || start + dst.len() as u64 == flen,
        "recipher: a window of {} bytes at block {first_block} ends inside a block before the end of a {flen}-byte file",
        dst.len()
    );
    let Some((last, r, d)) = last_block(plain_len) else {
        return true; // empty file, empty window
    };
    // Blocks before the last are whole (a window ends inside a block only at the file's end,
    // which is past the last block's start).
    let body = (last.saturating_sub(first_block) as usize).min(dst.len() / FILE_BLOCK);
    let body_len = body * FILE_BLOCK;
    let (body, mut rest) = dst.split_at_mut(body_len);
    recipher_whole(
        old,
        new,
        first_block,
        src.map(|s| &s[..body_len]),
        body,
        path,
    );

    let mut tail_ok = true;
    let b = first_block + body.len() as u64 / FILE_BLOCK as u64;
    if b == last && !rest.is_empty() {
        // The last block as the file holds it: its data cipher bytes, then up to 15 junk bytes
        // if they fit in the block; `rest` is at least that long since the window reaches the
        // file's end or a block boundary past it.
        let in_file = ((flen - last * FILE_BLOCK as u64) as usize).min(FILE_BLOCK);
        let (blk, spill) = std::mem::take(&mut rest).split_at_mut(in_file);
        let ct = match src {
            Some(s) => &s[body_len..body_len + d],
            None => &blk[..d],
        };
        let mut p = Zeroizing::new([0u8; FILE_BLOCK]);
        old.decrypt_run(last, ct, &mut p[..d]);
        tail_ok = p[r..d].iter().all(|&x| x == 0);
        p[r..d].fill(0);
        // Encrypt the zero-filled block as far as the file keeps it (the junk block included,
        // its plaintext zeros), and keep what the cut keeps.
        let e = in_file.next_multiple_of(BLOCK);
        let mut c = [0u8; FILE_BLOCK];
        new.encrypt_run(last, &p[..e], &mut c[..e], path);
        blk.copy_from_slice(&c[..in_file]);
        rest = spill;
    }
    // What remains is past the last block: the junk bytes the cut added as zeros, when the data
    // filled the last block to its end (FORMAT.md 4.3).
    rest.fill(0);
    tail_ok
}

/// Re-ciphers whole 4096-byte blocks from `src` (or in place) into `dst`, `GROUP` at a time so
/// each group stays in cache between its passes.
fn recipher_whole(
    old: &FileCipher,
    new: &FileCipher,
    first: u64,
    src: Option<&[u8]>,
    dst: &mut [u8],
    path: Path,
) {
    if dst.is_empty() {
        return;
    }
    let both_cbc = old.mode == Mode::Cbc && new.mode == Mode::Cbc;
    if path == Path::Auto && both_cbc && old.key.can_fuse_with(&new.key) {
        return recipher_fused(old, new, first, src, dst);
    }
    let both_ecb = old.mode == Mode::Ecb && new.mode == Mode::Ecb;
    // The two-pass path decrypts into `scratch` (plaintext: wiped on drop).
    let mut scratch = Zeroizing::new(if both_ecb {
        Vec::new()
    } else {
        vec![0u8; dst.len().min(GROUP * FILE_BLOCK)]
    });
    for (g, chunk) in dst.chunks_mut(GROUP * FILE_BLOCK).enumerate() {
        let b0 = first + (g * GROUP) as u64;
        let at = g * GROUP * FILE_BLOCK..g * GROUP * FILE_BLOCK + chunk.len();
        let src = src.map(|s| &s[at]);
        if both_ecb {
            match src {
                Some(s) => old.ecb.dec_into(s, chunk),
                None => old.ecb.dec(chunk),
            }
            new.ecb.enc(chunk);
        } else {
            let plain = &mut scratch[..chunk.len()];
            old.decrypt_run(b0, src.unwrap_or(chunk), plain);
            new.encrypt_run(b0, plain, chunk, path);
        }
    }
}

/// The fused kernel's lanes (messages it runs side by side).
const LANES: usize = 16;
/// Rows of `LANES` blocks per fused kernel call: 64 blocks, 256 KiB, still in L2.
const ROWS: usize = 4;
const FUSED_GROUP: usize = LANES * ROWS;
/// Distinct offsets the lanes run at (see [`recipher_fused`]).
const CUTS: usize = 4;

/// Where slot `k` of a group is cut into head and tail (see [`recipher_fused`]).
fn cut(k: usize) -> usize {
    k % CUTS * (FILE_BLOCK / CUTS)
}

/// Whole blocks, CBC to CBC, with the fused kernel, its lanes spread over four offsets.
///
/// Why: the kernel steps all its 16 lanes together, so sixteen 4 KiB-aligned blocks put all
/// sixteen stores of a step in one L1 set (addresses 4 KiB apart), more lines than the set has
/// ways. Measured here (`bench_recipher`): half the speed of the same messages laid 4416 bytes
/// apart. (DSE's messages are compressed chunks of every length, never aligned.)
///
/// So each block is cut at `cut(slot)` (0, 1, 2 or 3 KiB) into a head and a tail, two CBC
/// messages: the tail's IVs are the cipher blocks before the cut, the old one saved before the
/// head is overwritten, the new one the head's output. A tail thus waits for its head, and
/// kernel call `c` runs, row by row, the tails of group `c - 1` (slot order), then the heads of
/// group `c` (longest first). Lanes free in the order their tails end, so the kernel (which
/// refills free lanes in order, from the front of the list) hands each the head of its own
/// class: a lane runs tail then head back to back, 4096 bytes, staying at offset `cut + t` in
/// its blocks, four lanes per offset (which L1 holds). The first call runs heads only, the last
/// tails only; the others 256 KiB each. The output does not depend on this order: only speed.
///
/// In place, the kernel writes into a scratch buffer (it reads and writes different buffers),
/// copied back after each call, from and to lines still in cache (copying the ciphertext out
/// first would read memory with no AES work to hide it behind).
fn recipher_fused(
    old: &FileCipher,
    new: &FileCipher,
    first: u64,
    src: Option<&[u8]>,
    dst: &mut [u8],
) {
    const FB: usize = FILE_BLOCK;
    const G: usize = FUSED_GROUP;
    let n = dst.len() / FB;
    let groups = n.div_ceil(G);
    let mut scratch = vec![0u8; if src.is_none() { n.min(G) * FB } else { 0 }];
    // Per slot: the ESSIV IVs of the previous and this group (old, new), and the old cipher
    // block before the cut of the previous group's block.
    let mut ivs_prev = (vec![0u8; BLOCK * G], vec![0u8; BLOCK * G]);
    let mut ivs_cur = (vec![0u8; BLOCK * G], vec![0u8; BLOCK * G]);
    let mut old_cut = vec![[0u8; BLOCK]; G];
    let mut next_cut = vec![[0u8; BLOCK]; G];
    let mut new_cut = vec![[0u8; BLOCK]; G];
    let iv = |ivs: &[u8], k: usize| -> [u8; BLOCK] {
        ivs[k * BLOCK..(k + 1) * BLOCK]
            .try_into()
            .expect("16 bytes")
    };
    for c in 0..=groups {
        // Tails of the blocks in [lo, mid), heads of those in [mid, hi).
        let lo = c.saturating_sub(1) * G * FB;
        let mid = (c * G * FB).min(n * FB);
        let hi = ((c + 1) * G * FB).min(n * FB);
        let (prev_n, cur_n) = ((mid - lo) / FB, (hi - mid) / FB);
        if cur_n > 0 {
            let b0 = first + (c * G) as u64;
            old.ivs(b0, &mut ivs_cur.0[..BLOCK * cur_n]);
            new.ivs(b0, &mut ivs_cur.1[..BLOCK * cur_n]);
        }
        for k in (0..prev_n).filter(|&k| cut(k) > 0) {
            let at = lo + k * FB + cut(k);
            new_cut[k].copy_from_slice(&dst[at - BLOCK..at]);
        }
        {
            // Into: read `src`, write `dst`. In place: read `dst`, write `scratch` (its slot k:
            // the head of this group's block k, then the tail of the previous group's), copied
            // back below, while the lines are still in cache.
            let (ct, mut tails, mut heads): (&[u8], Vec<&mut [u8]>, Vec<&mut [u8]>) = match src {
                Some(s) => {
                    let (prev, cur) = dst[lo..hi].split_at_mut(mid - lo);
                    let tails = prev.chunks_mut(FB).enumerate();
                    let heads = cur.chunks_mut(FB).enumerate();
                    (
                        s,
                        tails.map(|(k, b)| &mut b[cut(k)..]).collect(),
                        heads.map(|(k, b)| &mut b[..cut(k)]).collect(),
                    )
                }
                None => {
                    let (mut tails, mut heads) = (Vec::new(), Vec::new());
                    for (k, slot) in scratch.chunks_mut(FB).enumerate() {
                        let (h, t) = slot.split_at_mut(cut(k));
                        if k < prev_n {
                            tails.push(t);
                        }
                        if k < cur_n {
                            heads.push(h);
                        }
                    }
                    (&*dst, tails, heads)
                }
            };
            let mut jobs: Vec<ReJob<'_>> = Vec::with_capacity(2 * G);
            for row in (0..G).step_by(LANES) {
                for k in row..(row + LANES).min(prev_n) {
                    let cut = cut(k);
                    let (old_iv, new_iv) = if cut == 0 {
                        (iv(&ivs_prev.0, k), iv(&ivs_prev.1, k))
                    } else {
                        (old_cut[k], new_cut[k])
                    };
                    jobs.push(ReJob {
                        ct: &ct[lo + k * FB + cut..lo + (k + 1) * FB],
                        old_iv,
                        new_iv,
                        out: std::mem::take(&mut tails[k]),
                    });
                }
                for class in (1..CUTS).rev() {
                    for k in (row + class..(row + LANES).min(cur_n)).step_by(CUTS) {
                        let head = &ct[mid + k * FB..mid + k * FB + cut(k)];
                        next_cut[k].copy_from_slice(&head[head.len() - BLOCK..]);
                        jobs.push(ReJob {
                            ct: head,
                            old_iv: iv(&ivs_cur.0, k),
                            new_iv: iv(&ivs_cur.1, k),
                            out: std::mem::take(&mut heads[k]),
                        });
                    }
                }
            }
            if !jobs.is_empty() {
                old.key.rekey_cbc_many(&new.key, &mut jobs);
            }
        }
        if src.is_none() {
            for (k, slot) in scratch.chunks(FB).enumerate() {
                let cut = cut(k);
                if k < prev_n {
                    dst[lo + k * FB + cut..lo + (k + 1) * FB].copy_from_slice(&slot[cut..]);
                }
                if k < cur_n {
                    dst[mid + k * FB..mid + k * FB + cut].copy_from_slice(&slot[..cut]);
                }
            }
        }
        std::mem::swap(&mut old_cut, &mut next_cut);
        std::mem::swap(&mut ivs_prev, &mut ivs_cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockCipherEncrypt;
    use cbc::cipher::block_padding::NoPadding;
    use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn to_hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// Reference IV, written from FORMAT.md 4.3 with the `sha2` and `aes` crates only.
    fn ref_iv(raw: &[u8], n: u64) -> [u8; 16] {
        let k = Aes256::new_from_slice(&Sha256::digest(raw)).unwrap();
        let mut b = Block::default();
        b[8..].copy_from_slice(&n.to_le_bytes());
        k.encrypt_block(&mut b);
        b.into()
    }

    /// Reference cipher of one whole file block (the `cbc` crate unpadded, or raw `aes` ECB).
    fn ref_block(raw: &[u8], bits: u32, mode: Mode, n: u64, plain: &[u8], enc: bool) -> Vec<u8> {
        let key = &raw[..bits as usize / 8];
        let iv = ref_iv(raw, n);
        macro_rules! go {
            ($aes:ty) => {
                match (mode, enc) {
                    (Mode::Cbc, true) => cbc::Encryptor::<$aes>::new_from_slices(key, &iv)
                        .unwrap()
                        .encrypt_padded_vec::<NoPadding>(plain),
                    (Mode::Cbc, false) => cbc::Decryptor::<$aes>::new_from_slices(key, &iv)
                        .unwrap()
                        .decrypt_padded_vec::<NoPadding>(plain)
                        .unwrap(),
                    (Mode::Ecb, _) => {
                        let k = <$aes>::new_from_slice(key).unwrap();
                        let mut v = plain.to_vec();
                        for b in v.chunks_exact_mut(16) {
                            let mut x = Block::try_from(&*b).unwrap();
                            if enc {
                                k.encrypt_block(&mut x);
                            } else {
                                aes::cipher::BlockCipherDecrypt::decrypt_block(&k, &mut x);
                            }
                            b.copy_from_slice(&x);
                        }
                        v
                    }
                }
            };
        }
        match bits {
            128 => go!(Aes128),
            192 => go!(Aes192),
            _ => go!(Aes256),
        }
    }

    /// The reference writer (FORMAT.md 4.3, "Writer"): zero-fill the last block to 4096,
    /// encrypt every block whole, cut (or grow with zeros) to `file_len`.
    fn ref_write(raw: &[u8], bits: u32, mode: Mode, plain: &[u8]) -> Vec<u8> {
        let mut padded = plain.to_vec();
        padded.resize(plain.len().next_multiple_of(FILE_BLOCK), 0);
        let mut out = Vec::new();
        for (n, b) in padded.chunks(FILE_BLOCK).enumerate() {
            out.extend(ref_block(raw, bits, mode, n as u64, b, true));
        }
        out.resize(file_len(plain.len() as u64) as usize, 0);
        out
    }

    /// The reference reader: decrypt the first ceil(L/16)*16 bytes block by block, keep L.
    fn ref_read(raw: &[u8], bits: u32, mode: Mode, file: &[u8]) -> Vec<u8> {
        let l = plain_len(file.len() as u64).unwrap() as usize;
        let mut out = Vec::new();
        for (n, c) in file[..l.next_multiple_of(16)]
            .chunks(FILE_BLOCK)
            .enumerate()
        {
            out.extend(ref_block(raw, bits, mode, n as u64, c, false));
        }
        out.truncate(l);
        out
    }

    /// Writes with this module's `encrypt_block`, as ScyllaDB's writer does.
    fn write(fc: &FileCipher, plain: &[u8]) -> Vec<u8> {
        let mut padded = plain.to_vec();
        padded.resize(plain.len().next_multiple_of(FILE_BLOCK), 0);
        for (n, b) in padded.chunks_mut(FILE_BLOCK).enumerate() {
            fc.encrypt_block(n as u64, b);
        }
        padded.resize(file_len(plain.len() as u64) as usize, 0);
        padded
    }

    /// Reads with this module's `decrypt_block`; also returns `tail_is_zero`.
    fn read(fc: &FileCipher, file: &[u8]) -> (Vec<u8>, bool) {
        let l = plain_len(file.len() as u64).unwrap();
        let mut out = Vec::new();
        let mut tail = true;
        for n in 0..l.div_ceil(FILE_BLOCK as u64) {
            let s = n as usize * FILE_BLOCK;
            let mut b = file[s..s + cipher_len(l, n)].to_vec();
            fc.decrypt_block(n, &mut b);
            if n == (l - 1) / FILE_BLOCK as u64 {
                tail = tail_is_zero(&b, l);
            }
            out.extend(b);
        }
        out.truncate(l as usize);
        (out, tail)
    }

    const LENGTHS: &[usize] = &[
        0,
        1,
        15,
        16,
        17,
        31,
        32,
        4079,
        4080,
        4081,
        4095,
        4096,
        4097,
        4111,
        4112,
        4095 + 4096,
        2 * 4096,
        2 * 4096 + 1,
        5 * 4096 - 3,
        16 * 4096 + 4090,
        17 * 4096 + 100,
        40 * 4096 + 4085,
        // More than two groups of the fused path (64 blocks), the last one partial.
        150 * 4096 + 4081,
    ];

    const SPECS: &[(u32, Mode)] = &[
        (128, Mode::Cbc),
        (192, Mode::Cbc),
        (256, Mode::Cbc),
        (128, Mode::Ecb),
        (192, Mode::Ecb),
        (256, Mode::Ecb),
    ];

    #[test]
    fn format_test_vector() {
        let key: Vec<u8> = (0..16).collect();
        assert_eq!(
            to_hex(&Sha256::digest(&key)),
            "be45cb2605bf36bebde684841a28f0fd43c69850a3dce5fedba69928ee3a8991"
        );
        let fc = FileCipher::new(&key, 128, Mode::Cbc).unwrap();
        assert_eq!(to_hex(&fc.iv(0)), "ae0e4eeac063684505721b0643b24ae3");
        assert_eq!(to_hex(&fc.iv(1)), "98952b4e205ab9d8a451674335e76fea");
        let mut b = [0u8; 32];
        fc.encrypt_block(0, &mut b);
        assert_eq!(
            to_hex(&b),
            "cfbcd8b00b97a2022be8bb75168c55cf4503185a1780bcddb24c50457c6e7be2"
        );
        fc.decrypt_block(0, &mut b);
        assert_eq!(b, [0u8; 32]);
        // The same 32 bytes at the start of a whole zero-filled block, as the writer does.
        let mut whole = [0u8; FILE_BLOCK];
        fc.encrypt_block(0, &mut whole);
        assert_eq!(
            whole[..32],
            hex("cfbcd8b00b97a2022be8bb75168c55cf4503185a1780bcddb24c50457c6e7be2")
        );
    }

    #[test]
    fn ivs_match_the_reference_for_long_and_exact_keys() {
        for raw in [bytes(1, 16), bytes(2, 24), bytes(3, 32), bytes(4, 45)] {
            let fc = FileCipher::new(&raw, 128, Mode::Cbc).unwrap();
            for n in [0, 1, 2, 255, 256, 1 << 32, u64::MAX / 4096] {
                assert_eq!(fc.iv(n), ref_iv(&raw, n), "block {n}");
            }
            // The bulk IV path (decrypt_run/encrypt_run) agrees with `iv` one at a time.
            let mut many = [0u8; 16 * GROUP];
            fc.ivs(1000, &mut many);
            for (i, iv) in many.chunks_exact(16).enumerate() {
                assert_eq!(iv, fc.iv(1000 + i as u64));
            }
        }
    }

    #[test]
    fn blocks_match_the_cbc_crate_and_raw_aes() {
        for &(bits, mode) in SPECS {
            let raw = bytes(bits as u64, 40);
            let fc = FileCipher::new(&raw, bits, mode).unwrap();
            for n in [0u64, 1, 7, 123_456] {
                for len in [16, 32, 4080, 4096] {
                    let plain = bytes(n + len as u64, len);
                    let mut b = plain.clone();
                    fc.encrypt_block(n, &mut b);
                    assert_eq!(b, ref_block(&raw, bits, mode, n, &plain, true));
                    fc.decrypt_block(n, &mut b);
                    assert_eq!(b, plain, "AES-{bits} {mode:?} block {n} length {len}");
                }
            }
        }
    }

    /// `openssl enc` as an independent implementation (skipped only if openssl is missing).
    #[test]
    fn blocks_match_openssl() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let openssl = |args: &[String], input: &[u8]| -> Option<Vec<u8>> {
            let mut child = Command::new("openssl")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .ok()?;
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "openssl {args:?}");
            Some(out.stdout)
        };
        for &(bits, mode) in SPECS {
            let raw = bytes(7 * bits as u64, bits as usize / 8 + 5);
            let fc = FileCipher::new(&raw, bits, mode).unwrap();
            let n = 3u64;
            let plain = bytes(11, FILE_BLOCK);
            let mut mine = plain.clone();
            fc.encrypt_block(n, &mut mine);
            let m = if mode == Mode::Cbc { "cbc" } else { "ecb" };
            let mut args = vec![
                "enc".to_string(),
                format!("-aes-{bits}-{m}"),
                "-nopad".into(),
                "-K".into(),
                to_hex(&raw[..bits as usize / 8]),
            ];
            if mode == Mode::Cbc {
                args.extend(["-iv".to_string(), to_hex(&fc.iv(n))]);
            }
            let Some(theirs) = openssl(&args, &plain) else {
                eprintln!("openssl not found: skipping the openssl cross-check");
                return;
            };
            assert_eq!(mine, theirs, "AES-{bits} {mode:?}");
            // The IV: AES-256-ECB under SHA-256 of all key bytes.
            let mut counter = [0u8; 16];
            counter[8..].copy_from_slice(&n.to_le_bytes());
            let h = to_hex(&Sha256::digest(&raw));
            let iv = openssl(
                &[
                    "enc".into(),
                    "-aes-256-ecb".into(),
                    "-nopad".into(),
                    "-K".into(),
                    h,
                ],
                &counter,
            )
            .unwrap();
            assert_eq!(iv, fc.iv(n));
        }
    }

    #[test]
    fn round_trips_match_the_reference_writer_and_reader() {
        for &(bits, mode) in SPECS {
            let raw = bytes(bits as u64 + 99, bits as usize / 8);
            let fc = FileCipher::new(&raw, bits, mode).unwrap();
            let wrong = FileCipher::new(&bytes(5, 32), bits, mode).unwrap();
            let random = bytes(bits as u64, 1)[0] as usize * 97 + 3;
            for &len in LENGTHS.iter().chain([random].iter()) {
                let plain = bytes(len as u64 + 1, len);
                let file = write(&fc, &plain);
                assert_eq!(file.len() as u64, file_len(len as u64));
                assert_eq!(plain_len(file.len() as u64).unwrap(), len as u64);
                assert_eq!(
                    file,
                    ref_write(&raw, bits, mode, &plain),
                    "AES-{bits} {mode:?} length {len}"
                );
                assert_eq!(ref_read(&raw, bits, mode, &file), plain);
                let (back, tail) = read(&fc, &file);
                assert_eq!(back, plain);
                assert!(tail);
                // A wrong key: garbage, and the zero tail catches it when there is one.
                if len > 0 {
                    let (junk, tail) = read(&wrong, &file);
                    assert_ne!(junk, plain);
                    assert_eq!(tail, len % 16 == 0, "length {len}");
                }
            }
        }
    }

    #[test]
    fn long_keys_hash_all_bytes_for_the_iv_but_use_the_first_for_aes() {
        for &(bits, mode) in SPECS {
            let n = bits as usize / 8;
            let raw = bytes(bits as u64, n + 9);
            let mut other = raw.clone();
            *other.last_mut().unwrap() ^= 1;
            let a = FileCipher::new(&raw, bits, mode).unwrap();
            let b = FileCipher::new(&other, bits, mode).unwrap();
            let exact = FileCipher::new(&raw[..n], bits, mode).unwrap();
            assert_ne!(a.iv(0), b.iv(0));
            assert_ne!(a.iv(0), exact.iv(0));
            assert_eq!(a.iv(0), ref_iv(&raw, 0));
            let plain = bytes(3, 4096);
            let (ca, cb, ce) = (write(&a, &plain), write(&b, &plain), write(&exact, &plain));
            // ECB has no IV: the same AES key gives the same bytes; CBC differs by the IV.
            assert_eq!(ca == cb, mode == Mode::Ecb);
            assert_eq!(ca == ce, mode == Mode::Ecb);
            assert_eq!(ca, ref_write(&raw, bits, mode, &plain));
            assert_eq!(a.bits(), bits);
            assert_eq!(a.mode(), mode);
        }
    }

    #[test]
    fn bad_keys_and_lengths_are_errors() {
        for (bits, len) in [
            (128, 0),
            (128, 15),
            (192, 16),
            (192, 23),
            (256, 24),
            (256, 31),
        ] {
            assert!(FileCipher::new(&vec![1u8; len], bits, Mode::Cbc).is_err());
            assert!(FileCipher::new(&vec![1u8; len], bits, Mode::Ecb).is_err());
        }
        for bits in [0, 8, 64, 127, 129, 160, 224, 255, 257, 384, 512, u32::MAX] {
            assert!(
                FileCipher::new(&[1u8; 64], bits, Mode::Cbc).is_err(),
                "{bits}"
            );
        }
        for n in 1..16 {
            assert!(plain_len(n).is_err(), "{n}");
        }
        for (f, p) in [(0, 0), (16, 16), (17, 1), (31, 15), (32, 32), (4112, 4112)] {
            assert_eq!(plain_len(f).unwrap(), p);
        }
        assert_eq!(plain_len(u64::MAX).unwrap(), u64::MAX - 16);
        for l in [0u64, 1, 15, 16, 4095, 4096, 4097] {
            assert_eq!(plain_len(file_len(l)).unwrap(), l);
        }
        assert_eq!(cipher_len(4097, 0), 4096);
        assert_eq!(cipher_len(4097, 1), 16);
        assert_eq!(cipher_len(4097, 2), 0);
        assert_eq!(cipher_len(0, 0), 0);
        assert_eq!(cipher_len(u64::MAX - 16, u64::MAX), 0);
    }

    const PATHS: &[Path] = &[Path::Auto, Path::TwoPass, Path::Portable];

    /// Re-ciphers `file` in windows of `per` blocks (the last window to the file's end), in
    /// place and into a second buffer (full of garbage first: every byte must be written); the
    /// two must agree.
    fn recipher_windows(
        old: &FileCipher,
        new: &FileCipher,
        file: &[u8],
        plain_len: u64,
        per: usize,
        path: Path,
    ) -> (Vec<u8>, bool) {
        let mut out = file.to_vec();
        let mut ok = true;
        for (w, buf) in out.chunks_mut(per * FILE_BLOCK).enumerate() {
            ok &= recipher_with(old, new, (w * per) as u64, None, buf, plain_len, path);
        }
        let mut into = vec![0x5A; file.len()];
        let mut ok_into = true;
        for (w, (src, dst)) in file
            .chunks(per * FILE_BLOCK)
            .zip(into.chunks_mut(per * FILE_BLOCK))
            .enumerate()
        {
            let first = (w * per) as u64;
            ok_into &= recipher_with(old, new, first, Some(src), dst, plain_len, path);
        }
        assert!(into == out, "in place and into differ");
        assert_eq!(ok, ok_into);
        (out, ok)
    }

    #[test]
    fn recipher_equals_the_writer_under_the_new_key_on_every_path() {
        type Spec = (u32, Mode);
        let pairs: &[(Spec, Spec)] = &[
            ((128, Mode::Cbc), (128, Mode::Cbc)),
            ((192, Mode::Cbc), (192, Mode::Cbc)),
            ((256, Mode::Cbc), (256, Mode::Cbc)),
            ((128, Mode::Cbc), (256, Mode::Cbc)),
            ((256, Mode::Ecb), (256, Mode::Ecb)),
            ((128, Mode::Ecb), (192, Mode::Ecb)),
            ((128, Mode::Cbc), (128, Mode::Ecb)),
            ((192, Mode::Ecb), (256, Mode::Cbc)),
        ];
        if !super::super::fused::available() {
            eprintln!("no VAES: the fused path is not exercised");
        }
        for &((ba, ma), (bb, mb)) in pairs {
            let raw_a = bytes(ba as u64 * 3, ba as usize / 8 + 3);
            let raw_b = bytes(bb as u64 * 5, bb as usize / 8);
            let a = FileCipher::new(&raw_a, ba, ma).unwrap();
            let b = FileCipher::new(&raw_b, bb, mb).unwrap();
            let wrong = FileCipher::new(&bytes(77, 32), ba, ma).unwrap();
            for &len in LENGTHS {
                let plain = bytes(len as u64 * 7 + 1, len);
                let mut file = ref_write(&raw_a, ba, ma, &plain);
                let want = ref_write(&raw_b, bb, mb, &plain);
                // The junk after the last data cipher block is never read: scribble on it.
                let data_end = len.next_multiple_of(16);
                for x in &mut file[data_end..] {
                    *x ^= 0xA5;
                }
                for &path in PATHS {
                    for per in [1, 2, 3, 16, 17, 1000] {
                        let (got, ok) = recipher_windows(&a, &b, &file, len as u64, per, path);
                        assert!(ok);
                        assert!(
                            got == want,
                            "{ba} {ma:?} -> {bb} {mb:?}, length {len}, {per} blocks a window, {path:?}"
                        );
                        assert_eq!(ref_read(&raw_b, bb, mb, &got), plain);
                    }
                }
                // A wrong old key: the zero tail says so whenever there is one.
                if len > 0 {
                    let (_, ok) = recipher_windows(&wrong, &b, &file, len as u64, 4, Path::Auto);
                    assert_eq!(ok, len % 16 == 0, "length {len}");
                }
            }
        }
    }

    /// Plaintext after `plain_len` that is not zero (not what the writer leaves: a wrong key, or
    /// another writer): reported, and written again as the writer would, zeros.
    #[test]
    fn plaintext_after_the_end_is_reported_and_made_zero() {
        let raw_a = bytes(8, 16);
        let raw_b = bytes(9, 16);
        let a = FileCipher::new(&raw_a, 128, Mode::Cbc).unwrap();
        let b = FileCipher::new(&raw_b, 128, Mode::Cbc).unwrap();
        for len in [1usize, 17, 4090, 4095, 4097, 3 * 4096 + 4081] {
            // The file of `len` bytes, but with garbage instead of zeros up to the next AES block.
            let d = len.next_multiple_of(16);
            let garbage = bytes(len as u64, d);
            let mut file = ref_write(&raw_a, 128, Mode::Cbc, &garbage);
            file.resize(file_len(len as u64) as usize, 0x33);
            let want = ref_write(&raw_b, 128, Mode::Cbc, &garbage[..len]);
            let (plain, tail) = read(&a, &file);
            assert_eq!(plain, garbage[..len]);
            assert!(!tail);
            for path in PATHS {
                let (got, ok) = recipher_windows(&a, &b, &file, len as u64, 2, *path);
                assert!(!ok);
                assert!(got == want, "length {len} {path:?}");
            }
        }
    }

    #[test]
    fn a_window_holding_only_the_spilled_junk_becomes_zeros() {
        let a = FileCipher::new(&bytes(1, 16), 128, Mode::Cbc).unwrap();
        let b = FileCipher::new(&bytes(2, 16), 128, Mode::Cbc).unwrap();
        let len = 2 * 4096 - 5;
        let mut spill = [0xEEu8; 11];
        assert!(recipher(&a, &b, 2, &mut spill, len as u64));
        assert_eq!(spill, [0u8; 11]);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn a_window_past_the_end_panics() {
        let a = FileCipher::new(&bytes(1, 16), 128, Mode::Cbc).unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = recipher(&a, &a, 1, &mut buf, 4096);
    }

    #[test]
    #[should_panic(expected = "ends inside a block")]
    fn a_window_ending_inside_a_block_before_the_end_panics() {
        let a = FileCipher::new(&bytes(1, 16), 128, Mode::Cbc).unwrap();
        let mut buf = vec![0u8; 4000];
        let _ = recipher(&a, &a, 0, &mut buf, 8192);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        /// Random lengths, keys and windows: every path equals the reference writer's output
        /// under the new key.
        #[test]
        fn recipher_matches_the_writer_for_random_files(
            len in 0usize..140 * 4096,
            per in 1usize..140,
            spec in 0usize..6,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let (bits, mode) = SPECS[spec];
            let raw_a = bytes(seed, 32 + (seed % 7) as usize);
            let raw_b = bytes(seed ^ 0xFFFF, 32);
            let a = FileCipher::new(&raw_a, bits, mode).unwrap();
            let b = FileCipher::new(&raw_b, bits, mode).unwrap();
            let plain = bytes(seed.rotate_left(7), len);
            let file = ref_write(&raw_a, bits, mode, &plain);
            let want = ref_write(&raw_b, bits, mode, &plain);
            for &path in PATHS {
                let (got, ok) = recipher_windows(&a, &b, &file, len as u64, per, path);
                proptest::prop_assert!(ok);
                proptest::prop_assert!(got == want, "{:?}", path);
            }
        }
    }
}
