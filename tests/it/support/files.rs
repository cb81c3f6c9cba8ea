//! Files and folders: scratch copies on a fast file system, tree snapshots to compare before and
//! after a run, modes, free space.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::decrypt::Ci;
use super::sha256;

// ------------------------------------------------------------------ files

pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file (not folder) under `dir`, sorted; symlinks are listed, never followed.
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    v.sort_by_key(|e| e.path());
    for e in v {
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// Every folder under `dir` (relative), sorted.
pub fn dirs(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.insert(e.path().strip_prefix(dir).unwrap().to_path_buf());
                stack.push(e.path());
            }
        }
    }
    out
}

/// Every file under `dir` → SHA-256 of its content (a file that cannot be read counts as empty).
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    tree_read_by(dir, |p| fs::read(p).unwrap_or_default())
}

/// As `tree`, but a file that cannot be read fails the test.
pub fn tree_strict(dir: &Path) -> BTreeMap<String, String> {
    tree_read_by(dir, |p| fs::read(p).unwrap())
}

fn tree_read_by(dir: &Path, read: impl Fn(&Path) -> Vec<u8>) -> BTreeMap<String, String> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                sha256(&read(&p)),
            )
        })
        .collect()
}

pub fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("removed {k}")),
            Some(w) if w != v => out.push(format!("changed {k}")),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            out.push(format!("added {k}"));
        }
    }
    out
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A folder for scratch data on a fast file system: crash and kill tests run hundreds of rekeys
/// whose fsyncs would dominate on a disk. A process crash (not a power loss) leaves the same
/// state on tmpfs as on a disk. `/dev/shm` when writable; else, as root, a tmpfs mounted for it;
/// else the system temp folder (with a notice: slow).
pub struct FastDir {
    tmp: tempfile::TempDir,
    mounted: bool,
}

impl FastDir {
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for FastDir {
    fn drop(&mut self) {
        if self.mounted {
            let c = std::ffi::CString::new(self.tmp.path().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid path; a lazy unmount of our own mount.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Free bytes on the file system of `dir` (0 when unknown).
pub fn free_bytes(dir: &Path) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return 0;
    }
    s.f_bavail as u64 * s.f_frsize as u64
}

pub fn fast_tempdir() -> FastDir {
    let shm = Path::new("/dev/shm");
    // A container's /dev/shm may be 64 MiB: the harnesses need a few hundred MiB at peak.
    if shm.is_dir() && free_bytes(shm) >= 1 << 30 {
        if let Ok(tmp) = tempfile::Builder::new()
            .prefix("sstable-rekey-test")
            .tempdir_in(shm)
        {
            return FastDir {
                tmp,
                mounted: false,
            };
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = std::ffi::CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated strings.
    let mounted = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1g,mode=0700".as_ptr().cast(),
        )
    } == 0;
    if !mounted {
        eprintln!(
            "notice: no /dev/shm and no permission to mount a tmpfs: scratch data on {} (fsyncs make the crash tests slow)",
            tmp.path().display()
        );
    }
    FastDir { tmp, mounted }
}

/// Rewrites every relative `secret_key_file` option under `dir` to `<tree_root>/<value>`
/// (testdata/README.md: "Two things to do after copying"): in the CompressionInfo.db files of
/// DSE/HCD SSTables, and in the Scylla.db files of ScyllaDB ones (whose CompressionInfo.db, if
/// any, is left alone: it holds no options and may be encrypted).
pub fn absolute_key_files(dir: &Path, tree_root: &Path) {
    let mut files = Vec::new();
    walk(dir, &mut files);
    for f in files
        .iter()
        .filter(|f| f.to_str().unwrap().ends_with("-Scylla.db"))
    {
        // ScyllaDB (testdata/scylla/): the options are in Scylla.db, CompressionInfo.db may be
        // encrypted.
        super::scylla::set_secret_key_file(f, |v| {
            (!v.starts_with('/')).then(|| tree_root.join(v).display().to_string())
        });
    }
    for f in files.iter().filter(|f| {
        let name = f.to_str().unwrap();
        name.ends_with("-CompressionInfo.db")
            && !Path::new(&name.replace("-CompressionInfo.db", "-Scylla.db")).exists()
    }) {
        let mut ci = Ci::read(f).unwrap();
        let mut changed = false;
        for (k, v) in ci.options.iter_mut() {
            if k == "secret_key_file" && !v.starts_with('/') {
                *v = tree_root.join(&*v).display().to_string();
                changed = true;
            }
        }
        if changed {
            fs::write(f, ci.serialize()).unwrap();
        }
    }
}

/// The one table folder `<table>-<32 hex digits>` in the keyspace folder `dir`.
pub fn table_dir(dir: &Path, table: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.strip_prefix(table)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|id| id.len() == 32)
        })
        .collect();
    assert_eq!(found.len(), 1, "table {table} in {}", dir.display());
    found[0].clone()
}
