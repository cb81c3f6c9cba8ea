//! Interop with the independent Python oracle (`../shared/oracle/tde_oracle.py`) on the real
//! Cassandra 3.0–5.0 SSTables in `../shared/testdata/cassandra` (the round trip of ../shared/README.md).
//!
//! For every SSTable: the oracle's `plain-digest` of the original; the oracle encrypts it under key A
//! into a data dir; `sstable-rekey rekey` (one run per data dir and target key, the way operators use
//! it) moves it to key B; then the oracle's `verify` with key B must give the same plaintext and
//! metadata digests and only key B, the oracle's `verify` with key A alone must fail, and
//! `sstable-rekey verify` must pass with B and fail with A.
//!
//! When ../shared is missing these tests print a notice and pass, unless CI=true (then they fail).
//! Python: $ORACLE_PYTHON, else <repo>/.venv/bin/python, else python3.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::support::oracle::*;

// ------------------------------------------------------------------ the real SSTables

fn sst(all: &[Sst], version: &str, table: &str) -> Sst {
    all.iter()
        .find(|s| s.version == version && s.table == format!("legacy_{version}_{table}"))
        .unwrap_or_else(|| panic!("no {version} {table} SSTable"))
        .clone()
}

// ------------------------------------------------------------------ one data dir, one rekey run

#[derive(Debug, Clone)]
struct Item {
    sst: Sst,
    class: &'static str,
    cipher: &'static str,
    strength: u32,
    from: Key,
    min_compress_ratio: Option<f64>,
}

struct Checked {
    sstables: usize,
    raw_chunks: usize,
}

/// Encrypts every item under its `from` key into `<root>/data/ks/<table>-<id>/`, runs ONE
/// `sstable-rekey rekey --to <to>` over that data dir, then checks every result with the oracle and
/// with `sstable-rekey verify`.
/// `kernel`: the SSTABLE_REKEY_KERNEL value for the rekey (`auto`, or `two-pass` to cover the
/// decrypt-then-encrypt path on a CPU with VAES).
fn round_trip(
    shared: &Path,
    root: &Path,
    ring: &Path,
    items: &[Item],
    to: &Key,
    kernel: &str,
) -> Checked {
    let data = root.join("data");
    fs::create_dir_all(&data).unwrap();
    let table_dirs: Vec<PathBuf> = (0..items.len())
        .map(|i| {
            data.join("ks").join(format!(
                "t{i:03}_{}-{:032x}",
                items[i].sst.table,
                0x5eed_0000 + i
            ))
        })
        .collect();
    let indexed: Vec<(usize, &Item)> = items.iter().enumerate().collect();

    // 1. digests of the originals, encrypted copies under the old keys
    let encrypted = par_map(&indexed, |(i, it)| {
        let digest = plain_digest(shared, &it.sst.data);
        let mut args = encrypt_args(
            &it.sst,
            &table_dirs[*i],
            it.class,
            it.cipher,
            it.strength,
            &it.from,
        );
        if let Some(r) = it.min_compress_ratio {
            args.extend(["--min-compress-ratio".into(), r.to_string().into()]);
        }
        let enc = oracle_ok(shared, &args);
        if it.min_compress_ratio.is_none() {
            assert_eq!(enc["raw_chunks"], 0, "{it:?}: {enc}");
        }
        (digest, enc)
    });

    // 2. one rekey run over the whole data dir (offline, tables under a local key file move to
    // the KMIP group only when that is said explicitly)
    let mut extra: Vec<OsString> = Vec::new();
    if matches!(to, Key::Kmip { .. }) && items.iter().any(|it| matches!(it.from, Key::Local { .. }))
    {
        extra.push("--move-kmip-group".into());
    }
    let env = [("SSTABLE_REKEY_KERNEL", kernel)];
    let rep = rekey_data_dir(root, &data, ring, to, &extra, &env, items.len());
    if kernel == "two-pass" {
        assert_ne!(rep["kernel"], "vaes-fused", "SSTABLE_REKEY_KERNEL=two-pass");
    }
    println!("{}: kernel {}", root.display(), rep["kernel"]);
    let entries = rep["sstables"].as_array().unwrap();

    // 3. the oracle checks every rekeyed SSTable
    let raw = par_map(&indexed, |(i, it)| {
        let (digest, enc) = &encrypted[*i];
        let what = format!(
            "{} {} {} {} {}-bit, {} -> {}",
            it.sst.version,
            it.sst.table,
            it.class,
            it.cipher,
            it.strength,
            it.from.keyref(),
            to.keyref()
        );
        let dir = &table_dirs[*i];
        let old_data = dir.join(
            Path::new(enc["sstable"].as_str().unwrap())
                .file_name()
                .unwrap(),
        );
        let (entry, new_data) = rekeyed_entry(entries, &old_data, dir, &what);

        let mut args: Vec<OsString> = vec!["verify".into(), new_data.clone().into()];
        args.extend(to.verify_args());
        let v = oracle_ok(shared, &args);
        assert_eq!(
            v["plaintext_sha256"], digest["plaintext_sha256"],
            "{what}: plaintext"
        );
        assert_eq!(
            v["metadata_sha256"], digest["metadata_sha256"],
            "{what}: metadata"
        );
        assert_eq!(v["data_length"], digest["data_length"], "{what}");
        assert_eq!(v["chunks"], digest["chunks"], "{what}");
        assert_eq!(v["class"], it.class, "{what}");
        assert_eq!(v["options"]["cipher_algorithm"], it.cipher, "{what}");
        assert_eq!(
            v["options"]["secret_key_strength"],
            it.strength.to_string(),
            "{what}"
        );
        to.check_options(&v["options"], &what);
        let chunks = v["chunks"].as_u64().unwrap() as usize;
        let raw = v["raw_chunks"].as_u64().unwrap() as usize;
        assert_eq!(
            v["raw_chunks"], enc["raw_chunks"],
            "{what}: raw chunks (oracle encrypt vs verify)"
        );
        assert_eq!(
            entry["raw_chunks"], enc["raw_chunks"],
            "{what}: raw chunks (rekey report)"
        );
        let refs: BTreeMap<String, u64> = serde_json::from_value(v["key_refs"].clone()).unwrap();
        let want: BTreeMap<String, u64> = if chunks > raw {
            [(to.oracle_ref(it.cipher, it.strength), (chunks - raw) as u64)].into()
        } else {
            BTreeMap::new()
        };
        assert_eq!(refs, want, "{what}: key_refs must be only the new key");

        // the old key alone no longer opens it
        let mut args: Vec<OsString> = vec!["verify".into(), new_data.into()];
        args.extend(it.from.verify_args());
        let (code, v) = oracle(shared, &args);
        assert_eq!(
            code, 1,
            "{what}: the oracle must fail with only the old key: {v}"
        );
        assert_eq!(v["ok"], false, "{what}");
        raw
    });

    // 4. sstable-rekey's own proof: passes with the new key, fails with the old ones
    let vrep = verify_with_new_key(root, ring, &data, to, &["--deep"], items.len());
    assert_eq!(
        vrep["raw_chunks"],
        raw.iter().sum::<usize>(),
        "raw chunks (verify report)"
    );
    for s in vrep["sstables"].as_array().unwrap() {
        let keys: BTreeMap<String, u64> = serde_json::from_value(s["keys"].clone()).unwrap();
        assert!(
            keys.keys().all(|k| *k == to.report_ref()),
            "verify report names other keys: {s}"
        );
    }
    verify_fails_with_old_keys(ring, &data, items.iter().map(|it| it.from.keyref()));
    Checked {
        sstables: items.len(),
        raw_chunks: raw.iter().sum(),
    }
}

// ------------------------------------------------------------------ the tests

/// Every real SSTable × the 16 combos of class, provider, cipher and strength, each combo on every
/// version once (128 rekeys), in three data dirs: KMIP 128-bit, KMIP 256-bit, local key files.
#[test]
fn every_real_sstable_every_combo() {
    let Some(shared) = shared() else { return };
    let started = Instant::now();
    let all = real_sstables(&shared);
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    let mut buckets = Buckets::new(keys.matrix());
    let mut hit: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut used: BTreeSet<PathBuf> = BTreeSet::new();
    for (vi, v) in VERSIONS.iter().enumerate() {
        let tables: Vec<&Sst> = all.iter().filter(|s| s.version == *v).collect();
        for (c, combo) in combos().into_iter().enumerate() {
            // a different table for each combo of a version, rotating with the version
            let sst = tables[(c + c / 4 + vi) % tables.len()].clone();
            used.insert(sst.data.clone());
            hit.insert((v.to_string(), c));
            let (from, bucket) = buckets.bucket(&combo);
            bucket.push(Item {
                sst,
                class: combo.class,
                cipher: combo.cipher,
                strength: combo.strength,
                from,
                min_compress_ratio: None,
            });
        }
    }
    assert_eq!(used.len(), all.len(), "every real SSTable is exercised");
    assert_eq!(
        hit.len(),
        VERSIONS.len() * 16,
        "every combo on every version"
    );

    // The key-file bucket goes through the two-pass path (decrypt, then multi-buffer encrypt), so
    // that both kernels are checked by the oracle on a CPU with VAES.
    let ring = &buckets.keys.ring;
    let mut n = 0;
    for (dir, items, to) in buckets.runs() {
        let kernel = if dir == "local" { "two-pass" } else { "auto" };
        n += round_trip(&shared, &tmp.path().join(dir), ring, items, to, kernel).sstables;
    }
    assert_eq!(n, 128);
    println!(
        "oracle interop: {n} rekeys checked = {} real SSTables ({} versions) x 16 combos (2 classes x kmip/local x CBC/ECB x 128/256), each combo on every version (fused kernel for KMIP, two-pass for key files), in {:.1}s",
        used.len(),
        VERSIONS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Items for a provider change: one SSTable per version, rotating tables, classes and ciphers.
fn one_per_version(all: &[Sst], from: &Key, strength: u32, offset: usize) -> Vec<Item> {
    const TABLES: [&str; 4] = ["clust", "clust_counter", "simple", "simple_counter"];
    VERSIONS
        .iter()
        .enumerate()
        .map(|(i, v)| Item {
            sst: sst(all, v, TABLES[(i + offset) % 4]),
            class: CLASSES[i % 2],
            cipher: CIPHERS[(i / 2) % 2],
            strength,
            from: from.clone(),
            min_compress_ratio: None,
        })
        .collect()
}

#[test]
fn local_key_file_to_kmip() {
    let Some(shared) = shared() else { return };
    let all = real_sstables(&shared);
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    let from = keys.local("old.key", &all_specs());
    let to = keys.kmip("b2f1e0d9-new-kmip-key", 128);
    let ring = keys.keyring();
    let items = one_per_version(&all, &from, 128, 1);
    let r = round_trip(&shared, &tmp.path().join("run"), &ring, &items, &to, "auto");
    println!("local -> kmip: {} SSTables checked", r.sstables);
}

#[test]
fn kmip_to_local_key_file() {
    let Some(shared) = shared() else { return };
    let all = real_sstables(&shared);
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    let from = keys.kmip("42", 256);
    let to = keys.local("new.key", &all_specs());
    let ring = keys.keyring();
    let items = one_per_version(&all, &from, 256, 2);
    let r = round_trip(&shared, &tmp.path().join("run"), &ring, &items, &to, "auto");
    println!("kmip -> local: {} SSTables checked", r.sstables);
}

/// Tables with min_compress_ratio: chunks the writer stored raw (plaintext) are copied unchanged and
/// reported by the oracle and by sstable-rekey alike (BIG na+ and BTI only: they have
/// maxCompressedLength).
#[test]
fn raw_chunks_with_min_compress_ratio() {
    let Some(shared) = shared() else { return };
    let all = real_sstables(&shared);
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    // same id length: chunk lengths do not change, so no chunk can reach maxCompressedLength
    let from = keys.kmip("raw-old-01", 128);
    let to = keys.kmip("raw-new-02", 128);
    let ring = keys.keyring();
    let mut items = Vec::new();
    for (i, v) in ["na", "nb", "oa", "da"].iter().enumerate() {
        // LZ4 chunks of these tables are ~400 bytes: ratio 40 (max 410 bytes) stores some raw;
        // Encryptor chunks are ~16 KiB: ratio 1.1 stores every full chunk raw, not the last one
        items.push(Item {
            sst: sst(&all, v, "clust"),
            class: "EncryptingLZ4Compressor",
            cipher: CIPHERS[i % 2],
            strength: 128,
            from: from.clone(),
            min_compress_ratio: Some(40.0),
        });
        items.push(Item {
            sst: sst(&all, v, "clust_counter"),
            class: "Encryptor",
            cipher: CIPHERS[(i + 1) % 2],
            strength: 128,
            from: from.clone(),
            min_compress_ratio: Some(1.1),
        });
    }
    let r = round_trip(&shared, &tmp.path().join("run"), &ring, &items, &to, "auto");
    assert!(r.raw_chunks > 0, "the test data must have raw chunks");
    println!(
        "min_compress_ratio: {} SSTables, {} raw chunks reported by both",
        r.sstables, r.raw_chunks
    );
}

/// Every file of a folder, name → bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// FORMAT.md 2.3: a longer KMIP id would push an encrypted chunk to maxCompressedLength, where every
/// reader takes it for plaintext. That SSTable must be refused and left byte-identical; another
/// table in the same run is still rekeyed (exit 1 = some SSTable failed).
#[test]
fn chunk_reaching_max_compressed_length_is_refused() {
    let Some(shared) = shared() else { return };
    let all = real_sstables(&shared);
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    let from = keys.kmip("1", 128);
    let long_id = format!("kmip-key-{}", "x".repeat(190));
    let to = keys.kmip(&long_id, 128);
    let ring = keys.keyring();
    let data = tmp.path().join("data");
    let tight = data.join("ks/tight-00000000000000000000000000000001");
    let fine = data.join("ks/fine-00000000000000000000000000000002");
    let fine_src = sst(&all, "nb", "clust");
    for (src, dir, ratio) in [
        (sst(&all, "oa", "clust"), &tight, Some("40")),
        (fine_src.clone(), &fine, None),
    ] {
        let mut args: Vec<OsString> = vec!["encrypt".into(), src.data.into(), dir.into()];
        args.extend(from.encrypt_args(128));
        if let Some(r) = ratio {
            args.extend(os(&["--min-compress-ratio", r]));
        }
        let enc = oracle_ok(&shared, &args);
        if ratio.is_some() {
            // some chunks stored raw, and some encrypted ones: those would grow by 199 bytes
            let raw = enc["raw_chunks"].as_u64().unwrap();
            assert!(raw > 0 && raw < enc["chunks"].as_u64().unwrap(), "{enc}");
        }
    }
    let before = snapshot(&tight);
    let report = tmp.path().join("report.json");
    let out = rekey_tool(&[
        "rekey".into(),
        "--to".into(),
        to.keyref().into(),
        "--keyring".into(),
        ring.clone().into(),
        "--data-dir".into(),
        data.clone().into(),
        "--report".into(),
        report.clone().into(),
        "--quiet".into(),
    ]);
    expect_exit(
        &out,
        1,
        "rekey with one SSTable that cannot take the longer key header",
    );
    assert_eq!(
        snapshot(&tight),
        before,
        "the refused SSTable is byte-identical, with no stray files"
    );
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let status: BTreeMap<String, String> = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let old = PathBuf::from(s["old"].as_str().unwrap());
            let table = old
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (table, s["status"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        status,
        [
            (
                "fine-00000000000000000000000000000002".to_string(),
                "rekeyed".to_string()
            ),
            (
                "tight-00000000000000000000000000000001".to_string(),
                "failed".to_string()
            ),
        ]
        .into()
    );
    // the other table was done, and the oracle agrees
    let new_data: Vec<PathBuf> = fs::read_dir(&fine)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with("-Data.db"))
        .collect();
    assert_eq!(new_data.len(), 1);
    let mut args: Vec<OsString> = vec!["verify".into(), new_data[0].clone().into()];
    args.extend(to.verify_args());
    let v = oracle_ok(&shared, &args);
    assert_eq!(
        v["plaintext_sha256"],
        plain_digest(&shared, &fine_src.data)["plaintext_sha256"]
    );
    assert_eq!(v["key_refs"], serde_json::json!({ long_id: v["chunks"] }));
}

/// What a SIGKILL left behind in a table folder.
fn crash_state(dir: &Path) -> String {
    let mut logs = Vec::new();
    let mut gens = BTreeSet::new();
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".log") {
            let text = fs::read_to_string(dir.join(&name)).unwrap();
            let types: Vec<&str> = text
                .lines()
                .map(|l| l.split(':').next().unwrap_or(""))
                .collect();
            logs.push(format!("log[{}]", types.join(",")));
        } else {
            gens.insert(name.split('-').take(2).collect::<Vec<_>>().join("-"));
        }
    }
    format!(
        "{} {}",
        gens.into_iter().collect::<Vec<_>>().join("+"),
        logs.join(" ")
    )
    .trim()
    .to_string()
}

/// The end-to-end crash: `rekey` killed (SIGKILL) at instants spread over its run, then `recover`.
/// Whatever the instant, exactly one complete SSTable must remain: the original, byte-identical,
/// or the rekeyed one, fully under the new key; no log and no stray file.
#[test]
fn killed_mid_rekey_then_recover() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut keys = Keys::new(&shared, &tmp.path().join("keys"));
    let from = keys.kmip("crash-old", 128);
    let to = keys.kmip("crash-new-key-0002", 128);
    let ring = keys.keyring();
    let plain = tmp.path().join("plain");
    oracle_ok(
        &shared,
        &[
            "synth".into(),
            plain.clone().into(),
            "--mib".into(),
            "48".into(),
        ],
    );
    let plain_data = plain.join("nb-1-big-Data.db");
    let digest = plain_digest(&shared, &plain_data);
    let template = tmp.path().join("template");
    let mut args: Vec<OsString> =
        vec!["encrypt".into(), plain_data.into(), template.clone().into()];
    args.extend(from.encrypt_args(128));
    oracle_ok(&shared, &args);
    let original = snapshot(&template);
    let table = "ks/big-0123456789abcdef0123456789abcdef";
    let prepare = |name: &str| -> (PathBuf, PathBuf) {
        let data = tmp.path().join(name);
        let dir = data.join(table);
        fs::create_dir_all(&dir).unwrap();
        for (n, bytes) in &original {
            fs::write(dir.join(n), bytes).unwrap();
        }
        (data, dir)
    };
    let rekey_args = |data: &Path| -> Vec<OsString> {
        vec![
            "rekey".into(),
            "--to".into(),
            to.keyref().into(),
            "--keyring".into(),
            ring.clone().into(),
            "--data-dir".into(),
            data.into(),
            "--quiet".into(),
        ]
    };

    // an uninterrupted run: how long it takes, and the oracle's word on its result
    let (data, dir) = prepare("full");
    let t0 = Instant::now();
    let out = rekey_tool(&rekey_args(&data));
    let full = t0.elapsed();
    expect_exit(&out, 0, "uninterrupted rekey");
    let mut args: Vec<OsString> = vec!["verify".into(), dir.join("nb-2-big-Data.db").into()];
    args.extend(to.verify_args());
    let v = oracle_ok(&shared, &args);
    assert_eq!(v["plaintext_sha256"], digest["plaintext_sha256"]);

    let runs = 12;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..runs {
        let (data, dir) = prepare(&format!("kill{k}"));
        let mut child = Command::new(BIN)
            .args(rekey_args(&data))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(k as f64 / (runs - 2) as f64));
        let _ = child.kill();
        child.wait().unwrap();
        let state = crash_state(&dir);
        *seen.entry(state.clone()).or_default() += 1;

        let out = rekey_tool(&["recover".into(), "--data-dir".into(), data.clone().into()]);
        expect_exit(&out, 0, &format!("recover after a kill at state {state}"));
        let after = snapshot(&dir);
        if after.keys().all(|n| n.starts_with("nb-1-big-")) {
            assert_eq!(
                after, original,
                "rolled back after {state}: the original, byte-identical"
            );
        } else {
            assert!(
                after.keys().all(|n| n.starts_with("nb-2-big-")),
                "after {state} and recover: one SSTable and no log, found {:?}",
                after.keys().collect::<Vec<_>>()
            );
            let toc = String::from_utf8(after["nb-2-big-TOC.txt"].clone()).unwrap();
            for comp in toc.lines() {
                assert!(
                    after.contains_key(&format!("nb-2-big-{comp}")),
                    "{comp} after {state}"
                );
            }
            let out = rekey_tool(&[
                "verify".into(),
                "--key".into(),
                to.keyref().into(),
                "--deep".into(),
                "--keyring".into(),
                ring.clone().into(),
                "--data-dir".into(),
                data.clone().into(),
            ]);
            expect_exit(&out, 0, &format!("verify --deep the survivor of {state}"));
        }
        fs::remove_dir_all(&data).unwrap();
    }
    println!(
        "killed rekey ({:.0} ms uninterrupted) at {runs} instants, states seen: {seen:?}",
        full.as_secs_f64() * 1000.0
    );
}
