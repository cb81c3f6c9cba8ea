//! CRC-32 (the IEEE polynomial of `java.util.zip.CRC32`, Cassandra's chunk CRCs and
//! Digest.crc32) combination: `crc(A ‖ B)` from `crc(A)`, `crc(B)` and `len(B)`.
//!
//! Digest.crc32 covers the whole Data.db, which is every chunk followed by its CRC. The rewrite
//! computes each new chunk's CRC anyway; combining those gives the digest without reading the
//! output a second time.
//!
//! The math: for this CRC (reflected, initial value and final XOR all ones), crc(A ‖ B) =
//! crc(A)·x^(8·len(B)) ⊕ crc(B) in GF(2)[x] mod P. Values are kept in the reflected
//! representation (bit 31 is the coefficient of x^0). A product of two such values is one
//! carry-less multiplication (PCLMULQDQ when the CPU has it, a shift-and-add loop otherwise)
//! followed by a reduction of its low 32 bits with the byte-wise CRC table; x^(8n) is a product
//! of precomputed x^(2^k).

use crate::crypto::kernel::clmul;

/// The reflected IEEE polynomial.
const POLY: u32 = 0xEDB8_8320;

/// The byte-wise CRC table: `TABLE[b]` is `b·x^32 mod P` (reflected), one step of 8 bits.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// `x^(2^k) mod P` for k = 0..64 (reflected).
const X2N: [u32; 64] = {
    let mut t = [0u32; 64];
    let mut p: u32 = 1 << 30; // x^1
    let mut k = 0;
    while k < 64 {
        t[k] = p;
        p = mul_portable(p, p);
        k += 1;
    }
    t
};

/// `a·x^32 mod P`: four byte steps of the CRC table.
#[inline(always)]
const fn times_x32(mut a: u32) -> u32 {
    let mut i = 0;
    while i < 4 {
        a = (a >> 8) ^ TABLE[(a & 0xFF) as usize];
        i += 1;
    }
    a
}

/// Product of two reflected values mod P, bit by bit.
const fn mul_portable(a: u32, b: u32) -> u32 {
    // Carry-less product of the two 32-bit values, as a 63-bit integer.
    let mut v: u64 = 0;
    let mut i = 0;
    while i < 32 {
        if (b >> i) & 1 != 0 {
            v ^= (a as u64) << i;
        }
        i += 1;
    }
    reduce(v)
}

/// Reduces a carry-less product of two reflected 32-bit values. Bit k of the product is the
/// coefficient of x^(62-k); shifted left once, its high half is already a reflected value
/// (x^31..x^0) and its low half is a reflected value times x^32.
#[inline(always)]
const fn reduce(v: u64) -> u32 {
    let v = v << 1;
    ((v >> 32) as u32) ^ times_x32(v as u32)
}

/// Product of two reflected values mod P: the carry-less product by PCLMULQDQ when the CPU has
/// it (`crypto::kernel::clmul`), bit by bit otherwise.
#[inline]
fn mul(a: u32, b: u32) -> u32 {
    match clmul::mul32(a, b) {
        Some(product) => reduce(product),
        None => mul_portable(a, b),
    }
}

/// `x^(8n) mod P`: the multiplier that moves a CRC past `n` bytes.
fn x8n(n: u64) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    let mut k = 3;
    let mut n = n;
    while n != 0 {
        if n & 1 != 0 {
            p = mul(X2N[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// `crc(A ‖ B)` from `crc_a = crc(A)`, `crc_b = crc(B)` and `len_b = len(B)`.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    mul(x8n(len_b), crc_a) ^ crc_b
}

/// The CRC of `bytes` appended to a message whose CRC is `crc` (short tails: bytewise).
pub fn extend(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = (c >> 8) ^ TABLE[((c ^ b as u32) & 0xFF) as usize];
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_crc32fast() {
        for n in 0..64usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
            assert_eq!(extend(0, &data), crc32fast::hash(&data));
        }
    }

    proptest::proptest! {
        /// combine and extend agree with crc32fast over the concatenation, both multipliers.
        #[test]
        fn combine_matches_crc_of_the_concatenation(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20000),
        ) {
            let whole = crc32fast::hash(&[a.as_slice(), b.as_slice()].concat());
            let (ca, cb) = (crc32fast::hash(&a), crc32fast::hash(&b));
            proptest::prop_assert_eq!(combine(ca, cb, b.len() as u64), whole);
            proptest::prop_assert_eq!(mul_portable(x8n(b.len() as u64), ca) ^ cb, whole);
            proptest::prop_assert_eq!(extend(ca, &b), whole);
        }
    }
}
