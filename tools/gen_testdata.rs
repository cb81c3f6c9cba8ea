//! Writes the project's own test data: encrypted DSE/HCD SSTables made from scratch, and
//! ScyllaDB-style encrypted SSTables (`scylla/`, written by `tools/gen_scylla.rs`).
//!
//! Usage: `cargo run --release --example gen-testdata -- testdata`
//!
//! It writes `keys/`, `dd1/`, `dd2/`, `dd3/`, `refuse/`, `mixed/`, `demo/`, `scylla/` and `MANIFEST.json`
//! under the given folder (replacing them; `README.md` is left alone). Everything is deterministic: the content, the keys and even the
//! IVs come from a splitmix64 generator seeded from each SSTable's name, so a rerun rewrites the same
//! bytes. Deterministic IVs are acceptable in test fixtures only: real writers draw a fresh random IV
//! for every chunk.
//!
//! On purpose, nothing here uses the library's code: the layouts are written from FORMAT.md (1.2–1.4,
//! 2.1–2.6; 4.1–4.6 in gen_scylla.rs) with the `aes` block cipher, our own CBC/ECB and PKCS#5
//! padding, `lz4_flex`, `crc32fast`, `md-5` and `sha2`, so that the tests over this data are an
//! independent check of the tool.
//!
//! Local key file tables (`LocalFileSystemKeyProviderFactory`) name their key file by a path relative
//! to the root of the tree they ship in (`keys/old.key` for `testdata/`, the same for `testdata/demo/`):
//! tests and the demo copy the tree and rewrite that option to the absolute path of the copy.

use std::fs;
use std::path::{Path, PathBuf};

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes192, Aes256};
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

#[path = "gen_scylla.rs"]
mod scylla;

const CHUNK: usize = 4096;
/// What a key file of this test data holds, in this order (no blank lines: DSE stops at one).
const KEY_FILE_LINES: [(&str, u32); 6] = [
    ("AES/CBC/PKCS5Padding", 128),
    ("AES/ECB/PKCS5Padding", 128),
    ("AES/CBC/PKCS5Padding", 256),
    ("AES/ECB/PKCS5Padding", 256),
    ("AES/CBC/PKCS5Padding", 192),
    ("AES/ECB/PKCS5Padding", 192),
];
const REPLICATED_UUID: &str = "6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a";
const UUID_GENERATION: &str = "3g1m_0nuf_3vj5m2k1125165rxa7";

// ------------------------------------------------------------------ deterministic randomness

/// splitmix64: small, fast, and the same everywhere. Not for real keys or IVs.
struct Rng(u64);

impl Rng {
    fn from_label(label: &str) -> Rng {
        // FNV-1a of the label, so that each SSTable's bytes depend only on its own name.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    fn hex(&mut self, n: usize) -> String {
        self.bytes(n).iter().map(|b| format!("{b:02x}")).collect()
    }
}

// ------------------------------------------------------------------ AES with CBC/ECB and PKCS#5

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cbc,
    Ecb,
}

impl Mode {
    fn transformation(self) -> &'static str {
        match self {
            Mode::Cbc => "AES/CBC/PKCS5Padding",
            Mode::Ecb => "AES/ECB/PKCS5Padding",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Cbc => "CBC",
            Mode::Ecb => "ECB",
        }
    }
}

enum Aes {
    A128(Aes128),
    A192(Aes192),
    A256(Aes256),
}

impl Aes {
    fn new(key: &[u8]) -> Aes {
        match key.len() {
            16 => Aes::A128(Aes128::new_from_slice(key).unwrap()),
            24 => Aes::A192(Aes192::new_from_slice(key).unwrap()),
            32 => Aes::A256(Aes256::new_from_slice(key).unwrap()),
            n => panic!("{n}-byte AES key"),
        }
    }

    fn encrypt_block(&self, block: &mut [u8]) {
        let mut b = aes::Block::try_from(&block[..]).expect("16 bytes");
        match self {
            Aes::A128(k) => k.encrypt_block(&mut b),
            Aes::A192(k) => k.encrypt_block(&mut b),
            Aes::A256(k) => k.encrypt_block(&mut b),
        }
        block.copy_from_slice(&b);
    }
}

/// `E(plain)`: PKCS#5 padding to `16 * (len/16 + 1)` bytes, then CBC (with `iv`) or ECB.
fn encrypt(mode: Mode, key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
    let aes = Aes::new(key);
    let pad = 16 - plain.len() % 16;
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + pad, pad as u8);
    let mut prev = [0u8; 16];
    if mode == Mode::Cbc {
        prev.copy_from_slice(iv);
    }
    for block in buf.chunks_mut(16) {
        if mode == Mode::Cbc {
            for (x, p) in block.iter_mut().zip(prev.iter()) {
                *x ^= *p;
            }
        }
        aes.encrypt_block(block);
        prev.copy_from_slice(block);
    }
    buf
}

// ------------------------------------------------------------------ keys

struct KeySet {
    /// KMIP ids and replicated UUIDs → raw keys (the offline keyring).
    ring: Vec<(String, Vec<u8>)>,
    /// Key file lines: (cipher, bits, key), for old.key and new.key.
    old_file: Vec<(String, u32, Vec<u8>)>,
    new_file: Vec<(String, u32, Vec<u8>)>,
}

impl KeySet {
    fn new(label: &str, ring_ids: &[(&str, usize)]) -> KeySet {
        let ring = ring_ids
            .iter()
            .map(|(id, n)| {
                (
                    id.to_string(),
                    Rng::from_label(&format!("{label} keyring {id}")).bytes(*n),
                )
            })
            .collect();
        let file = |which: &str| {
            KEY_FILE_LINES
                .iter()
                .map(|(c, bits)| {
                    let k = Rng::from_label(&format!("{label} {which}.key {c} {bits}"))
                        .bytes(*bits as usize / 8);
                    (c.to_string(), *bits, k)
                })
                .collect()
        };
        KeySet {
            ring,
            old_file: file("old"),
            new_file: file("new"),
        }
    }

    fn ring(&self, id: &str) -> Vec<u8> {
        self.ring
            .iter()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("no key {id}"))
            .1
            .clone()
    }

    fn old_file_key(&self, mode: Mode, bits: u32) -> Vec<u8> {
        self.old_file
            .iter()
            .find(|(c, b, _)| c == mode.transformation() && *b == bits)
            .expect("key file line")
            .2
            .clone()
    }

    fn write(&self, dir: &Path) {
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let mut ring = String::from(
            "# test-only keys: <key id>:<base64 key> (KMIP ids and replicated key UUIDs)\n",
        );
        for (id, k) in &self.ring {
            ring += &format!("{id}:{}\n", b64(k));
        }
        let file = |lines: &[(String, u32, Vec<u8>)]| {
            lines
                .iter()
                .map(|(c, bits, k)| format!("{c}:{bits}:{}\n", b64(k)))
                .collect::<String>()
        };
        write_private(&dir.join("keyring"), ring.as_bytes());
        write_private(&dir.join("old.key"), file(&self.old_file).as_bytes());
        write_private(&dir.join("new.key"), file(&self.new_file).as_bytes());
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

// ------------------------------------------------------------------ SSTable description

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Encryptor,
    EncryptingLz4,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Encryptor => "Encryptor",
            Class::EncryptingLz4 => "EncryptingLZ4Compressor",
        }
    }
}

#[derive(Clone)]
enum Provider {
    /// KMIP key id and `kmip_host` group.
    Kmip { id: String, host: String },
    /// Key file path as written into `secret_key_file` (relative to the tree's root, see the top).
    Local { file: String },
    /// DSE replicated key, by UUID.
    Replicated { uuid: String },
}

impl Provider {
    fn kind(&self) -> &'static str {
        match self {
            Provider::Kmip { .. } => "kmip",
            Provider::Local { .. } => "local",
            Provider::Replicated { .. } => "replicated",
        }
    }

    /// The key header at the start of every encrypted chunk (FORMAT.md 2.2).
    fn header(&self) -> Vec<u8> {
        match self {
            Provider::Kmip { id, .. } => {
                let mut h = vec![0u8];
                h.extend_from_slice(&(id.len() as i32).to_be_bytes());
                h.extend_from_slice(id.as_bytes());
                h
            }
            Provider::Local { .. } => Vec::new(),
            Provider::Replicated { uuid } => {
                let u = uuid_bytes(uuid);
                let mut h = vec![0u8];
                h.extend_from_slice(&u);
                h.extend_from_slice(&md5::Md5::digest(u));
                h
            }
        }
    }
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// What one chunk's plaintext looks like.
#[derive(Clone, Copy)]
enum Piece {
    /// Row-like text (compresses about 3:1 with LZ4).
    Text(usize),
    /// Random bytes (incompressible).
    Random(usize),
}

struct Sst {
    /// Folder relative to the output root.
    dir: String,
    keyspace: String,
    table: String,
    /// "live", "index:<name>", "snapshot:<tag>".
    location: String,
    version: &'static str,
    generation: String,
    bti: bool,
    class: Class,
    /// Fully qualified `key_provider` value (`com.datastax.bdp.cassandra.crypto.` prefix).
    qualified_provider: bool,
    provider: Provider,
    mode: Mode,
    bits: u32,
    /// Extra options written as they are (e.g. `iv_length` on an ECB table).
    extra_options: Vec<(String, String)>,
    key: Vec<u8>,
    /// `Some(ratio)`: maxCompressedLength = ceil(chunk / ratio); chunks reaching it are stored raw.
    min_compress_ratio: Option<f64>,
    /// Zero-pad a short raw last chunk up to maxCompressedLength (Apache 4.0+, HCD); DSE 6.7 does not.
    pad_raw: bool,
    /// Chunk 0 written without a key header under this key: DSE's replicated provider does that
    /// while its key table is not ready, so one file mixes both (FORMAT.md 2.2).
    headerless_first: Option<Vec<u8>>,
    /// Why the tool must refuse this SSTable (written to the manifest), for the `refuse/` data dir.
    refuse: Option<&'static str>,
    pieces: Vec<Piece>,
    /// DSE 6.8+/HCD BTI: Partitions.db and Rows.db page-encrypted and the Statistics.db components
    /// encrypted with the table's key (FORMAT.md 2.6). `None`: placeholders, plain.
    encrypted_index: Option<IndexSpec>,
}

/// Plain sizes of the page-encrypted index files of one SSTable.
#[derive(Clone, Copy)]
struct IndexSpec {
    /// Partitions.db holds exactly this many full pages (maxBytesInPage plain bytes each), as the
    /// partition index footer sits at the end of the last page's usable bytes (FORMAT.md 2.6).
    partitions_pages: usize,
    /// Rows.db plain length: not a multiple of maxBytesInPage, so its last page is partly filled.
    rows_len: usize,
}

impl Sst {
    fn has_max_compressed_length(&self) -> bool {
        self.bti || self.version >= "na"
    }

    fn prefix(&self) -> String {
        format!(
            "{}-{}-{}-",
            self.version,
            self.generation,
            if self.bti { "bti" } else { "big" }
        )
    }

    fn components(&self) -> Vec<&'static str> {
        let mut v = vec![
            "Data.db",
            "CompressionInfo.db",
            "Digest.crc32",
            "Filter.db",
            "Statistics.db",
        ];
        if self.bti {
            v.extend(["Partitions.db", "Rows.db"]);
        } else {
            v.extend(["Index.db", "Summary.db"]);
        }
        v.push("TOC.txt");
        v
    }

    fn options(&self) -> Vec<(String, String)> {
        let mut o = vec![
            (
                "cipher_algorithm".to_string(),
                self.mode.transformation().to_string(),
            ),
            ("secret_key_strength".to_string(), self.bits.to_string()),
        ];
        let factory = match self.provider {
            Provider::Kmip { .. } => "KmipKeyProviderFactory",
            Provider::Local { .. } => "LocalFileSystemKeyProviderFactory",
            Provider::Replicated { .. } => "ReplicatedKeyProviderFactory",
        };
        let factory = if self.qualified_provider {
            format!("com.datastax.bdp.cassandra.crypto.{factory}")
        } else {
            factory.to_string()
        };
        o.push(("key_provider".into(), factory));
        match &self.provider {
            Provider::Kmip { host, .. } => o.push(("kmip_host".into(), host.clone())),
            Provider::Local { file } => o.push(("secret_key_file".into(), file.clone())),
            Provider::Replicated { .. } => o.push(("system_key_file".into(), "system_key".into())),
        }
        o.extend(self.extra_options.iter().cloned());
        o
    }

    fn max_compressed_length(&self) -> Option<i32> {
        if !self.has_max_compressed_length() {
            return None;
        }
        Some(match self.min_compress_ratio {
            Some(r) => (CHUNK as f64 / r).ceil() as i32,
            None => i32::MAX,
        })
    }
}

/// Row-like, deterministic text: compressible like real rows, different in every table.
fn text(rng: &mut Rng, row: &mut u64, n: usize) -> Vec<u8> {
    const CITIES: [&str; 8] = [
        "Lisbon", "Oslo", "Austin", "Kyoto", "Lagos", "Quito", "Perth", "Turku",
    ];
    const STATUS: [&str; 4] = ["NEW", "PAID", "SHIPPED", "RETURNED"];
    let mut out = Vec::with_capacity(n + 128);
    while out.len() < n {
        *row += 1;
        let line = format!(
            "row={:08}|customer=cust_{:05}|city={}|status={}|amount={}.{:02}|note=order placed via web shop\n",
            row,
            rng.below(5000),
            CITIES[rng.below(8) as usize],
            STATUS[rng.below(4) as usize],
            rng.below(100_000),
            rng.below(100)
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(n);
    out
}

/// One chunk on disk (FORMAT.md 2.3, 2.5), before its CRC. Returns the bytes and whether it is raw.
fn seal(s: &Sst, rng: &mut Rng, i: usize, plain: &[u8]) -> (Vec<u8>, bool) {
    let iv = match s.mode {
        // Deterministic IVs: test fixtures only (see the top of this file).
        Mode::Cbc => rng.bytes(16),
        Mode::Ecb => Vec::new(),
    };
    let (header, key) = match &s.headerless_first {
        Some(k) if i == 0 => (Vec::new(), k.clone()),
        _ => (s.provider.header(), s.key.clone()),
    };
    let mut out = Vec::new();
    match s.class {
        Class::Encryptor => {
            out.extend_from_slice(&header);
            out.extend_from_slice(&iv);
            out.extend_from_slice(&encrypt(s.mode, &key, &iv, plain));
        }
        Class::EncryptingLz4 => {
            // S1 = i32be(plain length) || LZ4Compressor chunk (u32le length || raw LZ4 block).
            let mut s1 = (plain.len() as i32).to_be_bytes().to_vec();
            s1.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            s1.extend_from_slice(&lz4_flex::block::compress(plain));
            out.extend_from_slice(&(s1.len() as i32).to_be_bytes());
            out.extend_from_slice(&header);
            out.extend_from_slice(&iv);
            out.extend_from_slice(&encrypt(s.mode, &key, &iv, &s1));
        }
    }
    if let Some(max) = s.max_compressed_length() {
        if out.len() >= max as usize {
            // The writer stores such a chunk raw: plaintext, zero-padded up to maxCompressedLength.
            let mut raw = plain.to_vec();
            if s.pad_raw && raw.len() < max as usize {
                raw.resize(max as usize, 0);
            }
            return (raw, true);
        }
    }
    (out, false)
}

fn write_utf(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The placeholder components of a checksummed Statistics.db (types 0..4).
fn statistics_components(label: &str) -> Vec<(i32, Vec<u8>)> {
    (0..4)
        .map(|t| {
            (
                t,
                format!("placeholder metadata component {t} of {label}").into_bytes(),
            )
        })
        .collect()
}

/// Statistics.db with checksums (BIG `na`+, BTI; FORMAT.md 2.6) holding placeholder components.
fn statistics_checksummed(label: &str) -> Vec<u8> {
    join_statistics(&statistics_components(label))
}

/// The checksummed container (FORMAT.md 2.6): `i32 count | CRC1 | (i32 type, i32 offset) x count |
/// CRC2 | component | CRC | ...`, offsets absolute.
fn join_statistics(comps: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let count = comps.len() as i32;
    let mut out = count.to_be_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&count.to_be_bytes()).to_be_bytes());
    let mut pos = 4 + 4 + 8 * comps.len() + 4;
    for (t, body) in comps {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&(pos as i32).to_be_bytes());
        pos += body.len() + 4;
    }
    // CRC2 runs over the count and the (type, offset) entries, not over CRC1.
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..4]);
    h.update(&out[8..]);
    out.extend_from_slice(&h.finalize().to_be_bytes());
    for (_, body) in comps {
        out.extend_from_slice(body);
        out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    }
    out
}

/// The metadata digest the oracle's `verify` reports for Statistics.db (`metadata_sha256`):
/// SHA-256 over `i32be type || i32be length || plaintext` of every component, in file order.
fn statistics_digest(comps: &[(i32, Vec<u8>)]) -> String {
    let mut h = sha2::Sha256::new();
    for (t, body) in comps {
        h.update(t.to_be_bytes());
        h.update((body.len() as i32).to_be_bytes());
        h.update(body);
    }
    hex(&h.finalize())
}

// ------------------------------------------------------------------ encrypted index and metadata (FORMAT.md 2.6)

const PAGE: usize = 4096;
/// Bytes of a page the encrypted blob may use: the page less `i32be L` and the CRC.
const PAGE_USABLE: usize = PAGE - 8;

impl Provider {
    /// The provider's header *bound* (not the actual header length): local 0, replicated 33,
    /// KMIP 5 + maxKeyLength (256).
    fn header_bound(&self) -> usize {
        match self {
            Provider::Local { .. } => 0,
            Provider::Replicated { .. } => 33,
            Provider::Kmip { .. } => 5 + 256,
        }
    }
}

/// maxBytesInPage: the largest n with header bound + IV + padded(n) <= 4088 (FORMAT.md 2.6).
fn max_bytes_in_page(s: &Sst) -> usize {
    let iv = match s.mode {
        Mode::Cbc => 16,
        Mode::Ecb => 0,
    };
    let n = (PAGE_USABLE - s.provider.header_bound() - iv) / 16 * 16 - 1;
    // The table of FORMAT.md 2.6.
    let want = match (s.provider.kind(), s.mode) {
        ("local", Mode::Cbc) => 4063,
        ("local", Mode::Ecb) => 4079,
        ("replicated", Mode::Cbc) => 4031,
        ("replicated", Mode::Ecb) => 4047,
        ("kmip", Mode::Cbc) => 3807,
        ("kmip", Mode::Ecb) => 3823,
        (k, _) => panic!("provider {k}"),
    };
    assert_eq!(n, want, "maxBytesInPage");
    n
}

/// `H || IV || E(plain)` under the table's key, with a deterministic IV (test fixtures only).
fn seal_record(s: &Sst, rng: &mut Rng, plain: &[u8]) -> Vec<u8> {
    let iv = match s.mode {
        Mode::Cbc => rng.bytes(16),
        Mode::Ecb => Vec::new(),
    };
    let mut out = s.provider.header();
    out.extend_from_slice(&iv);
    out.extend_from_slice(&encrypt(s.mode, &s.key, &iv, plain));
    out
}

/// A page-encrypted index file: maxBytesInPage plain bytes a page (the last page may hold fewer),
/// each page `blob · zero padding to 4088 · i32be L · u32be CRC32(bytes 0..4092)`.
fn seal_pages(s: &Sst, rng: &mut Rng, plain: &[u8]) -> Vec<u8> {
    let cap = max_bytes_in_page(s);
    let mut out = Vec::new();
    for piece in plain.chunks(cap) {
        let blob = seal_record(s, rng, piece);
        assert!(
            blob.len() <= PAGE_USABLE,
            "page blob of {} bytes",
            blob.len()
        );
        let start = out.len();
        out.extend_from_slice(&blob);
        out.resize(start + PAGE_USABLE, 0);
        out.extend_from_slice(&(blob.len() as i32).to_be_bytes());
        let crc = crc32fast::hash(&out[start..start + PAGE - 4]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    out
}

/// Index-like plaintext: length-prefixed partition keys, positions and a few random bytes.
fn index_bytes(rng: &mut Rng, what: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut pos = rng.below(1 << 20);
    while out.len() < n {
        let key = format!("{what}-key-{:010}", rng.below(10_000_000_000));
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        pos += 40 + rng.below(4000);
        out.extend_from_slice(&pos.to_be_bytes());
        let extra = rng.below(9) as usize;
        out.extend_from_slice(&rng.bytes(extra));
    }
    out.truncate(n);
    out
}

/// Statistics.db components of a table that encrypts its metadata: longer than the placeholders,
/// sizes chosen so that one is a multiple of 16 (a whole padding block).
fn metadata_components(rng: &mut Rng, label: &str) -> Vec<(i32, Vec<u8>)> {
    [(0, 60usize), (1, 64), (2, 333), (3, 150)]
        .into_iter()
        .map(|(t, n)| {
            let mut b = format!("metadata component {t} of {label}: ").into_bytes();
            while b.len() < n {
                b.extend_from_slice(&rng.bytes(8));
            }
            b.truncate(n);
            (t, b)
        })
        .collect()
}

/// What the encrypted index and metadata files of one SSTable are: file bytes and manifest facts.
struct EncryptedIndex {
    partitions: Vec<u8>,
    rows: Vec<u8>,
    statistics: Vec<u8>,
    manifest: Value,
}

fn encrypted_index(s: &Sst, spec: IndexSpec, label: &str) -> EncryptedIndex {
    let mut rng = Rng::from_label(&format!("{label} encrypted index"));
    let cap = max_bytes_in_page(s);
    assert!(
        !spec.rows_len.is_multiple_of(cap),
        "{label}: Rows.db should end in a partial page"
    );
    let partitions_plain = index_bytes(&mut rng, "partition", spec.partitions_pages * cap);
    let rows_plain = index_bytes(&mut rng, "row", spec.rows_len);
    let comps = metadata_components(&mut rng, label);
    let partitions = seal_pages(s, &mut rng, &partitions_plain);
    let rows = seal_pages(s, &mut rng, &rows_plain);
    let sealed: Vec<(i32, Vec<u8>)> = comps
        .iter()
        .map(|(t, body)| (*t, seal_record(s, &mut rng, body)))
        .collect();
    let statistics = join_statistics(&sealed);
    let sha = |b: &[u8]| hex(&sha2::Sha256::digest(b));
    let manifest = json!({
        "max_bytes_in_page": cap,
        "index_pages": {
            "Partitions.db": partitions.len() / PAGE,
            "Rows.db": rows.len() / PAGE,
        },
        "index_plain_length": {
            "Partitions.db": partitions_plain.len(),
            "Rows.db": rows_plain.len(),
        },
        "metadata_components": comps.len(),
        "metadata_sha256": {
            "Partitions.db": sha(&partitions_plain),
            "Rows.db": sha(&rows_plain),
            "Statistics.db": statistics_digest(&comps),
        },
    });
    EncryptedIndex {
        partitions,
        rows,
        statistics,
        manifest,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes one SSTable and returns its MANIFEST entry.
fn write_sstable(root: &Path, s: &Sst) -> Value {
    let dir = root.join(&s.dir);
    fs::create_dir_all(&dir).unwrap();
    let label = format!("{}/{}", s.dir, s.prefix());
    let mut rng = Rng::from_label(&label);
    let mut row = rng.below(1_000_000);
    let chunks: Vec<Vec<u8>> = s
        .pieces
        .iter()
        .map(|p| match *p {
            Piece::Text(n) => text(&mut rng, &mut row, n),
            Piece::Random(n) => rng.bytes(n),
        })
        .collect();
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.len() <= CHUNK, "{label}: chunk {i} too long");
        assert!(
            i + 1 == chunks.len() || c.len() == CHUNK,
            "{label}: only the last chunk may be short"
        );
    }
    let data_length: usize = chunks.iter().map(Vec::len).sum();

    let mut data = Vec::new();
    let mut offsets = Vec::new();
    let mut raw_indexes = Vec::new();
    let mut sha = sha2::Sha256::new();
    for (i, plain) in chunks.iter().enumerate() {
        sha.update(plain);
        let (bytes, raw) = seal(s, &mut rng, i, plain);
        if raw {
            raw_indexes.push(i);
        }
        offsets.push(data.len() as u64);
        data.extend_from_slice(&bytes);
        data.extend_from_slice(&crc32fast::hash(&bytes).to_be_bytes());
    }

    // CompressionInfo.db (FORMAT.md 1.2).
    let mut ci = Vec::new();
    write_utf(&mut ci, s.class.name());
    let options = s.options();
    ci.extend_from_slice(&(options.len() as i32).to_be_bytes());
    for (k, v) in &options {
        write_utf(&mut ci, k);
        write_utf(&mut ci, v);
    }
    ci.extend_from_slice(&(CHUNK as i32).to_be_bytes());
    if let Some(m) = s.max_compressed_length() {
        ci.extend_from_slice(&m.to_be_bytes());
    }
    ci.extend_from_slice(&(data_length as i64).to_be_bytes());
    ci.extend_from_slice(&(offsets.len() as i32).to_be_bytes());
    for o in &offsets {
        ci.extend_from_slice(&(*o as i64).to_be_bytes());
    }

    let p = |c: &str| dir.join(format!("{}{c}", s.prefix()));
    let placeholder =
        |c: &str| format!("placeholder {c} of {label} (sstable-rekey test data; not a real {c})\n");
    let enc_index = s
        .encrypted_index
        .map(|spec| encrypted_index(s, spec, &label));
    // What the oracle's `verify` reports as `metadata_sha256`: the plaintext of Partitions.db and
    // Rows.db (BTI), and the Statistics.db components of a checksummed container.
    let metadata_sha256 = match &enc_index {
        Some(e) => e.manifest["metadata_sha256"].clone(),
        None => {
            let mut m = serde_json::Map::new();
            if s.bti {
                for c in ["Partitions.db", "Rows.db"] {
                    m.insert(
                        c.into(),
                        json!(hex(&sha2::Sha256::digest(placeholder(c).as_bytes()))),
                    );
                }
            }
            if s.has_max_compressed_length() {
                m.insert(
                    "Statistics.db".into(),
                    json!(statistics_digest(&statistics_components(&label))),
                );
            }
            Value::Object(m)
        }
    };
    for c in s.components() {
        let bytes: Vec<u8> = match (c, &enc_index) {
            ("Partitions.db", Some(e)) => e.partitions.clone(),
            ("Rows.db", Some(e)) => e.rows.clone(),
            ("Statistics.db", Some(e)) => e.statistics.clone(),
            _ => match c {
                "Data.db" => data.clone(),
                "CompressionInfo.db" => ci.clone(),
                "Digest.crc32" => crc32fast::hash(&data).to_string().into_bytes(),
                "Statistics.db" if s.has_max_compressed_length() => statistics_checksummed(&label),
                "TOC.txt" => s
                    .components()
                    .iter()
                    .map(|c| format!("{c}\n"))
                    .collect::<String>()
                    .into_bytes(),
                other => placeholder(other).into_bytes(),
            },
        };
        fs::write(p(c), bytes).unwrap();
    }

    let (key_id, key_file, uuid, host) = match &s.provider {
        Provider::Kmip { id, host } => (Some(id.clone()), None, None, Some(host.clone())),
        Provider::Local { file } => (None, Some(file.clone()), None, None),
        Provider::Replicated { uuid } => (None, None, Some(uuid.clone()), None),
    };
    let key = match &s.provider {
        Provider::Kmip { id, .. } => format!("kmip:{id}"),
        Provider::Local { file } => format!("file:{file}"),
        Provider::Replicated { uuid } => format!("replicated:{uuid}"),
    };
    json!({
        "vendor": "dse",
        "data": format!("{}/{}Data.db", s.dir, s.prefix()),
        "keyspace": s.keyspace,
        "table": s.table,
        "location": s.location,
        "version": s.version,
        "generation": s.generation,
        "format": if s.bti { "bti" } else { "big" },
        "class": s.class.name(),
        "provider": s.provider.kind(),
        "key": key,
        "key_id": key_id,
        "kmip_host": host,
        "key_file": key_file,
        "replicated_uuid": uuid,
        "cipher": s.mode.transformation(),
        "bits": s.bits,
        "chunk_length": CHUNK,
        "max_compressed_length": s.max_compressed_length(),
        "data_length": data_length,
        "chunks": chunks.len(),
        "raw_chunks": raw_indexes.len(),
        "raw_chunk_indexes": raw_indexes,
        "empty_chunks": chunks.iter().filter(|c| c.is_empty()).count(),
        "plaintext_sha256": hex(&sha.finalize()),
        "refuse": s.refuse,
        "headerless_chunks": if s.headerless_first.is_some() { vec![0] } else { Vec::<usize>::new() },
        "indexes_encrypted": enc_index.is_some(),
        "metadata_sha256": metadata_sha256,
        "max_bytes_in_page": enc_index.as_ref().map(|e| e.manifest["max_bytes_in_page"].clone()),
        "index_pages": enc_index.as_ref().map(|e| e.manifest["index_pages"].clone()),
        "index_plain_length": enc_index.as_ref().map(|e| e.manifest["index_plain_length"].clone()),
        "metadata_components": enc_index.as_ref().map(|e| e.manifest["metadata_components"].clone()),
    })
}

/// Copies an SSTable's files into another folder (a snapshot: hard links in real life).
fn copy_sstable(
    root: &Path,
    s: &Sst,
    to_dir: &str,
    location: &str,
    manifest: &mut Vec<Value>,
    entry: &Value,
) {
    let from = root.join(&s.dir);
    let to = root.join(to_dir);
    fs::create_dir_all(&to).unwrap();
    for c in s.components() {
        let name = format!("{}{c}", s.prefix());
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
    let mut e = entry.clone();
    e["data"] = json!(format!("{to_dir}/{}Data.db", s.prefix()));
    e["location"] = json!(location);
    manifest.push(e);
}

fn table_dir(data_dir: &str, ks: &str, table: &str) -> String {
    let id = Rng::from_label(&format!("table id {ks}.{table}")).hex(16);
    format!("{data_dir}/{ks}/{table}-{id}")
}

/// A KMIP old-128 EncryptingLZ4Compressor CBC `nb-1` SSTable: the base most edge cases start from.
fn base(dir: &str, ks: &str, table: &str, key: &KeySet, pieces: Vec<Piece>) -> Sst {
    Sst {
        dir: dir.to_string(),
        keyspace: ks.into(),
        table: table.into(),
        location: "live".into(),
        version: "nb",
        generation: "1".into(),
        bti: false,
        class: Class::EncryptingLz4,
        qualified_provider: false,
        provider: Provider::Kmip {
            id: "old-128".into(),
            host: "kmip1".into(),
        },
        mode: Mode::Cbc,
        bits: 128,
        extra_options: Vec::new(),
        key: key.ring("old-128"),
        min_compress_ratio: None,
        pad_raw: true,
        headerless_first: None,
        refuse: None,
        pieces,
        encrypted_index: None,
    }
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "testdata".into()));
    fs::create_dir_all(&out).unwrap();
    for d in ["keys", "dd1", "dd2", "dd3", "refuse", "mixed", "demo"] {
        let p = out.join(d);
        if p.exists() {
            fs::remove_dir_all(&p).unwrap();
        }
    }
    use Piece::{Random as R, Text as T};
    let mut manifest: Vec<Value> = Vec::new();

    // Keys.
    let keys = KeySet::new(
        "testdata",
        &[
            ("old-128", 16),
            ("new-128", 16),
            ("old-256", 32),
            ("new-256", 32),
            ("old-192", 24),
            ("new-192", 24),
            ("other-128", 16),
            ("longer-new-128", 16),
            (REPLICATED_UUID, 16),
        ],
    );
    keys.write(&out.join("keys"));

    // dd1/matrix: class x provider x mode x bits.
    for class in [Class::Encryptor, Class::EncryptingLz4] {
        for provider in ["kmip", "local"] {
            for mode in [Mode::Cbc, Mode::Ecb] {
                for bits in [128u32, 256] {
                    let table = format!("t_{}_{provider}_{}_{bits}", class.name(), mode.name());
                    let dir = table_dir("dd1", "matrix", &table);
                    let (prov, key) = if provider == "kmip" {
                        let id = format!("old-{bits}");
                        (
                            Provider::Kmip {
                                id: id.clone(),
                                host: "kmip1".into(),
                            },
                            keys.ring(&id),
                        )
                    } else {
                        (
                            Provider::Local {
                                file: "keys/old.key".into(),
                            },
                            keys.old_file_key(mode, bits),
                        )
                    };
                    let mut s = base(
                        &dir,
                        "matrix",
                        &table,
                        &keys,
                        vec![T(CHUNK), R(CHUNK), T(CHUNK), T(1234)],
                    );
                    s.class = class;
                    s.provider = prov;
                    s.key = key;
                    s.mode = mode;
                    s.bits = bits;
                    if mode == Mode::Ecb && bits == 256 {
                        // ECB has no IV whatever iv_length says (FORMAT.md 2.1).
                        s.extra_options.push(("iv_length".into(), "16".into()));
                    }
                    manifest.push(write_sstable(&out, &s));
                }
            }
        }
    }

    // dd1/edge: what real data rarely has.
    let edge = |t: &str| table_dir("dd1", "edge", t);
    // Raw chunks: maxCompressedLength = chunk length, so incompressible chunks are stored raw; the
    // last one (4060 bytes) is zero-padded to 4096.
    let mut s = base(
        &edge("t_raw"),
        "edge",
        "t_raw",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(CHUNK), R(4060)],
    );
    s.version = "na";
    s.min_compress_ratio = Some(1.0);
    manifest.push(write_sstable(&out, &s));
    // Encryptor with the same ratio: every full chunk grows past 4096 and is raw; the short last is not.
    let mut s = base(
        &edge("t_raw_enc"),
        "edge",
        "t_raw_enc",
        &keys,
        vec![T(CHUNK), T(CHUNK), T(2000)],
    );
    s.class = Class::Encryptor;
    s.min_compress_ratio = Some(1.0);
    manifest.push(write_sstable(&out, &s));
    // Empty trailing chunk: data length a multiple of the chunk length, plus one chunk of length 0.
    let s = base(
        &edge("t_empty_tail"),
        "edge",
        "t_empty_tail",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(CHUNK), T(0)],
    );
    manifest.push(write_sstable(&out, &s));
    let mut s = base(
        &edge("t_empty_tail_enc"),
        "edge",
        "t_empty_tail_enc",
        &keys,
        vec![T(CHUNK), T(CHUNK), T(0)],
    );
    s.class = Class::Encryptor;
    s.mode = Mode::Ecb;
    manifest.push(write_sstable(&out, &s));
    // UUID-style generation id (Cassandra 4.1+).
    let mut s = base(
        &edge("t_uuid"),
        "edge",
        "t_uuid",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(3000)],
    );
    s.generation = UUID_GENERATION.into();
    manifest.push(write_sstable(&out, &s));
    // Cassandra 3.x `mc`: no maxCompressedLength, Statistics.db without checksums.
    let mut s = base(
        &edge("t_mc"),
        "edge",
        "t_mc",
        &keys,
        vec![T(CHUNK), T(CHUNK), R(2500)],
    );
    s.version = "mc";
    manifest.push(write_sstable(&out, &s));
    // BTI `da` (Cassandra 5.0): Partitions.db/Rows.db are plain placeholders, not page-encrypted.
    let mut s = base(
        &edge("t_bti"),
        "edge",
        "t_bti",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(100)],
    );
    s.version = "da";
    s.bti = true;
    manifest.push(write_sstable(&out, &s));
    // A snapshot (copies, hard links in real life) and a secondary index folder.
    let snap_dir = edge("t_snap");
    let s = base(
        &snap_dir,
        "edge",
        "t_snap",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(CHUNK), T(777)],
    );
    let e = write_sstable(&out, &s);
    copy_sstable(
        &out,
        &s,
        &format!("{snap_dir}/snapshots/snap1"),
        "snapshot:snap1",
        &mut manifest,
        &e,
    );
    manifest.push(e);
    let mut idx = base(
        &format!("{snap_dir}/.t_idx"),
        "edge",
        "t_snap",
        &keys,
        vec![T(CHUNK), T(1500)],
    );
    idx.location = "index:t_idx".into();
    let e = write_sstable(&out, &idx);
    copy_sstable(
        &out,
        &idx,
        &format!("{snap_dir}/snapshots/snap1/.t_idx"),
        "snapshot:snap1",
        &mut manifest,
        &e,
    );
    manifest.push(e);
    // Two SSTables in one table; the provider option fully qualified.
    for g in ["1", "2"] {
        let pieces = if g == "1" {
            vec![T(CHUNK), R(CHUNK), T(500)]
        } else {
            vec![T(CHUNK), T(CHUNK), T(CHUNK), T(CHUNK), T(9)]
        };
        let mut s = base(&edge("t_two"), "edge", "t_two", &keys, pieces);
        s.generation = g.into();
        s.qualified_provider = true;
        manifest.push(write_sstable(&out, &s));
    }
    // DSE ReplicatedKeyProviderFactory: header 0x00 + UUID + MD5(UUID).
    let mut s = base(
        &edge("t_replicated"),
        "edge",
        "t_replicated",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(2222)],
    );
    s.provider = Provider::Replicated {
        uuid: REPLICATED_UUID.into(),
    };
    s.key = keys.ring(REPLICATED_UUID);
    manifest.push(write_sstable(&out, &s));
    // Under another KMIP key: `--from kmip://kmip1/old-128` must leave it alone.
    let mut s = base(
        &edge("t_other"),
        "edge",
        "t_other",
        &keys,
        vec![T(CHUNK), T(3333)],
    );
    s.provider = Provider::Kmip {
        id: "other-128".into(),
        host: "kmip1".into(),
    };
    s.key = keys.ring("other-128");
    manifest.push(write_sstable(&out, &s));

    // A chunk 4 bytes below maxCompressedLength: fine under `new-128`, but a longer KMIP id
    // (`longer-new-128`, 7 bytes more) would push it to maxCompressedLength, where every reader
    // takes it for plaintext (FORMAT.md 2.3): the tool must refuse that rekey.
    let mut s = base(
        &edge("t_near_max"),
        "edge",
        "t_near_max",
        &keys,
        vec![T(CHUNK), T(4060)],
    );
    s.class = Class::Encryptor;
    s.min_compress_ratio = Some(1.0);
    manifest.push(write_sstable(&out, &s));

    // refuse/: a data directory of SSTables the tool must refuse (never rekey by guessing).
    // DSE 6.7 does not pad a short raw last chunk (FORMAT.md 2.5): it is shorter than
    // maxCompressedLength and looks encrypted, but it is plaintext.
    let refuse = |t: &str| table_dir("refuse", "refuse", t);
    let mut s = base(
        &refuse("t_raw_unpadded"),
        "refuse",
        "t_raw_unpadded",
        &keys,
        vec![T(CHUNK), R(CHUNK), R(4060)],
    );
    s.min_compress_ratio = Some(1.0);
    s.pad_raw = false;
    s.refuse = Some("DSE 6.7 raw last chunk, not padded: looks encrypted, is plaintext");
    manifest.push(write_sstable(&out, &s));
    let mut s = base(
        &refuse("t_raw_unpadded_local"),
        "refuse",
        "t_raw_unpadded_local",
        &keys,
        vec![T(CHUNK), T(4080)],
    );
    s.class = Class::Encryptor;
    s.provider = Provider::Local {
        file: "keys/old.key".into(),
    };
    s.key = keys.old_file_key(Mode::Cbc, 128);
    s.min_compress_ratio = Some(1.0);
    s.pad_raw = false;
    s.refuse =
        Some("DSE 6.7 raw last chunk, not padded, a multiple of 16 bytes: decrypts to garbage");
    manifest.push(write_sstable(&out, &s));

    // mixed/: a replicated-key table whose first chunk has no key header (DSE's key table was not
    // ready): that chunk is under the local key file, which the table does not name. In a data dir
    // of its own: without `--from file:...` the tool cannot know that chunk's key.
    let mut s = base(
        &table_dir("mixed", "dse", "t_replicated_mixed"),
        "dse",
        "t_replicated_mixed",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(1111)],
    );
    s.provider = Provider::Replicated {
        uuid: REPLICATED_UUID.into(),
    };
    s.key = keys.ring(REPLICATED_UUID);
    s.headerless_first = Some(keys.old_file_key(Mode::Cbc, 128));
    manifest.push(write_sstable(&out, &s));

    // dd2: a second data directory.
    let mut s = base(
        &table_dir("dd2", "other", "t_dd2"),
        "other",
        "t_dd2",
        &keys,
        vec![T(CHUNK), R(CHUNK), T(2048)],
    );
    s.class = Class::Encryptor;
    manifest.push(write_sstable(&out, &s));

    // dd3/bti: DSE 6.8+/HCD-style BTI SSTables whose Partitions.db and Rows.db are page-encrypted
    // (several pages each) and whose Statistics.db components are encrypted (FORMAT.md 2.6): every
    // provider x mode x strength once, versions `bb` and `cc` and both classes spread over them.
    for (version, provider, mode, bits, class, partitions_pages, rows_len) in [
        ("bb", "kmip", Mode::Cbc, 128u32, Class::Encryptor, 3, 9_000),
        (
            "cc",
            "kmip",
            Mode::Cbc,
            256,
            Class::EncryptingLz4,
            2,
            12_345,
        ),
        ("cc", "kmip", Mode::Ecb, 128, Class::Encryptor, 2, 8_100),
        (
            "bb",
            "kmip",
            Mode::Ecb,
            256,
            Class::EncryptingLz4,
            3,
            10_000,
        ),
        (
            "cc",
            "local",
            Mode::Cbc,
            128,
            Class::EncryptingLz4,
            3,
            14_000,
        ),
        ("bb", "local", Mode::Cbc, 256, Class::Encryptor, 2, 9_999),
        (
            "bb",
            "local",
            Mode::Ecb,
            128,
            Class::EncryptingLz4,
            2,
            11_111,
        ),
        ("cc", "local", Mode::Ecb, 256, Class::Encryptor, 3, 6_543),
    ] {
        let table = format!("t_{version}_{provider}_{}_{bits}", mode.name());
        let (prov, key) = if provider == "kmip" {
            let id = format!("old-{bits}");
            (
                Provider::Kmip {
                    id: id.clone(),
                    host: "kmip1".into(),
                },
                keys.ring(&id),
            )
        } else {
            (
                Provider::Local {
                    file: "keys/old.key".into(),
                },
                keys.old_file_key(mode, bits),
            )
        };
        let mut s = base(
            &table_dir("dd3", "bti", &table),
            "bti",
            &table,
            &keys,
            vec![T(CHUNK), R(CHUNK), T(2345)],
        );
        s.version = version;
        s.bti = true;
        s.class = class;
        s.provider = prov;
        s.key = key;
        s.mode = mode;
        s.bits = bits;
        s.encrypted_index = Some(IndexSpec {
            partitions_pages,
            rows_len,
        });
        manifest.push(write_sstable(&out, &s));
    }

    // demo: what `sstable-rekey demo` runs on (its own keys).
    let demo_keys = KeySet::new("demo", &[("demo-old", 16), ("demo-new", 16)]);
    demo_keys.write(&out.join("demo/keys"));
    let orders = table_dir("demo/data", "shop", "orders");
    let demo_kmip = Provider::Kmip {
        id: "demo-old".into(),
        host: "demo".into(),
    };
    let mut snap_entries = Vec::new();
    for (g, pieces) in [
        ("1", vec![T(CHUNK), T(CHUNK), R(CHUNK), T(3100)]),
        ("2", vec![T(CHUNK), R(CHUNK), T(1800)]),
    ] {
        let mut s = base(&orders, "shop", "orders", &keys, pieces);
        s.generation = g.into();
        s.provider = demo_kmip.clone();
        s.key = demo_keys.ring("demo-old");
        let e = write_sstable(&out, &s);
        copy_sstable(
            &out,
            &s,
            &format!("{orders}/snapshots/before_rekey"),
            "snapshot:before_rekey",
            &mut snap_entries,
            &e,
        );
        manifest.push(e);
    }
    let mut s = base(
        &format!("{orders}/.orders_by_customer"),
        "shop",
        "orders",
        &keys,
        vec![T(CHUNK), T(2600)],
    );
    s.location = "index:orders_by_customer".into();
    s.provider = demo_kmip.clone();
    s.key = demo_keys.ring("demo-old");
    let e = write_sstable(&out, &s);
    copy_sstable(
        &out,
        &s,
        &format!("{orders}/snapshots/before_rekey/.orders_by_customer"),
        "snapshot:before_rekey",
        &mut snap_entries,
        &e,
    );
    manifest.push(e);
    manifest.extend(snap_entries);
    let mut s = base(
        &table_dir("demo/data", "shop", "customers"),
        "shop",
        "customers",
        &keys,
        vec![T(CHUNK), T(CHUNK), T(1500)],
    );
    s.class = Class::Encryptor;
    s.provider = Provider::Local {
        file: "keys/old.key".into(),
    };
    s.key = demo_keys.old_file_key(Mode::Cbc, 128);
    manifest.push(write_sstable(&out, &s));

    // scylla/: ScyllaDB encryption at rest (tools/gen_scylla.rs), with the keys above.
    manifest.extend(scylla::write_all(&out, &keys));

    manifest.sort_by(|a, b| a["data"].as_str().cmp(&b["data"].as_str()));
    let doc = json!({
        "generator": "tools/gen_testdata.rs (cargo run --release --example gen-testdata -- testdata)",
        "note": "paths are relative to testdata/; plaintext_sha256 is the SHA-256 of the concatenated plaintext of all chunks, computed when the data was generated. metadata_sha256 is what the oracle's verify reports under that name: the SHA-256 of the plaintext of Partitions.db and of Rows.db (BTI; decrypted page by page when indexes_encrypted), and for a checksummed Statistics.db the SHA-256 over i32be type, i32be length and plaintext of every component. index_pages counts the 4096-byte pages of the page-encrypted index files, max_bytes_in_page is their plaintext capacity (FORMAT.md 2.6). key_file paths are relative to the root of the tree they ship in (testdata/ or testdata/demo/).",
        "scylla_note": "entries with vendor scylla are ScyllaDB-style SSTables (scylla/, FORMAT.md 4): each component file encrypted as a whole under the key Scylla.db names; components[name] holds the SHA-256 and size of each component's plaintext, the size of its file and whether it is encrypted (what the scylla oracle's verify reports as components[name].plaintext_sha256, size, disk_size and encrypted; Scylla.db and TOC.txt are never encrypted), plaintext_sha256_all, scylla_db_other_entries_sha256 and other_extension_attributes_sha256 are the oracle's digests of the same names, rows_sha256 is the SHA-256 of the uncompressed Data.db content, encrypted_components the mask of FORMAT.md 4.1, trailing_crc the 2026.2 layout (tag 12 and the trailing CRC). key_file paths are relative to testdata/ (rewrite them in Scylla.db to an absolute path in a copy); keyring names the keyring file holding a KMIP id's key. Entries with vendor dse are DSE/HCD SSTables.",
        "sstables": manifest,
    });
    fs::write(
        out.join("MANIFEST.json"),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
    eprintln!(
        "wrote {} SSTables under {}",
        doc["sstables"].as_array().unwrap().len(),
        out.display()
    );
}
