//! Fused CBC re-encryption with VAES (AVX-512): every block is decrypted under the old key and
//! encrypted under the new key in one pass, so plaintext exists only in registers and each byte is
//! loaded and stored once.
//!
//! `out = CBC-encrypt(new, new_iv, CBC-decrypt(old, old_iv, ct))` on whole blocks, the padding
//! block included: a PKCS#5-padded plaintext pads the same under any AES key, so once the caller
//! has checked the old padding (and the payload's structure) this is byte-identical to decrypting,
//! unpadding, padding and encrypting (property-tested against the `cbc` crate).
//!
//! CBC encryption is a chain per message, so messages are lanes: 16 lanes in four 512-bit
//! registers of four 128-bit lanes each. Block `i` of each lane is gathered into its register,
//! decrypted (parallel work), XORed with the previous ciphertext block, then XORed into the lane's
//! new chain and encrypted. With four registers the chains' round latency is hidden behind the
//! other registers' rounds. Lanes run in bulk runs (all lanes step together, no bookkeeping) until
//! one message ends; then finished lanes take the next messages. Lanes without a message work on a
//! scratch buffer so the bulk loop never branches.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{RoundKeys, BLOCK};

/// One message: `ct` (whole blocks, at least one) is rewritten into `out` (the same length).
pub struct ReJob<'a> {
    pub ct: &'a [u8],
    pub old_iv: [u8; 16],
    pub new_iv: [u8; 16],
    pub out: &'a mut [u8],
}

/// True when this CPU can run [`rekey_cbc_many`] (VAES and AVX-512F, checked at run time).
pub fn available() -> bool {
    super::has_vaes()
}

/// Rewrites every job from `old` to `new`. Both keys must be the same AES size. Panics if not
/// [`available`] or on malformed jobs.
pub fn rekey_cbc_many(old: &RoundKeys, new: &RoundKeys, jobs: &mut [ReJob<'_>]) {
    assert!(available(), "VAES not available");
    assert_eq!(
        old.rounds(),
        new.rounds(),
        "fused rekey needs equal key sizes"
    );
    for j in jobs.iter() {
        assert!(
            !j.ct.is_empty() && j.ct.len() % BLOCK == 0 && j.out.len() == j.ct.len(),
            "fused rekey job of {} -> {} bytes",
            j.ct.len(),
            j.out.len()
        );
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU features the kernel enables were checked by `available` above, and every
    // job was checked to be whole blocks with `out` as long as `ct`, which the kernel's pointer
    // steps rely on.
    unsafe {
        match new.rounds() {
            10 => kernel::<10>(old, new, jobs),
            12 => kernel::<12>(old, new, jobs),
            _ => kernel::<14>(old, new, jobs),
        }
    }
}

const GROUPS: usize = 4;
const LANES: usize = 4 * GROUPS;

/// Loads block `o` (a byte offset) of lanes `4g..4g + 4` into one 512-bit register.
///
/// # Safety
/// AVX-512F; each of the four pointers must be valid for 16 bytes at offset `o`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gather(p: &[*const u8; LANES], g: usize, o: usize) -> __m512i {
    let a = _mm512_castsi128_si512(_mm_loadu_si128(p[4 * g].add(o) as *const __m128i));
    let a = _mm512_inserti32x4::<1>(a, _mm_loadu_si128(p[4 * g + 1].add(o) as *const __m128i));
    let a = _mm512_inserti32x4::<2>(a, _mm_loadu_si128(p[4 * g + 2].add(o) as *const __m128i));
    _mm512_inserti32x4::<3>(a, _mm_loadu_si128(p[4 * g + 3].add(o) as *const __m128i))
}

/// Stores the four 128-bit lanes of `v` at offset `o` of lanes `4g..4g + 4`.
///
/// # Safety
/// AVX-512F; each of the four pointers must be valid for writing 16 bytes at offset `o`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scatter(v: __m512i, p: &[*mut u8; LANES], g: usize, o: usize) {
    _mm_storeu_si128(p[4 * g].add(o) as *mut __m128i, _mm512_castsi512_si128(v));
    _mm_storeu_si128(
        p[4 * g + 1].add(o) as *mut __m128i,
        _mm512_extracti32x4_epi32::<1>(v),
    );
    _mm_storeu_si128(
        p[4 * g + 2].add(o) as *mut __m128i,
        _mm512_extracti32x4_epi32::<2>(v),
    );
    _mm_storeu_si128(
        p[4 * g + 3].add(o) as *mut __m128i,
        _mm512_extracti32x4_epi32::<3>(v),
    );
}

/// # Safety
/// The CPU must have VAES, AVX-512F and AES-NI ([`available`]); every job must be whole blocks
/// (at least one) with `out.len() == ct.len()` ([`rekey_cbc_many`] asserts both): lanes step their
/// raw pointers by the blocks left in their job.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vaes,aes,sse2")]
unsafe fn kernel<const NR: usize>(old: &RoundKeys, new: &RoundKeys, jobs: &mut [ReJob<'_>]) {
    let key = |k: &[u8; 16]| _mm_loadu_si128(k.as_ptr() as *const __m128i);
    // Encryption round keys of the new key; the equivalent inverse cipher's keys of the old one.
    let mut ek = [_mm512_setzero_si512(); 15];
    let mut dk = [_mm512_setzero_si512(); 15];
    for (i, k) in ek.iter_mut().enumerate().take(NR + 1) {
        *k = _mm512_broadcast_i32x4(key(new.round_key(i)));
    }
    dk[0] = _mm512_broadcast_i32x4(key(old.round_key(NR)));
    for (i, k) in dk.iter_mut().enumerate().take(NR).skip(1) {
        *k = _mm512_broadcast_i32x4(_mm_aesimc_si128(key(old.round_key(NR - i))));
    }
    dk[NR] = _mm512_broadcast_i32x4(key(old.round_key(0)));

    let longest = jobs.iter().map(|j| j.ct.len()).max().unwrap_or(0);
    // Idle lanes read zeros and write here.
    let scratch_in = vec![0u8; longest];
    let mut scratch_out = vec![0u8; longest];

    let mut src = [scratch_in.as_ptr(); LANES];
    let mut dst = [scratch_out.as_mut_ptr(); LANES];
    let mut left = [0usize; LANES];
    let mut busy = [false; LANES];
    // Per lane: the old chain (previous ciphertext block) and the new chain.
    let mut old_chain = [[0u8; 16]; LANES];
    let mut new_chain = [[0u8; 16]; LANES];
    let mut next = 0;
    loop {
        for l in 0..LANES {
            if busy[l] && left[l] > 0 {
                continue;
            }
            busy[l] = next < jobs.len();
            if busy[l] {
                let j = &mut jobs[next];
                next += 1;
                src[l] = j.ct.as_ptr();
                dst[l] = j.out.as_mut_ptr();
                left[l] = j.ct.len() / BLOCK;
                old_chain[l] = j.old_iv;
                new_chain[l] = j.new_iv;
            }
        }
        let Some(m) = (0..LANES).filter(|&l| busy[l]).map(|l| left[l]).min() else {
            break;
        };
        for l in 0..LANES {
            if !busy[l] {
                // m blocks fit: m is at most some busy lane's length, at most `longest`.
                src[l] = scratch_in.as_ptr();
                dst[l] = scratch_out.as_mut_ptr();
            }
        }
        let load = |c: &[[u8; 16]; LANES], g: usize| {
            _mm512_loadu_si512(c[4 * g..4 * g + 4].as_ptr() as *const __m512i)
        };
        let mut pc = [_mm512_setzero_si512(); GROUPS];
        let mut e = [_mm512_setzero_si512(); GROUPS];
        for g in 0..GROUPS {
            pc[g] = load(&old_chain, g);
            e[g] = load(&new_chain, g);
        }
        for step in 0..m {
            let o = step * BLOCK;
            let mut c = [_mm512_setzero_si512(); GROUPS];
            let mut x = [_mm512_setzero_si512(); GROUPS];
            for g in 0..GROUPS {
                c[g] = gather(&src, g, o);
                x[g] = _mm512_xor_si512(c[g], dk[0]);
            }
            for k in dk.iter().take(NR).skip(1) {
                for v in x.iter_mut() {
                    *v = _mm512_aesdec_epi128(*v, *k);
                }
            }
            for g in 0..GROUPS {
                // plaintext = D(c) ^ previous ciphertext; then into the new chain.
                let p = _mm512_xor_si512(_mm512_aesdeclast_epi128(x[g], dk[NR]), pc[g]);
                pc[g] = c[g];
                x[g] = _mm512_ternarylogic_epi64::<0x96>(p, e[g], ek[0]);
            }
            for k in ek.iter().take(NR).skip(1) {
                for v in x.iter_mut() {
                    *v = _mm512_aesenc_epi128(*v, *k);
                }
            }
            for g in 0..GROUPS {
                e[g] = _mm512_aesenclast_epi128(x[g], ek[NR]);
                scatter(e[g], &dst, g, o);
            }
        }
        for g in 0..GROUPS {
            _mm512_storeu_si512(old_chain[4 * g..].as_mut_ptr() as *mut __m512i, pc[g]);
            _mm512_storeu_si512(new_chain[4 * g..].as_mut_ptr() as *mut __m512i, e[g]);
        }
        for l in 0..LANES {
            if busy[l] {
                src[l] = src[l].add(m * BLOCK);
                dst[l] = dst[l].add(m * BLOCK);
                left[l] -= m;
            }
        }
    }
    // Idle lanes decrypted zeros under the old key: wipe what they wrote.
    zeroize::Zeroize::zeroize(&mut scratch_out);
    // The round keys were copied into this frame: wipe them (key material never outlives use).
    super::wipe(&mut ek);
    super::wipe(&mut dk);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::reference::{cbc_decrypt as dec, cbc_encrypt as enc};

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Byte-identical to the `cbc` crate's decrypt-then-encrypt, for random keys, IVs,
        /// lengths (padding block included) and message counts (idle lanes, refills).
        #[test]
        fn fused_rekey_matches_decrypt_then_encrypt_with_the_cbc_crate(
            keys in proptest::collection::vec(proptest::prelude::any::<u8>(), 64),
            bits in 0usize..3,
            msgs in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                 proptest::prelude::any::<[u8; 16]>(),
                 proptest::prelude::any::<[u8; 16]>()),
                0..70,
            ),
        ) {
            if !available() {
                return Ok(());
            }
            let n = [16, 24, 32][bits];
            let (k_old, k_new) = (&keys[..n], &keys[32..32 + n]);
            let cts: Vec<Vec<u8>> = msgs.iter().map(|(p, iv, _)| enc(k_old, iv, p)).collect();
            let mut outs: Vec<Vec<u8>> = cts.iter().map(|c| vec![0u8; c.len()]).collect();
            let mut jobs: Vec<ReJob> = msgs
                .iter()
                .zip(&cts)
                .zip(outs.iter_mut())
                .map(|(((_, old_iv, new_iv), ct), out)| ReJob { ct, old_iv: *old_iv, new_iv: *new_iv, out })
                .collect();
            rekey_cbc_many(&RoundKeys::expand(k_old), &RoundKeys::expand(k_new), &mut jobs);
            for ((p, _, new_iv), out) in msgs.iter().zip(&outs) {
                proptest::prop_assert_eq!(out, &enc(k_new, new_iv, p));
                proptest::prop_assert_eq!(&dec(k_new, new_iv, out), p);
            }
        }
    }
}
