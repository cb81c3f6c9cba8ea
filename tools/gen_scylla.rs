//! The ScyllaDB part of the test data generator (`tools/gen_testdata.rs`): `scylla/` under the
//! output folder, ScyllaDB-style encrypted SSTables written from FORMAT.md alone.
//!
//! Each SSTable is first a plain Cassandra BIG SSTable (`me`, one `mc` and one `md`; FORMAT.md
//! 1.1–1.4): an `LZ4Compressor` Data.db with a CRC32 after every chunk and its CompressionInfo.db
//! (mc–me layout: no maxCompressedLength), or, for the uncompressed ones, a plain Data.db with CRC.db;
//! Digest.crc32; a Statistics.db in the mc–me layout (`i32 count | (i32 type, i32 offset) x count |
//! components`, no checksums, FORMAT.md 2.6); Index.db, Summary.db and Filter.db of realistic sizes
//! but placeholder content (the Data.db rows are placeholder text too, as in the DSE part). Then it
//! is encrypted file by file as ScyllaDB does (FORMAT.md 4.3: 4096-byte blocks, ESSIV IVs under
//! SHA-256 of the whole key, no padding, the file cut to L or L + 16 bytes): every component but
//! TOC.txt and Scylla.db, or Data.db only; and a Scylla.db (4.5, never encrypted) names the key in
//! its ExtensionAttributes (4.6), with the 2026.2 ComponentsDigests entry (CRC32 of the plaintexts,
//! 4.8) and trailing CRC, or without them (2025.1–2026.1).
//!
//! Keys: the KMIP ids `old-128`, `old-192`, `old-256` of `keys/keyring` and the lines of
//! `keys/old.key` (both shared with the DSE part, unchanged), plus `scylla/keys/keyring` (a UUID id,
//! a 15-byte id and spares) and `scylla/keys/long.key` (keys longer than strength/8, FORMAT.md 4.2).
//! `secret_key_file` holds a path relative to the output root (`keys/old.key`,
//! `scylla/keys/long.key`), like the DSE local tables: tests rewrite it in Scylla.db to the copy's
//! absolute path (ScyllaDB, and the oracle, take only absolute ones; testdata/README.md).
//!
//! Deterministic like the rest: every byte comes from a splitmix64 generator seeded from the
//! SSTable's folder and name; and ScyllaDB's file encryption has no nonce (4.3).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;

use super::{
    hex, index_bytes, table_dir, text, write_private, write_utf, Aes, KeySet, Mode, Piece, Rng,
    CHUNK, UUID_GENERATION,
};

/// ScyllaDB encrypts files in blocks of this many bytes (FORMAT.md 4.3).
const BLOCK: usize = 4096;
/// The data dir of the ScyllaDB tables, relative to the output root.
const DATA_DIR: &str = "scylla/data";
/// Chunk length of CRC.db in the uncompressed SSTables (Cassandra's default buffer size).
const CRC_CHUNK: usize = 65536;
const LZ4_CLASS: &str = "org.apache.cassandra.io.compress.LZ4Compressor";
const PROVIDER_PREFIX: &str = "com.datastax.bdp.cassandra.crypto.";
const KMIP_HOST: &str = "kmip1";

/// The KMIP ids of `scylla/keys/keyring` and their key lengths in bytes: a UUID id (stored as its
/// 16 bytes), a 15-byte id (stored as bytes + `00 02`), and spare targets for rekey tests.
const SCYLLA_RING: [(&str, usize); 4] = [
    ("5e0c2b9a-7d41-4f3e-9a6b-2c8d1e4f7a90", 32),
    ("kmip-id-15bytes", 24),
    ("9d3f6a2e-1b7c-4e58-8f0a-3c5d7e9b1a24", 16),
    ("1", 16),
];
/// `scylla/keys/long.key`: (cipher, strength, key bytes), keys longer than strength/8.
const LONG_KEYS: [(Mode, u32, usize); 2] = [(Mode::Cbc, 128, 32), (Mode::Ecb, 256, 40)];

// ------------------------------------------------------------------ file encryption (FORMAT.md 4.3)

/// A data key as ScyllaDB's file layer uses it: AES with the first strength/8 bytes, IVs from
/// AES-256-ECB under SHA-256 of *all* the key bytes.
struct FileKey {
    aes: Aes,
    essiv: Aes,
    mode: Mode,
}

impl FileKey {
    fn new(raw: &[u8], bits: u32, mode: Mode) -> FileKey {
        let n = bits as usize / 8;
        assert!(raw.len() >= n, "{}-byte key for {bits} bits", raw.len());
        FileKey {
            aes: Aes::new(&raw[..n]),
            essiv: Aes::new(&sha2::Sha256::digest(raw)),
            mode,
        }
    }

    /// IV_n = AES-256-ECB_h(00 x 8 || u64le(n)).
    fn iv(&self, n: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[8..].copy_from_slice(&n.to_le_bytes());
        self.essiv.encrypt_block(&mut b);
        b
    }

    /// The file as ScyllaDB's writer leaves it: the last block zero-filled to 4096 bytes, every
    /// block encrypted whole (CBC restarting with IV_n, or ECB), no padding, then the file cut (or
    /// grown with zero bytes) to L, or L + 16 when L is not a multiple of 16.
    fn seal(&self, plain: &[u8]) -> Vec<u8> {
        if plain.is_empty() {
            return Vec::new();
        }
        let mut buf = plain.to_vec();
        buf.resize(plain.len().div_ceil(BLOCK) * BLOCK, 0);
        for (n, block) in buf.chunks_mut(BLOCK).enumerate() {
            let mut prev = self.iv(n as u64);
            for b in block.chunks_mut(16) {
                if self.mode == Mode::Cbc {
                    for (x, p) in b.iter_mut().zip(prev.iter()) {
                        *x ^= *p;
                    }
                }
                self.aes.encrypt_block(b);
                prev.copy_from_slice(b);
            }
        }
        let size = if plain.len().is_multiple_of(16) {
            plain.len()
        } else {
            plain.len() + 16
        };
        buf.resize(size, 0);
        buf
    }
}

/// The test vector of FORMAT.md 4.3 (key 00..0f, AES-128-CBC), checked before anything is written.
fn check_test_vector() {
    let key: Vec<u8> = (0u8..16).collect();
    assert_eq!(
        hex(&sha2::Sha256::digest(&key)),
        "be45cb2605bf36bebde684841a28f0fd43c69850a3dce5fedba69928ee3a8991"
    );
    let k = FileKey::new(&key, 128, Mode::Cbc);
    assert_eq!(hex(&k.iv(0)), "ae0e4eeac063684505721b0643b24ae3");
    assert_eq!(hex(&k.iv(1)), "98952b4e205ab9d8a451674335e76fea");
    assert_eq!(
        hex(&k.seal(&[0u8; 32])),
        "cfbcd8b00b97a2022be8bb75168c55cf4503185a1780bcddb24c50457c6e7be2"
    );
    // Sizes: L when a multiple of 16, else L + 16 (grown with zeros past the last block).
    for (l, size) in [
        (1usize, 17usize),
        (16, 16),
        (4090, 4106),
        (4096, 4096),
        (8187, 8203),
    ] {
        assert_eq!(k.seal(&vec![7u8; l]).len(), size, "L = {l}");
    }
    assert!(k.seal(&vec![7u8; 8187])[8192..].iter().all(|b| *b == 0));
}

// ------------------------------------------------------------------ small encoders

fn be32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn str16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn str32(out: &mut Vec<u8>, b: &[u8]) {
    be32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&sha2::Sha256::digest(b))
}

fn uuid_from_hex(h: &str) -> [u8; 16] {
    let h: String = h.chars().filter(|c| *c != '-').collect();
    assert_eq!(h.len(), 32, "{h}");
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A version-1 (time) UUID from a 60-bit timestamp (100 ns since 1582-10-15) and its low 64 bits.
fn time_uuid(ts: u64, lsb: u64) -> [u8; 16] {
    let msb = ((ts & 0xffff_ffff) << 32) | (((ts >> 32) & 0xffff) << 16) | 0x1000 | (ts >> 48);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&msb.to_be_bytes());
    out[8..].copy_from_slice(&lsb.to_be_bytes());
    out
}

/// A random version-4 UUID.
fn random_uuid(rng: &mut Rng) -> [u8; 16] {
    let mut u = [0u8; 16];
    u.copy_from_slice(&rng.bytes(16));
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn base36(s: &str) -> u64 {
    s.chars().fold(0u64, |acc, c| {
        acc.checked_mul(36)
            .and_then(|a| a.checked_add(c.to_digit(36).expect("base-36 digit") as u64))
            .expect("base-36 value fits in 64 bits")
    })
}

/// The time-UUID a 28-character generation id stands for (FORMAT.md 1.1: days since 1582-10-15,
/// second of day, 100-ns remainder, then the UUID's low 64 bits, all base 36).
fn generation_uuid(g: &str) -> [u8; 16] {
    let parts: Vec<&str> = g.split('_').collect();
    assert!(
        parts.len() == 3 && parts[0].len() == 4 && parts[1].len() == 4 && parts[2].len() == 18,
        "{g}"
    );
    let (days, secs) = (base36(parts[0]), base36(parts[1]));
    let (rem, lsb) = (base36(&parts[2][..5]), base36(&parts[2][5..]));
    assert!(secs < 86_400 && rem < 10_000_000, "{g}");
    time_uuid((days * 86_400 + secs) * 10_000_000 + rem, lsb)
}

/// Component numbers of `sstables/component_type.hh` (FORMAT.md 4.1), for the mask and tag 12.
fn component_number(c: &str) -> u32 {
    match c {
        "Index.db" => 0,
        "CompressionInfo.db" => 1,
        "Data.db" => 2,
        "TOC.txt" => 3,
        "Summary.db" => 4,
        "Digest.crc32" => 5,
        "CRC.db" => 6,
        "Filter.db" => 7,
        "Statistics.db" => 8,
        "Scylla.db" => 11,
        other => panic!("component {other}"),
    }
}

/// `scylla_key_id` of a KMIP id (FORMAT.md 4.4): a lower-case 8-4-4-4-12 UUID as its 16 bytes;
/// any other id as its bytes + `01`, a 15-byte one as its bytes + `00 02`.
fn kmip_key_id(id: &str) -> Vec<u8> {
    let canonical = id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_digit() || ('a'..='f').contains(&c)
            }
        });
    if canonical {
        return uuid_from_hex(id).to_vec();
    }
    // Anything ScyllaDB's UUID parser might take (32 or 33 bytes once '-' is removed) would be
    // stored otherwise: keep such ids out of the test data.
    let stripped = id.bytes().filter(|b| *b != b'-').count();
    assert!(stripped / 2 != 16, "KMIP id {id:?} would parse as a UUID");
    let mut b = id.as_bytes().to_vec();
    if b.len() == 15 {
        b.extend_from_slice(&[0, 2]);
    } else {
        b.push(1);
    }
    b
}

// ------------------------------------------------------------------ what one SSTable is

#[derive(Clone)]
enum Provider {
    /// `secret_key_file` as written (relative to the output root, see the top).
    Local { file: String },
    /// KMIP id; `keyring` is the keyring file (relative to the output root) that holds its key.
    Kmip { id: String, keyring: &'static str },
}

/// How the options name the provider (FORMAT.md 4.4).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ProviderOption {
    /// `key_provider=<Name>KeyProviderFactory`.
    Plain,
    /// `key_provider=com.datastax.bdp.cassandra.crypto.<Name>KeyProviderFactory`.
    Qualified,
    /// `secret_key_provider_factory_class=<Name>KeyProviderFactory` (no `key_provider`).
    Legacy,
    /// Neither: LocalFileSystemKeyProviderFactory by default (local only).
    Absent,
}

#[derive(Clone)]
struct Spec {
    keyspace: String,
    table: String,
    /// Folder relative to the output root.
    dir: String,
    location: String,
    version: &'static str,
    generation: String,
    provider: Provider,
    provider_option: ProviderOption,
    mode: Mode,
    bits: u32,
    key: Vec<u8>,
    /// 2026.2 layout: ComponentsDigests (tag 12) and the trailing CRC.
    crc: bool,
    /// Every component but TOC.txt and Scylla.db encrypted; false: Data.db only.
    all_components: bool,
    /// LZ4Compressor + CompressionInfo.db; false: plain Data.db + CRC.db.
    compressed: bool,
    /// The compressor class by its simple name (Cassandra's way) instead of the qualified one.
    simple_class_name: bool,
    /// A Scylla.db entry with tag 200, unknown to every reader.
    unknown_tag: bool,
    /// Data.db plaintext: chunks of at most CHUNK bytes when compressed, any sizes otherwise.
    pieces: Vec<Piece>,
    /// Plain length of Index.db (chosen to cover the file-size cases of FORMAT.md 4.3).
    index_len: usize,
}

impl Spec {
    fn prefix(&self) -> String {
        format!("{}-{}-big-", self.version, self.generation)
    }

    fn components(&self) -> Vec<&'static str> {
        let mut v = vec!["Data.db"];
        v.push(if self.compressed {
            "CompressionInfo.db"
        } else {
            "CRC.db"
        });
        v.extend([
            "Digest.crc32",
            "Filter.db",
            "Index.db",
            "Scylla.db",
            "Statistics.db",
            "Summary.db",
            "TOC.txt",
        ]);
        v
    }

    fn provider_kind(&self) -> &'static str {
        match self.provider {
            Provider::Local { .. } => "local",
            Provider::Kmip { .. } => "kmip",
        }
    }

    /// `scylla_encryption_options`, sorted by key (a std::map).
    fn options(&self) -> BTreeMap<String, String> {
        let mut o = BTreeMap::new();
        o.insert(
            "cipher_algorithm".to_string(),
            self.mode.transformation().to_string(),
        );
        o.insert("secret_key_strength".to_string(), self.bits.to_string());
        let factory = match self.provider {
            Provider::Local { .. } => "LocalFileSystemKeyProviderFactory",
            Provider::Kmip { .. } => "KmipKeyProviderFactory",
        };
        match self.provider_option {
            ProviderOption::Plain => {
                o.insert("key_provider".into(), factory.into());
            }
            ProviderOption::Qualified => {
                o.insert("key_provider".into(), format!("{PROVIDER_PREFIX}{factory}"));
            }
            ProviderOption::Legacy => {
                o.insert("secret_key_provider_factory_class".into(), factory.into());
            }
            ProviderOption::Absent => {
                assert!(
                    matches!(self.provider, Provider::Local { .. }),
                    "{}",
                    self.table
                )
            }
        }
        match &self.provider {
            Provider::Local { file } => o.insert("secret_key_file".into(), file.clone()),
            Provider::Kmip { .. } => o.insert("kmip_host".into(), KMIP_HOST.into()),
        };
        o
    }
}

// ------------------------------------------------------------------ the plain SSTable

struct PlainSst {
    files: BTreeMap<&'static str, Vec<u8>>,
    data_length: usize,
    chunk_length: usize,
    chunks: usize,
    /// SHA-256 of the uncompressed Data.db content (the rows).
    rows_sha256: String,
}

fn plain_sstable(s: &Spec, rng: &mut Rng) -> PlainSst {
    let mut row = rng.below(1_000_000);
    let pieces: Vec<Vec<u8>> = s
        .pieces
        .iter()
        .map(|p| match *p {
            Piece::Text(n) => text(rng, &mut row, n),
            Piece::Random(n) => rng.bytes(n),
        })
        .collect();
    let rows: Vec<u8> = pieces.concat();
    let mut files = BTreeMap::new();

    let (data, chunk_length, chunks) = if s.compressed {
        // FORMAT.md 1.2–1.3: LZ4Compressor chunk = u32le plain length || raw LZ4 block, then
        // u32be CRC32 of the chunk bytes; CompressionInfo.db without maxCompressedLength (mc–me).
        for (i, p) in pieces.iter().enumerate() {
            assert!(p.len() <= CHUNK && (i + 1 == pieces.len() || p.len() == CHUNK));
        }
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for p in &pieces {
            let mut c = (p.len() as u32).to_le_bytes().to_vec();
            c.extend_from_slice(&lz4_flex::block::compress(p));
            offsets.push(data.len() as u64);
            data.extend_from_slice(&c);
            data.extend_from_slice(&crc32fast::hash(&c).to_be_bytes());
        }
        let mut ci = Vec::new();
        write_utf(
            &mut ci,
            if s.simple_class_name {
                "LZ4Compressor"
            } else {
                LZ4_CLASS
            },
        );
        ci.extend_from_slice(&0i32.to_be_bytes());
        ci.extend_from_slice(&(CHUNK as i32).to_be_bytes());
        ci.extend_from_slice(&(rows.len() as i64).to_be_bytes());
        ci.extend_from_slice(&(offsets.len() as i32).to_be_bytes());
        for o in &offsets {
            ci.extend_from_slice(&(*o as i64).to_be_bytes());
        }
        files.insert("CompressionInfo.db", ci);
        (data, CHUNK, pieces.len())
    } else {
        // CRC.db: u32be chunk length, then u32be CRC32 of each chunk of Data.db (Cassandra's
        // ChecksumWriter; FORMAT.md has no section on it, see testdata/README.md).
        let mut crc = Vec::new();
        be32(&mut crc, CRC_CHUNK as u32);
        for c in rows.chunks(CRC_CHUNK) {
            be32(&mut crc, crc32fast::hash(c));
        }
        files.insert("CRC.db", crc);
        (rows.clone(), CRC_CHUNK, rows.len().div_ceil(CRC_CHUNK))
    };
    files.insert(
        "Digest.crc32",
        crc32fast::hash(&data).to_string().into_bytes(),
    );
    files.insert("Data.db", data);

    // Placeholders of realistic sizes (see the top).
    files.insert("Index.db", index_bytes(rng, "partition", s.index_len));
    let summary_len = 120 + rng.below(400) as usize;
    files.insert("Summary.db", index_bytes(rng, "summary", summary_len));
    let mut filter = Vec::new();
    be32(&mut filter, 3 + rng.below(5) as u32);
    let words = 2 + rng.below(60) as usize;
    be32(&mut filter, words as u32);
    filter.extend_from_slice(&rng.bytes(8 * words));
    files.insert("Filter.db", filter);
    files.insert("Statistics.db", statistics(s, rng));
    files.insert(
        "TOC.txt",
        s.components()
            .iter()
            .map(|c| format!("{c}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    PlainSst {
        files,
        data_length: rows.len(),
        chunk_length,
        chunks,
        rows_sha256: sha256_hex(&rows),
    }
}

/// Statistics.db in the mc–me layout: `i32 count | (i32 type, i32 offset) x count | components`,
/// offsets absolute and increasing, no checksums (FORMAT.md 2.6). Component 0 (validation) holds
/// the partitioner name and the bloom filter chance as Cassandra writes them; the others are
/// placeholders, the stats one a few KiB like real histograms.
fn statistics(s: &Spec, rng: &mut Rng) -> Vec<u8> {
    let mut validation = Vec::new();
    write_utf(
        &mut validation,
        "org.apache.cassandra.dht.Murmur3Partitioner",
    );
    validation.extend_from_slice(&0.01f64.to_be_bytes());
    let placeholder = |rng: &mut Rng, t: u32, n: usize| {
        let mut b = format!(
            "placeholder metadata component {t} of {}/{}Statistics.db: ",
            s.dir,
            s.prefix()
        )
        .into_bytes();
        while b.len() < n {
            b.extend_from_slice(&rng.bytes(8));
        }
        b.truncate(n);
        b
    };
    let compaction_len = 150 + rng.below(100) as usize;
    let stats_len = 3000 + rng.below(4000) as usize;
    let header_len = 120 + rng.below(200) as usize;
    let comps = [
        (0u32, validation),
        (1, placeholder(rng, 1, compaction_len)),
        (2, placeholder(rng, 2, stats_len)),
        (3, placeholder(rng, 3, header_len)),
    ];
    let mut out = Vec::new();
    be32(&mut out, comps.len() as u32);
    let mut pos = 4 + 8 * comps.len();
    for (t, body) in &comps {
        be32(&mut out, *t);
        be32(&mut out, pos as u32);
        pos += body.len();
    }
    for (_, body) in &comps {
        out.extend_from_slice(body);
    }
    out
}

// ------------------------------------------------------------------ Scylla.db (FORMAT.md 4.5, 4.6)

/// `scylla_encryption_options`: the IDL map<string, string>, little-endian, sorted by key.
fn le_options(options: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = (options.len() as u32).to_le_bytes().to_vec();
    for (k, v) in options {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Fisher–Yates with the SSTable's generator: ScyllaDB keeps entries and attributes in hash maps,
/// so files list them in no particular order.
fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

struct ScyllaDb {
    bytes: Vec<u8>,
    /// Tags in file order.
    tags: Vec<u32>,
    /// SHA-256 over the raw bytes of every entry but tag 3, in file order (the oracle's
    /// `scylla_db_other_entries_sha256`).
    other_entries_sha256: String,
    /// SHA-256 over the attributes other than the three encryption ones, sorted by key, each as
    /// `u32be len || key || u32be len || value` (the oracle's `other_extension_attributes_sha256`).
    other_attributes_sha256: String,
    sstable_identifier: [u8; 16],
}

fn scylla_db(
    s: &Spec,
    rng: &mut Rng,
    plain: &BTreeMap<&'static str, Vec<u8>>,
    mask: u32,
) -> ScyllaDb {
    // Tag 3: the encryption attributes, plus one more to carry.
    let mut attrs: Vec<(Vec<u8>, Vec<u8>)> = vec![(
        b"scylla_encryption_options".to_vec(),
        le_options(&s.options()),
    )];
    if let Provider::Kmip { id, .. } = &s.provider {
        attrs.push((b"scylla_key_id".to_vec(), kmip_key_id(id)));
    }
    attrs.push((
        b"encrypted_components".to_vec(),
        mask.to_le_bytes().to_vec(),
    ));
    let other_attrs = vec![(
        b"x-sstable-rekey-test".to_vec(),
        format!("carried unchanged: {}/{}", s.dir, s.prefix()).into_bytes(),
    )];
    attrs.extend(other_attrs.iter().cloned());
    shuffle(rng, &mut attrs);
    let mut ext = Vec::new();
    be32(&mut ext, attrs.len() as u32);
    for (k, v) in &attrs {
        str32(&mut ext, k);
        str32(&mut ext, v);
    }
    let mut h = sha2::Sha256::new();
    for (k, v) in &other_attrs {
        let mut b = Vec::new();
        str32(&mut b, k);
        str32(&mut b, v);
        h.update(&b);
    }
    let other_attributes_sha256 = hex(&h.finalize());

    let mut entries: Vec<(u32, Vec<u8>)> = vec![(3, ext)];
    // 1 Sharding: one range of Murmur3 tokens (i64 BE), both ends inclusive.
    let (a, b) = (rng.next() as i64, rng.next() as i64);
    let mut sharding = Vec::new();
    be32(&mut sharding, 1);
    sharding.push(0);
    str16(&mut sharding, &a.min(b).to_be_bytes());
    sharding.push(0);
    str16(&mut sharding, &a.max(b).to_be_bytes());
    entries.push((1, sharding));
    // 2 Features: bits 0-6.
    entries.push((2, 0x7fu64.to_be_bytes().to_vec()));
    // 4 RunIdentifier.
    entries.push((4, random_uuid(rng).to_vec()));
    // 5 LargeDataStats: partition size, row size, cell size.
    let mut lds = Vec::new();
    be32(&mut lds, 3);
    for (t, max, threshold) in [
        (1u32, plain["Data.db"].len() as u64 * 3, 1000u64 << 20),
        (2, 2000 + rng.below(2000), 10 << 20),
        (3, 100 + rng.below(400), 1 << 20),
    ] {
        be32(&mut lds, t);
        lds.extend_from_slice(&max.to_be_bytes());
        lds.extend_from_slice(&threshold.to_be_bytes());
        be32(&mut lds, 0);
    }
    entries.push((5, lds));
    // 6 SSTableOrigin, 7 ScyllaBuildId, 8 ScyllaVersion.
    let origin: &[u8] = if rng.below(2) == 0 {
        b"memtable"
    } else {
        b"compaction"
    };
    let mut e = Vec::new();
    str32(&mut e, origin);
    entries.push((6, e));
    let mut e = Vec::new();
    str32(&mut e, rng.hex(20).as_bytes());
    entries.push((7, e));
    let version = if s.crc {
        "2026.2.1-0.20260820.f4a4091c2e7b"
    } else {
        "2025.1.9-0.20250610.8b6a2c4d1e3f"
    };
    let mut e = Vec::new();
    str32(&mut e, version.as_bytes());
    entries.push((8, e));
    // 9 ExtTimestampStats: min and max live timestamp (µs).
    let ts = 1_780_000_000_000_000i64 + rng.below(1 << 40) as i64;
    let mut e = Vec::new();
    be32(&mut e, 2);
    be32(&mut e, 1);
    e.extend_from_slice(&ts.to_be_bytes());
    be32(&mut e, 2);
    e.extend_from_slice(&(ts + rng.below(1 << 30) as i64).to_be_bytes());
    entries.push((9, e));
    // 10 SSTableIdentifier: the generation's UUID, or a time-UUID for an integer generation.
    let sstable_identifier = if s.generation.contains('_') {
        generation_uuid(&s.generation)
    } else {
        // 2026-08-01 (day 162093 since 1582-10-15) + up to a day, in 100 ns.
        let ts = (162_093 * 86_400 + rng.below(86_400)) * 10_000_000 + rng.below(10_000_000);
        time_uuid(ts, (rng.next() | (1 << 63)) & !(1 << 62))
    };
    entries.push((10, sstable_identifier.to_vec()));
    if s.crc {
        // 11 Schema (2025.4+): table id (the folder's), schema version, names, columns.
        let mut e = uuid_from_hex(s.dir.rsplit('-').next().unwrap()).to_vec();
        e.extend_from_slice(&time_uuid(
            162_090 * 86_400 * 10_000_000 + rng.below(1 << 40),
            (rng.next() | (1 << 63)) & !(1 << 62),
        ));
        str32(&mut e, s.keyspace.as_bytes());
        str32(&mut e, s.table.as_bytes());
        let cols: [(u8, &str, &str); 3] = [
            (1, "pk", "org.apache.cassandra.db.marshal.Int32Type"),
            (2, "ck", "org.apache.cassandra.db.marshal.UTF8Type"),
            (4, "val", "org.apache.cassandra.db.marshal.BytesType"),
        ];
        be32(&mut e, cols.len() as u32);
        for (kind, name, ty) in cols {
            e.push(kind);
            str32(&mut e, name.as_bytes());
            str32(&mut e, ty.as_bytes());
        }
        entries.push((11, e));
        // 12 ComponentsDigests: CRC32 of the plaintext of every listed component present.
        let mut digests: Vec<(u32, u32)> = plain
            .iter()
            .filter(|(c, _)| {
                [
                    "Index.db",
                    "CompressionInfo.db",
                    "Data.db",
                    "TOC.txt",
                    "Summary.db",
                    "Filter.db",
                    "Statistics.db",
                ]
                .contains(c)
            })
            .map(|(c, b)| (component_number(c), crc32fast::hash(b)))
            .collect();
        shuffle(rng, &mut digests);
        let mut e = Vec::new();
        be32(&mut e, digests.len() as u32);
        for (c, crc) in digests {
            be32(&mut e, c);
            be32(&mut e, crc);
        }
        entries.push((12, e));
        // 13 LargeDataRecords: one record.
        let mut e = Vec::new();
        be32(&mut e, 1);
        be32(&mut e, 1);
        str32(&mut e, &(rng.below(1 << 31) as u32).to_be_bytes());
        str32(&mut e, b"");
        str32(&mut e, b"");
        for v in [plain["Data.db"].len() as u64, 3, 0, 0] {
            e.extend_from_slice(&v.to_be_bytes());
        }
        entries.push((13, e));
    }
    if s.unknown_tag {
        entries.push((200, b"an entry no reader knows: carry it as it is".to_vec()));
    }
    shuffle(rng, &mut entries);

    let mut bytes = Vec::new();
    be32(&mut bytes, entries.len() as u32);
    let mut other = sha2::Sha256::new();
    for (tag, payload) in &entries {
        let mut e = Vec::new();
        be32(&mut e, *tag);
        str32(&mut e, payload);
        if *tag != 3 {
            other.update(&e);
        }
        bytes.extend_from_slice(&e);
    }
    if s.crc {
        let crc = crc32fast::hash(&bytes);
        be32(&mut bytes, crc);
    }
    ScyllaDb {
        bytes,
        tags: entries.iter().map(|(t, _)| *t).collect(),
        other_entries_sha256: hex(&other.finalize()),
        other_attributes_sha256,
        sstable_identifier,
    }
}

// ------------------------------------------------------------------ writing

/// Writes one SSTable and returns its MANIFEST entry.
fn write_sstable(root: &Path, s: &Spec) -> Value {
    let dir = root.join(&s.dir);
    fs::create_dir_all(&dir).unwrap();
    let label = format!("scylla {}/{}", s.dir, s.prefix());
    let mut rng = Rng::from_label(&label);
    let plain = plain_sstable(s, &mut rng);
    let mut files = plain.files;
    assert_eq!(
        files.keys().count() + 1,
        s.components().len(),
        "{label}: every component but Scylla.db"
    );

    // Which files are encrypted (FORMAT.md 4.1) and the mask naming the non-Data ones.
    let encrypted: Vec<&'static str> = s
        .components()
        .into_iter()
        .filter(|c| *c == "Data.db" || (s.all_components && !matches!(*c, "TOC.txt" | "Scylla.db")))
        .collect();
    let mask = encrypted
        .iter()
        .filter(|c| **c != "Data.db")
        .fold(0u32, |m, c| m | 1 << component_number(c));
    let sdb = scylla_db(s, &mut rng, &files, mask);
    files.insert("Scylla.db", sdb.bytes.clone());

    let key = FileKey::new(&s.key, s.bits, s.mode);
    let mut components = serde_json::Map::new();
    let mut all = sha2::Sha256::new();
    for (c, body) in &files {
        let enc = encrypted.contains(c);
        let disk = if enc { key.seal(body) } else { body.clone() };
        fs::write(dir.join(format!("{}{c}", s.prefix())), &disk).unwrap();
        components.insert(
            c.to_string(),
            json!({
                "plaintext_sha256": sha256_hex(body),
                "size": body.len(),
                "disk_size": disk.len(),
                "encrypted": enc,
            }),
        );
        if !matches!(*c, "TOC.txt" | "Scylla.db") {
            all.update(c.as_bytes());
            all.update([0u8]);
            all.update(sha2::Sha256::digest(body));
        }
    }

    let (key_ref, key_id, key_file, keyring, scylla_key_id) = match &s.provider {
        Provider::Local { file } => (format!("file:{file}"), None, Some(file.clone()), None, None),
        Provider::Kmip { id, keyring } => (
            format!("kmip:{id}"),
            Some(id.clone()),
            None,
            Some(*keyring),
            Some(hex(&kmip_key_id(id))),
        ),
    };
    let options: serde_json::Map<String, Value> = s
        .options()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    json!({
        "vendor": "scylla",
        "data": format!("{}/{}Data.db", s.dir, s.prefix()),
        "keyspace": s.keyspace,
        "table": s.table,
        "location": s.location,
        "version": s.version,
        "generation": s.generation,
        "format": "big",
        "sstable_identifier": uuid_string(&sdb.sstable_identifier),
        "compressed": s.compressed,
        "compressor": if s.compressed {
            Some(if s.simple_class_name { "LZ4Compressor" } else { LZ4_CLASS })
        } else {
            None
        },
        "chunk_length": plain.chunk_length,
        "chunks": plain.chunks,
        "data_length": plain.data_length,
        "rows_sha256": plain.rows_sha256,
        "provider": s.provider_kind(),
        "key": key_ref,
        "key_id": key_id,
        "scylla_key_id": scylla_key_id,
        "kmip_host": matches!(s.provider, Provider::Kmip { .. }).then_some(KMIP_HOST),
        "keyring": keyring,
        "key_file": key_file,
        "key_bytes": s.key.len(),
        "cipher": s.mode.transformation(),
        "bits": s.bits,
        "options": options,
        "encrypted_components": mask,
        "all_components": s.all_components,
        "encrypted": encrypted,
        "trailing_crc": s.crc,
        "scylla_db_tags": sdb.tags,
        "components": components,
        "plaintext_sha256_all": hex(&all.finalize()),
        "scylla_db_other_entries_sha256": sdb.other_entries_sha256,
        "other_extension_attributes_sha256": sdb.other_attributes_sha256,
        "refuse": Value::Null,
    })
}

/// A snapshot of a table: byte copies of its SSTables (hard links in real life) in
/// `snapshots/<tag>/`, with the `manifest.json` and `schema.cql` a snapshot has.
fn snapshot(root: &Path, specs: &[Spec], entries: &[Value], tag: &str) -> Vec<Value> {
    let table_dir = &specs[0].dir;
    let to_rel = format!("{table_dir}/snapshots/{tag}");
    let to = root.join(&to_rel);
    fs::create_dir_all(&to).unwrap();
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (s, e) in specs.iter().zip(entries) {
        assert_eq!(&s.dir, table_dir);
        for c in s.components() {
            let name = format!("{}{c}", s.prefix());
            fs::copy(root.join(table_dir).join(&name), to.join(&name)).unwrap();
            names.push(name);
        }
        let mut e = e.clone();
        e["data"] = json!(format!("{to_rel}/{}Data.db", s.prefix()));
        e["location"] = json!(format!("snapshot:{tag}"));
        out.push(e);
    }
    names.sort();
    fs::write(
        to.join("manifest.json"),
        serde_json::to_string(&json!({ "files": names })).unwrap() + "\n",
    )
    .unwrap();
    let s = &specs[0];
    let opts: Vec<String> = s
        .options()
        .iter()
        .map(|(k, v)| format!("'{k}': '{v}'"))
        .collect();
    fs::write(
        to.join("schema.cql"),
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{} (\n    pk int,\n    ck text,\n    val blob,\n    PRIMARY KEY (pk, ck)\n) WITH scylla_encryption_options = {{{}}};\n",
            s.keyspace,
            s.table,
            opts.join(", ")
        ),
    )
    .unwrap();
    out
}

// ------------------------------------------------------------------ the data set

/// Plain lengths of Index.db, in turn: every file-size case of FORMAT.md 4.3 (a multiple of 16,
/// exactly one block, a cut inside the last block, and L ending in the last 16 bytes of a block so
/// that the cut *grows* the file with zero bytes).
const INDEX_LENS: [usize; 6] = [8187, 4096, 6001, 2051, 12283, 4800];

struct Keys<'a> {
    dse: &'a KeySet,
    ring: Vec<(&'static str, Vec<u8>)>,
    long: Vec<(Mode, u32, Vec<u8>)>,
}

impl Keys<'_> {
    fn scylla_ring(&self, id: &str) -> Vec<u8> {
        self.ring.iter().find(|(i, _)| *i == id).unwrap().1.clone()
    }

    fn long(&self, mode: Mode, bits: u32) -> Vec<u8> {
        self.long
            .iter()
            .find(|(m, b, _)| *m == mode && *b == bits)
            .unwrap()
            .2
            .clone()
    }

    fn write(&self, dir: &Path) {
        let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
        let mut ring = String::from(
            "# test-only keys: <KMIP id>:<base64 key> (ScyllaDB test data; see also ../../keys/keyring)\n",
        );
        for (id, k) in &self.ring {
            ring += &format!("{id}:{}\n", b64(k));
        }
        write_private(&dir.join("keyring"), ring.as_bytes());
        let long: String = self
            .long
            .iter()
            .map(|(m, bits, k)| format!("{}:{bits}:{}\n", m.transformation(), b64(k)))
            .collect();
        write_private(&dir.join("long.key"), long.as_bytes());
    }
}

/// Writes `scylla/` under `root` and returns its MANIFEST entries.
pub fn write_all(root: &Path, dse: &KeySet) -> Vec<Value> {
    use Piece::{Random as R, Text as T};
    check_test_vector();
    let p = root.join("scylla");
    if p.exists() {
        fs::remove_dir_all(&p).unwrap();
    }
    let keys = Keys {
        dse,
        ring: SCYLLA_RING
            .iter()
            .map(|(id, n)| {
                (
                    *id,
                    Rng::from_label(&format!("scylla keyring {id}")).bytes(*n),
                )
            })
            .collect(),
        long: LONG_KEYS
            .iter()
            .map(|(m, bits, n)| {
                let k = Rng::from_label(&format!("scylla long.key {} {bits}", m.transformation()))
                    .bytes(*n);
                (*m, *bits, k)
            })
            .collect(),
    };
    keys.write(&root.join("scylla/keys"));
    let mut manifest = Vec::new();
    let mut n = 0usize;
    let mut spec = |ks: &str, table: &str, generation: &str, provider: Provider, key: Vec<u8>| {
        n += 1;
        Spec {
            keyspace: ks.into(),
            table: table.into(),
            dir: table_dir(DATA_DIR, ks, table),
            location: "live".into(),
            version: "me",
            generation: generation.into(),
            provider,
            provider_option: ProviderOption::Plain,
            mode: Mode::Cbc,
            bits: 128,
            key,
            crc: true,
            all_components: true,
            compressed: true,
            simple_class_name: false,
            unknown_tag: false,
            pieces: vec![T(CHUNK), R(CHUNK), T(CHUNK), T(1234)],
            index_len: INDEX_LENS[n % INDEX_LENS.len()],
        }
    };
    let local_old = || Provider::Local {
        file: "keys/old.key".into(),
    };
    let kmip = |id: &str, keyring: &'static str| Provider::Kmip {
        id: id.into(),
        keyring,
    };

    // scylla_matrix: provider x mode x strength, one table each; in every table four SSTables:
    // generation 1 = 2026.2 layout (ComponentsDigests + trailing CRC), all components encrypted;
    // 2 = 2026.2, Data.db only; 3 = 2025.1 layout (no tag 12, no CRC), all; 4 = 2025.1, Data.db only.
    for provider in ["kmip", "local"] {
        for mode in [Mode::Cbc, Mode::Ecb] {
            for bits in [128u32, 192, 256] {
                let table = format!("t_{provider}_{}_{bits}", mode.name());
                for (g, crc, all, pieces) in [
                    ("1", true, true, vec![T(CHUNK), R(CHUNK), T(CHUNK), T(1234)]),
                    ("2", true, false, vec![T(CHUNK), T(3000)]),
                    ("3", false, true, vec![T(CHUNK), R(CHUNK), T(100)]),
                    ("4", false, false, vec![T(CHUNK), T(CHUNK), R(2222)]),
                ] {
                    let (prov, key) = if provider == "kmip" {
                        let id = format!("old-{bits}");
                        (kmip(&id, "keys/keyring"), keys.dse.ring(&id))
                    } else {
                        (local_old(), keys.dse.old_file_key(mode, bits))
                    };
                    let mut s = spec("scylla_matrix", &table, g, prov, key);
                    s.mode = mode;
                    s.bits = bits;
                    s.crc = crc;
                    s.all_components = all;
                    s.pieces = pieces;
                    manifest.push(write_sstable(root, &s));
                }
            }
        }
    }

    // scylla_edge: one thing each.
    let edge = "scylla_edge";
    // A Scylla.db entry with an unknown tag (200), to carry.
    let mut s = spec(
        edge,
        "t_unknown_tag",
        "1",
        kmip("old-128", "keys/keyring"),
        keys.dse.ring("old-128"),
    );
    s.unknown_tag = true;
    manifest.push(write_sstable(root, &s));
    // Keys longer than strength/8 (FORMAT.md 4.2): AES takes the first strength/8 bytes, the IV
    // key hashes all of them.
    for (g, mode, bits, crc) in [("1", Mode::Cbc, 128u32, true), ("2", Mode::Ecb, 256, false)] {
        let mut s = spec(
            edge,
            "t_long_key",
            g,
            Provider::Local {
                file: "scylla/keys/long.key".into(),
            },
            keys.long(mode, bits),
        );
        s.mode = mode;
        s.bits = bits;
        s.crc = crc;
        manifest.push(write_sstable(root, &s));
    }
    // A time-UUID generation, and a KMIP id in UUID form (scylla_key_id = its 16 bytes).
    let id = SCYLLA_RING[0].0;
    let mut s = spec(
        edge,
        "t_uuid",
        UUID_GENERATION,
        kmip(id, "scylla/keys/keyring"),
        keys.scylla_ring(id),
    );
    s.bits = 256;
    s.pieces = vec![T(CHUNK), R(CHUNK), T(3000)];
    manifest.push(write_sstable(root, &s));
    // A 15-byte KMIP id (scylla_key_id = bytes + 00 02), ECB 192, 2025.1 layout.
    let id = SCYLLA_RING[1].0;
    let mut s = spec(
        edge,
        "t_kmip_id15",
        "1",
        kmip(id, "scylla/keys/keyring"),
        keys.scylla_ring(id),
    );
    s.mode = Mode::Ecb;
    s.bits = 192;
    s.crc = false;
    manifest.push(write_sstable(root, &s));
    // Uncompressed: plain Data.db and CRC.db (mask 0x1F1 with all components).
    for (g, crc, all) in [("1", true, true), ("2", false, true)] {
        let mut s = spec(
            edge,
            "t_uncompressed",
            g,
            local_old(),
            keys.dse.old_file_key(Mode::Cbc, 256),
        );
        s.bits = 256;
        s.compressed = false;
        s.crc = crc;
        s.all_components = all;
        s.pieces = if g == "1" {
            vec![T(40_000), R(30_000), T(31_234)]
        } else {
            vec![T(65_536), T(9_000)]
        };
        manifest.push(write_sstable(root, &s));
    }
    // Ways to name the provider: none (local by default), the DSE-qualified name, the older
    // option `secret_key_provider_factory_class`.
    for (g, opt, kmip_provider) in [
        ("1", ProviderOption::Absent, false),
        ("2", ProviderOption::Qualified, true),
        ("3", ProviderOption::Legacy, false),
        ("4", ProviderOption::Qualified, false),
    ] {
        let (prov, key) = if kmip_provider {
            (kmip("old-128", "keys/keyring"), keys.dse.ring("old-128"))
        } else {
            (local_old(), keys.dse.old_file_key(Mode::Ecb, 128))
        };
        let mut s = spec(edge, "t_provider_names", g, prov, key);
        if !kmip_provider {
            s.mode = Mode::Ecb;
        }
        s.provider_option = opt;
        s.crc = g != "3";
        s.pieces = vec![T(CHUNK), T(2500)];
        manifest.push(write_sstable(root, &s));
    }
    // Older BIG versions ScyllaDB also writes and reads: `mc` (with the compressor's simple
    // name, as Cassandra writes it) and `md`.
    for (g, version) in [("1", "mc"), ("2", "md")] {
        let mut s = spec(
            edge,
            "t_versions",
            g,
            kmip("old-256", "keys/keyring"),
            keys.dse.ring("old-256"),
        );
        s.version = version;
        s.bits = 256;
        s.crc = false;
        s.simple_class_name = version == "mc";
        s.pieces = vec![T(CHUNK), R(3333)];
        manifest.push(write_sstable(root, &s));
    }
    // A table with a snapshot (both SSTables copied into snapshots/snap1/).
    let mut snap_specs = Vec::new();
    let mut snap_entries = Vec::new();
    for (g, crc) in [("1", true), ("2", false)] {
        let mut s = spec(
            edge,
            "t_snap",
            g,
            local_old(),
            keys.dse.old_file_key(Mode::Cbc, 128),
        );
        s.crc = crc;
        s.pieces = vec![T(CHUNK), R(CHUNK), T(777)];
        let e = write_sstable(root, &s);
        manifest.push(e.clone());
        snap_entries.push(e);
        snap_specs.push(s);
    }
    manifest.extend(snapshot(root, &snap_specs, &snap_entries, "snap1"));
    manifest
}
