//! Before anything is written: is every old key the right one? Chunks under each old key are
//! decrypted and checked until that key has enough evidence, summed over the run; an SSTable whose
//! key fails, or never gathers enough, is refused.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use crate::crypto::envelope::Stage;
use crate::crypto::{AesKey, ChunkClass};
use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::rekey::plan::{raw_last_chunk_hint, Job, Loaded, RAW};
use crate::rekey::report::SstableReport;
use crate::rekey::rewrite::{ChunkOpener, Framed};
use crate::sstable::data::read_at;
use zeroize::Zeroizing;

/// Bits of evidence a wrong key must beat before an old key is trusted with data. A wrong key
/// passes a PKCS#5 check of p padding bytes with probability ~2^-8p, and the chained classes add a
/// 32-bit inner length prefix (and LZ4 another). A short Encryptor chunk with one padding byte is
/// only 8 bits: alone it lets one wrong key in 256 through, and the rewrite would turn the data
/// into garbage. Evidence adds up over every chunk, and every SSTable, under the same key in a
/// run; 32 bits (a wrong key accepted once in ~4 billion) refuses only lone tiny Encryptor
/// SSTables whose one chunk has under four padding bytes.
pub const KEY_EVIDENCE_BITS: u32 = 32;

/// Decrypts and checks chunks under each old key of an SSTable until that key has
/// [`KEY_EVIDENCE_BITS`] bits of evidence (or the chunks run out), and a suspicious last chunk
/// (FORMAT.md 2.5). Returns the evidence gathered per key index. A failing chunk is a wrong key.
fn trial_decrypt(
    l: &Loaded,
    keys: &[Option<Arc<AesKey>>],
    target_idx: Option<u32>,
    known: &HashMap<KeyId, u32>,
) -> Result<Vec<u32>> {
    let path = l.found.desc.data_path();
    let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    let key_names: Vec<String> = l.keys.iter().map(|k| k.to_string()).collect();
    let opener = ChunkOpener::of(l, &path, &key_names);
    let mut bits = vec![0u32; l.keys.len()];
    let structure_bits = match l.envelope.class {
        ChunkClass::Encryptor => 0,
        ChunkClass::Chained(Stage::Lz4) => 64,
        ChunkClass::Chained(_) => 32,
    };
    // What earlier SSTables proved, per key index (one lookup per key, not per chunk).
    let known: Vec<u32> = l
        .keys
        .iter()
        .map(|k| known.get(k).copied().unwrap_or(0))
        .collect();
    let last = l.chunks.len() - 1;
    let suspicious_last = l.chunks[last].key != RAW
        && !raw_last_chunk_hint(&l.ci, last, l.chunks[last].len as u64).is_empty();
    for (i, c) in l.chunks.iter().enumerate() {
        if c.key == RAW || Some(c.key) == target_idx {
            continue;
        }
        let k = c.key as usize;
        let enough = bits[k] + known[k] >= KEY_EVIDENCE_BITS;
        if enough && !(suspicious_last && i == last) {
            continue;
        }
        let Some(key) = keys[k].as_ref() else {
            continue;
        };
        let mut framed = vec![0u8; c.len as usize + 4];
        read_at(&f, &path, l.ci.offsets[i], &mut framed)?;
        let mut plain = Zeroizing::new(Vec::new());
        let payload_len = match opener.frame(i, &framed)? {
            Framed::Sealed { key: k, opened } => {
                opener.decrypt(i, k, &opened, key, &mut plain)?.len()
            }
            Framed::Raw => continue,
        };
        let pad = 16 - (payload_len % 16) as u32;
        bits[k] += 8 * pad + structure_bits;
    }
    Ok(bits)
}

/// Trial-decrypts every job (in order, evidence adding up across them), then keeps the jobs whose
/// every old key has [`KEY_EVIDENCE_BITS`] bits; the others are returned failed.
pub fn confirm(jobs: Vec<Job>) -> (Vec<Job>, Vec<SstableReport>) {
    let mut evidence: HashMap<KeyId, u32> = HashMap::new();
    let mut tried = Vec::with_capacity(jobs.len());
    let mut refused = Vec::new();
    for mut j in jobs {
        // A wrong old key fails here, on one chunk per key, before anything is written.
        match trial_decrypt(&j.loaded, &j.keys, j.target_idx, &evidence) {
            Ok(bits) => {
                for (k, b) in bits.into_iter().enumerate() {
                    *evidence.entry(j.loaded.keys[k].clone()).or_default() += b;
                }
                tried.push(j);
            }
            Err(e) => {
                j.report.fail(&e);
                refused.push(j.report);
            }
        }
    }
    // An old key whose chunks all together give too little evidence is not trusted with data.
    let (confirmed, weak): (Vec<Job>, Vec<Job>) = tried.into_iter().partition(|j| {
        let l = &j.loaded;
        let used = l.per_key_index(l.chunks.iter().filter(|c| c.key != RAW).map(|c| c.key));
        used.iter().enumerate().all(|(k, &n)| {
            n == 0
                || Some(k as u32) == j.target_idx
                || evidence.get(&l.keys[k]).copied().unwrap_or(0) >= KEY_EVIDENCE_BITS
        })
    });
    for mut j in weak {
        let e = Error::WrongKey {
            path: j.loaded.found.desc.data_path(),
            what: "its chunks".into(),
            key: j.loaded.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            msg: format!(
                "they decrypt, but give fewer than {KEY_EVIDENCE_BITS} bits of evidence that the key is right (short chunks with little padding); refusing rather than risk rewriting garbage. Rekey this table together with larger SSTables under the same key"
            ),
        };
        j.report.fail(&e);
        refused.push(j.report);
    }
    (confirmed, refused)
}
