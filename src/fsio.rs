//! The file-system calls that create and remove files on the rekey path, in one room, and the rule
//! they hold: **the tool removes a file only if this process created it in this run** (or when
//! `recover` resolves a transaction log, following Cassandra's rule; see `sstable::txnlog`).
//!
//! [`Created`] is the run's record of what it made: every new file is opened with
//! `O_CREAT|O_EXCL` (or hard-linked, which fails on an existing name too) and remembered by path and
//! inode. A rollback removes exactly those, and only while the name still holds the inode it
//! created; it never lists a folder and deletes by name. A name that is already taken is an error
//! the caller can recognise ([`crate::Error::is_name_taken`]) and answer with another name.
//!
//! New files take the original's mode, owner and extended attributes (SELinux labels, POSIX ACLs,
//! user attributes): a file the node's user cannot read, or that its security policy refuses, is
//! as lost as a deleted one. Any of those that cannot be copied is an error, never ignored.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Files this process created in this run (path and inode), in creation order: the only files a
/// rollback may remove. Each inode is held open until the record is dropped, so that its number
/// cannot be reused by a file someone else creates (a freed inode number is handed out again at
/// once): a name holding that inode is ours.
#[derive(Debug, Default)]
pub struct Created {
    files: Vec<(PathBuf, FileId)>,
    held: Vec<File>,
    /// Files moved in from a staging entry (see [`Created::adopt`]): (their staged path, their
    /// path here, the inode). A rollback moves them back; it never removes them.
    adopted: Vec<(PathBuf, PathBuf, FileId)>,
}

impl Created {
    pub fn new() -> Self {
        Created::default()
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Creates `path` exclusively (an existing name is never opened, truncated or followed) with
    /// the mode, owner and extended attributes of `like` (whose metadata is `like_meta`).
    pub fn create_like(
        &mut self,
        path: &Path,
        like: &Path,
        like_meta: &fs::Metadata,
    ) -> Result<File> {
        let mode = like_meta.mode() & 0o7777;
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o777)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(path, "create", e))?;
        // Remembered before anything else can fail, so that a rollback removes it.
        self.remember(path, &f)?;
        take_owner_and_mode(&f, path, like, like_meta)?;
        copy_xattrs(like, &f, path)?;
        Ok(f)
    }

    /// Creates `path` with `bytes`, durable, like [`Created::create_like`].
    pub fn write_small(
        &mut self,
        path: &Path,
        like: &Path,
        like_meta: &fs::Metadata,
        bytes: &[u8],
    ) -> Result<()> {
        let mut f = self.create_like(path, like, like_meta)?;
        f.write_all(bytes)
            .map_err(|e| Error::io(path, "write", e))?;
        f.sync_all().map_err(|e| Error::io(path, "fsync", e))
    }

    /// Hard-links `from` as the new name `to` (which must not exist). The link shares the inode,
    /// so owner, mode and extended attributes are the original's.
    pub fn hard_link(&mut self, from: &Path, to: &Path) -> Result<()> {
        let src = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_PATH)
            .open(from)
            .map_err(|e| Error::io(from, "open", e))?;
        let meta = src.metadata().map_err(|e| Error::io(from, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::corrupt(
                from,
                "not a regular file: refusing to link it",
            ));
        }
        fs::hard_link(from, to).map_err(|e| Error::io(to, "hard-link", e))?;
        self.files.push((to.to_path_buf(), FileId::of(&meta)));
        self.held.push(src);
        Ok(())
    }

    /// Moves the staged file `from` to the new name `to` (which must not exist: an existing name
    /// is never replaced) and remembers it. A rollback moves it back to `from`, so that a staged
    /// copy outlives a failed commit; it is never removed. Both names must be on one file system.
    pub fn adopt(&mut self, from: &Path, to: &Path) -> Result<()> {
        let meta = fs::symlink_metadata(from).map_err(|e| Error::io(from, "stat", e))?;
        if !meta.is_file() {
            return Err(Error::corrupt(
                from,
                "not a regular file: refusing to move it",
            ));
        }
        rename_noreplace(from, to).map_err(|e| Error::io(to, "create", e))?;
        self.adopted
            .push((from.to_path_buf(), to.to_path_buf(), FileId::of(&meta)));
        Ok(())
    }

    /// Records a file just created at `path` (open as `f`), holding its inode. If its inode cannot
    /// be read, the name is removed at once: it was created exclusively a moment ago, and a name
    /// that cannot be recorded must not outlive the error.
    fn remember(&mut self, path: &Path, f: &File) -> Result<()> {
        let meta = match f.metadata() {
            Ok(m) => m,
            Err(e) => {
                let undo = match fs::remove_file(path) {
                    Ok(()) => String::new(),
                    Err(u) => format!(" (and removing it failed: {u}; remove it by hand)"),
                };
                return Err(Error::io(
                    path,
                    "stat",
                    std::io::Error::new(e.kind(), format!("{e}{undo}")),
                ));
            }
        };
        self.files.push((path.to_path_buf(), FileId::of(&meta)));
        let hold = f.try_clone().map_err(|e| Error::io(path, "hold open", e))?;
        self.held.push(hold);
        Ok(())
    }

    /// Removes every file this run created, newest first, each only while its name still holds
    /// the inode created (a name now holding another file is left alone and reported). The caller
    /// makes the removals durable with [`sync_dir`].
    pub fn remove_all(&mut self) -> Result<()> {
        let mut replaced = Vec::new();
        while let Some((path, id)) = self.files.last().cloned() {
            match fs::symlink_metadata(&path) {
                Ok(m) if FileId::of(&m) == id => match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, "delete partial output", e)),
                },
                Ok(_) => replaced.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, "stat partial output", e)),
            }
            self.files.pop();
        }
        while let Some((staged, path, id)) = self.adopted.last().cloned() {
            match fs::symlink_metadata(&path) {
                Ok(m) if FileId::of(&m) == id => rename_noreplace(&path, &staged)
                    .map_err(|e| Error::io(&staged, "move back staged file", e))?,
                Ok(_) => replaced.push(path.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, "stat staged file", e)),
            }
            self.adopted.pop();
        }
        if replaced.is_empty() {
            self.held.clear();
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "{} no longer hold the files this run created (another process replaced them); left in place: inspect them",
                replaced.join(", ")
            )))
        }
    }

    /// Forgets the files: they now belong to a committed SSTable.
    pub fn keep(&mut self) {
        self.files.clear();
        self.held.clear();
        self.adopted.clear();
    }
}

/// Gives a new file the original's owner and permission bits. Not being allowed to chown is an
/// error: the node's user could not read a file left owned by whoever ran the tool.
fn take_owner_and_mode(f: &File, path: &Path, like: &Path, m: &fs::Metadata) -> Result<()> {
    std::os::unix::fs::fchown(f, Some(m.uid()), Some(m.gid())).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            Error::Usage(format!(
                "{}: cannot give it the owner {}:{} of {} (not permitted): run sstable-rekey as root or as the owner of the data files",
                path.display(),
                m.uid(),
                m.gid(),
                like.display()
            ))
        } else {
            Error::io(path, "chown", e)
        }
    })?;
    // After chown, which clears set-id bits.
    f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(|e| Error::io(path, "chmod", e))
}

/// Largest list of attribute names, and largest value, Linux allows (XATTR_LIST_MAX, XATTR_SIZE_MAX).
const XATTR_MAX: usize = 65536;

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Usage(format!("{}: path contains a NUL byte", p.display())))
}

/// Calls `get(buf)` (a list/get xattr call: size query with an empty buffer, then the read) until
/// the value fits; `Ok(None)` when the file system has no extended attributes.
fn read_sized(mut get: impl FnMut(&mut [u8]) -> isize) -> std::io::Result<Option<Vec<u8>>> {
    for _ in 0..4 {
        let n = get(&mut []);
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; (n as usize).min(XATTR_MAX)];
        let got = get(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // Grew between the two calls: ask again.
    }
    Err(std::io::Error::from_raw_os_error(libc::ERANGE))
}

/// Copies every extended attribute of `from` (not following a link) to the open file `to`.
fn copy_xattrs(from: &Path, to: &File, to_path: &Path) -> Result<()> {
    let src = c_path(from)?;
    let fail = |what: String, e: std::io::Error| {
        Error::io(
            to_path,
            "copy extended attributes",
            std::io::Error::new(e.kind(), format!("{what} (from {}): {e}", from.display())),
        )
    };
    let list = read_sized(|buf| {
        // SAFETY: src is NUL-terminated; buf is a valid writable buffer of buf.len() bytes (or
        // empty with a null-equivalent dangling pointer and size 0, which asks for the size).
        unsafe { libc::llistxattr(src.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })
    .map_err(|e| fail("list".into(), e))?;
    let Some(list) = list else { return Ok(()) };
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("split at NUL");
        let shown = String::from_utf8_lossy(name).into_owned();
        let value = read_sized(|buf| {
            // SAFETY: both strings are NUL-terminated; buf as above.
            unsafe {
                libc::lgetxattr(
                    src.as_ptr(),
                    cname.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        })
        .map_err(|e| fail(format!("read {shown}"), e))?
        .unwrap_or_default();
        // SAFETY: a descriptor we own, a NUL-terminated name, and value's bytes.
        let r = unsafe {
            libc::fsetxattr(
                to.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            return Err(fail(
                format!("set {shown}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Renames `from` to `to` only if `to` does not exist (`renameat2` with `RENAME_NOREPLACE`).
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let (f, t) = (c_path_io(from)?, c_path_io(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn c_path_io(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte in path"))
}

/// Makes this process polite to a node serving traffic on the same disks: CPU nice 10 and the
/// lowest best-effort I/O priority (class BE, level 7), or the idle I/O class with `idle`.
pub fn lower_priority(idle: bool) -> std::io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    let prio = match idle {
        true => IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        false => (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7,
    };
    // SAFETY: ioprio_set on this process (who = 0) with a valid priority value.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: setpriority on this process; raising its own nice value is always allowed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// fsync a folder so that entries created, renamed or removed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io(dir, "open folder for fsync", e))?;
    f.sync_all().map_err(|e| Error::io(dir, "fsync folder", e))
}

/// Free bytes for unprivileged writers on the file system holding `dir`, and its id.
pub fn free_space(dir: &Path) -> Result<(u64, u64)> {
    let c = c_path(dir)?;
    // SAFETY: a plain-old-data struct for the kernel to fill.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and s a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(Error::io(dir, "statvfs", std::io::Error::last_os_error()));
    }
    Ok((s.f_bavail as u64 * s.f_frsize as u64, s.f_fsid as u64))
}

/// A name beside `path` that no one else uses: `.<name>.<pid>.<random>.<what>`.
fn private_sibling(path: &Path, what: &str) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut r = [0u8; 8];
    crate::crypto::random::fill(&mut r)?;
    Ok(dir.join(format!(
        ".{name}.{}.{:016x}.{what}",
        std::process::id(),
        u64::from_le_bytes(r)
    )))
}

/// Creates a new file of our own (never an existing one) and writes `bytes` to it, durably.
fn create_private(created: &mut Created, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, "create", e))?;
    created.remember(path, &f)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, "write", e))
}

/// Writes a small output of the front end (a JSON report) to a new file beside `path` and renames
/// it over `path`: the only existing file ever replaced is the one the operator named.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = private_sibling(path, "tmp")?;
    let mut created = Created::new();
    let written = create_private(&mut created, &tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename into place", e)));
    if written.is_err() {
        let _ = created.remove_all();
    }
    written
}

/// Checks, before any work, that [`replace_file`] will be able to write `path`: its folder takes a
/// new file, and `path` is not a folder. Creates and removes a file of its own; touches nothing else.
pub fn check_replaceable(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!("{} is a folder", path.display())));
    }
    let probe = private_sibling(path, "probe")?;
    let mut created = Created::new();
    let r = create_private(&mut created, &probe, b"");
    created.remove_all()?;
    r
}

/// Makes the process non-dumpable: no core file (which could hold key material), and no ptrace by
/// other unprivileged processes.
pub fn no_core_dumps() {
    // SAFETY: prctl with constant arguments changes only this process's dumpable flag.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Installs `handler` for SIGINT. The handler must be async-signal-safe (an atomic store).
pub fn on_sigint(handler: extern "C" fn(libc::c_int)) {
    // SAFETY: installs a handler for SIGINT; the caller's handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
    }
}

// ------------------------------------------------------------------ locks, hints, users, rusage

/// Takes an advisory lock on `f` without waiting (`exclusive`, or shared): `Ok(false)` when
/// another process holds a conflicting one.
pub fn try_lock(f: &File, exclusive: bool) -> std::io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a valid descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Starts writeback of `len` bytes of `dst` at `off` (durability still comes from the final
/// fsync). An I/O error or a full disk is returned (the final fsync would report it too); a file
/// system without the call (`EINVAL`, `ENOSYS`, `ESPIPE`) just has no hint.
pub fn start_writeback(dst: &File, off: u64, len: usize) -> std::io::Result<()> {
    // SAFETY: a call on a valid descriptor with an in-file range.
    let r = unsafe {
        libc::sync_file_range(
            dst.as_raw_fd(),
            off as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ESPIPE)
        ) {
            return Err(e);
        }
    }
    Ok(())
}

/// Drops `range` of `src` from the page cache (advisory: a failure only keeps pages it could
/// have dropped).
pub fn drop_cached(src: &File, range: &std::ops::Range<u64>) {
    // SAFETY: advisory call on a valid descriptor with an in-file range.
    unsafe {
        libc::posix_fadvise(
            src.as_raw_fd(),
            range.start as libc::off_t,
            (range.end - range.start) as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Tells the kernel `f` is read once, front to back (larger read-ahead; advisory).
pub fn advise_sequential(f: &File) {
    // SAFETY: advisory call on a valid descriptor.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// Name and primary group of `uid` from the passwd database.
pub fn passwd(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid and sized; on success `res` points at `pw`.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, pw.pw_gid))
}

/// The groups a process of `uid` has: its primary and supplementary groups from the system's
/// databases; without a passwd entry, `gid` (the data files' group) alone.
pub fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let Some((name, primary)) = passwd(uid) else {
        return vec![gid];
    };
    let Ok(c) = CString::new(name) else {
        return vec![primary];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut v = vec![0 as libc::gid_t; n as usize];
        let want = n;
        // SAFETY: `v` holds `n` gids; getgrouplist updates `n` to the count (or the need).
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), primary, v.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            v.truncate(n as usize);
            return v;
        }
        if n <= want {
            n = want * 2;
        }
        if n > 1 << 16 {
            return vec![primary];
        }
    }
}

/// This process's effective and supplementary groups.
pub fn own_groups() -> Vec<u32> {
    // SAFETY: a query without side effects.
    let mut v = vec![unsafe { libc::getegid() }];
    // SAFETY: with size 0, getgroups only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n > 0 {
        let mut g = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `g` holds `n` gids.
        let m = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
        if m > 0 {
            g.truncate(m as usize);
            v.extend(g);
        }
    }
    v
}

/// Waits for child `pid`; returns its wait status and user CPU seconds and peak RSS (KiB).
pub fn wait_with_rusage(pid: u32) -> std::io::Result<(i32, f64, u64)> {
    let mut status = 0;
    // SAFETY: a plain-old-data struct for the kernel to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    if r != pid as libc::pid_t {
        return Err(std::io::Error::last_os_error());
    }
    let user = ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6;
    Ok((status, user, ru.ru_maxrss as u64))
}

/// User CPU seconds this process has used.
pub fn own_user_cpu() -> f64 {
    // SAFETY: a plain-old-data struct for the kernel to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_removes_only_what_it_created() {
        let d = tempfile::tempdir().unwrap();
        let like = d.path().join("orig");
        fs::write(&like, b"orig").unwrap();
        let meta = fs::metadata(&like).unwrap();
        let mut c = Created::new();
        c.write_small(&d.path().join("new1"), &like, &meta, b"x")
            .unwrap();
        // A name that exists is never opened: the error says so and nothing is recorded.
        let e = c.write_small(&like, &like, &meta, b"y").unwrap_err();
        assert!(e.is_name_taken(), "{e}");
        assert_eq!(fs::read(&like).unwrap(), b"orig");
        c.hard_link(&like, &d.path().join("link")).unwrap();
        // Another process replaces one of ours: it is left alone.
        fs::remove_file(d.path().join("new1")).unwrap();
        fs::write(d.path().join("new1"), b"theirs").unwrap();
        let e = c.remove_all().unwrap_err();
        assert!(e.to_string().contains("new1"), "{e}");
        assert_eq!(fs::read(d.path().join("new1")).unwrap(), b"theirs");
        assert!(!d.path().join("link").exists());
        assert_eq!(fs::read(&like).unwrap(), b"orig");
    }

    #[test]
    fn new_files_carry_the_originals_extended_attributes() {
        let d = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let like = d.path().join("orig");
        fs::write(&like, b"orig").unwrap();
        let c = c_path(&like).unwrap();
        let name = CString::new("user.sstable_rekey_test").unwrap();
        // SAFETY: valid strings and a 3-byte value.
        let set =
            unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"abc".as_ptr().cast(), 3, 0) };
        if set != 0 {
            eprintln!(
                "notice: {} has no user extended attributes ({}); nothing to copy",
                d.path().display(),
                std::io::Error::last_os_error()
            );
            return;
        }
        let meta = fs::metadata(&like).unwrap();
        let new = d.path().join("new");
        Created::new()
            .write_small(&new, &like, &meta, b"x")
            .unwrap();
        let n = c_path(&new).unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: valid strings and an 8-byte buffer.
        let got = unsafe {
            libc::getxattr(
                n.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(got, 3);
        assert_eq!(&buf[..3], b"abc");
    }
}
