//! The SIMD kernels beneath [`super::cipher`], and what they share.
//!
//! - [`multibuf`]: AES-NI multi-buffer CBC encryption (eight messages at once);
//! - [`fused`]: VAES (AVX-512) CBC re-encryption, decrypt and encrypt in one pass;
//! - [`clmul`]: PCLMULQDQ carry-less multiplication, for `sstable::crc`'s CRC combination.
//!
//! This file holds what the kernels share — the block size, the job types, the expanded round
//! keys, `wipe` — and the run-time dispatch: which CPU features this machine has and which CBC
//! path a rekey takes ([`cbc_kernel`]). The kernels import only this file, and this file imports
//! none of them; [`super::cipher::AesKey`] calls the kernel the dispatch allows. All of the crate's
//! SIMD `unsafe` is in these files, each block with the reason it is sound.

pub mod clmul;
pub mod fused;
pub mod multibuf;

/// The AES block size.
pub const BLOCK: usize = 16;

/// One message for multi-buffer CBC encryption (`AesKey::encrypt_cbc_many`): `out` must be
/// exactly `padded_len(plain.len())`.
pub struct CbcJob<'a> {
    pub plain: &'a [u8],
    pub iv: [u8; 16],
    pub out: &'a mut [u8],
}

/// AES round keys (FIPS-197 key expansion), 11, 13 or 15 of them. Wiped on drop.
pub struct RoundKeys {
    rk: Vec<[u8; 16]>,
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.rk);
    }
}

const SBOX: [u8; 256] = {
    // Computed at compile time from the AES definition: multiplicative inverse in GF(2^8),
    // then the affine transform.
    let mut sbox = [0u8; 256];
    let mut p: u8 = 1;
    let mut q: u8 = 1;
    loop {
        // p *= 3
        p = p ^ (p << 1) ^ (if p & 0x80 != 0 { 0x1B } else { 0 });
        // q /= 3
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let x = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        sbox[p as usize] = x ^ 0x63;
        if p == 1 {
            break;
        }
    }
    sbox[0] = 0x63;
    sbox
};

impl RoundKeys {
    /// FIPS-197 section 5.2 key expansion for 16-, 24- and 32-byte keys.
    pub fn expand(key: &[u8]) -> RoundKeys {
        let nk = key.len() / 4;
        assert!(matches!(nk, 4 | 6 | 8), "AES key length");
        let nr = nk + 6;
        let total = 4 * (nr + 1);
        let mut w: Vec<[u8; 4]> = Vec::with_capacity(total);
        for i in 0..nk {
            w.push(key[4 * i..4 * i + 4].try_into().unwrap());
        }
        let mut rcon: u8 = 1;
        for i in nk..total {
            let mut t = w[i - 1];
            if i % nk == 0 {
                t = [
                    SBOX[t[1] as usize] ^ rcon,
                    SBOX[t[2] as usize],
                    SBOX[t[3] as usize],
                    SBOX[t[0] as usize],
                ];
                rcon = (rcon << 1) ^ (if rcon & 0x80 != 0 { 0x1B } else { 0 });
            } else if nk > 6 && i % nk == 4 {
                t = [
                    SBOX[t[0] as usize],
                    SBOX[t[1] as usize],
                    SBOX[t[2] as usize],
                    SBOX[t[3] as usize],
                ];
            }
            let p = w[i - nk];
            w.push([p[0] ^ t[0], p[1] ^ t[1], p[2] ^ t[2], p[3] ^ t[3]]);
        }
        let rk = w
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 16];
                for (j, word) in c.iter().enumerate() {
                    b[4 * j..4 * j + 4].copy_from_slice(word);
                }
                b
            })
            .collect();
        zeroize::Zeroize::zeroize(&mut w);
        RoundKeys { rk }
    }

    pub fn rounds(&self) -> usize {
        self.rk.len() - 1
    }

    /// Round key `i` (0 ..= rounds).
    pub fn round_key(&self, i: usize) -> &[u8; 16] {
        &self.rk[i]
    }
}

/// True when this CPU has AES-NI (and SSE2): [`multibuf`] runs.
pub fn has_aesni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU has VAES and AVX-512F (and AES-NI): [`fused`] runs.
pub fn has_vaes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("vaes")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("aes")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU has PCLMULQDQ (and SSE2): [`clmul`] runs.
pub fn has_pclmulqdq() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `SSTABLE_REKEY_KERNEL=two-pass` turns the fused kernel off (decrypt, then multi-buffer
/// encrypt): for comparing the two paths in benchmarks and for testing the two-pass path on CPUs
/// that have VAES. Unset or `auto`: the fastest path the CPU supports.
pub fn fused_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("SSTABLE_REKEY_KERNEL").as_deref() != Ok("two-pass"))
}

/// The CBC rekey path this process uses: `vaes-fused` (decrypt and encrypt in one pass),
/// `aesni-two-pass` (decrypt, then the AES-NI multi-buffer encryption) or `portable-two-pass`
/// (RustCrypto). ECB tables always take a two-pass path.
pub fn cbc_kernel() -> &'static str {
    if fused_allowed() && has_vaes() {
        "vaes-fused"
    } else if has_aesni() {
        "aesni-two-pass"
    } else {
        "portable-two-pass"
    }
}

/// Zeroes vector registers' stack copies with volatile writes (not optimised away).
///
/// # Safety
/// All-zero bits must be a valid value of `T` (true of the SIMD vector types and integer arrays
/// the kernels use it for).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn wipe<T: Copy>(v: &mut [T]) {
    for x in v.iter_mut() {
        // SAFETY: `x` is a valid, aligned, exclusive reference; all-zero bits are a valid `T` by
        // this function's contract.
        unsafe { std::ptr::write_volatile(x, std::mem::zeroed()) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbox_and_key_expansion_match_fips_197() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x53], 0xED);
        assert_eq!(SBOX[0xFF], 0x16);
        // FIPS-197 appendix A.1: the last round key of 2b7e1516 28aed2a6 abf71588 09cf4f3c.
        let k = RoundKeys::expand(&[
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ]);
        assert_eq!(
            k.rk[10],
            [
                0xd0, 0x14, 0xf9, 0xa8, 0xc9, 0xee, 0x25, 0x89, 0xe1, 0x3f, 0x0c, 0xc8, 0xb6, 0x63,
                0x0c, 0xa6
            ]
        );
    }
}
