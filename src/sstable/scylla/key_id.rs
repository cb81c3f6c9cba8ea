//! `scylla_key_id` (FORMAT.md 4.4): how ScyllaDB's KMIP provider stores a KMIP unique identifier
//! (`kmip_host.cc` `kmip_id_to_id` / `id_to_kmip_string`), and the shape of the replicated
//! provider's ids, which are recognised only so that callers can refuse them by name.
//!
//! Encoding: an id that ScyllaDB's `utils::UUID(string)` accepts is stored as its 16 bytes; any
//! other as its bytes followed by `01`, except a 15-byte id, followed by `00 02` (16 bytes always
//! mean a UUID). Decoding: 16 bytes are a UUID, written lower-case 8-4-4-4-12; otherwise the last
//! byte says how many trailing bytes to drop.

use md5::{Digest, Md5};

use crate::error::Malformed;

use super::wire::{hex, show};

/// The UUID as ScyllaDB prints it (`UUID::to_sstring`): lower-case 8-4-4-4-12.
pub fn uuid_to_string(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` is exactly the form [`uuid_to_string`] writes: lower-case 8-4-4-4-12.
pub fn is_canonical_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// Whether ScyllaDB's `utils::UUID(string)` accepts `s` (`utils/uuid.cc`): every `-` removed, the
/// rest must be 32 or 33 bytes (length / 2 = 16), and each half (the first 16 bytes, then the
/// other 16 or 17) must be consumed whole by `std::stoull(half, &pos, 16)`.
pub fn scylla_accepts_as_uuid(s: &str) -> bool {
    let t: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    t.len() / 2 == 16 && stoull16_whole(&t[..16]) && stoull16_whole(&t[16..])
}

/// `std::stoull(b, &pos, 16)` succeeds with `pos == b.len()` (glibc `strtoull`, C locale): leading
/// white space, one optional sign, an optional `0x`/`0X` when a hex digit follows it, then hex
/// digits up to the end, the value below 2^64 (else `out_of_range`).
fn stoull16_whole(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    if i + 2 < b.len()
        && b[i] == b'0'
        && (b[i + 1] == b'x' || b[i + 1] == b'X')
        && b[i + 2].is_ascii_hexdigit()
    {
        i += 2;
    }
    let digits = &b[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let mut v: u128 = 0;
    for &d in digits {
        // At most 17 digits reach here (a half is at most 17 bytes): no u128 overflow.
        v = v * 16 + (d as char).to_digit(16).unwrap() as u128;
    }
    v <= u64::MAX as u128
}

/// The `scylla_key_id` bytes ScyllaDB writes for KMIP unique identifier `id`.
///
/// Refused: an empty id, and an id that ScyllaDB reads as a UUID but that is not in lower-case
/// 8-4-4-4-12 form (upper case, no dashes, `0x` halves, 33 digits...): ScyllaDB would store it
/// as 16 bytes and later ask the KMIP server for the canonical string, another id.
pub fn encode_kmip_id(id: &str) -> Result<Vec<u8>, Malformed> {
    if id.is_empty() {
        return Err(Malformed("KMIP key id is empty".into()));
    }
    if scylla_accepts_as_uuid(id) {
        if !is_canonical_uuid(id) {
            return Err(Malformed(format!(
                "KMIP key id {id:?} is read by ScyllaDB as a UUID (utils::UUID) but is not in \
                 lower-case 8-4-4-4-12 form: ScyllaDB would store 16 bytes and ask the KMIP server \
                 for a different string; refused"
            )));
        }
        let digits: Vec<u8> = id.bytes().filter(|&c| c != b'-').collect();
        let out = digits
            .chunks(2)
            .map(|p| {
                let hi = (p[0] as char).to_digit(16).unwrap() as u8;
                let lo = (p[1] as char).to_digit(16).unwrap() as u8;
                hi << 4 | lo
            })
            .collect();
        return Ok(out);
    }
    let mut out = id.as_bytes().to_vec();
    if out.len() == 15 {
        out.extend_from_slice(&[0, 2]);
    } else {
        out.push(1);
    }
    Ok(out)
}

/// The KMIP unique identifier a `scylla_key_id` names, as ScyllaDB asks the server for it.
///
/// Refused: empty bytes; a trailing count other than the two ScyllaDB writes (`01`, or `00 02`
/// after 15 bytes, 17 in all); an empty id; an id that is not UTF-8 (a KMIP Text String is).
pub fn decode_kmip_id(b: &[u8]) -> Result<String, Malformed> {
    if b.len() == 16 {
        let mut u = [0u8; 16];
        u.copy_from_slice(b);
        return Ok(uuid_to_string(&u));
    }
    let Some(&last) = b.last() else {
        return Err(Malformed("scylla_key_id is empty".into()));
    };
    let body = match last {
        1 => &b[..b.len() - 1],
        2 if b.len() == 17 && b[15] == 0 => &b[..15],
        _ => {
            return Err(Malformed(format!(
                "scylla_key_id {} ({} bytes) is neither a 16-byte UUID nor an id followed by the \
                 01 (or, after 15 bytes, 00 02) ScyllaDB's KMIP provider writes: it ends in {}",
                show(b),
                b.len(),
                hex(&b[b.len().saturating_sub(2)..])
            )))
        }
    };
    if body.is_empty() {
        return Err(Malformed(format!(
            "scylla_key_id {} names an empty KMIP id",
            hex(b)
        )));
    }
    String::from_utf8(body.to_vec()).map_err(|_| {
        Malformed(format!(
            "scylla_key_id {}: the KMIP id is not UTF-8 text",
            show(b)
        ))
    })
}

/// The UUID of a replicated provider's key id (`00` · UUID · MD5(UUID), 33 bytes), if `b` has
/// that shape; an all-zero UUID means that ScyllaDB fell back to the local `secret_key_file`.
/// Such SSTables are refused offline (their keys are in `system_replicated_keys`), so this only
/// lets a caller say why.
pub fn replicated_key_uuid(b: &[u8]) -> Option<[u8; 16]> {
    if b.len() != 33 || b[0] != 0 {
        return None;
    }
    let digest = Md5::digest(&b[1..17]);
    if digest.as_slice() != &b[17..33] {
        return None;
    }
    let mut u = [0u8; 16];
    u.copy_from_slice(&b[1..17]);
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANON: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CANON_BYTES: [u8; 16] = [
        0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1,
        0xf0,
    ];

    #[test]
    fn a_short_id_gets_a_trailing_01() {
        assert_eq!(encode_kmip_id("1").unwrap(), [0x31, 0x01]);
        assert_eq!(decode_kmip_id(&[0x31, 0x01]).unwrap(), "1");
        let id = "a-16-byte-key-id"; // 16 bytes: 17 stored, no ambiguity with a UUID
        let mut want = id.as_bytes().to_vec();
        want.push(1);
        assert_eq!(encode_kmip_id(id).unwrap(), want);
        assert_eq!(decode_kmip_id(&want).unwrap(), id);
    }

    #[test]
    fn a_15_byte_id_gets_00_02_so_that_16_bytes_always_mean_a_uuid() {
        let id = "fifteen-byte-id";
        assert_eq!(id.len(), 15);
        let enc = encode_kmip_id(id).unwrap();
        let mut want = id.as_bytes().to_vec();
        want.extend_from_slice(&[0x00, 0x02]);
        assert_eq!(enc, want);
        assert_eq!(enc.len(), 17);
        assert_eq!(decode_kmip_id(&enc).unwrap(), id);
    }

    #[test]
    fn a_canonical_uuid_is_16_bytes_and_comes_back_the_same() {
        assert_eq!(encode_kmip_id(CANON).unwrap(), CANON_BYTES);
        assert_eq!(decode_kmip_id(&CANON_BYTES).unwrap(), CANON);
        // Any 16 bytes are a UUID when decoding.
        assert_eq!(
            decode_kmip_id(&[0xAB; 16]).unwrap(),
            "abababab-abab-abab-abab-abababababab"
        );
    }

    #[test]
    fn uuid_like_ids_not_in_canonical_form_are_refused() {
        for id in [
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",   // upper case
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",       // no dashes
            "0f1e2d3c4b5a6978-8796a5b4c3d2e1f0",      // dashes elsewhere
            "0x1e2d3c4b5a69780x96a5b4c3d2e1f0",       // 0x halves
            "0f1e2d3c4b5a6978087968a5b4c3d2e1f",      // 33 digits, second half below 2^64
            " f1e2d3c4b5a69788796a5b4c3d2e1f0",       // leading white space
            "+f1e2d3c4b5a6978+796a5b4c3d2e1f0",       // signs
            "--0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", // extra dashes are removed
        ] {
            assert!(scylla_accepts_as_uuid(id), "{id}");
            let e = encode_kmip_id(id).unwrap_err();
            assert!(e.contains("8-4-4-4-12"), "{id}: {e}");
        }
    }

    #[test]
    fn ids_scylla_does_not_read_as_uuids_are_kept_as_text() {
        for id in [
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0a", // 33 digits, second half >= 2^64
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", // 31 digits
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0g", // not hex
            "0x",
            "0f1e2d3c4b5a69780x", // "0x" with no digit after it
            "g0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "0f1e2d3c 4b5a69788796a5b4c3d2e1f0", // white space not at the start of a half
            "key-1",
        ] {
            assert!(!scylla_accepts_as_uuid(id), "{id}");
            let enc = encode_kmip_id(id).unwrap();
            let mut want = id.as_bytes().to_vec();
            if id.len() == 15 {
                want.push(0);
                want.push(2);
            } else {
                want.push(1);
            }
            assert_eq!(enc, want, "{id}");
            assert_eq!(decode_kmip_id(&enc).unwrap(), id);
        }
    }

    #[test]
    fn stoull_rules() {
        assert!(stoull16_whole(b"ffffffffffffffff"));
        assert!(stoull16_whole(b"0ffffffffffffffff")); // 17 digits, below 2^64
        assert!(!stoull16_whole(b"10000000000000000")); // 2^64: out_of_range
        assert!(stoull16_whole(b" \t+0x1"));
        assert!(!stoull16_whole(b"0x"));
        assert!(!stoull16_whole(b"+"));
        assert!(!stoull16_whole(b"1 "));
        assert!(!stoull16_whole(b""));
    }

    #[test]
    fn decode_refuses_what_no_writer_produces() {
        let e = decode_kmip_id(&[]).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = decode_kmip_id(&[0x01]).unwrap_err();
        assert!(e.contains("empty KMIP id"), "{e}");
        for bad in [
            &[0x31, 0x00][..],
            &[0x31, 0x03],
            &[0x31, 0x32, 0x02], // 02 only after 15 bytes and a 00
            &[0x31; 17],         // ends in 0x31
        ] {
            let e = decode_kmip_id(bad).unwrap_err();
            assert!(e.contains("neither a 16-byte UUID"), "{bad:?}: {e}");
        }
        let mut not_zero = b"fifteen-byte-id".to_vec();
        not_zero.extend_from_slice(&[0x07, 0x02]);
        assert!(decode_kmip_id(&not_zero).is_err());
        let e = decode_kmip_id(&[0xff, 0xfe, 0x01]).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn the_replicated_shape_is_recognised() {
        let mut id = vec![0u8];
        id.extend_from_slice(&CANON_BYTES);
        // MD5(0f1e2d3c4b5a69788796a5b4c3d2e1f0), computed with Python's hashlib.
        id.extend_from_slice(&[
            0xd7, 0x9d, 0x4b, 0x62, 0x79, 0x7c, 0x66, 0x0e, 0xe5, 0x3b, 0x91, 0x00, 0x1a, 0xb3,
            0x1a, 0xdc,
        ]);
        assert_eq!(replicated_key_uuid(&id), Some(CANON_BYTES));
        let mut bad = id.clone();
        bad[32] ^= 1;
        assert_eq!(replicated_key_uuid(&bad), None);
        bad = id.clone();
        bad[0] = 1;
        assert_eq!(replicated_key_uuid(&bad), None);
        assert_eq!(replicated_key_uuid(&id[..32]), None);
    }
}
