//! The real KMIP server for suites other than tests/it/kmip.rs: PyKMIP 0.11.0 started by
//! `tools/kmip-server.sh` (its folder in `KMIP_TEST_DIR`; tools/test.sh starts one), PyKMIP's own
//! client (`tools/kmip_admin.py`) as the independent peer, and the lock of the tests whose result
//! depends on which Active AES-192 key is the newest on that shared server.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::{ci_env, Run, BIN};

/// The group of the server's `kmip.toml`.
pub const KMIP_GROUP_TEST: &str = "test";

pub struct KmipServer {
    pub dir: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running server, or `None` with a notice (a failure with `CI=true`).
pub fn kmip_server() -> Option<KmipServer> {
    let Some(dir) = std::env::var_os("KMIP_TEST_DIR").map(PathBuf::from) else {
        assert!(
            !ci_env(),
            "KMIP_TEST_DIR is not set; CI must run the KMIP tests (tools/test.sh starts the server)"
        );
        eprintln!(
            "notice: KMIP test skipped: KMIP_TEST_DIR is not set (tools/kmip-server.sh start DIR)"
        );
        return None;
    };
    assert!(
        dir.join("kmip.toml").is_file(),
        "KMIP_TEST_DIR={} has no kmip.toml: start it with tools/kmip-server.sh",
        dir.display()
    );
    let st = Command::new(repo().join("tools/kmip-server.sh"))
        .arg("status")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the KMIP server in {} does not answer",
        dir.display()
    );
    Some(KmipServer { dir })
}

/// Held by every test that resolves `kmip://test/active` for 192-bit tables (or creates Active
/// 192-bit keys for them): the newest such key decides, and the server is shared.
pub fn active_192_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn unhex(v: &Value) -> Vec<u8> {
    let h = v.as_str().unwrap();
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

impl KmipServer {
    /// Our `--kmip-config` for the server (group [`KMIP_GROUP_TEST`]).
    pub fn toml(&self) -> String {
        self.dir.join("kmip.toml").display().to_string()
    }

    /// A scylla.yaml whose `kmip_hosts` group [`KMIP_GROUP_TEST`] is the server (written into
    /// `dir`); returns its path.
    pub fn scylla_yaml(&self, dir: &std::path::Path) -> PathBuf {
        let port = std::fs::read_to_string(self.dir.join("port")).unwrap();
        let certs = self.dir.join("certs");
        let yaml = dir.join("scylla.yaml");
        std::fs::write(
            &yaml,
            format!(
                "cluster_name: test\nkmip_hosts:\n  {KMIP_GROUP_TEST}:\n    hosts: 127.0.0.1:{}\n    certificate: {}\n    keyfile: {}\n    truststore: {}\n",
                port.trim(),
                certs.join("client.crt").display(),
                certs.join("client.key").display(),
                certs.join("ca.crt").display()
            ),
        )
        .unwrap();
        yaml
    }

    /// PyKMIP's own client: its one JSON line.
    pub fn admin(&self, args: &[&str]) -> Value {
        let r = Run::of(
            Command::new(self.dir.join("venv/bin/python"))
                .arg(repo().join("tools/kmip_admin.py"))
                .arg(&self.dir)
                .args(args),
        );
        assert_eq!(r.code, 0, "kmip_admin {args:?}: {}", r.all());
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.all()))
    }

    /// A new AES key made by PyKMIP (`create` of kmip_admin.py with `extra`): its id and bytes.
    pub fn create(&self, bits: u32, extra: &[&str]) -> (String, Vec<u8>) {
        let mut args = vec!["create", "--bits"];
        let b = bits.to_string();
        args.push(&b);
        args.extend_from_slice(extra);
        let v = self.admin(&args);
        (v["id"].as_str().unwrap().to_string(), unhex(&v["key_hex"]))
    }

    /// The key's bytes, by PyKMIP's Get.
    pub fn key(&self, id: &str) -> Vec<u8> {
        unhex(&self.admin(&["key", id])["key_hex"])
    }

    /// PyKMIP's name of the key's state (`ACTIVE`, …).
    pub fn state(&self, id: &str) -> String {
        self.admin(&["state", id])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The ids of the Active AES keys of `bits` bits, by our `kmip list`.
    pub fn active_ids(&self, bits: u32) -> Vec<String> {
        let r = Run::of(Command::new(BIN).args([
            "kmip",
            "list",
            KMIP_GROUP_TEST,
            "--json",
            "--kmip-config",
            &self.toml(),
        ]));
        assert_eq!(r.code, 0, "{}", r.all());
        let listed: Value = serde_json::from_str(r.stdout.trim()).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["cipher"] == format!("AES-{bits}") && k["state"] == "Active")
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Revokes (Superseded) every Active AES key of `bits` bits, so that a test starts with none.
    pub fn retire_active(&self, bits: u32) {
        for id in self.active_ids(bits) {
            self.admin(&["revoke", &id, "--reason", "superseded"]);
        }
    }
}
