//! An LD_PRELOAD shim for fault injection into the real binary, compiled at test time with the C
//! compiler that links Rust on Linux (`cc`). It interposes the libc calls the tool makes and,
//! driven by environment variables, fails some of them:
//!
//! - `SHIM_OP` = `pread` | `pwrite` | `fsync` (fsync and fdatasync): the call to fail, on a file
//!   descriptor whose `/proc/self/fd` target contains `SHIM_PATH` (equals it with `SHIM_EXACT=1`);
//!   the first `SHIM_AFTER` matching calls pass (default 0); then every later one fails, or only
//!   that one with `SHIM_ONCE=1`; with `SHIM_ERRNO` (default EIO), or, for pread with
//!   `SHIM_SHORT=1`, a short read (0 bytes: end of file).
//! - `SHIM_OP=race`: another process winning a race for a name: the `SHIM_AFTER`-th (default 0)
//!   exclusive create (`open64` with `O_CREAT|O_EXCL`) of a path containing `SHIM_PATH` first
//!   creates that file itself with the content `foreign\n`, so the tool's create finds it taken.
//! - `SHIM_LOG`: a file getting one line `<op> <ok|FAIL> <path>` per matching call.
//! - `SHIM_STATVFS_EXTRA=N`: statvfs reports N more free bytes than there are (a free-space check
//!   that passed just before another process filled the disk).
//! - `SHIM_GETRANDOM` = `zero` (the OS generator returns zeros) | `fail4096` (requests of 4096 bytes,
//!   the IV batches, fail with EIO).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/statvfs.h>

static long counter;

static const char *env(const char *k) { const char *v = getenv(k); return v ? v : ""; }

static void note(const char *op, const char *path, int failed) {
    const char *log = getenv("SHIM_LOG");
    if (!log) return;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    char line[4400];
    int n = snprintf(line, sizeof line, "%s %s %s\n", op, failed ? "FAIL" : "ok", path);
    if (n > 0) { ssize_t w = write(fd, line, (size_t)n); (void)w; }
    close(fd);
}

/* 1 when this call must fail. */
static int trip(const char *op, int fd) {
    if (strcmp(env("SHIM_OP"), op) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(link, path, sizeof path - 1);
    if (k < 0) return 0;
    path[k] = 0;
    const char *want = env("SHIM_PATH");
    if (!*want) return 0;
    if (*env("SHIM_EXACT") ? strcmp(path, want) != 0 : strstr(path, want) == NULL) return 0;
    long after = atol(env("SHIM_AFTER"));
    long n = __atomic_fetch_add(&counter, 1, __ATOMIC_SEQ_CST);
    int fail = *env("SHIM_ONCE") ? n == after : n >= after;
    note(op, path, fail);
    return fail;
}

static int err(void) { return *env("SHIM_ERRNO") ? atoi(env("SHIM_ERRNO")) : EIO; }

int open64(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...);
    if (!real) real = dlsym(RTLD_NEXT, "open64");
    mode_t mode = 0;
    if (flags & O_CREAT) { va_list ap; va_start(ap, flags); mode = (mode_t)va_arg(ap, int); va_end(ap); }
    if ((flags & O_CREAT) && (flags & O_EXCL) && strcmp(env("SHIM_OP"), "race") == 0
        && *env("SHIM_PATH") && strstr(path, env("SHIM_PATH"))) {
        long n = __atomic_fetch_add(&counter, 1, __ATOMIC_SEQ_CST);
        if (n == atol(env("SHIM_AFTER"))) {
            int fd = real(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd >= 0) { ssize_t w = write(fd, "foreign\n", 8); (void)w; close(fd); }
            note("race", path, 1);
        }
    }
    return real(path, flags, mode);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t off) {
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pread64");
    if (trip("pread", fd)) {
        if (*env("SHIM_SHORT")) return 0;
        errno = err();
        return -1;
    }
    return real(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "pwrite64");
    if (trip("pwrite", fd)) { errno = err(); return -1; }
    return real(fd, buf, count, off);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fsync");
    if (trip("fsync", fd)) { errno = err(); return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    if (trip("fsync", fd)) { errno = err(); return -1; }
    return real(fd);
}

int statvfs(const char *path, struct statvfs *s) {
    static int (*real)(const char *, struct statvfs *);
    if (!real) real = dlsym(RTLD_NEXT, "statvfs");
    int r = real(path, s);
    if (r == 0 && *env("SHIM_STATVFS_EXTRA") && s->f_frsize) {
        unsigned long long add = strtoull(env("SHIM_STATVFS_EXTRA"), 0, 10) / s->f_frsize;
        s->f_bavail += add;
        s->f_bfree += add;
    }
    return r;
}

ssize_t getrandom(void *buf, size_t n, unsigned int flags) {
    static ssize_t (*real)(void *, size_t, unsigned int);
    if (!real) real = dlsym(RTLD_NEXT, "getrandom");
    const char *m = env("SHIM_GETRANDOM");
    if (!strcmp(m, "zero")) { memset(buf, 0, n); return (ssize_t)n; }
    if (!strcmp(m, "fail4096") && n == 4096) { errno = EIO; return -1; }
    return real(buf, n, flags);
}
"#;

/// The compiled shim, or None (with a notice) when no C compiler works; with CI=true that fails.
pub fn shim() -> Option<PathBuf> {
    static SO: OnceLock<Option<PathBuf>> = OnceLock::new();
    SO.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let exe = std::env::current_exe().unwrap();
        let tag = exe.file_name().unwrap().to_str().unwrap().to_string();
        let c = dir.join(format!("fault_shim_{tag}.c"));
        let so = dir.join(format!("fault_shim_{tag}.so"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&c, SOURCE).unwrap();
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&so)
            .arg(&c)
            .arg("-ldl")
            .output();
        match out {
            Ok(o) if o.status.success() => Some(so),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    !super::ci_env(),
                    "CI=true: the fault-injection shim does not compile: {why}"
                );
                eprintln!("notice: no C compiler for the fault-injection shim ({why}); those checks do not run");
                None
            }
        }
    })
    .clone()
}
