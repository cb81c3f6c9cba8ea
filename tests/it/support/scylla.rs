//! ScyllaDB's Scylla.db, read and rewritten from FORMAT.md 4.5–4.6 (not from the crate): enough to
//! point the relative `secret_key_file` of a copy of testdata/scylla/ at an absolute path (ScyllaDB
//! and the oracle take only absolute ones), and to read the options back.

use std::fs;
use std::path::Path;

/// One ExtensionAttributes pair (key, value), raw bytes.
pub type Attribute = (Vec<u8>, Vec<u8>);

/// Scylla.db: `u32 count, count x { u32 tag, u32 size, payload }`, big-endian, and a trailing
/// CRC32 of every preceding byte iff tag 12 (ComponentsDigests) is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaDb {
    pub entries: Vec<(u32, Vec<u8>)>,
    pub trailing_crc: bool,
}

struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.b.len() - self.pos {
            return Err(format!("truncated: {n} bytes wanted at {}", self.pos));
        }
        self.pos += n;
        Ok(&self.b[self.pos - n..self.pos])
    }

    fn be32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn le32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

fn put_str32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl ScyllaDb {
    pub fn parse(b: &[u8]) -> Result<ScyllaDb, String> {
        let mut c = Cur { b, pos: 0 };
        let n = c.be32()?;
        let mut entries = Vec::new();
        for _ in 0..n {
            let tag = c.be32()?;
            let size = c.be32()? as usize;
            if entries.iter().any(|(t, _)| *t == tag) {
                return Err(format!("tag {tag} twice"));
            }
            entries.push((tag, c.take(size)?.to_vec()));
        }
        let trailing_crc = entries.iter().any(|(t, _)| *t == 12);
        if trailing_crc {
            let body = c.pos;
            let crc = c.be32()?;
            if crc != crc32fast::hash(&b[..body]) {
                return Err("trailing CRC mismatch".into());
            }
        }
        if !c.done() {
            return Err(format!("{} bytes after the entries", b.len() - c.pos));
        }
        Ok(ScyllaDb {
            entries,
            trailing_crc,
        })
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut out = (self.entries.len() as u32).to_be_bytes().to_vec();
        for (tag, payload) in &self.entries {
            out.extend_from_slice(&tag.to_be_bytes());
            put_str32(&mut out, payload);
        }
        if self.trailing_crc {
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        out
    }

    pub fn read(path: &Path) -> ScyllaDb {
        ScyllaDb::parse(&fs::read(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The ExtensionAttributes (tag 3) pairs, in file order.
    /// The `secret_key_file` of the encryption options, if any.
    pub fn secret_key_file(&self) -> Option<String> {
        self.attributes()
            .into_iter()
            .find(|(k, _)| k.as_slice() == b"scylla_encryption_options")
            .and_then(|(_, v)| parse_le_map(&v).ok())
            .and_then(|m| {
                m.into_iter()
                    .find(|(k, _)| k == "secret_key_file")
                    .map(|(_, v)| v)
            })
    }

    pub fn attributes(&self) -> Vec<Attribute> {
        let Some((_, p)) = self.entries.iter().find(|(t, _)| *t == 3) else {
            return Vec::new();
        };
        parse_attributes(p).unwrap_or_else(|e| panic!("ExtensionAttributes: {e}"))
    }

    pub fn attribute(&self, key: &str) -> Option<Vec<u8>> {
        self.attributes()
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// `scylla_encryption_options`, in file order.
    pub fn options(&self) -> Vec<(String, String)> {
        let v = self
            .attribute("scylla_encryption_options")
            .expect("scylla_encryption_options");
        parse_le_map(&v).unwrap_or_else(|e| panic!("scylla_encryption_options: {e}"))
    }

    /// Replaces the attributes (tag 3), keeping every other entry where it is.
    pub fn set_attributes(&mut self, pairs: &[Attribute]) {
        let mut p = (pairs.len() as u32).to_be_bytes().to_vec();
        for (k, v) in pairs {
            put_str32(&mut p, k);
            put_str32(&mut p, v);
        }
        let e = self
            .entries
            .iter_mut()
            .find(|(t, _)| *t == 3)
            .expect("ExtensionAttributes");
        e.1 = p;
    }
}

/// map<str32, str32>: u32be n, then n x (u32be len, key, u32be len, value).
fn parse_attributes(b: &[u8]) -> Result<Vec<Attribute>, String> {
    let mut c = Cur { b, pos: 0 };
    let n = c.be32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let kl = c.be32()? as usize;
        let k = c.take(kl)?.to_vec();
        let vl = c.be32()? as usize;
        out.push((k, c.take(vl)?.to_vec()));
    }
    if !c.done() {
        return Err("bytes after the map".into());
    }
    Ok(out)
}

/// `scylla_encryption_options`: the IDL map<string, string>, little-endian.
fn parse_le_map(b: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut c = Cur { b, pos: 0 };
    let n = c.le32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let kl = c.le32()? as usize;
        let k = String::from_utf8(c.take(kl)?.to_vec()).map_err(|e| e.to_string())?;
        let vl = c.le32()? as usize;
        let v = String::from_utf8(c.take(vl)?.to_vec()).map_err(|e| e.to_string())?;
        out.push((k, v));
    }
    if !c.done() {
        return Err("bytes after the map".into());
    }
    Ok(out)
}

fn le_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Rewrites the `secret_key_file` option of the Scylla.db at `path` to `f(value)` where that is
/// `Some` (keeping the order of the options, of the attributes and of the entries, and the trailing
/// CRC rule). Returns whether the file changed.
pub fn set_secret_key_file(path: &Path, f: impl Fn(&str) -> Option<String>) -> bool {
    let mut sdb = ScyllaDb::read(path);
    let mut attrs = sdb.attributes();
    let mut changed = false;
    for (k, v) in attrs.iter_mut() {
        if k.as_slice() != b"scylla_encryption_options" {
            continue;
        }
        let mut opts = parse_le_map(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (ok, ov) in opts.iter_mut() {
            if ok == "secret_key_file" {
                if let Some(new) = f(ov) {
                    *ov = new;
                    changed = true;
                }
            }
        }
        *v = le_map(&opts);
    }
    if changed {
        sdb.set_attributes(&attrs);
        fs::write(path, sdb.serialize()).unwrap();
    }
    changed
}

/// Rewrites the Scylla.db at `path`: `edit` gets the encryption options and the attributes
/// (`scylla_encryption_options` excluded, as raw pairs) to change as it likes.
pub fn edit_scylla_db(
    path: &Path,
    edit: impl FnOnce(&mut Vec<(String, String)>, &mut Vec<Attribute>),
) {
    let mut sdb = ScyllaDb::read(path);
    let attrs = sdb.attributes();
    let key = b"scylla_encryption_options".to_vec();
    let mut opts = attrs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| parse_le_map(v).unwrap())
        .unwrap_or_default();
    let mut others: Vec<Attribute> = attrs.into_iter().filter(|(k, _)| *k != key).collect();
    edit(&mut opts, &mut others);
    let mut all = vec![(key, le_map(&opts))];
    all.extend(others);
    sdb.set_attributes(&all);
    fs::write(path, sdb.serialize()).unwrap();
}

// ------------------------------------------------------------------ ScyllaDB's startup rule

/// `<v>-<generation>-<format>-` of an SSTable file name (`me-3-big-Data.db` → `me-3-big-`).
pub fn scylla_prefix(name: &str) -> Option<String> {
    let mut parts = name.splitn(4, '-');
    let (v, g, f) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?;
    Some(format!("{v}-{g}-{f}-"))
}

/// ScyllaDB's startup over one table folder (FORMAT.md 4.9), written from the format, not from
/// the crate: a generation with a TOC.txt.tmp is deleted; one with a TOC.txt is loaded; one with
/// neither stops the node ("Refusing to boot"), as does a file whose name is no SSTable's. Returns
/// the live generations (their prefixes), or why the node would not start. Files named in `skip`
/// (another process's, which the caller judges itself) are left out.
pub fn scylla_boot_except(
    dir: &Path,
    skip: &std::collections::BTreeSet<String>,
) -> Result<std::collections::BTreeSet<String>, String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut gens: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        let name = e.file_name().into_string().unwrap();
        if skip.contains(&name) {
            continue;
        }
        let p = scylla_prefix(&name).ok_or(format!("{name}: not an SSTable name: no start"))?;
        gens.entry(p.clone())
            .or_default()
            .insert(name[p.len()..].to_string());
    }
    let mut live = BTreeSet::new();
    for (p, comps) in gens {
        if comps.contains("TOC.txt.tmp") {
            continue; // deleted at startup
        }
        if !comps.contains("TOC.txt") {
            return Err(format!("{p}: files without a TOC: \"Refusing to boot\""));
        }
        live.insert(p);
    }
    Ok(live)
}

/// [`scylla_boot_except`] with nothing left out.
pub fn scylla_boot(dir: &Path) -> Result<std::collections::BTreeSet<String>, String> {
    scylla_boot_except(dir, &Default::default())
}

/// The SSTableIdentifier (Scylla.db tag 10, which a rekey keeps) of generation `prefix` in `dir`.
pub fn scylla_identifier(dir: &Path, prefix: &str) -> Vec<u8> {
    let db = ScyllaDb::read(&dir.join(format!("{prefix}Scylla.db")));
    db.entries
        .iter()
        .find(|(t, _)| *t == 10)
        .map(|(_, p)| p.clone())
        .expect("tag 10")
}

/// The SSTableIdentifier bytes of a MANIFEST entry (its 8-4-4-4-12 form).
pub fn manifest_identifier(e: &serde_json::Value) -> Vec<u8> {
    let s = e["sstable_identifier"].as_str().unwrap().replace('-', "");
    (0..16)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// An offline keyring file (`<id>:<base64 key>` lines, `#` comments): id → key bytes.
pub fn read_keyring(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use base64::Engine;
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (id, k) = l.rsplit_once(':').unwrap();
            let k = base64::engine::general_purpose::STANDARD.decode(k).unwrap();
            (id.to_string(), k)
        })
        .collect()
}

// ------------------------------------------------------------------ writing ScyllaDB SSTables

/// A local-provider ScyllaDB key file line: `AES/CBC/PKCS5Padding:<bits>:<base64 key>`.
pub fn scylla_key_line(key: &[u8]) -> String {
    use base64::Engine;
    format!(
        "AES/CBC/PKCS5Padding:{}:{}\n",
        key.len() * 8,
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// A file's plaintext encrypted as ScyllaDB's file layer writes it (FORMAT.md 4.3), AES-CBC:
/// 4096-byte blocks, block n under IV_n = AES-256-ECB_{SHA-256(key)}(0^8 || u64le n), each block
/// its own CBC message, unpadded; the last block zero-filled, encrypted whole and the file cut to
/// L (L % 16 == 0) or L + 16 bytes. Written here from the format with the `aes` block cipher.
pub fn scylla_seal(plain: &[u8], key: &[u8]) -> Vec<u8> {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    use aes::{Aes128, Aes192, Aes256};
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 4096;
    if plain.is_empty() {
        return Vec::new();
    }
    let essiv = Aes256::new_from_slice(&Sha256::digest(key)).unwrap();
    let enc = |b: &mut aes::Block| match key.len() {
        16 => Aes128::new_from_slice(key).unwrap().encrypt_block(b),
        24 => Aes192::new_from_slice(key).unwrap().encrypt_block(b),
        32 => Aes256::new_from_slice(key).unwrap().encrypt_block(b),
        n => panic!("{n}-byte key"),
    };
    let mut out = plain.to_vec();
    out.resize(plain.len().div_ceil(BLOCK) * BLOCK, 0);
    for (n, block) in out.chunks_mut(BLOCK).enumerate() {
        let mut iv = [0u8; 16];
        iv[8..].copy_from_slice(&(n as u64).to_le_bytes());
        let mut prev = aes::Block::from(iv);
        essiv.encrypt_block(&mut prev);
        for c in block.chunks_mut(16) {
            let mut b = aes::Block::try_from(&*c).unwrap();
            for (x, p) in b.iter_mut().zip(prev.iter()) {
                *x ^= p;
            }
            enc(&mut b);
            c.copy_from_slice(&b);
            prev = b;
        }
    }
    let size = if plain.len().is_multiple_of(16) {
        plain.len()
    } else {
        plain.len() + 16
    };
    out.resize(size, 0);
    out
}

/// Writes a ScyllaDB `me` BIG SSTable `<dir>/me-<generation>-big-*` of about `data_len`
/// compressed Data.db bytes, as a 2025.1+ node with the local key provider would (FORMAT.md
/// 1.2, 4.1–4.6), written from the format: Data.db (LZ4 chunks of 64 KiB, each with its CRC32),
/// CompressionInfo.db, Digest.crc32 (CRC32 of Data.db) and Filter.db encrypted under `key`
/// (mask 0xA2), Scylla.db with the encryption attributes naming `key_file` and an
/// SSTableIdentifier (tag 10) drawn from `rng`, and TOC.txt. Returns the Data.db path and the
/// digest the ScyllaDB oracle reports as `plaintext_sha256_all`, computed here from the plaintexts:
/// SHA-256 over `name || 0x00 || SHA-256(plaintext)` of each component but TOC.txt and Scylla.db,
/// in name order.
pub fn write_scylla_sstable(
    dir: &Path,
    generation: u32,
    data_len: usize,
    key: &[u8],
    key_file: &Path,
    rng: &mut super::Rng,
) -> (std::path::PathBuf, String) {
    use sha2::{Digest, Sha256};
    const CHUNK: usize = 64 << 10;
    let prefix = format!("me-{generation}-big-");
    // Row-like text with random runs: compressible, but not to nothing.
    let mut data = Vec::with_capacity(data_len + CHUNK);
    let mut offsets = Vec::new();
    let mut plain_len = 0u64;
    let mut chunk = vec![0u8; CHUNK];
    while data.len() < data_len {
        rng.fill(&mut chunk);
        for (i, b) in chunk.iter_mut().enumerate() {
            if (i / 64) % 3 == 0 {
                *b = b"row-key|value|"[i % 14];
            }
        }
        offsets.push(data.len() as u64);
        let c = lz4_flex::block::compress_prepend_size(&chunk);
        data.extend_from_slice(&c);
        data.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
        plain_len += CHUNK as u64;
    }
    let mut ci = Vec::new();
    let class = b"org.apache.cassandra.io.compress.LZ4Compressor";
    ci.extend_from_slice(&(class.len() as u16).to_be_bytes());
    ci.extend_from_slice(class);
    ci.extend_from_slice(&0u32.to_be_bytes());
    ci.extend_from_slice(&(CHUNK as u32).to_be_bytes());
    ci.extend_from_slice(&plain_len.to_be_bytes());
    ci.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for o in &offsets {
        ci.extend_from_slice(&o.to_be_bytes());
    }
    let digest = crc32fast::hash(&data).to_string();
    let mut filter = vec![0u8; 4000 + rng.below(200) as usize];
    rng.fill(&mut filter);

    let opts: Vec<(String, String)> = [
        ("cipher_algorithm", "AES/CBC/PKCS5Padding".to_string()),
        (
            "key_provider",
            "LocalFileSystemKeyProviderFactory".to_string(),
        ),
        ("secret_key_file", key_file.display().to_string()),
        ("secret_key_strength", (key.len() * 8).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mask: u32 = 1 << 1 | 1 << 5 | 1 << 7; // CompressionInfo, Digest, Filter
    let mut id = vec![0u8; 16];
    rng.fill(&mut id);
    let mut sdb = ScyllaDb {
        entries: vec![(3, Vec::new()), (10, id)],
        trailing_crc: false,
    };
    sdb.set_attributes(&[
        (b"scylla_encryption_options".to_vec(), le_map(&opts)),
        (
            b"encrypted_components".to_vec(),
            mask.to_le_bytes().to_vec(),
        ),
    ]);

    let mut all = Sha256::new();
    for (name, plain) in [
        ("CompressionInfo.db", &ci[..]),
        ("Data.db", &data[..]),
        ("Digest.crc32", digest.as_bytes()),
        ("Filter.db", &filter[..]),
    ] {
        all.update(name.as_bytes());
        all.update([0u8]);
        all.update(Sha256::digest(plain));
    }
    let put = |c: &str, b: &[u8]| fs::write(dir.join(format!("{prefix}{c}")), b).unwrap();
    put("Data.db", &scylla_seal(&data, key));
    put("CompressionInfo.db", &scylla_seal(&ci, key));
    put("Digest.crc32", &scylla_seal(digest.as_bytes(), key));
    put("Filter.db", &scylla_seal(&filter, key));
    put("Scylla.db", &sdb.serialize());
    put(
        "TOC.txt",
        b"CompressionInfo.db\nData.db\nDigest.crc32\nFilter.db\nScylla.db\nTOC.txt\n",
    );
    (
        dir.join(format!("{prefix}Data.db")),
        super::hex(&all.finalize()),
    )
}
