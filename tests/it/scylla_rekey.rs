//! `rekey` of ScyllaDB SSTables (FORMAT.md 4.7, 4.9), judged by the independent ScyllaDB oracle of
//! ../shared: after one rekey over a copy of testdata/scylla/ every live SSTable opens under the
//! new key with the plaintext MANIFEST.json records for every component, the Scylla.db entries
//! other than tag 3 and the attributes other than the three encryption ones unchanged, the same
//! mask, trailing CRC and tags; a wrong key does not open it; the snapshot is untouched; no
//! TOC.txt.tmp, journal or old generation is left; `verify` proves the result; a second run
//! skips everything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::support::oracle::{par_map, scylla_oracle, shared};
use crate::support::{hex, scylla_manifest, strings, tree_strict, walk, Scratch};

fn keyring(path: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::support::read_keyring(path)
}

fn env() -> Scratch {
    let env = Scratch::of(&["scylla", "keys"]);
    let mut ring = fs::read_to_string(env.p("keys/keyring")).unwrap();
    ring.push_str(&fs::read_to_string(env.p("scylla/keys/keyring")).unwrap());
    fs::write(env.p("all.keyring"), ring).unwrap();
    crate::support::chmod(&env.p("all.keyring"), 0o600);
    env
}

/// The new SSTable of an old Data.db, by the rekey's report.
fn news(rep: &Value, root: &Path) -> BTreeMap<String, String> {
    rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "rekeyed")
        .map(|s| {
            let rel = |k: &str| {
                s[k].as_str()
                    .unwrap()
                    .strip_prefix(&format!("{}/", root.display()))
                    .unwrap()
                    .to_string()
            };
            (rel("old"), rel("new"))
        })
        .collect()
}

/// The oracle's verdict on `data` with the key file `key_file` or the KMIP key `(id, bytes)`.
fn oracle_verify(
    shared: &Path,
    data: &Path,
    key: &Result<String, (String, Vec<u8>)>,
) -> (i32, Value) {
    let mut args: Vec<OsString> = vec!["verify".into(), data.into()];
    match key {
        Ok(file) => args.extend(["--key-file".into(), file.into()]),
        Err((id, bytes)) => args.extend(["--key".into(), format!("{id}:{}", hex(bytes)).into()]),
    }
    scylla_oracle(shared, &args)
}

/// After a rekey to the key file `new_key` (report `rep`): the oracle opens every new SSTable with
/// it, with the MANIFEST's plaintexts, other Scylla.db entries and attributes, mask, CRC layout,
/// tags and cipher; no old SSTable, TOC.txt.tmp or journal is left; the snapshot is untouched.
fn judge_local(
    env: &Scratch,
    shared: &Path,
    rep: &Value,
    new_key: &str,
    snapshot_before: &BTreeMap<String, String>,
) {
    let new = news(rep, &env.root);
    let live: Vec<&Value> = scylla_manifest()
        .iter()
        .filter(|e| e["location"] == "live")
        .collect();
    assert_eq!(new.len(), live.len(), "{}", rep["totals"]);

    let failures = par_map(&live, |e| {
        let old = e["data"].as_str().unwrap();
        let data = env.p(&new[old]);
        let mut bad = Vec::new();
        let (code, out) = oracle_verify(shared, &data, &Ok(new_key.to_string()));
        if code != 0 {
            return vec![format!("{old}: the oracle refuses the new SSTable: {out}")];
        }
        for (c, want) in e["components"].as_object().unwrap() {
            if c == "Scylla.db" {
                continue; // tag 3 changed; the rest is compared below
            }
            let got = &out["components"][c];
            for k in ["plaintext_sha256", "size", "disk_size", "encrypted"] {
                if got[k] != want[k] {
                    bad.push(format!("{old} {c}: {k} {} != manifest {}", got[k], want[k]));
                }
            }
        }
        for k in [
            "plaintext_sha256_all",
            "scylla_db_other_entries_sha256",
            "other_extension_attributes_sha256",
        ] {
            if out[k] != e[k] {
                bad.push(format!("{old}: {k} {} != manifest {}", out[k], e[k]));
            }
        }
        for (got, want) in [
            (
                &out["encrypted_components_mask"],
                &e["encrypted_components"],
            ),
            (&out["scylla_db"]["trailing_crc"], &e["trailing_crc"]),
            (&out["scylla_db"]["tags"], &e["scylla_db_tags"]),
            (&out["cipher"], &e["cipher"]),
            (&out["strength"], &e["bits"]),
        ] {
            if got != want {
                bad.push(format!("{old}: oracle says {got}, manifest {want}"));
            }
        }
        // The new Scylla.db names the target key file (and nothing opens it without that key:
        // the KMIP test below checks a wrong key on rekeyed files).
        if out["key_ref"].as_str() != Some(new_key) {
            bad.push(format!("{old}: key_ref {}", out["key_ref"]));
        }
        if env.p(old).exists() {
            bad.push(format!("{old}: the old SSTable is still there"));
        }
        bad
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // No TOC.txt.tmp, journal or leftover; the snapshot untouched.
    let mut files = Vec::new();
    walk(&env.p("scylla/data"), &mut files);
    for f in &files {
        let s = f.display().to_string();
        assert!(
            !s.ends_with(".tmp") && !s.contains(".sstable-rekey-scylla"),
            "left: {s}"
        );
    }
    let snapshot_after: BTreeMap<String, String> = tree_strict(&env.p("scylla/data"))
        .into_iter()
        .filter(|(p, _)| p.contains("/snapshots/"))
        .collect();
    assert_eq!(*snapshot_before, snapshot_after);
}

#[test]
fn rekey_to_a_local_key_file_then_the_oracle_opens_every_sstable_with_it() {
    let Some(shared) = shared() else { return };
    let env = env();
    let new_key = env.s("keys/new.key");
    let snapshot_before: BTreeMap<String, String> = tree_strict(&env.p("scylla/data"))
        .into_iter()
        .filter(|(p, _)| p.contains("/snapshots/"))
        .collect();
    let report = env.tmp.path().join("rekey.json");
    let mut args = strings(&["rekey", "-q", "--to"]);
    args.push(format!("file:{new_key}"));
    args.extend(strings(&[
        "--keyring",
        &env.s("all.keyring"),
        "--data-dir",
        &env.s("scylla/data"),
    ]));
    args.extend(["--report".into(), report.display().to_string()]);
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r.stdout.contains("WITH scylla_encryption_options = {"),
        "{}",
        r.stdout
    );
    judge_local(&env, &shared, &rep, &new_key, &snapshot_before);

    // verify proves it; a second rekey has nothing to do.
    let v = env.run(&strings(&[
        "verify",
        "--key",
        &format!("file:{new_key}"),
        "--data-dir",
        &env.s("scylla/data"),
    ]));
    assert_eq!(v.code, 0, "{}", v.all());
    let again = env.run(&args);
    assert_eq!(again.code, 0, "{}", again.all());
    let rep2: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rep2["totals"]["rekeyed"], 0, "{}", rep2["totals"]);
}

#[test]
fn rekey_to_a_kmip_key_then_the_oracle_opens_it_and_a_wrong_key_does_not() {
    let Some(shared) = shared() else { return };
    let env = env();
    let report = env.tmp.path().join("rekey.json");
    let mut args = strings(&[
        "rekey",
        "-q",
        "--to",
        "kmip://kmip1/new-128",
        "--keyring",
        &env.s("all.keyring"),
        "--data-dir",
        &env.s("scylla/data"),
        "--report",
        &report.display().to_string(),
        "scylla_matrix",
        "t_kmip_CBC_128",
        "t_local_ECB_128",
    ]);
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let new = news(&rep, &env.root);
    assert_eq!(new.len(), 8, "{}", rep["totals"]);
    let ring = keyring(&env.p("keys/keyring"));
    let new_key = Err(("new-128".to_string(), ring["new-128"].clone()));
    for e in scylla_manifest().iter().filter(|e| e["location"] == "live") {
        let old = e["data"].as_str().unwrap();
        let Some(n) = new.get(old) else { continue };
        let (code, out) = oracle_verify(&shared, &env.p(n), &new_key);
        assert_eq!(code, 0, "{old}: {out}");
        assert_eq!(
            out["plaintext_sha256_all"], e["plaintext_sha256_all"],
            "{old}"
        );
        assert_eq!(out["key_ref"], "new-128", "{old}: {out}");
        let mut wrong = ring["new-128"].clone();
        wrong[0] ^= 1;
        let (code, _) = oracle_verify(&shared, &env.p(n), &Err(("new-128".into(), wrong)));
        assert_eq!(code, 1, "{old}: a wrong key must not open it");
    }
    // A 192-bit table cannot move to a 128-bit key: refused, untouched.
    args.truncate(args.len() - 2);
    args.push("t_kmip_CBC_192".into());
    let before = tree_strict(&env.p("scylla/data/scylla_matrix"));
    let r = env.run(&args);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("128 bits") || r.all().contains("strength"),
        "{}",
        r.all()
    );
    assert_eq!(before, tree_strict(&env.p("scylla/data/scylla_matrix")));
}

/// The SSTables of a stage or rekey report with `status`.
fn with_status<'a>(rep: &'a Value, status: &str) -> Vec<&'a Value> {
    rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == status)
        .collect()
}

/// The staged path: `stage` (node serving) writes every live SSTable's re-ciphered files into
/// the staging folder and touches no table folder; an SSTable whose Data.db is replaced after
/// staging (a new inode, same bytes) has its entry discarded; the `rekey` then commits every other
/// staged copy by renames, rewrites that one, and the oracle judges the result as for an
/// ordinary rekey.
#[test]
fn stage_then_rekey_commits_the_staged_copies_and_the_oracle_opens_them() {
    let Some(shared) = shared() else { return };
    let env = env();
    let new_key = env.s("keys/new.key");
    let data = env.p("scylla/data");
    let outside_staging = |t: BTreeMap<String, String>| -> BTreeMap<String, String> {
        t.into_iter()
            .filter(|(p, _)| !p.starts_with(".sstable-rekey-staging"))
            .collect()
    };
    let before = tree_strict(&data);
    let snapshot_before: BTreeMap<String, String> = before
        .clone()
        .into_iter()
        .filter(|(p, _)| p.contains("/snapshots/"))
        .collect();
    let common = |cmd: &str, report: &str| {
        let mut a = strings(&[cmd, "-q", "--to"]);
        a.push(format!("file:{new_key}"));
        a.extend(strings(&["--keyring", &env.s("all.keyring"), "--data-dir"]));
        a.push(env.s("scylla/data"));
        a.extend([
            "--report".into(),
            env.tmp.path().join(report).display().to_string(),
        ]);
        a
    };
    let read = |report: &str| -> Value {
        serde_json::from_str(&fs::read_to_string(env.tmp.path().join(report)).unwrap()).unwrap()
    };
    let live: Vec<&Value> = scylla_manifest()
        .iter()
        .filter(|e| e["location"] == "live")
        .collect();

    let st = env.run(&common("stage", "stage.json"));
    assert_eq!(st.code, 0, "{}", st.all());
    let staged = read("stage.json");
    assert_eq!(
        with_status(&staged, "staged").len(),
        live.len(),
        "{}",
        staged["totals"]
    );
    assert_eq!(
        outside_staging(tree_strict(&data)),
        before,
        "stage changed a table folder"
    );
    // A second stage keeps every valid entry.
    let again = env.run(&common("stage", "stage2.json"));
    assert_eq!(again.code, 0, "{}", again.all());
    let kept = read("stage2.json");
    assert_eq!(with_status(&kept, "staged").len(), 0, "{}", kept["totals"]);

    // One source replaced by a copy of itself: its entry is stale.
    let changed = env.p(live[0]["data"].as_str().unwrap());
    let copy = changed.with_extension("copy");
    fs::copy(&changed, &copy).unwrap();
    fs::rename(&copy, &changed).unwrap();

    let r = env.run(&common("rekey", "rekey.json"));
    assert_eq!(r.code, 0, "{}", r.all());
    let rep = read("rekey.json");
    let rekeyed = with_status(&rep, "rekeyed");
    assert_eq!(rekeyed.len(), live.len(), "{}", rep["totals"]);
    let rewritten: Vec<&str> = rekeyed
        .iter()
        .filter(|s| s["from_staged"] != true)
        .map(|s| s["old"].as_str().unwrap())
        .collect();
    assert_eq!(
        rewritten,
        [changed.display().to_string()],
        "{}",
        rep["notes"]
    );
    assert!(
        rep["notes"]
            .to_string()
            .contains("discarded the staged copy"),
        "{}",
        rep["notes"]
    );
    assert!(!data.join(".sstable-rekey-staging").exists());
    assert!(!data.join(".sstable-rekey-obsolete").exists());
    judge_local(&env, &shared, &rep, &new_key, &snapshot_before);
}

/// `--scylla-yaml` whose `user_info_encryption` names the key file a rekeyed table was under:
/// the rekey prints (and reports) the scylla.yaml change that makes new writes use the new key; a
/// disabled section, or one naming another key, calls for nothing.
#[test]
fn a_scylla_yaml_still_naming_the_replaced_key_gets_its_change_printed() {
    let env = env();
    let table = "t_local_CBC_128";
    let dir = crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), table);
    let scylla_db = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.display().to_string().ends_with("Scylla.db"))
        .unwrap();
    let old = crate::support::ScyllaDb::read(&scylla_db)
        .secret_key_file()
        .unwrap();
    let new_key = env.s("keys/new.key");
    let yaml = env.tmp.path().join("scylla.yaml");
    let section = |name: &str, enabled: bool, file: &str| {
        format!(
            "{name}:\n  enabled: {enabled}\n  cipher_algorithm: AES/CBC/PKCS5Padding\n  secret_key_strength: 128\n  key_provider: LocalFileSystemKeyProviderFactory\n  secret_key_file: {file}\n"
        )
    };
    let run = |text: String| {
        fs::write(&yaml, text).unwrap();
        let report = env.tmp.path().join("rekey.json");
        let mut args = strings(&["rekey", "-q", "--to"]);
        args.push(format!("file:{new_key}"));
        args.extend(strings(&["--keyring", &env.s("all.keyring"), "--data-dir"]));
        args.push(env.s("scylla/data"));
        args.extend(strings(&["--scylla-yaml", &yaml.display().to_string()]));
        args.extend(["--report".into(), report.display().to_string()]);
        args.extend(strings(&["scylla_matrix", table]));
        let r = env.run(&args);
        assert_eq!(r.code, 0, "{}", r.all());
        let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
        (r, rep)
    };
    // Another key in user_info_encryption, the old one only in a disabled section: nothing.
    let other = env.s("keys/new.key");
    let (r, rep) = run(section("user_info_encryption", true, &other)
        + &section("system_info_encryption", false, &old));
    assert!(
        rep["totals"]["rekeyed"].as_u64().unwrap() > 0,
        "{}",
        rep["totals"]
    );
    assert!(rep.get("scylla_yaml").is_none(), "{rep}");
    assert!(!r.stdout.contains("Change scylla.yaml"), "{}", r.stdout);

    // Back under the old key, then with user_info_encryption naming it.
    let mut back = strings(&["rekey", "-q", "--to"]);
    back.push(format!("file:{old}"));
    back.extend(strings(&["--keyring", &env.s("all.keyring"), "--data-dir"]));
    back.push(env.s("scylla/data"));
    back.extend(strings(&["scylla_matrix", table]));
    let b = env.run(&back);
    assert_eq!(b.code, 0, "{}", b.all());
    let (r, rep) = run(section("user_info_encryption", true, &old));
    let changes = rep["scylla_yaml"].as_array().expect("scylla_yaml changes");
    assert_eq!(changes.len(), 1, "{rep}");
    let c = changes[0].as_str().unwrap();
    assert!(
        c.contains("user_info_encryption") && c.contains(&format!("secret_key_file: {new_key}")),
        "{c}"
    );
    assert!(
        r.stdout.contains("Change scylla.yaml on every node"),
        "{}",
        r.stdout
    );
}
