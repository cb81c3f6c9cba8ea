//! A single-fault system-call injector for the real binary (tests/it/fault_sweep.rs): ptrace with a
//! seccomp filter, driven from the test thread itself.
//!
//! Why not `strace -f -e inject=KIND:error=E:when=K`: strace counts invocations "per syscall and per
//! tracee" (strace(1)), and a tracee is a thread. The tool runs a main thread, a job thread and
//! rayon workers, so `when=K` fails the K-th call of *every* thread that makes K calls: one run gets
//! several faults, and a later thread's K-th call is never failed alone (measured: `when=3` on
//! pread64 failed two SSTables in one run). This injector counts each kind over the whole process,
//! all threads together, and fails exactly one call: the K-th.
//!
//! How: before exec the child asks to be traced (`PTRACE_TRACEME`) and installs a seccomp filter
//! that returns `SECCOMP_RET_TRACE` for the kinds of interest, so only those calls stop (fast: the
//! rest run untraced). At each stop the tracer counts the call; for the chosen one it sets the
//! syscall number to -1 (the kernel skips the call) and the return register to `-errno`
//! (seccomp(2): "the system call will appear to return the value that the tracer puts in the
//! return value register"). `close` is the exception: it runs (a real failing close still releases
//! the descriptor) and its result is replaced at the syscall-exit stop.
//!
//! What is counted: only the calls of the tool's own process (the exec of [`super::BIN`]; not those
//! of `unshare`, which puts it in a private PID namespace with its own /proc so that its scan of
//! `/proc/*/fd` sees only itself and call counts repeat from run to run), and only from its first
//! `poll` on: Rust's runtime checks descriptors 0-2 with `poll` before `main`, after the dynamic
//! loader has mapped the shared libraries. Faults in the loader's own calls would only test
//! `ld.so` ("error while loading shared libraries", exit 127).
//!
//! x86_64 only (it reads and writes the registers of that ABI; tests/it/support/mod.rs compiles it
//! only there, and tests/it/fault_sweep.rs with it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use super::{ci_env, Run, BIN};

/// The file-system and I/O system calls the injector can count and fail, by their x86_64 names.
/// Whichever of them the tool makes are swept. (Memory, thread, signal and process-setup calls
/// are not: see tests/it/fault_sweep.rs.)
pub const FILE_KINDS: &[(&str, libc::c_long)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("open", libc::SYS_open),
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("creat", libc::SYS_creat),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("dup", libc::SYS_dup),
    ("dup2", libc::SYS_dup2),
    ("dup3", libc::SYS_dup3),
    ("fcntl", libc::SYS_fcntl),
    ("ioctl", libc::SYS_ioctl),
    ("stat", libc::SYS_stat),
    ("lstat", libc::SYS_lstat),
    ("fstat", libc::SYS_fstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("statfs", libc::SYS_statfs),
    ("fstatfs", libc::SYS_fstatfs),
    ("access", libc::SYS_access),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("lseek", libc::SYS_lseek),
    ("getdents64", libc::SYS_getdents64),
    ("getdents", libc::SYS_getdents),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("sync_file_range", libc::SYS_sync_file_range),
    ("syncfs", libc::SYS_syncfs),
    ("ftruncate", libc::SYS_ftruncate),
    ("truncate", libc::SYS_truncate),
    ("fallocate", libc::SYS_fallocate),
    ("fadvise64", libc::SYS_fadvise64),
    ("flock", libc::SYS_flock),
    ("rename", libc::SYS_rename),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("link", libc::SYS_link),
    ("linkat", libc::SYS_linkat),
    ("symlink", libc::SYS_symlink),
    ("symlinkat", libc::SYS_symlinkat),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("rmdir", libc::SYS_rmdir),
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("readlink", libc::SYS_readlink),
    ("readlinkat", libc::SYS_readlinkat),
    ("chmod", libc::SYS_chmod),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("chown", libc::SYS_chown),
    ("fchown", libc::SYS_fchown),
    ("lchown", libc::SYS_lchown),
    ("fchownat", libc::SYS_fchownat),
    ("utimensat", libc::SYS_utimensat),
    ("getxattr", libc::SYS_getxattr),
    ("lgetxattr", libc::SYS_lgetxattr),
    ("fgetxattr", libc::SYS_fgetxattr),
    ("setxattr", libc::SYS_setxattr),
    ("lsetxattr", libc::SYS_lsetxattr),
    ("fsetxattr", libc::SYS_fsetxattr),
    ("listxattr", libc::SYS_listxattr),
    ("llistxattr", libc::SYS_llistxattr),
    ("flistxattr", libc::SYS_flistxattr),
    ("removexattr", libc::SYS_removexattr),
    ("lremovexattr", libc::SYS_lremovexattr),
    ("fremovexattr", libc::SYS_fremovexattr),
    ("copy_file_range", libc::SYS_copy_file_range),
    ("sendfile", libc::SYS_sendfile),
    ("getcwd", libc::SYS_getcwd),
    ("chdir", libc::SYS_chdir),
    ("fchdir", libc::SYS_fchdir),
    ("getrandom", libc::SYS_getrandom),
];

fn kind_name(nr: libc::c_long) -> Option<&'static str> {
    FILE_KINDS.iter().find(|(_, n)| *n == nr).map(|(k, _)| *k)
}

fn kind_nr(name: &str) -> libc::c_long {
    FILE_KINDS
        .iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("{name}: not a kind the injector knows"))
        .1
}

/// Fail the `nth` (1-based, counted over all threads of the tool) call of `kind` with `errno`.
///
/// EEXIST on a call that creates a name (`openat` with O_CREAT|O_EXCL, `linkat`) is made real
/// when `plant` is set and the name is not a transaction log: the tracer creates the file first,
/// as another process would have, and lets the call fail by itself. The file is then someone
/// else's ([`Traced::planted`]): the tool must leave it alone.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub kind: &'static str,
    pub nth: u64,
    pub errno: i32,
    pub plant: bool,
}

/// What a planted file holds.
pub const PLANTED: &[u8] = b"planted by the fault sweep: another process created this name first\n";

/// One counted call: its kind, its index among the calls of that kind, and what it touched.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: &'static str,
    pub nth: u64,
    /// `openat(/path/of/file) [creat|excl]`, `read(/path/of/fd)`, `getrandom(4096 bytes)`.
    pub what: String,
}

#[derive(Debug)]
pub struct Traced {
    pub run: Run,
    /// Calls per kind made by the tool (every kind of [`FILE_KINDS`] it made).
    pub counts: BTreeMap<&'static str, u64>,
    /// Every counted call in order (with `record`).
    pub calls: Vec<Call>,
    /// The failed call, when the run reached it.
    pub injected: Option<Call>,
    /// The file created under the tool's feet (see [`Fault`]).
    pub planted: Option<PathBuf>,
    pub timed_out: bool,
}

/// Whether the tool can be run in a private PID namespace (`unshare --pid --fork --mount-proc`:
/// root). Without it, its `/proc` scan walks every process of the machine and call counts vary
/// between runs; with CI=true that fails the test instead of silently doing less.
pub fn pid_namespace() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                !ci_env(),
                "CI=true: `unshare --pid --fork --mount-proc` does not work here (it needs root): the fault sweep needs the tool alone in its /proc"
            );
            eprintln!("notice: no private PID namespace (not root?): the tool's /proc scan sees every process, so call counts vary between runs");
        }
        ok
    })
}

/// Runs the tool (`args`, in `cwd`, with `env`) under the injector, counting `kinds` and failing
/// `fault` if given. With `record`, every counted call is described in [`Traced::calls`].
pub fn traced(
    cwd: &Path,
    args: &[String],
    env: &[(&str, &str)],
    kinds: &[&'static str],
    fault: Option<Fault>,
    record: bool,
    timeout: Duration,
) -> Traced {
    let mut stop_nrs: Vec<libc::c_long> = kinds.iter().map(|k| kind_nr(k)).collect();
    if let Some(f) = &fault {
        assert!(kinds.contains(&f.kind), "{}: not among the kinds", f.kind);
    }
    stop_nrs.push(libc::SYS_poll); // the start marker (see the module comment)
    let filter = seccomp_filter(&stop_nrs);
    let tool = fs::canonicalize(BIN).unwrap();

    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut cmd = if pid_namespace() {
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .arg(&tool);
        c
    } else {
        Command::new(&tool)
    };
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: only system calls between fork and exec; `filter` was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn the traced tool");
    let root = child.id() as libc::pid_t;
    // The child is traced by this thread: it stops with SIGTRAP once exec has completed.
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(root, &mut status, libc::__WALL) };
    assert!(
        r == root && libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP,
        "traced child did not stop after exec (status {status:#x})"
    );
    let opts = libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: ptrace requests on our stopped tracee.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SETOPTIONS, root, 0, opts as libc::c_long),
            0,
            "PTRACE_SETOPTIONS: {}",
            std::io::Error::last_os_error()
        );
    }

    // A watchdog: a run that hangs is killed (and reported as such).
    let tool_pid = Arc::new(AtomicI32::new(0));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = {
        let tool_pid = tool_pid.clone();
        std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                // SAFETY: plain kill(2) of processes we started.
                unsafe {
                    let t = tool_pid.load(Ordering::SeqCst);
                    if t > 0 {
                        libc::kill(t, libc::SIGKILL);
                    }
                    libc::kill(root, libc::SIGKILL);
                }
                return true;
            }
            false
        })
    };

    let mut t = Tracer {
        tool,
        tool_tgids: HashSet::new(),
        started: HashSet::new(),
        tgid: HashMap::new(),
        seen: HashSet::from([root]),
        counts: BTreeMap::new(),
        calls: Vec::new(),
        injected: None,
        planted: None,
        pending_exit: HashMap::new(),
        fault,
        record,
        tool_status: None,
        tool_pid: tool_pid.clone(),
    };
    if fs::read_link(format!("/proc/{root}/exe")).ok().as_deref() == Some(t.tool.as_path()) {
        // No namespace: the child exec'd the tool itself (before the options were set).
        t.tool_tgids.insert(root);
        tool_pid.store(root, Ordering::SeqCst);
    }
    cont(root, 0);
    let mut root_status = None;
    loop {
        let mut status = 0;
        // SAFETY: waits only for this thread's own children and tracees (__WNOTHREAD): tests
        // running in parallel threads keep theirs.
        let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
        if tid < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => break,
                _ => panic!("waitpid: {e}"),
            }
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if tid == root {
                root_status = Some(status);
            }
            if tid == tool_pid.load(Ordering::SeqCst) {
                t.tool_status = Some(status);
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        t.stopped(tid, status);
    }
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap();
    let status = t
        .tool_status
        .or(root_status)
        .expect("the traced tool's exit status");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let read_all = |mut f: fs::File| {
        let mut s = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    drop(child);
    Traced {
        run: Run {
            code,
            stdout: read_all(out),
            stderr: read_all(err),
        },
        counts: t.counts,
        calls: t.calls,
        injected: t.injected,
        planted: t.planted,
        timed_out,
    }
}

struct Tracer {
    tool: PathBuf,
    /// Processes that exec'd the tool.
    tool_tgids: HashSet<libc::pid_t>,
    /// Tool processes past their first `poll` (see the module comment).
    started: HashSet<libc::pid_t>,
    tgid: HashMap<libc::pid_t, libc::pid_t>,
    seen: HashSet<libc::pid_t>,
    counts: BTreeMap<&'static str, u64>,
    calls: Vec<Call>,
    injected: Option<Call>,
    planted: Option<PathBuf>,
    /// close: the errno to put in its result at the syscall-exit stop.
    pending_exit: HashMap<libc::pid_t, i32>,
    fault: Option<Fault>,
    record: bool,
    tool_status: Option<i32>,
    tool_pid: Arc<AtomicI32>,
}

fn cont(tid: libc::pid_t, sig: i32) {
    // SAFETY: resuming a stopped tracee (ESRCH when it was killed meanwhile: nothing to do).
    unsafe { libc::ptrace(libc::PTRACE_CONT, tid, 0, sig as libc::c_long) };
}

fn get_regs(tid: libc::pid_t) -> Option<libc::user_regs_struct> {
    // SAFETY: a properly sized out-parameter for a stopped tracee.
    unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        (libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut regs as *mut _) == 0).then_some(regs)
    }
}

fn set_regs(tid: libc::pid_t, regs: &libc::user_regs_struct) {
    // SAFETY: registers read from the same stopped tracee.
    let r = unsafe { libc::ptrace(libc::PTRACE_SETREGS, tid, 0, regs as *const _) };
    assert_eq!(r, 0, "PTRACE_SETREGS: {}", std::io::Error::last_os_error());
}

impl Tracer {
    fn stopped(&mut self, tid: libc::pid_t, status: i32) {
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if !self.seen.contains(&tid) {
            // A new thread or process, auto-attached: its first stop is a SIGSTOP.
            self.seen.insert(tid);
            if sig == libc::SIGSTOP && event == 0 {
                cont(tid, 0);
                return;
            }
        }
        match event {
            libc::PTRACE_EVENT_SECCOMP => {
                self.syscall_entry(tid);
                if !self.pending_exit.contains_key(&tid) {
                    cont(tid, 0);
                } else {
                    // SAFETY: resume to the syscall-exit stop of this call.
                    unsafe { libc::ptrace(libc::PTRACE_SYSCALL, tid, 0, 0) };
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                let exe = fs::read_link(format!("/proc/{tid}/exe")).ok();
                if exe.as_deref() == Some(self.tool.as_path()) {
                    self.tool_tgids.insert(tid);
                    self.tgid.insert(tid, tid);
                    self.tool_pid.store(tid, Ordering::SeqCst);
                }
                cont(tid, 0);
            }
            0 if sig == (libc::SIGTRAP | 0x80) => {
                // The syscall-exit stop of a close whose result is replaced.
                if let Some(errno) = self.pending_exit.remove(&tid) {
                    if let Some(mut regs) = get_regs(tid) {
                        regs.rax = (-(errno as i64)) as u64;
                        set_regs(tid, &regs);
                    }
                }
                cont(tid, 0);
            }
            0 => cont(tid, sig), // a signal for the tracee: deliver it
            _ => cont(tid, 0),   // clone, fork, vfork, exit events
        }
    }

    fn tgid_of(&mut self, tid: libc::pid_t) -> libc::pid_t {
        *self.tgid.entry(tid).or_insert_with(|| {
            fs::read_to_string(format!("/proc/{tid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Tgid:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .unwrap_or(tid)
        })
    }

    fn syscall_entry(&mut self, tid: libc::pid_t) {
        let tgid = self.tgid_of(tid);
        if !self.tool_tgids.contains(&tgid) {
            return;
        }
        let Some(mut regs) = get_regs(tid) else {
            return;
        };
        let nr = regs.orig_rax as libc::c_long;
        if nr == libc::SYS_poll {
            self.started.insert(tgid);
            return;
        }
        if !self.started.contains(&tgid) {
            return;
        }
        let Some(kind) = kind_name(nr) else {
            return;
        };
        let n = self.counts.entry(kind).or_insert(0);
        *n += 1;
        let nth = *n;
        let hit = self.fault.is_some_and(|f| f.kind == kind && f.nth == nth);
        if self.record || hit {
            let call = Call {
                kind,
                nth,
                what: describe(tid, kind, &regs),
            };
            if hit {
                self.injected = Some(call.clone());
            }
            if self.record {
                self.calls.push(call);
            }
        }
        if hit {
            let f = self.fault.unwrap();
            if f.plant && f.errno == libc::EEXIST {
                if let Some(p) = created_name(tid, kind, &regs) {
                    let made = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&p)
                        .and_then(|mut file| std::io::Write::write_all(&mut file, PLANTED));
                    if made.is_ok() {
                        self.planted = Some(p);
                        return; // the call now fails with EEXIST by itself
                    }
                }
            }
            let errno = f.errno;
            if kind == "close" {
                self.pending_exit.insert(tid, errno);
            } else {
                regs.orig_rax = u64::MAX; // -1: skip the call
                regs.rax = (-(errno as i64)) as u64;
                set_regs(tid, &regs);
            }
        }
    }
}

/// A BPF program: `SECCOMP_RET_TRACE` for the system calls `nrs` of the x86_64 ABI, allow the rest.
fn seccomp_filter(nrs: &[libc::c_long]) -> Vec<libc::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let mut f = vec![
        // seccomp_data.arch at offset 4, .nr at offset 0
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    let n = nrs.len();
    for (i, nr) in nrs.iter().enumerate() {
        // Equal: jump to the TRACE return after the remaining comparisons and the ALLOW.
        f.push(jeq(*nr as u32, (n - i) as u8, 0));
    }
    f.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    f.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_TRACE));
    f
}

/// A NUL-terminated string of the tracee's memory (at most 4 KiB).
fn read_string(tid: libc::pid_t, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < 4096 {
        // Up to the end of the page: a read across into an unmapped page would fail.
        let n = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; n];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: n,
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: n,
        };
        // SAFETY: reading a stopped tracee's memory into our own buffer of the given size.
        let got = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
        if got <= 0 {
            break;
        }
        let got = &buf[..got as usize];
        if let Some(end) = got.iter().position(|&b| b == 0) {
            out.extend_from_slice(&got[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(got);
        at += n as u64;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The name a call would create: `openat` with O_CREAT|O_EXCL, the new name of `linkat`; not a
/// transaction log (a foreign file with a log's name would only test log parsing).
fn created_name(tid: libc::pid_t, kind: &str, regs: &libc::user_regs_struct) -> Option<PathBuf> {
    let (dirfd, name) = match kind {
        "openat"
            if regs.rdx as i32 & (libc::O_CREAT | libc::O_EXCL) == libc::O_CREAT | libc::O_EXCL =>
        {
            (regs.rdi, regs.rsi)
        }
        "linkat" => (regs.rdx, regs.r10),
        _ => return None,
    };
    let name = read_string(tid, name)?;
    if name.contains("_txn_") || name.ends_with(".log") {
        return None;
    }
    let dir = if name.starts_with('/') {
        PathBuf::new()
    } else if dirfd as i32 == libc::AT_FDCWD {
        fs::read_link(format!("/proc/{tid}/cwd")).ok()?
    } else {
        fs::read_link(format!("/proc/{tid}/fd/{}", dirfd as i32)).ok()?
    };
    Some(dir.join(name))
}

/// What a call touches: its path(s), or the path behind its descriptor.
fn describe(tid: libc::pid_t, kind: &str, regs: &libc::user_regs_struct) -> String {
    let a = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    let fd_path = |fd: u64| -> String {
        let fd = fd as i32;
        match fd {
            1 => return "stdout".into(),
            2 => return "stderr".into(),
            _ => {}
        }
        let link = if fd == libc::AT_FDCWD {
            format!("/proc/{tid}/cwd")
        } else {
            format!("/proc/{tid}/fd/{fd}")
        };
        fs::read_link(link)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("fd {fd}"))
    };
    let s = |p: u64| read_string(tid, p).unwrap_or_else(|| "NULL".into());
    let at = |dirfd: u64, p: u64| -> String {
        match read_string(tid, p) {
            Some(p) if p.starts_with('/') => p,
            Some(p) if p.is_empty() => fd_path(dirfd),
            Some(p) => format!("{}/{p}", fd_path(dirfd)),
            None => fd_path(dirfd),
        }
    };
    let what = match kind {
        "openat" | "openat2" => {
            let flags = if kind == "openat" { a[2] as i32 } else { 0 };
            let mut f = Vec::new();
            if flags & libc::O_CREAT != 0 {
                f.push("creat");
            }
            if flags & libc::O_EXCL != 0 {
                f.push("excl");
            }
            if flags & libc::O_DIRECTORY != 0 {
                f.push("dir");
            }
            let flags = if f.is_empty() {
                String::new()
            } else {
                format!(" [{}]", f.join("|"))
            };
            format!("{}{flags}", at(a[0], a[1]))
        }
        "newfstatat" | "statx" | "unlinkat" | "mkdirat" | "readlinkat" | "faccessat"
        | "faccessat2" | "fchmodat" | "fchownat" | "utimensat" => at(a[0], a[1]),
        "renameat" | "renameat2" | "linkat" => {
            format!("{} -> {}", at(a[0], a[1]), at(a[2], a[3]))
        }
        "symlinkat" => format!("{} -> {}", s(a[0]), at(a[1], a[2])),
        "rename" | "link" | "symlink" => format!("{} -> {}", s(a[0]), s(a[1])),
        "open" | "creat" | "stat" | "lstat" | "unlink" | "rmdir" | "mkdir" | "readlink"
        | "statfs" | "access" | "chmod" | "chown" | "lchown" | "truncate" | "getxattr"
        | "lgetxattr" | "setxattr" | "lsetxattr" | "listxattr" | "llistxattr" | "removexattr"
        | "lremovexattr" | "chdir" => s(a[0]),
        "copy_file_range" => format!("{} -> {}", fd_path(a[0]), fd_path(a[2])),
        "sendfile" => format!("{} -> {}", fd_path(a[1]), fd_path(a[0])),
        // std seeds its HashMaps with GRND_INSECURE, which never fails on Linux (and std panics if
        // it did); the tool's own IVs and keys use the blocking pool.
        "getrandom" if a[2] as u32 & libc::GRND_INSECURE != 0 => {
            format!("{} bytes [insecure]", a[1])
        }
        "getrandom" => format!("{} bytes", a[1]),
        // A directory's close never reports an I/O error on Linux (nothing to write back), and std
        // asserts that it does not.
        "close" => {
            let p = fd_path(a[0]);
            if fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
                format!("{p} [dir]")
            } else {
                p
            }
        }
        "getcwd" | "close_range" => String::new(),
        _ => fd_path(a[0]),
    };
    format!("{kind}({what})")
}
