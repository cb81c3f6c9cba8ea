//! Bad ScyllaDB input refused clearly, per SSTable, with its files untouched (FORMAT.md 4.5–4.8):
//! a damaged or truncated Scylla.db, a bad trailing CRC, forbidden mask bits, the replicated and
//! cloud key providers, a cipher other than AES CBC/ECB, KMIP options without kmip_host, a key
//! file without the line, and a wrong key under the right name. Each case: a copy of one table,
//! one SSTable damaged; `rekey` exits 1 naming that SSTable and the reason; the damaged SSTable's
//! files are byte-identical afterwards; the table's other SSTables are rekeyed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::support::{edit_scylla_db, strings, tree_strict, Scratch};

const TABLE: &str = "t_local_CBC_128";

fn table_dir(env: &Scratch) -> PathBuf {
    crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), TABLE)
}

/// The files of generation `prefix` in `dir`: name → SHA-256.
fn files_of(dir: &Path, prefix: &str) -> BTreeMap<String, String> {
    tree_strict(dir)
        .into_iter()
        .filter(|(p, _)| p.starts_with(prefix))
        .collect()
}

/// Damages `me-1-big-` with `damage`, rekeys the table; checks the refusal and returns the output.
fn refused(damage: impl FnOnce(&Scratch, &Path), reason: &str) {
    let env = Scratch::of(&["scylla", "keys"]);
    let dir = table_dir(&env);
    damage(&env, &dir);
    let before = files_of(&dir, "me-1-big-");
    let report = env.tmp.path().join("r.json");
    let mut args = strings(&["rekey", "-q", "--to"]);
    args.push(format!("file:{}", env.s("keys/new.key")));
    args.extend(strings(&[
        "--data-dir",
        &env.s("scylla/data"),
        "--report",
        &report.display().to_string(),
        "scylla_matrix",
        TABLE,
    ]));
    let r = env.run(&args);
    assert_eq!(r.code, 1, "{reason}: {}", r.all());
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let mut failed = 0;
    for s in rep["sstables"].as_array().unwrap() {
        let old = s["old"].as_str().unwrap();
        if old.ends_with("me-1-big-Data.db") {
            assert_eq!(s["status"], "failed", "{reason}: {s}");
            let why = s["reason"].as_str().unwrap();
            assert!(why.contains(reason), "{reason}: {why}");
            assert!(why.contains("me-1-big-"), "the error names the file: {why}");
            failed += 1;
        } else {
            assert_eq!(s["status"], "rekeyed", "{reason}: {s}");
        }
    }
    assert_eq!(failed, 1, "{reason}");
    assert_eq!(
        files_of(&dir, "me-1-big-"),
        before,
        "{reason}: the files changed"
    );
    assert!(
        !env.p("scylla/data/.sstable-rekey-scylla").exists(),
        "{reason}: a journal is left"
    );
}

fn scylla_db(dir: &Path) -> PathBuf {
    dir.join("me-1-big-Scylla.db")
}

#[test]
fn damaged_scylla_db_files_are_refused() {
    refused(
        |_, d| {
            let b = fs::read(scylla_db(d)).unwrap();
            fs::write(scylla_db(d), &b[..b.len() / 2]).unwrap();
        },
        "Scylla.db",
    );
    // me-1 has the 2026.2 layout (trailing CRC): one flipped byte in an entry.
    refused(
        |_, d| {
            let mut b = fs::read(scylla_db(d)).unwrap();
            let n = b.len();
            b[n - 9] ^= 0x40;
            fs::write(scylla_db(d), b).unwrap();
        },
        "CRC",
    );
    refused(
        |_, d| {
            edit_scylla_db(&scylla_db(d), |_, attrs| {
                for (k, v) in attrs.iter_mut() {
                    if k.as_slice() == b"encrypted_components" {
                        *v = (0x1B3u32 | 1 << 9).to_le_bytes().to_vec();
                    }
                }
            })
        },
        "bit",
    );
}

#[test]
fn providers_and_ciphers_this_tool_does_not_handle_are_refused_by_name() {
    for (provider, reason) in [
        ("ReplicatedKeyProviderFactory", "replicated"),
        ("KmsKeyProviderFactory", "AWS KMS"),
        ("GcpKeyProviderFactory", "GCP"),
        ("AzureKeyProviderFactory", "Azure"),
    ] {
        refused(
            |_, d| {
                edit_scylla_db(&scylla_db(d), |opts, _| {
                    opts.retain(|(k, _)| k != "key_provider");
                    opts.push(("key_provider".into(), provider.into()));
                })
            },
            reason,
        );
    }
    refused(
        |_, d| {
            edit_scylla_db(&scylla_db(d), |opts, _| {
                for (k, v) in opts.iter_mut() {
                    if k == "cipher_algorithm" {
                        *v = "AES/CTR/PKCS5Padding".into();
                    }
                }
            })
        },
        "CTR",
    );
    refused(
        |_, d| {
            edit_scylla_db(&scylla_db(d), |opts, _| {
                opts.retain(|(k, _)| k != "key_provider" && k != "secret_key_file");
                opts.push(("key_provider".into(), "KmipKeyProviderFactory".into()));
            })
        },
        "kmip_host",
    );
}

#[test]
fn a_missing_key_line_and_a_wrong_key_are_refused() {
    // The SSTable names a key file that has no line for its cipher and strength.
    refused(
        |env, d| {
            let f = env.p("keys/empty.key");
            fs::write(&f, "").unwrap();
            crate::support::chmod(&f, 0o600);
            let name = f.display().to_string();
            edit_scylla_db(&scylla_db(d), |opts, _| {
                for (k, v) in opts.iter_mut() {
                    if k == "secret_key_file" {
                        *v = name.clone();
                    }
                }
            })
        },
        "line",
    );
    // The SSTable names a key file holding the target's very bytes: nothing would change.
    refused(
        |env, d| {
            let f = env.p("keys/same.key");
            fs::copy(env.p("keys/new.key"), &f).unwrap();
            crate::support::chmod(&f, 0o600);
            let name = f.display().to_string();
            edit_scylla_db(&scylla_db(d), |opts, _| {
                for (k, v) in opts.iter_mut() {
                    if k == "secret_key_file" {
                        *v = name.clone();
                    }
                }
            })
        },
        "same key bytes",
    );
    // Another key file whose line has other bytes: a wrong key, found on the plaintext.
    refused(
        |env, d| {
            let f = env.p("keys/other.key");
            let line = format!(
                "AES/CBC/PKCS5Padding:128:{}\n",
                base64::engine::general_purpose::STANDARD.encode([0x5a; 16])
            );
            fs::write(&f, line).unwrap();
            crate::support::chmod(&f, 0o600);
            let name = f.display().to_string();
            edit_scylla_db(&scylla_db(d), |opts, _| {
                for (k, v) in opts.iter_mut() {
                    if k == "secret_key_file" {
                        *v = name.clone();
                    }
                }
            })
        },
        "wrong key",
    );
}
