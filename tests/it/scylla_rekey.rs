//! `rekey` of ScyllaDB SSTables (FORMAT.md 4.7, 4.9), judged by the independent ScyllaDB oracle of
//! ../shared: after one rekey over a copy of testdata/scylla/ every live SSTable opens under the
//! new key with the plaintext MANIFEST.json records for every component, the Scylla.db entries
//! other than tag 3 and the attributes other than the three encryption ones unchanged, the same
//! mask, trailing CRC and tags; a wrong key does not open it; the snapshot is untouched; no
//! TOC.txt.tmp, journal or old generation is left; `verify` proves the result; a second run
//! skips everything.
//!
//! `--to kmip://test/active` against the real PyKMIP server (support/kmip.rs): the key is the one
//! ScyllaDB's Locate would take (FORMAT.md 4.4: Active AES of the strength with usage
//! Encrypt|Decrypt, and `x-key-namespace` when the tables set `key_namespace`), and `--create-key`
//! makes one that PyKMIP's own client finds with ScyllaDB's Locate.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::kmip::{active_192_lock, kmip_server};
use crate::support::oracle::{par_map, scylla_oracle, shared};
use crate::support::{
    edit_scylla_db, hex, scylla_manifest, strings, tree_strict, walk, Run, Scratch,
};

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

// ------------------------------------------------------------ kmip://GROUP/active, as ScyllaDB

/// Sets `key_namespace` in the options of every live SSTable of table `t` (replacing one set
/// before).
fn set_key_namespace(env: &Scratch, t: &str, ns: &str) {
    let mut n = 0;
    for e in fs::read_dir(crate::support::table_dir(
        &env.p("scylla/data/scylla_matrix"),
        t,
    ))
    .unwrap()
    {
        let p = e.unwrap().path();
        if p.to_str().unwrap().ends_with("-Scylla.db") {
            edit_scylla_db(&p, |opts, _| {
                opts.retain(|(k, _)| k != "key_namespace");
                opts.push(("key_namespace".into(), ns.into()));
            });
            n += 1;
        }
    }
    assert!(n > 0, "{t}: no Scylla.db");
}

/// `rekey --to kmip://test/active` of scylla_matrix `tables`, with `extra` options; the old keys
/// (group kmip1, not configured) come from the keyring.
fn rekey_active(env: &Scratch, cfg: &str, tables: &[&str], extra: &[&str]) -> Run {
    let report = env.tmp.path().join("rekey.json");
    let mut args = strings(&[
        "rekey",
        "-q",
        "--to",
        "kmip://test/active",
        "--kmip-config",
        cfg,
        "--keyring",
        &env.s("all.keyring"),
        "--data-dir",
        &env.s("scylla/data"),
        "--report",
        &report.display().to_string(),
    ]);
    args.extend(strings(extra));
    args.push("scylla_matrix".into());
    args.extend(strings(tables));
    env.run(&args)
}

/// Every live SSTable of `table` was rewritten, and the oracle opens the new one with `(id, key)`
/// only: the same plaintext, the key named in Scylla.db.
fn oracle_opens_table_with(shared: &Path, env: &Scratch, table: &str, id: &str, key: &[u8]) {
    let rep: Value =
        serde_json::from_str(&fs::read_to_string(env.tmp.path().join("rekey.json")).unwrap())
            .unwrap();
    let new = news(&rep, &env.root);
    let live: Vec<&Value> = scylla_manifest()
        .iter()
        .filter(|e| {
            e["location"] == "live" && e["data"].as_str().unwrap().contains(&format!("/{table}-"))
        })
        .collect();
    assert!(!live.is_empty());
    assert_eq!(new.len(), live.len(), "{}", rep["totals"]);
    let key = Err((id.to_string(), key.to_vec()));
    for e in live {
        let old = e["data"].as_str().unwrap();
        let (code, out) = oracle_verify(shared, &env.p(&new[old]), &key);
        assert_eq!(code, 0, "{old}: {out}");
        assert_eq!(out["key_ref"], id, "{old}: {out}");
        assert_eq!(
            out["plaintext_sha256_all"], e["plaintext_sha256_all"],
            "{old}"
        );
    }
}

/// The number of a PyKMIP id (they count up from 1): a later id is a newer key.
fn num(id: &str) -> u64 {
    id.parse().unwrap_or_else(|_| panic!("PyKMIP id {id:?}"))
}

#[test]
fn active_takes_the_key_scylladb_locates_not_a_newer_misfit() {
    let Some(shared) = shared() else { return };
    let Some(kmip) = kmip_server() else { return };
    let _one = active_192_lock();
    kmip.retire_active(192);
    let env = env();
    let (right, key) = kmip.create(192, &[]);
    // Newer keys (PyKMIP dates keys in whole seconds) that ScyllaDB's Locate does not take.
    std::thread::sleep(Duration::from_millis(1100));
    let no_usage = kmip.create(192, &["--usage", "none"]).0;
    let encrypt_only = kmip.create(192, &["--usage", "encrypt"]).0;
    let wrong_length = kmip.create(128, &[]).0;
    let pre_active = kmip.create(192, &["--pre-active"]).0;
    // DSE's Locate (no usage mask) would take the newest Active AES-192 key: a misfit.
    let active = kmip.active_ids(192);
    let newest = active.iter().max_by_key(|i| num(i)).unwrap();
    assert!([&no_usage, &encrypt_only].contains(&newest), "{active:?}");
    assert!(!active.contains(&pre_active) && !active.contains(&wrong_length));

    let cfg = kmip.toml();
    let r = rekey_active(&env, &cfg, &["t_kmip_CBC_192"], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "kmip://test/active is key {right} (AES-192 with usage Encrypt|Decrypt)"
        )),
        "{}",
        r.all()
    );
    oracle_opens_table_with(&shared, &env, "t_kmip_CBC_192", &right, &key);
    // PyKMIP's own client with ScyllaDB's Locate agrees (newest first; ScyllaDB takes one).
    let ids = kmip.admin(&["scylla-locate", "--bits", "192"]);
    assert_eq!(ids["ids"][0], right.as_str(), "{ids}");
}

#[test]
fn active_with_a_key_namespace_takes_no_key_without_it_and_pykmip_cannot_make_one() {
    let Some(kmip) = kmip_server() else { return };
    let _one = active_192_lock();
    kmip.retire_active(192);
    let env = env();
    let ns = "rekey-test-ns";
    set_key_namespace(&env, "t_kmip_CBC_192", ns);
    // Active, AES-192, Encrypt|Decrypt, but no x-key-namespace (PyKMIP stores none).
    let (plain, _) = kmip.create(192, &[]);
    let cfg = kmip.toml();
    let before = tree_strict(&env.p("scylla/data"));

    let r = rekey_active(&env, &cfg, &["t_kmip_CBC_192"], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "has no Active AES-192 key with usage Encrypt|Decrypt and x-key-namespace \"{ns}\""
        )),
        "{}",
        r.all()
    );
    // The namespace is what rules that key out: the table without one takes it.
    let r = rekey_active(&env, &cfg, &["t_kmip_ECB_192"], &["--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("kmip://test/active is key {plain} ")),
        "{}",
        r.all()
    );

    // --create-key asks for a key with the namespace, as ScyllaDB's Create does: PyKMIP 0.11
    // refuses the custom attribute, and nothing is created or written.
    let r = rekey_active(&env, &cfg, &["t_kmip_CBC_192"], &["--create-key"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for want in [
        "Create failed: Invalid Field",
        "The x-key-namespace attribute is unsupported",
        "x-key-namespace \"rekey-test-ns\" (the tables' key_namespace)",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.all());
    }
    assert_eq!(kmip.active_ids(192), vec![plain]);
    assert_eq!(before, tree_strict(&env.p("scylla/data")));
    // ScyllaDB's Locate with the namespace fails as a whole on PyKMIP 0.11 (a custom attribute
    // in a Locate filter is a General Failure): why ours checks it on Get Attributes instead.
    let v = kmip.admin(&["scylla-locate", "--bits", "192", "--namespace", ns]);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("GENERAL_FAILURE")),
        "{v}"
    );
}

#[test]
fn active_refuses_tables_that_disagree_on_key_namespace_before_asking_the_server() {
    let Some(kmip) = kmip_server() else { return };
    let env = env();
    set_key_namespace(&env, "t_kmip_CBC_192", "a");
    set_key_namespace(&env, "t_kmip_ECB_192", "b");
    // A configuration whose server does not answer: a refusal after asking it would say so.
    let certs = kmip.dir.join("certs");
    let cfg = env.tmp.path().join("unreachable.toml");
    fs::write(
        &cfg,
        format!(
            "[groups.test]\nhosts = [\"127.0.0.1:1\"]\nca = \"{c}/ca.crt\"\ncert = \"{c}/client.crt\"\nkey = \"{c}/client.key\"\ntimeout_ms = 2000\n",
            c = certs.display()
        ),
    )
    .unwrap();
    let before = tree_strict(&env.p("scylla/data"));
    for extra in [&[][..], &["--create-key"][..]] {
        let r = rekey_active(
            &env,
            cfg.to_str().unwrap(),
            &["t_kmip_CBC_192", "t_kmip_ECB_192"],
            extra,
        );
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.stderr.contains(
                "disagree on key_namespace (key_namespace \"a\": scylla_matrix.t_kmip_CBC_192; key_namespace \"b\": scylla_matrix.t_kmip_ECB_192)"
            ),
            "{}",
            r.all()
        );
        assert_eq!(before, tree_strict(&env.p("scylla/data")));
    }
    // The same tables, one namespace: past that check, to the (unreachable) server.
    set_key_namespace(&env, "t_kmip_ECB_192", "a");
    let r = rekey_active(&env, cfg.to_str().unwrap(), &["t_kmip_ECB_192"], &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no server could be used"), "{}", r.all());
}

#[test]
fn create_key_makes_the_key_scylladb_locate_finds() {
    let Some(shared) = shared() else { return };
    let Some(kmip) = kmip_server() else { return };
    let _one = active_192_lock();
    kmip.retire_active(192);
    let env = env();
    // DSE's Locate would take this one and create nothing; ScyllaDB's does not.
    let (misfit, _) = kmip.create(192, &["--usage", "encrypt"]);
    let none = kmip.admin(&["scylla-locate", "--bits", "192"]);
    assert_eq!(none["ids"], serde_json::json!([]), "{none}");

    let cfg = kmip.toml();
    let r = rekey_active(&env, &cfg, &["t_kmip_ECB_192"], &["--create-key"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let id = r
        .stderr
        .split("created and activated KMIP key test/")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", r.all()))
        .to_string();
    assert_ne!(id, misfit);
    assert_eq!(kmip.state(&id), "ACTIVE");
    let found = kmip.admin(&["scylla-locate", "--bits", "192"]);
    assert_eq!(found["ids"], serde_json::json!([id]), "{found}");
    let key = kmip.key(&id);
    assert_eq!(key.len(), 24);
    oracle_opens_table_with(&shared, &env, "t_kmip_ECB_192", &id, &key);
    // A later run finds it and creates no other.
    let r = rekey_active(
        &env,
        &cfg,
        &["t_kmip_CBC_192"],
        &["--create-key", "--dry-run"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stderr
            .contains(&format!("kmip://test/active is key {id} ")),
        "{}",
        r.all()
    );
}

/// The target key file's bytes change between `stage` and the window (same path, another key):
/// the staged copies, made under the old bytes, are discarded (each with its reason) and the
/// SSTables rewritten under the bytes the file holds now; the oracle opens every new SSTable with
/// the file as it is. Committing the staged copies would have left files no key opens.
#[test]
fn staged_copies_made_with_other_target_key_bytes_are_rewritten() {
    let Some(shared) = shared() else { return };
    let env = env();
    let table = "t_local_CBC_128";
    let target = env.tmp.path().join("target.key");
    let write_key = |b: u8| {
        fs::write(&target, crate::support::scylla_key_line(&[b; 16])).unwrap();
        crate::support::chmod(&target, 0o600);
    };
    write_key(0x11);
    let args = |verb: &str| {
        let mut a = strings(&[verb, "-q", "--to"]);
        a.push(format!("file:{}", target.display()));
        a.extend(strings(&["--keyring", &env.s("all.keyring"), "--data-dir"]));
        a.push(env.s("scylla/data"));
        a.extend([
            "--report".into(),
            env.tmp.path().join("r.json").display().to_string(),
        ]);
        a.extend(strings(&["scylla_matrix", table]));
        a
    };
    let st = env.run(&args("stage"));
    assert_eq!(st.code, 0, "{}", st.all());
    write_key(0x22);
    let r = env.run(&args("rekey"));
    assert_eq!(r.code, 0, "{}", r.all());
    let rep: Value =
        serde_json::from_str(&fs::read_to_string(env.tmp.path().join("r.json")).unwrap()).unwrap();
    let rekeyed = with_status(&rep, "rekeyed");
    assert_eq!(rekeyed.len(), 4, "{}", rep["totals"]);
    for s in &rekeyed {
        assert_eq!(s["from_staged"], false, "{s}");
        assert!(
            s["reason"]
                .as_str()
                .unwrap_or("")
                .contains("other key bytes"),
            "{s}"
        );
        let (code, out) = oracle_verify(
            &shared,
            Path::new(s["new"].as_str().unwrap()),
            &Ok(target.display().to_string()),
        );
        assert_eq!(code, 0, "{}: {out}", s["new"]);
    }
    assert!(!env.p("scylla/data/.sstable-rekey-staging").exists());
}

/// KMIP configured from a scylla.yaml, against the real server: a local-key table rekeyed to a
/// key PyKMIP made (fetched through the yaml's `kmip_hosts`), which the oracle opens with that key;
/// Scylla.db names the group and the key's id.
#[test]
fn rekey_to_a_pykmip_key_configured_from_scylla_yaml() {
    let Some(shared) = shared() else { return };
    let Some(server) = crate::support::kmip::kmip_server() else {
        return;
    };
    let env = env();
    let (id, bytes) = server.create(128, &[]);
    let yaml = server.scylla_yaml(env.tmp.path());
    let report = env.tmp.path().join("rekey.json");
    let mut args = strings(&["rekey", "-q", "--to"]);
    args.push(format!("kmip://test/{id}"));
    args.extend(strings(&["--keyring", &env.s("all.keyring"), "--data-dir"]));
    args.push(env.s("scylla/data"));
    args.extend(strings(&["--scylla-yaml", &yaml.display().to_string()]));
    args.extend(["--report".into(), report.display().to_string()]);
    args.extend(strings(&["scylla_matrix", "t_local_CBC_128"]));
    let r = env.run(&args);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("'kmip_host': 'test'"), "{}", r.stdout);
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let rekeyed = with_status(&rep, "rekeyed");
    assert_eq!(rekeyed.len(), 4, "{}", rep["totals"]);
    for s in rekeyed {
        let new = Path::new(s["new"].as_str().unwrap());
        let (code, out) = oracle_verify(&shared, new, &Err((id.clone(), bytes.clone())));
        assert_eq!(code, 0, "{}: {out}", new.display());
        assert_eq!(out["key_ref"], id.as_str(), "{out}");
    }
}
