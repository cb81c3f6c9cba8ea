//! Where the data is: every SSTable a node keeps must be found by rekey and verify, or reported as
//! not looked at (never passed over in silence), and the data directories come from the node's
//! own cassandra.yaml when the operator does not name them all.
//!
//! Regression tests of issue 10 (items 2, 6 and 8): pre-2.1 table folders `<ks>/<table>/`, a
//! symlinked `snapshots/` or `backups/` folder, names that are not UTF-8, folders that are not
//! table folders but hold SSTables, the same data dir given twice, and a JBOD node whose
//! `data_file_directories` the operator names only in part. Outcomes are judged by the
//! independent decryptor of tests/it/support (`check_resolved`) against MANIFEST.json's digests.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;
use serde_json::Value;

const KMIP_CBC_128: &str = "dd1/matrix/t_Encryptor_kmip_CBC_128";
const LZ4_CBC_128: &str = "dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128";
const SNAP: &str = "dd1/edge/t_snap";
const DD2: &str = "dd2/other/t_dd2";

/// The testdata table folders (`dd1/matrix/t_x-<id>`) whose names start with `prefixes`.
fn tables(prefixes: &[&str]) -> Vec<String> {
    let v = DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        prefixes.iter().any(|p| d.starts_with(&format!("{p}-")))
    });
    assert_eq!(v.len(), prefixes.len(), "{prefixes:?} → {v:?}");
    v
}

/// The folder (relative to the data dir) of the live SSTables of a testdata table.
fn folder_of(ds: &DataSet, prefix: &str) -> PathBuf {
    let name = Path::new(prefix).file_name().unwrap().to_str().unwrap();
    ds.sstables
        .iter()
        .find(|o| {
            o.live
                && o.dir
                    .to_str()
                    .is_some_and(|d| d.contains(&format!("/{name}-")) && !d.contains("/."))
        })
        .unwrap_or_else(|| panic!("no table {prefix}"))
        .dir
        .clone()
}

/// Moves a table folder of the pristine data set to a new name, and its SSTables with it.
fn rename_table(ds: &mut DataSet, from: &Path, to: &Path) {
    fs::rename(ds.data.join(from), ds.data.join(to)).unwrap();
    for o in &mut ds.sstables {
        if let Ok(rest) = o.dir.strip_prefix(from) {
            o.dir = to.join(rest);
        }
    }
}

/// The binary with the node-configuration variables of the caller's environment removed, so
/// that only what a test sets is seen.
fn run(cwd: &Path, args: &[&str], env: &[(&str, &OsStr)]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).stdin(Stdio::null());
    for k in ["CASSANDRA_CONF", "CASSANDRA_HOME", "DSE_HOME", "HCD_HOME"] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    Run::of(&mut c)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn verify(ds: &DataSet, key: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> Run {
    let mut args = vec!["verify", "--key", key, "--keyring", s(&ds.keyring)];
    args.extend_from_slice(extra);
    run(&ds.root, &args, env)
}

fn rekey(ds: &DataSet, extra: &[&str], env: &[(&str, &OsStr)]) -> Run {
    let mut args = vec![
        "rekey",
        "-q",
        "--to",
        "kmip://kmip1/new-128",
        "--keyring",
        s(&ds.keyring),
    ];
    args.extend_from_slice(extra);
    run(&ds.root, &args, env)
}

const OLD: &str = "kmip://kmip1/old-128";
const NEW: &str = "kmip://kmip1/new-128";

fn report(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

// ------------------------------------------------------------------ pre-2.1 table folders

/// Cassandra 3.0–5.0 still reads `<ks>/<table>/` (Directories.java): such a table must be rekeyed
/// and verified like `<ks>/<table>-<id>/`. Before the fix it was invisible: `verify --key NEW`
/// passed while it was under the old key.
#[test]
fn pre_2_1_table_folder_is_rekeyed_and_verified() {
    let mut ds = DataSet::new(&tables(&[KMIP_CBC_128, LZ4_CBC_128]));
    let from = folder_of(&ds, KMIP_CBC_128);
    let legacy = PathBuf::from("matrix/t_Encryptor_kmip_CBC_128");
    rename_table(&mut ds, &from, &legacy);
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let dd = ["--data-dir", s(&work)];
    let legacy_data = work.join(&legacy).join("nb-1-big-Data.db");

    // Nothing rekeyed yet: the pre-2.1 table is under old-128, so NEW must not verify.
    let v = verify(&ds, NEW, &dd, &[]);
    assert_eq!(
        v.code,
        1,
        "verify --key NEW passed over a pre-2.1 table\n{}",
        v.all()
    );
    assert!(
        v.stdout
            .lines()
            .any(|l| l.starts_with("OTHER KEY") && l.contains(s(&legacy_data))),
        "{}",
        v.all()
    );

    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 rekeyed"), "{}", r.all());
    let tally =
        check_resolved(&ds, &ds.keys(), &work).unwrap_or_else(|e| panic!("{e}\n{}", r.all()));
    assert_eq!(tally.new, 2, "{tally:?}");
    let v = verify(&ds, NEW, &dd, &[]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.stdout.contains("2 SSTables: 2 ok"), "{}", v.all());

    // inspect of the folder reads it too.
    let i = run(&ds.root, &["inspect", s(&work.join(&legacy))], &[]);
    assert_eq!(i.code, 0, "{}", i.all());
    assert!(
        i.stdout.contains("chunks under kmip://kmip1/new-128"),
        "{}",
        i.all()
    );
}

/// Both `<t>/` and `<t>-<id>/`: Cassandra reads only `<t>/`, but the other still holds data under
/// the old key (and is read again if `<t>/` goes): both are rekeyed and verified, and the operator
/// is told which one Cassandra reads.
#[test]
fn pre_2_1_and_id_folders_of_one_table_are_both_rekeyed() {
    let mut ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    let with_id = folder_of(&ds, KMIP_CBC_128);
    let legacy = PathBuf::from("matrix/t_Encryptor_kmip_CBC_128");
    copy_tree(&ds.data.join(&with_id), &ds.data.join(&legacy));
    let copies: Vec<Orig> = ds
        .sstables
        .iter()
        .filter(|o| o.dir == with_id)
        .map(|o| Orig {
            dir: legacy.clone(),
            ..o.clone()
        })
        .collect();
    ds.sstables.extend(copies);
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let dd = ["--data-dir", s(&work)];

    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 rekeyed"), "{}", r.all());
    let note = r
        .stderr
        .lines()
        .find(|l| l.contains("Cassandra reads only"))
        .unwrap_or_else(|| panic!("no note on the shadowed folder\n{}", r.all()));
    assert!(
        note.contains(s(&work.join(&legacy))) && note.contains(s(&work.join(&with_id))),
        "{note}"
    );
    let tally =
        check_resolved(&ds, &ds.keys(), &work).unwrap_or_else(|e| panic!("{e}\n{}", r.all()));
    assert_eq!(tally.new, 2, "{tally:?}");
    let v = verify(&ds, NEW, &dd, &[]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.stdout.contains("2 SSTables: 2 ok"), "{}", v.all());
}

/// A keyspace subfolder that is no table folder Cassandra reads (`t.bak`) but holds SSTables is
/// reported as failed (they are under some key, and the tool did not look at them); one that
/// holds no SSTable file is not.
#[test]
fn folder_holding_sstables_that_is_no_table_folder_is_reported() {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    let with_id = folder_of(&ds, KMIP_CBC_128);
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let bak = work.join("matrix/t_Encryptor_kmip_CBC_128.bak");
    copy_tree(&work.join(&with_id), &bak);
    fs::create_dir_all(work.join("matrix/notes.d")).unwrap();
    fs::write(work.join("matrix/notes.d/README"), "not an SSTable\n").unwrap();
    let dd = ["--data-dir", s(&work)];
    let before = tree(&bak);

    let v = verify(&ds, OLD, &dd, &[]);
    assert_eq!(
        v.code,
        1,
        "a folder of SSTables was passed over\n{}",
        v.all()
    );
    let line = v
        .stdout
        .lines()
        .find(|l| l.starts_with("FAILED") && l.contains(s(&bak)))
        .unwrap_or_else(|| panic!("{}", v.all()));
    assert!(line.contains("not a table folder"), "{line}");
    assert!(!v.all().contains("notes.d"), "{}", v.all());

    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("FAILED") && l.contains(s(&bak))),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("1 rekeyed"), "{}", r.all());
    assert_eq!(tree(&bak), before, "the reported folder was changed");
}

/// A table folder that is a symbolic link: refused before any work by a real run (exclusive's
/// layout check); a dry run, which takes no lock and makes no such check, listed nothing and
/// exited 0. It is now a failed entry there too.
#[test]
fn symlinked_table_folder_fails_a_dry_run_too() {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128, LZ4_CBC_128]));
    let table = folder_of(&ds, KMIP_CBC_128);
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let elsewhere = ds.root.join("elsewhere");
    fs::rename(work.join(&table), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, work.join(&table)).unwrap();
    let dd = ["--data-dir", s(&work)];

    let r = rekey(&ds, &[&dd[..], &["--dry-run"]].concat(), &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.lines().any(|l| l.starts_with("FAILED")
            && l.contains(s(&work.join(&table)))
            && l.contains("symbolic link")),
        "{}",
        r.all()
    );
    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("symbolic link"), "{}", r.all());
}

// ------------------------------------------------------------------ symlinked snapshots/backups

/// `snapshots/` as a symbolic link (snapshots kept on another disk): never written, so read
/// through the link; verify lists its SSTables and the keys they still need. Before the fix it
/// was skipped silently (no "still need" note, and kmip destroy would call the key unused).
#[test]
fn symlinked_snapshots_and_backups_folders_are_listed() {
    let ds = DataSet::new(&tables(&[SNAP]));
    let table = folder_of(&ds, SNAP);
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let t = work.join(&table);
    let elsewhere = ds.root.join("snapshot-disk/snapshots");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::rename(t.join("snapshots"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.join("snapshots")).unwrap();
    // backups/ on another disk too, with a copy of the live SSTable.
    let backups = ds.root.join("backup-disk/backups");
    fs::create_dir_all(&backups).unwrap();
    for e in fs::read_dir(&t).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), backups.join(e.file_name())).unwrap();
        }
    }
    std::os::unix::fs::symlink(&backups, t.join("backups")).unwrap();
    let outside = (tree(elsewhere.parent().unwrap()), tree(&backups));
    let dd = ["--data-dir", s(&work)];

    let rep = ds.root.join("verify.json");
    let v = verify(&ds, OLD, &[&dd[..], &["--report", s(&rep)]].concat(), &[]);
    assert_eq!(v.code, 0, "{}", v.all());
    let snap_data = t.join("snapshots/snap1/nb-1-big-Data.db");
    let backup_data = t.join("backups/nb-1-big-Data.db");
    for want in [&snap_data, &backup_data] {
        assert!(
            v.stdout.lines().any(|l| l.starts_with("backup")
                && l.contains(s(want))
                && l.contains("kmip://kmip1/old-128")),
            "{} not listed\n{}",
            want.display(),
            v.all()
        );
    }
    assert!(
        v.stdout.contains("snapshot/backup SSTables still need"),
        "{}",
        v.all()
    );
    let j = report(&rep);
    let listed: Vec<&str> = j["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["data"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&s(&snap_data)) && listed.contains(&s(&backup_data)),
        "{listed:?}"
    );

    // A rekey reads through the links and never writes there.
    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("snapshot/backup SSTables were not modified"),
        "{}",
        r.all()
    );
    assert_eq!(
        (tree(elsewhere.parent().unwrap()), tree(&backups)),
        outside,
        "a snapshot or backup was written"
    );

    // A link that leads nowhere cannot be listed: reported, never passed.
    fs::remove_file(t.join("backups")).unwrap();
    std::os::unix::fs::symlink(ds.root.join("no-such-disk"), t.join("backups")).unwrap();
    let v = verify(&ds, NEW, &dd, &[]);
    assert_eq!(v.code, 1, "{}", v.all());
    assert!(
        v.stdout
            .lines()
            .any(|l| l.starts_with("FAILED") && l.contains(s(&t.join("backups")))),
        "{}",
        v.all()
    );
}

// ------------------------------------------------------------------ names that are not UTF-8

fn odd(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// A keyspace, table, index or snapshot folder, or an SSTable file, whose name is not UTF-8 was
/// skipped in silence (`to_str()` → `continue`). Each is now a failed entry naming the path:
/// verify and rekey exit 1, and the entry is left as it was.
#[test]
fn names_that_are_not_utf8_are_failed_entries() {
    let ds = DataSet::new(&tables(&[SNAP, KMIP_CBC_128]));
    let snap_table = folder_of(&ds, SNAP);
    let matrix_table = folder_of(&ds, KMIP_CBC_128);
    type Make = fn(&Path, &Path, &Path) -> PathBuf;
    let cases: Vec<(&str, Make)> = vec![
        ("keyspace folder", |work, _, m| {
            let to = work.join(odd(b"matr\xffix"));
            copy_tree(&work.join(m.parent().unwrap()), &to);
            to
        }),
        ("table folder", |work, t, _| {
            let name = t.file_name().unwrap().as_bytes();
            let mut b = b"t_\xfe".to_vec();
            b.extend_from_slice(&name[2..]);
            let to = work.join(t.parent().unwrap()).join(odd(&b));
            copy_tree(&work.join(t), &to);
            to
        }),
        ("index folder", |work, t, _| {
            let to = work.join(t).join(odd(b".t_\xffidx"));
            copy_tree(&work.join(t).join(".t_idx"), &to);
            to
        }),
        ("snapshot folder", |work, t, _| {
            let to = work.join(t).join("snapshots").join(odd(b"snap\xff2"));
            copy_tree(&work.join(t).join("snapshots/snap1"), &to);
            to
        }),
        ("SSTable file", |work, t, _| {
            let to = work.join(t).join(odd(b"nb-7-big-Data\xff.db"));
            fs::copy(work.join(t).join("nb-1-big-Data.db"), &to).unwrap();
            to
        }),
    ];
    for (what, make) in cases {
        let work = ds.root.join(format!("work-{}", what.replace(' ', "-")));
        ds.copy_data(&work);
        let entry = make(&work, &snap_table, &matrix_table);
        let shown = entry.display().to_string();
        let dd = ["--data-dir", s(&work)];
        let snapshot = |p: &Path| {
            if p.is_dir() {
                tree(p)
            } else {
                [(String::new(), sha256(&fs::read(p).unwrap()))].into()
            }
        };
        let before = snapshot(&entry);

        let v = verify(&ds, OLD, &dd, &[]);
        assert_eq!(v.code, 1, "{what}: passed over in silence\n{}", v.all());
        let line = v
            .stdout
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(&shown))
            .unwrap_or_else(|| panic!("{what}: {shown} not named\n{}", v.all()));
        assert!(line.contains("not UTF-8"), "{what}: {line}");

        let r = rekey(&ds, &dd, &[]);
        assert_eq!(r.code, 1, "{what}\n{}", r.all());
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("FAILED") && l.contains(&shown) && l.contains("not UTF-8")),
            "{what}\n{}",
            r.all()
        );
        assert_eq!(snapshot(&entry), before, "{what}: {shown} was changed");
    }
}

// ------------------------------------------------------------------ the same data dir twice

/// `--data-dir D --data-dir D/.` (or a symlink to D) is one folder: scanned and locked once, with
/// a note. Before the fix, rekey and recover refused with "its lock is held" (they locked it
/// twice), and verify listed every SSTable twice.
#[test]
fn the_same_data_dir_given_twice_is_scanned_once() {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    let work = ds.root.join("work");
    ds.copy_data(&work);
    let alias = ds.root.join("alias");
    std::os::unix::fs::symlink(&work, &alias).unwrap();
    let dot = work.join(".");
    let dd = [
        "--data-dir",
        s(&work),
        "--data-dir",
        s(&dot),
        "--data-dir",
        s(&alias),
    ];

    let v = verify(&ds, OLD, &dd, &[]);
    assert_eq!(v.code, 0, "{}", v.all());
    assert!(v.stdout.contains("1 SSTables: 1 ok"), "{}", v.all());
    assert!(v.stderr.contains("scanned once"), "{}", v.all());

    let r = rekey(&ds, &dd, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("1 rekeyed"), "{}", r.all());
    assert!(r.stderr.contains("scanned once"), "{}", r.all());
    check_resolved(&ds, &ds.keys(), &work).unwrap();

    let args: Vec<&str> = [&["recover"][..], &dd].concat();
    let c = run(&ds.root, &args, &[]);
    assert_eq!(c.code, 0, "{}", c.all());
    assert!(c.stderr.contains("scanned once"), "{}", c.all());
}

// ------------------------------------------------------------------ the node's configuration

/// A JBOD node: data_file_directories lists two folders, each with a table under old-128.
struct Node {
    ds: DataSet,
    dd1: PathBuf,
    dd2: PathBuf,
    conf: PathBuf,
}

fn node() -> Node {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128, DD2]));
    let dd1 = ds.root.join("disk1/data");
    let dd2 = ds.root.join("disk2/data");
    fs::create_dir_all(&dd2).unwrap();
    copy_tree(&ds.data.join("matrix"), &dd1.join("matrix"));
    copy_tree(&ds.data.join("other"), &dd2.join("other"));
    let conf = ds.root.join("conf");
    fs::create_dir_all(&conf).unwrap();
    fs::write(
        conf.join("cassandra.yaml"),
        format!(
            "# a node with two data disks\ncluster_name: 'Test Cluster'\nnum_tokens: 16\ndata_file_directories:\n    - {}\n    - {}\ncommitlog_directory: {}\nhints_directory: {}\nseed_provider:\n    - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n      parameters:\n          - seeds: \"127.0.0.1:7000\"\n",
            dd1.display(),
            dd2.display(),
            ds.root.join("commitlog").display(),
            ds.root.join("hints").display(),
        ),
    )
    .unwrap();
    Node { ds, dd1, dd2, conf }
}

/// `--data-dir` names one of the node's two data directories: verify must not declare the key
/// unused (exit 1, naming the other), while still printing what it checked. Before the fix it
/// exited 0: a false all-clear on a JBOD node.
#[test]
fn verify_refuses_when_data_dir_omits_a_configured_data_directory() {
    let n = node();
    let env = [("CASSANDRA_CONF", n.conf.as_os_str())];
    let rep = n.ds.root.join("verify.json");
    let v = verify(
        &n.ds,
        OLD,
        &["--data-dir", s(&n.dd1), "--report", s(&rep)],
        &env,
    );
    assert_eq!(
        v.code,
        1,
        "a data directory of the node was left out, yet verify passed\n{}",
        v.all()
    );
    assert!(v.all().contains(s(&n.dd2)), "{}", v.all());
    assert!(
        v.all().contains(s(&n.conf.join("cassandra.yaml"))),
        "{}",
        v.all()
    );
    assert!(
        v.stdout
            .lines()
            .any(|l| l.starts_with("OK") && l.contains(s(&n.dd1))),
        "what was checked is still printed\n{}",
        v.all()
    );
    let j = report(&rep);
    assert_eq!(
        j["data_dirs"]["missing"],
        serde_json::json!([s(&n.dd2)]),
        "{j}"
    );

    // Both named: passes.
    let v = verify(
        &n.ds,
        OLD,
        &["--data-dir", s(&n.dd1), "--data-dir", s(&n.dd2)],
        &env,
    );
    assert_eq!(v.code, 0, "{}", v.all());
}

/// Without --data-dir the node's cassandra.yaml gives the data directories (found through
/// $CASSANDRA_CONF, or named with --cassandra-yaml), and the tool says which file it used; the
/// reports say what was scanned and from where.
#[test]
fn data_directories_come_from_cassandra_yaml() {
    let n = node();
    let yaml = n.conf.join("cassandra.yaml");
    for (how, extra, env) in [
        (
            "$CASSANDRA_CONF",
            vec![],
            vec![("CASSANDRA_CONF", n.conf.as_os_str())],
        ),
        (
            "--cassandra-yaml",
            vec!["--cassandra-yaml", s(&yaml)],
            vec![],
        ),
    ] {
        let rep = n.ds.root.join("verify.json");
        let v = verify(
            &n.ds,
            OLD,
            &[&extra[..], &["--report", s(&rep)]].concat(),
            &env,
        );
        assert_eq!(v.code, 0, "{how}\n{}", v.all());
        assert!(v.stdout.contains("2 SSTables: 2 ok"), "{how}\n{}", v.all());
        assert!(
            v.stderr.contains(s(&yaml)),
            "{how}: which file was used?\n{}",
            v.all()
        );
        let j = report(&rep);
        assert_eq!(
            j["data_dirs"]["dirs"],
            serde_json::json!([s(&n.dd1), s(&n.dd2)]),
            "{how}: {j}"
        );
        assert_eq!(j["data_dirs"]["cassandra_yaml"], s(&yaml), "{how}: {j}");
    }

    // rekey with only one of them named warns, and rekeys what it was given.
    let rep = n.ds.root.join("rekey.json");
    let r = rekey(
        &n.ds,
        &["--data-dir", s(&n.dd1), "--report", s(&rep)],
        &[("CASSANDRA_CONF", n.conf.as_os_str())],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("1 rekeyed"), "{}", r.all());
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("warning") && l.contains(s(&n.dd2))),
        "{}",
        r.all()
    );
    let j = report(&rep);
    assert_eq!(
        j["data_dirs"]["dirs"],
        serde_json::json!([s(&n.dd1)]),
        "{j}"
    );
    assert_eq!(
        j["data_dirs"]["missing"],
        serde_json::json!([s(&n.dd2)]),
        "{j}"
    );

    // Then the rest from the file: the second disk's table, and the first is already done.
    let r = rekey(&n.ds, &["--cassandra-yaml", s(&yaml)], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("1 rekeyed") && r.stdout.contains("1 skipped"),
        "{}",
        r.all()
    );
    let v = verify(&n.ds, NEW, &["--cassandra-yaml", s(&yaml)], &[]);
    assert_eq!(v.code, 0, "{}", v.all());
}

/// The tarball layouts, where data_file_directories is usually left out: Cassandra then uses
/// `$cassandra.storagedir/data`, which the start scripts set to `<home>/data`.
#[test]
fn tarball_layouts_and_cassandras_default_data_directory() {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    for (var, conf_rel) in [
        ("CASSANDRA_HOME", "conf"),
        ("DSE_HOME", "resources/cassandra/conf"),
        ("HCD_HOME", "resources/cassandra/conf"),
    ] {
        let home = ds.root.join(format!("home-{var}"));
        fs::create_dir_all(home.join(conf_rel)).unwrap();
        fs::write(
            home.join(conf_rel).join("cassandra.yaml"),
            "cluster_name: 'Test Cluster'\n# data_file_directories:\n#     - /var/lib/cassandra/data\n",
        )
        .unwrap();
        let data = home.join("data/data");
        copy_tree(&ds.data, &data);
        let v = verify(&ds, OLD, &[], &[(var, home.as_os_str())]);
        assert_eq!(v.code, 0, "{var}\n{}", v.all());
        assert!(v.stdout.contains("1 SSTables: 1 ok"), "{var}\n{}", v.all());
        assert!(v.stdout.contains(s(&data)), "{var}\n{}", v.all());
        assert!(
            v.stderr
                .contains(s(&home.join(conf_rel).join("cassandra.yaml"))),
            "{var}\n{}",
            v.all()
        );
    }
}

/// No --data-dir and no cassandra.yaml anywhere: the packaged default, said out loud.
#[test]
fn without_data_dir_or_configuration_the_default_is_named() {
    let standard = [
        "/etc/cassandra/cassandra.yaml",
        "/etc/dse/cassandra/cassandra.yaml",
        "/etc/dse/cassandra.yaml",
        "/etc/hcd/cassandra/cassandra.yaml",
        "/etc/hcd/cassandra.yaml",
    ];
    if let Some(f) = standard.iter().find(|f| Path::new(f).exists()) {
        eprintln!(
            "notice: {f} exists on this machine: the no-configuration case cannot be run here"
        );
        return;
    }
    let ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    let v = verify(&ds, OLD, &[], &[]);
    assert!(
        v.stderr.contains("/var/lib/cassandra/data") && v.stderr.contains("cassandra.yaml"),
        "{}",
        v.all()
    );
}

/// A cassandra.yaml that is not YAML, or whose data_file_directories is not a list of absolute
/// paths, is a usage error naming the file (exit 2, nothing read or written).
#[test]
fn malformed_cassandra_yaml_is_a_usage_error() {
    let ds = DataSet::new(&tables(&[KMIP_CBC_128]));
    let yaml = ds.root.join("cassandra.yaml");
    for (text, says) in [
        ("data_file_directories: [unclosed\n", "YAML"),
        ("data_file_directories: 5\n", "data_file_directories"),
        (
            "data_file_directories:\n    - 1\n    - {a: b}\n",
            "data_file_directories",
        ),
        ("data_file_directories:\n    - relative/data\n", "absolute"),
        ("- just\n- a list\n", "mapping"),
    ] {
        fs::write(&yaml, text).unwrap();
        let before = tree(&ds.data);
        for args in [
            vec![
                "verify",
                "--key",
                OLD,
                "--keyring",
                s(&ds.keyring),
                "--cassandra-yaml",
                s(&yaml),
            ],
            vec![
                "rekey",
                "--to",
                NEW,
                "--keyring",
                s(&ds.keyring),
                "--cassandra-yaml",
                s(&yaml),
            ],
            vec!["recover", "--cassandra-yaml", s(&yaml)],
        ] {
            let o = run(&ds.root, &args, &[]);
            assert_eq!(o.code, 2, "{text:?} {args:?}\n{}", o.all());
            assert!(
                o.stderr.contains(s(&yaml)) && o.stderr.contains(says),
                "{text:?} {args:?}\n{}",
                o.all()
            );
        }
        assert_eq!(tree(&ds.data), before);
    }
    // Found at a standard place instead of named: the same.
    fs::write(&yaml, "data_file_directories: 5\n").unwrap();
    let o = run(
        &ds.root,
        &["verify", "--key", OLD, "--keyring", s(&ds.keyring)],
        &[("CASSANDRA_CONF", ds.root.as_os_str())],
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains(s(&yaml)), "{}", o.all());
}
