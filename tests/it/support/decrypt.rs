//! The independent decryptor: CompressionInfo.db options (FORMAT.md 1.2), the tests' keys, and
//! the opening of every encrypted record of an SSTable (the `cbc` crate for CBC, the `aes` block
//! cipher for ECB, `lz4_flex`), to the plaintext digest MANIFEST.json holds. It calls nothing of
//! the crate.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use aes::cipher::{BlockCipherDecrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use sha2::{Digest, Sha256};

use super::{b64, hex, sha256, PAGE, USABLE};

// ------------------------------------------------------------------ CompressionInfo.db (FORMAT.md 1.2)

#[derive(Debug, Clone, PartialEq)]
pub struct Ci {
    pub class: String,
    pub options: Vec<(String, String)>,
    pub chunk_length: u32,
    pub max: Option<i32>,
    pub data_length: u64,
    pub offsets: Vec<u64>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.pos + n > self.b.len() {
            return Err(format!("truncated: {n} bytes wanted at {}", self.pos));
        }
        self.pos += n;
        Ok(&self.b[self.pos - n..self.pos])
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn utf(&mut self) -> Result<String, String> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "not UTF-8".to_string())
    }
}

/// (version, format) of a component file name such as `nb-1-big-Data.db`.
pub fn name_parts(path: &Path) -> (String, String) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let mut p = name.splitn(4, '-');
    let v = p.next().unwrap().to_string();
    p.next();
    (v, p.next().unwrap_or("").to_string())
}

/// maxCompressedLength is stored for BIG `na`+ and every BTI version (decided per format).
pub fn has_max(path: &Path) -> bool {
    let (v, f) = name_parts(path);
    f == "bti" || v.as_str() >= "na"
}

impl Ci {
    pub fn option(&self, k: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn plain_len(&self, i: usize) -> usize {
        (self
            .data_length
            .saturating_sub(i as u64 * self.chunk_length as u64))
        .min(self.chunk_length as u64) as usize
    }

    pub fn parse(b: &[u8], with_max: bool) -> Result<Ci, String> {
        let mut c = Cursor { b, pos: 0 };
        let class = c.utf()?;
        let n = c.i32()?;
        let mut options = Vec::new();
        for _ in 0..n {
            let k = c.utf()?;
            let v = c.utf()?;
            options.push((k, v));
        }
        let chunk_length = c.i32()? as u32;
        let max = if with_max { Some(c.i32()?) } else { None };
        let data_length = c.i64()? as u64;
        let count = c.i32()?;
        let mut offsets = Vec::new();
        for _ in 0..count {
            offsets.push(c.i64()? as u64);
        }
        if c.pos != b.len() {
            return Err(format!("{} trailing bytes", b.len() - c.pos));
        }
        Ok(Ci {
            class,
            options,
            chunk_length,
            max,
            data_length,
            offsets,
        })
    }

    pub fn read(path: &Path) -> Result<Ci, String> {
        let b = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ci::parse(&b, has_max(path)).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let utf = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        utf(&mut out, &self.class);
        out.extend_from_slice(&(self.options.len() as i32).to_be_bytes());
        for (k, v) in &self.options {
            utf(&mut out, k);
            utf(&mut out, v);
        }
        out.extend_from_slice(&(self.chunk_length as i32).to_be_bytes());
        if let Some(m) = self.max {
            out.extend_from_slice(&m.to_be_bytes());
        }
        out.extend_from_slice(&(self.data_length as i64).to_be_bytes());
        out.extend_from_slice(&(self.offsets.len() as i32).to_be_bytes());
        for o in &self.offsets {
            out.extend_from_slice(&(*o as i64).to_be_bytes());
        }
        out
    }
}

// ------------------------------------------------------------------ keys

/// Key material the decryptor may use: a keyring (KMIP ids, replicated UUIDs), one key file, or
/// one key forced for every record (to prove that the old key no longer opens anything).
#[derive(Default, Clone)]
pub struct Keys {
    pub ring: HashMap<String, Vec<u8>>,
    pub file: HashMap<(String, u32), Vec<u8>>,
    pub force: Option<Vec<u8>>,
}

impl Keys {
    pub fn keyring(path: &Path) -> Keys {
        let mut k = Keys::default();
        k.add_keyring(path);
        k
    }

    pub fn key_file(path: &Path) -> Keys {
        let mut k = Keys::default();
        k.add_key_file(path);
        k
    }

    pub fn both(ring: &Path, file: &Path) -> Keys {
        let mut k = Keys::keyring(ring);
        k.add_key_file(file);
        k
    }

    pub fn forced(key: Vec<u8>) -> Keys {
        Keys {
            force: Some(key),
            ..Keys::default()
        }
    }

    /// The keys of testdata/ (or a copy at `root`) whose names start with `which` ("old", "new"):
    /// the keyring's `<which>-*` ids and `keys/<which>.key`.
    pub fn testdata(root: &Path, which: &str) -> Keys {
        let mut k = Keys::key_file(&root.join(format!("keys/{which}.key")));
        k.add_keyring(&root.join("keys/keyring"));
        k.ring.retain(|id, _| id.starts_with(&format!("{which}-")));
        k
    }

    pub fn add_keyring(&mut self, path: &Path) {
        for line in fs::read_to_string(path).unwrap().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, key) = line.rsplit_once(':').unwrap();
            self.ring.insert(id.to_string(), b64(key));
        }
    }

    pub fn add_key_file(&mut self, path: &Path) {
        for line in fs::read_to_string(path).unwrap().lines() {
            let f: Vec<&str> = line.trim().split(':').collect();
            self.file
                .insert((f[0].to_string(), f[1].parse().unwrap()), b64(f[2]));
        }
    }

    /// `name`: "kmip://<group>/<id>", "kmip:<id>" (a table naming no group), "replicated:<uuid>"
    /// or "local". The keyring is by id, as chunk headers name keys.
    pub fn get(&self, name: &str, cipher: &str, bits: u32) -> Option<Vec<u8>> {
        if let Some(k) = &self.force {
            return Some(k.clone());
        }
        if name == "local" {
            return self.file.get(&(cipher.to_string(), bits)).cloned();
        }
        let id = match name.strip_prefix("kmip://") {
            Some(rest) => rest.split_once('/').map(|(_, id)| id).unwrap_or(rest),
            None => name.split_once(':').map(|(_, id)| id).unwrap_or(name),
        };
        self.ring.get(id).cloned()
    }
}

// ------------------------------------------------------------------ the independent decryptor

pub fn aes_cbc_decrypt(key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::block_padding::Pkcs7;
    if iv.len() != 16 {
        return Err(format!("{}-byte IV", iv.len()));
    }
    let r = match key.len() {
        16 => cbc::Decryptor::<Aes128>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct),
        24 => cbc::Decryptor::<Aes192>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct),
        32 => cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
            .unwrap()
            .decrypt_padded_vec::<Pkcs7>(ct),
        n => return Err(format!("{n}-byte key")),
    };
    r.map_err(|_| "bad padding (CBC)".to_string())
}

pub fn aes_ecb_decrypt(key: &[u8], ct: &[u8]) -> Result<Vec<u8>, String> {
    if ct.is_empty() || !ct.len().is_multiple_of(16) {
        return Err(format!("ciphertext of {} bytes", ct.len()));
    }
    let mut out = Vec::with_capacity(ct.len());
    for c in ct.chunks(16) {
        let mut b = aes::Block::try_from(c).unwrap();
        match key.len() {
            16 => Aes128::new_from_slice(key).unwrap().decrypt_block(&mut b),
            24 => Aes192::new_from_slice(key).unwrap().decrypt_block(&mut b),
            32 => Aes256::new_from_slice(key).unwrap().decrypt_block(&mut b),
            n => return Err(format!("{n}-byte key")),
        }
        out.extend_from_slice(&b);
    }
    let pad = *out.last().unwrap() as usize;
    if !(1..=16).contains(&pad) || !out[out.len() - pad..].iter().all(|&x| x as usize == pad) {
        return Err("bad padding (ECB)".into());
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// What a table's CompressionInfo options say about its records.
#[derive(Debug, Clone)]
pub struct TableCipher {
    pub provider: String,
    pub cbc: bool,
    pub cipher: String,
    pub bits: u32,
    pub chained: bool,
    /// The KMIP group (`kmip_host`): with the id in a record's header, the key's identity.
    pub kmip_host: Option<String>,
}

impl TableCipher {
    pub fn of(ci: &Ci) -> Result<TableCipher, String> {
        let cipher = ci
            .option("cipher_algorithm")
            .unwrap_or("AES/CBC/PKCS5Padding")
            .to_string();
        Ok(TableCipher {
            provider: ci
                .option("key_provider")
                .unwrap_or("")
                .rsplit('.')
                .next()
                .unwrap()
                .to_string(),
            cbc: match cipher.as_str() {
                "AES/CBC/PKCS5Padding" => true,
                "AES/ECB/PKCS5Padding" => false,
                c => return Err(format!("cipher {c}")),
            },
            bits: ci
                .option("secret_key_strength")
                .unwrap_or("128")
                .parse()
                .map_err(|_| "strength".to_string())?,
            chained: match ci.class.rsplit('.').next().unwrap() {
                "Encryptor" => false,
                "EncryptingLZ4Compressor" => true,
                c => return Err(format!("class {c}")),
            },
            kmip_host: ci.option("kmip_host").map(str::to_string),
            cipher,
        })
    }

    /// maxBytesInPage (FORMAT.md 2.6): header bound (KMIP 5 + 256, local 0) + IV + padded(n) <= 4088.
    pub fn max_bytes_in_page(&self) -> usize {
        let bound = match self.provider.as_str() {
            "KmipKeyProviderFactory" => 261,
            "LocalFileSystemKeyProviderFactory" => 0,
            _ => 33,
        };
        let iv = if self.cbc { 16 } else { 0 };
        (USABLE - bound - iv) / 16 * 16 - 1
    }
}

/// One opened record `H || IV || E(x)`.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where: "Data.db chunk 3", "Rows.db page 1", "Statistics.db component 2".
    pub what: String,
    /// "kmip://<kmip_host>/<id>" ("kmip:<id>" when the table names no group), "replicated:<uuid>"
    /// or "local".
    pub key: String,
    pub iv: Vec<u8>,
    pub ct: Vec<u8>,
    pub plain: Vec<u8>,
}

/// The name a record's own header gives its key: "kmip:<id>" for "kmip://<group>/<id>" (the
/// group comes from the table's options, not from the record), other names unchanged.
pub fn header_name(key: &str) -> String {
    match key.strip_prefix("kmip://") {
        Some(rest) => format!("kmip:{}", rest.split_once('/').map_or(rest, |(_, id)| id)),
        None => key.to_string(),
    }
}

pub fn decrypt_with(t: &TableCipher, key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, String> {
    if t.cbc {
        aes_cbc_decrypt(key, iv, ct)
    } else {
        aes_ecb_decrypt(key, ct)
    }
}

/// The key header of `blob` (FORMAT.md 2.2): (key name, header length).
fn key_header(t: &TableCipher, blob: &[u8], what: &str) -> Result<(String, usize), String> {
    match t.provider.as_str() {
        "KmipKeyProviderFactory" => {
            if blob.len() < 5 || blob[0] != 0 {
                return Err(format!("{what}: bad KMIP key header"));
            }
            let n = i32::from_be_bytes(blob[1..5].try_into().unwrap());
            if n < 0 || 5 + n as usize > blob.len() {
                return Err(format!("{what}: KMIP id length {n}"));
            }
            let n = n as usize;
            let id = String::from_utf8_lossy(&blob[5..5 + n]);
            // The header names the id; the table's kmip_host names the group (FORMAT.md 2.1).
            let name = match &t.kmip_host {
                Some(g) => format!("kmip://{g}/{id}"),
                None => format!("kmip:{id}"),
            };
            Ok((name, 5 + n))
        }
        "LocalFileSystemKeyProviderFactory" => Ok(("local".to_string(), 0)),
        "ReplicatedKeyProviderFactory" | "" => {
            let valid = blob.len() >= 33
                && blob[0] == 0
                && md5::Md5::digest(&blob[1..17])[..] == blob[17..33];
            if valid {
                let h = hex(&blob[1..17]);
                let (a, b, c, d, e) = (&h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
                Ok((format!("replicated:{a}-{b}-{c}-{d}-{e}"), 33))
            } else {
                // No valid header: DSE wrote it with the local key (FORMAT.md 2.2).
                Ok(("local".to_string(), 0))
            }
        }
        p => Err(format!("provider {p}")),
    }
}

pub fn open_record(
    t: &TableCipher,
    keys: &Keys,
    what: String,
    blob: &[u8],
) -> Result<Record, String> {
    let (key, hlen) = key_header(t, blob, &what)?;
    let ivlen = if t.cbc { 16 } else { 0 };
    if blob.len() < hlen + ivlen {
        return Err(format!("{what}: too short for its IV"));
    }
    let (iv, ct) = blob[hlen..].split_at(ivlen);
    let k = keys
        .get(&key, &t.cipher, t.bits)
        .ok_or_else(|| format!("{what}: no key for {key}"))?;
    let plain = decrypt_with(t, &k, iv, ct).map_err(|e| format!("{what} ({key}): {e}"))?;
    Ok(Record {
        what,
        key,
        iv: iv.to_vec(),
        ct: ct.to_vec(),
        plain,
    })
}

/// An SSTable decrypted.
#[derive(Debug)]
pub struct Opened {
    pub ci: Ci,
    pub cipher: TableCipher,
    /// SHA-256 of the Data.db plaintext.
    pub sha256: String,
    /// Per chunk: the key name, or "raw".
    pub chunk_keys: Vec<String>,
    pub raw: usize,
    /// Encrypted BTI indexes only: the key of every page (Partitions.db, then Rows.db), the plain
    /// length of each page per index file, the key and the type of every Statistics.db component.
    pub page_keys: Vec<String>,
    pub page_plain: BTreeMap<String, Vec<usize>>,
    pub meta_keys: Vec<String>,
    pub meta_types: Vec<i32>,
    /// As MANIFEST.json's `metadata_sha256` (encrypted BTI indexes only).
    pub metadata_sha256: BTreeMap<String, String>,
    /// Every encrypted record: chunks, pages, metadata components.
    pub records: Vec<Record>,
}

impl Opened {
    fn new(ci: Ci, cipher: TableCipher) -> Opened {
        Opened {
            ci,
            cipher,
            sha256: String::new(),
            chunk_keys: Vec::new(),
            raw: 0,
            page_keys: Vec::new(),
            page_plain: BTreeMap::new(),
            meta_keys: Vec::new(),
            meta_types: Vec::new(),
            metadata_sha256: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    /// Every key the SSTable's records use.
    pub fn key_set(&self) -> BTreeSet<String> {
        self.chunk_keys
            .iter()
            .filter(|k| *k != "raw")
            .chain(&self.page_keys)
            .chain(&self.meta_keys)
            .cloned()
            .collect()
    }

    /// The same with every key named as its record's header names it (see [`header_name`]).
    pub fn by_header_names(mut self) -> Opened {
        for k in self
            .chunk_keys
            .iter_mut()
            .chain(&mut self.page_keys)
            .chain(&mut self.meta_keys)
        {
            *k = header_name(k);
        }
        self
    }
}

/// A page-encrypted index file (FORMAT.md 2.6).
fn open_pages(path: &Path, t: &TableCipher, keys: &Keys) -> Result<(Vec<u8>, Vec<Record>), String> {
    let buf = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The component name without the generation: records compare across generations.
    let name = path.file_name().unwrap().to_str().unwrap();
    let name = name.rsplit('-').next().unwrap();
    if buf.is_empty() || buf.len() % PAGE != 0 {
        return Err(format!("{name}: {} bytes, not whole pages", buf.len()));
    }
    let cap = t.max_bytes_in_page();
    let mut plain = Vec::new();
    let mut records = Vec::new();
    for (i, page) in buf.chunks(PAGE).enumerate() {
        let w = format!("{name} page {i}");
        if crc32fast::hash(&page[..PAGE - 4]).to_be_bytes() != page[PAGE - 4..] {
            return Err(format!("{w}: CRC mismatch"));
        }
        let l = i32::from_be_bytes(page[USABLE..USABLE + 4].try_into().unwrap());
        if l < 1 || l as usize > USABLE {
            return Err(format!("{w}: length {l}"));
        }
        let l = l as usize;
        if page[l..USABLE].iter().any(|&b| b != 0) {
            return Err(format!("{w}: padding not zero"));
        }
        let r = open_record(t, keys, w.clone(), &page[..l])?;
        if r.plain.len() > cap {
            return Err(format!("{w}: {} plain bytes > {cap}", r.plain.len()));
        }
        plain.extend_from_slice(&r.plain);
        records.push(r);
    }
    Ok((plain, records))
}

/// The checksummed Statistics.db container (FORMAT.md 2.6), every CRC checked: [(type, bytes)].
pub fn split_statistics(b: &[u8]) -> Result<Vec<(i32, Vec<u8>)>, String> {
    let i32_at = |o: usize| -> Result<i32, String> {
        b.get(o..o + 4)
            .map(|x| i32::from_be_bytes(x.try_into().unwrap()))
            .ok_or_else(|| format!("truncated at {o}"))
    };
    let count = i32_at(0)?;
    if !(1..=64).contains(&count) {
        return Err(format!("component count {count}"));
    }
    let count = count as usize;
    if i32_at(4)? as u32 != crc32fast::hash(&b[..4]) {
        return Err("CRC of the count".into());
    }
    let toc_end = 8 + 8 * count;
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..4]);
    h.update(b.get(8..toc_end).ok_or("truncated table of contents")?);
    if i32_at(toc_end)? as u32 != h.finalize() {
        return Err("CRC of the table of contents".into());
    }
    let mut out = Vec::new();
    let mut pos = toc_end + 4;
    for i in 0..count {
        let t = i32_at(8 + 8 * i)?;
        let off = i32_at(12 + 8 * i)? as usize;
        let end = if i + 1 < count {
            i32_at(12 + 8 * (i + 1))? as usize
        } else {
            b.len()
        };
        if off != pos || end < off + 4 || end > b.len() {
            return Err(format!("component {t} bounds {off}..{end}"));
        }
        let body = &b[off..end - 4];
        if crc32fast::hash(body).to_be_bytes() != b[end - 4..end] {
            return Err(format!("CRC of component {t}"));
        }
        out.push((t, body.to_vec()));
        pos = end;
    }
    Ok(out)
}

/// Where each chunk of a Data.db of `len` bytes starts and ends (its 4-byte CRC included), from
/// the offsets of its CompressionInfo.db.
pub fn chunk_bounds(offsets: &[u64], len: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    offsets.iter().enumerate().map(move |(i, &start)| {
        let end = offsets.get(i + 1).map_or(len, |&o| o as usize);
        (start as usize, end)
    })
}

/// Decrypts an SSTable from its Data.db path: every CRC, Digest.crc32, every chunk decrypted, its
/// structure checked (FORMAT.md 2.3) and decompressed; with `indexes_encrypted`, Partitions.db and
/// Rows.db page by page and every Statistics.db component too.
pub fn open_sstable(data: &Path, keys: &Keys, indexes_encrypted: bool) -> Result<Opened, String> {
    let name = data.file_name().unwrap().to_str().unwrap();
    let prefix = name.strip_suffix("Data.db").ok_or("not a Data.db")?;
    let comp = |c: &str| data.with_file_name(format!("{prefix}{c}"));
    let ci = Ci::read(&comp("CompressionInfo.db"))?;
    let t = TableCipher::of(&ci)?;
    let mut o = Opened::new(ci.clone(), t.clone());
    let bytes = fs::read(data).map_err(|e| e.to_string())?;
    if let Ok(d) = fs::read_to_string(comp("Digest.crc32")) {
        if d != crc32fast::hash(&bytes).to_string() {
            return Err(format!(
                "Digest.crc32 says {d}, Data.db has {}",
                crc32fast::hash(&bytes)
            ));
        }
    }
    let mut sha = Sha256::new();
    for (i, (start, end)) in chunk_bounds(&ci.offsets, bytes.len()).enumerate() {
        if end < start + 4 || end > bytes.len() {
            return Err(format!("chunk {i}: bounds {start}..{end}"));
        }
        let chunk = &bytes[start..end - 4];
        if crc32fast::hash(chunk).to_be_bytes() != bytes[end - 4..end] {
            return Err(format!("chunk {i}: CRC mismatch"));
        }
        let plain_len = ci.plain_len(i);
        if ci.max.is_some_and(|m| chunk.len() >= m as usize) {
            // Stored raw by the writer (FORMAT.md 2.5): plaintext, possibly zero-padded.
            if chunk.len() < plain_len || chunk[plain_len..].iter().any(|&b| b != 0) {
                return Err(format!("chunk {i}: raw chunk padding is not zero"));
            }
            sha.update(&chunk[..plain_len]);
            o.chunk_keys.push("raw".to_string());
            o.raw += 1;
            continue;
        }
        let (outer, body) = if t.chained {
            if chunk.len() < 4 {
                return Err(format!("chunk {i}: too short"));
            }
            (
                Some(i32::from_be_bytes(chunk[..4].try_into().unwrap())),
                &chunk[4..],
            )
        } else {
            (None, chunk)
        };
        let r = open_record(&t, keys, format!("Data.db chunk {i}"), body)?;
        let plain = if t.chained {
            let p = &r.plain;
            if outer != Some(p.len() as i32) || p.len() < 8 {
                return Err(format!(
                    "chunk {i}: outer length {outer:?} != decrypted {}",
                    p.len()
                ));
            }
            let inner = i32::from_be_bytes(p[..4].try_into().unwrap());
            let lz = u32::from_le_bytes(p[4..8].try_into().unwrap());
            if inner as usize != plain_len || lz as usize != plain_len {
                return Err(format!(
                    "chunk {i}: length prefixes {inner}/{lz}, expected {plain_len}"
                ));
            }
            lz4_flex::block::decompress(&p[8..], plain_len)
                .map_err(|e| format!("chunk {i}: LZ4: {e}"))?
        } else {
            r.plain.clone()
        };
        if plain.len() != plain_len {
            return Err(format!(
                "chunk {i}: {} plain bytes, expected {plain_len}",
                plain.len()
            ));
        }
        sha.update(&plain);
        o.chunk_keys.push(r.key.clone());
        o.records.push(r);
    }
    o.sha256 = hex(&sha.finalize());
    if indexes_encrypted {
        for c in ["Partitions.db", "Rows.db"] {
            let (plain, recs) = open_pages(&comp(c), &t, keys)?;
            o.metadata_sha256.insert(c.to_string(), sha256(&plain));
            o.page_plain
                .insert(c.to_string(), recs.iter().map(|r| r.plain.len()).collect());
            for r in recs {
                o.page_keys.push(r.key.clone());
                o.records.push(r);
            }
        }
        let stats = fs::read(comp("Statistics.db")).map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        for (ty, body) in split_statistics(&stats).map_err(|e| format!("Statistics.db: {e}"))? {
            let r = open_record(&t, keys, format!("Statistics.db component {ty}"), &body)?;
            h.update(ty.to_be_bytes());
            h.update((r.plain.len() as i32).to_be_bytes());
            h.update(&r.plain);
            o.meta_keys.push(r.key.clone());
            o.meta_types.push(ty);
            o.records.push(r);
        }
        o.metadata_sha256
            .insert("Statistics.db".into(), hex(&h.finalize()));
    }
    Ok(o)
}
