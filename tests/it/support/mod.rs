//! Shared by the reliability and security harnesses (tests/crash.rs, faults.rs, secrets.rs,
//! hostile.rs) and by the test-data suites (tests/testdata_matrix.rs, bti_indexes.rs,
//! bad_input.rs): a scratch copy of testdata/ on a fast file system, the built binary, and an
//! independent decryptor (the `cbc` crate for CBC, the `aes` block cipher for ECB, `lz4_flex`)
//! judging every result against the plaintext digests of testdata/MANIFEST.json, never against
//! the tool's own opinion. It calls nothing of the crate.

pub mod alloc;
pub mod cassandra;
#[cfg(target_arch = "x86_64")]
pub mod inject;
pub mod oracle;
pub mod shim;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use aes::cipher::{BlockCipherDecrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use base64::Engine;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_sstable-rekey");
pub const UUID: &str = "6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a";
pub const PAGE: usize = 4096;
/// Bytes of an index page the encrypted blob may use (the page less `i32be L` and the CRC).
pub const USABLE: usize = PAGE - 8;

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .expect("base64")
}

pub fn ci_env() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Tests that crash the binary at a named step need it built with the `failpoints` feature
/// (tools/test.sh passes `--features failpoints`; a production build has no crash switch). Without
/// it they fail rather than pass unchecked.
pub fn require_failpoints() {
    assert!(
        sstable_rekey::rekey::failpoint::enabled(),
        "this test crashes the binary at named failpoints: build with `cargo test --features failpoints` (tools/test.sh does)"
    );
}

// ------------------------------------------------------------------ a seeded PRNG (splitmix64)

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for c in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A seed from the clock (or `var` when set), printed so that a failure can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s}: not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

// ------------------------------------------------------------------ MANIFEST.json

pub fn manifest() -> &'static Vec<Value> {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        let text =
            fs::read_to_string(testdata().join("MANIFEST.json")).expect("testdata/MANIFEST.json");
        let v: Value = serde_json::from_str(&text).expect("MANIFEST.json is JSON");
        v["sstables"].as_array().expect("sstables").clone()
    })
}

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

/// Key material the decryptor may use: a keyring (KMIP ids, replicated UUIDs) and one key file.
#[derive(Default, Clone)]
pub struct Keys {
    pub ring: HashMap<String, Vec<u8>>,
    pub file: HashMap<(String, u32), Vec<u8>>,
}

impl Keys {
    pub fn keyring(path: &Path) -> Keys {
        let mut k = Keys::default();
        k.add_keyring(path);
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
    /// "kmip://<kmip_host>/<id>" ("kmip:<id>" when the table names no group), "replicated:<uuid>"
    /// or "local".
    pub key: String,
    pub iv: Vec<u8>,
    pub plain: Vec<u8>,
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
    let plain = if t.cbc {
        aes_cbc_decrypt(&k, iv, ct)
    } else {
        aes_ecb_decrypt(&k, ct)
    }
    .map_err(|e| format!("{what} ({key}): {e}"))?;
    Ok(Record {
        key,
        iv: iv.to_vec(),
        plain,
    })
}

/// An SSTable decrypted.
#[derive(Debug, Default)]
pub struct Opened {
    pub sha256: String,
    /// Per chunk: the key name, or "raw".
    pub chunk_keys: Vec<String>,
    pub raw: usize,
    /// Keys of index pages and metadata components (encrypted BTI indexes only).
    pub index_keys: BTreeSet<String>,
    /// As MANIFEST.json's `metadata_sha256` (encrypted BTI indexes only).
    pub metadata_sha256: BTreeMap<String, String>,
    /// Every encrypted record: chunks, pages, metadata components.
    pub records: Vec<Record>,
}

impl Opened {
    pub fn key_set(&self) -> BTreeSet<String> {
        self.chunk_keys
            .iter()
            .filter(|k| *k != "raw")
            .cloned()
            .chain(self.index_keys.iter().cloned())
            .collect()
    }
}

/// A page-encrypted index file (FORMAT.md 2.6).
fn open_pages(path: &Path, t: &TableCipher, keys: &Keys) -> Result<(Vec<u8>, Vec<Record>), String> {
    let buf = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
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

/// Decrypts an SSTable from its Data.db path: every CRC, Digest.crc32, every chunk decrypted, its
/// structure checked (FORMAT.md 2.3) and decompressed; with `indexes_encrypted`, Partitions.db and
/// Rows.db page by page and every Statistics.db component too.
pub fn open_sstable(data: &Path, keys: &Keys, indexes_encrypted: bool) -> Result<Opened, String> {
    let name = data.file_name().unwrap().to_str().unwrap();
    let prefix = name.strip_suffix("Data.db").ok_or("not a Data.db")?;
    let comp = |c: &str| data.with_file_name(format!("{prefix}{c}"));
    let ci = Ci::read(&comp("CompressionInfo.db"))?;
    let t = TableCipher::of(&ci)?;
    let bytes = fs::read(data).map_err(|e| e.to_string())?;
    if let Ok(d) = fs::read_to_string(comp("Digest.crc32")) {
        if d != crc32fast::hash(&bytes).to_string() {
            return Err(format!(
                "Digest.crc32 says {d}, Data.db has {}",
                crc32fast::hash(&bytes)
            ));
        }
    }
    let mut o = Opened::default();
    let mut sha = Sha256::new();
    for i in 0..ci.offsets.len() {
        let start = ci.offsets[i] as usize;
        let end = ci
            .offsets
            .get(i + 1)
            .map(|&o| o as usize)
            .unwrap_or(bytes.len());
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
            for r in recs {
                o.index_keys.insert(r.key.clone());
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
            o.index_keys.insert(r.key.clone());
            o.records.push(r);
        }
        o.metadata_sha256
            .insert("Statistics.db".into(), hex(&h.finalize()));
    }
    Ok(o)
}

// ------------------------------------------------------------------ files

pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file (not folder) under `dir`, sorted; symlinks are listed, never followed.
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    v.sort_by_key(|e| e.path());
    for e in v {
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Every folder under `dir` (relative), sorted.
pub fn dirs(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.insert(e.path().strip_prefix(dir).unwrap().to_path_buf());
                stack.push(e.path());
            }
        }
    }
    out
}

/// Every file under `dir` → SHA-256 of its content (a file that cannot be read counts as empty).
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    tree_read_by(dir, |p| fs::read(p).unwrap_or_default())
}

/// As `tree`, but a file that cannot be read fails the test.
pub fn tree_strict(dir: &Path) -> BTreeMap<String, String> {
    tree_read_by(dir, |p| fs::read(p).unwrap())
}

fn tree_read_by(dir: &Path, read: impl Fn(&Path) -> Vec<u8>) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                sha256(&read(&p)),
            )
        })
        .collect()
}

pub fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => out.push(format!("changed {k}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("added {k}"));
        }
    }
    out
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder for scratch data on a fast file system: crash and kill tests run hundreds of rekeys
/// whose fsyncs would dominate on a disk. A process crash (not a power loss) leaves the same
/// state on tmpfs as on a disk. `/dev/shm` when writable; else, as root, a tmpfs mounted for it;
/// else the system temp folder (with a notice: slow).
pub struct FastDir {
    tmp: tempfile::TempDir,
    mounted: bool,
}

impl FastDir {
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for FastDir {
    fn drop(&mut self) {
        if self.mounted {
            let c = std::ffi::CString::new(self.tmp.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid path; a lazy unmount of our own mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Free bytes on the file system of `dir` (0 when unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

pub fn fast_tempdir() -> FastDir {
    let shm = Path::new("/dev/shm");
    // A container's /dev/shm may be 64 MiB: the harnesses need a few hundred MiB at peak.
    if shm.is_dir() && free_bytes(shm) >= 1 << 30 {
        if let Ok(tmp) = tempfile::Builder::new()
            .prefix("sstable-rekey-test")
            .tempdir_in(shm)
        {
            return FastDir {
                tmp,
                mounted: false,
            };
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = std::ffi::CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1g,mode=0700".as_ptr().cast(),
        )
    } == 0;
    if !mounted {
        eprintln!(
            "notice: no /dev/shm and no permission to mount a tmpfs: scratch data on {} (fsyncs make the crash tests slow)",
            tmp.path().display()
        );
    }
    FastDir { tmp, mounted }
}

/// Rewrites every relative `secret_key_file` option of the CompressionInfo.db files under `dir`
/// to `<tree_root>/<value>` (testdata/README.md: "Two things to do after copying").
pub fn absolute_key_files(dir: &Path, tree_root: &Path) {
    let mut files = Vec::new();
    walk(dir, &mut files);
    for f in files
        .iter()
        .filter(|f| f.to_str().unwrap().ends_with("-CompressionInfo.db"))
    {
        let mut ci = Ci::read(f).unwrap();
        let mut changed = false;
        for (k, v) in ci.options.iter_mut() {
            if k == "secret_key_file" && !v.starts_with('/') {
                *v = tree_root.join(&*v).display().to_string();
                changed = true;
            }
        }
        if changed {
            fs::write(f, ci.serialize()).unwrap();
        }
    }
}

// ------------------------------------------------------------------ the binary

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn run_in(cwd: &Path, args: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run sstable-rekey");
    use std::os::unix::process::ExitStatusExt;
    Run {
        code: o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ------------------------------------------------------------------ a data set of several tables

/// An SSTable of the pristine copy.
#[derive(Debug, Clone)]
pub struct Orig {
    /// Its folder, relative to the data dir.
    pub dir: PathBuf,
    /// `nb-1-big-`.
    pub prefix: String,
    /// Component → SHA-256 of the pristine file.
    pub files: BTreeMap<String, String>,
    /// SHA-256 of the plaintext of all chunks (MANIFEST.json's `plaintext_sha256`).
    pub sha256: String,
    pub raw_chunks: u64,
    pub indexes_encrypted: bool,
    /// MANIFEST.json's `metadata_sha256` (encrypted BTI indexes).
    pub metadata_sha256: BTreeMap<String, String>,
    pub live: bool,
}

impl Orig {
    pub fn data_rel(&self) -> PathBuf {
        self.dir.join(format!("{}Data.db", self.prefix))
    }
}

/// A pristine scratch data set: `<root>/data/<keyspace>/<table>-<id>/` copied from testdata table
/// folders, `<root>/keys/` (0600), relative `secret_key_file` options made absolute.
pub struct DataSet {
    pub _tmp: FastDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub keyring: PathBuf,
    pub sstables: Vec<Orig>,
}

/// Splits a component file name `nb-1-big-Data.db` → (`nb-1-big-`, `Data.db`).
pub fn split_component(name: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = name.splitn(4, '-').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    if !parts[0].bytes().all(|b| b.is_ascii_lowercase())
        || !(parts[2] == "big" || parts[2] == "bti")
    {
        return None;
    }
    Some((
        format!("{}-{}-{}-", parts[0], parts[1], parts[2]),
        parts[3].to_string(),
    ))
}

impl DataSet {
    /// `tables`: testdata-relative table folders (`dd1/edge/t_raw-<id>`), copied to
    /// `data/<keyspace>/<folder>`.
    pub fn new(tables: &[String]) -> DataSet {
        let tmp = fast_tempdir();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        copy_tree(&testdata().join("keys"), &root.join("keys"));
        for e in fs::read_dir(root.join("keys")).unwrap() {
            chmod(&e.unwrap().path(), 0o600);
        }
        let mut sstables = Vec::new();
        for t in tables {
            let src = testdata().join(t);
            let rel: PathBuf = Path::new(t).components().skip(1).collect();
            copy_tree(&src, &data.join(&rel));
            for e in manifest() {
                let d = e["data"].as_str().unwrap();
                let Some(under) = d.strip_prefix(&format!("{t}/")) else {
                    continue;
                };
                let p = rel.join(under);
                let dir = p.parent().unwrap().to_path_buf();
                let name = p.file_name().unwrap().to_str().unwrap();
                let prefix = name.strip_suffix("Data.db").unwrap().to_string();
                sstables.push(Orig {
                    dir,
                    prefix,
                    files: BTreeMap::new(),
                    sha256: e["plaintext_sha256"].as_str().unwrap().to_string(),
                    raw_chunks: e["raw_chunks"].as_u64().unwrap(),
                    indexes_encrypted: e["indexes_encrypted"] == true,
                    metadata_sha256: e["metadata_sha256"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    live: !e["location"].as_str().unwrap().starts_with("snapshot"),
                });
            }
        }
        absolute_key_files(&data, &root);
        for o in &mut sstables {
            for e in fs::read_dir(data.join(&o.dir)).unwrap() {
                let e = e.unwrap();
                let n = e.file_name().to_str().unwrap().to_string();
                if let Some(c) = n.strip_prefix(&o.prefix) {
                    o.files
                        .insert(c.to_string(), sha256(&fs::read(e.path()).unwrap()));
                }
            }
        }
        DataSet {
            _tmp: tmp,
            keyring: root.join("keys/keyring"),
            root,
            data,
            sstables,
        }
    }

    /// The table folders of testdata (`dd1/edge/t_x-<id>`) whose SSTables match `f`.
    pub fn tables_where(f: impl Fn(&Value) -> bool) -> Vec<String> {
        let mut out = BTreeSet::new();
        for e in manifest() {
            if f(e) {
                let d = e["data"].as_str().unwrap();
                let parts: Vec<&str> = d.split('/').collect();
                out.insert(parts[..3].join("/"));
            }
        }
        out.into_iter()
            .filter(|t| testdata().join(t).is_dir())
            .collect()
    }

    /// The decryptor's keys: the keyring and the old key file.
    pub fn keys(&self) -> Keys {
        let mut k = Keys::keyring(&self.keyring);
        k.add_key_file(&self.root.join("keys/old.key"));
        k
    }

    /// Adds a large encrypted SSTable written here, not by the crate: class `Encryptor`, KMIP key
    /// `old-128` (header and `kmip_host kmip1` as in testdata), AES/CBC, `chunks` chunks of
    /// `chunk_len` bytes of seeded random plaintext (the last one `chunk_len / 2 + 15` bytes),
    /// in a new table folder `data/<ks>/<table>-<32 hex>/nb-1-big-*`; the other components are
    /// the placeholders of a testdata matrix table.
    pub fn add_big(&mut self, ks: &str, table: &str, chunks: usize, chunk_len: usize, seed: u64) {
        use cbc::cipher::block_padding::Pkcs7;
        use cbc::cipher::BlockModeEncrypt;
        use std::io::Write;
        let mut rng = Rng(seed);
        let dir_rel =
            PathBuf::from(ks).join(format!("{table}-{:016x}{:016x}", rng.next(), rng.next()));
        let dir = self.data.join(&dir_rel);
        fs::create_dir_all(&dir).unwrap();
        let key = Keys::keyring(&self.keyring).ring["old-128"].clone();
        let id = b"old-128";
        let path = |c: &str| dir.join(format!("nb-1-big-{c}"));
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path("Data.db")).unwrap());
        let mut sha = Sha256::new();
        let mut digest = crc32fast::Hasher::new();
        let mut offsets = Vec::with_capacity(chunks);
        let mut pos = 0u64;
        let mut data_length = 0u64;
        let mut plain = vec![0u8; chunk_len];
        for i in 0..chunks {
            let n = if i + 1 == chunks {
                chunk_len / 2 + 15
            } else {
                chunk_len
            };
            rng.fill(&mut plain[..n]);
            sha.update(&plain[..n]);
            data_length += n as u64;
            let mut iv = [0u8; 16];
            rng.fill(&mut iv);
            let mut chunk = Vec::with_capacity(n + 64);
            chunk.push(0);
            chunk.extend_from_slice(&(id.len() as i32).to_be_bytes());
            chunk.extend_from_slice(id);
            chunk.extend_from_slice(&iv);
            chunk.extend_from_slice(
                &cbc::Encryptor::<Aes128>::new_from_slices(&key, &iv)
                    .unwrap()
                    .encrypt_padded_vec::<Pkcs7>(&plain[..n]),
            );
            let crc = crc32fast::hash(&chunk);
            chunk.extend_from_slice(&crc.to_be_bytes());
            w.write_all(&chunk).unwrap();
            digest.update(&chunk);
            offsets.push(pos);
            pos += chunk.len() as u64;
        }
        w.flush().unwrap();
        drop(w);
        let ci = Ci {
            class: "Encryptor".into(),
            options: vec![
                ("cipher_algorithm".into(), "AES/CBC/PKCS5Padding".into()),
                ("secret_key_strength".into(), "128".into()),
                ("key_provider".into(), "KmipKeyProviderFactory".into()),
                ("kmip_host".into(), "kmip1".into()),
            ],
            chunk_length: chunk_len as u32,
            max: Some(i32::MAX),
            data_length,
            offsets,
        };
        fs::write(path("CompressionInfo.db"), ci.serialize()).unwrap();
        fs::write(path("Digest.crc32"), digest.finalize().to_string()).unwrap();
        let like = DataSet::tables_where(|e| {
            e["data"]
                .as_str()
                .unwrap()
                .starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128")
        });
        for c in [
            "Filter.db",
            "Index.db",
            "Summary.db",
            "Statistics.db",
            "TOC.txt",
        ] {
            fs::copy(
                testdata().join(&like[0]).join(format!("nb-1-big-{c}")),
                path(c),
            )
            .unwrap();
        }
        let files = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let n = e.file_name().to_str().unwrap().to_string();
                (
                    n.strip_prefix("nb-1-big-").unwrap().to_string(),
                    sha256(&fs::read(e.path()).unwrap()),
                )
            })
            .collect();
        self.sstables.push(Orig {
            dir: dir_rel,
            prefix: "nb-1-big-".into(),
            files,
            sha256: hex(&sha.finalize()),
            raw_chunks: 0,
            indexes_encrypted: false,
            metadata_sha256: BTreeMap::new(),
            live: true,
        });
    }

    /// Copies the pristine data dir to `<dst>` (fresh files: new mtimes).
    pub fn copy_data(&self, dst: &Path) {
        copy_tree(&self.data, dst);
    }
}

// ------------------------------------------------------------------ checks after a run and recover

use cassandra::{cassandra_startup, Startup};

/// The key every rekeyed SSTable of a [`DataSet`] is under.
pub const NEW_KEY: &str = "kmip://kmip1/new-128";

/// `rekey -q --to kmip://kmip1/new-128 --move-kmip-group --keyring K --data-dir DATA --jobs N`
/// (data sets hold local-key and replicated tables too: offline, their move to the KMIP group
/// is stated explicitly).
pub fn rekey_args(ds: &DataSet, data: &Path, jobs: usize) -> Vec<String> {
    strings(&[
        "rekey",
        "-q",
        "--to",
        "kmip://kmip1/new-128",
        "--move-kmip-group",
        "--keyring",
        ds.keyring.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--jobs",
        &jobs.to_string(),
    ])
}

/// `verify` accepting every old key of the data set and the new one.
pub fn verify_all(ds: &DataSet, data: &Path) -> Run {
    let file = format!("file:{}", ds.root.join("keys/old.key").display());
    let replicated = format!("replicated:{UUID}");
    run_in(
        &ds.root,
        &strings(&[
            "verify",
            "--key",
            "kmip://kmip1/old-128",
            "--key",
            "kmip://kmip1/new-128",
            "--key",
            "kmip://kmip1/other-128",
            "--key",
            &replicated,
            "--key",
            &file,
            "--keyring",
            ds.keyring.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        &[],
    )
}

pub fn recover(ds: &DataSet, data: &Path) -> Run {
    run_in(
        &ds.root,
        &strings(&["recover", "--data-dir", data.to_str().unwrap()]),
        &[],
    )
}

/// Components a rekey rewrites; all others are hard-linked unchanged.
pub fn rewritten(o: &Orig) -> Vec<&'static str> {
    let mut v = vec!["Data.db", "CompressionInfo.db", "Digest.crc32"];
    if o.indexes_encrypted {
        v.extend(["Partitions.db", "Rows.db", "Statistics.db"]);
    }
    v
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub old: usize,
    pub new: usize,
}

/// The state after recovery: one generation per original, every live SSTable readable with the
/// manifest's plaintext, nothing else.
pub fn check_resolved(ds: &DataSet, keys: &Keys, data: &Path) -> Result<Tally, String> {
    check_resolved_except(ds, keys, data, &BTreeSet::new())
}

/// As [`check_resolved`], with files that are not the tool's to judge (decoys a test put in the
/// table folders, files planted by another process; paths relative to `data`) left out of the
/// folder listings: the caller checks them byte for byte.
pub fn check_resolved_except(
    ds: &DataSet,
    keys: &Keys,
    data: &Path,
    except: &BTreeSet<PathBuf>,
) -> Result<Tally, String> {
    if dirs(data) != dirs(&ds.data) {
        return Err(format!(
            "folders differ: {:?} vs {:?}",
            dirs(data),
            dirs(&ds.data)
        ));
    }
    // Snapshots: byte-identical, nothing added or removed.
    let snap = |t: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        t.iter()
            .filter(|(k, _)| k.contains("/snapshots/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let now = tree(data);
    let d = diff(&snap(&tree(&ds.data)), &snap(&now));
    if !d.is_empty() {
        return Err(format!("snapshots changed: {d:?}"));
    }
    for f in now.keys() {
        if f.contains("_txn_") || f.ends_with(".log") {
            return Err(format!("transaction log left: {f}"));
        }
    }
    let mut tally = Tally::default();
    let folders: BTreeSet<&PathBuf> = ds
        .sstables
        .iter()
        .filter(|o| o.live)
        .map(|o| &o.dir)
        .collect();
    for folder in folders {
        let origs: Vec<&Orig> = ds
            .sstables
            .iter()
            .filter(|o| o.live && &o.dir == folder)
            .collect();
        let mut groups: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
        for e in fs::read_dir(data.join(folder)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                continue;
            }
            let name = e.file_name().to_str().unwrap().to_string();
            if except.contains(&folder.join(&name)) {
                continue;
            }
            let Some((prefix, comp)) = split_component(&name) else {
                return Err(format!("stray file {}", e.path().display()));
            };
            groups.entry(prefix).or_default().insert(comp, e.path());
        }
        let mut matched: BTreeSet<String> = BTreeSet::new();
        for (prefix, files) in &groups {
            let names: BTreeSet<&String> = files.keys().collect();
            let at = data.join(folder).join(prefix);
            if let Some(o) = origs.iter().find(|o| &o.prefix == prefix) {
                // The old generation: every file as it was.
                if names != o.files.keys().collect::<BTreeSet<_>>() {
                    return Err(format!(
                        "{}: components {names:?}, the original had {:?}",
                        at.display(),
                        o.files.keys()
                    ));
                }
                for (c, p) in files {
                    if sha256(&fs::read(p).unwrap()) != o.files[c] {
                        return Err(format!("{}: the old file changed", p.display()));
                    }
                }
                let opened = open_sstable(&files["Data.db"], keys, o.indexes_encrypted)
                    .map_err(|e| format!("{}: {e}", at.display()))?;
                if opened.sha256 != o.sha256 {
                    return Err(format!("{}: plaintext differs", at.display()));
                }
                matched.insert(o.prefix.clone());
                tally.old += 1;
                continue;
            }
            // A new generation: complete, under the new key, with an original's plaintext.
            let Some(data_db) = files.get("Data.db") else {
                return Err(format!(
                    "{}: a generation without Data.db: {names:?}",
                    at.display()
                ));
            };
            let cands: Vec<&&Orig> = origs
                .iter()
                .filter(|o| !matched.contains(&o.prefix) && !groups.contains_key(&o.prefix))
                .filter(|o| names == o.files.keys().collect::<BTreeSet<_>>())
                .collect();
            if cands.is_empty() {
                return Err(format!(
                    "{}: a generation that replaces no original: {names:?}",
                    at.display()
                ));
            }
            let enc = cands[0].indexes_encrypted;
            let opened =
                open_sstable(data_db, keys, enc).map_err(|e| format!("{}: {e}", at.display()))?;
            let Some(o) = cands.iter().find(|o| opened.sha256 == o.sha256) else {
                return Err(format!(
                    "{}: its plaintext matches no original of the folder",
                    at.display()
                ));
            };
            let want_keys: BTreeSet<String> = if opened.raw == opened.chunk_keys.len() && !enc {
                BTreeSet::new()
            } else {
                BTreeSet::from([NEW_KEY.to_string()])
            };
            if opened.key_set() != want_keys {
                return Err(format!(
                    "{}: keys {:?}, want {want_keys:?}",
                    at.display(),
                    opened.key_set()
                ));
            }
            if opened.raw as u64 != o.raw_chunks {
                return Err(format!("{}: raw chunk count changed", at.display()));
            }
            if enc {
                for (k, v) in &opened.metadata_sha256 {
                    if o.metadata_sha256.get(k) != Some(v) {
                        return Err(format!("{}: {k} plaintext differs", at.display()));
                    }
                }
            }
            let skip = rewritten(o);
            for (c, p) in files {
                if !skip.contains(&c.as_str()) && sha256(&fs::read(p).unwrap()) != o.files[c] {
                    return Err(format!("{}: unchanged component {c} differs", p.display()));
                }
            }
            matched.insert(o.prefix.clone());
            tally.new += 1;
        }
        for o in &origs {
            if !matched.contains(&o.prefix) {
                return Err(format!(
                    "{}: no generation of {} survived",
                    folder.display(),
                    o.prefix
                ));
            }
        }
    }
    Ok(tally)
}

/// Leftover logs of a data dir.
pub fn logs_under(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(data, &mut files);
    files
        .into_iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_str().unwrap();
            n.contains("_txn_") && n.ends_with(".log")
        })
        .collect()
}

pub fn folder_names(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect()
}

#[derive(Debug, Default)]
pub struct Resolved {
    pub tally: Tally,
    pub logs: usize,
    pub committed_logs: usize,
    pub refused: usize,
}

/// Judges every leftover log with the model, runs `recover`, and checks that it did exactly what
/// the model says; then checks the resolved state. With `allow_refuse`, a state the model refuses
/// must be refused by recover too (and is left as it is); otherwise a refusal is a failure.
pub fn resolve(
    ds: &DataSet,
    keys: &Keys,
    data: &Path,
    allow_refuse: bool,
    check_state: bool,
) -> Result<Resolved, String> {
    let logs = logs_under(data);
    let mut r = Resolved {
        logs: logs.len(),
        ..Resolved::default()
    };
    let mut want: BTreeMap<PathBuf, (Startup, BTreeSet<PathBuf>)> = BTreeMap::new();
    for log in &logs {
        let s = cassandra_startup(log);
        if let Startup::Refuse(why) = &s {
            if !allow_refuse {
                return Err(format!(
                    "Cassandra would refuse to start with {}: {why}\n{}",
                    log.display(),
                    fs::read_to_string(log).unwrap_or_default()
                ));
            }
        }
        want.insert(log.clone(), (s, folder_names(log.parent().unwrap())));
    }
    let texts: BTreeMap<PathBuf, String> = logs
        .iter()
        .map(|l| (l.clone(), fs::read_to_string(l).unwrap_or_default()))
        .collect();
    let rec = recover(ds, data);
    let mut refused_any = false;
    for (log, (s, before)) in &want {
        let shown = log.display().to_string();
        let line = rec
            .stdout
            .lines()
            .find(|l| l.contains(&shown))
            .ok_or_else(|| format!("recover says nothing of {shown}\n{}", rec.all()))?;
        let dir = log.parent().unwrap();
        match s {
            Startup::Refuse(why) => {
                r.refused += 1;
                refused_any = true;
                if !line.starts_with("FAILED ") {
                    return Err(format!(
                        "Cassandra would refuse {shown} ({why}), recover did: {line}\n{}",
                        texts[log]
                    ));
                }
                let alone = want.keys().filter(|l| l.parent() == Some(dir)).count() == 1;
                if alone && folder_names(dir) != *before {
                    return Err(format!("{shown}: refused, yet files were deleted"));
                }
            }
            Startup::Resolve { committed, delete } => {
                let says = if *committed {
                    ": committed,"
                } else {
                    ": rolled back,"
                };
                if !line.contains(says) {
                    return Err(format!(
                        "Cassandra would resolve {shown} as committed={committed}, recover: {line}\n{}",
                        texts[log]
                    ));
                }
                if *committed {
                    r.committed_logs += 1;
                }
                let mut expect: BTreeSet<PathBuf> = before.difference(delete).cloned().collect();
                expect.remove(log);
                // Other logs of the same folder resolve their own (disjoint) files.
                for (other, (s2, _)) in &want {
                    if other != log && other.parent() == Some(dir) {
                        match s2 {
                            Startup::Resolve { delete: d2, .. } => {
                                expect = expect.difference(d2).cloned().collect();
                                expect.remove(other);
                            }
                            Startup::Refuse(_) => {}
                        }
                    }
                }
                let got = folder_names(dir);
                if got != expect {
                    return Err(format!(
                        "{shown}: recover left {:?}, Cassandra would leave {:?}\n{}",
                        got.symmetric_difference(&expect).collect::<Vec<_>>(),
                        expect.len(),
                        texts[log]
                    ));
                }
            }
        }
    }
    let want_code = if refused_any { 1 } else { 0 };
    if rec.code != want_code {
        return Err(format!(
            "recover exit {}, want {want_code}\n{}",
            rec.code,
            rec.all()
        ));
    }
    if refused_any || !check_state {
        return Ok(r);
    }
    r.tally = check_resolved(ds, keys, data)?;
    let v = verify_all(ds, data);
    if v.code != 0 {
        return Err(format!("verify after recovery: {}", v.all()));
    }
    Ok(r)
}

/// A folder's files with content and mtime, to put it back exactly between recoveries.
pub struct FolderState(Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>);

impl FolderState {
    pub fn take(dir: &Path) -> FolderState {
        FolderState(
            folder_names(dir)
                .into_iter()
                .map(|p| {
                    let m = fs::metadata(&p).unwrap();
                    (p.clone(), fs::read(&p).unwrap(), m.modified().unwrap())
                })
                .collect(),
        )
    }

    pub fn restore(&self, dir: &Path) {
        let keep: BTreeSet<&PathBuf> = self.0.iter().map(|(p, _, _)| p).collect();
        for p in folder_names(dir) {
            if !keep.contains(&p) {
                fs::remove_file(p).unwrap();
            }
        }
        for (p, b, t) in &self.0 {
            if fs::read(p).ok().as_deref() != Some(&b[..]) {
                let _ = fs::remove_file(p);
                fs::write(p, b).unwrap();
            }
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(*t)
                .unwrap();
        }
    }
}
