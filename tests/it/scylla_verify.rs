//! `verify` and `inspect` on ScyllaDB SSTables (FORMAT.md 4), over a copy of testdata/scylla/
//! (written by tools/gen_scylla.rs from FORMAT.md alone, and checked by the ScyllaDB oracle in
//! scylla_testdata.rs): with every key, every live SSTable is proven (each encrypted component
//! decrypted and checked, 4.8); a key not given is reported as another key; a wrong key under the
//! right name fails the SSTable; the snapshot is listed with the key it still needs; `inspect`
//! names each SSTable's key without any key. The expectations come from MANIFEST.json.

use std::collections::BTreeMap;
use std::fs;

use base64::Engine;
use serde_json::Value;

use crate::support::{scylla_manifest, strings, Scratch};

/// A copy of testdata's ScyllaDB part and the keys it uses, with one keyring for every KMIP id.
fn env() -> Scratch {
    let env = Scratch::of(&["scylla", "keys"]);
    let mut ring = fs::read_to_string(env.p("keys/keyring")).unwrap();
    ring.push_str(&fs::read_to_string(env.p("scylla/keys/keyring")).unwrap());
    fs::write(env.p("all.keyring"), ring).unwrap();
    crate::support::chmod(&env.p("all.keyring"), 0o600);
    env
}

/// The key references the manifest's entries use: `file:<abs>` or `kmip://kmip1/<id>`.
fn key_ref(env: &Scratch, e: &Value) -> String {
    let k = e["key"].as_str().unwrap();
    match k.split_once(':').unwrap() {
        ("file", rel) => format!("file:{}", env.s(rel)),
        ("kmip", id) => format!("kmip://{}/{id}", e["kmip_host"].as_str().unwrap()),
        _ => panic!("key {k}"),
    }
}

fn live() -> Vec<&'static Value> {
    scylla_manifest()
        .iter()
        .filter(|e| e["location"] == "live")
        .collect()
}

/// `verify --keyring all --data-dir scylla/data --report R` with `keys`; its exit and report.
fn verify(env: &Scratch, keys: &[String], ring: &str) -> (i32, Value, String) {
    let report = env.tmp.path().join("verify.json");
    let mut args = strings(&["verify", "--keyring", ring, "--data-dir"]);
    args.push(env.s("scylla/data"));
    for k in keys {
        args.push(format!("--key={k}"));
    }
    args.extend(["--report".into(), report.display().to_string()]);
    let r = env.run(&args);
    let rep = serde_json::from_str(&fs::read_to_string(&report).unwrap_or_default())
        .unwrap_or(Value::Null);
    (r.code, rep, r.all())
}

fn verdicts(env: &Scratch, rep: &Value) -> BTreeMap<String, Value> {
    rep["sstables"]
        .as_array()
        .unwrap_or_else(|| panic!("no report: {rep}"))
        .iter()
        .map(|s| {
            let p = s["data"].as_str().unwrap();
            let rel = p
                .strip_prefix(&format!("{}/", env.root.display()))
                .unwrap_or(p);
            (rel.to_string(), s.clone())
        })
        .collect()
}

#[test]
fn verify_proves_every_live_sstable_under_its_key() {
    let env = env();
    let ring = env.s("all.keyring");
    let mut keys: Vec<String> = live().iter().map(|e| key_ref(&env, e)).collect();
    keys.sort();
    keys.dedup();
    let (code, rep, out) = verify(&env, &keys, &ring);
    assert_eq!(code, 0, "{out}");
    let v = verdicts(&env, &rep);
    for e in live() {
        let d = e["data"].as_str().unwrap();
        let s = &v[d];
        assert_eq!(s["status"], "ok", "{d}: {s}");
        assert_eq!(
            s["chunks"], e["chunks"],
            "{d}: every Data.db record checked"
        );
    }
    assert_eq!(rep["ok"], live().len());
    // The snapshot SSTables are listed with the key they still need.
    let snaps: Vec<&Value> = scylla_manifest()
        .iter()
        .filter(|e| e["location"] != "live")
        .collect();
    let backups = rep["backups"].as_array().unwrap();
    assert_eq!(backups.len(), snaps.len(), "{}", rep["backups"]);
    for b in backups {
        assert!(b["error"].is_null(), "{b}");
        assert_eq!(b["keys"].as_object().unwrap().len(), 1, "{b}");
    }
}

#[test]
fn a_key_not_given_is_another_key_and_a_wrong_key_fails() {
    let env = env();
    let ring = env.s("all.keyring");
    let all: Vec<String> = {
        let mut k: Vec<String> = live().iter().map(|e| key_ref(&env, e)).collect();
        k.sort();
        k.dedup();
        k
    };
    // Without kmip old-128: its SSTables are under another key, nothing else changes.
    let old128 = "kmip://kmip1/old-128".to_string();
    let without: Vec<String> = all.iter().filter(|k| **k != old128).cloned().collect();
    let (code, rep, out) = verify(&env, &without, &ring);
    assert_eq!(code, 1, "{out}");
    let v = verdicts(&env, &rep);
    let mut other = 0;
    for e in live() {
        let d = e["data"].as_str().unwrap();
        let want = if key_ref(&env, e) == old128 {
            "other_keys"
        } else {
            "ok"
        };
        assert_eq!(v[d]["status"], want, "{d}: {}", v[d]);
        other += (want == "other_keys") as usize;
    }
    assert!(other > 0 && rep["under_other_keys"] == other);

    // old-128 under its name, but other bytes: every SSTable under it fails, as a wrong key.
    let text = fs::read_to_string(&ring).unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode([0x5a; 16]);
    let bad: String = text
        .lines()
        .map(|l| match l.starts_with("old-128:") {
            true => format!("old-128:{wrong}\n"),
            false => format!("{l}\n"),
        })
        .collect();
    let bad_ring = env.p("bad.keyring");
    fs::write(&bad_ring, bad).unwrap();
    crate::support::chmod(&bad_ring, 0o600);
    let (code, rep, out) = verify(&env, &all, bad_ring.to_str().unwrap());
    assert_eq!(code, 1, "{out}");
    let v = verdicts(&env, &rep);
    for e in live() {
        let d = e["data"].as_str().unwrap();
        let s = &v[d];
        if key_ref(&env, e) == old128 {
            assert_eq!(s["status"], "failed", "{d}: {s}");
            assert!(
                s["error"].as_str().unwrap().contains("old-128"),
                "{d}: the error names the key: {s}"
            );
        } else {
            assert_eq!(s["status"], "ok", "{d}: {s}");
        }
    }
}

#[test]
fn inspect_names_the_key_of_every_scylla_sstable_without_a_key() {
    let env = env();
    for e in live() {
        let d = env.s(e["data"].as_str().unwrap());
        let r = env.run(&strings(&["inspect", "--json", &d]));
        assert_eq!(r.code, 0, "{}", r.all());
        let j: Value = serde_json::from_str(&r.stdout).unwrap();
        let i = j.as_array().map(|a| &a[0]).unwrap_or(&j);
        assert_eq!(i["encrypted"], true, "{i}");
        assert_eq!(i["cipher"], e["cipher"], "{i}");
        assert_eq!(i["key_bits"], e["bits"], "{i}");
        let keys = i["keys"].as_object().unwrap();
        assert_eq!(keys.len(), 1, "{i}");
        let (k, _) = keys.iter().next().unwrap();
        assert_eq!(*k, key_ref(&env, e), "{i}");
        let want: Vec<Value> = e["encrypted"].as_array().unwrap().clone();
        let mut have: Vec<Value> = i["encrypted_components"].as_array().unwrap().clone();
        let mut want_sorted = want.clone();
        have.sort_by_key(|v| v.to_string());
        want_sorted.sort_by_key(|v| v.to_string());
        assert_eq!(have, want_sorted, "{i}");
    }
}
