//! `bench`: whole-run throughput with its baselines measured in the same run, on the same file
//! system: `openssl speed` AES-CBC encryption on one core, `cp` of the same Data.db, a naive
//! single-stream rekey (decrypt then encrypt, chunk by chunk, one thread), and the real `rekey`
//! command (1 thread and all threads, as child processes so that their peak RSS is their own).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine;
use serde::Serialize;
use zeroize::Zeroizing;

use sstable_rekey::crypto::envelope::{ProviderKind, Stage};
use sstable_rekey::crypto::random::IvSource;
use sstable_rekey::crypto::{AesKey, ChunkClass, CipherSpec, Envelope, KeyHeader};
use sstable_rekey::error::{Error, Result};

pub use crate::app::bench_kit::BenchOptions;
use crate::app::bench_kit::{copy_all_in, row_chunk, timed, Measure};
use sstable_rekey::sstable::data::format_digest;
use sstable_rekey::sstable::CompressionInfo;

/// Parses `2GiB`, `512MiB`, `100MB`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("--size {s:?} is not a size like 2GiB")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        u => {
            return Err(Error::Usage(format!(
                "--size {s:?}: unknown size unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            )))
        }
    };
    Ok((n * mult as f64) as u64)
}

/// Writes `sstables` encrypted BIG `nb` SSTables (EncryptingLZ4Compressor, AES/CBC, KMIP key header)
/// of `size` Data.db bytes in all into `<root>/data/bench/rows-<id>/`, and a keyring with two keys.
/// Returns (data dir, keyring).
pub fn synth(
    root: &Path,
    size: u64,
    sstables: usize,
    chunk_kib: u32,
    bits: u32,
) -> Result<(PathBuf, PathBuf)> {
    let data = root.join("data");
    let table = data
        .join("bench")
        .join("rows-0123456789abcdef0123456789abcdef");
    fs::create_dir_all(&table).map_err(|e| Error::io(&table, "create folder", e))?;
    let mut keys = Vec::new();
    let mut ring = String::new();
    for id in ["bench-a", "bench-b"] {
        let mut k = Zeroizing::new(vec![0u8; bits as usize / 8]);
        sstable_rekey::crypto::random::fill(&mut k)?;
        ring.push_str(&format!(
            "{id}:{}\n",
            base64::engine::general_purpose::STANDARD.encode(&k[..])
        ));
        keys.push(k);
    }
    let keyring = root.join("keyring");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&keyring)
            .map_err(|e| Error::io(&keyring, "create", e))?;
        f.write_all(ring.as_bytes())
            .map_err(|e| Error::io(&keyring, "write", e))?;
    }
    let cipher = CipherSpec::from_options(None, Some(&bits.to_string()), None)
        .map_err(|m| Error::Usage(m.into()))?;
    let env = Envelope {
        class: ChunkClass::Chained(Stage::Lz4),
        provider: ProviderKind::Kmip,
        cipher: cipher.clone(),
    };
    let key = AesKey::new(&keys[0]).map_err(|m| Error::Usage(m.into()))?;
    let header = KeyHeader::Kmip("bench-a".into());
    let chunk_len = chunk_kib as usize * 1024;
    // 64 distinct compressed payloads, each sealed under a fresh IV every time it is written.
    let pool: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            let plain = row_chunk(i + 1, chunk_len);
            let block = lz4_flex::block::compress(&plain);
            let mut s1 = Vec::with_capacity(block.len() + 8);
            s1.extend_from_slice(&(chunk_len as i32).to_be_bytes());
            s1.extend_from_slice(&(chunk_len as u32).to_le_bytes());
            s1.extend_from_slice(&block);
            s1
        })
        .collect();
    // `size` is Data.db bytes in all: chunks are written until each SSTable has its share.
    let each = size / sstables as u64;
    for gen in 1..=sstables {
        let target = if gen == sstables {
            size - each * (sstables as u64 - 1)
        } else {
            each
        };
        let prefix = table.join(format!("nb-{gen}-big-"));
        let path = |c: &str| PathBuf::from(format!("{}{c}", prefix.display()));
        let f =
            File::create(path("Data.db")).map_err(|e| Error::io(path("Data.db"), "create", e))?;
        let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
        let mut offsets = Vec::new();
        let mut pos = 0u64;
        let mut crc = crc32fast::Hasher::new();
        let mut ivs = IvSource::new();
        let mut buf = Vec::new();
        let mut i = 0;
        while pos < target.max(1) {
            let mut iv = [0u8; 16];
            ivs.next(&mut iv)?;
            buf.clear();
            env.seal_chunk(&header, &key, &iv, &pool[i % pool.len()], &mut buf);
            let c = crc32fast::hash(&buf);
            buf.extend_from_slice(&c.to_be_bytes());
            w.write_all(&buf)
                .map_err(|e| Error::io(path("Data.db"), "write", e))?;
            crc.update(&buf);
            offsets.push(pos);
            pos += buf.len() as u64;
            i += 1;
        }
        let size = offsets.len() as u64 * chunk_len as u64;
        w.flush()
            .map_err(|e| Error::io(path("Data.db"), "write", e))?;
        let ci = CompressionInfo {
            class: "EncryptingLZ4Compressor".into(),
            options: vec![
                ("cipher_algorithm".into(), cipher.transformation.clone()),
                ("secret_key_strength".into(), bits.to_string()),
                ("key_provider".into(), "KmipKeyProviderFactory".into()),
                ("kmip_host".into(), "bench".into()),
            ],
            chunk_length: chunk_len as u32,
            max_compressed_length: Some(i32::MAX),
            data_length: size,
            offsets,
        };
        let write =
            |c: &str, b: &[u8]| fs::write(path(c), b).map_err(|e| Error::io(path(c), "write", e));
        write("CompressionInfo.db", &ci.serialize())?;
        write("Digest.crc32", format_digest(crc.finalize()).as_bytes())?;
        for c in ["Index.db", "Summary.db", "Filter.db", "Statistics.db"] {
            write(c, format!("bench {c}\n").as_bytes())?;
        }
        write(
            "TOC.txt",
            b"Data.db\nCompressionInfo.db\nDigest.crc32\nIndex.db\nSummary.db\nFilter.db\nStatistics.db\nTOC.txt\n",
        )?;
    }
    Ok((data, keyring))
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub cores: usize,
    pub dir: String,
    pub filesystem: String,
    pub data_db_bytes: u64,
    pub chunk_kib: u32,
    pub bits: u32,
    pub runs: usize,
    pub sstables: usize,
    /// The rekey's CBC kernel (see `crypto::cipher::cbc_kernel`).
    pub kernel: &'static str,
    pub openssl_cbc_encrypt_1core_gb_s: Option<f64>,
    pub measures: Vec<Measure>,
    pub ratios: Vec<(String, f64)>,
}

/// Runs a child and returns (wall seconds, user CPU seconds, peak RSS in KiB).
fn timed_child(cmd: &mut Command) -> Result<(f64, f64, u64)> {
    timed(cmd)
}

/// `openssl speed -evp aes-N-cbc` on one core, for the chunk size: bytes per second, if openssl runs.
fn openssl_speed(bits: u32, chunk: usize) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "2",
            "-bytes",
            &chunk.to_string(),
            "-evp",
            &format!("aes-{bits}-cbc"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last line: "AES-128-CBC  1234567.89k" (1000s of bytes per second).
    let line = text.lines().rev().find(|l| {
        l.to_ascii_lowercase()
            .starts_with(&format!("aes-{bits}-cbc"))
    })?;
    let v = line.split_whitespace().last()?.trim_end_matches('k');
    v.parse::<f64>().ok().map(|k| k * 1000.0)
}

/// The naive path: one thread, chunk by chunk, single-stream CBC decrypt then encrypt.
fn naive_rekey(
    data_db: &Path,
    out: &Path,
    bits: u32,
    keys: &[Zeroizing<Vec<u8>>],
) -> Result<(f64, f64)> {
    let ru0 = self_user_cpu();
    let t0 = Instant::now();
    let ci_path = PathBuf::from(
        data_db
            .to_string_lossy()
            .replace("Data.db", "CompressionInfo.db"),
    );
    let ci = CompressionInfo::parse(
        &fs::read(&ci_path).map_err(|e| Error::io(&ci_path, "read", e))?,
        true,
        None,
        &ci_path,
    )?;
    let src = File::open(data_db).map_err(|e| Error::io(data_db, "open", e))?;
    let len = src
        .metadata()
        .map_err(|e| Error::io(data_db, "stat", e))?
        .len();
    let dst = File::create(out).map_err(|e| Error::io(out, "create", e))?;
    let old = AesKey::new(&keys[0]).map_err(|m| Error::Usage(m.into()))?;
    let new = AesKey::new(&keys[1]).map_err(|m| Error::Usage(m.into()))?;
    let _ = bits;
    let mut ivs = IvSource::new();
    let mut framed = Vec::new();
    let mut plain = Vec::new();
    let mut sealed = Vec::new();
    let mut pos = 0u64;
    for i in 0..ci.chunk_count() {
        let (s, e) = ci.chunk_range(i, len);
        framed.resize((e + 4 - s) as usize, 0);
        src.read_exact_at(&mut framed, s)
            .map_err(|x| Error::io(data_db, "read", x))?;
        let chunk = &framed[..framed.len() - 4];
        // i32 outer, KMIP header (0, i32 n, id), IV, ciphertext
        let hl = 5 + i32::from_be_bytes(chunk[5..9].try_into().unwrap()) as usize;
        let body = &chunk[4 + hl..];
        plain.clear();
        old.decrypt_append(
            sstable_rekey::crypto::Mode::Cbc,
            &body[..16],
            &body[16..],
            &mut plain,
        )
        .map_err(|e| Error::Usage(format!("naive baseline: {e}")))?;
        let mut iv = [0u8; 16];
        ivs.next(&mut iv)?;
        sealed.clear();
        sealed.extend_from_slice(&chunk[..4 + hl]);
        sealed.extend_from_slice(&iv);
        new.encrypt_append(sstable_rekey::crypto::Mode::Cbc, &iv, &plain, &mut sealed);
        let c = crc32fast::hash(&sealed);
        sealed.extend_from_slice(&c.to_be_bytes());
        dst.write_all_at(&sealed, pos)
            .map_err(|x| Error::io(out, "write", x))?;
        pos += sealed.len() as u64;
    }
    dst.sync_all().map_err(|e| Error::io(out, "fsync", e))?;
    let secs = t0.elapsed().as_secs_f64();
    Ok((secs, self_user_cpu() - ru0))
}

fn self_user_cpu() -> f64 {
    sstable_rekey::fsio::own_user_cpu()
}

fn filesystem_of(dir: &Path) -> String {
    Command::new("df")
        .args(["-T", &dir.display().to_string()])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let root = opts
        .dir
        .join(format!("sstable-rekey-bench-{}", std::process::id()));
    // A folder of its own (never one that exists): everything the bench deletes is in it.
    fs::create_dir(&root).map_err(|e| Error::io(&root, "create scratch folder", e))?;
    let result = run_in(opts, &root);
    if opts.keep {
        errln!("bench: kept {}", root.display());
    } else {
        let _ = fs::remove_dir_all(&root);
    }
    result
}

fn data_dbs_of(data: &Path) -> Result<Vec<PathBuf>> {
    let table = data
        .join("bench")
        .join("rows-0123456789abcdef0123456789abcdef");
    let mut v = Vec::new();
    for e in fs::read_dir(&table).map_err(|e| Error::io(&table, "list", e))? {
        let e = e.map_err(|e| Error::io(&table, "list", e))?;
        if e.file_name().to_string_lossy().ends_with("-Data.db") {
            v.push(e.path());
        }
    }
    v.sort();
    if v.is_empty() {
        return Err(Error::Usage("bench: no Data.db".into()));
    }
    Ok(v)
}

/// The bench, step by step: synthesize the SSTables, measure the one-off baselines, then the
/// interleaved rounds of `cp` and `rekey`, and derive the ratios.
fn run_in(opts: &BenchOptions, root: &Path) -> Result<BenchReport> {
    errln!(
        "bench: writing a {} encrypted SSTable in {} ...",
        sstable_rekey::rekey::report::human_bytes(opts.size),
        root.display()
    );
    let (data, keyring) = synth(root, opts.size, opts.sstables, opts.chunk_kib, opts.bits)?;
    let data_dbs = data_dbs_of(&data)?;
    let bytes: u64 = data_dbs.iter().map(|p| size_of(p)).sum();

    errln!("bench: openssl speed ...");
    let openssl = openssl_speed(opts.bits, opts.chunk_kib as usize * 1024);
    errln!("bench: openssl enc (CPU per GB) ...");
    let mut measures = vec![openssl_enc(opts, root, &data_dbs)?];
    errln!("bench: naive single-stream rekey ...");
    measures.push(naive_baseline(opts, root, &data_dbs, &keyring, bytes)?);
    measures.extend(rounds(opts, root, &data, &keyring, bytes)?);
    if opts.staged {
        measures.extend(staged_rounds(opts, &data, &keyring, bytes)?);
    }
    if opts.scylla {
        errln!("bench: writing the ScyllaDB table ...");
        let (sdata, a, b) = crate::app::bench_scylla::synth(root, opts)?;
        measures.extend(crate::app::bench_scylla::rounds(
            opts, root, &sdata, &a, &b,
        )?);
    }

    let ratios = ratios(opts, &measures, openssl);
    Ok(BenchReport {
        machine: cpu_model(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        dir: opts.dir.display().to_string(),
        filesystem: filesystem_of(&opts.dir),
        data_db_bytes: bytes,
        chunk_kib: opts.chunk_kib,
        bits: opts.bits,
        runs: opts.runs,
        sstables: opts.sstables,
        kernel: sstable_rekey::crypto::cipher::cbc_kernel(),
        openssl_cbc_encrypt_1core_gb_s: openssl.map(|b| b / 1e9),
        measures,
        ratios,
    })
}

fn size_of(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

/// `openssl enc` over the first Data.db, for its CPU per GB. openssl's start-up would dominate a
/// small file: with small SSTables it encrypts Data.db files put end to end (up to 512 MiB).
fn openssl_enc(opts: &BenchOptions, root: &Path, data_dbs: &[PathBuf]) -> Result<Measure> {
    let first_bytes = size_of(&data_dbs[0]);
    let (enc_input, enc_bytes) = if first_bytes >= 256 << 20 || data_dbs.len() == 1 {
        (data_dbs[0].clone(), first_bytes)
    } else {
        let joined = root.join("openssl-input");
        let mut out = File::create(&joined).map_err(|e| Error::io(&joined, "create", e))?;
        let mut n = 0u64;
        for db in data_dbs {
            if n >= 512 << 20 {
                break;
            }
            let mut f = File::open(db).map_err(|e| Error::io(db, "open", e))?;
            n += std::io::copy(&mut f, &mut out).map_err(|e| Error::io(&joined, "write", e))?;
        }
        (joined, n)
    };
    let (s, u, _) = timed_child(Command::new("openssl").args([
        "enc",
        &format!("-aes-{}-cbc", opts.bits),
        "-K",
        &"01".repeat(opts.bits as usize / 8),
        "-iv",
        &"02".repeat(16),
        "-in",
        &enc_input.display().to_string(),
        "-out",
        "/dev/null",
    ]))
    .unwrap_or((f64::NAN, f64::NAN, 0));
    if enc_input != data_dbs[0] {
        let _ = fs::remove_file(&enc_input);
    }
    Ok(Measure::of(
        "openssl enc (1 core)",
        enc_bytes,
        vec![s],
        vec![u],
        None,
    ))
}

/// The naive single-stream rekey of every Data.db, `opts.runs` times.
fn naive_baseline(
    opts: &BenchOptions,
    root: &Path,
    data_dbs: &[PathBuf],
    keyring: &Path,
    bytes: u64,
) -> Result<Measure> {
    let ring_text =
        Zeroizing::new(fs::read_to_string(keyring).map_err(|e| Error::io(keyring, "read", e))?);
    let keys: Vec<Zeroizing<Vec<u8>>> = ring_text
        .lines()
        .map(|l| {
            Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(l.rsplit_once(':').unwrap().1)
                    .unwrap(),
            )
        })
        .collect();
    let (mut secs, mut user) = (Vec::new(), Vec::new());
    for _ in 0..opts.runs {
        let (mut s, mut u) = (0.0, 0.0);
        for db in data_dbs {
            let out = root.join("naive-Data.db");
            let (s1, u1) = naive_rekey(db, &out, opts.bits, &keys)?;
            s += s1;
            u += u1;
            let _ = fs::remove_file(&out);
        }
        secs.push(s);
        user.push(u);
    }
    Ok(Measure::of(
        "naive rekey (1 thread)",
        bytes,
        secs,
        user,
        None,
    ))
}

/// One measure of the interleaved rounds.
enum Trial {
    Copy {
        sync: bool,
    },
    Rekey {
        threads: usize,
        kernel: &'static str,
    },
}

impl Trial {
    /// The trials of a round: both copies, then the rekey at 1 thread, at all threads, and (when
    /// the fused kernel runs) at all threads with the two-pass kernel.
    fn all(threads: usize) -> Vec<Trial> {
        let mut v = vec![
            Trial::Copy { sync: false },
            Trial::Copy { sync: true },
            Trial::Rekey {
                threads: 1,
                kernel: "auto",
            },
            Trial::Rekey {
                threads,
                kernel: "auto",
            },
        ];
        if sstable_rekey::crypto::cipher::cbc_kernel() == "vaes-fused" {
            v.push(Trial::Rekey {
                threads,
                kernel: "two-pass",
            });
        }
        v
    }

    fn name(&self) -> String {
        match self {
            Trial::Copy { sync: false } => "cp Data.db".into(),
            Trial::Copy { sync: true } => "cp Data.db + sync".into(),
            Trial::Rekey { threads, kernel } => format!(
                "sstable-rekey rekey ({threads} thread{}{})",
                if *threads == 1 { "" } else { "s" },
                if *kernel == "auto" {
                    String::new()
                } else {
                    format!(", {kernel} kernel")
                }
            ),
        }
    }
}

/// Runs the `rekey` command on the bench data, alternating between the two bench keys.
struct Rekeyer<'a> {
    exe: PathBuf,
    keyring: &'a Path,
    data: &'a Path,
    to_b: bool,
}

impl Rekeyer<'_> {
    fn run(&mut self, threads: usize, kernel: &str) -> Result<(f64, f64, u64)> {
        let target = self.next_target();
        self.command("rekey", threads, kernel, target, &[])
    }

    /// The key the data is not under now, and the one after it.
    fn next_target(&mut self) -> &'static str {
        self.to_b = !self.to_b;
        match self.to_b {
            false => "kmip://bench/bench-b",
            true => "kmip://bench/bench-a",
        }
    }

    /// `purge --data-dir D`, timed.
    fn purge(&self) -> Result<(f64, f64, u64)> {
        timed_child(
            Command::new(&self.exe)
                .arg("purge")
                .arg("--data-dir")
                .arg(self.data),
        )
    }

    /// `VERB -q --jobs N --to TARGET --keyring K --data-dir D EXTRA...`, timed.
    fn command(
        &self,
        verb: &str,
        threads: usize,
        kernel: &str,
        target: &str,
        extra: &[&str],
    ) -> Result<(f64, f64, u64)> {
        timed_child(
            Command::new(&self.exe)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .env("SSTABLE_REKEY_KERNEL", kernel)
                .args([verb, "-q", "--jobs", &threads.to_string(), "--to", target])
                .arg("--keyring")
                .arg(self.keyring)
                .arg("--data-dir")
                .arg(self.data)
                .args(extra),
        )
    }
}

/// `--staged`: `--runs` times, `stage` to the next key (node running, unthrottled, all threads)
/// and then the `rekey` that commits its copies (the window); with `--stage-rate`, one more
/// throttled stage (and its commit, untimed).
fn staged_rounds(
    opts: &BenchOptions,
    data: &Path,
    keyring: &Path,
    bytes: u64,
) -> Result<Vec<Measure>> {
    let exe = std::env::current_exe().map_err(|e| Error::Usage(format!("current exe: {e}")))?;
    let mut r = Rekeyer {
        exe,
        keyring,
        data,
        // The rounds left the data under bench-b or bench-a: rekey once to know which.
        to_b: true,
    };
    let (threads, runs) = (opts.threads, opts.runs);
    let t = r.next_target();
    r.command("rekey", threads, "auto", t, &[])?;
    let (mut stage, mut window, mut purge) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        errln!("bench: staged round {round} of {runs} (stage, the window's rekey, purge) ...");
        let t = r.next_target();
        stage.push(r.command("stage", threads, "auto", t, &[])?);
        // The window as the runbook has it: the replaced files are purged once the node is up.
        window.push(r.command("rekey", threads, "auto", t, &["--purge-later"])?);
        purge.push(r.purge()?);
    }
    let name = format!("sstable-rekey stage ({threads} threads, node running)");
    let mut m = vec![
        measure_of(&name, bytes, stage),
        measure_of("sstable-rekey rekey --purge-later (window)", bytes, window),
        measure_of("sstable-rekey purge (after the window)", bytes, purge),
    ];
    if let Some(rate) = opts.stage_rate {
        errln!("bench: stage --rate {rate} ...");
        let t = r.next_target();
        let rate_s = rate.to_string();
        let run = r.command("stage", threads, "auto", t, &["--rate", &rate_s])?;
        r.command("rekey", threads, "auto", t, &[])?;
        m.push(measure_of(
            &format!("sstable-rekey stage --rate {rate}"),
            bytes,
            vec![run],
        ));
    }
    Ok(m)
}

fn measure_of(name: &str, bytes: u64, runs: Vec<(f64, f64, u64)>) -> Measure {
    let rss = runs.iter().map(|r| r.2).max();
    let (secs, user) = runs.iter().map(|r| (r.0, r.1)).unzip();
    Measure::of(name, bytes, secs, user, rss)
}

/// `cp` of every current Data.db into a scratch folder (then fsync of the copies when `sync`:
/// the durable baseline for a disk), and removal of the copies.
fn copy_all(data: &Path, copy_dir: &Path, sync: bool) -> Result<(f64, f64, u64)> {
    // The rekey runs in between renamed the SSTables (new generations).
    copy_all_in(&data_dbs_of(data)?, copy_dir, sync)
}

/// Untimed warm-up runs first. Then every trial once per round, rounds interleaved, so that the
/// baselines and the rekey see the same machine conditions (on a VM that returns freed memory to
/// its host, allocation speed varies from second to second).
fn rounds(
    opts: &BenchOptions,
    root: &Path,
    data: &Path,
    keyring: &Path,
    bytes: u64,
) -> Result<Vec<Measure>> {
    let exe = std::env::current_exe().map_err(|e| Error::Usage(format!("current exe: {e}")))?;
    let mut rekeyer = Rekeyer {
        exe,
        keyring,
        data,
        to_b: true,
    };
    let copy_dir = root.join("copy");
    errln!("bench: warm-up (cp, rekey) ...");
    copy_all(data, &copy_dir, false)?;
    rekeyer.run(opts.threads, "auto")?;
    let trials = Trial::all(opts.threads);
    let mut samples: Vec<(Vec<f64>, Vec<f64>, u64)> =
        vec![(Vec::new(), Vec::new(), 0); trials.len()];
    for round in 1..=opts.runs {
        errln!(
            "bench: round {round} of {} (cp, cp + sync, rekey) ...",
            opts.runs
        );
        // The order rotates from round to round: whichever trial comes right after a large
        // delete pays for memory the VM may just have handed back to its host.
        let n = trials.len();
        for i in (0..n).map(|j| (j + round - 1) % n) {
            let (s, u, r) = match &trials[i] {
                Trial::Copy { sync } => copy_all(data, &copy_dir, *sync)?,
                Trial::Rekey { threads, kernel } => rekeyer.run(*threads, kernel)?,
            };
            samples[i].0.push(s);
            samples[i].1.push(u);
            samples[i].2 = samples[i].2.max(r);
        }
    }
    Ok(trials
        .iter()
        .zip(samples)
        .map(|(t, (secs, user, rss))| {
            let rss = matches!(t, Trial::Rekey { .. }).then_some(rss);
            Measure::of(&t.name(), bytes, secs, user, rss)
        })
        .collect())
}

/// The ratios against the baselines, each with its target.
fn ratios(opts: &BenchOptions, measures: &[Measure], openssl: Option<f64>) -> Vec<(String, f64)> {
    let find = |n: &str| measures.iter().find(|m| m.name.starts_with(n));
    let all = format!("sstable-rekey rekey ({} thread", opts.threads);
    let rekey = find(&all);
    let ratio = |name: &str, base: Option<&Measure>, f: fn(&Measure, &Measure) -> f64| {
        Some((name.to_string(), f(rekey?, base?)))
    };
    let wall: fn(&Measure, &Measure) -> f64 = |r, b| r.seconds / b.seconds;
    let throughput: fn(&Measure, &Measure) -> f64 = |r, b| r.gb_per_s / b.gb_per_s;
    [
        ratio(
            "rekey wall / cp wall (target <= 1.0)",
            find("cp Data.db"),
            wall,
        ),
        ratio(
            "rekey wall / cp wall, best runs (target <= 1.0)",
            find("cp Data.db"),
            |r, b| r.min_seconds / b.min_seconds,
        ),
        ratio(
            "rekey wall / (cp + sync) wall (target <= 1.1 on a disk)",
            find("cp Data.db + sync"),
            wall,
        ),
        rekey.zip(openssl).map(|(r, o)| {
            (
                "rekey GB/s / openssl speed AES-CBC encrypt 1 core (target >= 4.0)".to_string(),
                r.gb_per_s / (o / 1e9),
            )
        }),
        ratio(
            "rekey user CPU per GB / openssl enc user CPU per GB (target <= 0.25)",
            find("openssl enc"),
            |r, b| r.user_cpu_s_per_gb / b.user_cpu_s_per_gb,
        ),
        ratio(
            &format!(
                "{} threads / 1 thread throughput (target >= 1.8)",
                opts.threads
            ),
            find("sstable-rekey rekey (1 thread)"),
            throughput,
        ),
        ratio(
            "fused VAES kernel / two-pass kernel throughput (same run)",
            find(&format!("{all}s, two-pass")),
            throughput,
        ),
        ratio(
            "rekey / naive single-stream rekey throughput",
            find("naive rekey"),
            throughput,
        ),
        ratio(
            "window (rekey --purge-later of staged copies) / offline rekey wall (target <= 0.05)",
            find("sstable-rekey rekey --purge-later (window)"),
            |r, w| w.seconds / r.seconds,
        ),
        ratio(
            "unthrottled stage / offline rekey throughput (target >= 0.9)",
            find("sstable-rekey stage ("),
            |r, s| s.gb_per_s / r.gb_per_s,
        ),
        find(&format!(
            "sstable-rekey rekey ({} threads, ScyllaDB)",
            opts.threads
        ))
        .zip(rekey)
        .map(|(s, r)| {
            (
                "ScyllaDB rekey s/GB / DSE rekey s/GB, same run (target <= 1.2)".to_string(),
                r.gb_per_s / s.gb_per_s,
            )
        }),
        find(&format!(
            "sstable-rekey rekey ({} threads, ScyllaDB)",
            opts.threads
        ))
        .zip(find("cp Data.db (ScyllaDB)"))
        .map(|(s, c)| {
            (
                "ScyllaDB rekey wall / its cp wall".to_string(),
                s.seconds / c.seconds,
            )
        }),
        find("sstable-rekey rekey --purge-later (window, ScyllaDB)")
            .zip(find(&format!(
                "sstable-rekey rekey ({} threads, ScyllaDB)",
                opts.threads
            )))
            .map(|(w, r)| {
                (
                    "ScyllaDB window (rekey --purge-later of staged copies) / its offline rekey wall (target <= 0.05)".to_string(),
                    w.seconds / r.seconds,
                )
            }),
        find("sstable-rekey stage --rate")
            .zip(opts.stage_rate)
            .map(|(s, rate)| {
                (
                    "stage read+write MB/s / --rate (target 0.9 to 1.1)".to_string(),
                    2.0 * s.gb_per_s * 1e3 / rate,
                )
            }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn print_human(r: &BenchReport) {
    outln!(
        "machine: {} ({} cores); {} ({}); Data.db {} in {} SSTable(s); {} KiB chunks; AES-{}; kernel {}; medians of {} runs",
        r.machine,
        r.cores,
        r.dir,
        r.filesystem,
        sstable_rekey::rekey::report::human_bytes(r.data_db_bytes),
        r.sstables,
        r.chunk_kib,
        r.bits,
        r.kernel,
        r.runs
    );
    if let Some(o) = r.openssl_cbc_encrypt_1core_gb_s {
        outln!(
            "{:<48} {:>8.3} GB/s",
            format!("openssl speed aes-{}-cbc (1 core)", r.bits),
            o
        );
    }
    outln!(
        "{:<48} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "measure",
        "seconds",
        "best",
        "GB/s",
        "user CPU",
        "CPU s/GB",
        "peak RSS"
    );
    for m in &r.measures {
        outln!(
            "{:<48} {:>8.3} {:>8.3} {:>9.3} {:>9.3} {:>9.3} {:>9}",
            m.name,
            m.seconds,
            m.min_seconds,
            m.gb_per_s,
            m.user_cpu_s,
            m.user_cpu_s_per_gb,
            m.peak_rss_mib
                .map(|v| format!("{v:.0} MiB"))
                .unwrap_or_default()
        );
    }
    for (n, v) in &r.ratios {
        outln!("{n}: {v:.2}");
    }
}

/// `bench`: the arguments to [`BenchOptions`], the run, and its printout.
pub fn run_command(a: &crate::app::cli::BenchArgs) -> Result<crate::app::exit::Exit> {
    let opts = crate::app::bench::BenchOptions {
        dir: a.dir.clone(),
        size: crate::app::bench::parse_size(&a.size)?,
        chunk_kib: a.chunk_kib,
        bits: a.bits,
        threads: a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        runs: a.runs.max(1),
        keep: a.keep,
        sstables: a.sstables.max(1),
        staged: a.staged,
        stage_rate: a.stage_rate,
        scylla: a.vendor == "scylla",
    };
    let r = crate::app::bench::run(&opts)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serializable")
        );
    } else {
        crate::app::bench::print_human(&r);
    }
    Ok(crate::app::exit::Exit::Ok)
}
