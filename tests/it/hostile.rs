//! Hostile input: every truncation and every single-byte mutation (each of the 8 one-bit flips and
//! the 0xFF flip of every byte) of real files, and proptest random input, fed to every parser of
//! the crate: no panic, a typed error, no allocation beyond what the input can justify. Then the
//! CLI `inspect` over mutated SSTables, the transaction-log reader against the independent model
//! of Cassandra's startup rule, and the path rules (folders writable by others, symbolic links,
//! logs naming files outside the data directory, new files' mode and owner).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::alloc::largest_of;
use crate::support::cassandra::{cassandra_startup, make_record, Kind, Startup};
use crate::support::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

use sstable_rekey::crypto::envelope::{ClassKind, ProviderKind};
use sstable_rekey::crypto::{ChunkClass, CipherSpec, Envelope, KeyHeader};
use sstable_rekey::keys::keyfile::KeyFile;
use sstable_rekey::keys::keyring::Keyring;
use sstable_rekey::sstable::txnlog::{read_log, recover_log, Record};
use sstable_rekey::sstable::{pages, statistics, toc, CompressionInfo, Descriptor};
use sstable_rekey::Error;

// ------------------------------------------------------------------ allocation bound

/// No parser input here exceeds 64 KiB; a parser trusting a hostile length would ask for more.
const ALLOCATION_BOUND: usize = 16 << 20;

// ------------------------------------------------------------------ mutation harness

/// Every truncation, and every byte with each of its bits flipped and with all of them flipped.
fn mutations(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len() * 10);
    for n in 0..b.len() {
        out.push(b[..n].to_vec());
    }
    for i in 0..b.len() {
        for m in (0..8).map(|k| 1u8 << k).chain([0xFF]) {
            let mut v = b.to_vec();
            v[i] ^= m;
            out.push(v);
        }
    }
    out
}

#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    ok: usize,
    errors: usize,
    panics: Vec<String>,
    bad_errors: Vec<String>,
    largest_alloc: usize,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.cases += o.cases;
        self.ok += o.ok;
        self.errors += o.errors;
        self.panics.extend(o.panics);
        self.bad_errors.extend(o.bad_errors);
        self.largest_alloc = self.largest_alloc.max(o.largest_alloc);
    }
}

/// Runs `f` on every input, catching panics. `f` returns Ok(true) for a parse, Ok(false) for a
/// proper error, Err(why) for an error of the wrong kind.
fn feed(name: &str, inputs: &[Vec<u8>], f: impl Fn(&[u8]) -> Result<bool, String>) -> Tally {
    let mut t = Tally::default();
    let ((), largest) = largest_of(|| {
        for (i, input) in inputs.iter().enumerate() {
            t.cases += 1;
            match catch_unwind(AssertUnwindSafe(|| f(input))) {
                Ok(Ok(true)) => t.ok += 1,
                Ok(Ok(false)) => t.errors += 1,
                Ok(Err(why)) => t.bad_errors.push(format!("{name} case {i}: {why}")),
                Err(p) => t.panics.push(format!(
                    "{name} case {i} ({} bytes): {}",
                    input.len(),
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        }
    });
    t.largest_alloc = largest;
    t
}

/// An error of the crate: `Corrupt` (or `want`) naming `path`.
fn typed(r: Result<(), Error>, path: &Path, want: fn(&Error) -> bool) -> Result<bool, String> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if want(&e) && e.to_string().contains(&path.display().to_string()) => Ok(false),
        Err(e) => Err(format!("unexpected error {e:?}")),
    }
}

fn corrupt(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. })
}

fn report(what: &str, t: &Tally) {
    println!(
        "{what}: {} cases, {} parsed, {} typed errors, {} panics, {} wrong errors, largest allocation {} bytes",
        t.cases,
        t.ok,
        t.errors,
        t.panics.len(),
        t.bad_errors.len(),
        t.largest_alloc
    );
}

fn assert_clean(what: &str, t: &Tally) {
    assert!(
        t.panics.is_empty(),
        "{what}: panics: {:#?}",
        &t.panics[..t.panics.len().min(10)]
    );
    assert!(
        t.bad_errors.is_empty(),
        "{what}: wrong errors: {:#?}",
        &t.bad_errors[..t.bad_errors.len().min(10)]
    );
    assert!(
        t.largest_alloc < ALLOCATION_BOUND,
        "{what}: allocation of {} bytes",
        t.largest_alloc
    );
}

fn td(rel: &str) -> PathBuf {
    testdata().join(rel)
}

/// The testdata folder of the first manifest SSTable whose Data.db path starts with `prefix`.
fn sstable(prefix: &str) -> PathBuf {
    let e = manifest()
        .iter()
        .find(|e| e["data"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no SSTable {prefix}"));
    td(e["data"].as_str().unwrap())
}

fn component(data: &Path, c: &str) -> PathBuf {
    PathBuf::from(data.to_str().unwrap().replace("Data.db", c))
}

// ------------------------------------------------------------------ real files, mutated

fn fuzz_compression_info(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let mut all = Tally::default();
    for p in [
        "dd1/matrix/t_Encryptor_kmip_CBC_128",
        "dd1/edge/t_mc",
        "dd1/edge/t_bti",
        "dd1/edge/t_raw-",
        "dd3/bti/t_bb_kmip_CBC_128",
    ] {
        let data = sstable(p);
        let ci = component(&data, "CompressionInfo.db");
        let (v, f) = name_parts(&data);
        let with_max = f == "bti" || v.as_str() >= "na";
        let len = fs::metadata(&data).unwrap().len();
        let t = feed(
            "CompressionInfo.db",
            &inputs_of(&fs::read(&ci).unwrap()),
            |b| {
                // As its version reads it (offsets bounded by the Data.db length), and with
                // the other maxCompressedLength rule; the count is of the first.
                let a = CompressionInfo::parse(b, with_max, Some(len), &ci).map(|_| ());
                let b2 = CompressionInfo::parse(b, !with_max, None, &ci).map(|_| ());
                typed(b2, &ci, corrupt)?;
                typed(a, &ci, corrupt)
            },
        );
        all.merge(t);
    }
    all
}

fn fuzz_statistics(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let mut all = Tally::default();
    for p in [
        "dd1/matrix/t_Encryptor_kmip_CBC_128",
        "dd3/bti/t_bb_kmip_CBC_128",
    ] {
        let s = component(&sstable(p), "Statistics.db");
        all.merge(feed(
            "Statistics.db",
            &inputs_of(&fs::read(&s).unwrap()),
            |b| typed(statistics::split(b, &s).map(|_| ()), &s, corrupt),
        ));
    }
    all
}

/// A parser reading a path: each input written to a scratch file first.
fn fuzz_file(
    name: &str,
    scratch: &Path,
    inputs: &[Vec<u8>],
    f: impl Fn(&Path) -> Result<bool, String>,
) -> Tally {
    let p = scratch.join(name);
    feed(name, inputs, |b| {
        fs::write(&p, b).unwrap();
        f(&p)
    })
}

fn fuzz_toc(scratch: &Path, inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let toc_file = component(&sstable("dd1/matrix/t_Encryptor_kmip_CBC_128"), "TOC.txt");
    fuzz_file(
        "nb-1-big-TOC.txt",
        scratch,
        &inputs_of(&fs::read(toc_file).unwrap()),
        |p| typed(toc::read(p).map(|_| ()), p, corrupt),
    )
}

/// Key files and keyrings: a typed `Key` error that never echoes key material.
fn fuzz_keys(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let mut all = Tally::default();
    let secrets: Vec<String> = ["keys/old.key", "keys/new.key", "keys/keyring"]
        .iter()
        .flat_map(|f| {
            fs::read_to_string(td(f))
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| l.rsplit_once(':').unwrap().1.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let leak = |e: &Error| secrets.iter().any(|s| e.to_string().contains(&s[..12]));
    let p = Path::new("/etc/dse/keys/k");
    let check = |r: Result<(), Error>| match r {
        Ok(()) => Ok(true),
        Err(e) if leak(&e) => Err(format!("key material in the error: {e}")),
        Err(Error::Key(m)) if m.contains("/etc/dse/keys/k") => Ok(false),
        Err(e) => Err(format!("unexpected error {e:?}")),
    };
    for f in ["keys/old.key", "keys/new.key"] {
        all.merge(feed(
            "key file",
            &inputs_of(&fs::read(td(f)).unwrap()),
            |b| check(KeyFile::parse(b, p).map(|_| ())),
        ));
    }
    all.merge(feed(
        "keyring",
        &inputs_of(&fs::read(td("keys/keyring")).unwrap()),
        |b| check(Keyring::parse(b, p).map(|_| ())),
    ));
    all
}

/// The envelope of a testdata SSTable.
fn envelope(data: &Path) -> (Envelope, CompressionInfo) {
    let ci_path = component(data, "CompressionInfo.db");
    let (v, f) = name_parts(data);
    let ci = CompressionInfo::parse(
        &fs::read(&ci_path).unwrap(),
        f == "bti" || v.as_str() >= "na",
        None,
        &ci_path,
    )
    .unwrap();
    let ClassKind::Encrypted(class) = ChunkClass::classify(ci.simple_class()) else {
        panic!("not encrypted")
    };
    let env = Envelope {
        class,
        provider: ProviderKind::from_option(ci.option("key_provider")).unwrap(),
        cipher: CipherSpec::from_options(
            ci.option("cipher_algorithm"),
            ci.option("secret_key_strength"),
            ci.option("iv_length"),
        )
        .unwrap(),
    };
    (env, ci)
}

/// Chunk envelopes, key headers and decrypted payloads (structure check and decompression).
fn fuzz_envelopes(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let mut all = Tally::default();
    let keys = {
        let mut k = Keys::keyring(&td("keys/keyring"));
        k.add_key_file(&td("keys/old.key"));
        k
    };
    for p in [
        "dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128",
        "dd1/matrix/t_Encryptor_kmip_ECB_256",
        "dd1/matrix/t_EncryptingLZ4Compressor_local_CBC_128",
        "dd1/edge/t_replicated",
    ] {
        let data = sstable(p);
        let (env, ci) = envelope(&data);
        let bytes = fs::read(&data).unwrap();
        let chunk = &bytes[..ci.offsets[1] as usize - 4];
        // Mutate the first 96 bytes (prefix, header, IV, first blocks) and every truncation.
        let head = &chunk[..96];
        let mut inputs: Vec<Vec<u8>> = inputs_of(head)
            .into_iter()
            .map(|mut h| {
                if h.len() == head.len() {
                    h.extend_from_slice(&chunk[96..]);
                }
                h
            })
            .collect();
        inputs.extend((96..chunk.len()).step_by(7).map(|n| chunk[..n].to_vec()));
        all.merge(feed("chunk envelope", &inputs, |b| {
            Ok(env.open_chunk(b).is_ok())
        }));
        for kind in [
            ProviderKind::Kmip,
            ProviderKind::Replicated,
            ProviderKind::Local,
        ] {
            let start = if matches!(env.class, ChunkClass::Chained(_)) {
                4
            } else {
                0
            };
            all.merge(feed(
                "key header",
                &inputs_of(&chunk[start..start + 48]),
                |b| Ok(KeyHeader::parse(kind, b).is_ok()),
            ));
        }
        // The decrypted payload of the chunk, mutated: structure check, then decompression.
        let o = open_sstable(&data, &keys, false).unwrap();
        let r = &o.records[0];
        let opened = env.open_chunk(chunk).unwrap();
        let plain_len = ci.plain_len(0);
        let payload = r.plain.clone();
        let mut inputs = inputs_of(&payload[..payload.len().min(64)]);
        for v in inputs.iter_mut() {
            if v.len() == 64 {
                v.extend_from_slice(&payload[64..]);
            }
        }
        inputs.extend(
            (64..payload.len())
                .step_by(13)
                .map(|n| payload[..n].to_vec()),
        );
        all.merge(feed("decrypted payload", &inputs, |b| {
            if env.check_payload(opened.outer, b, plain_len).is_ok() {
                let _ = env.decompress(b, plain_len);
                Ok(true)
            } else {
                Ok(false)
            }
        }));
    }
    all
}

fn fuzz_pages(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let data = sstable("dd3/bti/t_bb_kmip_CBC_128");
    let p = component(&data, "Partitions.db");
    let page = fs::read(&p).unwrap()[..pages::PAGE].to_vec();
    // Every truncation and mutation of the footer and the blob's first bytes, and of the rest
    // with a fixed-up CRC (so that the length and padding checks are reached).
    let mut inputs = inputs_of(&page[pages::PAGE - 16..])
        .into_iter()
        .filter(|t| t.len() == 16)
        .map(|t| [&page[..pages::PAGE - 16], &t[..]].concat())
        .collect::<Vec<_>>();
    inputs.extend((0..pages::PAGE).step_by(61).map(|n| page[..n].to_vec()));
    let l = i32::from_be_bytes(page[pages::USABLE..pages::USABLE + 4].try_into().unwrap()) as usize;
    for at in (0..pages::USABLE + 4)
        .step_by(17)
        .chain([l, l + 1, pages::USABLE - 1])
    {
        let mut v = page.clone();
        v[at] ^= 0x40;
        let crc = crc32fast::hash(&v[..pages::PAGE - 4]);
        v[pages::PAGE - 4..].copy_from_slice(&crc.to_be_bytes());
        inputs.push(v);
    }
    feed("index page", &inputs, |b| {
        typed(pages::open_page(b, 3, &p).map(|_| ()), &p, corrupt)
    })
}

fn fuzz_file_names(inputs_of: impl Fn(&[u8]) -> Vec<Vec<u8>>) -> Tally {
    let mut all = Tally::default();
    for n in [
        "nb-1-big-Data.db",
        "nb-3g1m_0nuf_3vj5m2k1125165rxa7-big-CompressionInfo.db",
        "da-12-bti-Partitions.db",
        "b-1-bti-Rows.db",
        "mc-9999999999-big-TOC.txt",
    ] {
        all.merge(feed("file name", &inputs_of(n.as_bytes()), |b| {
            let s = String::from_utf8_lossy(b);
            let a = Descriptor::parse_file_name(Path::new("/d"), &s).is_some();
            let p = Path::new("/d/ks/t-0123456789abcdef0123456789abcdef").join(&*s);
            match Descriptor::from_path(&p) {
                Ok(_) => Ok(a),
                Err(Error::Usage(_)) => Ok(a),
                Err(e) => Err(format!("unexpected error {e:?}")),
            }
        }));
    }
    all
}

#[test]
fn every_truncation_and_byte_flip_of_real_files() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let mut total = Tally::default();
    let parts: Vec<(&str, Tally)> = vec![
        ("CompressionInfo.db", fuzz_compression_info(mutations)),
        ("Statistics.db", fuzz_statistics(mutations)),
        ("TOC.txt", fuzz_toc(scratch.path(), mutations)),
        ("key files and keyrings", fuzz_keys(mutations)),
        (
            "chunk envelopes, key headers, payloads",
            fuzz_envelopes(mutations),
        ),
        ("index pages", fuzz_pages(mutations)),
        ("file names", fuzz_file_names(mutations)),
    ];
    for (what, t) in parts {
        report(what, &t);
        assert_clean(what, &t);
        total.merge(t);
    }
    println!(
        "real files mutated: {} cases in all ({:.1}s)",
        total.cases,
        t0.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ random input (proptest)

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs a strategy's inputs through `f` (as `feed` does for mutations).
fn random<S: Strategy<Value = Vec<u8>>>(
    name: &str,
    cases: u32,
    s: S,
    f: impl Fn(&[u8]) -> Result<bool, String>,
) -> Tally {
    let mut r = runner(cases);
    let inputs: Vec<Vec<u8>> = (0..cases)
        .map(|_| s.new_tree(&mut r).unwrap().current())
        .collect();
    feed(name, &inputs, f)
}

/// A CompressionInfo.db whose header is well formed and whose numbers are not.
fn ci_like() -> impl Strategy<Value = Vec<u8>> {
    (
        "[A-Za-z.]{0,40}",
        proptest::collection::vec(("[a-z_]{0,20}", "[ -~]{0,30}"), 0..6),
        any::<i32>(),
        any::<i32>(),
        any::<i64>(),
        prop_oneof![any::<i32>(), 0..8i32],
        proptest::collection::vec(any::<i64>(), 0..10),
    )
        .prop_map(|(class, opts, chunk, max, len, count, offs)| {
            let mut ci = Ci {
                class,
                options: opts,
                chunk_length: chunk as u32,
                max: Some(max),
                data_length: len as u64,
                offsets: offs.iter().map(|&o| o as u64).collect(),
            };
            let mut b = ci.serialize();
            // Lie about the count.
            let at = b.len() - 8 * ci.offsets.len() - 4;
            b[at..at + 4].copy_from_slice(&count.to_be_bytes());
            ci.offsets.clear();
            b
        })
}

/// A Statistics.db whose two header CRCs are right, so that the bounds checks are reached.
fn statistics_like() -> impl Strategy<Value = Vec<u8>> {
    (
        1..6i32,
        proptest::collection::vec((any::<i32>(), any::<i32>()), 6),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(count, toc, body)| {
            let mut b = count.to_be_bytes().to_vec();
            b.extend_from_slice(&crc32fast::hash(&b).to_be_bytes());
            let mut h = crc32fast::Hasher::new();
            h.update(&count.to_be_bytes());
            for (t, o) in toc.iter().take(count as usize) {
                b.extend_from_slice(&t.to_be_bytes());
                b.extend_from_slice(&(o % 400).to_be_bytes());
                h.update(&t.to_be_bytes());
                h.update(&(o % 400).to_be_bytes());
            }
            b.extend_from_slice(&h.finalize().to_be_bytes());
            b.extend_from_slice(&body);
            b
        })
}

/// A page whose CRC is right.
fn page_like() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        prop_oneof![any::<i32>(), 0..4200i32],
        any::<bool>(),
    )
        .prop_map(|(blob, l, zero)| {
            let mut p = vec![if zero { 0 } else { 7 }; pages::PAGE];
            p[..blob.len()].copy_from_slice(&blob);
            if zero {
                for b in p[blob.len()..pages::USABLE].iter_mut() {
                    *b = 0;
                }
            }
            p[pages::USABLE..pages::USABLE + 4].copy_from_slice(&l.to_be_bytes());
            let crc = crc32fast::hash(&p[..pages::PAGE - 4]);
            p[pages::PAGE - 4..].copy_from_slice(&crc.to_be_bytes());
            p
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn text_lines() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec("[A-Za-z0-9/+=:#_ .-]{0,70}", 0..6)
        .prop_map(|l| l.join("\n").into_bytes())
}

#[test]
fn random_input_for_every_parser() {
    let t0 = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let n = 2000;
    let ci_path = PathBuf::from("/d/ks/t-00/nb-1-big-CompressionInfo.db");
    let stats_path = PathBuf::from("/d/ks/t-00/nb-1-big-Statistics.db");
    let page_path = PathBuf::from("/d/ks/t-00/bb-1-bti-Partitions.db");
    let kp = Path::new("/etc/dse/keys/k");
    let env = envelope(&sstable(
        "dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128",
    ))
    .0;
    let env_enc = envelope(&sstable("dd1/edge/t_replicated")).0;
    let ci_check = |b: &[u8]| {
        typed(
            CompressionInfo::parse(b, false, None, &ci_path).map(|_| ()),
            &ci_path,
            corrupt,
        )?;
        typed(
            CompressionInfo::parse(b, true, Some(1 << 20), &ci_path).map(|_| ()),
            &ci_path,
            corrupt,
        )
    };
    let key_err = |e: &Error| matches!(e, Error::Key(_));
    let parts: Vec<(&str, Tally)> = vec![
        (
            "CompressionInfo.db, random bytes",
            random("ci", n, bytes(300), ci_check),
        ),
        (
            "CompressionInfo.db, structured",
            random("ci", n, ci_like(), ci_check),
        ),
        (
            "Statistics.db, random bytes",
            random("stats", n, bytes(300), |b| {
                typed(
                    statistics::split(b, &stats_path).map(|_| ()),
                    &stats_path,
                    corrupt,
                )
            }),
        ),
        (
            "Statistics.db, structured",
            random("stats", n, statistics_like(), |b| {
                typed(
                    statistics::split(b, &stats_path).map(|_| ()),
                    &stats_path,
                    corrupt,
                )
            }),
        ),
        ("TOC.txt", {
            let p = scratch.path().join("nb-1-big-TOC.txt");
            random("toc", n / 4, prop_oneof![bytes(200), text_lines()], |b| {
                fs::write(&p, b).unwrap();
                typed(toc::read(&p).map(|_| ()), &p, corrupt)
            })
        }),
        (
            "key files",
            random("key file", n, prop_oneof![bytes(200), text_lines()], |b| {
                typed(KeyFile::parse(b, kp).map(|_| ()), kp, key_err)
            }),
        ),
        (
            "keyrings",
            random("keyring", n, prop_oneof![bytes(200), text_lines()], |b| {
                typed(Keyring::parse(b, kp).map(|_| ()), kp, key_err)
            }),
        ),
        (
            "transaction log records",
            random(
                "record",
                n,
                prop_oneof![
                    bytes(120),
                    "(ADD|add|REMOVE|COMMIT|ABORT|x):\\[[^\\]]{0,40}\\]\\[[0-9]{0,21}\\]"
                        .prop_map(String::into_bytes)
                ],
                |b| Ok(Record::parse(&String::from_utf8_lossy(b)).is_ok()),
            ),
        ),
        ("transaction logs", {
            let p = scratch.path().join("nb_txn_upgradesstables_x.log");
            random("log", n / 4, prop_oneof![bytes(300), text_lines()], |b| {
                fs::write(&p, b).unwrap();
                typed(read_log(&p).map(|_| ()), &p, corrupt)
            })
        }),
        (
            "key headers",
            random("header", n, bytes(64), |b| {
                Ok([
                    ProviderKind::Kmip,
                    ProviderKind::Replicated,
                    ProviderKind::Local,
                ]
                .iter()
                .all(|k| KeyHeader::parse(*k, b).is_ok()))
            }),
        ),
        (
            "chunk envelopes and payloads",
            random("chunk", n, bytes(200), |b| {
                let _ = env.open_chunk(b);
                let _ = env_enc.open_chunk(b);
                for pl in [0, 15, 16, 4096] {
                    if env.check_payload(Some(b.len() as i32), b, pl).is_ok() {
                        let _ = env.decompress(b, pl);
                    }
                    let _ = env_enc.check_payload(None, b, pl);
                }
                Ok(true)
            }),
        ),
        (
            "index pages",
            random("page", n / 2, prop_oneof![bytes(5000), page_like()], |b| {
                typed(
                    pages::open_page(b, 0, &page_path).map(|_| ()),
                    &page_path,
                    corrupt,
                )
            }),
        ),
        (
            "file names",
            random(
                "name",
                n,
                prop_oneof![
                    bytes(60),
                    "[a-z]{0,3}-[0-9a-z_]{0,30}-(big|bti|xx)-[A-Za-z.]{0,20}"
                        .prop_map(String::into_bytes)
                ],
                |b| {
                    Ok(
                        Descriptor::parse_file_name(Path::new("/d"), &String::from_utf8_lossy(b))
                            .is_some(),
                    )
                },
            ),
        ),
    ];
    let mut total = Tally::default();
    for (what, t) in parts {
        report(what, &t);
        assert_clean(what, &t);
        total.merge(t);
    }
    println!(
        "proptest random input: {} cases in all ({:.1}s)",
        total.cases,
        t0.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------ inspect on mutated SSTables

#[test]
fn inspect_on_mutated_sstables_never_panics() {
    let ds = DataSet::new(&DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        d.starts_with("dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128")
            || d.starts_with("dd3/bti/t_bb_kmip_CBC_128")
    }));
    let mut rng = Rng(5);
    let mut runs = 0;
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    for o in ds.sstables.clone() {
        for comp in [
            "CompressionInfo.db",
            "Data.db",
            "TOC.txt",
            "Statistics.db",
            "Partitions.db",
        ] {
            if !o.files.contains_key(comp) {
                continue;
            }
            for m in 0..4 {
                let data = ds.root.join(format!("m{runs}"));
                ds.copy_data(&data);
                let f = data.join(&o.dir).join(format!("{}{comp}", o.prefix));
                let mut b = fs::read(&f).unwrap();
                match m {
                    0 => b.truncate(rng.below(b.len() as u64) as usize),
                    1 => {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] ^= 1 << rng.below(8);
                    }
                    2 => {
                        let i = rng.below(b.len().min(64) as u64) as usize;
                        b[i] ^= 0xFF;
                    }
                    _ => b = vec![0xFF; b.len()],
                }
                fs::write(&f, &b).unwrap();
                for json in [false, true] {
                    let mut args = vec!["inspect".to_string()];
                    if json {
                        args.push("--json".into());
                    }
                    args.push(data.join(&o.dir).display().to_string());
                    let r = run_in(&ds.root, &args, &[]);
                    runs += 1;
                    *codes.entry(r.code).or_default() += 1;
                    assert!(
                        (r.code == 0 || r.code == 1) && !r.stderr.contains("panicked"),
                        "inspect on {comp} mutation {m}: {}",
                        r.all()
                    );
                }
                fs::remove_dir_all(&data).unwrap();
            }
        }
    }
    println!("inspect on mutated SSTables: {runs} runs, exit codes {codes:?}");
}

// ------------------------------------------------------------------ transaction logs vs Cassandra

fn decision(s: &Startup) -> &'static str {
    match s {
        Startup::Refuse(_) => "refuse",
        Startup::Resolve {
            committed: true, ..
        } => "commit",
        Startup::Resolve { .. } => "roll back",
    }
}

#[test]
fn transaction_log_reader_agrees_with_cassandra_on_mutated_logs() {
    require_failpoints();
    let t0 = Instant::now();
    let ds = DataSet::new(&DataSet::tables_where(|e| {
        e["data"]
            .as_str()
            .unwrap()
            .starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128")
    }));
    let data = ds.root.join("d");
    ds.copy_data(&data);
    let r = run_in(
        &ds.root,
        &rekey_args(&ds, &data, 1),
        &[("SSTABLE_REKEY_TEST_FAILPOINT", "txn.commit")],
    );
    assert_eq!(r.code, 134, "{}", r.all());
    let log = logs_under(&data).pop().unwrap();
    let dir = log.parent().unwrap().to_path_buf();
    let full = fs::read(&log).unwrap();
    let state = FolderState::take(&dir);

    // Line by line: the crate's Record::parse accepts exactly the lines Cassandra reads as valid.
    let mut line_cases = 0;
    let mut line_disagree = Vec::new();
    for line in String::from_utf8(full.clone()).unwrap().lines() {
        for m in mutations(line.as_bytes()) {
            let Ok(s) = String::from_utf8(m) else {
                continue;
            };
            if s.contains(['\n', '\r']) {
                continue;
            }
            line_cases += 1;
            let j = make_record(&s);
            let cassandra =
                j.error.is_none() && j.kind != Kind::Unknown && j.checksum == j.compute_checksum();
            let ours = Record::parse(&s).is_ok();
            if cassandra != ours {
                line_disagree.push(format!(
                    "{s:?}: Cassandra {cassandra}, Record::parse {ours}"
                ));
            }
        }
    }

    // Whole logs: the decision of recover_log against the model's, over every mutation.
    let mut cases = 0;
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagree: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in mutations(&full) {
        state.restore(&dir);
        fs::write(&log, &m).unwrap();
        let model = cassandra_startup(&log);
        let ours = recover_log(&log);
        cases += 1;
        let ours_d = match &ours {
            Err(_) => "refuse",
            Ok(r) if r.outcome == "committed" => "commit",
            Ok(_) => "roll back",
        };
        let key = format!("Cassandra {}, recover {ours_d}", decision(&model));
        *by.entry(key.clone()).or_default() += 1;
        let excess: Vec<PathBuf> = match (&model, &ours) {
            (Startup::Resolve { delete, .. }, Ok(r)) => r
                .deleted
                .iter()
                .filter(|p| !delete.contains(*p))
                .cloned()
                .collect(),
            (Startup::Refuse(_), Ok(r)) => r.deleted.clone(),
            _ => Vec::new(),
        };
        if decision(&model) != ours_d || !excess.is_empty() {
            let mut k = key;
            if !excess.is_empty() {
                k.push_str(", recover deleted files Cassandra would keep");
            }
            disagree
                .entry(k)
                .or_default()
                .push(format!("{:?}", String::from_utf8_lossy(&m)));
        }
    }
    state.restore(&dir);
    println!(
        "transaction logs: {line_cases} mutated lines, {} judged differently; {cases} mutated logs: {by:?} ({:.1}s)",
        line_disagree.len(),
        t0.elapsed().as_secs_f64()
    );
    for (k, v) in &disagree {
        println!("  {k}: {} logs, e.g. {}", v.len(), v[0]);
    }
    assert!(
        line_disagree.is_empty(),
        "{:#?}",
        &line_disagree[..line_disagree.len().min(5)]
    );
    let opposite: Vec<&String> = disagree
        .keys()
        .filter(|k| {
            k.contains("deleted files") || (k.contains("commit") && k.contains("roll back"))
        })
        .collect();
    assert!(
        opposite.is_empty(),
        "recover resolves some logs against Cassandra: {opposite:?}"
    );
    assert!(
        disagree.is_empty(),
        "recover and Cassandra's startup judge these mutated logs differently: {:?}",
        disagree
            .iter()
            .map(|(k, v)| (k, v.len()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn crafted_records_are_read_as_cassandra_reads_them() {
    // Lines carrying the crate's own checksum over the fields as written. Cassandra parses every
    // number (an empty field makes the record invalid), reads numFiles as an int, and normalizes
    // before it checksums: COMMIT/ABORT have no path and zeros, ADD has updateTime 0.
    let mut r = runner(3000);
    let kinds = prop_oneof![
        Just("ADD"),
        Just("REMOVE"),
        Just("COMMIT"),
        Just("ABORT"),
        Just("commit")
    ];
    let field = prop_oneof![
        3 => Just("0".to_string()),
        1 => Just(String::new()),
        2 => "[1-9][0-9]{0,2}".prop_map(|s| s),
        1 => "[1-9][0-9]{9,11}".prop_map(|s| s)
    ];
    let path = prop_oneof![
        Just(String::new()),
        "/[a-z]{1,8}/nb-[0-9]-big-".prop_map(|s| s)
    ];
    let s = (kinds, path, field.clone(), field);
    let mut cases = 0;
    let mut by_reason: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for _ in 0..3000 {
        let (kind, path, ut, nf) = s.new_tree(&mut r).unwrap().current();
        use sstable_rekey::sstable::txnlog::RecordType as T;
        let upper = kind.to_ascii_uppercase();
        let rec = Record {
            kind: match upper.as_str() {
                "ADD" => T::Add,
                "REMOVE" => T::Remove,
                "COMMIT" => T::Commit,
                _ => T::Abort,
            },
            path: path.clone(),
            update_time: ut.parse().unwrap_or(0),
            num_files: nf.parse::<i64>().unwrap_or(0) as i32,
        };
        let line = format!("{kind}:[{path},{ut},{nf}][{}]", rec.checksum());
        let j = make_record(&line);
        let cassandra =
            j.error.is_none() && j.kind != Kind::Unknown && j.checksum == j.compute_checksum();
        let ours = Record::parse(&line).is_ok();
        cases += 1;
        if cassandra == ours {
            continue;
        }
        let has_file = upper == "ADD" || upper == "REMOVE";
        let reason = if ut.is_empty() || nf.is_empty() {
            "an empty number field (Cassandra: parse error; crate: 0)"
        } else if nf.parse::<i32>().is_err() {
            "numFiles beyond an int (Cassandra: parse error; crate: truncated)"
        } else if !has_file && (!path.is_empty() || ut != "0" || nf != "0") {
            "COMMIT/ABORT with a path or non-zero fields (Cassandra checksums them as empty/0)"
        } else if upper == "ADD" && ut != "0" {
            "ADD with a non-zero updateTime (Cassandra checksums 0)"
        } else {
            "other"
        };
        let e = by_reason.entry(reason).or_insert((0, line.clone()));
        e.0 += 1;
    }
    println!("crafted records: {cases} cases");
    for (k, (n, eg)) in &by_reason {
        println!("  {n} read differently: {k}, e.g. {eg}");
    }
    assert!(
        by_reason.is_empty(),
        "Record::parse and Cassandra's LogRecord read these records differently: {:?}",
        by_reason
            .iter()
            .map(|(k, (n, _))| (k, n))
            .collect::<Vec<_>>()
    );
}

// ------------------------------------------------------------------ paths

fn small() -> DataSet {
    DataSet::new(&DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        d.starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128")
            || d.starts_with("dd1/matrix/t_EncryptingLZ4Compressor_kmip_CBC_128")
    }))
}

fn recover_args(data: &Path) -> Vec<String> {
    strings(&["recover", "--data-dir", data.to_str().unwrap()])
}

#[test]
fn a_data_dir_writable_by_others_is_refused() {
    let ds = small();
    let data = ds.root.join("d");
    ds.copy_data(&data);
    let table = data.join(&ds.sstables[0].dir);
    for (dir, mode) in [
        (data.clone(), 0o777),
        (data.clone(), 0o1777),
        (data.join("matrix"), 0o757),
        (table.clone(), 0o777),
    ] {
        let was = fs::metadata(&dir).unwrap().permissions().mode();
        chmod(&dir, mode);
        let before = tree(&data);
        for args in [rekey_args(&ds, &data, 1), recover_args(&data)] {
            let r = run_in(&ds.root, &args, &[]);
            assert_eq!(r.code, 2, "{} {mode:o}: {}", dir.display(), r.all());
            assert!(r.all().contains("writable by other users"), "{}", r.all());
            assert!(r.all().contains(dir.to_str().unwrap()), "{}", r.all());
        }
        assert_eq!(diff(&before, &tree(&data)), Vec::<String>::new());
        chmod(&dir, was);
    }
    let r = run_in(&ds.root, &rekey_args(&ds, &data, 1), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn symbolic_links_out_of_the_data_dir_are_refused_never_followed() {
    let ds = small();
    let outside = ds.root.join("outside");
    fs::create_dir(&outside).unwrap();
    let o = ds.sstables[0].clone();
    let mut cases = 0;
    // A symlinked table folder, a symlinked keyspace folder, a symlinked Data.db, a dangling
    // symlink named like a new generation.
    for case in ["table", "keyspace", "data file", "planted"] {
        let data = ds.root.join(format!("d-{}", case.replace(' ', "_")));
        ds.copy_data(&data);
        let table = data.join(&o.dir);
        let target = outside.join(case);
        let link = match case {
            "table" => {
                fs::rename(&table, &target).unwrap();
                std::os::unix::fs::symlink(&target, &table).unwrap();
                table.clone()
            }
            "keyspace" => {
                let ks = data.join("matrix");
                fs::rename(&ks, &target).unwrap();
                std::os::unix::fs::symlink(&target, &ks).unwrap();
                ks
            }
            "data file" => {
                let f = table.join(format!("{}Data.db", o.prefix));
                fs::rename(&f, &target).unwrap();
                std::os::unix::fs::symlink(&target, &f).unwrap();
                f
            }
            _ => {
                let f = table.join("nb-2-big-Data.db");
                std::os::unix::fs::symlink(&target, &f).unwrap();
                f
            }
        };
        let outside_before = tree(&outside);
        let before = tree(&data);
        for args in [rekey_args(&ds, &data, 1), recover_args(&data)] {
            let r = run_in(&ds.root, &args, &[]);
            assert_eq!(r.code, 2, "{case}: {}", r.all());
            assert!(r.all().contains("symbolic link"), "{case}: {}", r.all());
            assert!(
                r.all().contains(link.to_str().unwrap()),
                "{case}: names the link: {}",
                r.all()
            );
            cases += 1;
        }
        assert_eq!(
            diff(&outside_before, &tree(&outside)),
            Vec::<String>::new(),
            "{case}"
        );
        assert_eq!(diff(&before, &tree(&data)), Vec::<String>::new(), "{case}");
    }
    println!("symbolic links: {cases} runs refused, nothing outside touched");
}

#[test]
fn verify_does_not_pass_over_a_symlinked_table_still_under_the_old_key() {
    // rekey now refuses the symlink (above); verify, the proof an operator runs before destroying
    // the old key, must not report success while a table it cannot see is under the old key.
    let ds = small();
    let data = ds.root.join("d");
    ds.copy_data(&data);
    let r = run_in(&ds.root, &rekey_args(&ds, &data, 1), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    // A table moved to another disk and symlinked back: a Cassandra node reads it.
    let o = &ds.sstables[0];
    let moved = ds.root.join("other-disk").join(o.dir.file_name().unwrap());
    copy_tree(&ds.data.join(&o.dir), &moved);
    let extra = data.join("matrix").join(format!(
        "t_moved-{}",
        &o.dir.file_name().unwrap().to_str().unwrap()[o.dir.file_name().unwrap().len() - 32..]
    ));
    std::os::unix::fs::symlink(&moved, &extra).unwrap();
    let r = run_in(
        &ds.root,
        &strings(&[
            "verify",
            "--key",
            "kmip://kmip1/new-128",
            "--keyring",
            ds.keyring.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        &[],
    );
    assert_ne!(
        r.code,
        0,
        "verify passed although {} (a symlinked table folder) is still under kmip:old-128\n{}",
        extra.display(),
        r.all()
    );
}

#[test]
fn recover_never_deletes_files_outside_the_data_dirs() {
    // A transaction log planted in a table folder (or copied from another node) naming files
    // elsewhere: recover must not delete anything outside the data directories.
    let ds = small();
    let data = ds.root.join("d");
    ds.copy_data(&data);
    let victim = ds.root.join("victim");
    fs::create_dir(&victim).unwrap();
    for c in ["Data.db", "TOC.txt"] {
        fs::write(victim.join(format!("nb-1-big-{c}")), b"precious").unwrap();
    }
    let add = Record::add(victim.join("nb-1-big-").display().to_string(), 2);
    let table = data.join(&ds.sstables[0].dir);
    fs::write(
        table.join("nb_txn_upgradesstables_6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a.log"),
        format!("{}\n", add.format()),
    )
    .unwrap();
    let r = run_in(&ds.root, &recover_args(&data), &[]);
    let left = fs::read_dir(&victim).unwrap().count();
    assert_eq!(
        left,
        2,
        "recover deleted files outside every --data-dir ({}): {}",
        victim.display(),
        r.all()
    );
}

#[test]
fn new_files_get_the_originals_mode_and_owner() {
    let ds = small();
    let data = ds.root.join("d");
    ds.copy_data(&data);
    let root = unsafe { libc::geteuid() } == 0;
    let (uid, gid) = if root {
        (4321, 4322)
    } else {
        (unsafe { libc::geteuid() }, unsafe { libc::getegid() })
    };
    for o in &ds.sstables {
        for c in o.files.keys() {
            let f = data.join(&o.dir).join(format!("{}{c}", o.prefix));
            chmod(&f, 0o640);
            if root {
                std::os::unix::fs::chown(&f, Some(uid), Some(gid)).unwrap();
            }
        }
    }
    let r = run_in(&ds.root, &rekey_args(&ds, &data, 1), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut checked = 0;
    for o in &ds.sstables {
        for e in fs::read_dir(data.join(&o.dir)).unwrap() {
            let e = e.unwrap();
            let m = fs::metadata(e.path()).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o640, "{}", e.path().display());
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", e.path().display());
            checked += 1;
        }
    }
    println!("new files: {checked} with the original's mode 0640 and owner {uid}:{gid}");
}
