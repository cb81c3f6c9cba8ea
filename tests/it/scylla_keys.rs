//! ScyllaDB local key files (FORMAT.md 4.4) read by `keys::scylla_keyfile`, against the
//! independent `read_key_file` of ../shared/oracle/scylla_oracle.py on random files: the same keys
//! for every (cipher, strength), and the same files refused. The files mix valid lines, repeated
//! ciphers, other ciphers, odd strengths, damaged base64 and surrounding text, because ScyllaDB
//! reads a key file by a pattern scan in which one bad line fails the whole file.

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use sstable_rekey::keys::scylla_keyfile::ScyllaKeyFile;

use crate::support::oracle::{python, shared};
use crate::support::{fast_tempdir, seed_from_env, Rng};

/// Reads every file named on stdin (a JSON list) with the oracle's `read_key_file`; prints, per
/// file, `{"keys": {"CIPHER:STRENGTH": hex}}` or `{"refused": why}`.
const DRIVER: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import scylla_oracle as o
out = []
for path in json.load(sys.stdin):
    try:
        keys = o.read_key_file(path)
        out.append({"keys": {f"{a}:{s}": k.hex() for (a, s), k in keys.items()}})
    except (o.OracleError, o.UsageError) as e:
        out.append({"refused": str(e)})
print(json.dumps(out))
"#;

const CIPHERS: [&str; 9] = [
    "AES/CBC/PKCS5Padding",
    "AES/ECB/PKCS5Padding",
    "AES/CBC/PKCS5Padding",
    "aes/cbc/pkcs5padding",
    "AES",
    "AES/ECB",
    "AES/CBC/NoPadding",
    "AES/CTR/PKCS5Padding",
    "DES/CBC/PKCS5Padding",
];
const STRENGTHS: [&str; 8] = ["128", "192", "256", "128", "0256", "99", "4294967424", "0"];
const SEPARATORS: [&str; 6] = ["\n", "\n", " ", "\r\n", "\n# note: ", "\t::"];

/// One random key-file text.
fn random_file(rng: &mut Rng) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut text = Vec::new();
    for _ in 0..1 + rng.below(4) {
        // Mostly lines ScyllaDB takes (one bad line fails the whole file).
        let good = rng.below(5) > 0;
        let pick = |rng: &mut Rng, n: usize, all: usize| {
            rng.below(if good { n } else { all } as u64) as usize
        };
        let cipher = CIPHERS[pick(rng, 6, CIPHERS.len())];
        let strength = STRENGTHS[pick(rng, 5, STRENGTHS.len())];
        let mut key = vec![0u8; [32, 40, 16, 24, 8, 17][pick(rng, 2, 6)]];
        rng.fill(&mut key);
        let mut enc = b64.encode(&key);
        match if good { 7 } else { rng.below(8) } {
            0 => {
                enc.pop();
            }
            1 => enc.insert(2, '='),
            2 => enc.replace_range(0..1, "*"),
            _ => {}
        }
        text.extend_from_slice(format!("{cipher}:{strength}:{enc}").as_bytes());
        text.extend_from_slice(SEPARATORS[rng.below(SEPARATORS.len() as u64) as usize].as_bytes());
    }
    text
}

#[test]
fn key_files_read_as_the_oracle_reads_them() {
    let Some(shared) = shared() else { return };
    let seed = seed_from_env("SCYLLA_KEYS_SEED");
    let mut rng = Rng(seed);
    let dir = fast_tempdir();
    let n = 400;
    let files: Vec<String> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("k{i}"));
            fs::write(&p, random_file(&mut rng)).unwrap();
            p.display().to_string()
        })
        .collect();
    let mut child = Command::new(python())
        .arg("-c")
        .arg(DRIVER)
        .arg(shared.join("oracle"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    serde_json::to_writer(child.stdin.take().unwrap(), &files).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the oracle driver failed");
    let verdicts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let (mut read, mut refused, mut mismatches) = (0, 0, Vec::new());
    for (path, v) in files.iter().zip(&verdicts) {
        let text = fs::read(path).unwrap();
        let ours = ScyllaKeyFile::parse(&text, std::path::Path::new(path));
        let theirs: Option<BTreeMap<String, String>> = v
            .get("keys")
            .map(|k| serde_json::from_value(k.clone()).unwrap());
        let agree = match (&ours, &theirs) {
            (Ok(f), Some(keys)) => {
                read += 1;
                let mine: BTreeMap<String, String> = f
                    .ciphers()
                    .into_iter()
                    .map(|(a, s)| {
                        let k = f.get(&a, s).unwrap();
                        (format!("{a}:{s}"), crate::support::hex(k.expose()))
                    })
                    .collect();
                &mine == keys
            }
            (Err(_), None) => {
                refused += 1;
                true
            }
            _ => false,
        };
        if !agree {
            mismatches.push(format!(
                "{:?}\n  ours: {:?}\n  oracle: {v}",
                String::from_utf8_lossy(&text),
                ours.map(|f| f.ciphers()).map_err(|e| e.to_string())
            ));
        }
    }
    println!("scylla key files: {n} random files (seed {seed}): {read} read alike, {refused} refused by both");
    assert!(
        read > 40 && refused > 40,
        "both outcomes exercised: {read} read, {refused} refused"
    );
    assert!(
        mismatches.is_empty(),
        "seed {seed}:\n{}",
        mismatches.join("\n")
    );
}
