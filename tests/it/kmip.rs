//! The KMIP client against a real KMIP server: PyKMIP 0.11.0 started by `tools/kmip-server.sh`,
//! keys created, read, revoked and destroyed with PyKMIP's own client (`tools/kmip_admin.py`), data
//! encrypted and verified by the independent oracle (`../shared/oracle/tde_oracle.py`).
//!
//! `KMIP_TEST_DIR` names the running server's folder (what `tools/kmip-server.sh start DIR` prints;
//! `tools/test.sh` starts one itself). Without it these tests print a notice and pass, except with
//! `CI=true`, where a missing server or oracle is a failure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Ci, Run};

const GROUP: &str = "test";
const SOURCE: &str = "testdata/cassandra/nb/legacy_nb_clust/nb-1-big-Data.db";
const TABLE: &str = "ks/tbl-0123456789abcdef0123456789abcdef";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn unavailable(what: &str) -> Option<Env> {
    if ci() {
        panic!("{what}; CI must run these tests (tools/test.sh starts the KMIP server)");
    }
    eprintln!("notice: KMIP tests skipped: {what}");
    None
}

struct Env {
    server: PathBuf,
    admin_python: PathBuf,
    oracle_python: PathBuf,
    shared: PathBuf,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env() -> Option<Env> {
    let server = crate::support::kmip::kmip_server()?.dir;
    let shared = root().join("../shared");
    if !shared.join("oracle/tde_oracle.py").is_file() {
        return unavailable("../shared (the oracle and real SSTables) is not beside the checkout");
    }
    let oracle_python = std::env::var_os("ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    if !oracle_python.exists() {
        return unavailable(
            "no Python for the oracle (ORACLE_PYTHON, or .venv made by tools/test.sh)",
        );
    }
    Some(Env {
        admin_python: server.join("venv/bin/python"),
        server,
        oracle_python,
        shared,
    })
}

fn run(cmd: &mut Command) -> Run {
    Run::of(cmd)
}

fn json(o: &Run) -> Value {
    assert_eq!(o.code, 0, "{}", o.all());
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", o.all()))
}

impl Env {
    fn toml(&self) -> PathBuf {
        self.server.join("kmip.toml")
    }

    fn certs(&self) -> PathBuf {
        self.server.join("certs")
    }

    /// PyKMIP's own client.
    fn admin(&self, args: &[&str]) -> Value {
        json(&run(Command::new(&self.admin_python)
            .arg(root().join("tools/kmip_admin.py"))
            .arg(&self.server)
            .args(args)))
    }

    /// A new Active AES key: (id, key hex).
    fn create(&self, bits: u32) -> (String, String) {
        let v = self.admin(&["create", "--bits", &bits.to_string()]);
        (
            v["id"].as_str().unwrap().to_string(),
            v["key_hex"].as_str().unwrap().to_string(),
        )
    }

    fn state(&self, id: &str) -> String {
        self.admin(&["state", id])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn oracle(&self, args: &[&str]) -> Value {
        json(&run(Command::new(&self.oracle_python)
            .arg(self.shared.join("oracle/tde_oracle.py"))
            .args(args)))
    }

    /// A data dir with one real Cassandra 4.1 SSTable encrypted by the oracle under KMIP key `id`.
    fn encrypted(&self, dir: &Path, id: &str, hex: &str, bits: u32) -> PathBuf {
        let data = dir.join("data");
        let t = data.join(TABLE);
        self.oracle(&[
            "encrypt",
            self.shared.join(SOURCE).to_str().unwrap(),
            t.to_str().unwrap(),
            "--provider",
            "kmip",
            "--kmip-group",
            GROUP,
            "--key-id",
            id,
            "--key-hex",
            hex,
            "--strength",
            &bits.to_string(),
            "--class",
            "EncryptingLZ4Compressor",
        ]);
        data
    }

    fn plain_digest(&self) -> String {
        self.oracle(&["plain-digest", self.shared.join(SOURCE).to_str().unwrap()])
            ["plaintext_sha256"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn tool(args: &[&str]) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_sstable-rekey")).args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir` with its contents' CRC: equal before and after means nothing written.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, u32)> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap();
                m.insert(p, (b.len() as u64, crc32fast::hash(&b)));
            }
        }
    }
    m
}

fn pykmip_state(ours: &str) -> &'static str {
    match ours {
        "Pre-Active" => "PRE_ACTIVE",
        "Active" => "ACTIVE",
        "Deactivated" => "DEACTIVATED",
        "Compromised" => "COMPROMISED",
        "Destroyed" => "DESTROYED",
        _ => "?",
    }
}

#[test]
fn revoke_rekey_verify_destroy_end_to_end() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, h1) = e.create(128);
    let (k2, h2) = e.create(128);
    let (k3, _) = e.create(128);
    let data = e.encrypted(tmp.path(), &k1, &h1, 128);
    let toml = e.toml();
    let cfg = ["--kmip-config", s(&toml)];
    let dd = ["--data-dir", s(&data)];

    // A snapshot (hard links, as nodetool snapshot makes) keeps needing K1.
    let table = data.join(TABLE);
    let snap = table.join("snapshots/before-rekey");
    std::fs::create_dir_all(&snap).unwrap();
    for f in std::fs::read_dir(&table).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::hard_link(f.path(), snap.join(f.file_name())).unwrap();
        }
    }

    // Revoke K1 as compromised with our client; PyKMIP's client sees Compromised.
    let o = tool(
        &[
            &["kmip", "revoke", GROUP, &k1, "--reason", "compromise"][..],
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(e.state(&k1), "COMPROMISED");
    // K3 superseded: Deactivated.
    let o = tool(
        &[
            &[
                "kmip",
                "revoke",
                GROUP,
                &k3,
                "--reason",
                "superseded",
                "--message",
                "rotated",
            ][..],
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(e.state(&k3), "DEACTIVATED");

    // Destroy is refused while the live SSTable is under K1.
    let o = tool(&[&["kmip", "destroy", GROUP, &k1][..], &dd, &cfg].concat());
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stdout.contains("refusing to destroy"), "{}", o.all());
    assert!(
        o.stdout.contains("nb-1-big-Data.db: 21 records"),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");

    // Rekey from the compromised K1 (fetched from the server) to K2.
    let report = tmp.path().join("rekey.json");
    let o = tool(
        &[
            &[
                "rekey",
                "--to",
                &format!("kmip://{GROUP}/{k2}"),
                "-q",
                "--report",
                s(&report),
            ][..],
            &dd,
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let new = table.join("nb-2-big-Data.db");
    assert!(new.is_file() && !table.join("nb-1-big-Data.db").exists());

    // The oracle decrypts the result with K2's bytes from PyKMIP: same plaintext.
    let v = e.oracle(&["verify", s(&new), "--key", &format!("{k2}:{h2}")]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["plaintext_sha256"].as_str().unwrap(), e.plain_digest());
    assert_eq!(v["key_refs"][&k2], 21, "{v}");
    let o = tool(
        &[
            &["verify", "--key", &format!("kmip://{GROUP}/{k2}")][..],
            &dd,
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 0, "{}", o.all());

    // Still refused: the snapshot is under K1, and listed as such.
    let o = tool(&[&["kmip", "destroy", GROUP, &k1][..], &dd, &cfg].concat());
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains("snapshot/backup") && o.stdout.contains("before-rekey"),
        "{}",
        o.all()
    );
    std::fs::remove_dir_all(table.join("snapshots")).unwrap();

    // Now nothing needs K1: destroyed, and PyKMIP no longer has it.
    let o = tool(&[&["kmip", "destroy", GROUP, &k1][..], &dd, &cfg].concat());
    assert_eq!(o.code, 0, "{}", o.all());
    let gone = run(Command::new(&e.admin_python)
        .arg(root().join("tools/kmip_admin.py"))
        .arg(&e.server)
        .args(["state", &k1]));
    assert_ne!(gone.code, 0, "PyKMIP still has {k1}");

    // `kmip list` shows what PyKMIP's own client reports.
    let listed = json(&tool(
        &[&["kmip", "list", GROUP, "--json"][..], &cfg].concat(),
    ));
    let ours: BTreeMap<String, String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(!ours.contains_key(&k1));
    for k in [&k2, &k3] {
        assert_eq!(pykmip_state(&ours[k]), e.state(k), "key {k}");
    }
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == k2.as_str())
        .unwrap();
    assert_eq!(row["cipher"], "AES-128");
    assert!(row["creation_date"].as_str().unwrap().ends_with('Z'));
    let text = tool(&[&["kmip", "list", GROUP][..], &cfg].concat());
    assert!(text.stdout.starts_with("ID  "), "{}", text.all());
    assert!(text.stdout.contains("Protect Stop Date"));
    // Query: the vendor PyKMIP reports.
    assert!(text.stderr.contains("(server: PyKMIP"), "{}", text.all());
}

/// A config like the server's, with some fields replaced.
fn config(e: &Env, dir: &Path, hosts: &str, ca: &Path, cert: &str, timeout_ms: u32) -> PathBuf {
    let p = dir.join(format!(
        "kmip-{}.toml",
        crc32fast::hash(format!("{hosts}{ca:?}{cert}{timeout_ms}").as_bytes())
    ));
    let c = e.certs();
    std::fs::write(
        &p,
        format!(
            "[groups.{GROUP}]\nhosts = [{hosts}]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ntimeout_ms = {timeout_ms}\n",
            ca.display(),
            c.join(format!("{cert}.crt")).display(),
            c.join(format!("{cert}.key")).display()
        ),
    )
    .unwrap();
    p
}

fn port(e: &Env) -> String {
    std::fs::read_to_string(e.server.join("port"))
        .unwrap()
        .trim()
        .to_string()
}

/// A TLS server on `ip` with the test server's certificate that answers every request with
/// `reply` (then closes without close_notify when `hang_up`), or with nothing when `reply` is None.
fn fake_server(e: &Env, ip: &str, reply: Option<Vec<u8>>, hang_up: bool) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(e.certs().join("server.crt"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(e.certs().join("server.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in l.incoming().take(4) {
            let Ok(sock) = sock else { return };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut h = [0u8; 8];
            if s.read_exact(&mut h).is_err() {
                continue;
            }
            let n = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            let mut body = vec![0u8; n.min(1 << 20)];
            if s.read_exact(&mut body).is_err() {
                continue;
            }
            let Some(reply) = &reply else {
                std::thread::sleep(Duration::from_secs(5));
                continue;
            };
            let _ = s.write_all(reply);
            let _ = s.flush();
            if !hang_up {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            // Dropping the socket closes it.
        }
    });
    port
}

#[test]
fn failures_are_clear_and_write_nothing() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, h1) = e.create(128);
    let (k2, _) = e.create(128);
    let (k4, _) = e.create(128);
    let data = e.encrypted(tmp.path(), &k1, &h1, 128);
    let before = tree(&data);
    let ca = e.certs().join("ca.crt");
    let here = format!("\"127.0.0.1:{}\"", port(&e));
    let to = |id: &str| format!("kmip://{GROUP}/{id}");
    let rekey = |cfg: &Path, to: &str| {
        let t0 = Instant::now();
        let o = tool(&[
            "rekey",
            "--to",
            to,
            "-q",
            "--data-dir",
            s(&data),
            "--kmip-config",
            s(cfg),
        ]);
        (o, t0.elapsed())
    };
    let check = |what: &str, (o, _): &(Run, Duration), want: &[&str]| {
        eprintln!("[{what}] {}", o.stderr.trim());
        assert_eq!(o.code, 2, "{what}: {}", o.all());
        for w in want {
            assert!(o.stderr.contains(w), "{what}: {w:?} not in: {}", o.all());
        }
        assert!(!o.all().contains(&h1), "{what}: key material in the output");
        assert_eq!(tree(&data), before, "{what}: something was written");
    };

    // Server down: nothing listens on that port.
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{down}\""),
        &ca,
        "client",
        3000,
    );
    check(
        "server down",
        &rekey(&cfg, &to(&k2)),
        &["no server could be used", "cannot connect"],
    );

    // Failover: the first host is down, the second answers (and the rekey dry-runs fine).
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{down}\", {here}"),
        &ca,
        "client",
        3000,
    );
    let o = tool(&[
        "rekey",
        "--to",
        &to(&k2),
        "--dry-run",
        "--data-dir",
        s(&data),
        "--kmip-config",
        s(&cfg),
    ]);
    assert_eq!(o.code, 0, "failover: {}", o.all());
    assert_eq!(tree(&data), before);

    // Wrong CA: the server's certificate is not from the configured CA.
    let cfg = config(
        &e,
        tmp.path(),
        &here,
        &e.certs().join("rogue-ca.crt"),
        "client",
        3000,
    );
    check(
        "wrong CA",
        &rekey(&cfg, &to(&k2)),
        &["not issued by the CA", "rogue-ca.crt"],
    );

    // A server whose certificate does not name the address we reached it by (it names 127.0.0.1
    // and localhost; this one listens on 127.0.0.2).
    let p = fake_server(&e, "127.0.0.2", Some(vec![]), false);
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.2:{p}\""),
        &ca,
        "client",
        3000,
    );
    check(
        "wrong host",
        &rekey(&cfg, &to(&k2)),
        &["does not name 127.0.0.2"],
    );

    // Our client certificate is from a CA the server does not trust.
    let cfg = config(&e, tmp.path(), &here, &ca, "rogue-client", 3000);
    check(
        "client cert refused",
        &rekey(&cfg, &to(&k2)),
        &["does not accept our client certificate", "rogue-client.crt"],
    );

    let good = e.toml();
    // Key id not found.
    check(
        "new key missing",
        &rekey(&good, &to("999999")),
        &["999999", "no such key"],
    );
    // New key not Active.
    let o = tool(&["kmip", "revoke", GROUP, &k4, "--kmip-config", s(&good)]);
    assert_eq!(o.code, 0, "{}", o.all());
    check(
        "new key not Active",
        &rekey(&good, &to(&k4)),
        &["Compromised, not Active"],
    );
    let pre = e.admin(&["create", "--pre-active"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    check(
        "new key Pre-Active",
        &rekey(&good, &to(&pre)),
        &["Pre-Active, not Active"],
    );

    // A server that accepts and never answers: the timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{}\"", silent.local_addr().unwrap().port()),
        &ca,
        "client",
        700,
    );
    let r = rekey(&cfg, &to(&k2));
    check("silent server", &r, &["no answer within 700 ms"]);
    assert!(r.1 < Duration::from_secs(10), "took {:?}", r.1);
    drop(silent);

    // A server that completes the handshake, reads the request, and stops answering.
    let p = fake_server(&e, "127.0.0.1", None, false);
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{p}\""),
        &ca,
        "client",
        700,
    );
    let r = rekey(&cfg, &to(&k2));
    check(
        "server stops answering",
        &r,
        &["no answer within 700 ms waiting for the response"],
    );
    assert!(r.1 < Duration::from_secs(4), "took {:?}", r.1);

    // Truncated response: a header promising 200 bytes, 16 sent, then the connection drops.
    let mut trunc = vec![0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 200];
    trunc.extend_from_slice(&[
        0x42, 0x00, 0x7A, 0x01, 0, 0, 0, 0x48, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let p = fake_server(&e, "127.0.0.1", Some(trunc), true);
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{p}\""),
        &ca,
        "client",
        3000,
    );
    check(
        "truncated response",
        &rekey(&cfg, &to(&k2)),
        &["truncated response"],
    );

    // Oversized response: a header claiming almost 2 GiB is refused before allocating.
    let p = fake_server(
        &e,
        "127.0.0.1",
        Some(vec![0x42, 0x00, 0x7B, 0x01, 0x7F, 0xFF, 0xFF, 0xF0]),
        false,
    );
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{p}\""),
        &ca,
        "client",
        3000,
    );
    check(
        "oversized response",
        &rekey(&cfg, &to(&k2)),
        &["larger than the 1048576-byte limit"],
    );

    // Garbage that is not TTLV at all.
    let p = fake_server(
        &e,
        "127.0.0.1",
        Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        false,
    );
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"127.0.0.1:{p}\""),
        &ca,
        "client",
        3000,
    );
    check("not KMIP", &rekey(&cfg, &to(&k2)), &["invalid response"]);
}

#[test]
fn destroyed_old_key_names_the_sstables_and_writes_nothing() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, h1) = e.create(128);
    let (k2, _) = e.create(128);
    let data = e.encrypted(tmp.path(), &k1, &h1, 128);
    let before = tree(&data);
    e.admin(&["revoke", &k1]);
    e.admin(&["destroy", &k1]);
    let o = tool(&[
        "rekey",
        "--to",
        &format!("kmip://{GROUP}/{k2}"),
        "--data-dir",
        s(&data),
        "--kmip-config",
        s(&e.toml()),
    ]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("nothing was written"), "{}", o.all());
    assert!(o.stderr.contains("nb-1-big-Data.db"), "{}", o.all());
    assert!(
        o.stderr.contains(&format!("KMIP key {k1} does not exist")),
        "{}",
        o.all()
    );
    assert!(!o.all().contains(&h1));
    assert_eq!(tree(&data), before);

    // With a backup of the key in a keyring, the rekey goes ahead (and says so).
    let ring = tmp.path().join("ring");
    let b64 = {
        use base64::Engine;
        let raw: Vec<u8> = (0..h1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h1[i..i + 2], 16).unwrap())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    std::fs::write(&ring, format!("{k1}:{b64}\n")).unwrap();
    std::fs::set_permissions(&ring, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = tool(&[
        "rekey",
        "--to",
        &format!("kmip://{GROUP}/{k2}"),
        "-q",
        "--data-dir",
        s(&data),
        "--kmip-config",
        s(&e.toml()),
        "--keyring",
        s(&ring),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr.contains("using the copy in keyring"),
        "{}",
        o.all()
    );
}

/// A KMIP key is its group and its id: a table whose kmip_host names a group the configuration
/// does not have is not read from another group's server (exit 2, nothing written), verify tells
/// the groups apart, and `kmip destroy` refuses while the same id is used under another group
/// name (which may be this server under another name).
#[test]
fn a_kmip_key_is_its_group_and_its_id() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, h1) = e.create(128);
    let (k2, _) = e.create(128);
    let data = e.encrypted(tmp.path(), &k1, &h1, 128);
    let toml = e.toml();
    let cfg = ["--kmip-config", s(&toml)];
    let dd = ["--data-dir", s(&data)];
    let ci_path = data.join(TABLE).join("nb-1-big-CompressionInfo.db");
    let mut ci = Ci::read(&ci_path).unwrap();
    for (k, v) in ci.options.iter_mut() {
        if k == "kmip_host" {
            assert_eq!(v, GROUP);
            *v = "elsewhere".into();
        }
    }
    std::fs::write(&ci_path, ci.serialize()).unwrap();
    let before = tree(&data);
    let o = tool(
        &[
            &["rekey", "-q", "--to", &format!("kmip://{GROUP}/{k2}")][..],
            &dd,
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stderr.contains(&format!("kmip://elsewhere/{k1}"))
            && o.stderr.contains("\"elsewhere\" is not in"),
        "{}",
        o.all()
    );
    assert!(!o.all().contains(&h1));
    assert_eq!(tree(&data), before);

    let o = tool(
        &[
            &["verify", "--key", &format!("kmip://{GROUP}/{k1}")][..],
            &dd,
            &cfg,
        ]
        .concat(),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains(&format!("kmip://elsewhere/{k1}")),
        "{}",
        o.all()
    );

    let o = tool(&[&["kmip", "revoke", GROUP, &k1][..], &cfg].concat());
    assert_eq!(o.code, 0, "{}", o.all());
    let o = tool(&[&["kmip", "destroy", GROUP, &k1][..], &dd, &cfg].concat());
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains("same id")
            && o.stdout
                .contains(&format!("21 records under kmip://elsewhere/{k1}")),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");
    assert_eq!(tree(&data), before);
}

#[test]
fn active_resolves_by_locate_and_create_key_makes_one() {
    let Some(e) = env() else { return };
    // The ScyllaDB `active` tests (scylla_rekey.rs) use 192-bit keys too: one at a time.
    let _one = crate::support::kmip::active_192_lock();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = e.toml();
    // Only the tests holding that lock use 192-bit keys: retire any Active ones a previous run left.
    let listed = json(&tool(&[
        "kmip",
        "list",
        GROUP,
        "--json",
        "--kmip-config",
        s(&cfg),
    ]));
    for r in listed.as_array().unwrap() {
        if r["cipher"] == "AES-192" && r["state"] == "Active" {
            let id = r["id"].as_str().unwrap();
            let o = tool(&[
                "kmip",
                "revoke",
                GROUP,
                id,
                "--reason",
                "superseded",
                "--kmip-config",
                s(&cfg),
            ]);
            assert_eq!(o.code, 0, "{}", o.all());
        }
    }
    let (k1, h1) = e.create(192);
    let data = e.encrypted(tmp.path(), &k1, &h1, 192);
    let before = tree(&data);
    // Superseded: the old key is Deactivated (and still decrypts).
    let o = tool(&[
        "kmip",
        "revoke",
        GROUP,
        &k1,
        "--reason",
        "superseded",
        "--kmip-config",
        s(&cfg),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let active = format!("kmip://{GROUP}/active");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "rekey",
            "--to",
            &active,
            "-q",
            "--data-dir",
            s(&data),
            "--kmip-config",
            s(&cfg),
        ];
        v.extend_from_slice(extra);
        v.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run_args = |a: Vec<String>| run(Command::new(env!("CARGO_BIN_EXE_sstable-rekey")).args(a));
    let o = run_args(args(&[]));
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("no Active AES-192 key"), "{}", o.all());
    assert_eq!(tree(&data), before);

    let o = run_args(args(&["--create-key"]));
    assert_eq!(o.code, 0, "{}", o.all());
    let id = o
        .stderr
        .split(&format!("created and activated KMIP key {GROUP}/"))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", o.all()))
        .to_string();
    assert_eq!(e.state(&id), "ACTIVE");
    let key = e.admin(&["key", &id])["key_hex"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(key.len(), 48);
    let new = data.join(TABLE).join("nb-2-big-Data.db");
    let v = e.oracle(&["verify", s(&new), "--key", &format!("{id}:{key}")]);
    assert_eq!(v["plaintext_sha256"].as_str().unwrap(), e.plain_digest());

    // Now `active` finds that key (Locate), without creating another.
    let o = run_args(args(&["--dry-run"]));
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(
        o.stderr
            .contains(&format!("kmip://{GROUP}/active is key {id}")),
        "{}",
        o.all()
    );
}

#[test]
fn rsa_client_keys_and_tls_1_2_work_too() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // PyKMIP speaks TLS 1.2 only; this client key is RSA (PKCS#8 PEM), the usual one ECDSA (SEC1).
    let cfg = config(
        &e,
        tmp.path(),
        &format!("\"localhost:{}\"", port(&e)),
        &e.certs().join("ca.crt"),
        "rsa-client",
        3000,
    );
    let name = format!(
        "rsa-{}-{}",
        std::process::id(),
        crc32fast::hash(s(tmp.path()).as_bytes())
    );
    let o = tool(&[
        "kmip",
        "create",
        GROUP,
        "--bits",
        "256",
        "--name",
        &name,
        "--kmip-config",
        s(&cfg),
    ]);
    assert_eq!(o.code, 0, "{}", o.all());
    let id = o
        .stdout
        .trim()
        .trim_start_matches(&format!("created kmip://{GROUP}/"))
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(e.state(&id), "ACTIVE");
    let listed = json(&tool(&[
        "kmip",
        "list",
        GROUP,
        "--json",
        "--kmip-config",
        s(&cfg),
    ]));
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (row["cipher"].as_str(), row["name"].as_str()),
        (Some("AES-256"), Some(name.as_str()))
    );
    // Locate by Name.
    let named = json(&tool(&[
        "kmip",
        "list",
        GROUP,
        "--json",
        "--name",
        &name,
        "--kmip-config",
        s(&cfg),
    ]));
    let ids: Vec<&str> = named
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
}

#[test]
fn scylla_and_dse_yaml_reach_the_server() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let c = e.certs();
    let scylla = tmp.path().join("scylla.yaml");
    std::fs::write(
        &scylla,
        format!(
            "cluster_name: test\nkmip_hosts:\n  {GROUP}:\n    hosts: 127.0.0.1:1, 127.0.0.1:{}\n    certificate: {}\n    keyfile: {}\n    truststore: {}\n",
            port(&e),
            s(&c.join("client.crt")),
            s(&c.join("client.key")),
            s(&c.join("ca.crt"))
        ),
    )
    .unwrap();
    let o = tool(&["kmip", "list", GROUP, "--scylla-yaml", s(&scylla)]);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.starts_with("ID  "), "{}", o.all());

    // dse.yaml with PEM stores works as it is; JKS ones get the conversion commands.
    let dse = tmp.path().join("dse.yaml");
    let yaml = |kind: &str| {
        format!(
            "kmip_hosts:\n  {GROUP}:\n    hosts: 127.0.0.1:{}\n    keystore_path: {}\n    keyfile: {}\n    keystore_type: {kind}\n    keystore_password: hunter2\n    truststore_path: {}\n    truststore_type: {kind}\n    timeout: 2000\n",
            port(&e),
            s(&c.join("client.crt")),
            s(&c.join("client.key")),
            s(&c.join("ca.crt"))
        )
    };
    std::fs::write(&dse, yaml("PEM")).unwrap();
    let o = tool(&["kmip", "list", GROUP, "--dse-yaml", s(&dse)]);
    assert_eq!(o.code, 0, "{}", o.all());
    std::fs::write(&dse, yaml("JKS")).unwrap();
    let o = tool(&["kmip", "list", GROUP, "--dse-yaml", s(&dse)]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(o.stderr.contains("keytool -importkeystore"), "{}", o.all());
    assert!(!o.all().contains("hunter2"), "password echoed: {}", o.all());
}

/// With `--scylla-yaml`, `kmip destroy` also looks at the node's commit log and hints folders
/// (FORMAT.md 4.10): a hints file whose side file names the key keeps it alive until it is gone.
#[test]
fn destroy_refuses_while_a_scylla_segment_names_the_key() {
    use base64::Engine;
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let c = e.certs();
    let (k1, _) = e.create(128);
    let (k2, h2) = e.create(128);
    e.admin(&["revoke", &k1]);
    // The node's SSTables are all under K2.
    let data = e.encrypted(&tmp.path().join("data"), &k2, &h2, 128);
    let node = tmp.path().join("node");
    let host = node.join("hints/7d2b1c3e-0b8a-4d59-a3f1-2e6c9b8d4f10");
    for d in [
        node.join("commitlog"),
        node.join("view_hints"),
        host.clone(),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    let scylla = tmp.path().join("scylla.yaml");
    std::fs::write(
        &scylla,
        format!(
            "workdir: {}\nkmip_hosts:\n  {GROUP}:\n    hosts: 127.0.0.1:{}\n    certificate: {}\n    keyfile: {}\n    truststore: {}\n",
            s(&node),
            port(&e),
            s(&c.join("client.crt")),
            s(&c.join("client.key")),
            s(&c.join("ca.crt"))
        ),
    )
    .unwrap();
    // The side file: options, key_id = the id's bytes + 01 (not a UUID), the end mark.
    let mut id = k1.as_bytes().to_vec();
    id.push(1);
    let seg = host.join("HintsLog-2-1.log");
    std::fs::write(&seg, [0u8; 64]).unwrap();
    std::fs::write(
        host.join(".HintsLog-2-1.log"),
        format!(
            "key_provider=KmipKeyProviderFactory\nkmip_host={GROUP}\nsecret_key_strength=128\nkey_id={}\n#-- end of file\n",
            base64::engine::general_purpose::STANDARD.encode(&id)
        ),
    )
    .unwrap();
    let destroy = || {
        tool(&[
            "kmip",
            "destroy",
            GROUP,
            &k1,
            "--data-dir",
            s(&data),
            "--scylla-yaml",
            s(&scylla),
        ])
    };
    let o = destroy();
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains("refusing to destroy") && o.stdout.contains(s(&seg)),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");
    // Replayed: the segment and its side file are gone.
    std::fs::remove_file(&seg).unwrap();
    std::fs::remove_file(host.join(".HintsLog-2-1.log")).unwrap();
    let o = destroy();
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.stdout.contains("destroyed"), "{}", o.all());
}

/// `kmip destroy`'s in-use check must look wherever the node keeps SSTables (issue 10, items 2
/// and 8): a pre-2.1 table folder `<ks>/<table>/`, a `snapshots/` folder that is a symbolic link
/// to another disk, and a data directory of the node's cassandra.yaml that `--data-dir` leaves
/// out. Each holds an SSTable under K1, so each run must refuse, and K1 must survive them all.
/// (Before the fix the first destroy went ahead: the pre-2.1 table was invisible.)
#[test]
fn destroy_refuses_while_the_node_keeps_sstables_under_the_key_anywhere() {
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, h1) = e.create(128);
    let (k2, h2) = e.create(128);
    e.admin(&["revoke", &k1]);
    let toml = e.toml();
    let cfg = ["--kmip-config", s(&toml)];
    let destroy = |extra: &[&str], conf: Option<&Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sstable-rekey"));
        c.args(["kmip", "destroy", GROUP, &k1])
            .args(extra)
            .args(cfg);
        for v in ["CASSANDRA_CONF", "CASSANDRA_HOME", "DSE_HOME", "HCD_HOME"] {
            c.env_remove(v);
        }
        if let Some(conf) = conf {
            c.env("CASSANDRA_CONF", conf);
        }
        run(&mut c)
    };

    // 1. A pre-2.1 table folder `ks/tbl/` under K1, beside `ks/tbl-<id>/` under K2 (Cassandra
    // reads the first).
    let legacy = e.encrypted(&tmp.path().join("legacy"), &k1, &h1, 128);
    std::fs::rename(legacy.join(TABLE), legacy.join("ks/tbl")).unwrap();
    let k2_table = e.encrypted(&tmp.path().join("k2"), &k2, &h2, 128);
    std::fs::rename(k2_table.join(TABLE), legacy.join(TABLE)).unwrap();
    let o = destroy(&["--data-dir", s(&legacy)], None);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stdout.contains("refusing to destroy"), "{}", o.all());
    assert!(
        o.stdout
            .contains(s(&legacy.join("ks/tbl/nb-1-big-Data.db"))),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");

    // 2. Live data under K2, its snapshots/ a link to another disk holding a K1 snapshot.
    let live = e.encrypted(&tmp.path().join("live"), &k2, &h2, 128);
    let other = e.encrypted(&tmp.path().join("other"), &k1, &h1, 128);
    let store = tmp.path().join("snapshot-disk");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::rename(other.join(TABLE), store.join("before-rekey")).unwrap();
    std::os::unix::fs::symlink(&store, live.join(TABLE).join("snapshots")).unwrap();
    let o = destroy(&["--data-dir", s(&live)], None);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout.contains("snapshot/backup") && o.stdout.contains("before-rekey"),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");
    std::fs::remove_file(live.join(TABLE).join("snapshots")).unwrap();

    // 3. A JBOD node: cassandra.yaml lists `live` (all K2) and `legacy` (K1); --data-dir names
    // only the first. Without --data-dir, the file's directories are all checked.
    let conf = tmp.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("cassandra.yaml"),
        format!(
            "data_file_directories:\n    - {}\n    - {}\n",
            live.display(),
            legacy.display()
        ),
    )
    .unwrap();
    let o = destroy(&["--data-dir", s(&live)], Some(&conf));
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.stdout.contains("refusing to destroy"), "{}", o.all());
    assert!(o.stdout.contains(s(&legacy)), "{}", o.all());
    let o = destroy(&[], Some(&conf));
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.stdout
            .contains(s(&legacy.join("ks/tbl/nb-1-big-Data.db"))),
        "{}",
        o.all()
    );
    assert_eq!(e.state(&k1), "COMPROMISED");

    // With only K2's data left on the node, K1 is destroyed.
    std::fs::remove_dir_all(legacy.join("ks/tbl")).unwrap();
    let o = destroy(&[], Some(&conf));
    assert_eq!(o.code, 0, "{}", o.all());
}

/// A TLS proxy in front of the test server that counts the requests it forwards and, when
/// `strip`, removes the Batch Error Continuation Option from each, so that the real server
/// applies KMIP's default (Stop: no answers after a batch's first failed item). Returns its port
/// and the count.
fn counting_proxy(e: &Env, strip: bool) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use sstable_rekey::keys::kmip::tag;
    use sstable_rekey::keys::kmip::ttlv::{Item, Value as Ttlv};
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let certs = |name: &str| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(e.certs().join(name))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let key = |name: &str| PrivateKeyDer::from_pem_file(e.certs().join(name)).unwrap();
    let server = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs("server.crt"), key("server.key"))
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs("ca.crt"));
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs("client.crt"), key("client.key"))
            .unwrap(),
    );
    let upstream = format!("127.0.0.1:{}", port(e));
    let forwarded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = forwarded.clone();
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let read_message = |s: &mut dyn Read| -> Option<Vec<u8>> {
        let mut m = vec![0u8; 8];
        s.read_exact(&mut m).ok()?;
        let n = u32::from_be_bytes([m[4], m[5], m[6], m[7]]) as usize;
        m.resize(8 + n.min(1 << 20), 0);
        s.read_exact(&mut m[8..]).ok()?;
        Some(m)
    };
    std::thread::spawn(move || {
        for sock in l.incoming().take(8) {
            let Ok(sock) = sock else { return };
            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
            let conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut down = rustls::StreamOwned::new(conn, sock);
            let up_sock = std::net::TcpStream::connect(&upstream).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
            let mut up = rustls::StreamOwned::new(conn, up_sock);
            while let Some(req) = read_message(&mut down) {
                let mut msg = Item::decode(&req).unwrap();
                if let (true, Ttlv::Structure(items)) = (strip, &mut msg.value) {
                    if let Ttlv::Structure(h) = &mut items[0].value {
                        h.retain(|i| i.tag != tag::BATCH_ERROR_CONTINUATION_OPTION);
                    }
                }
                up.write_all(&msg.encode()).unwrap();
                up.flush().unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(resp) = read_message(&mut up) else {
                    break;
                };
                down.write_all(&resp).unwrap();
                down.flush().unwrap();
            }
        }
    });
    (port, forwarded)
}

#[test]
fn a_key_gone_between_locate_and_get_attributes_hides_no_other() {
    // CI once failed here: `kmip list` sent Get Attributes for a group's keys in one batch while
    // another test destroyed one of them; PyKMIP stopped at that item, and the list failed with
    // "no answer for batch item 9". Every item must be answered, from any KMIP server.
    let Some(e) = env() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (k1, _) = e.create(128);
    let (k2, _) = e.create(256);
    let ids = [k1.clone(), "no-such-key".to_string(), k2.clone()];
    let ca = e.certs().join("ca.crt");
    // Through a transparent proxy the server answers all three in one request (it honours
    // Continue); through one that strips the option it stops at the missing key, and the
    // client asks again for the unanswered item.
    for (strip, requests) in [(false, 1), (true, 2)] {
        let (proxy, forwarded) = counting_proxy(&e, strip);
        let cfg = config(
            &e,
            tmp.path(),
            &format!("\"localhost:{proxy}\""),
            &ca,
            "client",
            3000,
        );
        let kc = sstable_rekey::keys::kmip::KmipConfig::from_toml_file(&cfg).unwrap();
        let mut c = sstable_rekey::keys::kmip::Client::new(kc.group(GROUP).unwrap()).unwrap();
        let got = c.attributes(&ids).unwrap();
        assert_eq!(got.len(), 3);
        let a = got[0].as_ref().unwrap();
        assert_eq!((a.id.as_str(), a.length), (k1.as_str(), Some(128)));
        let err = got[1].as_ref().unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let a = got[2].as_ref().unwrap();
        assert_eq!((a.id.as_str(), a.length), (k2.as_str(), Some(256)));
        assert_eq!(
            forwarded.load(std::sync::atomic::Ordering::SeqCst),
            requests,
            "strip={strip}"
        );
    }
}
