//! What the suites share, one module per subject. None of it judges a result by the crate's
//! own opinion: the references are written here or come from ../shared.
//!
//! - this file: the built binary, testdata/ and its MANIFEST.json (plaintext digests), small
//!   helpers (hex, base64, SHA-256, a seeded PRNG, CI=true);
//! - `decrypt`: the independent decryptor (CompressionInfo.db options, the tests' keys, every
//!   encrypted record of an SSTable opened with the `cbc`/`aes` crates and `lz4_flex`);
//! - `files`: scratch copies on a fast file system, tree snapshots and diffs, modes;
//! - `run`: running the binary and collecting its exit, output and report;
//! - `dataset`: a data set of several tables, and the checks after a run or a crash;
//! - `cassandra`: an independent model of Cassandra's startup rule for transaction logs;
//! - `oracle`: the Python oracles of ../shared (workers, keys, the tool's runs);
//! - `scylla`: ScyllaDB's Scylla.db (FORMAT.md 4.5, 4.6) read and rewritten, to point the relative
//!   `secret_key_file` of testdata/scylla/ at a copy;
//! - `kmip`: the real PyKMIP server and PyKMIP's own client, for suites other than kmip.rs;
//! - `shim`, `inject`: fault injection (an LD_PRELOAD shim; a ptrace + seccomp injector);
//! - `alloc`: the counting global allocator of the test binary.

pub mod alloc;
pub mod cassandra;
mod dataset;
mod decrypt;
mod files;
#[cfg(target_arch = "x86_64")]
pub mod inject;
pub mod kmip;
pub mod oracle;
mod run;
mod scylla;
pub mod shim;

pub use dataset::*;
pub use decrypt::*;
pub use files::*;
pub use run::*;
pub use scylla::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
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
/// A count from the environment variable `var` (a replay or a longer trial), else `default`.
pub fn count_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}={s}: not a count"))
        })
        .unwrap_or(default)
}

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

/// Every entry of MANIFEST.json, DSE/HCD and ScyllaDB.
fn manifest_all() -> &'static Vec<Value> {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        let text =
            fs::read_to_string(testdata().join("MANIFEST.json")).expect("testdata/MANIFEST.json");
        let v: Value = serde_json::from_str(&text).expect("MANIFEST.json is JSON");
        let all = v["sstables"].as_array().expect("sstables").clone();
        for e in &all {
            let vendor = e["vendor"].as_str().expect("every entry has a vendor");
            assert!(vendor == "dse" || vendor == "scylla", "vendor {vendor}");
            assert_eq!(
                vendor == "scylla",
                e["data"].as_str().unwrap().starts_with("scylla/"),
                "{e}"
            );
        }
        all
    })
}

/// The DSE/HCD SSTables of MANIFEST.json (`vendor` `dse`: everything outside testdata/scylla/).
pub fn manifest() -> &'static Vec<Value> {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        manifest_all()
            .iter()
            .filter(|e| e["vendor"] == "dse")
            .cloned()
            .collect()
    })
}

/// The ScyllaDB SSTables of MANIFEST.json (`vendor` `scylla`, under testdata/scylla/).
pub fn scylla_manifest() -> &'static Vec<Value> {
    static M: OnceLock<Vec<Value>> = OnceLock::new();
    M.get_or_init(|| {
        manifest_all()
            .iter()
            .filter(|e| e["vendor"] == "scylla")
            .cloned()
            .collect()
    })
}
