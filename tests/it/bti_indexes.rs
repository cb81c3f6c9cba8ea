//! DSE 6.8+/HCD BTI SSTables whose Partitions.db and Rows.db are page-encrypted and whose
//! Statistics.db components are encrypted (FORMAT.md 2.6), from the project's own test data
//! (`testdata/dd3/bti`, written by tools/gen_testdata.rs with multi-page index files).
//!
//! Every test runs the built binary on a scratch copy of `testdata/dd3` and `testdata/keys` and
//! judges the result with an independent decryptor written here (the `cbc` crate for CBC and the
//! `aes` block cipher for ECB, through tests/it/support, `lz4_flex`), against the digests of testdata/MANIFEST.json, which were
//! computed from the plaintext when the data was generated: never against the tool's own opinion.
//! Broken input is refused with the originals byte-identical and no stray file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::tree_strict as tree;
use crate::support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const INDEX_FILES: [&str; 2] = ["Partitions.db", "Rows.db"];
/// A KMIP CBC 128-bit and a local-key-file CBC 128-bit table of dd3 (both 128 bits: a provider
/// change between them is refused for the page capacity alone, not for the strength).
const KMIP_T: &str = "t_bb_kmip_CBC_128";
const LOCAL_T: &str = "t_cc_local_CBC_128";

// ------------------------------------------------------------------ MANIFEST.json

/// The manifest entries of the SSTables whose index and metadata files are encrypted.
fn bti_entries() -> &'static Vec<Value> {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        let text =
            fs::read_to_string(testdata().join("MANIFEST.json")).expect("testdata/MANIFEST.json");
        let v: Value = serde_json::from_str(&text).expect("MANIFEST.json is JSON");
        let all = v["sstables"].as_array().expect("sstables");
        let bti: Vec<Value> = all
            .iter()
            .filter(|e| e["indexes_encrypted"] == true)
            .cloned()
            .collect();
        assert!(
            bti.iter()
                .all(|e| e["data"].as_str().unwrap().starts_with("dd3/bti/")),
            "encrypted-index SSTables live in dd3/bti"
        );
        bti
    })
}

fn entry(table: &str) -> &'static Value {
    bti_entries()
        .iter()
        .find(|e| e["table"] == table)
        .unwrap_or_else(|| panic!("no manifest entry for {table}"))
}

fn total_pages(e: &Value) -> u64 {
    INDEX_FILES
        .iter()
        .map(|c| e["index_pages"][c].as_u64().unwrap())
        .sum()
}

// ------------------------------------------------------------------ CompressionInfo.db (FORMAT.md 1.2)

#[derive(Debug, Clone, PartialEq)]
struct Ci {
    class: String,
    options: Vec<(String, String)>,
    chunk_length: u32,
    max: i32,
    data_length: u64,
    offsets: Vec<u64>,
}

impl Ci {
    fn option(&self, k: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
    }

    fn plain_len(&self, i: usize) -> usize {
        (self
            .data_length
            .saturating_sub(i as u64 * self.chunk_length as u64))
        .min(self.chunk_length as u64) as usize
    }

    /// BTI: maxCompressedLength is always there.
    fn parse(b: &[u8]) -> Ci {
        let mut c = Cursor { b, pos: 0 };
        let class = c.utf();
        let n = c.i32();
        let options = (0..n).map(|_| (c.utf(), c.utf())).collect();
        let chunk_length = c.i32() as u32;
        let max = c.i32();
        let data_length = c.i64() as u64;
        let count = c.i32();
        let offsets = (0..count).map(|_| c.i64() as u64).collect();
        assert_eq!(c.pos, b.len(), "trailing bytes in CompressionInfo.db");
        Ci {
            class,
            options,
            chunk_length,
            max,
            data_length,
            offsets,
        }
    }
}

/// A big-endian cursor (Java `DataInput`) over a well-formed file.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        self.pos += n;
        &self.b[self.pos - n..self.pos]
    }

    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }

    fn utf(&mut self) -> String {
        let n = u16::from_be_bytes(self.take(2).try_into().unwrap()) as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
}

// ------------------------------------------------------------------ keys

/// Key material the decryptor may use: a keyring (KMIP ids) and one key file.
#[derive(Default, Clone)]
struct Keys {
    ring: HashMap<String, Vec<u8>>,
    file: HashMap<(String, u32), Vec<u8>>,
}

impl Keys {
    /// The KMIP keys of the keyring whose id starts with `prefix` ("old-", "new-"), and a key file.
    fn load(ring: &Path, prefix: &str, file: &Path) -> Keys {
        let mut k = Keys::default();
        for line in fs::read_to_string(ring).unwrap().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, key) = line.rsplit_once(':').unwrap();
            if id.starts_with(prefix) {
                k.ring.insert(id.to_string(), b64(key));
            }
        }
        for line in fs::read_to_string(file).unwrap().lines() {
            let f: Vec<&str> = line.trim().split(':').collect();
            k.file
                .insert((f[0].to_string(), f[1].parse().unwrap()), b64(f[2]));
        }
        k
    }

    fn old(root: &Path) -> Keys {
        Keys::load(
            &root.join("keys/keyring"),
            "old-",
            &root.join("keys/old.key"),
        )
    }

    fn new(root: &Path) -> Keys {
        Keys::load(
            &root.join("keys/keyring"),
            "new-",
            &root.join("keys/new.key"),
        )
    }

    /// `name`: "kmip:<id>" or "local".
    fn get(&self, name: &str, t: &TableCipher) -> Option<Vec<u8>> {
        match name.strip_prefix("kmip:") {
            Some(id) => self.ring.get(id).cloned(),
            None => self.file.get(&(t.cipher.clone(), t.bits)).cloned(),
        }
    }
}

// ------------------------------------------------------------------ the independent decryptor

/// What the options of a table say about its records.
#[derive(Debug, Clone)]
struct TableCipher {
    kmip: bool,
    cbc: bool,
    cipher: String,
    bits: u32,
    chained: bool,
}

impl TableCipher {
    fn of(ci: &Ci) -> TableCipher {
        let cipher = ci.option("cipher_algorithm").unwrap().to_string();
        let provider = ci
            .option("key_provider")
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap();
        TableCipher {
            kmip: match provider {
                "KmipKeyProviderFactory" => true,
                "LocalFileSystemKeyProviderFactory" => false,
                p => panic!("provider {p}"),
            },
            cbc: match cipher.as_str() {
                "AES/CBC/PKCS5Padding" => true,
                "AES/ECB/PKCS5Padding" => false,
                c => panic!("cipher {c}"),
            },
            bits: ci.option("secret_key_strength").unwrap().parse().unwrap(),
            chained: match ci.class.rsplit('.').next().unwrap() {
                "Encryptor" => false,
                "EncryptingLZ4Compressor" => true,
                c => panic!("class {c}"),
            },
            cipher,
        }
    }

    /// maxBytesInPage (FORMAT.md 2.6): header bound (KMIP 5 + 256, local 0) + IV + padded(n) <= 4088.
    fn max_bytes_in_page(&self) -> usize {
        let bound = if self.kmip { 261 } else { 0 };
        let iv = if self.cbc { 16 } else { 0 };
        let n = (USABLE - bound - iv) / 16 * 16 - 1;
        let table = match (self.kmip, self.cbc) {
            (false, true) => 4063,
            (false, false) => 4079,
            (true, true) => 3807,
            (true, false) => 3823,
        };
        assert_eq!(n, table, "the FORMAT.md 2.6 table");
        n
    }
}

/// One decrypted record: `H || IV || E(x)` opened.
#[derive(Debug, Clone)]
struct Record {
    what: String,
    key: String,
    iv: Vec<u8>,
    ct: Vec<u8>,
    plain: Vec<u8>,
}

fn decrypt_with(t: &TableCipher, key: &[u8], iv: &[u8], ct: &[u8]) -> Result<Vec<u8>, String> {
    if t.cbc {
        aes_cbc_decrypt(key, iv, ct)
    } else {
        aes_ecb_decrypt(key, ct)
    }
}

/// Opens `H || IV || E(x)`: the key header names the key (KMIP), or the table's key file (local).
fn open_record(t: &TableCipher, keys: &Keys, what: String, blob: &[u8]) -> Result<Record, String> {
    let (key, hlen) = if t.kmip {
        if blob.len() < 5 || blob[0] != 0 {
            return Err(format!("{what}: bad KMIP key header"));
        }
        let n = i32::from_be_bytes(blob[1..5].try_into().unwrap());
        if n < 0 || 5 + n as usize > blob.len() {
            return Err(format!("{what}: KMIP id length {n}"));
        }
        let n = n as usize;
        (
            format!("kmip:{}", String::from_utf8_lossy(&blob[5..5 + n])),
            5 + n,
        )
    } else {
        ("local".to_string(), 0)
    };
    let ivlen = if t.cbc { 16 } else { 0 };
    if blob.len() < hlen + ivlen {
        return Err(format!("{what}: too short for its IV"));
    }
    let (iv, ct) = blob[hlen..].split_at(ivlen);
    let k = keys
        .get(&key, t)
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

/// Everything one SSTable holds, decrypted.
#[derive(Debug)]
struct Opened {
    t: TableCipher,
    data_sha256: String,
    /// As the oracle's `verify` reports it (`metadata_sha256`).
    metadata_sha256: BTreeMap<String, String>,
    chunk_keys: BTreeMap<String, u64>,
    page_keys: BTreeMap<String, u64>,
    meta_keys: BTreeMap<String, u64>,
    /// Index file → plain length of each page.
    page_plain: BTreeMap<String, Vec<usize>>,
    /// Statistics.db component types, in file order.
    meta_types: Vec<i32>,
    records: Vec<Record>,
}

fn count(m: &mut BTreeMap<String, u64>, k: &str) {
    *m.entry(k.to_string()).or_default() += 1;
}

/// A page-encrypted index file (FORMAT.md 2.6): CRC, length, zero padding, then each blob decrypted;
/// no page holds more than maxBytesInPage plain bytes.
fn open_pages(path: &Path, t: &TableCipher, keys: &Keys) -> Result<(Vec<u8>, Vec<Record>), String> {
    let buf = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The component name, without the generation: records compare across generations.
    let name = path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap();
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

/// Decrypts a whole encrypted-index SSTable from its Data.db path: Data.db (every CRC,
/// Digest.crc32, chunk structure, LZ4), Partitions.db and Rows.db page by page, and every
/// Statistics.db component.
fn open_sstable(data: &Path, keys: &Keys) -> Result<Opened, String> {
    let name = data.file_name().unwrap().to_str().unwrap();
    let prefix = name.strip_suffix("Data.db").ok_or("not a Data.db")?;
    let comp = |c: &str| data.with_file_name(format!("{prefix}{c}"));
    let ci = Ci::parse(&fs::read(comp("CompressionInfo.db")).map_err(|e| e.to_string())?);
    let t = TableCipher::of(&ci);
    let bytes = fs::read(data).map_err(|e| e.to_string())?;
    let digest = fs::read_to_string(comp("Digest.crc32")).map_err(|e| e.to_string())?;
    if digest != crc32fast::hash(&bytes).to_string() {
        return Err("Digest.crc32 does not match Data.db".into());
    }
    let mut o = Opened {
        t: t.clone(),
        data_sha256: String::new(),
        metadata_sha256: BTreeMap::new(),
        chunk_keys: BTreeMap::new(),
        page_keys: BTreeMap::new(),
        meta_keys: BTreeMap::new(),
        page_plain: BTreeMap::new(),
        meta_types: Vec::new(),
        records: Vec::new(),
    };
    let mut sha = Sha256::new();
    for i in 0..ci.offsets.len() {
        let start = ci.offsets[i] as usize;
        let end = ci
            .offsets
            .get(i + 1)
            .map(|&x| x as usize)
            .unwrap_or(bytes.len());
        let chunk = &bytes[start..end - 4];
        if crc32fast::hash(chunk).to_be_bytes() != bytes[end - 4..end] {
            return Err(format!("chunk {i}: CRC mismatch"));
        }
        if chunk.len() >= ci.max as usize {
            return Err(format!("chunk {i}: raw (none expected)"));
        }
        let plain_len = ci.plain_len(i);
        let (outer, body) = if t.chained {
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
                return Err(format!("chunk {i}: outer length {outer:?}"));
            }
            let inner = i32::from_be_bytes(p[..4].try_into().unwrap()) as usize;
            let lz = u32::from_le_bytes(p[4..8].try_into().unwrap()) as usize;
            if inner != plain_len || lz != plain_len {
                return Err(format!("chunk {i}: length prefixes {inner}/{lz}"));
            }
            lz4_flex::block::decompress(&p[8..], plain_len)
                .map_err(|e| format!("chunk {i}: LZ4: {e}"))?
        } else {
            r.plain.clone()
        };
        if plain.len() != plain_len {
            return Err(format!("chunk {i}: {} plain bytes", plain.len()));
        }
        sha.update(&plain);
        count(&mut o.chunk_keys, &r.key);
        o.records.push(r);
    }
    o.data_sha256 = hex(&sha.finalize());
    for c in INDEX_FILES {
        let (plain, recs) = open_pages(&comp(c), &t, keys)?;
        o.metadata_sha256.insert(c.to_string(), sha256(&plain));
        o.page_plain
            .insert(c.to_string(), recs.iter().map(|r| r.plain.len()).collect());
        for r in recs {
            count(&mut o.page_keys, &r.key);
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
        count(&mut o.meta_keys, &r.key);
        o.meta_types.push(ty);
        o.records.push(r);
    }
    o.metadata_sha256
        .insert("Statistics.db".into(), hex(&h.finalize()));
    Ok(o)
}

// ------------------------------------------------------------------ a scratch copy and the binary

/// A scratch copy of testdata/dd3 and testdata/keys: key files 0600, relative `secret_key_file`
/// options pointed at the copy (testdata/README.md).
struct Env {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("td");
        for d in ["dd3", "keys"] {
            copy_tree(&testdata().join(d), &root.join(d));
        }
        for e in fs::read_dir(root.join("keys")).unwrap() {
            chmod(&e.unwrap().path(), 0o600);
        }
        absolute_key_files(&root, &root);
        Env { tmp, root }
    }

    fn s(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn run(&self, args: &[&str]) -> Run {
        let o = Command::new(BIN)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .expect("run sstable-rekey");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn report_path(&self) -> PathBuf {
        self.tmp.path().join("report.json")
    }

    fn report(&self, path: &Path) -> Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The folder of a dd3 table.
    fn table(&self, table: &str) -> PathBuf {
        let dir = self.root.join("dd3/bti");
        let found: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_str().unwrap();
                n.strip_prefix(table)
                    .and_then(|r| r.strip_prefix('-'))
                    .is_some_and(|id| id.len() == 32)
            })
            .collect();
        assert_eq!(found.len(), 1, "table {table} in {}", dir.display());
        found[0].clone()
    }

    /// A component of a dd3 table's generation-1 SSTable.
    fn file(&self, table: &str, component: &str) -> PathBuf {
        let v = entry(table)["version"].as_str().unwrap();
        self.table(table).join(format!("{v}-1-bti-{component}"))
    }

    /// `rekey -q --to TO --keyring keys/keyring --data-dir dd3 --report R bti TABLES`.
    fn rekey(&self, to: &str, report: &Path, tables: &[&str]) -> Run {
        let ring = self.s("keys/keyring");
        let dd = self.s("dd3");
        let rep = report.display().to_string();
        let mut args = vec![
            "rekey",
            "-q",
            "--to",
            to,
            "--keyring",
            &ring,
            "--data-dir",
            &dd,
            "--report",
            &rep,
            "bti",
        ];
        args.extend(tables);
        self.run(&args)
    }

    /// The target key of a table's group: same provider type and strength.
    fn new_key(&self, e: &Value) -> String {
        match e["provider"].as_str().unwrap() {
            "kmip" => format!("kmip://kmip1/new-{}", e["bits"]),
            _ => format!("file:{}", self.s("keys/new.key")),
        }
    }

    /// How the tool's reports name a table's old and new keys (a KMIP key by group and id).
    fn report_names(&self, e: &Value) -> (String, String) {
        match e["provider"].as_str().unwrap() {
            "kmip" => (
                format!("kmip://kmip1/old-{}", e["bits"]),
                format!("kmip://kmip1/new-{}", e["bits"]),
            ),
            _ => (
                format!("file:{}", self.s("keys/old.key")),
                format!("file:{}", self.s("keys/new.key")),
            ),
        }
    }
}

/// How the decryptor here names a table's old and new keys.
fn decryptor_names(e: &Value) -> (String, String) {
    match e["provider"].as_str().unwrap() {
        "kmip" => (
            format!("kmip:old-{}", e["bits"]),
            format!("kmip:new-{}", e["bits"]),
        ),
        _ => ("local".into(), "local".into()),
    }
}

fn one(k: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(k.to_string(), n)])
}

fn json_counts(v: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// The three rekey groups: (target key ref, tables). A rekey keeps the provider type (page
/// capacity) and the strength.
fn groups(env: &Env) -> Vec<(String, Vec<String>)> {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in bti_entries() {
        g.entry(env.new_key(e))
            .or_default()
            .push(e["table"].as_str().unwrap().to_string());
    }
    assert_eq!(g.len(), 3, "kmip 128, kmip 256, local");
    g.into_iter().collect()
}

// ------------------------------------------------------------------ the committed data

/// The generated SSTables are what the manifest says: every page and component opens with the old
/// keys to the manifest's digests, index files of several pages, maxBytesInPage respected, and the
/// coverage the README promises (KMIP/local x CBC/ECB x 128/256, versions bb and cc).
#[test]
fn committed_bti_sstables_match_the_manifest() {
    let td = testdata();
    let old = Keys::old(&td);
    let new = Keys::new(&td);
    let mut combos = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for e in bti_entries() {
        let rel = e["data"].as_str().unwrap();
        let o = open_sstable(&td.join(rel), &old).unwrap_or_else(|m| panic!("{rel}: {m}"));
        assert_eq!(o.data_sha256, e["plaintext_sha256"], "{rel}");
        let want: BTreeMap<String, String> =
            serde_json::from_value(e["metadata_sha256"].clone()).unwrap();
        assert_eq!(o.metadata_sha256, want, "{rel}");
        assert_eq!(
            o.t.max_bytes_in_page() as u64,
            e["max_bytes_in_page"].as_u64().unwrap(),
            "{rel}"
        );
        let (old_name, _) = decryptor_names(e);
        assert_eq!(o.chunk_keys, one(&old_name, e["chunks"].as_u64().unwrap()));
        assert_eq!(o.page_keys, one(&old_name, total_pages(e)), "{rel}");
        assert_eq!(o.meta_keys, one(&old_name, 4), "{rel}");
        assert_eq!(o.meta_types, vec![0, 1, 2, 3], "{rel}");
        let cap = o.t.max_bytes_in_page();
        let mut plain_total = 0;
        for c in INDEX_FILES {
            let pages = &o.page_plain[c];
            assert_eq!(pages.len() as u64, e["index_pages"][c], "{rel} {c}");
            assert!(pages.len() >= 2, "{rel} {c}: a multi-page index file");
            assert!(
                pages[..pages.len() - 1].iter().all(|&n| n == cap),
                "{rel} {c}: every page but the last is full ({cap}): {pages:?}"
            );
            plain_total += pages.iter().sum::<usize>();
            assert_eq!(
                pages.iter().sum::<usize>() as u64,
                e["index_plain_length"][c],
                "{rel} {c}"
            );
        }
        // Partitions.db ends in a full page (the footer at the end of its usable bytes), Rows.db not.
        assert_eq!(*o.page_plain["Partitions.db"].last().unwrap(), cap, "{rel}");
        assert!(*o.page_plain["Rows.db"].last().unwrap() < cap, "{rel}");
        assert!(
            (10_000..=40_000).contains(&plain_total),
            "{rel}: {plain_total} plain index bytes"
        );
        // The new keys open nothing yet.
        let with_new = open_sstable(&td.join(rel), &new);
        assert!(with_new.is_err(), "{rel}: opens with the new keys");
        combos.insert((
            e["provider"].as_str().unwrap().to_string(),
            e["cipher"].as_str().unwrap().to_string(),
            e["bits"].as_u64().unwrap(),
        ));
        versions.insert(e["version"].as_str().unwrap().to_string());
    }
    assert_eq!(
        combos.len(),
        8,
        "KMIP/local x CBC/ECB x 128/256: {combos:?}"
    );
    assert_eq!(versions, BTreeSet::from(["bb".into(), "cc".into()]));
}

/// `inspect --json` counts index pages and metadata components per key, without any key.
#[test]
fn inspect_shows_index_pages_and_metadata_per_key() {
    let env = Env::new();
    let mut args: Vec<String> = vec!["inspect".into(), "--json".into()];
    for e in bti_entries() {
        args.push(env.s(e["data"].as_str().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    let out: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out.len(), bti_entries().len());
    for (i, e) in out.iter().zip(bti_entries()) {
        let rel = e["data"].as_str().unwrap();
        let (old, _) = env.report_names(e);
        assert_eq!(i["error"], Value::Null, "{rel}: {i}");
        assert_eq!(i["version"], e["version"], "{rel}");
        assert_eq!(
            json_counts(&i["keys"]),
            one(&old, e["chunks"].as_u64().unwrap()),
            "{rel}"
        );
        assert_eq!(
            json_counts(&i["index_pages"]),
            one(&old, total_pages(e)),
            "{rel}"
        );
        assert_eq!(json_counts(&i["metadata"]), one(&old, 4), "{rel}");
        let paged: BTreeSet<String> = serde_json::from_value(i["page_encrypted"].clone()).unwrap();
        assert_eq!(
            paged,
            INDEX_FILES.iter().map(|c| c.to_string()).collect(),
            "{rel}"
        );
    }
}

// ------------------------------------------------------------------ rekey

/// Rekeys every table to the new key of its provider type and strength (three runs), then proves
/// with the decryptor here that every chunk, page and component opens with the NEW key only, to the
/// manifest's plaintext; that nothing moved (same sizes, same page count, same plaintext per page);
/// what the report, `verify` and `inspect` say; and that a second run is a no-op.
#[test]
fn rekey_then_every_page_and_component_is_under_the_new_key_only() {
    let env = Env::new();
    let td = testdata();
    let old_keys = Keys::old(&env.root);
    let new_keys = Keys::new(&env.root);
    let groups = groups(&env);
    for (i, (to, tables)) in groups.iter().enumerate() {
        let rep_path = env.tmp.path().join(format!("rekey-{i}.json"));
        let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
        let r = env.rekey(to, &rep_path, &tables);
        assert_eq!(r.code, 0, "rekey --to {to}: {}", r.all());
        let rep = env.report(&rep_path);
        assert_eq!(rep["totals"]["rekeyed"], tables.len(), "{}", rep["totals"]);
        assert_eq!(rep["totals"]["failed"], 0);
        for s in rep["sstables"].as_array().unwrap() {
            let e = entry(s["table"].as_str().unwrap().strip_prefix("bti.").unwrap());
            let (old, new) = env.report_names(e);
            let what = format!("{}: {s}", e["table"]);
            assert_eq!(s["status"], "rekeyed", "{what}");
            let chunks = e["chunks"].as_u64().unwrap();
            assert_eq!(json_counts(&s["keys_before"]), one(&old, chunks), "{what}");
            assert_eq!(json_counts(&s["keys_after"]), one(&new, chunks), "{what}");
            let pages = total_pages(e);
            assert_eq!(
                json_counts(&s["index_pages_before"]),
                one(&old, pages),
                "{what}"
            );
            assert_eq!(
                json_counts(&s["index_pages_after"]),
                one(&new, pages),
                "{what}"
            );
            assert_eq!(json_counts(&s["metadata_before"]), one(&old, 4), "{what}");
            assert_eq!(json_counts(&s["metadata_after"]), one(&new, 4), "{what}");
        }
    }

    for e in bti_entries() {
        let table = e["table"].as_str().unwrap();
        let v = e["version"].as_str().unwrap();
        let dir = env.table(table);
        // Exactly the new generation is left: every component rewritten or carried over, no log.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|x| x.unwrap().file_name().into_string().unwrap())
            .collect();
        let new_prefix = format!("{v}-2-bti-");
        assert!(
            names.iter().all(|n| n.starts_with(&new_prefix)),
            "{table}: {names:?}"
        );
        assert_eq!(names.len(), 8, "{table}: {names:?}");
        let data = dir.join(format!("{new_prefix}Data.db"));
        let o = open_sstable(&data, &new_keys).unwrap_or_else(|m| panic!("{table}: {m}"));
        assert_eq!(o.data_sha256, e["plaintext_sha256"], "{table}");
        let want: BTreeMap<String, String> =
            serde_json::from_value(e["metadata_sha256"].clone()).unwrap();
        assert_eq!(o.metadata_sha256, want, "{table}: index/metadata plaintext");
        let (_, new) = decryptor_names(e);
        assert_eq!(o.chunk_keys, one(&new, e["chunks"].as_u64().unwrap()));
        assert_eq!(o.page_keys, one(&new, total_pages(e)), "{table}");
        assert_eq!(o.meta_keys, one(&new, 4), "{table}");
        assert_eq!(o.meta_types, vec![0, 1, 2, 3], "{table}");
        // Nothing moved: the same sizes (the new key header is as long as the old one), the same
        // page count and the same plaintext length in every page.
        let orig = open_sstable(&td.join(e["data"].as_str().unwrap()), &Keys::old(&td)).unwrap();
        assert_eq!(
            o.page_plain, orig.page_plain,
            "{table}: page contents moved"
        );
        for c in ["Data.db", "Partitions.db", "Rows.db", "Statistics.db"] {
            let before = fs::metadata(
                td.join(e["data"].as_str().unwrap())
                    .with_file_name(format!("{v}-1-bti-{c}")),
            )
            .unwrap()
            .len();
            let after = fs::metadata(dir.join(format!("{new_prefix}{c}")))
                .unwrap()
                .len();
            assert_eq!(after, before, "{table}: {c} size");
        }
        // The provider type is kept; the options name the new key.
        let ci = Ci::parse(&fs::read(dir.join(format!("{new_prefix}CompressionInfo.db"))).unwrap());
        match e["provider"].as_str().unwrap() {
            "kmip" => {
                assert_eq!(ci.option("key_provider"), Some("KmipKeyProviderFactory"));
                assert_eq!(ci.option("kmip_host"), Some("kmip1"));
            }
            _ => {
                assert_eq!(
                    ci.option("key_provider"),
                    Some("LocalFileSystemKeyProviderFactory")
                );
                assert_eq!(
                    ci.option("secret_key_file"),
                    Some(env.s("keys/new.key").as_str())
                );
            }
        }
        // Fresh IVs (CBC), and the old key opens no record: it fails, or gives other bytes.
        for (r, before) in o.records.iter().zip(&orig.records) {
            assert_eq!(r.what, before.what);
            if o.t.cbc {
                assert_ne!(r.iv, before.iv, "{table} {}: IV reused", r.what);
            }
            let k = old_keys.get(&before.key, &o.t).unwrap();
            if let Ok(p) = decrypt_with(&o.t, &k, &r.iv, &r.ct) {
                assert_ne!(p, r.plain, "{table} {}: opens with the old key", r.what);
            }
        }
    }

    // verify: passes with the new keys, page and metadata counts per key; fails with the old ones.
    let dd = env.s("dd3");
    let ring = env.s("keys/keyring");
    let news: Vec<String> = groups.iter().map(|(to, _)| to.clone()).collect();
    let vrep = env.tmp.path().join("verify-new.json");
    let mut args = vec!["verify", "--deep", "--keyring", &ring, "--data-dir", &dd];
    for k in &news {
        args.extend(["--key", k.as_str()]);
    }
    let vrep_s = vrep.display().to_string();
    args.extend(["--report", &vrep_s]);
    let r = env.run(&args);
    assert_eq!(r.code, 0, "verify with the new keys: {}", r.all());
    let v = env.report(&vrep);
    assert_eq!(v["ok"], bti_entries().len(), "{v}");
    for s in v["sstables"].as_array().unwrap() {
        let e = entry(s["table"].as_str().unwrap().strip_prefix("bti.").unwrap());
        let (_, new) = env.report_names(e);
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(
            json_counts(&s["keys"]),
            one(&new, e["chunks"].as_u64().unwrap())
        );
        assert_eq!(
            json_counts(&s["index_pages"]),
            one(&new, total_pages(e)),
            "{s}"
        );
        assert_eq!(json_counts(&s["metadata"]), one(&new, 4), "{s}");
    }
    let old_file = format!("file:{}", env.s("keys/old.key"));
    let vrep_old = env.tmp.path().join("verify-old.json");
    let vrep_old_s = vrep_old.display().to_string();
    let r = env.run(&[
        "verify",
        "--keyring",
        &ring,
        "--data-dir",
        &dd,
        "--key",
        "kmip://kmip1/old-128",
        "--key",
        "kmip://kmip1/old-256",
        "--key",
        &old_file,
        "--report",
        &vrep_old_s,
    ]);
    assert_eq!(r.code, 1, "verify with the old keys must fail: {}", r.all());
    let v = env.report(&vrep_old);
    assert_eq!(v["under_other_keys"], bti_entries().len(), "{v}");

    // inspect: the pages and components per key.
    for e in bti_entries() {
        let dir = env.table(e["table"].as_str().unwrap());
        let r = env.run(&["inspect", "--json", dir.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.all());
        let out: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
        let (_, new) = env.report_names(e);
        assert_eq!(out.len(), 1);
        assert_eq!(
            json_counts(&out[0]["index_pages"]),
            one(&new, total_pages(e)),
            "{}",
            out[0]
        );
        assert_eq!(json_counts(&out[0]["metadata"]), one(&new, 4), "{}", out[0]);
    }

    // A second run changes nothing.
    let before = tree(&env.root);
    for (i, (to, tables)) in groups.iter().enumerate() {
        let rep_path = env.tmp.path().join(format!("again-{i}.json"));
        let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
        let r = env.rekey(to, &rep_path, &tables);
        assert_eq!(r.code, 0, "{}", r.all());
        let rep = env.report(&rep_path);
        assert_eq!(rep["totals"]["rekeyed"], 0, "{rep}");
        for s in rep["sstables"].as_array().unwrap() {
            assert_eq!(s["status"], "skipped", "{s}");
            assert!(
                s["reason"].as_str().unwrap().contains("already under"),
                "{s}"
            );
        }
    }
    assert_eq!(diff(&before, &tree(&env.root)), Vec::<String>::new());
}

// ------------------------------------------------------------------ refusals

/// Runs `run` and checks the contract: exit status, an error naming `names` and containing every
/// one of `says`, and a tree byte-identical to what it was before (no new generation, no log).
fn check(env: &Env, run: impl FnOnce(&Env) -> Run, code: i32, names: &Path, says: &[&str]) -> Run {
    let before = tree(&env.root);
    let r = run(env);
    assert_eq!(r.code, code, "{}", r.all());
    let out = r.all();
    assert!(
        out.contains(&names.display().to_string()),
        "the error does not name {}: {out}",
        names.display()
    );
    for s in says {
        assert!(
            out.to_lowercase().contains(&s.to_lowercase()),
            "the error does not say {s:?}: {out}"
        );
    }
    assert_eq!(
        diff(&before, &tree(&env.root)),
        Vec::<String>::new(),
        "{out}"
    );
    if code == 1 {
        let rep = env.report(&env.report_path());
        assert_eq!(rep["totals"]["failed"], 1, "{rep}");
        assert_eq!(rep["totals"]["rekeyed"], 0, "{rep}");
        assert!(
            rep["sstables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] == "failed" && s["error_kind"].is_string()),
            "{rep}"
        );
    } else {
        assert!(
            !env.report_path().exists(),
            "a report was written although nothing ran"
        );
    }
    r
}

/// Readers size index pages by the provider's header bound: a KMIP table cannot become a key-file
/// table (or back) without moving every page. Refused, saying why.
#[test]
fn a_change_of_provider_type_is_refused_for_page_encrypted_sstables() {
    let env = Env::new();
    let new_file = format!("file:{}", env.s("keys/new.key"));
    let data = env.file(KMIP_T, "Data.db");
    check(
        &env,
        |e| e.rekey(&new_file, &e.report_path(), &[KMIP_T]),
        1,
        &data,
        &["index pages", "3807", "4063", "provider type"],
    );
    let data = env.file(LOCAL_T, "Data.db");
    fs::remove_file(env.report_path()).unwrap();
    check(
        &env,
        |e| e.rekey("kmip://kmip1/new-128", &e.report_path(), &[LOCAL_T]),
        1,
        &data,
        &["index pages", "4063", "3807", "provider type"],
    );
}

/// Rewrites one page of a file; with `fix_crc` its CRC footer is recomputed, so that only what
/// `f` changed is wrong.
fn edit_page(path: &Path, page: usize, fix_crc: bool, f: impl FnOnce(&mut [u8])) {
    let mut b = fs::read(path).unwrap();
    let p = &mut b[page * PAGE..(page + 1) * PAGE];
    f(p);
    if fix_crc {
        let crc = crc32fast::hash(&p[..PAGE - 4]);
        p[PAGE - 4..].copy_from_slice(&crc.to_be_bytes());
    }
    fs::write(path, b).unwrap();
}

fn page_len(p: &[u8]) -> usize {
    i32::from_be_bytes(p[USABLE..USABLE + 4].try_into().unwrap()) as usize
}

fn rekey_kmip(e: &Env) -> Run {
    e.rekey("kmip://kmip1/new-128", &e.report_path(), &[KMIP_T])
}

fn rekey_local(e: &Env) -> Run {
    let to = format!("file:{}", e.s("keys/new.key"));
    e.rekey(&to, &e.report_path(), &[LOCAL_T])
}

/// `verify --key KEY` over one dd3 table must fail too (exit 1): it reads every page and component.
fn verify_fails(env: &Env, key: &str, table: &str) {
    let ring = env.s("keys/keyring");
    let dd = env.s("dd3");
    let r = env.run(&[
        "verify",
        "--key",
        key,
        "--keyring",
        &ring,
        "--data-dir",
        &dd,
        "bti",
        table,
    ]);
    assert_eq!(r.code, 1, "verify must fail too: {}", r.all());
}

#[test]
fn flipped_byte_in_a_page_is_refused() {
    for (table, comp) in [(KMIP_T, "Partitions.db"), (LOCAL_T, "Rows.db")] {
        let env = Env::new();
        let path = env.file(table, comp);
        // Inside page 1's ciphertext.
        edit_page(&path, 1, false, |p| p[1000] ^= 0x10);
        let rekey = if table == KMIP_T {
            rekey_kmip
        } else {
            rekey_local
        };
        check(&env, rekey, 1, &path, &["page 1", "CRC"]);
        let old = if table == KMIP_T {
            "kmip://kmip1/old-128".to_string()
        } else {
            format!("file:{}", env.s("keys/old.key"))
        };
        verify_fails(&env, &old, table);
    }
}

#[test]
fn page_length_field_of_zero_is_refused() {
    let env = Env::new();
    let path = env.file(KMIP_T, "Rows.db");
    edit_page(&path, 0, true, |p| {
        p[USABLE..USABLE + 4].copy_from_slice(&0i32.to_be_bytes())
    });
    check(&env, rekey_kmip, 1, &path, &["page 0", "length 0"]);
    verify_fails(&env, "kmip://kmip1/old-128", KMIP_T);
}

#[test]
fn page_length_field_of_5000_is_refused() {
    let env = Env::new();
    let path = env.file(LOCAL_T, "Partitions.db");
    edit_page(&path, 2, true, |p| {
        p[USABLE..USABLE + 4].copy_from_slice(&5000i32.to_be_bytes())
    });
    check(&env, rekey_local, 1, &path, &["page 2", "5000"]);
    let old = format!("file:{}", env.s("keys/old.key"));
    verify_fails(&env, &old, LOCAL_T);
}

#[test]
fn non_zero_page_padding_is_refused() {
    let env = Env::new();
    let path = env.file(KMIP_T, "Rows.db");
    // The last page is partly filled: its padding is long.
    let last = fs::metadata(&path).unwrap().len() as usize / PAGE - 1;
    edit_page(&path, last, true, |p| {
        let l = page_len(p);
        assert!(l + 10 < USABLE);
        p[l + 5] = 0x01;
    });
    check(
        &env,
        rekey_kmip,
        1,
        &path,
        &[&format!("page {last}"), "padding"],
    );
    verify_fails(&env, "kmip://kmip1/old-128", KMIP_T);
}

#[test]
fn statistics_with_a_wrong_table_of_contents_crc_is_refused() {
    let env = Env::new();
    let path = env.file(KMIP_T, "Statistics.db");
    let mut b = fs::read(&path).unwrap();
    let count = i32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
    // CRC2 follows the count, CRC1 and the (type, offset) entries.
    b[8 + 8 * count + 2] ^= 0x04;
    fs::write(&path, b).unwrap();
    check(&env, rekey_kmip, 1, &path, &["table of contents"]);
    verify_fails(&env, "kmip://kmip1/old-128", KMIP_T);
}

/// A page whose key header names a KMIP id the keyring lacks: a key problem found before any work
/// (exit 2, nothing written, no report), naming the key.
#[test]
fn page_under_a_key_the_keyring_does_not_have_is_refused() {
    let env = Env::new();
    let path = env.file(KMIP_T, "Rows.db");
    edit_page(&path, 1, true, |p| {
        // KMIP header: 0x00, i32be 7, "old-128".
        assert_eq!(&p[..12], b"\x00\x00\x00\x00\x07old-128");
        p[5..12].copy_from_slice(b"gone-12");
    });
    let data = env.file(KMIP_T, "Data.db");
    check(
        &env,
        rekey_kmip,
        2,
        &data,
        &["kmip://kmip1/gone-12", "not found"],
    );
}
