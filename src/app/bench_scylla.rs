//! `bench --vendor scylla`: the ScyllaDB rekey (whole files re-ciphered block by block, FORMAT.md
//! 4.3) measured in the same run as the DSE one: a synthetic ScyllaDB table of the same Data.db
//! size, `cp` of its Data.db files, and `sstable-rekey rekey` between two local key files, rounds
//! interleaved. The ratio the issue sets: ScyllaDB rekey seconds per GB ÷ DSE rekey seconds per GB.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use zeroize::Zeroizing;

use crate::app::bench_kit::{copy_all_in, row_chunk, timed, BenchOptions, Measure};
use sstable_rekey::crypto::cipher::Mode;
use sstable_rekey::crypto::scylla::{FileCipher, FILE_BLOCK};
use sstable_rekey::error::{Error, Result};
use sstable_rekey::sstable::data::format_digest;

const TABLE: &str = "rows-0123456789abcdef0123456789abcdef";
const CIPHER: &str = "AES/CBC/PKCS5Padding";

/// Writes `sstables` ScyllaDB `me` SSTables (Data.db encrypted, mask 0) of `size` Data.db bytes in
/// all under `<root>/scylla/`, and two key files. Returns (data dir, key file a, key file b).
pub fn synth(root: &Path, opts: &BenchOptions) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let data = root.join("scylla");
    let table = data.join("bench").join(TABLE);
    fs::create_dir_all(&table).map_err(|e| Error::io(&table, "create folder", e))?;
    let mut keys = Vec::new();
    for name in ["a.key", "b.key"] {
        let mut k = Zeroizing::new(vec![0u8; opts.bits as usize / 8]);
        sstable_rekey::crypto::random::fill(&mut k)?;
        let p = root.join(name);
        let line = format!(
            "{CIPHER}:{}:{}\n",
            opts.bits,
            base64::engine::general_purpose::STANDARD.encode(&k[..])
        );
        fs::write(&p, line).map_err(|e| Error::io(&p, "write", e))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(&p, "chmod", e))?;
        keys.push((p, k));
    }
    let cipher = FileCipher::new(&keys[0].1, opts.bits, Mode::Cbc)
        .map_err(|m| Error::Usage(format!("bench key: {}", m.0)))?;
    let per = opts.size / opts.sstables.max(1) as u64;
    for i in 0..opts.sstables.max(1) {
        write_sstable(&table, i + 1, per, opts, &cipher, &keys[0].0)?;
    }
    let (a, b) = (keys[0].0.clone(), keys[1].0.clone());
    Ok((data, a, b))
}

/// One SSTable: a Data.db of chunks (each a multiple of 16 bytes with its CRC, so that the file
/// needs no tail), its plain CompressionInfo.db and Digest.crc32, Scylla.db naming key file `key`.
fn write_sstable(
    dir: &Path,
    generation: usize,
    size: u64,
    opts: &BenchOptions,
    cipher: &FileCipher,
    key: &Path,
) -> Result<()> {
    let chunk = opts.chunk_kib as usize * 1024;
    let body = chunk / 3 / 16 * 16 + 12; // about 3:1, and body + CRC a multiple of 16
    let n = (size as usize / (body + 4)).max(1);
    let prefix = format!("me-{generation}-big-");
    let data_path = dir.join(format!("{prefix}Data.db"));
    let mut out = std::io::BufWriter::new(
        fs::File::create(&data_path).map_err(|e| Error::io(&data_path, "create", e))?,
    );
    // Written a MiB at a time: whole 4 KiB blocks encrypted as they fill (block numbers count
    // from the start of the file).
    let mut pending: Vec<u8> = Vec::with_capacity(2 << 20);
    let (mut block, mut whole) = (0u64, crc32fast::Hasher::new());
    let mut flush = |pending: &mut Vec<u8>, all: bool| -> Result<()> {
        let full = if all {
            pending.len()
        } else {
            pending.len() / FILE_BLOCK * FILE_BLOCK
        };
        for b in pending[..full].chunks_mut(FILE_BLOCK) {
            cipher.encrypt_block(block, b);
            block += 1;
        }
        std::io::Write::write_all(&mut out, &pending[..full])
            .map_err(|e| Error::io(&data_path, "write", e))?;
        pending.drain(..full);
        Ok(())
    };
    let mut offsets = Vec::with_capacity(n);
    let mut written = 0u64;
    for c in 0..n {
        offsets.push(written);
        let bytes = row_chunk((generation * 1_000_003 + c) as u64, body);
        whole.update(&bytes);
        let crc = crc32fast::hash(&bytes).to_be_bytes();
        whole.update(&crc);
        pending.extend_from_slice(&bytes);
        pending.extend_from_slice(&crc);
        written += (body + 4) as u64;
        if pending.len() >= 1 << 20 {
            flush(&mut pending, false)?;
        }
    }
    flush(&mut pending, true)?;
    std::io::Write::flush(&mut out).map_err(|e| Error::io(&data_path, "write", e))?;
    let digest = format_digest(whole.finalize());
    let mut ci = Vec::new();
    let utf = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    utf(&mut ci, "LZ4Compressor");
    ci.extend_from_slice(&0i32.to_be_bytes());
    ci.extend_from_slice(&(chunk as i32).to_be_bytes());
    ci.extend_from_slice(&((n * chunk) as i64).to_be_bytes());
    ci.extend_from_slice(&(n as i32).to_be_bytes());
    for o in &offsets {
        ci.extend_from_slice(&o.to_be_bytes());
    }
    let put = |c: &str, bytes: &[u8]| {
        let p = dir.join(format!("{prefix}{c}"));
        fs::write(&p, bytes).map_err(|e| Error::io(&p, "write", e))
    };
    put("CompressionInfo.db", &ci)?;
    put("Digest.crc32", digest.as_bytes())?;
    put("Scylla.db", &scylla_db(key, opts.bits))?;
    put(
        "TOC.txt",
        b"Data.db\nCompressionInfo.db\nDigest.crc32\nScylla.db\nTOC.txt\n",
    )
}

/// A Scylla.db with one entry, ExtensionAttributes (FORMAT.md 4.5, 4.6): the local provider's
/// options and an empty mask (only Data.db encrypted).
fn scylla_db(key: &Path, bits: u32) -> Vec<u8> {
    let key = key.display().to_string();
    let opts = [
        ("cipher_algorithm", CIPHER.to_string()),
        (
            "key_provider",
            "LocalFileSystemKeyProviderFactory".to_string(),
        ),
        ("secret_key_file", key),
        ("secret_key_strength", bits.to_string()),
    ];
    let mut map = (opts.len() as u32).to_le_bytes().to_vec();
    for (k, v) in &opts {
        map.extend_from_slice(&(k.len() as u32).to_le_bytes());
        map.extend_from_slice(k.as_bytes());
        map.extend_from_slice(&(v.len() as u32).to_le_bytes());
        map.extend_from_slice(v.as_bytes());
    }
    let attrs: [(&[u8], Vec<u8>); 2] = [
        (b"scylla_encryption_options", map),
        (b"encrypted_components", 0u32.to_le_bytes().to_vec()),
    ];
    let mut payload = (attrs.len() as u32).to_be_bytes().to_vec();
    for (k, v) in &attrs {
        payload.extend_from_slice(&(k.len() as u32).to_be_bytes());
        payload.extend_from_slice(k);
        payload.extend_from_slice(&(v.len() as u32).to_be_bytes());
        payload.extend_from_slice(v);
    }
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(&3u32.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// `cp` of the ScyllaDB Data.db files and the rekey (all threads) between the two key files,
/// `--runs` interleaved rounds after a warm-up; with `--staged`, each round also stages to the
/// next key and times the window's `rekey --purge-later` that commits the staged copies.
pub fn rounds(
    opts: &BenchOptions,
    root: &Path,
    data: &Path,
    a: &Path,
    b: &Path,
) -> Result<Vec<Measure>> {
    let exe = std::env::current_exe().map_err(|e| Error::Usage(format!("current exe: {e}")))?;
    let table = data.join("bench").join(TABLE);
    let bytes: u64 = data_dbs(&table)?
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let copy_dir = root.join("scylla-copy");
    let mut to_b = true;
    let mut rekey = |cmd: &str, threads: usize, extra: &[&str]| {
        // A stage and the rekey that commits it go to the same key.
        let to = if to_b { b } else { a };
        if cmd == "rekey" {
            to_b = !to_b;
        }
        timed(
            Command::new(&exe)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .args([cmd, "-q", "--jobs", &threads.to_string(), "--to"])
                .arg(format!("file:{}", to.display()))
                .arg("--data-dir")
                .arg(data)
                .args(extra),
        )
    };
    errln!("bench: ScyllaDB warm-up (cp, rekey) ...");
    copy_all_in(&data_dbs(&table)?, &copy_dir, false)?;
    rekey("rekey", opts.threads, &[])?;
    let (mut cp, mut rk) = (Vec::new(), Vec::new());
    let (mut stage, mut window) = (Vec::new(), Vec::new());
    for round in 1..=opts.runs {
        errln!(
            "bench: ScyllaDB round {round} of {} (cp, rekey{}) ...",
            opts.runs,
            if opts.staged {
                ", stage, the window's rekey, purge"
            } else {
                ""
            }
        );
        cp.push(copy_all_in(&data_dbs(&table)?, &copy_dir, false)?);
        rk.push(rekey("rekey", opts.threads, &[])?);
        if opts.staged {
            stage.push(rekey("stage", opts.threads, &[])?);
            window.push(rekey("rekey", opts.threads, &["--purge-later"])?);
            timed(Command::new(&exe).arg("purge").arg("--data-dir").arg(data))?;
        }
    }
    let of = |name: &str, runs: Vec<(f64, f64, u64)>, rss: bool| {
        let peak = runs.iter().map(|r| r.2).max().filter(|_| rss);
        let (secs, user) = runs.iter().map(|r| (r.0, r.1)).unzip();
        Measure::of(name, bytes, secs, user, peak)
    };
    let mut m = vec![
        of("cp Data.db (ScyllaDB)", cp, false),
        of(
            &format!("sstable-rekey rekey ({} threads, ScyllaDB)", opts.threads),
            rk,
            true,
        ),
    ];
    if opts.staged {
        m.push(of("sstable-rekey stage (ScyllaDB)", stage, true));
        m.push(of(
            "sstable-rekey rekey --purge-later (window, ScyllaDB)",
            window,
            true,
        ));
    }
    Ok(m)
}

fn data_dbs(table: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in fs::read_dir(table).map_err(|e| Error::io(table, "list", e))? {
        let e = e.map_err(|e| Error::io(table, "list", e))?;
        if e.file_name().to_string_lossy().ends_with("-Data.db") {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}
