//! "A key is what it is" (issue 10, items 3–6): a KMIP key is its group and its id together; a new
//! key whose bytes equal an old key's is no new key; the node must be able to read what a rekey
//! writes (owner of the new files, the target key file); key material is read from regular files
//! only; `--to` may not be one of the `--from` keys.
//!
//! Every case runs the built binary over a scratch copy of testdata/, checks the exit status of
//! the contract, the message, and either a byte-identical tree (refusals) or the result through
//! the independent decryptor of tests/it/support (which names a KMIP key by the table's `kmip_host`
//! and the record's header id, as the operator types it: `kmip://GROUP/ID`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine;
use serde_json::Value;

const KMIP_T: &str = "dd1/matrix/t_Encryptor_kmip_CBC_128-";
const KMIP_T2: &str = "dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128-";
const LOCAL_T: &str = "dd1/matrix/t_Encryptor_local_CBC_128-";

/// Test uids/gids: the "node user" owning the data, and another unprivileged user.
const OWNER: u32 = 4242;
const OTHER: u32 = 4243;

fn dataset(prefixes: &[&str]) -> DataSet {
    let tables = DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        prefixes.iter().any(|p| d.starts_with(p))
    });
    assert_eq!(tables.len(), prefixes.len(), "{tables:?}");
    DataSet::new(&tables)
}

/// The SSTable of the data set whose folder starts with the table name of `prefix`.
fn orig<'a>(ds: &'a DataSet, prefix: &str) -> &'a Orig {
    let name = prefix.rsplit('/').next().unwrap();
    ds.sstables
        .iter()
        .find(|o| {
            o.live
                && o.dir
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(name)
        })
        .unwrap_or_else(|| panic!("no SSTable {prefix}"))
}

fn table_dir(ds: &DataSet, prefix: &str) -> PathBuf {
    ds.data.join(&orig(ds, prefix).dir)
}

/// Sets (or with `None` removes) a CompressionInfo option, as an operator's tool or another
/// writer could have left it. CompressionInfo.db is covered by no checksum.
fn set_option(ds: &DataSet, prefix: &str, key: &str, value: Option<&str>) -> PathBuf {
    let p = table_dir(ds, prefix).join("nb-1-big-CompressionInfo.db");
    let mut ci = Ci::read(&p).unwrap();
    ci.options.retain(|(k, _)| k != key);
    if let Some(v) = value {
        ci.options.push((key.to_string(), v.to_string()));
    }
    fs::write(&p, ci.serialize()).unwrap();
    p
}

fn tool(ds: &DataSet, args: &[&str]) -> Run {
    run_in(&ds.root, &strings(args), &[])
}

/// `rekey -q --to TO --keyring K --data-dir DATA --report R EXTRA... matrix`.
fn rekey(ds: &DataSet, to: &str, extra: &[&str]) -> Run {
    let ring = ds.keyring.display().to_string();
    let data = ds.data.display().to_string();
    let report = report_path(ds).display().to_string();
    let rest = [&["--report", report.as_str()], extra, &["matrix"]].concat();
    run_in(&ds.root, &rekey_cmd(to, &ring, &data, &rest), &[])
}

fn verify(ds: &DataSet, keys: &[&str]) -> Run {
    let ring = ds.keyring.display().to_string();
    let data = ds.data.display().to_string();
    let mut args = vec!["verify", "--keyring", &ring, "--data-dir", &data];
    for k in keys {
        args.extend(["--key", k]);
    }
    tool(ds, &args)
}

fn report_path(ds: &DataSet) -> PathBuf {
    ds.root.join("report.json")
}

fn report(ds: &DataSet) -> Value {
    serde_json::from_str(&fs::read_to_string(report_path(ds)).unwrap()).unwrap()
}

/// A refusal: exit `code`, every one of `says` in the output, and the data tree byte-identical.
fn refused(
    ds: &DataSet,
    before: &std::collections::BTreeMap<String, String>,
    r: &Run,
    code: i32,
    says: &[&str],
) {
    assert_eq!(r.code, code, "{}", r.all());
    for s in says {
        assert!(
            r.all().contains(s),
            "the message does not say {s:?}: {}",
            r.all()
        );
    }
    assert_eq!(
        diff(before, &tree_strict(&ds.data)),
        Vec::<String>::new(),
        "{}",
        r.all()
    );
    assert!(logs_under(&ds.data).is_empty());
}

/// The live Data.db of the (only) SSTable generation in a table folder.
fn live_data(dir: &Path) -> PathBuf {
    let v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with("-Data.db"))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

/// The decryptor's verdict on the table: the original plaintext, and exactly `key`.
fn decrypts_under(ds: &DataSet, prefix: &str, keys: &Keys, key: &str) {
    let o = orig(ds, prefix);
    let data = live_data(&ds.data.join(&o.dir));
    let opened =
        open_sstable(&data, keys, false).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    assert_eq!(opened.sha256, o.sha256, "{}", data.display());
    assert_eq!(
        opened.key_set(),
        std::collections::BTreeSet::from([key.to_string()]),
        "{}",
        data.display()
    );
}

fn keyring_line(ds: &DataSet, id: &str) -> String {
    fs::read_to_string(&ds.keyring)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{id}:")))
        .unwrap()
        .to_string()
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        p.display()
    );
}

/// Runs the binary, killing it (and failing) if it has not finished after `limit`.
fn run_bounded(cwd: &Path, args: &[String], limit: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "sstable-rekey {args:?} still running after {limit:?} (blocked on a FIFO?); killed\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

/// The binary run as `uid:gid` (the tests run as root; std drops the supplementary groups).
/// `rekey -q --to TO --keyring K --data-dir D` run as `uid:gid`.
fn rekey_as(ds: &DataSet, uid: u32, gid: u32, to: &str) -> Run {
    let ring = ds.keyring.display().to_string();
    let data = ds.data.display().to_string();
    run_as(
        ds,
        uid,
        gid,
        &[
            "rekey",
            "-q",
            "--to",
            to,
            "--keyring",
            &ring,
            "--data-dir",
            &data,
        ],
    )
}

fn run_as(ds: &DataSet, uid: u32, gid: u32, args: &[&str]) -> Run {
    Run::of(
        Command::new(BIN)
            .args(args)
            .current_dir(&ds.root)
            .stdin(Stdio::null())
            .uid(uid)
            .gid(gid),
    )
}

/// These tests chown files to test uids and run the binary as them: root only. Without root they
/// print a notice and stop, except under CI=true, where they fail.
fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !ci_env(),
        "this test chowns files to test uids and runs the binary as them: CI must run it as root"
    );
    eprintln!("notice: not root: ownership test skipped");
    false
}

/// A KMIP configuration naming one group, `kmip1`, at a port where nothing listens. With
/// `key_pem`, that file is the client's private key and `ca`/`cert` are a real self-signed
/// certificate made by openssl (so that reading them succeeds and the key is what is read next).
fn kmip_toml(ds: &DataSet, key_pem: Option<&Path>) -> PathBuf {
    let dir = ds.root.join("kmip");
    fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = match key_pem {
        Some(k) => {
            let made = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=test",
                ])
                .arg("-keyout")
                .arg(dir.join("unused.key"))
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("openssl (Debian package openssl) is needed by this test");
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            k.to_path_buf()
        }
        None => dir.join("client.key"),
    };
    let toml = dir.join("kmip.toml");
    fs::write(
        &toml,
        format!(
            "[groups.kmip1]\nhosts = [\"127.0.0.1:1\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ntimeout_ms = 500\n",
            cert.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    toml
}

// ------------------------------------------------------------------ item 3: the KMIP group is part of the key

#[test]
fn offline_rekey_to_another_kmip_group_is_a_usage_error() {
    let ds = dataset(&[KMIP_T]);
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, "kmip://typo-group/new-128", &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &["typo-group", "kmip1", "--move-kmip-group"],
    );
    assert!(!report_path(&ds).exists());
}

#[test]
fn move_kmip_group_moves_the_tables_and_verify_tells_the_groups_apart() {
    let ds = dataset(&[KMIP_T, KMIP_T2]);
    let keys = ds.keys();
    let r = rekey(&ds, "kmip://kmip2/new-128", &["--move-kmip-group"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for t in [KMIP_T, KMIP_T2] {
        let ci =
            Ci::read(&live_data(&table_dir(&ds, t)).with_file_name("nb-2-big-CompressionInfo.db"))
                .unwrap();
        assert_eq!(ci.option("kmip_host"), Some("kmip2"));
        decrypts_under(&ds, t, &keys, "kmip://kmip2/new-128");
    }
    let rep = report(&ds);
    for s in rep["sstables"].as_array().unwrap() {
        assert_eq!(s["status"], "rekeyed", "{s}");
        assert!(
            s["keys_before"].get("kmip://kmip1/old-128").is_some(),
            "{s}"
        );
        assert!(s["keys_after"].get("kmip://kmip2/new-128").is_some(), "{s}");
    }
    // The same id in the group the tables are not in is another key.
    let v = verify(&ds, &["kmip://kmip1/new-128"]);
    assert_eq!(v.code, 1, "{}", v.all());
    assert!(v.stdout.contains("kmip://kmip2/new-128"), "{}", v.all());
    let v = verify(&ds, &["kmip://kmip2/new-128"]);
    assert_eq!(v.code, 0, "{}", v.all());
    // Back to kmip1 without saying so: not "already under", a usage error.
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, "kmip://kmip1/new-128", &[]);
    refused(&ds, &before, &r, 2, &["kmip2", "--move-kmip-group"]);
    assert!(!r.all().contains("already under"), "{}", r.all());
    // Said explicitly: the same key moves back (same id, another group: not a new key, and
    // not refused as "the same bytes").
    let r = rekey(&ds, "kmip://kmip1/new-128", &["--move-kmip-group"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for t in [KMIP_T, KMIP_T2] {
        decrypts_under(&ds, t, &keys, "kmip://kmip1/new-128");
    }
}

#[test]
fn verify_counts_a_table_of_another_group_as_under_another_key() {
    let ds = dataset(&[KMIP_T]);
    set_option(&ds, KMIP_T, "kmip_host", Some("kmip2"));
    let v = verify(&ds, &["kmip://kmip1/old-128"]);
    assert_eq!(
        v.code,
        1,
        "verify passed a table whose key is kmip://kmip2/old-128\n{}",
        v.all()
    );
    assert!(v.stdout.contains("kmip://kmip2/old-128"), "{}", v.all());
    let v = verify(&ds, &["kmip://kmip2/old-128"]);
    assert_eq!(v.code, 0, "{}", v.all());
}

#[test]
fn a_table_of_another_group_is_not_already_under_the_target() {
    let ds = dataset(&[KMIP_T]);
    set_option(&ds, KMIP_T, "kmip_host", Some("kmip2"));
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, "kmip://kmip1/old-128", &[]);
    assert!(!r.all().contains("already under"), "{}", r.all());
    refused(&ds, &before, &r, 2, &["kmip2", "--move-kmip-group"]);
}

#[test]
fn from_matches_the_group_and_the_id() {
    let ds = dataset(&[KMIP_T]);
    set_option(&ds, KMIP_T, "kmip_host", Some("kmip2"));
    let before = tree_strict(&ds.data);
    let r = rekey(
        &ds,
        "kmip://kmip2/new-128",
        &["--from", "kmip://kmip1/old-128"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        diff(&before, &tree_strict(&ds.data)),
        Vec::<String>::new(),
        "{}",
        r.all()
    );
    let s = &report(&ds)["sstables"][0];
    assert_eq!(s["status"], "skipped", "{s}");
    assert_eq!(s["reason"], "not under any --from key", "{s}");
    // Named with its group, it is.
    let r = rekey(
        &ds,
        "kmip://kmip2/new-128",
        &["--from", "kmip://kmip2/old-128"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    decrypts_under(&ds, KMIP_T, &ds.keys(), "kmip://kmip2/new-128");
}

#[test]
fn a_kmip_table_without_kmip_host_fails_that_sstable() {
    let ds = dataset(&[KMIP_T, KMIP_T2]);
    let ci = set_option(&ds, KMIP_T, "kmip_host", None);
    let broken = tree_strict(&table_dir(&ds, KMIP_T));
    let r = rekey(&ds, "kmip://kmip1/new-128", &[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains(&ci.display().to_string()) && r.all().contains("kmip_host"),
        "{}",
        r.all()
    );
    assert_eq!(
        diff(&broken, &tree_strict(&table_dir(&ds, KMIP_T))),
        Vec::<String>::new()
    );
    // The other table went on.
    decrypts_under(&ds, KMIP_T2, &ds.keys(), "kmip://kmip1/new-128");
    let v = verify(&ds, &["kmip://kmip1/new-128", "kmip://kmip1/old-128"]);
    assert_eq!(v.code, 1, "{}", v.all());
    assert!(
        v.stdout.contains("FAILED") && v.stdout.contains("kmip_host"),
        "{}",
        v.all()
    );
}

#[test]
fn a_local_key_table_moving_to_kmip_offline_needs_the_flag() {
    let ds = dataset(&[LOCAL_T]);
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, "kmip://kmip1/new-128", &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &["--move-kmip-group", "t_Encryptor_local_CBC_128"],
    );
    let r = rekey(&ds, "kmip://kmip1/new-128", &["--move-kmip-group"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let ci = Ci::read(
        &live_data(&table_dir(&ds, LOCAL_T)).with_file_name("nb-2-big-CompressionInfo.db"),
    )
    .unwrap();
    assert_eq!(ci.option("kmip_host"), Some("kmip1"));
    assert_eq!(ci.option("secret_key_file"), None);
    decrypts_under(&ds, LOCAL_T, &ds.keys(), "kmip://kmip1/new-128");
}

#[test]
fn with_a_kmip_configuration_the_target_group_must_be_in_it() {
    let ds = dataset(&[KMIP_T]);
    let toml = kmip_toml(&ds, None);
    let before = tree_strict(&ds.data);
    let r = rekey(
        &ds,
        "kmip://typo-group/new-128",
        &["--kmip-config", toml.to_str().unwrap()],
    );
    refused(&ds, &before, &r, 2, &["typo-group", "kmip1"]);
}

// ------------------------------------------------------------------ item 5: new bytes equal to an old key's

#[test]
fn a_keyring_id_holding_the_old_keys_bytes_is_refused() {
    let ds = dataset(&[KMIP_T]);
    let old = keyring_line(&ds, "old-128");
    let b64 = old.rsplit_once(':').unwrap().1.to_string();
    let mut ring = fs::read_to_string(&ds.keyring).unwrap();
    ring.push_str(&format!("k1copy:{b64}\n"));
    fs::write(&ds.keyring, ring).unwrap();
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, "kmip://kmip1/k1copy", &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &[
            "kmip://kmip1/k1copy",
            "kmip://kmip1/old-128",
            "same key material",
        ],
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    assert!(
        !r.all().contains(&b64) && !r.all().contains(&hex(&raw)),
        "key bytes in the output"
    );
}

#[test]
fn a_copy_of_the_old_key_file_is_refused() {
    let ds = dataset(&[LOCAL_T]);
    let copy = ds.root.join("keys/copy-of-old.key");
    fs::copy(ds.root.join("keys/old.key"), &copy).unwrap();
    chmod(&copy, 0o600);
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, &format!("file:{}", copy.display()), &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &[
            &copy.display().to_string(),
            &ds.root.join("keys/old.key").display().to_string(),
            "same key material",
        ],
    );
}

// ------------------------------------------------------------------ item 6: --to among the --from keys

#[test]
fn to_equal_to_one_from_is_a_usage_error() {
    let ds = dataset(&[KMIP_T, LOCAL_T]);
    let before = tree_strict(&ds.data);
    let r = rekey(
        &ds,
        "kmip://kmip1/new-128",
        &[
            "--from",
            "kmip://kmip1/old-128",
            "--from",
            "kmip://kmip1/new-128",
        ],
    );
    refused(&ds, &before, &r, 2, &["kmip://kmip1/new-128", "--from"]);
    // The same key file spelled another way.
    let new = ds.root.join("keys/new.key");
    let other = format!("file:{}/keys/./new.key", ds.root.display());
    let r = rekey(&ds, &format!("file:{}", new.display()), &["--from", &other]);
    refused(&ds, &before, &r, 2, &["--from"]);
}

// ------------------------------------------------------------------ item 6: FIFOs are not key files

#[test]
fn a_keyring_that_is_a_fifo_is_refused_not_waited_on() {
    let ds = dataset(&[KMIP_T]);
    let fifo = ds.root.join("keys/fifo-ring");
    mkfifo(&fifo);
    let r = run_bounded(
        &ds.root,
        &strings(&[
            "rekey",
            "-q",
            "--to",
            "kmip://kmip1/new-128",
            "--keyring",
            fifo.to_str().unwrap(),
            "--data-dir",
            ds.data.to_str().unwrap(),
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains(fifo.to_str().unwrap()) && r.all().contains("not a regular file"),
        "{}",
        r.all()
    );
}

#[test]
fn a_key_file_that_is_a_fifo_is_refused_not_waited_on() {
    let ds = dataset(&[LOCAL_T]);
    let fifo = ds.root.join("keys/fifo.key");
    mkfifo(&fifo);
    // As the new key, and as the key file the table names (its old key).
    let new = format!("file:{}", ds.root.join("keys/new.key").display());
    for (to, table_key) in [
        (format!("file:{}", fifo.display()), None),
        (new, Some(&fifo)),
    ] {
        if let Some(f) = table_key {
            set_option(&ds, LOCAL_T, "secret_key_file", Some(f.to_str().unwrap()));
        }
        let args = strings(&[
            "rekey",
            "-q",
            "--to",
            &to,
            "--data-dir",
            ds.data.to_str().unwrap(),
        ]);
        let r = run_bounded(&ds.root, &args, Duration::from_secs(20));
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.all().contains(fifo.to_str().unwrap()) && r.all().contains("not a regular file"),
            "{}",
            r.all()
        );
    }
}

#[test]
fn a_kmip_private_key_that_is_a_fifo_is_refused_not_waited_on() {
    let ds = dataset(&[KMIP_T]);
    let fifo = ds.root.join("kmip-client.key");
    mkfifo(&fifo);
    let toml = kmip_toml(&ds, Some(&fifo));
    let r = run_bounded(
        &ds.root,
        &strings(&[
            "kmip",
            "list",
            "kmip1",
            "--kmip-config",
            toml.to_str().unwrap(),
        ]),
        Duration::from_secs(20),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.all().contains(fifo.to_str().unwrap()) && r.all().contains("not a regular file"),
        "{}",
        r.all()
    );
}

// ------------------------------------------------------------------ item 4: the node must be able to read the result

/// The data tree owned by OWNER:OWNER, folders 0775 (group-writable, as some packages make them),
/// and the scratch root searchable by the test users.
fn owned_by_node_user(ds: &DataSet) {
    chmod(&ds.root, 0o755);
    chmod(&ds.root.join("keys"), 0o755);
    chown_tree(&ds.data, OWNER, OWNER);
    let mut dirs_ = vec![ds.data.clone()];
    dirs_.extend(dirs(&ds.data).into_iter().map(|d| ds.data.join(d)));
    for d in dirs_ {
        chmod(&d, 0o775);
    }
}

#[test]
fn a_user_who_may_not_chown_is_refused_before_any_work() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[KMIP_T]);
    owned_by_node_user(&ds);
    // Another user in the node user's group: may write in the folders, may not give files away.
    std::os::unix::fs::chown(&ds.keyring, Some(OTHER), Some(OTHER)).unwrap();
    let before = tree_strict(&ds.data);
    let r = rekey_as(&ds, OTHER, OWNER, "kmip://kmip1/new-128");
    refused(&ds, &before, &r, 2, &["uid 4242", "nb-1-big-", "root"]);
    for (f, _) in tree_strict(&ds.data) {
        let m = fs::metadata(ds.data.join(&f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (OWNER, OWNER), "{f}");
    }
}

#[test]
fn the_owner_of_the_files_may_rekey_them() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[KMIP_T]);
    owned_by_node_user(&ds);
    std::os::unix::fs::chown(&ds.keyring, Some(OWNER), Some(OWNER)).unwrap();
    let r = rekey_as(&ds, OWNER, OWNER, "kmip://kmip1/new-128");
    assert_eq!(r.code, 0, "{}", r.all());
    let data = live_data(&table_dir(&ds, KMIP_T));
    for e in fs::read_dir(data.parent().unwrap()).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        assert_eq!((m.uid(), m.gid()), (OWNER, OWNER));
    }
    decrypts_under(&ds, KMIP_T, &ds.keys(), "kmip://kmip1/new-128");
}

#[test]
fn the_owner_outside_the_files_group_is_refused_before_any_work() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[KMIP_T]);
    owned_by_node_user(&ds);
    std::os::unix::fs::chown(&ds.keyring, Some(OWNER), Some(OWNER)).unwrap();
    let before = tree_strict(&ds.data);
    // The files' owner, but with another group only: fchown could not restore group 4242.
    let r = rekey_as(&ds, OWNER, OTHER, "kmip://kmip1/new-128");
    refused(&ds, &before, &r, 2, &["group 4242", "nb-1-big-", "root"]);
}

#[test]
fn a_relative_target_key_file_is_refused() {
    let ds = dataset(&[LOCAL_T]);
    let before = tree_strict(&ds.data);
    // Relative to the current folder (ds.root): the file exists and is readable here.
    let r = rekey(&ds, "file:keys/new.key", &[]);
    refused(&ds, &before, &r, 2, &["keys/new.key", "absolute"]);
}

#[test]
fn a_target_key_file_the_node_user_cannot_read_is_refused() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[LOCAL_T]);
    owned_by_node_user(&ds);
    let new = ds.root.join("keys/new.key"); // root-owned, 0600
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, &format!("file:{}", new.display()), &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &[new.to_str().unwrap(), "uid 4242", "0600"],
    );
}

#[test]
fn a_target_key_file_in_a_folder_the_node_user_cannot_search_is_refused() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[LOCAL_T]);
    owned_by_node_user(&ds);
    let private = ds.root.join("private");
    fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let new = private.join("new.key");
    fs::copy(ds.root.join("keys/new.key"), &new).unwrap();
    chmod(&new, 0o600);
    std::os::unix::fs::chown(&new, Some(OWNER), Some(OWNER)).unwrap();
    let before = tree_strict(&ds.data);
    let r = rekey(&ds, &format!("file:{}", new.display()), &[]);
    refused(
        &ds,
        &before,
        &r,
        2,
        &[private.to_str().unwrap(), "uid 4242"],
    );
}

#[test]
fn a_target_key_file_the_node_user_can_read_is_accepted() {
    if !is_root() {
        return;
    }
    let ds = dataset(&[LOCAL_T]);
    owned_by_node_user(&ds);
    let dir = ds.root.join("node-keys");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let new = dir.join("new.key");
    fs::copy(ds.root.join("keys/new.key"), &new).unwrap();
    chmod(&new, 0o600);
    std::os::unix::fs::chown(&new, Some(OWNER), Some(OWNER)).unwrap();
    let r = rekey(&ds, &format!("file:{}", new.display()), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut keys = Keys::keyring(&ds.keyring);
    keys.add_key_file(&new);
    decrypts_under(&ds, LOCAL_T, &keys, "local");
    let ci = Ci::read(
        &live_data(&table_dir(&ds, LOCAL_T)).with_file_name("nb-2-big-CompressionInfo.db"),
    )
    .unwrap();
    assert_eq!(ci.option("secret_key_file"), Some(new.to_str().unwrap()));
}
