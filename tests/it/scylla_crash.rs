//! Crash safety of the ScyllaDB swap (FORMAT.md 4.9): a rekey of one ScyllaDB table crashed (or
//! failed) at every failpoint of the swap, judged by an independent model of ScyllaDB's startup
//! rule written from FORMAT.md 4.9, not from the crate (`support::scylla_boot`, shared with the
//! fault sweep: a generation with a TOC.txt.tmp is deleted; one with a TOC.txt is loaded; one with
//! neither stops the node):
//! - before `recover`, the folder as ScyllaDB would start it holds every original SSTable exactly
//!   once (by its Scylla.db SSTableIdentifier, which a rekey keeps), and never stops the node;
//! - `recover` resolves it to that same set, with no TOC.txt.tmp, journal or stray file left;
//! - every SSTable left opens, with the key its Scylla.db names, to its MANIFEST plaintext (the
//!   ScyllaDB oracle of ../shared, when present);
//! - an unfaulted rekey then brings the whole table under the new key.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;

use crate::support::oracle::{scylla_oracle, shared};
use crate::support::{
    manifest_identifier as hex_id, require_failpoints, scylla_boot,
    scylla_identifier as identifier, scylla_manifest, scylla_prefix as prefix, strings, Scratch,
    ScyllaDb,
};

const TABLE: &str = "t_local_CBC_128";

fn variants() -> Vec<String> {
    let mut v = Vec::new();
    for (name, ks) in [
        ("scylla.doomed", 1..=1),
        ("component.linked", 1..=8),
        ("dir.fsynced", 1..=1),
        ("scylla.committed", 1..=1),
        ("old.deleted", 1..=9),
    ] {
        for k in ks {
            let base = if k == 1 {
                name.to_string()
            } else {
                format!("{name}@{k}")
            };
            v.push(base.clone());
            v.push(format!("{base}:error"));
        }
    }
    v
}

#[test]
fn every_failpoint_of_the_scylla_swap_resolves_like_scylla_startup() {
    every_failpoint(false);
}

/// The same for the commit of staged copies (`stage` first, unfaulted): the staged files are
/// renamed in instead of written, the old files moved aside instead of deleted.
#[test]
fn every_failpoint_of_a_staged_scylla_swap_resolves_like_scylla_startup() {
    every_failpoint(true);
}

fn every_failpoint(staged: bool) {
    require_failpoints();
    let shared = shared();
    let originals: Vec<&serde_json::Value> = scylla_manifest()
        .iter()
        .filter(|e| e["table"] == TABLE && e["location"] == "live")
        .collect();
    assert_eq!(originals.len(), 4, "the table's SSTables");
    let mut failures = Vec::new();
    let mut fired = 0;
    for v in variants() {
        let env = Scratch::of(&["scylla", "keys"]);
        let data = env.s("scylla/data");
        let dir = crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), TABLE);
        let ids_before: BTreeSet<Vec<u8>> = scylla_boot(&dir)
            .unwrap()
            .iter()
            .map(|p| identifier(&dir, p))
            .collect();
        let mut args = strings(&["rekey", "-q", "--to"]);
        args.push(format!("file:{}", env.s("keys/new.key")));
        args.extend(strings(&["--data-dir", &data, "scylla_matrix", TABLE]));
        if staged {
            let mut stage = args.clone();
            stage[0] = "stage".into();
            let st = crate::support::run_in(&env.root, &stage, &[]);
            assert_eq!(st.code, 0, "{}", st.all());
            let mut files = Vec::new();
            crate::support::walk(&env.p("scylla/data/.sstable-rekey-staging"), &mut files);
            let manifests = files.iter().filter(|f| f.ends_with("manifest.json"));
            assert_eq!(manifests.count(), originals.len(), "staged: {files:?}");
        }
        let r = crate::support::run_in(&env.root, &args, &[("SSTABLE_REKEY_TEST_FAILPOINT", &v)]);
        let error = v.ends_with(":error");
        let hit = r.all().contains("injected failure") || r.stderr.contains("aborting");
        fired += hit as usize;
        let outcome = (|| -> Result<(), String> {
            match (hit, error) {
                (false, _) if r.code != 0 => return Err(format!("not fired, exit {}", r.code)),
                (true, false) if r.code != 134 => return Err(format!("crash: exit {}", r.code)),
                (true, true) if r.code != 1 => return Err(format!("error: exit {}", r.code)),
                _ => {}
            }
            // As ScyllaDB would start the folder now.
            let live = scylla_boot(&dir)?;
            let ids: Vec<Vec<u8>> = live.iter().map(|p| identifier(&dir, p)).collect();
            let set: BTreeSet<Vec<u8>> = ids.iter().cloned().collect();
            if ids.len() != set.len() || set != ids_before {
                return Err(format!(
                    "before recover, ScyllaDB would load {live:?}: not each original once"
                ));
            }
            let rec =
                crate::support::run_in(&env.root, &strings(&["recover", "--data-dir", &data]), &[]);
            if rec.code != 0 {
                return Err(format!("recover: exit {}: {}", rec.code, rec.all()));
            }
            let after = scylla_boot(&dir)?;
            if after != live {
                return Err(format!(
                    "recover left {after:?}, ScyllaDB would have kept {live:?}"
                ));
            }
            for e in fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                if n.ends_with(".tmp") || prefix(&n).is_some_and(|p| !live.contains(&p)) {
                    return Err(format!("left after recover: {n}"));
                }
            }
            if env.p("scylla/data/.sstable-rekey-scylla").exists() {
                return Err("the journal folder is left after recover".into());
            }
            if let Some(shared) = &shared {
                for p in &live {
                    let d = dir.join(format!("{p}Data.db"));
                    let sdb = ScyllaDb::read(&dir.join(format!("{p}Scylla.db")));
                    let key = sdb.secret_key_file().unwrap_or_default();
                    let args: Vec<OsString> = vec![
                        "verify".into(),
                        d.clone().into(),
                        "--key-file".into(),
                        key.into(),
                    ];
                    let (code, out) = scylla_oracle(shared, &args);
                    let want = originals
                        .iter()
                        .find(|e| identifier(&dir, p) == hex_id(e))
                        .map(|e| e["plaintext_sha256_all"].clone());
                    if code != 0 || Some(out["plaintext_sha256_all"].clone()) != want {
                        return Err(format!("{p}: the oracle: exit {code}: {out}"));
                    }
                }
            }
            let again = crate::support::run_in(&env.root, &args, &[]);
            if again.code != 0 {
                return Err(format!("the rekey after recover: {}", again.all()));
            }
            let v = crate::support::run_in(
                &env.root,
                &strings(&[
                    "verify",
                    "--key",
                    &format!("file:{}", env.s("keys/new.key")),
                    "--data-dir",
                    &data,
                    "scylla_matrix",
                    TABLE,
                ]),
                &[],
            );
            if v.code != 0 {
                return Err(format!("verify after the final rekey: {}", v.all()));
            }
            for left in [".sstable-rekey-staging", ".sstable-rekey-obsolete"] {
                if env.p("scylla/data").join(left).exists() {
                    return Err(format!("{left} is left after the final rekey"));
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            failures.push(format!("{v}: {e}\n{}", r.all()));
        }
    }
    println!(
        "scylla swap failpoints (staged: {staged}): {} variants, {fired} fired",
        variants().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        fired >= variants().len() - 4,
        "most variants must fire: {fired}"
    );
}

/// A rekey given a relative `--data-dir`, crashed after its commit rename: the journal names the
/// folder absolutely, so `recover` (relative or absolute) finishes the swap.
#[test]
fn a_journal_from_a_relative_data_dir_is_recovered() {
    require_failpoints();
    let env = Scratch::of(&["scylla", "keys"]);
    let rel = env
        .p("scylla/data")
        .strip_prefix(env.tmp.path())
        .unwrap()
        .display()
        .to_string();
    let mut args = strings(&["rekey", "-q", "--to"]);
    args.push(format!("file:{}", env.s("keys/new.key")));
    args.extend(strings(&["--data-dir", &rel, "scylla_matrix", TABLE]));
    let r = crate::support::run_in(
        env.tmp.path(),
        &args,
        &[("SSTABLE_REKEY_TEST_FAILPOINT", "scylla.committed")],
    );
    assert_eq!(r.code, 134, "{}", r.all());
    let rec = crate::support::run_in(
        env.tmp.path(),
        &strings(&["recover", "--data-dir", &rel]),
        &[],
    );
    assert_eq!(rec.code, 0, "{}", rec.all());
    assert!(rec.stdout.contains("finished"), "{}", rec.all());
    let dir = crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), TABLE);
    assert_eq!(scylla_boot(&dir).unwrap().len(), 4);
    assert!(!env.p("scylla/data/.sstable-rekey-scylla").exists());
}

/// An empty journal (its write failed and removing it failed too, or a crash right after it was
/// created) had no swap: `recover` removes it, leaves every table folder as it was, and a rekey
/// can run again; a journal that is not empty but unreadable still stops `recover`.
#[test]
fn an_empty_journal_is_removed_and_an_unreadable_one_stops_recover() {
    let env = Scratch::of(&["scylla", "keys"]);
    let data = env.s("scylla/data");
    let journals = env.p("scylla/data/.sstable-rekey-scylla");
    fs::create_dir(&journals).unwrap();
    let before = crate::support::tree_strict(&env.p("scylla/data/scylla_matrix"));
    let empty = journals.join("0-me-99-big.json");
    fs::write(&empty, b"").unwrap();
    let recover = strings(&["recover", "--data-dir", &data]);
    let rec = crate::support::run_in(&env.root, &recover, &[]);
    assert_eq!(rec.code, 0, "{}", rec.all());
    assert!(!empty.exists() && !journals.exists(), "{}", rec.all());
    let after = crate::support::tree_strict(&env.p("scylla/data/scylla_matrix"));
    assert_eq!(before, after);

    fs::create_dir(&journals).unwrap();
    let garbage = journals.join("0-me-98-big.json");
    fs::write(&garbage, b"{\"dir\":").unwrap();
    let rec = crate::support::run_in(&env.root, &recover, &[]);
    assert_eq!(rec.code, 1, "{}", rec.all());
    assert!(
        garbage.exists() && rec.all().contains("not a journal"),
        "{}",
        rec.all()
    );
}
