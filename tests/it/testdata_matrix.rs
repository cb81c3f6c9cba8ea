//! The tool over the project's own test data (testdata/, written by tools/gen_testdata.rs).
//!
//! Every test runs the built binary on a scratch copy of testdata/ and judges the result with an
//! independent decryptor written here (the `cbc` crate for CBC and the `aes` block cipher for ECB,
//! through tests/it/support, `lz4_flex` to decompress), against the plaintext digests in testdata/MANIFEST.json, which were
//! computed from the plaintext when the data was generated: never against the tool's own opinion.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::tree_strict as tree;
use crate::support::*;
use serde_json::Value;

// ------------------------------------------------------------------ MANIFEST.json

/// The manifest entries of one table's live SSTables (its folder and index folders).
fn live_entries(ks: &str, table: &str) -> Vec<&'static Value> {
    manifest()
        .iter()
        .filter(|e| {
            e["keyspace"] == ks
                && e["table"] == table
                && !e["location"].as_str().unwrap().starts_with("snapshot")
        })
        .collect()
}

fn entry(ks: &str, table: &str) -> &'static Value {
    let v: Vec<_> = live_entries(ks, table)
        .into_iter()
        .filter(|e| e["location"] == "live")
        .collect();
    assert_eq!(
        v.len(),
        1,
        "{ks}.{table}: expected exactly one live SSTable in the manifest"
    );
    v[0]
}

// ------------------------------------------------------------------ the independent decryptor

/// The decryptor of tests/it/support over a Data.db, keys named as the chunk headers name them
/// ("kmip:<id>").
fn decrypt_sstable(data: &Path, keys: &Keys) -> Result<Opened, String> {
    Ok(open_sstable(data, keys, false)?.by_header_names())
}

// ------------------------------------------------------------------ a scratch copy and the binary

// A scratch copy of testdata/ with key files made private and relative `secret_key_file`
// options pointed at the copy (see testdata/README.md).
crate::scratch_env!(Env);

impl Env {
    fn new() -> Env {
        Env(Scratch::of(&[]))
    }

    /// `rekey -q --keyring keys/keyring` plus `args`.
    fn rekey(&self, args: &[&str]) -> Run {
        let mut v: Vec<String> = vec![
            "rekey".into(),
            "-q".into(),
            "--keyring".into(),
            self.s("keys/keyring"),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        self.run(&v)
    }

    fn verify(&self, args: &[&str]) -> Run {
        let mut v: Vec<String> = vec!["verify".into(), "--keyring".into(), self.s("keys/keyring")];
        v.extend(args.iter().map(|s| s.to_string()));
        self.run(&v)
    }

    /// The table folder `<rel>/<table>-<hex id>`.
    fn table(&self, ks_rel: &str, table: &str) -> PathBuf {
        let dir = self.p(ks_rel);
        table_dir(&dir, table)
    }
}

/// The Data.db files directly in a folder, sorted.
fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_str().unwrap().ends_with("-Data.db"))
        .collect();
    v.sort();
    v
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn no_txn_logs(dir: &Path) {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let logs: Vec<_> = files
        .iter()
        .filter(|f| f.to_str().unwrap().contains("_txn_"))
        .collect();
    assert!(logs.is_empty(), "transaction logs left behind: {logs:?}");
}

/// The only SSTable left in `dir`: asserts its name, that it decrypts with `keys` to the manifest
/// plaintext, that every encrypted chunk is under `want_key`, and that `old` keys open nothing.
fn check_rekeyed(
    dir: &Path,
    want_name: &str,
    e: &Value,
    keys: &Keys,
    want_key: &str,
    old: &Keys,
) -> Opened {
    let data = data_files(dir);
    assert_eq!(data.len(), 1, "{}: {data:?}", dir.display());
    let name = data[0].file_name().unwrap().to_str().unwrap();
    assert_eq!(name, want_name, "{}", dir.display());
    let d =
        decrypt_sstable(&data[0], keys).unwrap_or_else(|m| panic!("{}: {m}", data[0].display()));
    assert_eq!(
        d.sha256,
        e["plaintext_sha256"],
        "{}: plaintext differs from the manifest",
        data[0].display()
    );
    assert_eq!(d.chunk_keys.len() as u64, e["chunks"].as_u64().unwrap());
    assert_eq!(d.raw as u64, e["raw_chunks"].as_u64().unwrap());
    assert_eq!(
        d.key_set(),
        BTreeSet::from([want_key.to_string()]),
        "{}",
        data[0].display()
    );
    if d.raw < d.chunk_keys.len() {
        assert!(
            decrypt_sstable(&data[0], old).is_err(),
            "{}: still opens with the old key",
            data[0].display()
        );
    }
    d
}

fn old_gone(dir: &Path, old_prefix: &str) {
    let left: Vec<String> = file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with(old_prefix))
        .collect();
    assert!(
        left.is_empty(),
        "{}: files of the old generation left: {left:?}",
        dir.display()
    );
}

/// Report entries by the table they belong to (`edge.t_raw`), in report order.
fn by_table(rep: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in rep["sstables"].as_array().unwrap() {
        m.entry(s["table"].as_str().unwrap().to_string())
            .or_default()
            .push(s.clone());
    }
    m
}

fn json_map(pairs: &[(&str, u64)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect(),
    )
}

// ------------------------------------------------------------------ the committed data itself

#[test]
fn manifest_describes_every_sstable_and_old_keys_open_them() {
    let td = testdata();
    let mut all = Vec::new();
    walk(&td, &mut all);
    let on_disk: BTreeSet<String> = all
        .iter()
        .map(|p| p.strip_prefix(&td).unwrap().display().to_string())
        .filter(|p| p.ends_with("-Data.db"))
        // ScyllaDB SSTables: tests/it/scylla_testdata.rs.
        .filter(|p| !p.starts_with("scylla/"))
        .collect();
    let listed: BTreeSet<String> = manifest()
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        on_disk, listed,
        "MANIFEST.json and the Data.db files on disk disagree"
    );
    assert!(listed.len() >= 39, "{} SSTables", listed.len());
    for e in manifest() {
        let rel = e["data"].as_str().unwrap();
        if !e["refuse"].is_null() {
            // Made to be refused (tests/it/bad_input.rs); they do not follow the padding rule.
            assert!(rel.starts_with("refuse/"), "{rel}");
            continue;
        }
        let root = if rel.starts_with("demo/") {
            td.join("demo")
        } else {
            td.clone()
        };
        let keys = Keys::both(&root.join("keys/keyring"), &root.join("keys/old.key"));
        let d = decrypt_sstable(&td.join(rel), &keys).unwrap_or_else(|m| panic!("{rel}: {m}"));
        assert_eq!(d.sha256, e["plaintext_sha256"], "{rel}");
        assert_eq!(d.raw as u64, e["raw_chunks"].as_u64().unwrap(), "{rel}");
        let want = match e["provider"].as_str().unwrap() {
            "local" => "local".to_string(),
            _ => e["key"].as_str().unwrap().to_string(),
        };
        let mut want = BTreeSet::from([want]);
        if !e["headerless_chunks"].as_array().unwrap().is_empty() {
            want.insert("local".to_string());
        }
        if d.raw < d.chunk_keys.len() {
            assert_eq!(d.key_set(), want, "{rel}");
        }
        assert_eq!(
            d.ci.data_length,
            e["data_length"].as_u64().unwrap(),
            "{rel}"
        );
        assert_eq!(d.ci.chunk_length, 4096, "{rel}: chunk length");
        // TOC.txt lists every component present, itself included.
        let prefix = rel
            .rsplit('/')
            .next()
            .unwrap()
            .strip_suffix("Data.db")
            .unwrap();
        let dir = td.join(rel).parent().unwrap().to_path_buf();
        let toc: BTreeSet<String> = fs::read_to_string(dir.join(format!("{prefix}TOC.txt")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let present: BTreeSet<String> = file_names(&dir)
            .into_iter()
            .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
            .collect();
        assert_eq!(toc, present, "{rel}: TOC.txt");
    }
    // The test keys are what README.md says.
    let ring = Keys::keyring(&td.join("keys/keyring"));
    for id in [
        "old-128",
        "new-128",
        "old-256",
        "new-256",
        "old-192",
        "new-192",
        "other-128",
        UUID,
    ] {
        assert!(ring.ring.contains_key(id), "keyring lacks {id}");
    }
    assert_eq!(Keys::key_file(&td.join("keys/old.key")).file.len(), 6);
    assert!(
        !fs::read_to_string(td.join("keys/new.key"))
            .unwrap()
            .contains("\n\n"),
        "blank line in a key file"
    );
}

#[test]
fn inspect_names_the_keys_of_the_manifest_without_any_key() {
    let env = Env::new();
    let mut args: Vec<String> = vec!["inspect".into(), "--json".into()];
    let live: Vec<&Value> = manifest()
        .iter()
        .filter(|e| e["refuse"].is_null() && e["headerless_chunks"].as_array().unwrap().is_empty())
        .filter(|e| !e["data"].as_str().unwrap().starts_with("demo/"))
        .collect();
    for e in &live {
        args.push(env.s(e["data"].as_str().unwrap()));
    }
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    let out: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out.len(), live.len());
    for (i, e) in out.iter().zip(&live) {
        let rel = e["data"].as_str().unwrap();
        assert_eq!(i["data"], env.s(rel));
        assert_eq!(i["raw_chunks"], e["raw_chunks"], "{rel}");
        assert_eq!(i["chunks"], e["chunks"], "{rel}");
        let encrypted = e["chunks"].as_u64().unwrap() - e["raw_chunks"].as_u64().unwrap();
        // The tool names a KMIP key by its group (the table's kmip_host) and id.
        let key = match e["provider"].as_str().unwrap() {
            "local" => format!("file:{}", env.s("keys/old.key")),
            "kmip" => format!(
                "kmip://{}/{}",
                e["kmip_host"].as_str().unwrap(),
                e["key_id"].as_str().unwrap()
            ),
            _ => e["key"].as_str().unwrap().to_string(),
        };
        assert_eq!(i["keys"], json_map(&[(&key, encrypted)]), "{rel}");
    }
}

// ------------------------------------------------------------------ the matrix

const MATRIX: &str = "dd1/matrix";

struct MatrixTable {
    name: String,
    provider: &'static str,
    mode: &'static str,
    bits: u32,
}

fn matrix_tables() -> Vec<MatrixTable> {
    let mut v = Vec::new();
    for class in ["Encryptor", "EncryptingLZ4Compressor"] {
        for provider in ["kmip", "local"] {
            for mode in ["CBC", "ECB"] {
                for bits in [128, 256] {
                    v.push(MatrixTable {
                        name: format!("t_{class}_{provider}_{mode}_{bits}"),
                        provider,
                        mode,
                        bits,
                    });
                }
            }
        }
    }
    v
}

fn matrix_names(provider: &str, bits: Option<u32>) -> Vec<String> {
    matrix_tables()
        .into_iter()
        .filter(|t| t.provider == provider && bits.is_none_or(|b| b == t.bits))
        .map(|t| t.name)
        .collect()
}

/// The three rekey runs of the matrix: KMIP 128, KMIP 256 (both through the keyring) and key files.
fn rekey_matrix(env: &Env, report_dir: &Path) -> Vec<(Run, Value)> {
    let dd = env.s("dd1");
    let new_key = format!("file:{}", env.s("keys/new.key"));
    let mut out = Vec::new();
    for (to, tables, tag) in [
        (
            "kmip://kmip1/new-128".to_string(),
            matrix_names("kmip", Some(128)),
            "k128",
        ),
        (
            "kmip://kmip1/new-256".to_string(),
            matrix_names("kmip", Some(256)),
            "k256",
        ),
        (new_key, matrix_names("local", None), "local"),
    ] {
        let rep = report_dir.join(format!("{tag}.json"));
        let mut args: Vec<&str> = vec![
            "--to",
            &to,
            "--data-dir",
            &dd,
            "--report",
            rep.to_str().unwrap(),
            "matrix",
        ];
        args.extend(tables.iter().map(String::as_str));
        let r = env.rekey(&args);
        let v = env.report(&rep);
        out.push((r, v));
    }
    out
}

#[test]
fn matrix_rekey_to_the_new_keys() {
    let env = Env::new();
    let reports = tempfile::tempdir().unwrap();
    let runs = rekey_matrix(&env, reports.path());
    for ((r, rep), want) in runs.iter().zip([4u64, 4, 8]) {
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(rep["totals"]["rekeyed"], want, "{}", r.all());
        assert_eq!(rep["totals"]["failed"], 0);
        assert_eq!(rep["totals"]["chunks_rekeyed"], want * 4);
        assert_eq!(rep["sstables"].as_array().unwrap().len() as u64, want);
    }
    let keyring = env.p("keys/keyring");
    let new_file = env.p("keys/new.key");
    let old_file = Keys::key_file(&env.p("keys/old.key"));
    let old_ring = Keys::keyring(&keyring);
    let mut seen = 0;
    for t in matrix_tables() {
        let dir = env.table(MATRIX, &t.name);
        let e = entry("matrix", &t.name);
        let transformation = format!("AES/{}/PKCS5Padding", t.mode);
        let (want_key, old_key) = if t.provider == "kmip" {
            (
                format!("kmip:new-{}", t.bits),
                old_ring.ring[&format!("old-{}", t.bits)].clone(),
            )
        } else {
            (
                "local".to_string(),
                old_file.file[&(transformation.clone(), t.bits)].clone(),
            )
        };
        let d = check_rekeyed(
            &dir,
            "nb-2-big-Data.db",
            e,
            &Keys::both(&keyring, &new_file),
            &want_key,
            &Keys::forced(old_key),
        );
        old_gone(&dir, "nb-1-");
        no_txn_logs(&dir);
        // The components the rekey does not rewrite are the originals, unchanged.
        for c in [
            "Index.db",
            "Summary.db",
            "Filter.db",
            "Statistics.db",
            "TOC.txt",
        ] {
            let orig = fs::read(testdata().join(e["data"].as_str().unwrap().replace("Data.db", c)))
                .unwrap();
            assert_eq!(
                fs::read(dir.join(format!("nb-2-big-{c}"))).unwrap(),
                orig,
                "{}: {c}",
                t.name
            );
        }
        // The options now name the new key; the cipher is unchanged.
        assert_eq!(
            d.ci.option("cipher_algorithm"),
            Some(transformation.as_str())
        );
        assert_eq!(
            d.ci.option("secret_key_strength"),
            Some(t.bits.to_string().as_str())
        );
        if t.provider == "kmip" {
            assert_eq!(d.ci.option("key_provider"), Some("KmipKeyProviderFactory"));
            assert_eq!(d.ci.option("kmip_host"), Some("kmip1"));
        } else {
            assert_eq!(
                d.ci.option("key_provider"),
                Some("LocalFileSystemKeyProviderFactory")
            );
            assert_eq!(
                d.ci.option("secret_key_file"),
                Some(env.s("keys/new.key").as_str())
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 16);
    // Per SSTable in the reports: keys before and after.
    for (_, rep) in &runs {
        for s in rep["sstables"].as_array().unwrap() {
            assert_eq!(s["status"], "rekeyed", "{s}");
            assert_eq!(s["raw_chunks"], 0);
            let before: Vec<&String> = s["keys_before"].as_object().unwrap().keys().collect();
            let after: Vec<&String> = s["keys_after"].as_object().unwrap().keys().collect();
            assert_eq!(before.len(), 1);
            assert_eq!(after.len(), 1);
            assert!(before[0].contains("old"), "{s}");
            assert!(after[0].contains("new"), "{s}");
        }
    }
}

#[test]
fn matrix_verify_passes_with_the_new_keys_and_fails_with_the_old() {
    let env = Env::new();
    let reports = tempfile::tempdir().unwrap();
    for (r, _) in rekey_matrix(&env, reports.path()) {
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let dd = env.s("dd1");
    let new_file = format!("file:{}", env.s("keys/new.key"));
    let old_file = format!("file:{}", env.s("keys/old.key"));
    for (new, old, tables) in [
        (
            "kmip://kmip1/new-128".to_string(),
            "kmip://kmip1/old-128".to_string(),
            matrix_names("kmip", Some(128)),
        ),
        (
            "kmip://kmip1/new-256".to_string(),
            "kmip://kmip1/old-256".to_string(),
            matrix_names("kmip", Some(256)),
        ),
        (new_file, old_file, matrix_names("local", None)),
    ] {
        for (key, deep, want) in [(&new, false, 0), (&new, true, 0), (&old, false, 1)] {
            let mut args: Vec<&str> = vec!["--key", key, "--data-dir", &dd];
            if deep {
                args.push("--deep");
            }
            args.push("matrix");
            args.extend(tables.iter().map(String::as_str));
            let r = env.verify(&args);
            assert_eq!(
                r.code,
                want,
                "verify --key {key} (deep {deep}): {}",
                r.all()
            );
        }
    }
    // All matrix tables at once with every new key: exit 0.
    let r = env.verify(&[
        "--key",
        "kmip://kmip1/new-128",
        "--key",
        "kmip://kmip1/new-256",
        "--key",
        &format!("file:{}", env.s("keys/new.key")),
        "--data-dir",
        &dd,
        "matrix",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn matrix_second_rekey_is_a_no_op() {
    let env = Env::new();
    let reports = tempfile::tempdir().unwrap();
    for (r, _) in rekey_matrix(&env, reports.path()) {
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let before = tree(&env.root);
    let again = tempfile::tempdir().unwrap();
    for (r, rep) in rekey_matrix(&env, again.path()) {
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(rep["totals"]["rekeyed"], 0, "{}", r.all());
        for s in rep["sstables"].as_array().unwrap() {
            assert_eq!(s["status"], "skipped", "{s}");
        }
    }
    assert_eq!(diff(&before, &tree(&env.root)), Vec::<String>::new());
}

// ------------------------------------------------------------------ edge cases

const EDGE: &str = "dd1/edge";

fn new_keys(env: &Env) -> Keys {
    Keys::both(&env.p("keys/keyring"), &env.p("keys/new.key"))
}

fn old_128(env: &Env) -> Keys {
    Keys::forced(Keys::keyring(&env.p("keys/keyring")).ring["old-128"].clone())
}

/// `rekey --to kmip://kmip1/new-128 --from kmip://kmip1/old-128 --data-dir dd1 --report R edge TABLES`.
fn rekey_edge(env: &Env, report: &Path, tables: &[&str]) -> (Run, Value) {
    let dd = env.s("dd1");
    let mut args = vec![
        "--to",
        "kmip://kmip1/new-128",
        "--from",
        "kmip://kmip1/old-128",
        "--data-dir",
        &dd,
        "--report",
        report.to_str().unwrap(),
        "edge",
    ];
    args.extend(tables);
    let r = env.rekey(&args);
    let rep = if report.exists() {
        env.report(report)
    } else {
        Value::Null
    };
    (r, rep)
}

/// Chunk `i`'s on-disk bytes (with its CRC).
fn chunk_bytes(data: &Path, i: usize) -> Vec<u8> {
    let ci = Ci::read(
        &data.with_file_name(
            data.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .replace("Data.db", "CompressionInfo.db"),
        ),
    )
    .unwrap();
    let bytes = fs::read(data).unwrap();
    let (start, end) = chunk_bounds(&ci.offsets, bytes.len()).nth(i).unwrap();
    bytes[start..end].to_vec()
}

#[test]
fn raw_chunks_are_copied_unchanged_and_reported() {
    let env = Env::new();
    let rep_dir = tempfile::tempdir().unwrap();
    let raw = env.table(EDGE, "t_raw");
    let raw_enc = env.table(EDGE, "t_raw_enc");
    let old_raw: Vec<Vec<u8>> = (0..4)
        .map(|i| chunk_bytes(&raw.join("na-1-big-Data.db"), i))
        .collect();
    let old_raw_enc: Vec<Vec<u8>> = (0..3)
        .map(|i| chunk_bytes(&raw_enc.join("nb-1-big-Data.db"), i))
        .collect();
    let (r, rep) = rekey_edge(
        &env,
        &rep_dir.path().join("r.json"),
        &["t_raw", "t_raw_enc"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("PLAINTEXT"),
        "the plaintext chunks are not pointed out: {}",
        r.all()
    );
    let t = by_table(&rep);
    let s = &t["edge.t_raw"][0];
    assert_eq!(s["status"], "rekeyed");
    assert_eq!(s["raw_chunks"], 2);
    assert_eq!(s["rekeyed_chunks"], 2);
    assert_eq!(s["keys_before"], json_map(&[("kmip://kmip1/old-128", 2)]));
    assert_eq!(s["keys_after"], json_map(&[("kmip://kmip1/new-128", 2)]));
    let s = &t["edge.t_raw_enc"][0];
    assert_eq!(s["status"], "rekeyed");
    assert_eq!(s["raw_chunks"], 2);
    assert_eq!(s["keys_before"], json_map(&[("kmip://kmip1/old-128", 1)]));
    assert_eq!(s["keys_after"], json_map(&[("kmip://kmip1/new-128", 1)]));
    assert_eq!(rep["totals"]["raw_chunks"], 4);

    let d = check_rekeyed(
        &raw,
        "na-2-big-Data.db",
        entry("edge", "t_raw"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    assert_eq!(d.chunk_keys, ["kmip:new-128", "raw", "kmip:new-128", "raw"]);
    assert_eq!(d.ci.max, Some(4096));
    let new_data = raw.join("na-2-big-Data.db");
    for i in [1, 3] {
        assert_eq!(
            chunk_bytes(&new_data, i),
            old_raw[i],
            "t_raw raw chunk {i} changed"
        );
    }
    for i in [0, 2] {
        assert_ne!(
            chunk_bytes(&new_data, i),
            old_raw[i],
            "t_raw chunk {i} not rewritten"
        );
    }
    // The short last raw chunk keeps its zero padding up to maxCompressedLength.
    assert_eq!(old_raw[3].len(), 4096 + 4);
    let d = check_rekeyed(
        &raw_enc,
        "nb-2-big-Data.db",
        entry("edge", "t_raw_enc"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    assert_eq!(d.chunk_keys, ["raw", "raw", "kmip:new-128"]);
    let new_data = raw_enc.join("nb-2-big-Data.db");
    for i in [0, 1] {
        assert_eq!(
            chunk_bytes(&new_data, i),
            old_raw_enc[i],
            "t_raw_enc raw chunk {i} changed"
        );
    }
    // verify counts the raw chunks and passes: they are under no key.
    let vrep = rep_dir.path().join("v.json");
    let r = env.verify(&[
        "--key",
        "kmip://kmip1/new-128",
        "--deep",
        "--data-dir",
        &env.s("dd1"),
        "--report",
        vrep.to_str().unwrap(),
        "edge",
        "t_raw",
        "t_raw_enc",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(env.report(&vrep)["raw_chunks"], 4);
}

#[test]
fn empty_trailing_chunk_survives_a_rekey() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let (r, _) = rekey_edge(
        &env,
        &rep.path().join("r.json"),
        &["t_empty_tail", "t_empty_tail_enc"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    for (t, n) in [("t_empty_tail", 4), ("t_empty_tail_enc", 3)] {
        let dir = env.table(EDGE, t);
        let d = check_rekeyed(
            &dir,
            "nb-2-big-Data.db",
            entry("edge", t),
            &new_keys(&env),
            "kmip:new-128",
            &old_128(&env),
        );
        assert_eq!(d.chunk_keys.len(), n);
        assert_eq!(d.ci.data_length, (n as u64 - 1) * 4096, "{t}");
        assert_eq!(d.ci.plain_len(n - 1), 0);
        old_gone(&dir, "nb-1-");
    }
    let r = env.verify(&[
        "--key",
        "kmip://kmip1/new-128",
        "--deep",
        "--data-dir",
        &env.s("dd1"),
        "edge",
        "t_empty_tail",
        "t_empty_tail_enc",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
}

fn is_uuid_generation(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 28
        && b[4] == b'_'
        && b[9] == b'_'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 9 || c.is_ascii_digit() || c.is_ascii_lowercase())
}

#[test]
fn uuid_generation_gets_a_new_uuid_generation() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let (r, _) = rekey_edge(&env, &rep.path().join("r.json"), &["t_uuid"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = env.table(EDGE, "t_uuid");
    let data = data_files(&dir);
    assert_eq!(data.len(), 1);
    let name = data[0].file_name().unwrap().to_str().unwrap().to_string();
    let generation = name
        .strip_prefix("nb-")
        .unwrap()
        .strip_suffix("-big-Data.db")
        .unwrap();
    assert!(is_uuid_generation(generation), "{name}");
    assert_ne!(generation, "3g1m_0nuf_3vj5m2k1125165rxa7");
    check_rekeyed(
        &dir,
        &name,
        entry("edge", "t_uuid"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    old_gone(&dir, "nb-3g1m_0nuf_3vj5m2k1125165rxa7-");
    assert_eq!(file_names(&dir).len(), 8, "{:?}", file_names(&dir));
    no_txn_logs(&dir);
}

#[test]
fn cassandra_3_mc_sstable() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let (r, _) = rekey_edge(&env, &rep.path().join("r.json"), &["t_mc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = env.table(EDGE, "t_mc");
    // parse_ci reads `mc` without maxCompressedLength and refuses trailing bytes.
    let d = check_rekeyed(
        &dir,
        "mc-2-big-Data.db",
        entry("edge", "t_mc"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    assert_eq!(d.ci.max, None);
    old_gone(&dir, "mc-1-");
    no_txn_logs(&dir);
    let orig = testdata().join(
        entry("edge", "t_mc")["data"]
            .as_str()
            .unwrap()
            .replace("Data.db", "Statistics.db"),
    );
    assert_eq!(
        fs::read(dir.join("mc-2-big-Statistics.db")).unwrap(),
        fs::read(orig).unwrap()
    );
}

#[test]
fn bti_da_sstable() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let (r, _) = rekey_edge(&env, &rep.path().join("r.json"), &["t_bti"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = env.table(EDGE, "t_bti");
    let d = check_rekeyed(
        &dir,
        "da-2-bti-Data.db",
        entry("edge", "t_bti"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    assert_eq!(
        d.ci.max,
        Some(i32::MAX),
        "BTI stores maxCompressedLength although \"da\" < \"na\""
    );
    old_gone(&dir, "da-1-");
    for c in ["Partitions.db", "Rows.db", "Statistics.db", "Filter.db"] {
        let orig = testdata().join(
            entry("edge", "t_bti")["data"]
                .as_str()
                .unwrap()
                .replace("Data.db", c),
        );
        assert_eq!(
            fs::read(dir.join(format!("da-2-bti-{c}"))).unwrap(),
            fs::read(orig).unwrap(),
            "{c}"
        );
    }
    assert_eq!(file_names(&dir).len(), 8, "{:?}", file_names(&dir));
}

#[test]
fn snapshots_are_untouched_and_reported_index_sstables_are_rekeyed() {
    let env = Env::new();
    let rep_dir = tempfile::tempdir().unwrap();
    let dir = env.table(EDGE, "t_snap");
    let snap_before = tree(&dir.join("snapshots"));
    let (r, rep) = rekey_edge(&env, &rep_dir.path().join("r.json"), &["t_snap"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        diff(&snap_before, &tree(&dir.join("snapshots"))),
        Vec::<String>::new(),
        "snapshot modified"
    );
    assert_eq!(snap_before.len(), 16);
    let backups = rep["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{rep}");
    for b in backups {
        assert_eq!(b["location"]["kind"], "snapshot");
        assert_eq!(b["location"]["name"], "snap1");
        assert!(b["data"].as_str().unwrap().contains("/snapshots/snap1/"));
        let n = if b["data"].as_str().unwrap().contains("/.t_idx/") {
            2
        } else {
            4
        };
        assert_eq!(b["keys"], json_map(&[("kmip://kmip1/old-128", n)]), "{b}");
    }
    let t = by_table(&rep);
    let ss = &t["edge.t_snap"];
    assert_eq!(ss.len(), 2, "live and index SSTables: {rep}");
    assert!(ss.iter().all(|s| s["status"] == "rekeyed"));
    assert!(ss
        .iter()
        .any(|s| s["location"]["kind"] == "index" && s["location"]["name"] == "t_idx"));
    let live = live_entries("edge", "t_snap");
    let idx_entry = live
        .iter()
        .find(|e| e["location"] == "index:t_idx")
        .unwrap();
    // Generation 1 is taken by the snapshot: the new one is 2, in both folders.
    check_rekeyed(
        &dir,
        "nb-2-big-Data.db",
        entry("edge", "t_snap"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    check_rekeyed(
        &dir.join(".t_idx"),
        "nb-2-big-Data.db",
        idx_entry,
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    old_gone(&dir, "nb-1-");
    old_gone(&dir.join(".t_idx"), "nb-1-");
    no_txn_logs(&dir);
    // The snapshot still opens with the old key, and only with it.
    let old = Keys::keyring(&env.p("keys/keyring"));
    for e in manifest()
        .iter()
        .filter(|e| e["table"] == "t_snap" && e["location"] == "snapshot:snap1")
    {
        let d = decrypt_sstable(&env.p(e["data"].as_str().unwrap()), &old).unwrap();
        assert_eq!(d.sha256, e["plaintext_sha256"]);
    }
    // verify with the new key passes for the live SSTables and lists the snapshot as needing the old one.
    let vrep = rep_dir.path().join("v.json");
    let r = env.verify(&[
        "--key",
        "kmip://kmip1/new-128",
        "--data-dir",
        &env.s("dd1"),
        "--report",
        vrep.to_str().unwrap(),
        "edge",
        "t_snap",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v = env.report(&vrep);
    assert_eq!(v["backups"].as_array().unwrap().len(), 2);
    assert_eq!(v["sstables"].as_array().unwrap().len(), 2);
}

#[test]
fn two_sstables_in_one_table() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let (r, report) = rekey_edge(&env, &rep.path().join("r.json"), &["t_two"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(report["totals"]["rekeyed"], 2);
    let dir = env.table(EDGE, "t_two");
    let data = data_files(&dir);
    let names: Vec<&str> = data
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["nb-3-big-Data.db", "nb-4-big-Data.db"]);
    let want: BTreeSet<String> = live_entries("edge", "t_two")
        .iter()
        .map(|e| e["plaintext_sha256"].as_str().unwrap().to_string())
        .collect();
    let mut got = BTreeSet::new();
    for d in &data {
        let x = decrypt_sstable(d, &new_keys(&env)).unwrap();
        assert_eq!(x.key_set(), BTreeSet::from(["kmip:new-128".to_string()]));
        // A fully qualified provider keeps its package.
        assert_eq!(
            x.ci.option("key_provider"),
            Some("com.datastax.bdp.cassandra.crypto.KmipKeyProviderFactory")
        );
        got.insert(x.sha256);
    }
    assert_eq!(got, want);
    old_gone(&dir, "nb-1-");
    old_gone(&dir, "nb-2-");
    assert_eq!(file_names(&dir).len(), 16);
}

fn in_dd1_or_dd2(e: &Value) -> bool {
    let d = e["data"].as_str().unwrap();
    d.starts_with("dd1/") || d.starts_with("dd2/")
}

/// Live SSTables of dd1 and dd2 under `key` (from the manifest).
fn live_under(key: &str) -> BTreeSet<String> {
    manifest()
        .iter()
        .filter(|e| in_dd1_or_dd2(e))
        .filter(|e| !e["location"].as_str().unwrap().starts_with("snapshot"))
        .filter(|e| e["key"] == key)
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect()
}

fn statuses(env: &Env, rep: &Value) -> BTreeMap<String, String> {
    rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let rel = Path::new(s["old"].as_str().unwrap())
                .strip_prefix(&env.root)
                .unwrap()
                .display()
                .to_string();
            (rel, s["status"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn two_data_dirs_and_from_filtering() {
    let env = Env::new();
    let rep_dir = tempfile::tempdir().unwrap();
    let rep_path = rep_dir.path().join("r.json");
    let other = env.table(EDGE, "t_other");
    let other_before = tree(&other);
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--from",
        "kmip://kmip1/old-128",
        "--data-dir",
        &env.s("dd1"),
        "--data-dir",
        &env.s("dd2"),
        "--report",
        rep_path.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep = env.report(&rep_path);
    let st = statuses(&env, &rep);
    let expect = live_under("kmip:old-128");
    let rekeyed: BTreeSet<String> = st
        .iter()
        .filter(|(_, s)| *s == "rekeyed")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(rekeyed, expect, "{}", r.all());
    assert!(expect.iter().any(|p| p.starts_with("dd2/")));
    // Everything else live was looked at and skipped, none failed.
    let all_live: usize = manifest()
        .iter()
        .filter(|e| in_dd1_or_dd2(e) && !e["location"].as_str().unwrap().starts_with("snapshot"))
        .count();
    assert_eq!(st.len(), all_live);
    assert!(
        st.values().all(|s| s == "rekeyed" || s == "skipped"),
        "{st:?}"
    );
    let t = by_table(&rep);
    assert_eq!(t["edge.t_other"][0]["status"], "skipped");
    assert!(
        t["edge.t_other"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--from"),
        "{}",
        t["edge.t_other"][0]
    );
    assert_eq!(diff(&other_before, &tree(&other)), Vec::<String>::new());
    let dd2 = env.table("dd2/other", "t_dd2");
    check_rekeyed(
        &dd2,
        "nb-2-big-Data.db",
        entry("other", "t_dd2"),
        &new_keys(&env),
        "kmip:new-128",
        &old_128(&env),
    );
    no_txn_logs(&env.root);
    // verify over both data dirs with the two keys now in use there (KMIP old-256 and the key file
    // tables untouched; other-128 and the replicated table too): exit 1 names them.
    let r = env.verify(&[
        "--key",
        "kmip://kmip1/new-128",
        "--data-dir",
        &env.s("dd1"),
        "--data-dir",
        &env.s("dd2"),
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("other-128"), "{}", r.all());
    // Without --from, the SSTable under other-128 is rekeyed as well (its key is in the keyring).
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--data-dir",
        &env.s("dd1"),
        "edge",
        "t_other",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let e = entry("edge", "t_other");
    let other_key = Keys::forced(Keys::keyring(&env.p("keys/keyring")).ring["other-128"].clone());
    check_rekeyed(
        &other,
        "nb-2-big-Data.db",
        e,
        &new_keys(&env),
        "kmip:new-128",
        &other_key,
    );
}

#[test]
fn keyspace_and_table_selection_touch_nothing_else() {
    let env = Env::new();
    let rep = tempfile::tempdir().unwrap();
    let before = tree(&env.root);
    let (r, report) = rekey_edge(&env, &rep.path().join("r.json"), &["t_uuid", "t_mc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(report["sstables"].as_array().unwrap().len(), 2);
    let uuid_dir = env
        .table(EDGE, "t_uuid")
        .strip_prefix(&env.root)
        .unwrap()
        .display()
        .to_string();
    let mc_dir = env
        .table(EDGE, "t_mc")
        .strip_prefix(&env.root)
        .unwrap()
        .display()
        .to_string();
    for d in diff(&before, &tree(&env.root)) {
        assert!(
            d.contains(&uuid_dir) || d.contains(&mc_dir),
            "outside the selection: {d}"
        );
    }
    // A keyspace alone selects all its tables (and only them): the matrix has no old-128 KMIP
    // table left after this, dd1/edge is untouched.
    let before = tree(&env.p(EDGE));
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--from",
        "kmip://kmip1/old-128",
        "--data-dir",
        &env.s("dd1"),
        "matrix",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(diff(&before, &tree(&env.p(EDGE))), Vec::<String>::new());
    assert_eq!(r.stdout.matches("rekeyed  ").count(), 4, "{}", r.all());
    // A table that does not exist: usage error before any work.
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--data-dir",
        &env.s("dd1"),
        "edge",
        "no_such_table",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::new();
    let rep_dir = tempfile::tempdir().unwrap();
    let rep_path = rep_dir.path().join("r.json");
    let before = tree(&env.root);
    let r = env.rekey(&[
        "--dry-run",
        "--to",
        "kmip://kmip1/new-128",
        "--from",
        "kmip://kmip1/old-128",
        "--data-dir",
        &env.s("dd1"),
        "--data-dir",
        &env.s("dd2"),
        "--report",
        rep_path.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(diff(&before, &tree(&env.root)), Vec::<String>::new());
    let rep = env.report(&rep_path);
    assert_eq!(rep["dry_run"], true);
    let planned: BTreeSet<String> = statuses(&env, &rep)
        .into_iter()
        .filter(|(_, s)| s == "planned")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(planned, live_under("kmip:old-128"));
    assert_eq!(rep["totals"]["rekeyed"], 0);
}

#[test]
fn replicated_key_rekeyed_to_kmip() {
    let env = Env::new();
    let from = format!("replicated:{UUID}");
    // Offline, a move from replicated keys to a KMIP group is stated explicitly.
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--move-kmip-group",
        "--from",
        &from,
        "--data-dir",
        &env.s("dd1"),
        "edge",
        "t_replicated",
        "t_other",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = env.table(EDGE, "t_replicated");
    let old = Keys::forced(Keys::keyring(&env.p("keys/keyring")).ring[UUID].clone());
    let d = check_rekeyed(
        &dir,
        "nb-2-big-Data.db",
        entry("edge", "t_replicated"),
        &new_keys(&env),
        "kmip:new-128",
        &old,
    );
    assert_eq!(d.ci.option("key_provider"), Some("KmipKeyProviderFactory"));
    assert_eq!(d.ci.option("kmip_host"), Some("kmip1"));
    assert_eq!(
        d.ci.option("system_key_file"),
        Some("system_key"),
        "other options are carried over"
    );
    // t_other (KMIP other-128) is not under the --from key.
    assert_eq!(data_files(&env.table(EDGE, "t_other")).len(), 1);
    assert!(env.table(EDGE, "t_other").join("nb-1-big-Data.db").exists());
}

/// DSE's replicated provider writes header-less chunks (under the local key) while its key table is
/// not ready (FORMAT.md 2.2); the table names no key file, so the operator gives it with `file:`.
#[test]
fn replicated_table_with_a_headerless_chunk_takes_the_local_key_from_the_command_line() {
    let env = Env::new();
    let dd = env.s("mixed");
    let from_r = format!("replicated:{UUID}");
    let from_f = format!("file:{}", env.s("keys/old.key"));
    let r = env.verify(&["--key", &from_r, "--key", &from_f, "--data-dir", &dd]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Without the key file, the header-less chunk's key is unknown: that SSTable fails (exit 1,
    // named, nothing written) without stopping unrelated SSTables of the same run.
    let before = tree(&env.root);
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--from",
        &from_r,
        "--data-dir",
        &dd,
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("no key header") && r.stdout.contains("--from file:PATH"),
        "{}",
        r.all()
    );
    assert_eq!(diff(&before, &tree(&env.root)), Vec::<String>::new());
    let r = env.rekey(&[
        "--to",
        "kmip://kmip1/new-128",
        "--move-kmip-group",
        "--from",
        &from_r,
        "--from",
        &from_f,
        "--data-dir",
        &dd,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let dir = env.table("mixed/dse", "t_replicated_mixed");
    let e = entry("dse", "t_replicated_mixed");
    let old = Keys::both(&env.p("keys/keyring"), &env.p("keys/old.key"));
    let old_local = old.file[&("AES/CBC/PKCS5Padding".to_string(), 128)].clone();
    for old_key in [old.ring[UUID].clone(), old_local] {
        check_rekeyed(
            &dir,
            "nb-2-big-Data.db",
            e,
            &new_keys(&env),
            "kmip:new-128",
            &Keys::forced(old_key),
        );
    }
    let d = decrypt_sstable(&dir.join("nb-2-big-Data.db"), &new_keys(&env)).unwrap();
    assert_eq!(d.ci.option("key_provider"), Some("KmipKeyProviderFactory"));
}

// ------------------------------------------------------------------ the demo data

#[test]
fn demo_data_round_trip_through_the_cli() {
    let env = Env::new();
    let data = env.s("demo/data");
    let keyring = env.s("demo/keys/keyring");
    let new_file = format!("file:{}", env.s("demo/keys/new.key"));
    let old_file = format!("file:{}", env.s("demo/keys/old.key"));
    let run = |args: &[&str]| env.run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let orders = env.table("demo/data/shop", "orders");
    let customers = env.table("demo/data/shop", "customers");
    let snap_before = tree(&orders.join("snapshots"));

    let r = run(&[
        "inspect",
        orders.to_str().unwrap(),
        customers.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&[
        "rekey",
        "-q",
        "--to",
        "kmip://demo/demo-new",
        "--from",
        "kmip://demo/demo-old",
        "--keyring",
        &keyring,
        "--data-dir",
        &data,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.matches("rekeyed  ").count(), 3, "{}", r.all());
    let r = run(&[
        "rekey",
        "-q",
        "--to",
        &new_file,
        "--from",
        &old_file,
        "--keyring",
        &keyring,
        "--data-dir",
        &data,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.matches("rekeyed  ").count(), 1, "{}", r.all());
    let r = run(&[
        "verify",
        "--deep",
        "--key",
        "kmip://demo/demo-new",
        "--key",
        &new_file,
        "--keyring",
        &keyring,
        "--data-dir",
        &data,
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(&[
        "verify",
        "--key",
        "kmip://demo/demo-old",
        "--keyring",
        &keyring,
        "--data-dir",
        &data,
    ]);
    assert_eq!(r.code, 1, "{}", r.all());

    assert_eq!(
        diff(&snap_before, &tree(&orders.join("snapshots"))),
        Vec::<String>::new()
    );
    let keys = Keys::both(&env.p("demo/keys/keyring"), &env.p("demo/keys/new.key"));
    let mut want: BTreeSet<String> = BTreeSet::new();
    for e in manifest().iter().filter(|e| {
        e["keyspace"] == "shop" && !e["location"].as_str().unwrap().starts_with("snapshot")
    }) {
        want.insert(e["plaintext_sha256"].as_str().unwrap().to_string());
    }
    let mut got = BTreeSet::new();
    for dir in [
        orders.clone(),
        orders.join(".orders_by_customer"),
        customers.clone(),
    ] {
        for d in data_files(&dir) {
            let x = decrypt_sstable(&d, &keys).unwrap_or_else(|m| panic!("{}: {m}", d.display()));
            let want_key = if dir == customers {
                "local"
            } else {
                "kmip:demo-new"
            };
            assert_eq!(
                x.key_set(),
                BTreeSet::from([want_key.to_string()]),
                "{}",
                d.display()
            );
            got.insert(x.sha256);
        }
    }
    assert_eq!(got, want);
    no_txn_logs(&env.p("demo"));
}
