//! Staged rekey (issue 12): `stage`, run while the node serves, writes only into
//! `<data_dir>/.sstable-rekey-staging/`; the `rekey` of the maintenance window commits every
//! staged copy whose source is unchanged (renames inside Cassandra's transaction) and rewrites
//! the rest. Over a scratch copy of testdata/dd1 and dd3 (two data directories, an index folder,
//! a snapshot, BTI SSTables with page-encrypted indexes), every result is judged by the
//! independent decryptor of tests/it/support against the plaintext digests of MANIFEST.json.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

const TO: &str = "kmip://kmip1/new-128";
const FROM: &str = "kmip://kmip1/old-128";
const STAGING: &str = ".sstable-rekey-staging";
const OBSOLETE: &str = ".sstable-rekey-obsolete";

fn env() -> Scratch {
    Scratch::of(&["dd1", "dd3", "keys"])
}

/// `VERB -q --to TO --from FROM --keyring keys/keyring --data-dir dd1 --data-dir dd3 EXTRA...`.
fn cmd(env: &Scratch, verb: &str, extra: &[&str]) -> Vec<String> {
    let mut v = strings(&[verb, "-q", "--to", TO, "--from", FROM, "--keyring"]);
    v.push(env.s("keys/keyring"));
    v.extend(data_dirs(env));
    v.extend(strings(extra));
    v
}

/// `--data-dir dd1 --data-dir dd3`.
fn data_dirs(env: &Scratch) -> Vec<String> {
    ["dd1", "dd3"]
        .iter()
        .flat_map(|d| ["--data-dir".to_string(), env.s(d)])
        .collect()
}

/// Runs `verb` with a report; its exit must be `code`. Returns the report.
fn run_with_report(env: &Scratch, verb: &str, extra: &[&str], code: i32) -> Value {
    let report = env.tmp.path().join(format!("{verb}-report.json"));
    let mut args = cmd(env, verb, extra);
    args.extend(["--report".into(), report.display().to_string()]);
    let r = env.run(&args);
    assert_eq!(r.code, code, "{verb}: {}", r.all());
    env.report(&report)
}

/// The live SSTables (index folders included) of dd1 and dd3 under the old key, by Data.db path
/// relative to the copy's root.
fn under_old() -> BTreeMap<String, &'static Value> {
    manifest()
        .iter()
        .filter(|e| {
            let d = e["data"].as_str().unwrap();
            (d.starts_with("dd1/") || d.starts_with("dd3/"))
                && !e["location"].as_str().unwrap().starts_with("snapshot")
                && e["key"] == "kmip:old-128"
        })
        .map(|e| (e["data"].as_str().unwrap().to_string(), e))
        .collect()
}

/// Every file of the copy outside the staging and obsolete folders: path → SHA-256.
fn tables_tree(env: &Scratch) -> BTreeMap<String, String> {
    let mut t = tree_strict(&env.root);
    t.retain(|p, _| !p.contains(STAGING) && !p.contains(OBSOLETE));
    t
}

/// Every file in the staging folders.
fn staged_files(env: &Scratch) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dd in ["dd1", "dd3"] {
        let s = env.p(dd).join(STAGING);
        if s.exists() {
            walk(&s, &mut v);
        }
    }
    v
}

/// The report's SSTables by status, their old Data.db relative to the copy's root.
fn by_status(env: &Scratch, rep: &Value, status: &str) -> BTreeSet<String> {
    rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == status)
        .map(|s| rel(env, s["old"].as_str().unwrap()))
        .collect()
}

fn rel(env: &Scratch, p: &str) -> String {
    Path::new(p)
        .strip_prefix(&env.root)
        .unwrap_or_else(|_| panic!("{p} is outside the copy"))
        .display()
        .to_string()
}

/// Every SSTable the report says was rekeyed opens with the new keys only, to its original
/// plaintext (and index and metadata plaintext); the old SSTable is gone.
fn check_rekeyed(env: &Scratch, rep: &Value) -> usize {
    let keys = Keys::testdata(&env.root, "new");
    let olds = under_old();
    let mut n = 0;
    for s in rep["sstables"].as_array().unwrap() {
        if s["status"] != "rekeyed" {
            continue;
        }
        let old = rel(env, s["old"].as_str().unwrap());
        let e = olds[&old];
        let new = PathBuf::from(s["new"].as_str().unwrap());
        let indexes = e["indexes_encrypted"] == true;
        let o = open_sstable(&new, &keys, indexes).unwrap_or_else(|m| panic!("{old}: {m}"));
        assert_eq!(o.sha256, e["plaintext_sha256"], "{old}: plaintext");
        if indexes {
            let want: BTreeMap<String, String> =
                serde_json::from_value(e["metadata_sha256"].clone()).unwrap();
            assert_eq!(
                o.metadata_sha256, want,
                "{old}: index and metadata plaintext"
            );
        }
        let expect = BTreeSet::from([TO.to_string()]);
        if o.raw < o.chunk_keys.len() {
            assert_eq!(o.key_set(), expect, "{old}: keys");
        }
        assert!(!env.p(&old).exists(), "{old}: still there");
        n += 1;
    }
    n
}

#[test]
fn stage_writes_only_its_staging_folder_and_rekey_commits_every_copy() {
    let env = env();
    let before = tables_tree(&env);
    let olds = under_old();
    assert_eq!(olds.len(), 18, "the data set");

    let rep = run_with_report(&env, "stage", &[], 0);
    assert_eq!(rep["command"], "stage");
    assert_eq!(
        by_status(&env, &rep, "staged"),
        olds.keys().cloned().collect()
    );
    assert_eq!(rep["totals"]["staged"], olds.len());
    assert_eq!(
        diff(&before, &tables_tree(&env)),
        Vec::<String>::new(),
        "stage changed a table folder"
    );
    let manifests = staged_files(&env)
        .into_iter()
        .filter(|p| p.ends_with("manifest.json"))
        .count();
    assert_eq!(manifests, olds.len());

    // A second stage keeps every valid entry and writes nothing.
    let staged_before = tree_strict(&env.root);
    let again = run_with_report(&env, "stage", &[], 0);
    assert_eq!(again["totals"]["staged"], 0, "{}", again["totals"]);
    assert_eq!(
        diff(&staged_before, &tree_strict(&env.root)),
        Vec::<String>::new()
    );

    let rep = run_with_report(&env, "rekey", &[], 0);
    assert_eq!(
        rep["totals"]["staged_committed"],
        olds.len(),
        "{}",
        rep["totals"]
    );
    assert_eq!(rep["totals"]["rekeyed_now"], 0);
    assert_eq!(check_rekeyed(&env, &rep), olds.len());
    assert_eq!(
        staged_files(&env),
        Vec::<PathBuf>::new(),
        "staging not empty"
    );
    // The old files were moved aside at the commits and purged at the end of the run.
    let replaced = before
        .keys()
        .filter(|p| {
            olds.keys()
                .any(|d| p.starts_with(d.trim_end_matches("Data.db")))
        })
        .count();
    assert_eq!(rep["obsolete"]["purged"], true, "{}", rep["obsolete"]);
    assert_eq!(rep["obsolete"]["files"], replaced, "{}", rep["obsolete"]);
    for dd in ["dd1", "dd3"] {
        assert!(
            !env.p(dd).join(OBSOLETE).exists(),
            "{dd}: obsolete folder left"
        );
    }
    let window = rep["totals"]["window_seconds"].as_f64().unwrap();
    assert!(window > 0.0 && window <= rep["totals"]["seconds"].as_f64().unwrap());
    // The snapshot was not touched.
    for (p, h) in &before {
        if p.contains("/snapshots/") {
            assert_eq!(tables_tree(&env).get(p), Some(h), "{p}");
        }
    }
    // verify agrees: the rekeyed tables are under the new key only.
    let mut args = strings(&["verify", "--key", TO, "--keyring"]);
    args.extend([env.s("keys/keyring"), "--data-dir".into(), env.s("dd1")]);
    let tables = [
        "t_Encryptor_kmip_CBC_128",
        "t_EncryptingLZ4Compressor_kmip_ECB_128",
    ];
    args.extend(strings(&[&["matrix"][..], &tables[..]].concat()));
    let v = env.run(&args);
    assert_eq!(v.code, 0, "{}", v.all());
}

/// `rekey --purge-later`: the old files of the staged commits wait, byte for byte, in the
/// obsolete folders (verify passes and names them); `purge` deletes them and nothing else, and
/// stops, deleting nothing, at a file it does not know.
#[test]
fn purge_later_leaves_the_replaced_files_aside_until_purge() {
    let env = env();
    let before = tables_tree(&env);
    let olds = under_old();
    run_with_report(&env, "stage", &[], 0);
    let rep = run_with_report(&env, "rekey", &["--purge-later"], 0);
    assert_eq!(rep["totals"]["staged_committed"], olds.len());
    assert_eq!(check_rekeyed(&env, &rep), olds.len());
    // Every old file of every committed SSTable, and nothing else, is in the obsolete folder of
    // its data directory, below the same relative path, unchanged.
    let replaced: BTreeMap<String, String> = before
        .iter()
        .filter(|(p, _)| {
            olds.keys()
                .any(|d| p.starts_with(d.trim_end_matches("Data.db")))
        })
        .map(|(p, h)| {
            let (dd, rest) = p.split_once('/').unwrap();
            (format!("{dd}/{OBSOLETE}/{rest}"), h.clone())
        })
        .collect();
    let mut aside = tree_strict(&env.root);
    aside.retain(|p, _| p.contains(OBSOLETE));
    assert_eq!(aside, replaced, "the obsolete folders");
    let o = &rep["obsolete"];
    assert_eq!(
        (o["purged"].clone(), o["files"].clone()),
        (Value::Bool(false), replaced.len().into())
    );

    // verify passes (they are not live) and says they wait.
    let mut args = strings(&["verify", "--key", TO, "--keyring"]);
    args.push(env.s("keys/keyring"));
    args.extend(data_dirs(&env));
    args.extend(strings(&["matrix", "t_Encryptor_kmip_CBC_128"]));
    let v = env.run(&args);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.all().contains("sstable-rekey purge"), "{}", v.all());

    // A file purge does not know stops it: nothing deleted, the file stays.
    let stray = env.p("dd1").join(OBSOLETE).join("matrix/notes.txt");
    fs::write(&stray, b"an operator's note").unwrap();
    let live = tables_tree(&env);
    let mut purge = strings(&["purge"]);
    purge.extend(data_dirs(&env));
    let r = env.run(&purge);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("notes.txt"), "{}", r.all());
    let mut still = tree_strict(&env.root);
    still.retain(|p, _| p.contains(OBSOLETE));
    assert_eq!(
        still.len(),
        replaced.len() + 1,
        "purge deleted before refusing"
    );
    fs::remove_file(&stray).unwrap();

    let r = env.run(&purge);
    assert_eq!(r.code, 0, "{}", r.all());
    for dd in ["dd1", "dd3"] {
        assert!(
            !env.p(dd).join(OBSOLETE).exists(),
            "{dd}: obsolete folder left"
        );
    }
    assert_eq!(
        diff(&live, &tables_tree(&env)),
        Vec::<String>::new(),
        "purge touched a table"
    );
    let r = env.run(&purge);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("nothing to purge"), "{}", r.all());
}

#[test]
fn a_source_changed_after_staging_is_rewritten_now_and_its_copy_discarded() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    // As a running node might: the SSTable's Data.db is another file now (same bytes, new inode).
    let changed =
        "dd1/matrix/t_Encryptor_kmip_CBC_128-8bd2b646fdae2968a8379b6e64857dea/nb-1-big-Data.db";
    let p = env.p(changed);
    let bytes = fs::read(&p).unwrap();
    fs::remove_file(&p).unwrap();
    fs::write(&p, bytes).unwrap();

    let rep = run_with_report(&env, "rekey", &[], 0);
    let t = &rep["totals"];
    assert_eq!(t["staged_committed"], under_old().len() - 1, "{t}");
    assert_eq!(t["rekeyed_now"], 1, "{t}");
    assert_eq!(t["staged_discarded"], 1, "{t}");
    let now: Vec<&Value> = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "rekeyed" && s["from_staged"] == false)
        .collect();
    assert_eq!(now.len(), 1);
    assert_eq!(rel(&env, now[0]["old"].as_str().unwrap()), changed);
    assert_eq!(check_rekeyed(&env, &rep), under_old().len());
    assert_eq!(staged_files(&env), Vec::<PathBuf>::new());
}

/// A stage crashed (abort) after its third staged Data.db is written: entries without a
/// manifest are left.
fn crashed_stage(env: &Scratch) {
    let r = run_in(
        env.tmp.path(),
        &cmd(env, "stage", &["--jobs", "1"]),
        &[("SSTABLE_REKEY_TEST_FAILPOINT", "data.fsynced@3")],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        staged_files(env).iter().any(|p| p.ends_with("Data.db")),
        "the crash left partial staging entries"
    );
}

#[test]
fn a_killed_stage_leaves_the_tables_alone_and_the_next_stage_resumes() {
    require_failpoints();
    let env = env();
    let before = tables_tree(&env);
    crashed_stage(&env);
    assert_eq!(diff(&before, &tables_tree(&env)), Vec::<String>::new());

    let rep = run_with_report(&env, "stage", &[], 0);
    let notes = rep["notes"].to_string();
    assert!(
        notes.contains("removed an incomplete staging entry"),
        "{notes}"
    );
    let kept = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("already staged"))
        })
        .count();
    assert_eq!(
        kept, 2,
        "the two entries complete before the crash are kept"
    );
    assert_eq!(rep["totals"]["staged"], under_old().len() - 2);
    assert_eq!(diff(&before, &tables_tree(&env)), Vec::<String>::new());

    let rep = run_with_report(&env, "rekey", &[], 0);
    assert_eq!(rep["totals"]["staged_committed"], under_old().len());
    assert_eq!(check_rekeyed(&env, &rep), under_old().len());
}

#[test]
fn a_failed_commit_puts_the_staged_copy_back_for_the_next_rekey() {
    require_failpoints();
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    // The first SSTable's COMMIT fails: its transaction rolls back, its staged files go back.
    let report = env.tmp.path().join("failed.json");
    let mut args = cmd(&env, "rekey", &["--jobs", "1"]);
    args.extend(["--report".into(), report.display().to_string()]);
    let r = run_in(
        env.tmp.path(),
        &args,
        &[("SSTABLE_REKEY_TEST_FAILPOINT", "txn.committing:error")],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let rep = env.report(&report);
    let failed = by_status(&env, &rep, "failed");
    assert_eq!(failed.len(), 1, "{}", rep["totals"]);
    let failed = failed.into_iter().next().unwrap();
    assert!(env.p(&failed).exists(), "{failed}: the original must stay");
    assert_eq!(
        staged_files(&env)
            .iter()
            .filter(|p| p.ends_with("manifest.json"))
            .count(),
        1,
        "the failed SSTable's entry is back, whole"
    );
    assert_eq!(check_rekeyed(&env, &rep), under_old().len() - 1);

    let rep = run_with_report(&env, "rekey", &[], 0);
    assert_eq!(rep["totals"]["staged_committed"], 1, "{}", rep["totals"]);
    assert_eq!(by_status(&env, &rep, "rekeyed"), BTreeSet::from([failed]));
    assert_eq!(check_rekeyed(&env, &rep), 1);
    assert_eq!(staged_files(&env), Vec::<PathBuf>::new());
}

#[test]
fn a_stage_refused_before_any_work_leaves_no_trace() {
    let env = env();
    let before = tree_strict(&env.root);
    // A 256-bit target for 128-bit tables: a key problem, found before anything is written.
    let mut args = cmd(&env, "stage", &[]);
    let to = args.iter().position(|a| a == TO).unwrap();
    args[to] = "kmip://kmip1/new-256".into();
    let r = env.run(&args);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("secret_key_strength"), "{}", r.all());
    assert_eq!(diff(&before, &tree_strict(&env.root)), Vec::<String>::new());
    assert!(
        !env.p("dd1").join(STAGING).exists(),
        "a staging folder was left"
    );
}

#[test]
fn a_foreign_file_in_the_staging_folder_stops_stage_and_rekey_and_stays() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    let foreign = env.p("dd1").join(STAGING).join("edge/notes.txt");
    fs::write(&foreign, b"an operator's file").unwrap();
    let before = tree_strict(&env.root);
    for verb in ["stage", "rekey"] {
        let r = env.run(&cmd(&env, verb, &[]));
        assert_eq!(r.code, 2, "{verb}: {}", r.all());
        assert!(r.stderr.contains("notes.txt"), "{verb}: {}", r.all());
        assert_eq!(diff(&before, &tree_strict(&env.root)), Vec::<String>::new());
    }
}

#[test]
fn ignore_staged_rewrites_now_and_discard_removes_the_staging_folders() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    let staged = staged_files(&env);
    let rep = run_with_report(&env, "rekey", &["--ignore-staged"], 0);
    assert_eq!(rep["totals"]["staged_committed"], 0);
    assert_eq!(rep["totals"]["rekeyed_now"], under_old().len());
    assert_eq!(check_rekeyed(&env, &rep), under_old().len());
    assert_eq!(
        staged_files(&env),
        staged,
        "--ignore-staged leaves the copies"
    );

    let r = env.run(&[strings(&["stage", "--discard"]), data_dirs(&env)].concat());
    assert_eq!(r.code, 0, "{}", r.all());
    for dd in ["dd1", "dd3"] {
        assert!(!env.p(dd).join(STAGING).exists(), "{dd}: {}", r.all());
    }
}

/// Moves `path` to `path` rewritten with `bytes` the way Cassandra replaces a component (a
/// temporary file renamed over it): a new inode. Returns that inode.
fn replace_file(path: &Path, bytes: &[u8]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
    fs::metadata(path).unwrap().ino()
}

/// The running node between `stage` and the commit, and during `stage` (a compaction's
/// transaction log in a table folder, a source replaced while `--rate` slows the stage down):
/// compaction removes a staged SSTable, a flush adds one under the old key, incremental repair
/// rewrites a staged SSTable's Statistics.db and index summary redistribution its Summary.db, a
/// table is dropped, a snapshot is taken. The commit takes exactly what is still right.
#[test]
fn the_node_keeps_working_between_stage_and_commit() {
    use std::os::unix::fs::MetadataExt;
    let env = env();
    let two = table_dir(&env.p("dd1/edge"), "t_two");
    let snap = table_dir(&env.p("dd1/edge"), "t_snap");
    let cbc = table_dir(&env.p("dd1/matrix"), "t_Encryptor_kmip_CBC_128");
    let dropped = table_dir(
        &env.p("dd1/matrix"),
        "t_EncryptingLZ4Compressor_kmip_ECB_128",
    );
    let snapped = table_dir(&env.p("dd1/matrix"), "t_Encryptor_kmip_ECB_128");
    // A compaction in progress: its transaction log is in the folder while `stage` runs.
    let log = two.join("nb_txn_compaction_7d2c9a80-93a1-11ef-8d5b-1b2c3d4e5f60.log");
    fs::write(&log, b"").unwrap();
    // During the stage (slowed by --rate to a few seconds), the node replaces a source: the
    // Data.db of t_Encryptor_kmip_CBC_128 becomes another file (same bytes, a new inode). Staged
    // before, during or after that, it must end rekeyed once, whichever way.
    let replaced = cbc.join("nb-1-big-Data.db");
    let replaced_bytes = fs::read(&replaced).unwrap();
    let staging = std::thread::scope(|s| {
        let stage = s.spawn(|| run_with_report(&env, "stage", &["--rate", "0.05"], 0));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        replace_file(&replaced, &replaced_bytes);
        stage.join().unwrap()
    });
    assert_eq!(staging["totals"]["failed"], 0, "{}", staging["totals"]);

    // Between stage and commit: the compaction ends (nb-1 of t_two gone, its log removed) ...
    fs::remove_file(&log).unwrap();
    for e in fs::read_dir(&two).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("nb-1-")
        {
            fs::remove_file(p).unwrap();
        }
    }
    // ... a flush writes nb-7 under the old key (nb-2's bytes) ...
    for e in fs::read_dir(&two).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(c) = name.strip_prefix("nb-2-big-") {
            fs::copy(&p, two.join(format!("nb-7-big-{c}"))).unwrap();
        }
    }
    // ... incremental repair rewrites Statistics.db, summary redistribution Summary.db ...
    let cbc_stats = cbc.join("nb-1-big-Statistics.db");
    let stats_ino = replace_file(&cbc_stats, &fs::read(&cbc_stats).unwrap());
    let summary = b"a redistributed index summary".to_vec();
    replace_file(&snap.join("nb-1-big-Summary.db"), &summary);
    // ... a table is dropped, a snapshot taken (hard links).
    fs::remove_dir_all(&dropped).unwrap();
    let snap2 = snapped.join("snapshots/snap2");
    fs::create_dir_all(&snap2).unwrap();
    for e in fs::read_dir(&snapped).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            fs::hard_link(&p, snap2.join(p.file_name().unwrap())).unwrap();
        }
    }
    let snap2_before = tree_strict(&snap2);

    let rep = run_with_report(&env, "rekey", &[], 0);
    let t = &rep["totals"];
    let n = under_old().len();
    // Two staged SSTables are gone (compacted, dropped), one was flushed since: n - 1 rekeyed.
    // The source replaced during the stage is committed from its copy if that was made after the
    // replacement, else rewritten now (its copy discarded or never made).
    assert_eq!(t["rekeyed"], n - 1, "{t}");
    assert_eq!(t["failed"], 0, "{t}");
    let now: BTreeSet<String> = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "rekeyed" && s["from_staged"] == false)
        .map(|s| rel(&env, s["old"].as_str().unwrap()))
        .collect();
    let nb7 = rel(&env, &two.join("nb-7-big-Data.db").display().to_string());
    let replaced_rel = rel(&env, &replaced.display().to_string());
    assert!(now.contains(&nb7), "{now:?}");
    assert!(
        now.iter().all(|p| *p == nb7 || *p == replaced_rel),
        "{now:?}"
    );
    let discarded = t["staged_discarded"].as_u64().unwrap();
    assert!((2..=3).contains(&discarded), "{t}");

    // Every new SSTable opens with the new keys to its plaintext (nb-7 is nb-2's copy).
    let keys = Keys::testdata(&env.root, "new");
    let olds = under_old();
    let nb2 = rel(&env, &two.join("nb-2-big-Data.db").display().to_string());
    for s in rep["sstables"].as_array().unwrap() {
        if s["status"] != "rekeyed" {
            continue;
        }
        let old = rel(&env, s["old"].as_str().unwrap());
        let e = olds.get(&old).copied().unwrap_or_else(|| olds[&nb2]);
        let new = PathBuf::from(s["new"].as_str().unwrap());
        let indexes = e["indexes_encrypted"] == true;
        let o = open_sstable(&new, &keys, indexes).unwrap_or_else(|m| panic!("{old}: {m}"));
        assert_eq!(o.sha256, e["plaintext_sha256"], "{old}");
    }
    // The commit took the node's current Statistics.db and Summary.db, not the staged-time ones.
    let new_of = |dir: &Path| -> String {
        let s = rep["sstables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["new"]
                    .as_str()
                    .is_some_and(|n| Path::new(n).parent() == Some(dir))
            })
            .unwrap_or_else(|| panic!("nothing committed in {}", dir.display()));
        s["new"]
            .as_str()
            .unwrap()
            .trim_end_matches("Data.db")
            .to_string()
    };
    let cbc_new = PathBuf::from(format!("{}Statistics.db", new_of(&cbc)));
    assert_eq!(
        fs::metadata(&cbc_new).unwrap().ino(),
        stats_ino,
        "Statistics.db"
    );
    let snap_new = PathBuf::from(format!("{}Summary.db", new_of(&snap)));
    assert_eq!(fs::read(&snap_new).unwrap(), summary, "Summary.db");
    // Nothing of the dropped table came back; the snapshot is as it was taken.
    assert!(!dropped.exists(), "the dropped table's folder came back");
    assert_eq!(
        diff(&snap2_before, &tree_strict(&snap2)),
        Vec::<String>::new()
    );
    assert_eq!(staged_files(&env), Vec::<PathBuf>::new());
}

/// `rekey --verify-staged` reads every staged file back: a copy whose bytes no longer match its
/// manifest (here one flipped byte, same size) is discarded and its SSTable rewritten now.
#[test]
fn verify_staged_discards_a_copy_that_does_not_match_its_manifest() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    let data = staged_files(&env)
        .into_iter()
        .find(|p| {
            p.ends_with("Data.db") && p.to_string_lossy().contains("t_Encryptor_kmip_CBC_128")
        })
        .unwrap();
    let mut b = fs::read(&data).unwrap();
    b[100] ^= 0x20;
    fs::write(&data, b).unwrap();
    let rep = run_with_report(&env, "rekey", &["--verify-staged"], 0);
    let t = &rep["totals"];
    assert_eq!(t["staged_discarded"], 1, "{t}");
    assert_eq!(t["rekeyed_now"], 1, "{t}");
    assert!(
        rep["notes"].to_string().contains("CRC32"),
        "{}",
        rep["notes"]
    );
    assert_eq!(check_rekeyed(&env, &rep), under_old().len());
}

/// While a compaction writes in a table (its transaction log is there), an SSTable of that table
/// that cannot be read yet is skipped by `stage`, not failed; elsewhere it fails stage (exit 1).
#[test]
fn an_sstable_being_written_by_a_compaction_is_skipped_by_stage() {
    let env = env();
    let table = table_dir(&env.p("dd1/matrix"), "t_Encryptor_kmip_CBC_128");
    // The compaction's output so far: a Data.db and nothing else that makes it readable.
    fs::write(table.join("nb-9-big-Data.db"), vec![7u8; 5000]).unwrap();
    let r = env.run(&cmd(&env, "stage", &[]));
    assert_eq!(
        r.code,
        1,
        "no compaction log: the unreadable SSTable fails\n{}",
        r.all()
    );
    let log = table.join("nb_txn_compaction_0b6d1f70-93a1-11ef-8d5b-1b2c3d4e5f60.log");
    fs::write(&log, b"").unwrap();
    let rep = run_with_report(&env, "stage", &[], 0);
    let skipped: Vec<&Value> = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["old"].as_str().unwrap().ends_with("nb-9-big-Data.db"))
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["status"], "skipped", "{}", skipped[0]);
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("compaction"),
        "{}",
        skipped[0]
    );
    // The first stage staged the others; this one keeps them.
    assert_eq!(rep["totals"]["failed"], 0, "{}", rep["totals"]);
    let kept = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("already staged"))
        })
        .count();
    assert_eq!(kept, under_old().len(), "{}", rep["totals"]);
}

/// A staging manifest whose chunk runs no longer describe the source (damaged): that SSTable fails
/// with an error saying what to do, its original untouched; `--ignore-staged` then rekeys it.
#[test]
fn a_damaged_manifest_fails_its_sstable_and_ignore_staged_recovers() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    let manifest = staged_files(&env)
        .into_iter()
        .find(|p| {
            p.ends_with("manifest.json") && p.to_string_lossy().contains("t_Encryptor_kmip_CBC_128")
        })
        .unwrap();
    let mut m: Value = serde_json::from_str(&fs::read_to_string(&manifest).unwrap()).unwrap();
    let runs = m["chunk_runs"].as_array_mut().unwrap();
    assert!(!runs.is_empty(), "{m}");
    let n = runs[0]["count"].as_u64().unwrap();
    runs[0]["count"] = (n + 1).into();
    fs::write(&manifest, m.to_string()).unwrap();
    let before = tables_tree(&env);

    let rep = run_with_report(&env, "rekey", &[], 1);
    let failed: Vec<&Value> = rep["sstables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", rep["totals"]);
    let why = failed[0]["reason"].as_str().unwrap();
    assert!(why.contains("--ignore-staged"), "{why}");
    let old = rel(&env, failed[0]["old"].as_str().unwrap());
    assert_eq!(tables_tree(&env).get(&old), before.get(&old), "{old}");

    let rep = run_with_report(&env, "rekey", &["--ignore-staged"], 0);
    assert_eq!(by_status(&env, &rep, "rekeyed"), BTreeSet::from([old]));
    assert_eq!(check_rekeyed(&env, &rep), 1);
}

/// A run killed while it removed an entry leaves empty folders in the staging folder: the next
/// `rekey` prunes them, and the staging folder with them (files are never touched there).
#[test]
fn empty_folders_left_in_the_staging_folder_are_pruned_by_the_next_rekey() {
    let env = env();
    for dd in ["dd1", "dd3"] {
        fs::create_dir_all(env.p(dd).join(STAGING).join("edge/t_x-0123/nb-1-big")).unwrap();
    }
    run_with_report(&env, "rekey", &[], 0);
    for dd in ["dd1", "dd3"] {
        assert!(
            !env.p(dd).join(STAGING).exists(),
            "{dd}: staging folder left"
        );
    }
}

/// After a killed stage, the window's rekey (no stage in between) removes the entries left without
/// a manifest, rewrites every SSTable, and leaves no staging folder.
#[test]
fn the_rekey_removes_the_entries_a_killed_stage_left() {
    require_failpoints();
    let env = env();
    crashed_stage(&env);
    let rep = run_with_report(&env, "rekey", &[], 0);
    let notes = rep["notes"].to_string();
    assert!(
        notes.contains("removed an incomplete staging entry"),
        "{notes}"
    );
    assert_eq!(check_rekeyed(&env, &rep), under_old().len());
    assert_eq!(staged_files(&env), Vec::<PathBuf>::new());
}

/// The target key's bytes change between `stage` and the window (the keyring now holds other
/// bytes under the same id): the rekey must not commit copies no key opens. `verify` with the
/// keyring as it is now proves every rekeyed SSTable.
#[test]
fn staged_copies_made_with_other_target_key_bytes_are_not_committed() {
    let env = env();
    run_with_report(&env, "stage", &[], 0);
    let ring = env.p("keys/keyring");
    let text = fs::read_to_string(&ring).unwrap();
    let changed = text.replace(
        "new-128:97PIuDaIu6+mHlXv9VcMIw==",
        "new-128:AAECAwQFBgcICQoLDA0ODw==",
    );
    assert_ne!(text, changed);
    fs::write(&ring, changed).unwrap();
    let rep = run_with_report(&env, "rekey", &[], 0);
    assert!(
        rep["totals"]["rekeyed"].as_u64().unwrap() > 0,
        "{}",
        rep["totals"]
    );
    let mut v = strings(&["verify", "--key", TO, "--keyring"]);
    v.push(env.s("keys/keyring"));
    v.extend(data_dirs(&env));
    // Tables outside --from stay under their keys (OTHER KEY): none may fail to decrypt.
    let r = env.run(&v);
    assert!(
        r.stdout.contains("OK ") && !r.stdout.lines().any(|l| l.starts_with("FAILED")),
        "{}",
        r.all()
    );
}
