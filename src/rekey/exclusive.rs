//! Running alone: no second sstable-rekey on the same data directory (an advisory `flock` on the
//! folder itself, so nothing is created in it), and no other process with the tables' files open
//! (a running Cassandra/DSE node), found by scanning `/proc/*/fd`. And a data directory no one
//! else can rearrange: none of the folders this tool writes in is writable by other users, and no
//! symbolic link leads out of it where the tool looks for SSTables. Every subfolder of a keyspace
//! folder counts as a table folder here, the pre-2.1 `<keyspace>/<table>/` included.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsio;

/// Held for the whole run; the locks go with it.
pub struct DataDirLocks {
    _dirs: Vec<File>,
}

/// Takes the exclusive lock (rekey, recover) on every data directory, or says who holds it.
pub fn lock_data_dirs(dirs: &[PathBuf]) -> Result<DataDirLocks> {
    lock(dirs, true, |d| {
        format!(
            "another sstable-rekey is working on {} (its lock is held); wait for it to finish",
            d.display()
        )
    })
}

/// Takes the shared lock (verify, and kmip destroy's in-use check): several readers at once, but
/// never while a rekey or recover changes the folders, whose transaction logs would otherwise look
/// like an interrupted run.
pub fn lock_data_dirs_shared(dirs: &[PathBuf]) -> Result<DataDirLocks> {
    lock(dirs, false, |d| {
        format!(
            "another sstable-rekey run (rekey or recover) is working on {} and holds its lock; wait for it to finish, then verify",
            d.display()
        )
    })
}

fn lock(
    dirs: &[PathBuf],
    op_exclusive: bool,
    held_by_other: impl Fn(&Path) -> String,
) -> Result<DataDirLocks> {
    let mut held = Vec::new();
    for d in dirs {
        let f = File::open(d)
            .map_err(|e| Error::Usage(format!("data directory {}: {e}", d.display())))?;
        match fsio::try_lock(&f, op_exclusive) {
            Ok(true) => {}
            Ok(false) => return Err(Error::Usage(held_by_other(d))),
            Err(e) => return Err(Error::io(d, "lock data directory", e)),
        }
        held.push(f);
    }
    Ok(DataDirLocks { _dirs: held })
}

/// An error reading `/proc` that means the process is gone (exited while the scan ran), not that
/// the check could not be made.
fn process_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

/// Processes other than this one holding files under any of `dirs` open. Processes that exit while
/// the scan runs are passed over, and so are descriptors this user may not read (`EACCES`: another
/// user's process when not run as root, or one the kernel hides, such as another namespace's);
/// any other error fails the check rather than pass it unchecked.
pub fn open_by_others(dirs: &[PathBuf]) -> Result<Vec<(u32, String, PathBuf)>> {
    let mut canon = Vec::with_capacity(dirs.len());
    for d in dirs {
        canon.push(fs::canonicalize(d).map_err(|e| Error::io(d, "resolve path", e))?);
    }
    let me = std::process::id();
    let mut out = Vec::new();
    let proc = Path::new("/proc");
    let procs = fs::read_dir(proc).map_err(|e| Error::io(proc, "list processes", e))?;
    for p in procs {
        let p = p.map_err(|e| Error::io(proc, "list processes", e))?;
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue; // not a process entry (/proc/self, /proc/meminfo, ...)
        };
        if pid == me {
            continue;
        }
        let fd_dir = p.path().join("fd");
        let fds = match fs::read_dir(&fd_dir) {
            Ok(f) => f,
            Err(e) if process_gone(&e) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => return Err(Error::io(&fd_dir, "list open files", e)),
        };
        for fd in fds {
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) if process_gone(&e) => break,
                Err(e) => return Err(Error::io(&fd_dir, "list open files", e)),
            };
            let target = match fs::read_link(fd.path()) {
                Ok(t) => t,
                // The descriptor was closed, or the process exited, between listing and reading.
                Err(e) if process_gone(&e) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
                Err(e) => return Err(Error::io(fd.path(), "read open file", e)),
            };
            if canon.iter().any(|d| target.starts_with(d) && target != *d) {
                let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.push((pid, comm.trim().to_string(), target));
                break;
            }
        }
    }
    Ok(out)
}

/// Refuses a folder other users may write in: they could swap SSTables, plant transaction logs
/// or symbolic links under a tool that runs as root or as the Cassandra user.
fn check_not_writable_by_others(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(Error::Usage(format!(
            "{} is writable by other users (mode {mode:04o}): anyone could replace SSTables or plant transaction logs there. Run `chmod o-w {}` first",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses a symbolic link where SSTables are looked for. The tool never follows one (a symlinked
/// keyspace, table or index folder, or SSTable file, is not seen at all), so its SSTables would
/// silently stay under the old key; one that leads out of the data directory would also make the
/// tool read and write outside it.
fn refuse_symlink(link: &Path, root: &Path) -> Error {
    let target = fs::canonicalize(link)
        .map(|t| {
            if t.starts_with(root) {
                format!(" (to {})", t.display())
            } else {
                format!(
                    " (to {}, outside the data directory {})",
                    t.display(),
                    root.display()
                )
            }
        })
        .unwrap_or_else(|_| " (dangling)".to_string());
    Error::Usage(format!(
        "{} is a symbolic link{target}: sstable-rekey never follows symbolic links in a data directory, and would leave what it leads to under the old key. Move the data into the data directory (or pass the real location with --data-dir) first",
        link.display()
    ))
}

/// The entries of a folder: (path, is a symlink, is a directory without following links).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, bool, bool)>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        let t = e.file_type().map_err(|x| Error::io(e.path(), "stat", x))?;
        out.push((e.path(), t.is_symlink(), t.is_dir()));
    }
    out.sort();
    Ok(out)
}

/// Refuses a symbolic link where SSTables are looked for: a keyspace, table or index folder, or
/// an SSTable file of a live folder (see [`ensure_alone`]). For `verify` too: what it cannot see
/// must not pass as verified.
pub fn refuse_symlinks(dirs: &[PathBuf]) -> Result<()> {
    check_layout(dirs, false)
}

/// Checks the folders sstable-rekey reads and writes: each data directory, its keyspace folders,
/// their table folders and the tables' index folders (snapshots and backups are never written).
/// None of them, and no SSTable file in a live folder, may be a symbolic link; with `writers`,
/// none may be writable by others either.
fn check_layout(dirs: &[PathBuf], writers: bool) -> Result<()> {
    let others = |dir: &Path, meta: &fs::Metadata| {
        if writers {
            check_not_writable_by_others(dir, meta)
        } else {
            Ok(())
        }
    };
    for d in dirs {
        // A data directory whose path cannot be resolved fails the check rather than skip it;
        // one that does not exist is reported where it is read.
        let root = match fs::canonicalize(d) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(d, "resolve path", e)),
        };
        let meta = fs::metadata(&root).map_err(|e| Error::io(&root, "stat", e))?;
        if !meta.is_dir() {
            continue;
        }
        others(d, &meta)?;
        for (ks, ks_link, ks_dir) in entries(d)? {
            if ks_link && fs::metadata(&ks).is_ok_and(|m| m.is_dir()) {
                return Err(refuse_symlink(&ks, &root));
            }
            if !ks_dir {
                continue;
            }
            others(
                &ks,
                &fs::symlink_metadata(&ks).map_err(|e| Error::io(&ks, "stat", e))?,
            )?;
            for (table, t_link, t_dir) in entries(&ks)? {
                if t_link && fs::metadata(&table).is_ok_and(|m| m.is_dir()) {
                    return Err(refuse_symlink(&table, &root));
                }
                if !t_dir {
                    continue;
                }
                check_live_folder(&table, &root, writers)?;
                for (sub, s_link, s_dir) in entries(&table)? {
                    // By bytes: an index folder whose name is not UTF-8 is checked too.
                    let is_index = sub
                        .file_name()
                        .is_some_and(|n| n.as_bytes().starts_with(b"."));
                    if is_index && s_link && fs::metadata(&sub).is_ok_and(|m| m.is_dir()) {
                        return Err(refuse_symlink(&sub, &root));
                    }
                    if is_index && s_dir {
                        check_live_folder(&sub, &root, writers)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A table or index folder: no symlinked SSTable file (and, with `writers`, not writable by
/// others).
fn check_live_folder(dir: &Path, root: &Path, writers: bool) -> Result<()> {
    if writers {
        check_not_writable_by_others(
            dir,
            &fs::symlink_metadata(dir).map_err(|e| Error::io(dir, "stat", e))?,
        )?;
    }
    for (f, link, _) in entries(dir)? {
        // A link whose name is not UTF-8 is refused too (what it leads to cannot be told apart
        // from an SSTable component).
        let name = f.file_name().unwrap_or_default();
        let sstable_like = name
            .to_str()
            .is_none_or(|n| crate::sstable::Descriptor::parse_file_name(dir, n).is_some());
        if link && sstable_like {
            return Err(refuse_symlink(&f, root));
        }
    }
    Ok(())
}

/// Refuses to work while another process uses the data directories, or when others could
/// rearrange them (see [`check_layout`]).
pub fn ensure_alone(dirs: &[PathBuf]) -> Result<DataDirLocks> {
    let locks = lock_data_dirs(dirs)?;
    check_layout(dirs, true)?;
    // A holder must still hold after a short wait: a process forked by a program that had a
    // table file open holds a copy of that descriptor only until it execs (milliseconds), while
    // Cassandra or a copy in progress keeps it.
    let mut others = open_by_others(dirs)?;
    for _ in 0..3 {
        if others.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        let again = open_by_others(dirs)?;
        others.retain(|(pid, _, _)| again.iter().any(|(p, _, _)| p == pid));
    }
    if let Some((pid, comm, path)) = others.first() {
        return Err(Error::Usage(format!(
            "process {pid} ({comm}) has {} open{}: stop Cassandra/DSE on this node (nodetool drain, then stop the service) before rekeying",
            path.display(),
            if others.len() > 1 { format!(" (and {} more processes)", others.len() - 1) } else { String::new() }
        )));
    }
    Ok(locks)
}
