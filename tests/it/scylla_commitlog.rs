//! `verify` over ScyllaDB commit log segments and hints (FORMAT.md 4.10): a commit log folder
//! (with the schema commit log's sub-folder) and a hints folder (a sub-folder per host) beside a
//! copy of testdata/scylla, their side files `.<segment>` written here from FORMAT.md alone (local
//! and KMIP keys, one without the end mark, one segment without a side file, some naming keys not
//! given). Every live SSTable is under a given key, so the verdict turns on the segments alone:
//! exit 1 with a line per segment naming the key while one is under a key not given, exit 0 once
//! that key is given too; a side file that cannot be parsed fails closed; the folders also come
//! from `--scylla-yaml`. The segments and side files are never modified.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::support::{scylla_manifest, strings, Scratch};

const END: &str = "#-- end of file\n";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `scylla_key_id` of a KMIP id that is not a UUID: its bytes, then 01 (FORMAT.md 4.4).
fn kmip_id(id: &str) -> Vec<u8> {
    let mut v = id.as_bytes().to_vec();
    v.push(1);
    v
}

fn local(file: &Path) -> String {
    format!(
        "cipher_algorithm=AES/CBC/PKCS5Padding\nkey_provider=LocalFileSystemKeyProviderFactory\nsecret_key_file={}\nsecret_key_strength=128\n{END}",
        file.display()
    )
}

fn kmip(host: &str, id: &[u8], bits: u32) -> String {
    format!(
        "cipher_algorithm=AES/CBC/PKCS5Padding\nkey_provider=KmipKeyProviderFactory\nkmip_host={host}\nsecret_key_strength={bits}\nkey_id={}\n{END}",
        b64(id)
    )
}

/// A segment `dir/name` (some bytes: never read) and, if given, its side file `dir/.name`.
fn segment(dir: &Path, name: &str, side: Option<&str>) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), [0xa5u8; 4096]).unwrap();
    if let Some(s) = side {
        fs::write(dir.join(format!(".{name}")), s).unwrap();
    }
}

struct Node {
    env: Scratch,
    commitlog: PathBuf,
    hints: PathBuf,
    ring: String,
    /// The keys of every live SSTable.
    keys: Vec<String>,
    retired_file: PathBuf,
}

const HOST: &str = "7d2b1c3e-0b8a-4d59-a3f1-2e6c9b8d4f10";

/// testdata/scylla and its keys, one keyring, and the node's folders:
/// commitlog/CommitLog-2-1.log  local old.key (given)
/// commitlog/CommitLog-2-2.log  KMIP kmip1/old-128 (given)
/// commitlog/CommitLog-2-3.log  side file without the end mark: unencrypted
/// commitlog/CommitLog-2-4.log  no side file: unencrypted
/// commitlog/schema/SchemaLog-2-5.log  KMIP kmip1/retired-128 (not given)
/// hints/<HOST>/HintsLog-2-6.log  KMIP kmip1/<uuid> (16 bytes; given)
/// hints/<HOST>/HintsLog-2-7.log  local retired.key (not given)
fn node() -> Node {
    let env = Scratch::of(&["scylla", "keys"]);
    let mut ring = fs::read_to_string(env.p("keys/keyring")).unwrap();
    ring.push_str(&fs::read_to_string(env.p("scylla/keys/keyring")).unwrap());
    fs::write(env.p("all.keyring"), ring).unwrap();
    crate::support::chmod(&env.p("all.keyring"), 0o600);
    let mut keys: Vec<String> = scylla_manifest()
        .iter()
        .filter(|e| e["location"] == "live")
        .map(|e| {
            let k = e["key"].as_str().unwrap();
            match k.split_once(':').unwrap() {
                ("file", rel) => format!("file:{}", env.s(rel)),
                (_, id) => format!("kmip://{}/{id}", e["kmip_host"].as_str().unwrap()),
            }
        })
        .collect();
    keys.sort();
    keys.dedup();
    let uuid = "5e0c2b9a-7d41-4f3e-9a6b-2c8d1e4f7a90";
    assert!(
        keys.contains(&format!("kmip://kmip1/{uuid}"))
            && keys.contains(&"kmip://kmip1/old-128".into()),
        "{keys:?}"
    );
    let retired_file = env.p("keys/retired.key");
    fs::write(
        &retired_file,
        format!("AES/CBC/PKCS5Padding:128:{}\n", b64(&[0x42; 16])),
    )
    .unwrap();
    crate::support::chmod(&retired_file, 0o600);

    let commitlog = env.root.join("node/commitlog");
    let hints = env.root.join("node/hints");
    segment(
        &commitlog,
        "CommitLog-2-1.log",
        Some(&local(&env.p("keys/old.key"))),
    );
    segment(
        &commitlog,
        "CommitLog-2-2.log",
        Some(&kmip("kmip1", &kmip_id("old-128"), 128)),
    );
    let cut = kmip("kmip1", &kmip_id("retired-128"), 128);
    segment(
        &commitlog,
        "CommitLog-2-3.log",
        Some(&cut[..cut.len() - END.len()]),
    );
    segment(&commitlog, "CommitLog-2-4.log", None);
    segment(
        &commitlog.join("schema"),
        "SchemaLog-2-5.log",
        Some(&kmip("kmip1", &kmip_id("retired-128"), 128)),
    );
    let uuid_bytes: Vec<u8> = (0..16)
        .map(|i| {
            let hex = uuid.replace('-', "");
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    segment(
        &hints.join(HOST),
        "HintsLog-2-6.log",
        Some(&kmip("kmip1", &uuid_bytes, 256)),
    );
    segment(
        &hints.join(HOST),
        "HintsLog-2-7.log",
        Some(&local(&retired_file)),
    );
    Node {
        ring: env.s("all.keyring"),
        env,
        commitlog,
        hints,
        keys,
        retired_file,
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

/// `verify --keyring --data-dir scylla/data --report R` with `keys` and `extra`: exit, report, output.
fn verify(n: &Node, keys: &[String], extra: &[String]) -> (i32, Value, String) {
    let report = n.env.tmp.path().join("verify.json");
    let _ = fs::remove_file(&report);
    let mut args = strings(&["verify", "--keyring", &n.ring, "--data-dir"]);
    args.push(n.env.s("scylla/data"));
    for k in keys {
        args.push(format!("--key={k}"));
    }
    args.extend(extra.iter().cloned());
    args.extend(["--report".into(), report.display().to_string()]);
    let r = n.env.run(&args);
    let rep = serde_json::from_str(&fs::read_to_string(&report).unwrap_or_default())
        .unwrap_or(Value::Null);
    (r.code, rep, r.all())
}

fn dirs(n: &Node) -> Vec<String> {
    vec![
        "--commitlog-dir".into(),
        n.commitlog.display().to_string(),
        "--hints-dir".into(),
        n.hints.display().to_string(),
    ]
}

/// Segment (path relative to node/) → (status, key).
fn segments(n: &Node, rep: &Value) -> BTreeMap<String, (String, String)> {
    let base = format!("{}/", n.env.root.join("node").display());
    rep["commitlog"]
        .as_array()
        .unwrap_or_else(|| panic!("no commitlog section: {rep}"))
        .iter()
        .map(|s| {
            let p = s["path"].as_str().unwrap();
            (
                p.strip_prefix(&base).unwrap_or(p).to_string(),
                (
                    s["status"].as_str().unwrap().to_string(),
                    s["key"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

fn expected(n: &Node, retired_given: bool) -> BTreeMap<String, (String, String)> {
    let other = if retired_given { "ok" } else { "other_key" };
    let e = |p: &str, st: &str, k: String| (p.to_string(), (st.to_string(), k));
    [
        e(
            "commitlog/CommitLog-2-1.log",
            "ok",
            format!("file:{}", n.env.s("keys/old.key")),
        ),
        e(
            "commitlog/CommitLog-2-2.log",
            "ok",
            "kmip://kmip1/old-128".into(),
        ),
        e("commitlog/CommitLog-2-3.log", "unencrypted", String::new()),
        e("commitlog/CommitLog-2-4.log", "unencrypted", String::new()),
        e(
            "commitlog/schema/SchemaLog-2-5.log",
            other,
            "kmip://kmip1/retired-128".into(),
        ),
        e(
            &format!("hints/{HOST}/HintsLog-2-6.log"),
            "ok",
            "kmip://kmip1/5e0c2b9a-7d41-4f3e-9a6b-2c8d1e4f7a90".into(),
        ),
        e(
            &format!("hints/{HOST}/HintsLog-2-7.log"),
            other,
            format!("file:{}", n.retired_file.display()),
        ),
    ]
    .into_iter()
    .collect()
}

#[test]
fn segments_under_a_key_not_given_fail_verify_until_it_is_given() {
    let n = node();
    let before = snapshot(&n.env.root.join("node"));
    // Without the folders: the SSTables alone pass, with a note that no segment was checked.
    let (code, rep, out) = verify(&n, &n.keys, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rep["commitlog"], Value::Array(vec![]), "{rep}");
    assert!(
        out.contains("no commit log or hints folder checked"),
        "{out}"
    );

    let (code, rep, out) = verify(&n, &n.keys, &dirs(&n));
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        rep["ok"],
        rep["sstables"].as_array().unwrap().len(),
        "{out}"
    );
    assert_eq!(segments(&n, &rep), expected(&n, false), "{out}");
    // A line per segment under a key not given, naming it and what to do.
    for (seg, key) in [
        (
            "commitlog/schema/SchemaLog-2-5.log",
            "kmip://kmip1/retired-128".to_string(),
        ),
        (
            &format!("hints/{HOST}/HintsLog-2-7.log"),
            format!("file:{}", n.retired_file.display()),
        ),
    ] {
        let path = n.env.root.join("node").join(seg).display().to_string();
        let line = out
            .lines()
            .find(|l| l.contains(&path))
            .unwrap_or_else(|| panic!("no line for {path}: {out}"));
        assert!(
            line.starts_with("OTHER KEY") && line.contains(&key) && line.contains("nodetool drain"),
            "{line}"
        );
    }
    assert!(out.contains("7 commit log segments and hints: 3 under given keys, 2 under other keys, 0 failed, 2 unencrypted"), "{out}");
    let dirs_rep = rep["commitlog_dirs"].as_array().unwrap();
    assert_eq!(dirs_rep.len(), 2, "{rep}");
    assert_eq!(dirs_rep[0]["kind"], "commitlog");
    assert_eq!(dirs_rep[1]["from"], "--hints-dir");

    // With the retired keys given too, the same folders pass.
    let mut all = n.keys.clone();
    all.push("kmip://kmip1/retired-128".into());
    all.push(format!("file:{}", n.retired_file.display()));
    let (code, rep, out) = verify(&n, &all, &dirs(&n));
    assert_eq!(code, 0, "{out}");
    assert_eq!(segments(&n, &rep), expected(&n, true), "{out}");
    // The same id in another group is another key.
    fs::write(
        n.commitlog.join(".CommitLog-2-2.log"),
        kmip("kmip2", &kmip_id("old-128"), 128),
    )
    .unwrap();
    let (code, rep, out) = verify(&n, &all, &dirs(&n));
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        segments(&n, &rep)["commitlog/CommitLog-2-2.log"],
        ("other_key".to_string(), "kmip://kmip2/old-128".to_string())
    );
    fs::write(
        n.commitlog.join(".CommitLog-2-2.log"),
        kmip("kmip1", &kmip_id("old-128"), 128),
    )
    .unwrap();
    assert_eq!(snapshot(&n.env.root.join("node")), before, "never modified");
}

#[test]
fn a_side_file_that_cannot_be_told_fails_closed() {
    let n = node();
    let mut all = n.keys.clone();
    all.push("kmip://kmip1/retired-128".into());
    all.push(format!("file:{}", n.retired_file.display()));
    let side = n.commitlog.join(".CommitLog-2-1.log");
    for (text, says) in [
        (
            format!("cipher_algorithm=AES/CBC/PKCS5Padding\nnot an option\n{END}"),
            "line 2",
        ),
        (
            format!("key_provider=KmipKeyProviderFactory\nkmip_host=kmip1\nkey_id=@@\n{END}"),
            "base64",
        ),
        (
            format!("key_provider=KmipKeyProviderFactory\nkmip_host=kmip1\n{END}"),
            "scylla_key_id",
        ),
        (
            format!("key_provider=KmsKeyProviderFactory\nkey_id=YQ==\n{END}"),
            "KMS",
        ),
        (
            format!(
                "key_provider=LocalFileSystemKeyProviderFactory\nsecret_key_file=keys/x\n{END}"
            ),
            "relative",
        ),
        (
            format!("cipher_algorithm=AES/CBC/PKCS5Padding\n{END}trailing\n"),
            "after the end mark",
        ),
    ] {
        fs::write(&side, &text).unwrap();
        let (code, rep, out) = verify(&n, &all, &dirs(&n));
        assert_eq!(code, 1, "{text}: {out}");
        let s = rep["commitlog"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["path"].as_str().unwrap().ends_with("/CommitLog-2-1.log"))
            .unwrap();
        assert_eq!(s["status"], "failed", "{text}: {s}");
        let e = s["error"].as_str().unwrap();
        assert!(
            e.contains(&side.display().to_string()) && e.contains(says),
            "{text}: {e}"
        );
        assert!(
            out.contains(&format!(
                "FAILED segment {}",
                n.commitlog.join("CommitLog-2-1.log").display()
            )),
            "{out}"
        );
    }
    // A side file that cannot be read, a folder that is missing.
    fs::remove_file(&side).unwrap();
    fs::create_dir(&side).unwrap();
    let mut args = dirs(&n);
    args.extend([
        "--hints-dir".into(),
        n.env.root.join("node/absent").display().to_string(),
    ]);
    let (code, rep, out) = verify(&n, &all, &args);
    assert_eq!(code, 1, "{out}");
    let failed: Vec<&str> = rep["commitlog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 2, "{out}");
    assert!(
        out.contains("node/absent") && out.contains("--hints-dir"),
        "{out}"
    );
}

#[test]
fn the_folders_come_from_scylla_yaml() {
    let n = node();
    let yaml = n.env.root.join("scylla.yaml");
    let view = n.env.root.join("node/view_hints");
    fs::create_dir_all(&view).unwrap();
    fs::write(
        &yaml,
        format!(
            "cluster_name: t\ncommitlog_directory: {}\nhints_directory: {}\nview_hints_directory: {}\n",
            n.commitlog.display(),
            n.hints.display(),
            view.display()
        ),
    )
    .unwrap();
    let y = vec!["--scylla-yaml".to_string(), yaml.display().to_string()];
    let (code, rep, out) = verify(&n, &n.keys, &y);
    assert_eq!(code, 1, "{out}");
    assert_eq!(segments(&n, &rep), expected(&n, false), "{out}");
    let from: Vec<&str> = rep["commitlog_dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["from"].as_str().unwrap())
        .collect();
    assert_eq!(
        from,
        [
            "scylla.yaml commitlog_directory",
            "scylla.yaml hints_directory",
            "scylla.yaml view_hints_directory"
        ],
        "{out}"
    );
    // --hints-dir replaces the yaml's hints folders, the commit log still comes from it.
    let empty = n.env.root.join("node/empty");
    fs::create_dir_all(&empty).unwrap();
    let mut args = y.clone();
    args.extend(["--hints-dir".into(), empty.display().to_string()]);
    let (code, rep, out) = verify(&n, &n.keys, &args);
    assert_eq!(code, 1, "{out}");
    let segs = segments(&n, &rep);
    assert_eq!(segs.len(), 5, "{out}");
    assert_eq!(segs["commitlog/schema/SchemaLog-2-5.log"].0, "other_key");
    // A commit log folder that the yaml names but is not there fails closed.
    fs::write(
        &yaml,
        "commitlog_directory: /nonexistent/scylla/commitlog\n",
    )
    .unwrap();
    let mut args = y.clone();
    args.extend(["--hints-dir".into(), empty.display().to_string()]);
    let (code, rep, out) = verify(&n, &n.keys, &args);
    assert_eq!(code, 1, "{out}");
    assert_eq!(rep["commitlog"][0]["status"], "failed", "{rep}");
    assert!(
        out.contains("/nonexistent/scylla/commitlog") && out.contains("--commitlog-dir"),
        "{out}"
    );
}
