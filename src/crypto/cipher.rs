//! AES in CBC or ECB mode with PKCS#5 padding, as the JCE transformations
//! `AES/CBC/PKCS5Padding` and `AES/ECB/PKCS5Padding` (FORMAT.md 2.1, 2.3).

use crate::error::Malformed;
use aes::cipher::consts::U16;
use aes::cipher::typenum::Unsigned;
use aes::cipher::{
    BlockCipherDecrypt, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt,
    BlockSizeUser, KeyInit, ParBlocks,
};
use aes::{Aes128, Aes192, Aes256, Block};

use super::kernel::{self, fused, multibuf, RoundKeys};
pub use super::kernel::{cbc_kernel, CbcJob, BLOCK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    Cbc,
    Ecb,
}

/// What a table's options say about its cipher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherSpec {
    /// The JCE transformation exactly as in the options (also the key-file lookup field).
    pub transformation: String,
    pub mode: Mode,
    /// 16 for CBC, 0 for ECB (FORMAT.md 2.1).
    pub iv_len: usize,
    /// `secret_key_strength`: 128, 192 or 256.
    pub key_bits: u32,
}

pub const DEFAULT_TRANSFORMATION: &str = "AES/CBC/PKCS5Padding";

impl CipherSpec {
    /// From `cipher_algorithm`, `secret_key_strength` and `iv_length`; anything else is refused.
    pub fn from_options(
        cipher_algorithm: Option<&str>,
        key_strength: Option<&str>,
        iv_length: Option<&str>,
    ) -> std::result::Result<CipherSpec, Malformed> {
        let t = cipher_algorithm.unwrap_or(DEFAULT_TRANSFORMATION);
        let parts: Vec<&str> = t.split('/').collect();
        if parts.len() != 3 || !parts[0].eq_ignore_ascii_case("AES") {
            return Err(Malformed(format!(
                "cipher_algorithm {t:?} is not supported (only AES/CBC/PKCS5Padding and AES/ECB/PKCS5Padding)"
            )));
        }
        let mode = match parts[1].to_ascii_uppercase().as_str() {
            "CBC" => Mode::Cbc,
            "ECB" => Mode::Ecb,
            other => {
                return Err(Malformed(format!(
                    "cipher mode {other} in {t:?} is not supported (only CBC and ECB)"
                )))
            }
        };
        if !parts[2].eq_ignore_ascii_case("PKCS5Padding") {
            return Err(Malformed(format!(
                "padding {} in {t:?} is not supported (only PKCS5Padding)",
                parts[2]
            )));
        }
        // An IV exists only if the transformation matches `.*/(CBC|CFB|OFB|PCBC)/.*` case-sensitively.
        let has_iv = parts[1] == "CBC";
        if mode == Mode::Cbc && !has_iv {
            return Err(Malformed(format!(
                "cipher_algorithm {t:?}: DSE decides on an IV case-sensitively; write the mode as CBC"
            )));
        }
        let iv_len = if has_iv {
            let n: i64 = iv_length
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| format!("iv_length {s:?} is not a number"))
                })
                .transpose()?
                .unwrap_or(0);
            if n > 0 && n != 16 {
                return Err(Malformed(format!(
                    "iv_length {n}: AES takes only a 16-byte IV"
                )));
            }
            BLOCK
        } else {
            0
        };
        let key_bits = match key_strength.map(str::trim) {
            None | Some("") => 128,
            Some(s) => s
                .parse()
                .map_err(|_| format!("secret_key_strength {s:?} is not a number"))?,
        };
        if !matches!(key_bits, 128 | 192 | 256) {
            return Err(Malformed(format!(
                "secret_key_strength {key_bits}: AES keys are 128, 192 or 256 bits"
            )));
        }
        Ok(CipherSpec {
            transformation: t.to_string(),
            mode,
            iv_len,
            key_bits,
        })
    }

    /// Length of the ciphertext of `n` plain bytes with PKCS#5 padding.
    pub fn padded_len(n: usize) -> usize {
        BLOCK * (n / BLOCK + 1)
    }
}

/// An expanded AES key. The `aes` crate's `zeroize` feature wipes the round keys on drop.
pub struct AesKey {
    cipher: Cipher,
    /// Round keys for the AES-NI multi-buffer kernel, when the CPU has AES-NI.
    multibuf: Option<RoundKeys>,
}

enum Cipher {
    A128(Box<Aes128>),
    A192(Box<Aes192>),
    A256(Box<Aes256>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecryptError {
    /// Not a positive multiple of the block size.
    Length(usize),
    /// PKCS#5 padding invalid: almost always a wrong key.
    Padding,
}

impl std::fmt::Display for DecryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptError::Length(n) => {
                write!(f, "ciphertext length {n} is not a positive multiple of 16")
            }
            DecryptError::Padding => f.write_str("bad PKCS#5 padding"),
        }
    }
}

impl AesKey {
    pub fn new(raw: &[u8]) -> std::result::Result<AesKey, Malformed> {
        let cipher = match raw.len() {
            16 => Cipher::A128(Box::new(Aes128::new_from_slice(raw).unwrap())),
            24 => Cipher::A192(Box::new(Aes192::new_from_slice(raw).unwrap())),
            32 => Cipher::A256(Box::new(Aes256::new_from_slice(raw).unwrap())),
            n => return Err(Malformed(format!("a {}-bit key is not an AES key", n * 8))),
        };
        let multibuf = multibuf::available().then(|| RoundKeys::expand(raw));
        Ok(AesKey { cipher, multibuf })
    }

    pub fn bits(&self) -> u32 {
        match &self.cipher {
            Cipher::A128(_) => 128,
            Cipher::A192(_) => 192,
            Cipher::A256(_) => 256,
        }
    }

    fn dec_blocks(&self, b: &mut [Block]) {
        match &self.cipher {
            Cipher::A128(k) => k.decrypt_blocks(b),
            Cipher::A192(k) => k.decrypt_blocks(b),
            Cipher::A256(k) => k.decrypt_blocks(b),
        }
    }

    fn enc_blocks(&self, b: &mut [Block]) {
        match &self.cipher {
            Cipher::A128(k) => k.encrypt_blocks(b),
            Cipher::A192(k) => k.encrypt_blocks(b),
            Cipher::A256(k) => k.encrypt_blocks(b),
        }
    }

    fn with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = U16>) {
        match &self.cipher {
            Cipher::A128(k) => k.encrypt_with_backend(f),
            Cipher::A192(k) => k.encrypt_with_backend(f),
            Cipher::A256(k) => k.encrypt_with_backend(f),
        }
    }

    /// CBC-encrypts many independent messages at once (multi-buffer): block `i` of up to
    /// ParBlocksSize messages goes through one parallel AES call, which removes CBC encryption's
    /// one-block-at-a-time latency bound. Lanes are refilled as messages end. Output is
    /// byte-identical to single-stream CBC with PKCS#5 padding.
    pub fn encrypt_cbc_many(&self, jobs: &mut [CbcJob<'_>]) {
        for j in jobs.iter() {
            assert_eq!(
                j.out.len(),
                CipherSpec::padded_len(j.plain.len()),
                "CBC job output size"
            );
        }
        match &self.multibuf {
            Some(rk) => multibuf::encrypt_cbc_many(rk, jobs),
            None => self.with_backend(MultiCbc { jobs }),
        }
    }

    /// The portable multi-buffer path (RustCrypto backends), whatever the CPU has.
    pub fn encrypt_cbc_many_portable(&self, jobs: &mut [CbcJob<'_>]) {
        for j in jobs.iter() {
            assert_eq!(
                j.out.len(),
                CipherSpec::padded_len(j.plain.len()),
                "CBC job output size"
            );
        }
        self.with_backend(MultiCbc { jobs });
    }

    /// A check value of the key: AES of a fixed label block, hex. Tells two keys apart (a staged
    /// copy made under other bytes than the key holds now) without revealing either.
    pub fn check_value(&self) -> String {
        let mut b = *b"sstable-rekey kc";
        let (blocks, _) = Block::slice_as_chunks_mut(&mut b);
        self.enc_blocks(blocks);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// ECB-encrypts `plain` (PKCS#5-padded) into `out`, which is exactly `padded_len` bytes.
    pub fn encrypt_ecb_into(&self, plain: &[u8], out: &mut [u8]) {
        assert_eq!(
            out.len(),
            CipherSpec::padded_len(plain.len()),
            "ECB output size"
        );
        out[..plain.len()].copy_from_slice(plain);
        let pad = (out.len() - plain.len()) as u8;
        out[plain.len()..].fill(pad);
        let (blocks, _) = Block::slice_as_chunks_mut(out);
        self.enc_blocks(blocks);
    }

    /// Appends `E(plain)` (PKCS#5-padded) to `out`. `iv` is 16 bytes for CBC and empty for ECB.
    pub fn encrypt_append(&self, mode: Mode, iv: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let total = CipherSpec::padded_len(plain.len());
        out.extend_from_slice(plain);
        let pad = (total - plain.len()) as u8;
        out.resize(start + total, pad);
        let (blocks, rest) = Block::slice_as_chunks_mut(&mut out[start..]);
        debug_assert!(rest.is_empty());
        match mode {
            Mode::Ecb => self.enc_blocks(blocks),
            Mode::Cbc => self.with_backend(SingleCbc {
                iv: iv.try_into().expect("16-byte IV"),
                blocks,
            }),
        }
    }

    /// True when [`rekey_cbc_many`](Self::rekey_cbc_many) can move CBC messages from this key
    /// to `new` with the fused VAES kernel (same key size, CPU support).
    pub fn can_fuse_with(&self, new: &AesKey) -> bool {
        kernel::fused_allowed()
            && self.bits() == new.bits()
            && self.multibuf.is_some()
            && new.multibuf.is_some()
            && fused::available()
    }

    /// Re-encrypts whole CBC messages (padding block included) from this key to `new` in one
    /// pass: see [`fused`]. The caller has checked each message's padding (`peek_cbc`).
    /// Panics unless [`can_fuse_with`](Self::can_fuse_with).
    pub fn rekey_cbc_many(&self, new: &AesKey, jobs: &mut [fused::ReJob<'_>]) {
        let (Some(old), Some(new)) = (&self.multibuf, &new.multibuf) else {
            panic!("fused rekey without AES-NI round keys");
        };
        fused::rekey_cbc_many(old, new, jobs);
    }

    /// Decrypts only the first and the last block of a CBC ciphertext and checks its PKCS#5
    /// padding. Returns the payload length and its first bytes (up to 16): what a chunk's
    /// structure check reads, without decrypting the rest.
    pub fn peek_cbc(
        &self,
        iv: &[u8],
        ct: &[u8],
    ) -> std::result::Result<(usize, zeroize::Zeroizing<[u8; BLOCK]>), DecryptError> {
        if ct.is_empty() || !ct.len().is_multiple_of(BLOCK) {
            return Err(DecryptError::Length(ct.len()));
        }
        let n = ct.len();
        let mut buf = zeroize::Zeroizing::new([0u8; 2 * BLOCK]);
        buf[..BLOCK].copy_from_slice(&ct[..BLOCK]);
        buf[BLOCK..].copy_from_slice(&ct[n - BLOCK..]);
        self.dec_blocks(Block::slice_as_chunks_mut(&mut buf[..]).0);
        let (first, last) = buf.split_at_mut(BLOCK);
        xor16(first, iv);
        xor16(
            last,
            if n == BLOCK {
                iv
            } else {
                &ct[n - 2 * BLOCK..n - BLOCK]
            },
        );
        let pad = pkcs5_pad_len(last).ok_or(DecryptError::Padding)?;
        let mut head = zeroize::Zeroizing::new([0u8; BLOCK]);
        head.copy_from_slice(first);
        Ok((n - pad, head))
    }

    /// Appends the unpadded plaintext of `ct` to `out`. On error `out` is left as it was.
    pub fn decrypt_append(
        &self,
        mode: Mode,
        iv: &[u8],
        ct: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), DecryptError> {
        if ct.is_empty() || !ct.len().is_multiple_of(BLOCK) {
            return Err(DecryptError::Length(ct.len()));
        }
        let start = out.len();
        out.extend_from_slice(ct);
        {
            let (blocks, _) = Block::slice_as_chunks_mut(&mut out[start..]);
            // CBC decryption is parallel across blocks: decrypt all, then XOR with the previous
            // ciphertext block.
            self.dec_blocks(blocks);
        }
        if mode == Mode::Cbc {
            let body = &mut out[start..];
            xor16(&mut body[..BLOCK], iv);
            for (b, p) in body[BLOCK..]
                .chunks_exact_mut(BLOCK)
                .zip(ct.chunks_exact(BLOCK))
            {
                xor16(b, p);
            }
        }
        let body_len = out.len() - start;
        let Some(pad) = pkcs5_pad_len(&out[out.len() - BLOCK..]) else {
            zeroize::Zeroize::zeroize(&mut out[start..]);
            out.truncate(start);
            return Err(DecryptError::Padding);
        };
        out.truncate(start + body_len - pad);
        Ok(())
    }
}

/// The PKCS#5 padding length a decrypted last block ends with, if it is valid padding.
fn pkcs5_pad_len(last: &[u8]) -> Option<usize> {
    let pad = *last.last()? as usize;
    ((1..=BLOCK).contains(&pad) && last[last.len() - pad..].iter().all(|&b| b as usize == pad))
        .then_some(pad)
}

/// `a ^= b` for one 16-byte block, as one 128-bit operation.
#[inline(always)]
fn xor16(a: &mut [u8], b: &[u8]) {
    let x = u128::from_ne_bytes(a[..BLOCK].try_into().unwrap())
        ^ u128::from_ne_bytes(b[..BLOCK].try_into().unwrap());
    a[..BLOCK].copy_from_slice(&x.to_ne_bytes());
}

/// Single-stream CBC over already padded blocks, inside one backend call (no per-block dispatch).
struct SingleCbc<'a> {
    iv: [u8; 16],
    blocks: &'a mut [Block],
}

impl BlockSizeUser for SingleCbc<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for SingleCbc<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        let mut prev = Block::from(self.iv);
        for b in self.blocks.iter_mut() {
            for (x, p) in b.iter_mut().zip(prev.iter()) {
                *x ^= *p;
            }
            backend.encrypt_block_inplace(b);
            prev = *b;
        }
    }
}

struct MultiCbc<'a, 'b> {
    jobs: &'a mut [CbcJob<'b>],
}

impl BlockSizeUser for MultiCbc<'_, '_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for MultiCbc<'_, '_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        const NONE: usize = usize::MAX;
        let lanes = B::ParBlocksSize::USIZE;
        let jobs = self.jobs;
        let mut par: ParBlocks<B> = Default::default();
        // Per lane: the job, its next block, its previous ciphertext block (the CBC chain).
        let mut job = vec![NONE; lanes];
        let mut blk = vec![0usize; lanes];
        let mut prev = vec![0u128; lanes];
        let mut next = 0;
        loop {
            let mut active = 0;
            for l in 0..lanes {
                if job[l] == NONE {
                    if next == jobs.len() {
                        continue;
                    }
                    job[l] = next;
                    blk[l] = 0;
                    prev[l] = u128::from_ne_bytes(jobs[next].iv);
                    next += 1;
                }
                let plain = jobs[job[l]].plain;
                let start = blk[l] * BLOCK;
                let p = if start + BLOCK <= plain.len() {
                    u128::from_ne_bytes(plain[start..start + BLOCK].try_into().unwrap())
                } else {
                    // The PKCS#5 padding block.
                    let rest = &plain[start..];
                    let mut b = [(BLOCK - rest.len()) as u8; BLOCK];
                    b[..rest.len()].copy_from_slice(rest);
                    u128::from_ne_bytes(b)
                };
                par[l].copy_from_slice(&(p ^ prev[l]).to_ne_bytes());
                active += 1;
            }
            if active == 0 {
                break;
            }
            if active * 4 >= lanes {
                backend.encrypt_par_blocks_inplace(&mut par);
            } else {
                // Few lanes left: do not pay for a full parallel batch.
                for l in 0..lanes {
                    if job[l] != NONE {
                        backend.encrypt_block_inplace(&mut par[l]);
                    }
                }
            }
            for l in 0..lanes {
                if job[l] == NONE {
                    continue;
                }
                let out = &mut *jobs[job[l]].out;
                let start = blk[l] * BLOCK;
                let c: [u8; BLOCK] = par[l].as_slice().try_into().unwrap();
                out[start..start + BLOCK].copy_from_slice(&c);
                prev[l] = u128::from_ne_bytes(c);
                blk[l] += 1;
                if start + BLOCK == out.len() {
                    job[l] = NONE;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

    #[test]
    fn cbc_matches_the_cbc_crate_for_every_length_up_to_three_blocks() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let k = AesKey::new(&key).unwrap();
        for n in 0..50 {
            let plain: Vec<u8> = (0..n as u8).collect();
            let mut mine = Vec::new();
            k.encrypt_append(Mode::Cbc, &iv, &plain, &mut mine);
            let theirs = cbc::Encryptor::<Aes128>::new_from_slices(&key, &iv)
                .unwrap()
                .encrypt_padded_vec::<cbc::cipher::block_padding::Pkcs7>(&plain);
            assert_eq!(mine, theirs, "length {n}");
            let mut back = vec![1, 2];
            k.decrypt_append(Mode::Cbc, &iv, &mine, &mut back).unwrap();
            assert_eq!(&back[2..], &plain[..]);
            let again = cbc::Decryptor::<Aes128>::new_from_slices(&key, &iv)
                .unwrap()
                .decrypt_padded_vec::<cbc::cipher::block_padding::Pkcs7>(&mine)
                .unwrap();
            assert_eq!(again, plain);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The multi-buffer kernel is byte-identical to the `cbc` crate's single-stream output,
        /// for random keys, IVs and lengths (padding block included), however many messages.
        #[test]
        fn multi_buffer_cbc_matches_the_cbc_crate(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 32),
            bits in 0usize..3,
            msgs in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), proptest::prelude::any::<[u8; 16]>()),
                0..80,
            ),
        ) {
            let key = &key[..[16, 24, 32][bits]];
            let k = AesKey::new(key).unwrap();
            let mut outs: Vec<Vec<u8>> = msgs.iter().map(|(p, _)| vec![0u8; CipherSpec::padded_len(p.len())]).collect();
            let mut jobs: Vec<CbcJob> = msgs
                .iter()
                .zip(outs.iter_mut())
                .map(|((p, iv), o)| CbcJob { plain: p, iv: *iv, out: o })
                .collect();
            k.encrypt_cbc_many(&mut jobs);
            let mut outs2: Vec<Vec<u8>> = outs.iter().map(|o| vec![0u8; o.len()]).collect();
            let mut jobs2: Vec<CbcJob> = msgs
                .iter()
                .zip(outs2.iter_mut())
                .map(|((p, iv), o)| CbcJob { plain: p, iv: *iv, out: o })
                .collect();
            k.encrypt_cbc_many_portable(&mut jobs2);
            proptest::prop_assert_eq!(&outs, &outs2);
            for ((p, iv), o) in msgs.iter().zip(&outs) {
                let want = crate::crypto::reference::cbc_encrypt(key, iv, p);
                proptest::prop_assert_eq!(o, &want);
                let mut single = Vec::new();
                k.encrypt_append(Mode::Cbc, iv, p, &mut single);
                proptest::prop_assert_eq!(&single, &want);
            }
        }
    }

    #[test]
    fn spec_parsing() {
        let s = CipherSpec::from_options(None, None, None).unwrap();
        assert_eq!((s.mode, s.iv_len, s.key_bits), (Mode::Cbc, 16, 128));
        let s = CipherSpec::from_options(Some("AES/ECB/PKCS5Padding"), Some("256"), Some("16"))
            .unwrap();
        assert_eq!((s.mode, s.iv_len, s.key_bits), (Mode::Ecb, 0, 256));
        assert!(CipherSpec::from_options(Some("DES/CBC/PKCS5Padding"), None, None).is_err());
        assert!(CipherSpec::from_options(Some("AES/CTR/NoPadding"), None, None).is_err());
        assert!(CipherSpec::from_options(None, Some("512"), None).is_err());
        assert!(CipherSpec::from_options(None, None, Some("8")).is_err());
    }
}
