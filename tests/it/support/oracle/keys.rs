//! Keys of the oracle tests (tests/it/oracle_interop.rs, tests/it/oracle_bti.rs): the classes, ciphers
//! and strengths of the combos, a KMIP key or a DSE local key file as the oracle and sstable-rekey
//! each name it, and the keys of one test (a keyring for KMIP, key files made by the oracle).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use serde_json::Value;

use super::{expect_exit, hex, oracle_ok, os, random_key, rekey_tool, write_private};

pub const CLASSES: [&str; 2] = ["Encryptor", "EncryptingLZ4Compressor"];
pub const CIPHERS: [&str; 2] = ["AES/CBC/PKCS5Padding", "AES/ECB/PKCS5Padding"];
pub const STRENGTHS: [u32; 2] = [128, 256];
pub const KMIP_GROUP: &str = "kmip1";

/// The oracle's `plain-digest` of an original, computed once per test binary.
pub fn plain_digest(shared: &Path, data: &Path) -> Value {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Value>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(data) {
        return v.clone();
    }
    let v = oracle_ok(shared, &[OsString::from("plain-digest"), data.into()]);
    cache.lock().unwrap().insert(data.to_path_buf(), v.clone());
    v
}

#[derive(Debug, Clone)]
pub enum Key {
    /// A KMIP key, resolved by sstable-rekey through the keyring and given to the oracle as ID:HEX.
    Kmip { id: String, key: Vec<u8> },
    /// A DSE local key file (one line per cipher and strength).
    Local { file: PathBuf },
}

impl Key {
    pub fn keyref(&self) -> String {
        match self {
            Key::Kmip { id, .. } => format!("kmip://{KMIP_GROUP}/{id}"),
            Key::Local { file } => format!("file:{}", file.display()),
        }
    }

    pub fn encrypt_args(&self, strength: u32) -> Vec<OsString> {
        match self {
            Key::Kmip { id, key } => {
                assert_eq!(key.len() * 8, strength as usize, "KMIP key {id} strength");
                os(&[
                    "--provider",
                    "kmip",
                    "--kmip-group",
                    KMIP_GROUP,
                    "--key-id",
                    id,
                    "--key-hex",
                    &hex(key),
                ])
            }
            Key::Local { file } => {
                vec![
                    "--provider".into(),
                    "local".into(),
                    "--local-key-file".into(),
                    file.into(),
                ]
            }
        }
    }

    pub fn verify_args(&self) -> Vec<OsString> {
        match self {
            Key::Kmip { id, key } => vec!["--key".into(), format!("{id}:{}", hex(key)).into()],
            Key::Local { file } => vec!["--local-key-file".into(), file.into()],
        }
    }

    /// How the oracle names this key in `key_refs`.
    pub fn oracle_ref(&self, cipher: &str, strength: u32) -> String {
        match self {
            Key::Kmip { id, .. } => id.clone(),
            Key::Local { .. } => format!("local:{cipher}:{strength}"),
        }
    }

    /// How sstable-rekey's reports name this key.
    pub fn report_ref(&self) -> String {
        match self {
            Key::Kmip { id, .. } => format!("kmip://{KMIP_GROUP}/{id}"),
            Key::Local { file } => format!("file:{}", fs::canonicalize(file).unwrap().display()),
        }
    }

    /// The CompressionInfo options must name this key's provider (FORMAT.md 2.1).
    pub fn check_options(&self, opts: &Value, what: &str) {
        match self {
            Key::Kmip { .. } => {
                assert_eq!(
                    opts["key_provider"], "KmipKeyProviderFactory",
                    "{what}: {opts}"
                );
                assert_eq!(opts["kmip_host"], KMIP_GROUP, "{what}: {opts}");
                assert!(opts.get("secret_key_file").is_none(), "{what}: {opts}");
            }
            Key::Local { file } => {
                assert_eq!(
                    opts["key_provider"], "LocalFileSystemKeyProviderFactory",
                    "{what}: {opts}"
                );
                let named = PathBuf::from(opts["secret_key_file"].as_str().unwrap_or(""));
                assert_eq!(
                    fs::canonicalize(&named).ok(),
                    Some(fs::canonicalize(file).unwrap()),
                    "{what}: secret_key_file must name the new key file: {opts}"
                );
                assert!(opts.get("kmip_host").is_none(), "{what}: {opts}");
            }
        }
    }
}

/// Keys of one test: KMIP keys go into the keyring, local key files are made by the oracle.
/// See [`Keys::matrix`].
pub struct MatrixKeys {
    pub a128: Key,
    pub b128: Key,
    pub a256: Key,
    pub b256: Key,
    pub local_a: Key,
    pub local_b: Key,
    pub ring: PathBuf,
}

pub struct Keys {
    dir: PathBuf,
    shared: PathBuf,
    ring: Vec<(String, Vec<u8>)>,
}

impl Keys {
    pub fn new(shared: &Path, dir: &Path) -> Keys {
        fs::create_dir_all(dir).unwrap();
        Keys {
            dir: dir.to_path_buf(),
            shared: shared.to_path_buf(),
            ring: Vec::new(),
        }
    }

    pub fn kmip(&mut self, id: &str, bits: u32) -> Key {
        let key = random_key(bits);
        self.ring.push((id.to_string(), key.clone()));
        Key::Kmip {
            id: id.to_string(),
            key,
        }
    }

    /// A local key file with one fresh key for each (cipher, strength).
    pub fn local(&self, name: &str, specs: &[(&str, u32)]) -> Key {
        let file = self.dir.join(name);
        for (cipher, strength) in specs {
            let v = oracle_ok(
                &self.shared,
                &[
                    "keyfile".into(),
                    file.clone().into(),
                    "--cipher".into(),
                    (*cipher).into(),
                    "--strength".into(),
                    strength.to_string().into(),
                ],
            );
            assert_eq!(v["key_hex"].as_str().unwrap().len() as u32, strength / 4);
        }
        Key::Local { file }
    }

    /// Writes the keyring (mode 0600) and returns its path.
    /// The six keys of the matrix tests: KMIP ids of different lengths both ways (so chunk
    /// offsets and the blobs in index pages change length), and a pair of DSE key files.
    pub fn matrix(&mut self) -> MatrixKeys {
        let a128 = self.kmip("7", 128);
        let b128 = self.kmip("new-key-0017", 128);
        let a256 = self.kmip("0bf3c2a1-old-key-256-compromised", 256);
        let b256 = self.kmip("19", 256);
        let local_a = self.local("old.key", &all_specs());
        let local_b = self.local("new.key", &all_specs());
        MatrixKeys {
            a128,
            b128,
            a256,
            b256,
            local_a,
            local_b,
            ring: self.keyring(),
        }
    }

    pub fn keyring(&self) -> PathBuf {
        let path = self.dir.join("keyring");
        let mut text = String::from("# test keyring: <kmip id>:<base64 key>\n");
        for (id, key) in &self.ring {
            text.push_str(&format!(
                "{id}:{}\n",
                base64::engine::general_purpose::STANDARD.encode(key)
            ));
        }
        write_private(&path, &text);
        path
    }
}

/// One cell of the 16-cell matrix: class, provider (KMIP or a key file), cipher and strength.
#[derive(Debug, Clone, Copy)]
pub struct Combo {
    pub class: &'static str,
    pub kmip: bool,
    pub cipher: &'static str,
    pub strength: u32,
}

/// The 16 combos; bit 0 of the index picks the class, bit 1 the provider, bit 2 the cipher, bit 3
/// the strength.
pub fn combos() -> Vec<Combo> {
    (0..16)
        .map(|c| Combo {
            class: CLASSES[c & 1],
            kmip: c & 2 == 0,
            cipher: CIPHERS[(c >> 2) & 1],
            strength: STRENGTHS[(c >> 3) & 1],
        })
        .collect()
}

/// The three data dirs of a matrix test (KMIP 128-bit, KMIP 256-bit, local key files), each a
/// list of items that start under one key of [`MatrixKeys`] and move to another.
pub struct Buckets<I> {
    pub keys: MatrixKeys,
    kmip128: Vec<I>,
    kmip256: Vec<I>,
    local: Vec<I>,
}

impl<I> Buckets<I> {
    pub fn new(keys: MatrixKeys) -> Self {
        Buckets {
            keys,
            kmip128: Vec::new(),
            kmip256: Vec::new(),
            local: Vec::new(),
        }
    }

    /// The key an item of `combo` starts under, and the bucket it goes into.
    pub fn bucket(&mut self, combo: &Combo) -> (Key, &mut Vec<I>) {
        match (combo.kmip, combo.strength) {
            (true, 128) => (self.keys.a128.clone(), &mut self.kmip128),
            (true, _) => (self.keys.a256.clone(), &mut self.kmip256),
            (false, _) => (self.keys.local_a.clone(), &mut self.local),
        }
    }

    /// Each bucket as (folder name, items, target key).
    pub fn runs(&self) -> [(&'static str, &[I], &Key); 3] {
        [
            ("kmip128", &self.kmip128, &self.keys.b128),
            ("kmip256", &self.kmip256, &self.keys.b256),
            ("local", &self.local, &self.keys.local_b),
        ]
    }
}

pub fn all_specs() -> Vec<(&'static str, u32)> {
    CIPHERS
        .iter()
        .flat_map(|c| STRENGTHS.iter().map(move |s| (*c, *s)))
        .collect()
}

/// sstable-rekey's own proof over a rekeyed data dir: `verify --key <to>` (with `extra` flags,
/// e.g. `--deep`) passes and its report says `ok` for all `sstables`; returns that report.
pub fn verify_with_new_key(
    root: &Path,
    ring: &Path,
    data: &Path,
    to: &Key,
    extra: &[&str],
    sstables: usize,
) -> Value {
    let vreport = root.join("verify-report.json");
    let mut args: Vec<OsString> = vec!["verify".into(), "--key".into(), to.keyref().into()];
    args.extend(os(extra));
    args.extend([
        "--keyring".into(),
        ring.into(),
        "--data-dir".into(),
        data.into(),
        "--report".into(),
        vreport.clone().into(),
    ]);
    let out = rekey_tool(&args);
    expect_exit(
        &out,
        0,
        &format!("verify --key {} (the new key)", to.keyref()),
    );
    let vrep: Value = serde_json::from_str(&fs::read_to_string(&vreport).unwrap()).unwrap();
    assert_eq!(vrep["ok"], sstables, "verify report: {}", vrep["ok"]);
    vrep
}

/// `verify --key <old>` over the data dir fails (exit 1) for every old key (each once).
pub fn verify_fails_with_old_keys(
    ring: &Path,
    data: &Path,
    olds: impl IntoIterator<Item = String>,
) {
    let olds: BTreeSet<String> = olds.into_iter().collect();
    for old in olds {
        let out = rekey_tool(&[
            "verify".into(),
            "--key".into(),
            old.clone().into(),
            "--keyring".into(),
            ring.into(),
            "--data-dir".into(),
            data.into(),
        ]);
        expect_exit(
            &out,
            1,
            &format!("verify --key {old} (the old key) must fail"),
        );
    }
}
