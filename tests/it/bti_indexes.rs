//! DSE 6.8+/HCD BTI SSTables whose Partitions.db and Rows.db are page-encrypted and whose
//! Statistics.db components are encrypted (FORMAT.md 2.6), from the project's own test data
//! (`testdata/dd3/bti`, written by tools/gen_testdata.rs with multi-page index files).
//!
//! Every test runs the built binary on a scratch copy of `testdata/dd3` and `testdata/keys` and
//! judges the result with the independent decryptor of tests/it/support (the `cbc` crate for CBC,
//! the `aes` block cipher for ECB, `lz4_flex`), against the digests of testdata/MANIFEST.json,
//! which were computed from the plaintext when the data was generated: never against the tool's
//! own opinion.
//! Broken input is refused with the originals byte-identical and no stray file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::tree_strict as tree;
use crate::support::*;
use serde_json::Value;

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

// ------------------------------------------------------------------ the independent decryptor

/// An encrypted-index SSTable opened by the decryptor of tests/it/support: Digest.crc32 (present
/// and matching), Data.db (no chunk stored raw), Partitions.db and Rows.db page by page, every
/// Statistics.db component; keys named as the records' headers name them ("kmip:<id>").
fn open_sstable(data: &Path, keys: &Keys) -> Result<Opened, String> {
    let digest = data.to_str().unwrap().replace("-Data.db", "-Digest.crc32");
    if !Path::new(&digest).is_file() {
        return Err(format!(
            "{digest}: missing (the generator writes one per SSTable)"
        ));
    }
    let o = crate::support::open_sstable(data, keys, true)?.by_header_names();
    match o.raw {
        0 => Ok(o),
        n => Err(format!("{n} chunks stored raw (none expected)")),
    }
}

/// How many records each key opens.
fn counts(keys: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k.clone()).or_default() += 1;
    }
    m
}

// ------------------------------------------------------------------ a scratch copy and the binary

// A scratch copy of testdata/dd3 and testdata/keys: key files 0600, relative `secret_key_file`
// options pointed at the copy (testdata/README.md).
crate::scratch_env!(Env);

impl Env {
    fn new() -> Env {
        Env(Scratch::of(&["dd3", "keys"]))
    }

    /// The folder of a dd3 table.
    fn table(&self, table: &str) -> PathBuf {
        let dir = self.root.join("dd3/bti");
        table_dir(&dir, table)
    }

    /// A component of a dd3 table's generation-1 SSTable.
    fn file(&self, table: &str, component: &str) -> PathBuf {
        let v = entry(table)["version"].as_str().unwrap();
        self.table(table).join(format!("{v}-1-bti-{component}"))
    }

    /// `rekey -q --to TO --keyring keys/keyring --data-dir dd3 --report R bti TABLES`.
    fn rekey(&self, to: &str, report: &Path, tables: &[&str]) -> Run {
        let rest = [&["--report", report.to_str().unwrap(), "bti"], tables].concat();
        self.run(&rekey_cmd(
            to,
            &self.s("keys/keyring"),
            &self.s("dd3"),
            &rest,
        ))
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
    let old = Keys::testdata(&td, "old");
    let new = Keys::testdata(&td, "new");
    let mut combos = BTreeSet::new();
    let mut versions = BTreeSet::new();
    for e in bti_entries() {
        let rel = e["data"].as_str().unwrap();
        let o = open_sstable(&td.join(rel), &old).unwrap_or_else(|m| panic!("{rel}: {m}"));
        assert_eq!(o.sha256, e["plaintext_sha256"], "{rel}");
        let want: BTreeMap<String, String> =
            serde_json::from_value(e["metadata_sha256"].clone()).unwrap();
        assert_eq!(o.metadata_sha256, want, "{rel}");
        assert_eq!(
            o.cipher.max_bytes_in_page() as u64,
            e["max_bytes_in_page"].as_u64().unwrap(),
            "{rel}"
        );
        let format_md_table = match (o.cipher.provider.starts_with("Kmip"), o.cipher.cbc) {
            (false, true) => 4063,
            (false, false) => 4079,
            (true, true) => 3807,
            (true, false) => 3823,
        };
        assert_eq!(
            o.cipher.max_bytes_in_page(),
            format_md_table,
            "{rel}: maxBytesInPage of the FORMAT.md 2.6 table"
        );
        let (old_name, _) = decryptor_names(e);
        assert_eq!(
            counts(&o.chunk_keys),
            one(&old_name, e["chunks"].as_u64().unwrap())
        );
        assert_eq!(
            counts(&o.page_keys),
            one(&old_name, total_pages(e)),
            "{rel}"
        );
        assert_eq!(counts(&o.meta_keys), one(&old_name, 4), "{rel}");
        assert_eq!(o.meta_types, vec![0, 1, 2, 3], "{rel}");
        let cap = o.cipher.max_bytes_in_page();
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
    let old_keys = Keys::testdata(&env.root, "old");
    let new_keys = Keys::testdata(&env.root, "new");
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
        assert_eq!(o.sha256, e["plaintext_sha256"], "{table}");
        let want: BTreeMap<String, String> =
            serde_json::from_value(e["metadata_sha256"].clone()).unwrap();
        assert_eq!(o.metadata_sha256, want, "{table}: index/metadata plaintext");
        let (_, new) = decryptor_names(e);
        assert_eq!(
            counts(&o.chunk_keys),
            one(&new, e["chunks"].as_u64().unwrap())
        );
        assert_eq!(counts(&o.page_keys), one(&new, total_pages(e)), "{table}");
        assert_eq!(counts(&o.meta_keys), one(&new, 4), "{table}");
        assert_eq!(o.meta_types, vec![0, 1, 2, 3], "{table}");
        // Nothing moved: the same sizes (the new key header is as long as the old one), the same
        // page count and the same plaintext length in every page.
        let orig = open_sstable(
            &td.join(e["data"].as_str().unwrap()),
            &Keys::testdata(&td, "old"),
        )
        .unwrap();
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
        let ci = Ci::read(&dir.join(format!("{new_prefix}CompressionInfo.db"))).unwrap();
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
            if o.cipher.cbc {
                assert_ne!(r.iv, before.iv, "{table} {}: IV reused", r.what);
            }
            let k = old_keys
                .get(&before.key, &o.cipher.cipher, o.cipher.bits)
                .unwrap();
            if let Ok(p) = decrypt_with(&o.cipher, &k, &r.iv, &r.ct) {
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

/// Runs `run` and checks the contract of a refusal (`support::refused`); an SSTable that fails is
/// the only one the run touched.
fn check(env: &Env, run: impl FnOnce(&Env) -> Run, code: i32, names: &Path, says: &[&str]) -> Run {
    let r = refused(
        &env.root,
        &env.report_path(),
        || run(env),
        code,
        names,
        says,
    );
    if code == 1 {
        let rep = env.report(&env.report_path());
        assert_eq!(rep["totals"]["failed"], 1, "{rep}");
        assert_eq!(rep["totals"]["rekeyed"], 0, "{rep}");
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
