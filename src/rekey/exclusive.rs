//! Running alone: no second sstable-rekey on the same data directory (an advisory `flock` on the
//! folder itself, so nothing is created in it), and no other process with the tables' files open
//! (a running Cassandra/DSE node), found by scanning `/proc/*/fd`.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Held for the whole run; the locks go with it.
pub struct DataDirLocks {
    _dirs: Vec<File>,
}

pub fn lock_data_dirs(dirs: &[PathBuf]) -> Result<DataDirLocks> {
    let mut held = Vec::new();
    for d in dirs {
        let f = File::open(d)
            .map_err(|e| Error::Usage(format!("data directory {}: {e}", d.display())))?;
        // SAFETY: flock on a valid descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Usage(format!(
                "another sstable-rekey is working on {} (its lock is held); wait for it to finish",
                d.display()
            )));
        }
        held.push(f);
    }
    Ok(DataDirLocks { _dirs: held })
}

/// Processes other than this one holding files under any of `dirs` open.
pub fn open_by_others(dirs: &[PathBuf]) -> Vec<(u32, String, PathBuf)> {
    let canon: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .collect();
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if canon.iter().any(|d| target.starts_with(d) && target != *d) {
                let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.push((pid, comm.trim().to_string(), target));
                break;
            }
        }
    }
    out
}

/// Refuses to work while another process uses the data directories.
pub fn ensure_alone(dirs: &[PathBuf]) -> Result<DataDirLocks> {
    let locks = lock_data_dirs(dirs)?;
    let others = open_by_others(dirs);
    if let Some((pid, comm, path)) = others.first() {
        return Err(Error::Usage(format!(
            "process {pid} ({comm}) has {} open{}: stop Cassandra/DSE on this node (nodetool drain, then stop the service) before rekeying",
            path.display(),
            if others.len() > 1 { format!(" (and {} more processes)", others.len() - 1) } else { String::new() }
        )));
    }
    Ok(locks)
}
