//! The ScyllaDB part of testdata/ (`testdata/scylla/`, written by tools/gen_scylla.rs): what
//! MANIFEST.json says about it holds on disk, and the independent ScyllaDB oracle
//! (`../shared/oracle/scylla_oracle.py verify`) opens every SSTable with the key its Scylla.db names,
//! reports exactly the manifest's per-component plaintext digests, and refuses a wrong key.
//!
//! When ../shared is missing the oracle test prints a notice and passes, unless CI=true (then it
//! fails), like the other oracle tests. Python: $ORACLE_PYTHON (tools/test.sh sets it), else
//! <repo>/.venv/bin/python, else python3.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::oracle::{par_map, scylla_oracle, shared};
use crate::support::{
    ci_env, hex, scylla_manifest, set_secret_key_file, sha256, testdata, walk, Scratch, ScyllaDb,
};

/// `../shared` with the ScyllaDB oracle, or None (with a notice) outside CI.
fn scylla_shared() -> Option<PathBuf> {
    let shared = shared()?;
    let oracle = shared.join("oracle/scylla_oracle.py");
    if oracle.is_file() {
        return Some(shared);
    }
    assert!(
        !ci_env(),
        "CI=true but {} is missing: the ScyllaDB test data cannot be checked",
        oracle.display()
    );
    eprintln!(
        "NOTICE: {} is missing: the ScyllaDB oracle checks are SKIPPED",
        oracle.display()
    );
    None
}

/// The regular files of `dir`, sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {e}"))
}

/// The folder and the `me-1-big-` prefix of an entry's SSTable, under `root`.
fn split(root: &Path, e: &Value) -> (PathBuf, String) {
    let data = root.join(s(e, "data"));
    let name = data.file_name().unwrap().to_str().unwrap();
    let prefix = name.strip_suffix("Data.db").unwrap().to_string();
    (data.parent().unwrap().to_path_buf(), prefix)
}

/// `<id>:<base64 key>` lines (comments start with '#').
fn keyring(path: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::support::read_keyring(path)
}

#[test]
fn scylla_manifest_matches_the_files() {
    let td = testdata();
    let entries = scylla_manifest();
    let mut all = Vec::new();
    walk(&td.join("scylla"), &mut all);
    let total: u64 = all.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(total < 10 << 20, "testdata/scylla is {total} bytes");
    let on_disk: BTreeSet<String> = all
        .iter()
        .map(|p| p.strip_prefix(&td).unwrap().display().to_string())
        .filter(|p| p.ends_with("-Data.db"))
        .collect();
    let listed: BTreeSet<String> = entries.iter().map(|e| s(e, "data").to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "MANIFEST.json and testdata/scylla disagree"
    );
    assert_eq!(listed.len(), entries.len(), "an SSTable listed twice");

    for e in entries {
        let rel = s(e, "data");
        assert_eq!(e["vendor"], "scylla", "{rel}");
        let (dir, prefix) = split(&td, e);
        // TOC.txt lists every component present, itself and Scylla.db included.
        let toc: BTreeSet<String> = fs::read_to_string(dir.join(format!("{prefix}TOC.txt")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let present: BTreeSet<String> = file_names(&dir)
            .into_iter()
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            .collect();
        assert_eq!(toc, present, "{rel}: TOC.txt");
        let comps = e["components"].as_object().unwrap();
        assert_eq!(
            comps.keys().cloned().collect::<BTreeSet<_>>(),
            present,
            "{rel}: components"
        );
        for (c, d) in comps {
            let disk = fs::read(dir.join(format!("{prefix}{c}"))).unwrap();
            assert_eq!(disk.len() as u64, d["disk_size"], "{rel} {c}");
            let size = d["size"].as_u64().unwrap();
            if d["encrypted"] == true {
                // FORMAT.md 4.3: L when a multiple of 16, else L + 16.
                let want = if size % 16 == 0 { size } else { size + 16 };
                assert_eq!(disk.len() as u64, want, "{rel} {c}: encrypted size");
                assert!(c != "TOC.txt" && c != "Scylla.db", "{rel}: {c} encrypted");
            } else {
                assert_eq!(disk.len() as u64, size, "{rel} {c}");
                assert_eq!(sha256(&disk), d["plaintext_sha256"], "{rel} {c}");
            }
        }
        assert_eq!(comps["Data.db"]["encrypted"], true, "{rel}");

        // Scylla.db says what the manifest says.
        let sdb = ScyllaDb::read(&dir.join(format!("{prefix}Scylla.db")));
        assert_eq!(sdb.trailing_crc, e["trailing_crc"], "{rel}");
        let tags: Vec<u64> = sdb.entries.iter().map(|(t, _)| *t as u64).collect();
        assert_eq!(Value::from(tags.clone()), e["scylla_db_tags"], "{rel}");
        for t in [1, 2, 3, 4, 10] {
            assert!(tags.contains(&t), "{rel}: no tag {t}");
        }
        assert!(tags.contains(&7) || tags.contains(&8), "{rel}");
        assert_eq!(tags.contains(&12), sdb.trailing_crc, "{rel}");
        let mask = sdb.attribute("encrypted_components").expect("mask");
        assert_eq!(
            u32::from_le_bytes(mask.try_into().unwrap()) as u64,
            e["encrypted_components"],
            "{rel}"
        );
        let mut want_mask = 0u64;
        for (c, d) in comps {
            if d["encrypted"] == true && c != "Data.db" {
                want_mask |= 1
                    << match c.as_str() {
                        "Index.db" => 0,
                        "CompressionInfo.db" => 1,
                        "Summary.db" => 4,
                        "Digest.crc32" => 5,
                        "CRC.db" => 6,
                        "Filter.db" => 7,
                        "Statistics.db" => 8,
                        other => panic!("{rel}: {other} encrypted"),
                    };
            }
        }
        assert_eq!(want_mask, e["encrypted_components"], "{rel}: mask");
        let opts: BTreeMap<String, Value> = sdb
            .options()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        assert_eq!(
            Value::Object(opts.clone().into_iter().collect()),
            e["options"],
            "{rel}"
        );
        assert_eq!(opts["cipher_algorithm"], e["cipher"], "{rel}");
        assert_eq!(
            opts["secret_key_strength"],
            e["bits"].as_u64().unwrap().to_string(),
            "{rel}"
        );
        let key_id = sdb.attribute("scylla_key_id");
        match s(e, "provider") {
            "kmip" => {
                assert_eq!(opts["kmip_host"], "kmip1", "{rel}");
                assert_eq!(
                    key_id.map(|k| hex(&k)).as_deref(),
                    e["scylla_key_id"].as_str(),
                    "{rel}"
                );
                let ring = keyring(&td.join(s(e, "keyring")));
                let key = &ring[s(e, "key_id")];
                assert_eq!(key.len() as u64 * 8, e["bits"], "{rel}: KMIP key length");
            }
            "local" => {
                assert!(key_id.is_none(), "{rel}");
                let file = s(e, "key_file");
                assert_eq!(opts["secret_key_file"], file, "{rel}");
                assert!(!file.starts_with('/'), "{rel}: relative to testdata/");
                let text = fs::read_to_string(td.join(file)).unwrap();
                assert!(!text.contains("\n\n") && text.ends_with('\n'), "{file}");
            }
            p => panic!("{rel}: provider {p}"),
        }
    }

    // What the data set covers.
    let has = |f: &dyn Fn(&Value) -> bool| entries.iter().any(f);
    for provider in ["kmip", "local"] {
        for cipher in ["AES/CBC/PKCS5Padding", "AES/ECB/PKCS5Padding"] {
            for bits in [128, 192, 256] {
                for crc in [true, false] {
                    for all in [true, false] {
                        assert!(
                            has(&|e| e["provider"] == provider
                                && e["cipher"] == cipher
                                && e["bits"] == bits
                                && e["trailing_crc"] == crc
                                && e["all_components"] == all
                                && e["location"] == "live"),
                            "no {provider} {cipher} {bits} crc={crc} all={all}"
                        );
                    }
                }
            }
        }
    }
    assert!(has(&|e| e["scylla_db_tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from(200))));
    assert!(has(
        &|e| e["key_bytes"].as_u64().unwrap() * 8 > e["bits"].as_u64().unwrap()
    ));
    assert!(has(
        &|e| e["compressed"] == false && e["all_components"] == true
    ));
    assert!(has(&|e| s(e, "location").starts_with("snapshot:")));
    assert!(has(&|e| s(e, "generation").len() == 28));
    assert!(has(&|e| e["scylla_key_id"]
        .as_str()
        .is_some_and(|k| k.len() == 32)));
    for v in ["mc", "md", "me"] {
        assert!(has(&|e| e["version"] == v), "no {v} SSTable");
    }
}

/// The oracle's `verify` arguments for an entry of a copy at `root`: the key file the (rewritten)
/// Scylla.db names, or the KMIP id and its key; `wrong` flips a bit of the KMIP key.
fn verify_args(root: &Path, data: &Path, e: &Value, wrong: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["verify".into(), data.into()];
    match s(e, "provider") {
        "local" => {
            args.push("--key-file".into());
            args.push(root.join(s(e, "key_file")).into());
        }
        _ => {
            let mut key = keyring(&root.join(s(e, "keyring")))[s(e, "key_id")].clone();
            if wrong {
                key[0] ^= 1;
            }
            args.push("--key".into());
            args.push(format!("{}:{}", s(e, "key_id"), hex(&key)).into());
        }
    }
    args
}

#[test]
fn scylla_oracle_opens_every_sstable_with_its_key_and_refuses_wrong_keys() {
    let Some(shared) = scylla_shared() else {
        return;
    };
    // A copy whose Scylla.db files name their key files by absolute paths (testdata/README.md).
    let sc = Scratch::of(&["keys", "scylla"]);
    let entries: Vec<(usize, &Value)> = scylla_manifest().iter().enumerate().collect();
    assert!(entries.len() >= 60, "{} ScyllaDB SSTables", entries.len());
    let failures = par_map(&entries, |(i, e)| {
        let rel = s(e, "data");
        let mut bad = Vec::new();
        let data = sc.p(rel);
        let (code, out) = scylla_oracle(&shared, &verify_args(&sc.root, &data, e, false));
        if code != 0 || out["ok"] != true {
            return vec![format!("{rel}: oracle verify exit {code}: {out}")];
        }
        let local = e["provider"] == "local";
        for (c, want) in e["components"].as_object().unwrap() {
            let got = &out["components"][c];
            if c == "Scylla.db" && local {
                // Rewritten in the copy (secret_key_file made absolute).
                continue;
            }
            for k in ["plaintext_sha256", "size", "disk_size", "encrypted"] {
                if got[k] != want[k] {
                    bad.push(format!("{rel} {c}: {k} {} != manifest {}", got[k], want[k]));
                }
            }
        }
        for k in [
            "plaintext_sha256_all",
            "scylla_db_other_entries_sha256",
            "other_extension_attributes_sha256",
        ] {
            if out[k] != e[k] {
                bad.push(format!("{rel}: {k} {} != manifest {}", out[k], e[k]));
            }
        }
        let same = [
            (&out["provider"], &e["provider"]),
            (&out["cipher"], &e["cipher"]),
            (&out["strength"], &e["bits"]),
            (
                &out["encrypted_components_mask"],
                &e["encrypted_components"],
            ),
            (&out["scylla_db"]["trailing_crc"], &e["trailing_crc"]),
            (&out["scylla_db"]["tags"], &e["scylla_db_tags"]),
        ];
        for (got, want) in same {
            if got != want {
                bad.push(format!("{rel}: oracle says {got}, manifest {want}"));
            }
        }
        let key_ref = if local {
            Value::from(sc.s(s(e, "key_file")))
        } else {
            e["key_id"].clone()
        };
        if out["key_ref"] != key_ref {
            bad.push(format!("{rel}: key_ref {} != {key_ref}", out["key_ref"]));
        }

        // A wrong key must fail verification (exit 1), not be refused as input (exit 2).
        let wrong_args = if local {
            // A copy of the SSTable naming keys/new.key (same lines, other keys).
            let wrong_dir = sc.tmp.path().join(format!("wrong/{i}"));
            fs::create_dir_all(&wrong_dir).unwrap();
            let (dir, prefix) = split(&sc.root, e);
            for n in file_names(&dir).iter().filter(|n| n.starts_with(&prefix)) {
                fs::copy(dir.join(n), wrong_dir.join(n)).unwrap();
            }
            let new_key = sc.s("keys/new.key");
            let sdb = wrong_dir.join(format!("{prefix}Scylla.db"));
            assert!(set_secret_key_file(&sdb, |_| Some(new_key.clone())));
            let wrong_data = wrong_dir.join(format!("{prefix}Data.db"));
            vec![
                "verify".into(),
                wrong_data.into(),
                "--key-file".into(),
                new_key.into(),
            ]
        } else {
            verify_args(&sc.root, &data, e, true)
        };
        let (code, out) = scylla_oracle(&shared, &wrong_args);
        if code != 1 {
            bad.push(format!("{rel}: a wrong key gave exit {code}: {out}"));
        }
        bad
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
