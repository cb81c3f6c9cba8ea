//! The cluster rollout (deploy/ansible/rekey-cluster.yml) run by real ansible-core (from PyPI,
//! installed by tools/test.sh into .ansible-test/venv; `ANSIBLE_PLAYBOOK` names its
//! ansible-playbook) over three local "nodes" (`ansible_connection=local`), each with its own copy
//! of testdata/dd1. The node's service commands are a small script that records every call and
//! keeps a "running" flag that its `status` reports as `UN`. Judged by the calls' order, the
//! independent decryptor of tests/it/support and the reports.
//!
//! Without ansible-core the tests say so and pass, unless CI=true (then they fail).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

const TO: &str = "kmip://kmip1/new-128";
const FROM: &str = "kmip://kmip1/old-128";
const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// The stand-in for a node's service commands: `node.sh NODE ACTION`.
const NODE_SH: &str = r#"#!/bin/sh
# Records the call; keeps NODE.running while the node runs; `status` lists running nodes as UN.
node=$1; action=$2; dir=$(dirname "$0")
echo "$node $action" >> "$dir/calls.log"
case $action in
  stop) rm -f "$dir/$node.running" ;;
  start) touch "$dir/$node.running" ;;
  status)
    for f in "$dir"/*.running; do
      [ -e "$f" ] && echo "UN  $(basename "$f" .running)  1.2 MiB  256  ?  00000000-0000  rack1"
    done ;;
esac
exit 0
"#;

fn playbook() -> Option<PathBuf> {
    match std::env::var_os("ANSIBLE_PLAYBOOK") {
        Some(p) => Some(PathBuf::from(p)),
        None if ci_env() => panic!(
            "CI=true: ANSIBLE_PLAYBOOK is not set; tools/test.sh installs ansible-core and sets it"
        ),
        None => {
            eprintln!("note: ANSIBLE_PLAYBOOK not set (tools/test.sh sets it): the rollout tests do not run");
            None
        }
    }
}

/// Three nodes: a copy of dd1 and the keys each, the node script, the inventory.
struct Cluster {
    nodes: Vec<Scratch>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(verify_keys: &dyn Fn(&str, &Scratch) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("node.sh");
        fs::write(&script, NODE_SH).unwrap();
        chmod(&script, 0o755);
        let nodes: Vec<Scratch> = NODES
            .iter()
            .map(|_| Scratch::of(&["dd1", "keys"]))
            .collect();
        let mut hosts = serde_json::Map::new();
        for (name, n) in NODES.iter().zip(&nodes) {
            fs::write(dir.path().join(format!("{name}.running")), b"").unwrap();
            let cmd = |action: &str| format!("{} {name} {action}", script.display());
            let args = strings(&[
                "--keyring",
                &n.s("keys/keyring"),
                "--data-dir",
                &n.s("dd1"),
                "matrix",
            ]);
            let vars = serde_json::json!({
                "sstable_rekey_args": args,
                "sstable_rekey_verify_keys": verify_keys(name, n),
                "sstable_rekey_report_dir": n.s("reports"),
                "sstable_rekey_drain_cmd": cmd("drain"),
                "sstable_rekey_stop_cmd": cmd("stop"),
                "sstable_rekey_start_cmd": cmd("start"),
                "sstable_rekey_status_cmd": cmd("status"),
                "sstable_rekey_node_address": name,
            });
            hosts.insert(name.to_string(), vars);
        }
        let python = playbook().unwrap().with_file_name("python");
        let inventory = serde_json::json!({
            "cassandra": {
                "hosts": hosts,
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": python,
                    "sstable_rekey_bin": BIN,
                    "sstable_rekey_to": TO,
                    "sstable_rekey_from": [FROM],
                    "sstable_rekey_stage_rate": "",
                    "sstable_rekey_up_retries": 3,
                    "sstable_rekey_up_delay": 1,
                }
            }
        });
        // YAML is a superset of JSON: ansible reads this inventory as it is.
        fs::write(dir.path().join("inventory.yml"), inventory.to_string()).unwrap();
        Cluster { nodes, dir }
    }

    fn play(&self, extra: &[&str]) -> Run {
        let book = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ansible/rekey-cluster.yml");
        Run::of(
            Command::new(playbook().unwrap())
                .arg("-i")
                .arg(self.dir.path().join("inventory.yml"))
                .arg(book)
                .args(extra)
                .env("ANSIBLE_HOME", self.dir.path().join("ansible-home"))
                .env("ANSIBLE_LOCAL_TEMP", self.dir.path().join("ansible-tmp"))
                .env("ANSIBLE_NOCOLOR", "1")
                .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
                .env("LC_ALL", "C.UTF-8")
                .env_remove("CASSANDRA_CONF")
                .current_dir(self.dir.path()),
        )
    }

    /// The node commands called, in order.
    fn calls(&self) -> Vec<String> {
        match fs::read_to_string(self.dir.path().join("calls.log")) {
            Ok(t) => t.lines().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn running(&self, node: &str) -> bool {
        self.dir.path().join(format!("{node}.running")).exists()
    }
}

/// The keys a node's verify accepts: the new key, and the keys of the matrix tables the rollout
/// leaves alone (KMIP 256-bit, the local key file).
fn every_key(_: &str, n: &Scratch) -> Vec<String> {
    vec![
        TO.to_string(),
        "kmip://kmip1/old-256".into(),
        format!("file:{}", n.s("keys/old.key")),
    ]
}

/// The matrix SSTables of a node under FROM now rekeyed: each opens with the new keys only, to
/// its plaintext (MANIFEST.json); returns how many.
fn rekeyed_matrix(n: &Scratch) -> usize {
    let rep = n.report(&n.p("reports/rekey.json"));
    assert_eq!(rep["totals"]["failed"], 0, "{}", rep["totals"]);
    assert_eq!(
        rep["totals"]["rekeyed_now"], 0,
        "all staged: {}",
        rep["totals"]
    );
    let keys = Keys::testdata(&n.root, "new");
    let mut count = 0;
    for s in rep["sstables"].as_array().unwrap() {
        if s["status"] != "rekeyed" {
            continue;
        }
        let old = Path::new(s["old"].as_str().unwrap())
            .strip_prefix(&n.root)
            .unwrap()
            .display()
            .to_string();
        let e: &Value = manifest()
            .iter()
            .find(|e| e["data"] == old.as_str())
            .unwrap();
        let o = open_sstable(Path::new(s["new"].as_str().unwrap()), &keys, false).unwrap();
        assert_eq!(o.sha256, e["plaintext_sha256"], "{old}");
        assert_eq!(o.key_set(), BTreeSet::from([TO.to_string()]), "{old}");
        count += 1;
    }
    count
}

#[test]
fn the_rollout_stages_everywhere_then_rekeys_one_node_at_a_time() {
    let Some(_) = playbook() else { return };
    let c = Cluster::new(&every_key);
    let before: Vec<_> = c.nodes.iter().map(|n| tree_strict(&n.root)).collect();

    // --check: nothing runs, nothing changes.
    let r = c.play(&["--check"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(c.calls(), Vec::<String>::new(), "--check called the node");
    for (n, b) in c.nodes.iter().zip(&before) {
        assert_eq!(diff(b, &tree_strict(&n.root)), Vec::<String>::new());
    }

    let r = c.play(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    // Every node was staged before any was stopped; then node by node, the whole window.
    for n in &c.nodes {
        let st = n.report(&n.p("reports/stage.json"));
        assert_eq!(st["totals"]["staged"], 4, "{}", st["totals"]);
    }
    let window: Vec<String> = c
        .calls()
        .into_iter()
        .filter(|l| !l.ends_with(" status"))
        .collect();
    let expect: Vec<String> = NODES
        .iter()
        .flat_map(|n| ["drain", "stop", "start"].map(|a| format!("{n} {a}")))
        .collect();
    assert_eq!(window, expect, "the order of the node commands");
    for (name, n) in NODES.iter().zip(&c.nodes) {
        assert!(c.running(name), "{name} is not running at the end");
        assert_eq!(rekeyed_matrix(n), 4, "{name}");
        let v = n.report(&n.p("reports/verify.json"));
        assert_eq!(v["failed"], 0, "{name}: {v}");
        // The old files the window moved aside were purged once the node was up again.
        let rekey = n.report(&n.p("reports/rekey.json"));
        let purge = n.report(&n.p("reports/purge.json"));
        assert_eq!(
            rekey["obsolete"]["purged"], false,
            "{name}: {}",
            rekey["obsolete"]
        );
        assert_eq!(
            purge["files"], rekey["obsolete"]["files"],
            "{name}: {purge}"
        );
        assert!(!n.p("dd1/.sstable-rekey-obsolete").exists(), "{name}");
    }
}

#[test]
fn the_rollout_stops_at_the_first_node_that_does_not_verify() {
    let Some(_) = playbook() else { return };
    // node2 verifies against the new key alone: its local-key and 256-bit tables fail it.
    let c = Cluster::new(&|name, n| match name {
        "node2" => vec![TO.to_string()],
        _ => every_key(name, n),
    });
    let node3_before = tree_strict(&c.nodes[2].p("dd1/matrix"));
    let r = c.play(&[]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("node2: verify exited 1") && r.stdout.contains("stays stopped"),
        "{}",
        r.all()
    );
    let window: Vec<String> = c
        .calls()
        .into_iter()
        .filter(|l| !l.ends_with(" status"))
        .collect();
    let expect = strings(&[
        "node1 drain",
        "node1 stop",
        "node1 start",
        "node2 drain",
        "node2 stop",
    ]);
    assert_eq!(window, expect, "node2 stays stopped, node3 untouched");
    assert!(c.running("node1") && !c.running("node2") && c.running("node3"));
    assert_eq!(rekeyed_matrix(&c.nodes[0]), 4);
    // node3 was staged (its copies wait in the staging folder) and nothing else.
    let mut now = tree_strict(&c.nodes[2].p("dd1/matrix"));
    now.retain(|p, _| !p.contains(".sstable-rekey-staging"));
    assert_eq!(diff(&node3_before, &now), Vec::<String>::new());
    assert!(!c.nodes[2].p("reports/rekey.json").exists());
}
