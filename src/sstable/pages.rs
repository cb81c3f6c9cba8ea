//! Page-encrypted index files of DSE 6.8+/HCD BTI SSTables (FORMAT.md 2.6): `Partitions.db` and
//! `Rows.db` in 4096-byte pages, each `blob (L bytes) · zero padding to 4088 · i32be L · u32be
//! CRC32(bytes 0..4092)`. Positions stored in the index are physical, so pages never move.

use std::path::Path;

use crate::error::{Error, Result};

pub const PAGE: usize = 4096;
/// Bytes available to the encrypted blob: the page less its 8-byte footer.
pub const USABLE: usize = PAGE - 8;

/// The largest plaintext a page holds: the largest n with header bound + IV + padded(n) ≤ 4088.
pub fn max_bytes_in_page(header_bound: usize, iv_len: usize) -> usize {
    ((USABLE - header_bound - iv_len) / 16) * 16 - 1
}

/// Whether a page's footer CRC is valid (the detection rule for page-encrypted files).
pub fn crc_ok(page: &[u8]) -> bool {
    page.len() == PAGE
        && u32::from_be_bytes(page[PAGE - 4..].try_into().unwrap())
            == crc32fast::hash(&page[..PAGE - 4])
}

/// Checks one page (CRC, length field, zero padding) and returns its encrypted blob.
pub fn open_page<'a>(page: &'a [u8], index: usize, path: &Path) -> Result<&'a [u8]> {
    let bad = |msg: String| {
        Error::corrupt(
            path,
            format!("page {index} (offset {}): {msg}", index * PAGE),
        )
    };
    if page.len() != PAGE {
        return Err(bad(format!("{} bytes, not a whole page", page.len())));
    }
    if !crc_ok(page) {
        return Err(bad(
            "CRC32 mismatch; the file is corrupt: restore it from a backup".into(),
        ));
    }
    let l = i32::from_be_bytes(page[USABLE..USABLE + 4].try_into().unwrap());
    if l < 1 || l as usize > USABLE {
        return Err(bad(format!(
            "encrypted length {l} out of range 1..={USABLE}"
        )));
    }
    let l = l as usize;
    if page[l..USABLE].iter().any(|&b| b != 0) {
        return Err(bad(
            "non-zero bytes in the padding after the encrypted data".into(),
        ));
    }
    Ok(&page[..l])
}

/// Appends a whole page holding `blob` (at most [`USABLE`] bytes).
pub fn seal_page(blob: &[u8], out: &mut Vec<u8>) {
    assert!(
        !blob.is_empty() && blob.len() <= USABLE,
        "page blob of {} bytes",
        blob.len()
    );
    let start = out.len();
    out.extend_from_slice(blob);
    out.resize(start + USABLE, 0);
    out.extend_from_slice(&(blob.len() as i32).to_be_bytes());
    let crc = crc32fast::hash(&out[start..start + PAGE - 4]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_match_format_md() {
        // FORMAT.md 2.6 table: provider bound local 0, replicated 33, KMIP 261; CBC IV 16, ECB 0.
        assert_eq!(max_bytes_in_page(0, 16), 4063);
        assert_eq!(max_bytes_in_page(0, 0), 4079);
        assert_eq!(max_bytes_in_page(33, 16), 4031);
        assert_eq!(max_bytes_in_page(33, 0), 4047);
        assert_eq!(max_bytes_in_page(261, 16), 3807);
        assert_eq!(max_bytes_in_page(261, 0), 3823);
    }

    #[test]
    fn seal_then_open_and_the_checks() {
        let mut page = Vec::new();
        seal_page(&[5u8; 100], &mut page);
        assert_eq!(page.len(), PAGE);
        assert_eq!(
            open_page(&page, 0, Path::new("p")).unwrap(),
            &[5u8; 100][..]
        );
        let mut flipped = page.clone();
        flipped[10] ^= 1;
        assert!(open_page(&flipped, 0, Path::new("p"))
            .unwrap_err()
            .to_string()
            .contains("CRC"));
        for (l, pad) in [(0i32, false), (5000, false), (100, true)] {
            let mut p = page.clone();
            p[USABLE..USABLE + 4].copy_from_slice(&l.to_be_bytes());
            if pad {
                p[200] = 1;
            }
            let crc = crc32fast::hash(&p[..PAGE - 4]);
            p[PAGE - 4..].copy_from_slice(&crc.to_be_bytes());
            assert!(open_page(&p, 0, Path::new("p")).is_err(), "L={l} pad={pad}");
        }
    }
}
