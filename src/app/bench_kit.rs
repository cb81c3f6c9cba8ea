//! What the DSE and the ScyllaDB benches share: the options, a measure, running a timed child,
//! `cp` as the baseline, and row-like plaintext.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;
use sstable_rekey::error::{Error, Result};

pub struct BenchOptions {
    pub dir: PathBuf,
    pub size: u64,
    pub chunk_kib: u32,
    pub bits: u32,
    pub threads: usize,
    pub runs: usize,
    pub keep: bool,
    /// Split the data over this many SSTables (the cp and naive baselines use the first).
    pub sstables: usize,
    /// Measure `stage` and the window's `rekey` too (and `stage --rate` with `stage_rate`).
    pub staged: bool,
    pub stage_rate: Option<f64>,
    /// Also measure the ScyllaDB rekey on a ScyllaDB table of the same size.
    pub scylla: bool,
}

/// Row-like plaintext: repeated words with some noise, compressing about 3:1 with LZ4.
pub(crate) fn row_chunk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            let n = 3 + (next() % 10) as usize;
            (0..n).map(|_| b'a' + (next() % 26) as u8).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        for _ in 0..6 {
            out.extend_from_slice(&words[(next() % 64) as usize]);
            out.push(b' ');
        }
        out.extend_from_slice(&next().to_le_bytes()[..6]);
    }
    out.truncate(len);
    out
}

#[derive(Debug, Serialize)]
pub struct Measure {
    pub name: String,
    /// Median wall seconds over the runs.
    pub seconds: f64,
    /// Best (least disturbed) run.
    pub min_seconds: f64,
    pub gb_per_s: f64,
    pub user_cpu_s: f64,
    pub user_cpu_s_per_gb: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Runs `cmd` to completion: (wall seconds, user CPU seconds, peak RSS KiB); a failure is an error.
pub(crate) fn timed(cmd: &mut Command) -> Result<(f64, f64, u64)> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot run {cmd:?}: {e}")))?;
    let (status, user, rss) = sstable_rekey::fsio::wait_with_rusage(child.id())
        .map_err(|e| Error::Usage(format!("{cmd:?}: wait: {e}")))?;
    let secs = t0.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        return Err(Error::Usage(format!(
            "{cmd:?} failed (status {status}): {err}"
        )));
    }
    Ok((secs, user, rss))
}

impl Measure {
    /// A measure over `bytes` from its samples: medians, and the best wall time.
    pub(crate) fn of(
        name: &str,
        bytes: u64,
        secs: Vec<f64>,
        user: Vec<f64>,
        rss_kib: Option<u64>,
    ) -> Self {
        let min_seconds = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let s = median(secs);
        let u = median(user);
        Measure {
            name: name.to_string(),
            seconds: s,
            min_seconds,
            gb_per_s: bytes as f64 / 1e9 / s,
            user_cpu_s: u,
            user_cpu_s_per_gb: u / (bytes as f64 / 1e9),
            peak_rss_mib: rss_kib.map(|k| k as f64 / 1024.0),
        }
    }
}

/// `cp` of `files` into a scratch folder (then fsync of the copies when `sync`), and removal of
/// the copies.
pub(crate) fn copy_all_in(
    files: &[PathBuf],
    copy_dir: &Path,
    sync: bool,
) -> Result<(f64, f64, u64)> {
    fs::create_dir_all(copy_dir).map_err(|e| Error::io(copy_dir, "create folder", e))?;
    let script = if sync {
        r#"cp -- "$@" "$D"/ && sync "$D"/*"#
    } else {
        r#"cp -- "$@" "$D"/"#
    };
    let r = timed(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(files)
            .env("D", copy_dir),
    );
    let _ = fs::remove_dir_all(copy_dir);
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
