//! Multi-buffer AES-CBC encryption with AES-NI intrinsics.
//!
//! CBC encryption of one message is a chain: block i needs the ciphertext of block i-1, so one
//! stream runs at the latency of AESENC, not its throughput (~1 GB/s a core). Encrypting block i
//! of eight independent messages at once keeps eight chains in flight in registers. Lanes are
//! refilled as messages end, so messages of any lengths mix. The output is byte-identical to
//! single-stream CBC with PKCS#5 padding (property-tested against the `cbc` crate).
//!
//! Used when the CPU has AES-NI (checked at run time); otherwise callers use the portable path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{CbcJob, RoundKeys, BLOCK};

/// True when this CPU can run [`encrypt_cbc_many`].
pub fn available() -> bool {
    super::has_aesni()
}

/// CBC-encrypts every job (PKCS#5 padding) under `keys`. Panics if not [`available`].
///
/// (A VAES/AVX-512 variant with four lanes per 512-bit register was measured at about half this
/// kernel's speed on this project's test machine: the lane gathers and scatters cost more than
/// the wider AES rounds save. It is not kept.)
pub fn encrypt_cbc_many(keys: &RoundKeys, jobs: &mut [CbcJob<'_>]) {
    assert!(available(), "AES-NI not available");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `cbc_many` needs AES-NI and SSE2, which `available` checked just above; its loads
    // and stores stay inside slices taken with checked indexing.
    unsafe {
        match keys.rounds() {
            10 => cbc_many::<10>(keys, jobs),
            12 => cbc_many::<12>(keys, jobs),
            _ => cbc_many::<14>(keys, jobs),
        }
    }
}

/// Lane bookkeeping shared by the kernels: which message each lane runs, where it is, and the
/// message's padding block.
struct Lanes<const N: usize> {
    job: [usize; N],
    blk: [usize; N],
    nblk: [usize; N],
    tail: [[u8; BLOCK]; N],
    next: usize,
}

impl<const N: usize> Lanes<N> {
    fn new() -> Self {
        Lanes {
            job: [NONE; N],
            blk: [0; N],
            nblk: [0; N],
            tail: [[0; BLOCK]; N],
            next: 0,
        }
    }

    /// Gives lane `l` a message if it has none; false when the lane stays idle. Returns the IV
    /// when a new message starts.
    #[inline(always)]
    fn refill(&mut self, l: usize, jobs: &[CbcJob<'_>]) -> (bool, Option<[u8; 16]>) {
        if self.job[l] != NONE {
            return (true, None);
        }
        if self.next == jobs.len() {
            return (false, None);
        }
        let j = &jobs[self.next];
        self.job[l] = self.next;
        self.blk[l] = 0;
        self.nblk[l] = j.out.len() / BLOCK;
        let full = j.plain.len() / BLOCK * BLOCK;
        let rest = &j.plain[full..];
        self.tail[l] = [(BLOCK - rest.len()) as u8; BLOCK];
        self.tail[l][..rest.len()].copy_from_slice(rest);
        self.next += 1;
        (true, Some(j.iv))
    }

    /// The plaintext block lane `l` encrypts next.
    #[inline(always)]
    fn input<'a>(&'a self, l: usize, jobs: &'a [CbcJob<'_>]) -> &'a [u8] {
        let b = self.blk[l];
        if b + 1 < self.nblk[l] {
            &jobs[self.job[l]].plain[b * BLOCK..(b + 1) * BLOCK]
        } else {
            &self.tail[l]
        }
    }

    /// Where lane `l`'s ciphertext block goes; advances the lane.
    #[inline(always)]
    fn output<'a>(&mut self, l: usize, jobs: &'a mut [CbcJob<'_>]) -> &'a mut [u8] {
        let b = self.blk[l];
        let j = self.job[l];
        self.blk[l] += 1;
        if self.blk[l] == self.nblk[l] {
            self.job[l] = NONE;
        }
        &mut jobs[j].out[b * BLOCK..(b + 1) * BLOCK]
    }
}

impl<const N: usize> Drop for Lanes<N> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.tail);
    }
}

const LANES: usize = 8;
const NONE: usize = usize::MAX;

/// # Safety
/// The CPU must have AES-NI and SSE2 ([`available`]). Memory needs nothing of the caller: every
/// load and store is inside a slice taken with checked indexing (the bulk run's raw pointers
/// step through `m` blocks of slices `m` blocks long).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse2")]
unsafe fn cbc_many<const NR: usize>(keys: &RoundKeys, jobs: &mut [CbcJob<'_>]) {
    let mut rk = [_mm_setzero_si128(); 15];
    for (i, k) in keys.rk.iter().enumerate() {
        rk[i] = _mm_loadu_si128(k.as_ptr() as *const __m128i);
    }
    let mut lanes = Lanes::<LANES>::new();
    let mut prev = [_mm_setzero_si128(); LANES];
    let mut live = [false; LANES];
    loop {
        let mut x = [_mm_setzero_si128(); LANES];
        let mut active = 0;
        for l in 0..LANES {
            let (on, iv) = lanes.refill(l, jobs);
            live[l] = on;
            if !on {
                continue;
            }
            if let Some(iv) = iv {
                prev[l] = _mm_loadu_si128(iv.as_ptr() as *const __m128i);
            }
            let p = _mm_loadu_si128(lanes.input(l, jobs).as_ptr() as *const __m128i);
            x[l] = _mm_xor_si128(_mm_xor_si128(p, prev[l]), rk[0]);
            active += 1;
        }
        if active == 0 {
            break;
        }
        for k in rk.iter().take(NR).skip(1) {
            for v in x.iter_mut() {
                *v = _mm_aesenc_si128(*v, *k);
            }
        }
        for (l, v) in x.iter_mut().enumerate() {
            *v = _mm_aesenclast_si128(*v, rk[NR]);
            if !live[l] {
                continue;
            }
            _mm_storeu_si128(lanes.output(l, jobs).as_mut_ptr() as *mut __m128i, *v);
            prev[l] = *v;
        }
        // Bulk run: while all eight lanes have full (unpadded) blocks left, step them together
        // with no bookkeeping, the chains held in registers.
        if lanes.job.iter().all(|&j| j != NONE) {
            let m = (0..LANES)
                .map(|l| lanes.nblk[l] - lanes.blk[l] - 1)
                .min()
                .unwrap_or(0);
            if m > 0 {
                let mut src = [std::ptr::null::<u8>(); LANES];
                let mut dst = [std::ptr::null_mut::<u8>(); LANES];
                for l in 0..LANES {
                    let j = &mut jobs[lanes.job[l]];
                    let off = lanes.blk[l] * BLOCK;
                    // In bounds: blk + m < nblk, and plain holds nblk - 1 full blocks.
                    src[l] = j.plain[off..off + m * BLOCK].as_ptr();
                    dst[l] = j.out[off..off + m * BLOCK].as_mut_ptr();
                }
                let mut c = prev;
                for step in 0..m {
                    let o = step * BLOCK;
                    let mut x = [_mm_setzero_si128(); LANES];
                    for l in 0..LANES {
                        let p = _mm_loadu_si128(src[l].add(o) as *const __m128i);
                        x[l] = _mm_xor_si128(_mm_xor_si128(p, c[l]), rk[0]);
                    }
                    for k in rk.iter().take(NR).skip(1) {
                        for v in x.iter_mut() {
                            *v = _mm_aesenc_si128(*v, *k);
                        }
                    }
                    for l in 0..LANES {
                        c[l] = _mm_aesenclast_si128(x[l], rk[NR]);
                        _mm_storeu_si128(dst[l].add(o) as *mut __m128i, c[l]);
                    }
                }
                prev = c;
                for l in 0..LANES {
                    lanes.blk[l] += m;
                }
            }
        }
    }
    // The round keys were copied into this frame: wipe them.
    super::wipe(&mut rk);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockCipherEncrypt, KeyInit};

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// The kernel is byte-identical to the `cbc` crate, for random keys, IVs,
        /// lengths (the padding block included) and message counts (lane refills).
        #[test]
        fn kernels_match_the_cbc_crate(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 32),
            bits in 0usize..3,
            msgs in proptest::collection::vec(
                (proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), proptest::prelude::any::<[u8; 16]>()),
                0..70,
            ),
        ) {
            let key = &key[..[16, 24, 32][bits]];
            let rk = RoundKeys::expand(key);
            if available() {
                let mut outs: Vec<Vec<u8>> = msgs.iter().map(|(p, _)| vec![0u8; (p.len() / 16 + 1) * 16]).collect();
                let mut jobs: Vec<CbcJob> = msgs.iter().zip(outs.iter_mut()).map(|((p, iv), o)| CbcJob { plain: p, iv: *iv, out: o }).collect();
                encrypt_cbc_many(&rk, &mut jobs);
                for ((p, iv), o) in msgs.iter().zip(&outs) {
                    proptest::prop_assert_eq!(o, &crate::crypto::reference::cbc_encrypt(key, iv, p));
                }
            }
        }
    }

    #[test]
    fn one_block_matches_the_aes_crate_for_every_key_size() {
        if !available() {
            return;
        }
        for len in [16, 24, 32] {
            let key: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let plain = [0x42u8; 15]; // one padded block
            let mut out = [0u8; 16];
            let mut jobs = [CbcJob {
                plain: &plain,
                iv: [0; 16],
                out: &mut out,
            }];
            encrypt_cbc_many(&RoundKeys::expand(&key), &mut jobs);
            let mut b = aes::Block::from([0x42u8; 16]);
            b[15] = 1;
            match len {
                16 => aes::Aes128::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut b),
                24 => aes::Aes192::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut b),
                _ => aes::Aes256::new_from_slice(&key)
                    .unwrap()
                    .encrypt_block(&mut b),
            }
            assert_eq!(&out[..], &b[..], "AES-{}", len * 8);
        }
    }
}
