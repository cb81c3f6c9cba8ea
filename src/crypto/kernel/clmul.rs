//! Carry-less multiplication with PCLMULQDQ: the SIMD step of `sstable::crc`'s CRC combination,
//! which keeps the CRC arithmetic (the reduction modulo the polynomial, the portable fallback) and
//! calls this for the product only.

/// True when this CPU can run [`mul32`]'s PCLMULQDQ path.
pub fn available() -> bool {
    super::has_pclmulqdq()
}

/// The carry-less product of `a` and `b` (polynomials over GF(2)), 63 bits, or `None` when this
/// CPU has no PCLMULQDQ (the caller then multiplies bit by bit).
#[inline]
pub fn mul32(a: u32, b: u32) -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `clmul32` needs PCLMULQDQ and SSE2, which `available` checked just above; it
        // touches no memory.
        return Some(unsafe { clmul32(a, b) });
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, b);
    None
}

/// # Safety
/// The CPU must have PCLMULQDQ and SSE2 ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
unsafe fn clmul32(a: u32, b: u32) -> u64 {
    use std::arch::x86_64::*;
    let p = _mm_clmulepi64_si128::<0>(_mm_cvtsi32_si128(a as i32), _mm_cvtsi32_si128(b as i32));
    _mm_cvtsi128_si64(p) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shift-and-add, the definition of a carry-less product.
    fn by_bits(a: u32, b: u32) -> u64 {
        (0..32)
            .filter(|i| (b >> i) & 1 != 0)
            .fold(0, |v, i| v ^ ((a as u64) << i))
    }

    proptest::proptest! {
        /// The instruction's product is the bit-by-bit one, edge values included.
        #[test]
        fn pclmulqdq_product_matches_shift_and_add(
            a in proptest::prelude::any::<u32>(),
            b in proptest::prelude::any::<u32>(),
        ) {
            for (x, y) in [(a, b), (u32::MAX, b), (a, u32::MAX), (0, b), (1 << 31, 1 << 31)] {
                match mul32(x, y) {
                    Some(p) => proptest::prop_assert_eq!(p, by_bits(x, y)),
                    None => proptest::prop_assert!(!available()),
                }
            }
        }
    }
}
