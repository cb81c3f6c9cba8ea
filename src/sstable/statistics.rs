//! Statistics.db container (FORMAT.md 2.6): BIG `na`+ and every BTI version checksum it:
//! `i32 count | CRC1 | (i32 type, i32 offset) x count | CRC2 | component | CRC | ...`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::util::BeReader;

/// Component types: VALIDATION 0, COMPACTION 1, STATS 2, HEADER 3 (and a few more in newer versions).
const MAX_COMPONENTS: i32 = 64;

/// Splits a checksummed Statistics.db into (type, component bytes), checking all three kinds of CRC.
pub fn split(buf: &[u8], path: &Path) -> Result<Vec<(i32, Vec<u8>)>> {
    let bad = |msg: String| Error::corrupt(path, msg);
    let mut r = BeReader::new(buf);
    let count = r.i32().map_err(|m| bad(m.into()))?;
    if !(1..=MAX_COMPONENTS).contains(&count) {
        return Err(bad(format!("component count {count} out of range")));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&count.to_be_bytes());
    let crc1 = r.u32().map_err(|m| bad(m.into()))?;
    if crc1 != crc.clone().finalize() {
        return Err(bad("CRC of the component count mismatches".into()));
    }
    let mut toc = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let t = r.i32().map_err(|m| bad(m.into()))?;
        let o = r.i32().map_err(|m| bad(m.into()))?;
        crc.update(&t.to_be_bytes());
        crc.update(&o.to_be_bytes());
        toc.push((t, o));
    }
    let crc2 = r.u32().map_err(|m| bad(m.into()))?;
    if crc2 != crc.finalize() {
        return Err(bad("CRC of the table of contents mismatches".into()));
    }
    let mut out = Vec::with_capacity(toc.len());
    let mut pos = r.pos();
    for (i, &(t, off)) in toc.iter().enumerate() {
        let end = match toc.get(i + 1) {
            Some(&(_, next)) => next as i64,
            None => buf.len() as i64,
        };
        let off = off as i64;
        if off != pos as i64 || end < off + 4 || end > buf.len() as i64 {
            return Err(bad(format!(
                "component {t} bounds {off}..{end} out of range in a {}-byte file",
                buf.len()
            )));
        }
        let body = &buf[off as usize..end as usize - 4];
        let stored = u32::from_be_bytes(buf[end as usize - 4..end as usize].try_into().unwrap());
        if stored != crc32fast::hash(body) {
            return Err(bad(format!("CRC of component {t} mismatches")));
        }
        out.push((t, body.to_vec()));
        pos = end as usize;
    }
    Ok(out)
}

/// The inverse of [`split`]: offsets follow the component sizes; all CRCs recomputed.
pub fn join(components: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let count = components.len() as i32;
    let mut out = Vec::new();
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(&count.to_be_bytes()).to_be_bytes());
    let mut pos = 4 + 4 + 8 * components.len() + 4;
    let toc_start = out.len();
    for (t, body) in components {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&(pos as i32).to_be_bytes());
        pos += body.len() + 4;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&count.to_be_bytes());
    crc.update(&out[toc_start..]);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    for (_, body) in components {
        out.extend_from_slice(body);
        out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_then_split_round_trips_and_detects_a_bad_toc_crc() {
        let comps = vec![(0, b"validation".to_vec()), (1, vec![]), (2, vec![7; 100])];
        let mut buf = join(&comps);
        assert_eq!(split(&buf, Path::new("s")).unwrap(), comps);
        buf[12] ^= 1; // an offset byte in the table of contents
        let e = split(&buf, Path::new("s")).unwrap_err().to_string();
        assert!(e.contains("table of contents"), "{e}");
    }
}
