//! Systematic fault sweep (issue 10): every call of every file-system and I/O system call the real
//! binary makes on a small data set fails once, alone; after each, nothing may be lost, nothing
//! foreign touched, nothing left over, and the exit status must tell the truth. The model is
//! SQLite's I/O-error tests: fail the N-th operation for every N, and check the database after each.
//!
//! The data set (tmpfs scratch, `support::DataSet`): `edge.t_snap` (a live SSTable, the index
//! folder `.t_idx/` with its own SSTable, and `snapshots/snap1/` with copies of both) and
//! `matrix.t_Encryptor_kmip_CBC_128`, all under KMIP key `old-128`; the target is
//! `kmip://kmip1/new-128` through the offline keyring. Plus decoys that sit in the tool's folders and
//! must never be removed or changed: an incomplete SSTable at the next generation's name
//! (`nb-2-big-Index.db` + `nb-2-big-TOC.txt`, no Data.db: find does not take it for an SSTable, a
//! naive "highest SSTable + 1" collides with it), an SSTable-like file of another version
//! (`ma-2-big-Filter.db`), an incomplete SSTable in the index folder, the table's highest
//! generation in its snapshot (`nb-4-big-Summary.db`: a new generation that forgets the snapshots
//! would collide on restore), and operators' files in a table and a keyspace folder.
//!
//! Commands swept, each injection point on its own scratch copy, two at a time:
//! - `rekey --jobs 1 --report FILE`;
//! - `recover` on a log without COMMIT and on one with COMMIT, left by a rekey crashed at the
//!   failpoint `txn.remove` / `txn.commit` (test-only `failpoints` feature);
//! - `stage --jobs 1 --report FILE` (the rewrite before the window): it must write nothing outside
//!   its staging folder, and whatever the fault left there, an unfaulted `stage` then `rekey` must
//!   end with every SSTable once under the new key and the staging folder gone (a name planted in
//!   the staging folder is the tool's to remove: the folder is its own);
//! - `rekey` committing the copies an unfaulted `stage` made of the same copy: the staged files are
//!   moved in (renames), moved back on a failure, their entries removed; after `recover`, an
//!   unfaulted `rekey` must end with every SSTable once under the new key and no staging folder;
//! - `purge --report FILE` after an unfaulted `stage` and `rekey --purge-later` of the same copy:
//!   it may delete nothing but the old files in `.sstable-rekey-obsolete/` (everything else
//!   byte-identical, the files planted there by "another process" included... as the only
//!   non-component names there, they stop the purge), and an unfaulted `purge` must then finish;
//! - `verify --key NEW --report FILE` on four trees: everything under the old key, one table rekeyed and the
//!   other not (both ways), and every live SSTable rekeyed (the snapshot still under the old key).
//! - ScyllaDB (`fault_sweep/scylla.rs`, its own data set: `scylla_edge.t_snap` with its snapshot
//!   and one SSTable of `scylla_matrix.t_kmip_CBC_128`, to `file:keys/new.key`): `rekey-scylla`
//!   (the swap of FORMAT.md 4.9 under its journal) and `recover-scylla-doomed` /
//!   `recover-scylla-committed` (`recover` of the journal a rekey crashed at the failpoint
//!   `scylla.doomed` / `scylla.committed` left), judged by ScyllaDB's startup rule
//!   (`support::scylla_boot`: every original SSTable loaded exactly once, by its SSTableIdentifier,
//!   before and after `recover`, and `recover` resolving as a start would), the ScyllaDB oracle,
//!   leftovers, foreign files and the exit status (that file's comment says how); then an
//!   unfaulted `rekey` must finish the job. On a smaller ScyllaDB set (the first SSTable of each
//!   of those tables: one under the local key, one under KMIP), `stage-scylla` (`stage`: no table
//!   folder changes, every entry left whole and valid, then an unfaulted `rekey` finishes, the
//!   oracle judging what it committed) and `rekey-scylla-staged` (`rekey` committing what an
//!   unfaulted `stage` of the same copy made: judged as `rekey-scylla`, plus the staging and
//!   obsolete folders: a staged file may go stale but never change under its size, and only
//!   replaced original generations are moved aside).
//!
//! Injection: tests/it/support/inject.rs (ptrace + seccomp; one fault per run: strace's `when=K`
//! counts per thread and fails the K-th call of every thread). A counting run lists the tool's
//! calls per kind (twice: the counts must repeat, and the unfaulted run must itself pass every
//! check); then, for every kind of `FILE_KINDS` the tool makes and every call index k of that kind,
//! one run fails exactly the k-th call: with EIO; also EMFILE and EEXIST for openat and EEXIST for
//! linkat (when the call creates a name, the test really creates that file first, as another
//! process that got there between the scan and the create would have: it must survive untouched),
//! ENOSPC for write/pwrite64/fallocate, and EINTR for read/pread64/write/pwrite64 (the tool must
//! retry: the run must end as if nothing had happened). The tool runs with `RAYON_NUM_THREADS=1`
//! and `--jobs 1` so that its calls come in one repeatable order (the k-th openat opens the same
//! file in every run), in a private PID namespace so that its `/proc` scan sees only itself.
//!
//! Not swept, on purpose: memory calls (mmap, munmap, mprotect, mremap, madvise, brk: allocation
//! is not file-system I/O, and Rust aborts on allocation failure by design), thread calls (clone,
//! clone3, futex, set_robust_list, rseq, gettid, sched_yield, sched_getaffinity, set_tid_address:
//! the runtime's machinery; std panics by design when a thread cannot be spawned), signal calls
//! (rt_sigaction, rt_sigprocmask, sigaltstack, rt_sigreturn), process setup (execve, arch_prctl,
//! prlimit64, prctl, getpid, the `poll` of descriptors 0-2 before `main`, exit_group), and the
//! dynamic loader's calls before `main` (they would test ld.so, not the tool). Two errors Linux
//! never returns are not injected either (see `impossible`): EIO from closing a directory (nothing
//! to write back; std asserts it cannot happen) and from `getrandom(GRND_INSECURE)` (std's HashMap
//! seed, which std treats as infallible). Every other call of those kinds is swept.
//!
//! After each injected run of the DSE/HCD data set (and, for rekey and recover, a `recover` without
//! fault):
//! 1. every original live SSTable exists exactly once, under the old or the new key, with its
//!    original plaintext (`support::check_resolved_except`: the independent decryptor and the
//!    MANIFEST digests), and is counted lost when no intact generation of it is left;
//! 2. no file outside the set the run may create was removed or changed (content, mode, owner,
//!    inode and mtime of every file before and after; the old SSTable's files may go only when its
//!    new generation replaced it): decoys, planted files, snapshots and operators' files included;
//! 3. no temporary file, partial generation or transaction log is left;
//! 4. the exit status is one of the contract (0, 1, 2; a panic's 101, a signal or a hang is a
//!    finding) and tells the truth: 0 means everything was done (every SSTable rekeyed, every log
//!    resolved); 2 means nothing was written; a log left behind comes with exit 1 and the word
//!    `recover`; an EINTR run ends as the unfaulted one; a run that exits 0 has written its whole
//!    report (every SSTable, the snapshot SSTables with the key they still need) and, for rekey,
//!    every table's `ALTER TABLE`; and a failed scan of `/proc` for a running node, or a data dir
//!    path that could not be resolved, never ends as if the check had passed;
//! 5. every new generation is above every generation named before the run in its table folder,
//!    its snapshots, backups and index folders (for an index folder: in it and in the same index
//!    folder of the snapshots and backups), other versions and incomplete SSTables included;
//! 6. verify never writes, never exits 0 while a live SSTable is under the old key, and when it
//!    exits 0 it names every snapshot SSTable that still needs the old key.
//!
//! Output (on stderr, printed also when the test passes): per command
//! `fault sweep: <command>: N injection points over K syscall kinds, L lost, F foreign files
//! touched (...)`, then the total, the calls per kind, the seconds, and every finding with its
//! point; and, for review, the faults the tool did not report at all (it ended as without them:
//! many are harmless, such as a failed page-cache hint), every one listed in
//! `target/tmp/fault-sweep-report.txt`. `FAULT_SWEEP_ONLY=<command>:<kind>:<k>:<ERRNO>`
//! (comma-separated; `*` matches anything) runs only those points and prints each run's output:
//! the reproduction of a finding.
//!
//! x86_64 only: the injector drives that system-call ABI (the CI machines are x86_64).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::inject::{pid_namespace, traced, Call, Fault, Traced, FILE_KINDS, PLANTED};
use crate::support::*;

mod scylla;

/// A run that takes longer is killed and reported as a hang.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Injection points run at once (each on its own scratch copy).
const WORKERS: usize = 2;
/// One rayon worker: the tool's calls come in one repeatable order.
const ENV: &[(&str, &str)] = &[("RAYON_NUM_THREADS", "1")];
const OLD_KEY: &str = "kmip://kmip1/old-128";

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EIO => "EIO",
        libc::EMFILE => "EMFILE",
        libc::EEXIST => "EEXIST",
        libc::ENOSPC => "ENOSPC",
        libc::EINTR => "EINTR",
        _ => "?",
    }
}

/// The errors each kind is failed with (see the module comment).
fn errnos(kind: &str) -> Vec<i32> {
    let mut v = vec![libc::EIO];
    match kind {
        "openat" => v.extend([libc::EMFILE, libc::EEXIST]),
        "linkat" => v.push(libc::EEXIST),
        "write" | "pwrite64" | "fallocate" => v.push(libc::ENOSPC),
        _ => {}
    }
    if matches!(kind, "read" | "pread64" | "write" | "pwrite64") {
        v.push(libc::EINTR);
    }
    v
}

/// Prints past the test harness's capture (the sweep's figures belong in every test log).
fn say(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(s.as_bytes());
    let _ = e.write_all(b"\n");
}

// ------------------------------------------------------------------ the data set

fn sweep_tables() -> Vec<String> {
    DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        d.starts_with("dd1/edge/t_snap-") || d.starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128-")
    })
}

/// The live table folder (relative to the data dir) whose name starts with `name-`.
fn table_folder(ds: &DataSet, name: &str) -> PathBuf {
    ds.sstables
        .iter()
        .map(|o| &o.dir)
        .find(|d| {
            d.components().count() == 2
                && d.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{name}-"))
        })
        .unwrap_or_else(|| panic!("no table folder {name}"))
        .clone()
}

struct Sweep {
    ds: DataSet,
    keys: Keys,
    /// Files the tool must leave alone in its folders, relative to the data dir.
    decoys: BTreeSet<PathBuf>,
    kinds: Vec<&'static str>,
    live: usize,
    /// The ScyllaDB data set of `rekey-scylla` and `recover-scylla-*` (the full sweep only).
    scylla: Option<scylla::ScyllaSet>,
    /// The smaller one of `stage-scylla` and `rekey-scylla-staged` (the full sweep only).
    scylla_small: Option<scylla::ScyllaSet>,
}

impl Sweep {
    fn new(tables: &[String], with_decoys: bool) -> Sweep {
        let ds = DataSet::new(tables);
        let mut decoys = BTreeSet::new();
        if with_decoys {
            let snap = table_folder(&ds, "t_snap");
            let enc = table_folder(&ds, "t_Encryptor_kmip_CBC_128");
            let files: [(PathBuf, &[u8]); 7] = [
                (
                    enc.join("nb-2-big-Index.db"),
                    b"decoy: an incomplete SSTable at the next generation (no Data.db)\n",
                ),
                (enc.join("nb-2-big-TOC.txt"), b"Index.db\nTOC.txt\n"),
                (
                    enc.join("operator-notes.txt"),
                    b"decoy: an operator's file\n",
                ),
                (
                    snap.join("ma-2-big-Filter.db"),
                    b"decoy: a file of another SSTable version at the next generation\n",
                ),
                (
                    snap.join(".t_idx/nb-2-big-TOC.txt"),
                    b"decoy: an incomplete SSTable in the index folder\n",
                ),
                (
                    // The table's highest generation is in its snapshot: a new generation that
                    // forgets the snapshots would collide with it on restore.
                    snap.join("snapshots/snap1/nb-4-big-Summary.db"),
                    b"decoy: the highest generation of the table, in a snapshot\n",
                ),
                (
                    PathBuf::from("edge/keyspace-notes.txt"),
                    b"decoy: an operator's file in a keyspace folder\n",
                ),
            ];
            for (p, content) in files {
                let at = ds.data.join(&p);
                fs::write(&at, content).unwrap();
                chmod(&at, 0o644);
                decoys.insert(p);
            }
        }
        let live = ds.sstables.iter().filter(|o| o.live).count();
        Sweep {
            keys: ds.keys(),
            ds,
            decoys,
            kinds: FILE_KINDS.iter().map(|(k, _)| *k).collect(),
            live,
            scylla: None,
            scylla_small: None,
        }
    }

    fn verify_args(&self, data: &Path) -> Vec<String> {
        strings(&[
            "verify",
            "--key",
            "kmip://kmip1/new-128",
            "--keyring",
            self.ds.keyring.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
    }

    /// A component of an original live SSTable: it may go when its new generation replaced it.
    fn is_original(&self, rel: &Path) -> bool {
        let name = rel.file_name().unwrap().to_str().unwrap_or("");
        self.ds
            .sstables
            .iter()
            .any(|o| o.live && rel.parent() == Some(o.dir.as_path()) && name.starts_with(&o.prefix))
    }
}

// ------------------------------------------------------------------ file states

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState {
    sha256: String,
    mode: u32,
    uid: u32,
    gid: u32,
    ino: u64,
    mtime: (i64, i64),
}

type State = BTreeMap<PathBuf, FileState>;

/// Every file under `data` (symlinks listed, not followed), relative to it.
fn state(data: &Path) -> State {
    let mut files = Vec::new();
    walk(data, &mut files);
    files
        .into_iter()
        .map(|p| {
            let m = fs::symlink_metadata(&p).unwrap();
            let sha256 = match fs::read(&p) {
                Ok(b) => sha256(&b),
                Err(e) => format!("unreadable: {e}"),
            };
            (
                p.strip_prefix(data).unwrap().to_path_buf(),
                FileState {
                    sha256,
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                },
            )
        })
        .collect()
}

fn state_diff(a: &State, b: &State) -> Vec<String> {
    let mut out = Vec::new();
    for (p, s) in a {
        match b.get(p) {
            None => out.push(format!("removed {}", p.display())),
            Some(t) if t != s => out.push(format!("changed {}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.push(format!("added {}", p.display()));
        }
    }
    out
}

/// The integer generation of a component name (`nb-3-big-Data.db` → 3).
fn int_gen(name: &str) -> Option<u64> {
    let (prefix, _) = split_component(name)?;
    prefix.split('-').nth(1)?.parse().ok()
}

/// `ks/table-id` of a path relative to the data dir.
fn table_of(rel: &Path) -> PathBuf {
    rel.components().take(2).collect()
}

// ------------------------------------------------------------------ findings

#[derive(Debug, Clone)]
struct Finding {
    what: &'static str,
    detail: String,
}

#[derive(Debug, Clone)]
struct Point {
    cmd: &'static str,
    fault: Fault,
}

impl Point {
    fn id(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.cmd,
            self.fault.kind,
            self.fault.nth,
            errno_name(self.fault.errno)
        )
    }

    fn matches(&self, only: &str) -> bool {
        let id = self.id();
        let have: Vec<&str> = id.split(':').collect();
        only.split(',').any(|pat| {
            let want: Vec<&str> = pat.trim().split(':').collect();
            want.len() == 4 && want.iter().zip(&have).all(|(w, h)| *w == "*" || w == h)
        })
    }
}

#[derive(Default)]
struct Judged {
    findings: Vec<Finding>,
    lost: usize,
    foreign: usize,
    tally: Option<Tally>,
}

impl Judged {
    fn add(&mut self, what: &'static str, detail: String) {
        self.findings.push(Finding { what, detail });
    }
}

/// What a run left for `recover`: Cassandra transaction logs or ScyllaDB swap journals (how many).
#[derive(Clone, Copy)]
enum Left {
    Logs(usize),
    Journals(usize),
}

/// Work left for `recover` must be said: `recover` itself never exits 0 with some left, and
/// any other command exits 1 with the word `recover` in its output.
fn judge_left_for_recover(
    j: &mut Judged,
    left: Left,
    code: i32,
    run: &Run,
    is_recover: bool,
    names: &dyn std::fmt::Debug,
) {
    let (n, exit0, unsaid, noun) = match left {
        Left::Logs(n) => (
            n,
            "recover exit 0 with a log left",
            "log left without saying so",
            "logs",
        ),
        Left::Journals(n) => (
            n,
            "recover exit 0 with a journal left",
            "journal left without saying so",
            "journals",
        ),
    };
    if n == 0 {
        return;
    }
    let told = code == 1 && run.all().contains("recover");
    if is_recover && code == 0 {
        j.add(exit0, format!("{names:?}"));
    } else if !is_recover && !told {
        j.add(
            unsaid,
            format!("exit {code}, {n} {noun}; the output does not say `recover`"),
        );
    }
}

struct Outcome {
    point: Point,
    injected: Option<Call>,
    code: i32,
    /// The run ended as the unfaulted one (see [`unreported`]).
    unreported: bool,
    judged: Judged,
    output: String,
}

// ------------------------------------------------------------------ the checks

/// An intact generation of `o` is left: the old files as they were, or a complete new generation
/// with its plaintext (independent decryptor).
fn survives(sw: &Sweep, o: &Orig, data: &Path, except: &BTreeSet<PathBuf>) -> bool {
    let dir = data.join(&o.dir);
    let old_intact = o.files.iter().all(|(c, sha)| {
        fs::read(dir.join(format!("{}{c}", o.prefix))).is_ok_and(|b| sha256(&b) == *sha)
    });
    if old_intact {
        return true;
    }
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_str().unwrap_or("").to_string();
        if except.contains(&o.dir.join(&name)) {
            continue;
        }
        if let Some((prefix, comp)) = split_component(&name) {
            groups.entry(prefix).or_default().insert(comp);
        }
    }
    let want: BTreeSet<String> = o.files.keys().cloned().collect();
    groups.iter().any(|(prefix, comps)| {
        prefix != &o.prefix
            && *comps == want
            && open_sstable(
                &dir.join(format!("{prefix}Data.db")),
                &sw.keys,
                o.indexes_encrypted,
            )
            .is_ok_and(|op| op.sha256 == o.sha256)
    })
}

/// Checks 1, 2, 3 and 5 of the module comment on the tree after a run and its recovery; `before`
/// is the tree before the run (and before any crash that prepared it).
fn judge_tree(sw: &Sweep, data: &Path, before: &State, planted: Option<&Path>, j: &mut Judged) {
    let after = state(data);
    // 2. Foreign files: byte for byte, with their metadata.
    for (p, s) in before {
        if sw.is_original(p) {
            continue;
        }
        match after.get(p) {
            None => {
                j.foreign += 1;
                j.add("foreign file removed", p.display().to_string());
            }
            Some(t) if t != s => {
                j.foreign += 1;
                let what = if t.sha256 != s.sha256 {
                    "content"
                } else {
                    "metadata"
                };
                j.add("foreign file changed", format!("{} ({what})", p.display()));
            }
            _ => {}
        }
    }
    let mut except = sw.decoys.clone();
    if let Some(p) = planted {
        let rel = p.strip_prefix(data).unwrap_or(p).to_path_buf();
        // A name planted outside the data tree (beside the report) is checked where it is.
        let content = if p.starts_with(data) {
            after.get(&rel).map(|s| s.sha256.clone())
        } else {
            fs::read(p).ok().map(|b| sha256(&b))
        };
        match content.map(|h| h == sha256(PLANTED)) {
            Some(true) => {}
            Some(false) => {
                j.foreign += 1;
                j.add(
                    "foreign file changed",
                    format!("{} (planted by another process)", rel.display()),
                );
            }
            None => {
                j.foreign += 1;
                j.add(
                    "foreign file removed",
                    format!("{} (planted by another process)", rel.display()),
                );
            }
        }
        except.insert(rel);
    }
    // 1. Every original survives.
    for o in sw.ds.sstables.iter().filter(|o| o.live) {
        if !survives(sw, o, data, &except) {
            j.lost += 1;
            j.add(
                "SSTable lost",
                format!("{}: no intact generation left", o.data_rel().display()),
            );
        }
    }
    // 1 and 3: exactly one generation each, nothing else (no log, no partial generation).
    match check_resolved_except(&sw.ds, &sw.keys, data, &except) {
        Ok(t) => j.tally = Some(t),
        Err(e) if j.lost == 0 => j.add("not resolved", e),
        Err(_) => {}
    }
    // 5. New generations above every generation the table folder named before (one finding per
    // new generation, not per component).
    let mut new_gens: BTreeMap<(PathBuf, u64), PathBuf> = BTreeMap::new();
    for p in after.keys() {
        if before.contains_key(p) || except.contains(p) {
            continue;
        }
        if let Some(g) = int_gen(p.file_name().unwrap().to_str().unwrap_or("")) {
            new_gens
                .entry((p.parent().unwrap().to_path_buf(), g))
                .or_insert_with(|| p.clone());
        }
    }
    for ((_, g), p) in &new_gens {
        let g = *g;
        // A table folder: every name of the table's tree (snapshots, backups, index folders).
        // An index folder `.x`: its own names and those of the `.x` folders of the snapshots
        // and backups.
        let t = table_of(p);
        let folder = p.parent().unwrap();
        let scope = |q: &Path| {
            q.starts_with(&t)
                && (folder == t || q.parent().unwrap().file_name() == folder.file_name())
        };
        let max = before
            .keys()
            .filter(|q| scope(q))
            .filter_map(|q| int_gen(q.file_name().unwrap().to_str().unwrap_or("")))
            .max()
            .unwrap_or(0);
        if g <= max {
            j.add(
                "generation reused",
                format!(
                    "new generation {g} in {}, but generation {max} was already named there or in its snapshots, backups or index folders",
                    folder.display()
                ),
            );
        }
    }
}

/// Check 4, common part: the run reached its fault, ended, and with a status of the contract.
fn judge_exit(t: &Traced, faulted: bool, j: &mut Judged) {
    if faulted && t.injected.is_none() {
        j.add(
            "fault not reached",
            "the run made fewer calls of that kind than the counting run".into(),
        );
    }
    if t.timed_out {
        j.add("hang", format!("killed after {TIMEOUT:?}"));
    } else if !matches!(t.run.code, 0..=2) {
        let what = match t.run.code {
            101 => format!(
                "panic: {}",
                t.run
                    .stderr
                    .lines()
                    .skip_while(|l| !l.contains("panicked at"))
                    .nth(1)
                    .unwrap_or("?")
            ),
            c if c > 128 => format!("killed by signal {}", c - 128),
            c => format!("exit {c}"),
        };
        j.add("exit status outside the contract", what);
    }
}

fn last_line(r: &Run) -> String {
    r.stderr
        .lines()
        .chain(r.stdout.lines())
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// Where a run writes its `--report`: beside the data dir, in the point's own folder.
fn report_path(data: &Path) -> PathBuf {
    data.with_file_name("report.json")
}

/// The run went on as if nothing had happened: the status of the unfaulted run, nothing on
/// stderr, no SSTable named FAILED (the unfaulted runs print neither).
fn unreported(t: &Traced, baseline: i32) -> bool {
    t.run.code == baseline
        && t.run.stderr.trim().is_empty()
        && !t.run.stdout.lines().any(|l| l.starts_with("FAILED"))
}

/// Check 4 for errors that must stop a run when they go unreported: the scan of `/proc` for a
/// running node (its own memory map aside), and resolving a path (`readlink`, made only by
/// `realpath`) whose check is then skipped: the symlink and permission checks of the data dir,
/// the processes holding files under it.
fn fail_open(c: &Call) -> Option<String> {
    if c.what.contains("(/proc") && !c.what.ends_with("/maps)") {
        return Some("the scan of /proc for a process holding table files failed, and the run went on as if no process did".into());
    }
    if c.kind == "readlink" {
        return Some("a path could not be resolved, and the run went on without the check that needed it (symlinks and permissions of the data dir, processes holding its files)".into());
    }
    None
}

/// Check 4's rule for those errors ([`fail_open`]): a faulted run that ended as the unfaulted one
/// must not have had its fault in one of them.
fn judge_fail_open(t: &Traced, fault: Option<Fault>, baseline: i32, j: &mut Judged) {
    if let (Some(f), Some(c)) = (fault, &t.injected) {
        if f.errno != libc::EINTR && unreported(t, baseline) {
            if let Some(why) = fail_open(c) {
                j.add("safety check skipped", why);
            }
        }
    }
}

/// A run that exits 0 has written its whole report: every live SSTable rekeyed (or verified), and
/// every snapshot SSTable listed with the old key it still needs.
fn check_report(kind: CmdKind, path: &Path, live: usize) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text:.200}"))?;
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(u64::MAX) as usize;
    match kind {
        CmdKind::Rekey | CmdKind::RekeyStaged => {
            if n(&v["totals"]["rekeyed"]) != live || n(&v["totals"]["failed"]) != 0 {
                return Err(format!("totals {}", v["totals"]));
            }
        }
        CmdKind::Verify { .. } => {
            if n(&v["ok"]) != live || n(&v["failed"]) != 0 || n(&v["under_other_keys"]) != 0 {
                return Err(format!(
                    "ok {}, failed {}, under other keys {}",
                    v["ok"], v["failed"], v["under_other_keys"]
                ));
            }
        }
        CmdKind::Recover { .. }
        | CmdKind::RekeyScylla
        | CmdKind::RecoverScylla { .. }
        | CmdKind::RekeyScyllaStaged => return Ok(()),
        CmdKind::Purge => {
            let files = n(&v["files"]);
            return match files > 0 && v["error"].is_null() {
                true => Ok(()),
                false => Err(format!("files {}, error {}", v["files"], v["error"])),
            };
        }
        CmdKind::Stage | CmdKind::StageScylla => {
            return match n(&v["totals"]["staged"]) == live && n(&v["totals"]["failed"]) == 0 {
                true => Ok(()),
                false => Err(format!("totals {}", v["totals"])),
            }
        }
    }
    let backups = v["backups"].as_array().cloned().unwrap_or_default();
    let named = backups
        .iter()
        .filter(|b| b["keys"].get(OLD_KEY).is_some_and(|k| n(k) > 0))
        .count();
    if backups.len() != 2 || named != 2 {
        return Err(format!(
            "snapshot SSTables and their keys: {}",
            v["backups"]
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ commands

#[derive(Clone, Copy, PartialEq)]
enum CmdKind {
    Rekey,
    /// A rekey crashed at this failpoint leaves the log `recover` resolves.
    Recover {
        failpoint: &'static str,
        committed: bool,
    },
    /// `verify --key NEW`; `old_live`: some live SSTable is still under the old key.
    Verify {
        old_live: bool,
    },
    /// `stage` (node running): then an unfaulted `stage` and `rekey` must finish the job.
    Stage,
    /// `rekey` committing the copies an unfaulted `stage` made: after `recover`, an unfaulted
    /// `rekey` must finish the job.
    RekeyStaged,
    /// `purge` of what an unfaulted `stage` and `rekey --purge-later` moved aside.
    Purge,
    /// `rekey` of the ScyllaDB data set (`scylla::ScyllaSet`): after `recover`, an unfaulted
    /// `rekey` must finish the job.
    RekeyScylla,
    /// `recover` of the journal a ScyllaDB rekey crashed at this failpoint left (`committed`: the
    /// first SSTable's swap was committed).
    RecoverScylla {
        failpoint: &'static str,
        committed: bool,
    },
    /// `stage` of the smaller ScyllaDB data set (`scylla::ScyllaSet::small`): then an unfaulted
    /// `rekey` must finish the job.
    StageScylla,
    /// `rekey` committing the copies an unfaulted `stage` made of the smaller ScyllaDB data set:
    /// after `recover`, an unfaulted `rekey` must finish the job.
    RekeyScyllaStaged,
}

impl CmdKind {
    fn is_scylla(self) -> bool {
        matches!(
            self,
            CmdKind::RekeyScylla
                | CmdKind::RecoverScylla { .. }
                | CmdKind::StageScylla
                | CmdKind::RekeyScyllaStaged
        )
    }
}

/// The folder staged commits move the old files into until `purge`.
const OBSOLETE: &str = ".sstable-rekey-obsolete";

/// The staging folder `stage` writes in (inside the data directory).
const STAGING: &str = ".sstable-rekey-staging";

/// `rekey_args` as a `stage` command line.
fn stage_args(sw: &Sweep, data: &Path) -> Vec<String> {
    let mut args = rekey_args(&sw.ds, data, 1);
    args[0] = "stage".into();
    args
}

struct Cmd {
    label: &'static str,
    kind: CmdKind,
    /// The tree this command starts from (a copy of it per point).
    template: PathBuf,
    /// The unfaulted run's exit status.
    baseline: i32,
    counts: BTreeMap<&'static str, u64>,
    /// The calls of an unfaulted run, as the injector describes them.
    calls: Vec<Call>,
}

impl Cmd {
    /// The command line; rekey and verify also write their JSON report beside the data dir.
    fn args(&self, sw: &Sweep, data: &Path) -> Vec<String> {
        let mut args = match self.kind {
            CmdKind::Rekey | CmdKind::RekeyStaged => rekey_args(&sw.ds, data, 1),
            CmdKind::Recover { .. } => {
                return strings(&["recover", "--data-dir", data.to_str().unwrap()])
            }
            CmdKind::Verify { .. } => sw.verify_args(data),
            CmdKind::Stage => stage_args(sw, data),
            CmdKind::Purge => strings(&["purge", "--data-dir", data.to_str().unwrap()]),
            k @ (CmdKind::RekeyScylla
            | CmdKind::RecoverScylla { .. }
            | CmdKind::StageScylla
            | CmdKind::RekeyScyllaStaged) => return scylla::args(sw, k, data),
        };
        args.push("--report".into());
        args.push(report_path(data).display().to_string());
        args
    }

    /// A fresh copy to run on: (data dir, the tree before the run). For recover, the tree before
    /// the crashed rekey that left the log.
    /// `dir` must be as deep as every other run's (`<base>/<name>`): `realpath` makes one
    /// `readlink` per component, so the call counts depend on it.
    fn prepare(&self, sw: &Sweep, dir: &Path) -> (PathBuf, State) {
        if dir.exists() {
            fs::remove_dir_all(dir).unwrap();
        }
        fs::create_dir_all(dir).unwrap();
        let data = dir.join("data");
        copy_tree(&self.template, &data);
        let before = state(&data);
        if matches!(self.kind, CmdKind::RekeyStaged | CmdKind::Purge) {
            // Manifests name their sources by path: staged on this very copy.
            let r = run_in(&sw.ds.root, &stage_args(sw, &data), ENV);
            assert_eq!(r.code, 0, "staging the copy: {}", r.all());
        }
        if self.kind == CmdKind::Purge {
            let mut args = rekey_args(&sw.ds, &data, 1);
            args.push("--purge-later".into());
            let r = run_in(&sw.ds.root, &args, ENV);
            assert!(
                r.code == 0 && data.join(OBSOLETE).is_dir(),
                "rekey --purge-later of the copy: {}",
                r.all()
            );
        }
        if let CmdKind::Recover { failpoint, .. } = self.kind {
            let mut env = ENV.to_vec();
            env.push((sstable_rekey::rekey::failpoint::ENV, failpoint));
            let r = run_in(&sw.ds.root, &rekey_args(&sw.ds, &data, 1), &env);
            let logs = logs_under(&data);
            assert!(
                r.code == 128 + libc::SIGABRT && logs.len() == 1,
                "the rekey crashed at {failpoint} should leave one log: {} logs\n{}",
                logs.len(),
                r.all()
            );
        }
        (data, before)
    }

    /// One run under the injector, and the checks.
    fn run(&self, sw: &Sweep, dir: &Path, fault: Option<Fault>, record: bool) -> (Traced, Judged) {
        if self.kind.is_scylla() {
            return scylla::run(self, sw, dir, fault, record);
        }
        let (data, before) = self.prepare(sw, dir);
        let ready = state(&data);
        let ready_dirs = dirs(&data);
        // Only the faulted kind stops at the tracer (its calls are counted all the same).
        let kinds = match fault {
            Some(f) => vec![f.kind],
            None => sw.kinds.clone(),
        };
        let t = traced(
            &sw.ds.root,
            &self.args(sw, &data),
            ENV,
            &kinds,
            fault,
            record,
            TIMEOUT,
        );
        let mut j = Judged::default();
        judge_exit(&t, fault.is_some(), &mut j);
        let code = t.run.code;
        let eintr = fault.is_some_and(|f| f.errno == libc::EINTR);
        let planted = t.planted.as_deref();
        let right_after = state(&data);
        let mut written: Vec<String> = state_diff(&ready, &right_after);
        if let Some(p) = planted {
            let rel = p.strip_prefix(&data).unwrap_or(p).display().to_string();
            written.retain(|d| d != &format!("added {rel}"));
        }
        // The tool's own folders come and go; table folders never do.
        let outside_staging = |d: &PathBuf| {
            !d.components()
                .any(|c| c.as_os_str() == STAGING || c.as_os_str() == OBSOLETE)
        };
        if dirs(&data)
            .into_iter()
            .filter(outside_staging)
            .collect::<BTreeSet<_>>()
            != ready_dirs.into_iter().filter(outside_staging).collect()
        {
            written.push("folders added or removed".into());
        }
        judge_fail_open(&t, fault, self.baseline, &mut j);
        if code == 0 && !matches!(self.kind, CmdKind::Recover { .. }) {
            if let Err(e) = check_report(self.kind, &report_path(&data), sw.live) {
                j.add("exit 0 with a wrong report", e);
            }
        }
        match self.kind {
            CmdKind::RekeyStaged => {
                if eintr && code != 0 {
                    j.add(
                        "EINTR not retried",
                        format!("exit {code}: {}", last_line(&t.run)),
                    );
                }
                // Whatever the fault left (a log, staged files moved in or back), recover and an
                // unfaulted rekey finish the job. The staged files are the tool's own: consumed,
                // never judged as foreign.
                let rec = recover(&sw.ds, &data);
                if rec.code != 0 {
                    j.add(
                        "recover after the fault failed",
                        format!("exit {}: {}", rec.code, last_line(&rec)),
                    );
                }
                let r = run_in(&sw.ds.root, &rekey_args(&sw.ds, &data, 1), ENV);
                if r.code != 0 {
                    j.add(
                        "rekey after the fault failed",
                        format!("exit {}: {}", r.code, last_line(&r)),
                    );
                }
                let planted = planted.filter(|p| !p.to_string_lossy().contains(STAGING));
                judge_tree(sw, &data, &before, planted, &mut j);
                if j.tally.is_some_and(|t| t.new != sw.live) {
                    j.add("not done after recover and rekey", format!("{:?}", j.tally));
                }
                if data.join(STAGING).exists() {
                    j.add("staging folder left after the rekey", String::new());
                }
            }
            CmdKind::Purge => {
                // Deleted or changed outside the obsolete folder: the purge's only room.
                let outside: Vec<&String> =
                    written.iter().filter(|d| !d.contains(OBSOLETE)).collect();
                if !outside.is_empty() {
                    j.add(
                        "purge touched files outside its folder",
                        format!("{outside:?}"),
                    );
                }
                if code == 0 && data.join(OBSOLETE).exists() {
                    j.add("purge exit 0 with the obsolete folder left", String::new());
                }
                if eintr && code != 0 {
                    j.add(
                        "EINTR not retried",
                        format!("exit {code}: {}", last_line(&t.run)),
                    );
                }
                // A planted file is not the tool's to delete: it stays and stops later purges,
                // so it is judged (untouched) and then taken away, as its owner would.
                if let Some(p) = planted.filter(|p| p.to_string_lossy().contains(OBSOLETE)) {
                    if !p.exists() {
                        j.add(
                            "a planted file in the obsolete folder was deleted",
                            p.display().to_string(),
                        );
                    }
                    let _ = fs::remove_file(p);
                }
                let r = run_in(
                    &sw.ds.root,
                    &strings(&["purge", "--data-dir", data.to_str().unwrap()]),
                    ENV,
                );
                if r.code != 0 || data.join(OBSOLETE).exists() {
                    j.add(
                        "purge after the fault did not finish",
                        format!("exit {}: {}", r.code, last_line(&r)),
                    );
                }
                let planted = planted.filter(|p| !p.to_string_lossy().contains(OBSOLETE));
                judge_tree(sw, &data, &before, planted, &mut j);
                if j.tally.is_some_and(|t| t.new != sw.live) {
                    j.add(
                        "not every SSTable under the new key",
                        format!("{:?}", j.tally),
                    );
                }
            }
            CmdKind::Stage => {
                written.retain(|d| !d.contains(STAGING));
                if !written.is_empty() {
                    j.add("stage wrote in a table folder", written.join(", "));
                }
                if eintr && code != 0 {
                    j.add(
                        "EINTR not retried",
                        format!("exit {code}: {}", last_line(&t.run)),
                    );
                }
                // Whatever the fault left in the staging folder, the next stage and the rekey
                // finish the job: every SSTable once, under the new key, staging empty. A name
                // "another process" planted in the staging folder is the tool's to remove there.
                for args in [stage_args(sw, &data), rekey_args(&sw.ds, &data, 1)] {
                    let r = run_in(&sw.ds.root, &args, ENV);
                    if r.code != 0 {
                        j.add(
                            "stage then rekey after the fault failed",
                            format!("{}: exit {}: {}", args[0], r.code, last_line(&r)),
                        );
                    }
                }
                let planted = planted.filter(|p| !p.to_string_lossy().contains(STAGING));
                judge_tree(sw, &data, &before, planted, &mut j);
                if j.tally.is_some_and(|t| t.new != sw.live) {
                    j.add("not done after stage and rekey", format!("{:?}", j.tally));
                }
                let mut left = Vec::new();
                if data.join(STAGING).exists() {
                    walk(&data.join(STAGING), &mut left);
                }
                if !left.is_empty() {
                    j.add("staged files left after the rekey", format!("{left:?}"));
                }
            }
            CmdKind::Verify { old_live } => {
                if !written.is_empty() {
                    j.add("verify wrote", written.join(", "));
                }
                if code == 0 && old_live {
                    j.add(
                        "verify false all-clear",
                        "exit 0 while a live SSTable is under the old key".into(),
                    );
                }
                if code == 0 && !old_live {
                    for o in sw.ds.sstables.iter().filter(|o| !o.live) {
                        let p = data.join(o.data_rel()).display().to_string();
                        let named = t.run.stdout.lines().any(|l| {
                            l.starts_with("backup") && l.contains(&p) && l.contains(OLD_KEY)
                        });
                        if !named {
                            j.add(
                                "verify exit 0 without the snapshot's key",
                                format!(
                                    "{} not listed as needing {OLD_KEY}",
                                    o.data_rel().display()
                                ),
                            );
                        }
                    }
                }
                if eintr && code != self.baseline {
                    j.add(
                        "EINTR not retried",
                        format!("exit {code}, {} without the fault", self.baseline),
                    );
                }
            }
            CmdKind::RekeyScylla
            | CmdKind::RecoverScylla { .. }
            | CmdKind::StageScylla
            | CmdKind::RekeyScyllaStaged => unreachable!("scylla::run"),
            CmdKind::Rekey | CmdKind::Recover { .. } => {
                let logs = logs_under(&data);
                if code == 2 && !written.is_empty() {
                    j.add(
                        "exit 2 after writing",
                        format!(
                            "\"nothing was written\" is not true: {}",
                            written.join(", ")
                        ),
                    );
                }
                let recover_cmd = matches!(self.kind, CmdKind::Recover { .. });
                let left = Left::Logs(logs.len());
                judge_left_for_recover(&mut j, left, code, &t.run, recover_cmd, &logs);
                let rec = recover(&sw.ds, &data);
                if rec.code != 0 {
                    j.add(
                        "recover after the fault failed",
                        format!("exit {}: {}", rec.code, last_line(&rec)),
                    );
                }
                judge_tree(sw, &data, &before, planted, &mut j);
                if let Some(tally) = j.tally {
                    let want_new = match self.kind {
                        CmdKind::Recover { committed, .. } => Some(committed as usize),
                        _ => None,
                    };
                    if let Some(n) = want_new {
                        if tally.new != n {
                            j.add(
                                "log resolved the wrong way",
                                format!("{} SSTables under the new key, {n} expected", tally.new),
                            );
                        }
                    } else if code == 0 && tally.new != sw.live {
                        j.add(
                            "exit 0 but not done",
                            format!("{} of {} SSTables rekeyed", tally.new, sw.live),
                        );
                    } else if code == 0 {
                        // Step 6 of the procedure needs every rekeyed table's statement.
                        for table in [
                            "\"edge\".\"t_snap\"",
                            "\"matrix\".\"t_Encryptor_kmip_CBC_128\"",
                        ] {
                            if !t.run.stdout.contains(&format!("ALTER TABLE {table} WITH")) {
                                j.add(
                                    "exit 0 without an ALTER TABLE",
                                    format!("the statement for {table} is missing"),
                                );
                            }
                        }
                    }
                    if eintr && !recover_cmd && (code != 0 || tally.new != sw.live) {
                        j.add(
                            "EINTR not retried",
                            format!(
                                "exit {code}, {} of {} rekeyed: {}",
                                tally.new,
                                sw.live,
                                last_line(&t.run)
                            ),
                        );
                    }
                }
                if eintr && recover_cmd && (code != 0 || !logs.is_empty()) {
                    j.add(
                        "EINTR not retried",
                        format!("exit {code}: {}", last_line(&t.run)),
                    );
                }
            }
        }
        (t, j)
    }
}

/// Builds the commands: their starting trees, and a counting run of each (twice: the counts must
/// repeat; the unfaulted run must pass every check itself).
/// `verify`: (label, keyspaces rekeyed first, whether a live SSTable is still under the old key).
type VerifyTree<'a> = (&'static str, &'a [&'a str], bool);

fn commands(sw: &Sweep, base: &Path, verify_trees: &[VerifyTree]) -> Vec<Cmd> {
    let mut cmds = vec![
        ("rekey", CmdKind::Rekey, sw.ds.data.clone(), 0),
        (
            "recover-uncommitted",
            CmdKind::Recover {
                failpoint: "txn.remove",
                committed: false,
            },
            sw.ds.data.clone(),
            0,
        ),
        (
            "recover-committed",
            CmdKind::Recover {
                failpoint: "txn.commit",
                committed: true,
            },
            sw.ds.data.clone(),
            0,
        ),
    ];
    cmds.push(("stage", CmdKind::Stage, sw.ds.data.clone(), 0));
    cmds.push(("rekey-staged", CmdKind::RekeyStaged, sw.ds.data.clone(), 0));
    cmds.push(("purge", CmdKind::Purge, sw.ds.data.clone(), 0));
    if let Some(sc) = &sw.scylla {
        cmds.push(("rekey-scylla", CmdKind::RekeyScylla, sc.data.clone(), 0));
        for (label, failpoint, committed) in [
            ("recover-scylla-doomed", "scylla.doomed", false),
            ("recover-scylla-committed", "scylla.committed", true),
        ] {
            cmds.push((
                label,
                CmdKind::RecoverScylla {
                    failpoint,
                    committed,
                },
                sc.data.clone(),
                0,
            ));
        }
    }
    if let Some(sc) = &sw.scylla_small {
        cmds.push(("stage-scylla", CmdKind::StageScylla, sc.data.clone(), 0));
        cmds.push((
            "rekey-scylla-staged",
            CmdKind::RekeyScyllaStaged,
            sc.data.clone(),
            0,
        ));
    }
    for &(label, keyspaces, old_live) in verify_trees {
        let template = base.join("templates").join(label);
        copy_tree(&sw.ds.data, &template);
        for ks in keyspaces {
            let mut args = rekey_args(&sw.ds, &template, 1);
            args.push(ks.to_string());
            let r = run_in(&sw.ds.root, &args, ENV);
            assert_eq!(r.code, 0, "preparing {label}: {}", r.all());
        }
        cmds.push((
            label,
            CmdKind::Verify { old_live },
            template,
            if old_live { 1 } else { 0 },
        ));
    }
    cmds.into_iter()
        .map(|(label, kind, template, baseline)| {
            let mut cmd = Cmd {
                label,
                kind,
                template,
                baseline,
                counts: BTreeMap::new(),
                calls: Vec::new(),
            };
            let mut seen = Vec::new();
            for i in 0..2 {
                let dir = base.join(format!("count-{label}-{i}"));
                let (t, j) = cmd.run(sw, &dir, None, i == 0);
                assert!(
                    unreported(&t, baseline) && j.findings.is_empty(),
                    "{label} without a fault must pass every check: {:?}\n{}",
                    j.findings,
                    t.run.all()
                );
                seen.push(t.counts);
                if i == 0 {
                    cmd.calls = t.calls;
                }
                fs::remove_dir_all(&dir).unwrap();
            }
            if seen[0] != seen[1] {
                say(&format!(
                    "fault sweep: notice: {label}: call counts differ between two unfaulted runs: {:?} vs {:?} (the larger are swept)",
                    seen[0], seen[1]
                ));
            }
            for m in &seen {
                for (k, n) in m {
                    let e = cmd.counts.entry(*k).or_insert(0);
                    *e = (*e).max(*n);
                }
            }
            cmd
        })
        .collect()
}

/// Errors Linux never returns for this very call, which the sweep does not inject: EIO from the
/// close of a directory (std asserts it cannot happen) and from `getrandom(GRND_INSECURE)` (std's
/// HashMap seed; std panics by design). Both are marked by the injector's description.
fn impossible(call: Option<&Call>, errno: i32) -> bool {
    let Some(c) = call else { return false };
    errno == libc::EIO
        && ((c.kind == "close" && c.what.ends_with("[dir])"))
            || (c.kind == "getrandom" && c.what.ends_with("[insecure])")))
}

fn points(cmd: &Cmd) -> Vec<Point> {
    let mut v = Vec::new();
    for (kind, n) in &cmd.counts {
        for nth in 1..=*n {
            let call = cmd.calls.iter().find(|c| c.kind == *kind && c.nth == nth);
            for errno in errnos(kind) {
                if impossible(call, errno) {
                    continue;
                }
                v.push(Point {
                    cmd: cmd.label,
                    fault: Fault {
                        kind,
                        nth,
                        errno,
                        plant: true,
                    },
                });
            }
        }
    }
    v
}

/// Runs the points `WORKERS` at a time, each on its own copy.
fn run_points(sw: &Sweep, cmd: &Cmd, points: &[Point], base: &Path, verbose: bool) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (next, out) = (&next, &out);
            s.spawn(move || {
                let dir = base.join(format!("worker-{w}"));
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = points.get(i) else { break };
                    let (t, j) = cmd.run(sw, &dir, Some(p.fault), false);
                    let quiet = unreported(&t, cmd.baseline);
                    let data = dir.join("data").display().to_string();
                    let output = if verbose {
                        t.run.all().replace(&data, "DATA")
                    } else {
                        String::new()
                    };
                    let mut judged = j;
                    for f in &mut judged.findings {
                        f.detail = f.detail.replace(&data, "DATA");
                    }
                    let injected = t.injected.map(|mut c| {
                        c.what = c.what.replace(&data, "DATA");
                        c
                    });
                    out.lock().unwrap().push((
                        i,
                        Outcome {
                            point: p.clone(),
                            injected,
                            code: t.run.code,
                            unreported: quiet,
                            judged,
                            output,
                        },
                    ));
                }
                if dir.exists() {
                    fs::remove_dir_all(&dir).unwrap();
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, o)| o).collect()
}

#[test]
fn fault_sweep_every_syscall_of_rekey_recover_stage_and_verify() {
    require_failpoints();
    if !pid_namespace() {
        // (With CI=true, pid_namespace has failed the test.) Outside a namespace the tool's /proc
        // scan reads every process's descriptors: thousands of calls that change from run to run.
        eprintln!("notice: the fault sweep needs root for a private PID namespace: not run");
        return;
    }
    let only = std::env::var("FAULT_SWEEP_ONLY").ok();
    assert!(
        only.is_none() || !ci_env(),
        "FAULT_SWEEP_ONLY sweeps a part only: not with CI=true"
    );
    let t0 = Instant::now();
    let mut sw = Sweep::new(&sweep_tables(), true);
    sw.scylla = Some(scylla::ScyllaSet::new());
    sw.scylla_small = Some(scylla::ScyllaSet::small());
    let base = sw.ds.root.join("sweep");
    let cmds = commands(
        &sw,
        &base,
        &[
            ("verify-old", &[], true),
            ("verify-edge-still-old", &["matrix"], true),
            ("verify-matrix-still-old", &["edge"], true),
            ("verify-rekeyed", &["edge", "matrix"], false),
        ],
    );
    let mut lines = Vec::new();
    let mut findings: Vec<String> = Vec::new();
    let (mut total_points, mut total_lost, mut total_foreign, mut total_other) = (0, 0, 0, 0);
    let mut all_kinds = BTreeSet::new();
    // Faults after which the tool exited 0 as if nothing had happened (not retried: EINTR aside).
    // Not failures by themselves (a failed page-cache hint or the close of a file only read may
    // be ignored), but each is an error the tool did not report: listed for review.
    let mut unreported: Vec<String> = Vec::new();
    let mut unreported_kinds: Vec<String> = Vec::new();
    for cmd in &cmds {
        let t = Instant::now();
        let mut pts = points(cmd);
        if let Some(o) = &only {
            pts.retain(|p| p.matches(o));
            if pts.is_empty() {
                continue;
            }
        }
        let outcomes = run_points(&sw, cmd, &pts, &base, only.is_some());
        let (mut lost, mut foreign, mut other) = (0, 0, 0);
        let mut quiet: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &outcomes {
            if o.unreported && o.point.fault.errno != libc::EINTR {
                *quiet.entry(o.point.fault.kind).or_insert(0) += 1;
                unreported.push(format!(
                    "{} -> {}",
                    o.point.id(),
                    o.injected
                        .as_ref()
                        .map(|c| c.what.as_str())
                        .unwrap_or("not reached")
                ));
            }
            lost += o.judged.lost;
            foreign += o.judged.foreign;
            other += o
                .judged
                .findings
                .iter()
                .filter(|f| {
                    !matches!(
                        f.what,
                        "SSTable lost" | "foreign file removed" | "foreign file changed"
                    )
                })
                .count();
            for f in &o.judged.findings {
                findings.push(format!(
                    "[{}] {} -> {} (exit {}): {}",
                    f.what,
                    o.point.id(),
                    o.injected
                        .as_ref()
                        .map(|c| c.what.as_str())
                        .unwrap_or("not reached"),
                    o.code,
                    f.detail
                ));
            }
            if only.is_some() {
                say(&format!(
                    "--- {} -> {}\n{}",
                    o.point.id(),
                    o.injected
                        .as_ref()
                        .map(|c| c.what.as_str())
                        .unwrap_or("not reached"),
                    o.output
                ));
            }
        }
        let kinds: BTreeSet<&str> = pts.iter().map(|p| p.fault.kind).collect();
        all_kinds.extend(kinds.iter().copied());
        total_points += pts.len();
        total_lost += lost;
        total_foreign += foreign;
        total_other += other;
        lines.push(format!(
            "fault sweep: {}: {} injection points over {} syscall kinds, {lost} lost, {foreign} foreign files touched ({other} other findings, {:.1} s)",
            cmd.label,
            pts.len(),
            kinds.len(),
            t.elapsed().as_secs_f64()
        ));
        lines.push(format!(
            "    calls: {}",
            cmd.counts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        say(&lines[lines.len() - 2]);
        if !quiet.is_empty() {
            unreported_kinds.push(format!(
                "    {}: {}",
                cmd.label,
                quiet
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    lines.push(format!(
        "fault sweep: {total_points} injection points over {} syscall kinds, {total_lost} lost, {total_foreign} foreign files touched ({total_other} other findings, {:.1} s)",
        all_kinds.len(),
        t0.elapsed().as_secs_f64()
    ));
    // By category, then in sweep order.
    findings.sort_by_key(|f| f.split(']').next().unwrap_or("").to_string());
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-sweep-report.txt");
    fs::create_dir_all(report.parent().unwrap()).unwrap();
    fs::write(
        &report,
        format!(
            "{}\n\n{} findings:\n{}\n\nfaults the tool did not report (it ended as without them):\n{}\n",
            lines.join("\n"),
            findings.len(),
            findings.join("\n"),
            unreported.join("\n")
        ),
    )
    .unwrap();
    lines.push(format!(
        "faults the tool did not report (it ended as without them; for review, every one in {}):",
        report.display()
    ));
    lines.extend(unreported_kinds);
    say(&lines.join("\n"));
    if !findings.is_empty() {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &findings {
            *per.entry(f.split(']').next().unwrap_or("").trim_start_matches('['))
                .or_insert(0) += 1;
        }
        say(&format!(
            "fault sweep: {} findings ({}):\n{}",
            findings.len(),
            per.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            findings.join("\n")
        ));
    }
    assert!(
        findings.is_empty(),
        "{} findings (listed above; FAULT_SWEEP_ONLY=<command>:<kind>:<k>:<ERRNO> replays one)",
        findings.len()
    );
}

// ------------------------------------------------------------------ issue 10, item 1

/// The bug as reported: when the table folder cannot be listed while the new generation is chosen
/// (`openat` of the folder failing with EMFILE, as `strace -e inject=openat:error=EMFILE:when=1` did
/// in the report), the next generation became 1, the live SSTable's own; creating
/// `nb-1-big-Data.db` failed with EEXIST and the rollback deleted every `nb-1-*` file: the live
/// SSTable. The rule: an error listing the folder fails that SSTable (exit 1) with nothing written
/// and nothing removed.
#[test]
fn unlistable_table_folder_makes_rollback_delete_the_live_sstable() {
    let sw = Sweep::new(
        &DataSet::tables_where(|e| {
            e["data"]
                .as_str()
                .unwrap()
                .starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128-")
        }),
        false,
    );
    let folder = table_folder(&sw.ds, "t_Encryptor_kmip_CBC_128");
    let copy = |name: &str| {
        let data = sw.ds.root.join(name);
        sw.ds.copy_data(&data);
        data
    };
    let scan_of = |data: &Path| format!("openat({} [dir])", data.join(&folder).display());

    // Which openat lists the folder for the generation: the folder's last one before the
    // transaction log is created.
    let data = copy("count");
    let t = traced(
        &sw.ds.root,
        &rekey_args(&sw.ds, &data, 1),
        ENV,
        &sw.kinds,
        None,
        true,
        TIMEOUT,
    );
    assert_eq!(t.run.code, 0, "{}", t.run.all());
    let log_created = t
        .calls
        .iter()
        .position(|c| c.kind == "openat" && c.what.contains("_txn_"))
        .expect("the transaction log is created");
    let scan = t.calls[..log_created]
        .iter()
        .rev()
        .find(|c| c.kind == "openat" && c.what == scan_of(&data))
        .expect("the folder is listed before the log is created");

    let data = copy("faulted");
    let before = state(&data);
    let t = traced(
        &sw.ds.root,
        &rekey_args(&sw.ds, &data, 1),
        ENV,
        &["openat"],
        Some(Fault {
            kind: "openat",
            nth: scan.nth,
            errno: libc::EMFILE,
            plant: false,
        }),
        false,
        TIMEOUT,
    );
    assert_eq!(
        t.injected.as_ref().map(|c| c.what.clone()),
        Some(scan_of(&data)),
        "the fault must hit the folder listing"
    );
    let after = state(&data);
    let live: Vec<String> = before
        .iter()
        .filter(|(p, _)| p.starts_with(&folder))
        .filter(|(p, s)| after.get(*p) != Some(*s))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        live.is_empty(),
        "the live SSTable's files were removed or changed: {live:?}\n{}",
        t.run.all()
    );
    assert_eq!(t.run.code, 1, "that SSTable failed: {}", t.run.all());
    assert_eq!(
        state_diff(&before, &after),
        Vec::<String>::new(),
        "nothing written: {}",
        t.run.all()
    );
}

// ------------------------------------------------------------------ the injector itself

fn strace_available() -> bool {
    let ok = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !ci_env(),
            "CI=true: strace is missing (Debian package strace; tools/test.sh installs it)"
        );
        eprintln!("notice: strace is missing: the injector's counts are not compared with it");
    }
    ok
}

/// The injector counts what strace sees: the same `verify` run traced by `strace -f` (every
/// thread), its calls of each kind after the tool's first `poll` counted from strace's log, equal
/// the injector's counts kind by kind.
#[test]
fn injector_counts_the_calls_strace_sees() {
    if !strace_available() {
        return;
    }
    let sw = Sweep::new(&sweep_tables(), true);
    let data = sw.ds.root.join("copy");
    sw.ds.copy_data(&data);
    let args = sw.verify_args(&data);
    let t = traced(&sw.ds.root, &args, ENV, &sw.kinds, None, false, TIMEOUT);
    let log = sw.ds.root.join("strace.log");
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(&args)
        .current_dir(&sw.ds.root)
        .envs(ENV.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(t.run.code), "{out:?}");
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut started = false;
    for line in fs::read_to_string(&log).unwrap().lines() {
        // `PID name(args...`, `PID name(args <unfinished ...>`, `PID <... name resumed>...`
        let Some((_, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let Some((name, _)) = call.split_once('(') else {
            continue;
        };
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            continue;
        }
        if !started {
            started = name == "poll";
            continue;
        }
        if let Some((k, _)) = FILE_KINDS.iter().find(|(k, _)| *k == name) {
            *counts.entry(k).or_insert(0) += 1;
        }
    }
    assert!(started, "no poll in strace's log");
    assert_eq!(
        t.counts, counts,
        "injector (left) and strace (right) disagree"
    );
    assert!(counts.values().sum::<u64>() > 100, "{counts:?}");
}

/// One fault per run, however many threads make the calls, and it is the call described: with two
/// rayon workers reading chunk headers and chunks, failing the k-th pread64 fails exactly one
/// read, of the file the injector names (strace's `when=K` fails the K-th read of every thread).
#[test]
fn injector_fails_exactly_the_call_it_names() {
    let sw = Sweep::new(&sweep_tables(), false);
    let env = [("RAYON_NUM_THREADS", "2")];
    let fresh = |name: &str| {
        let data = sw.ds.root.join(name);
        sw.ds.copy_data(&data);
        data
    };
    let data = fresh("count");
    let t = traced(
        &sw.ds.root,
        &sw.verify_args(&data),
        &env,
        &sw.kinds,
        None,
        true,
        TIMEOUT,
    );
    assert_eq!(t.run.code, 1, "{}", t.run.all());
    // The keyring's openat, failed with EMFILE: the tool's error names the keyring.
    let keyring = t
        .calls
        .iter()
        .find(|c| c.kind == "openat" && c.what.contains(sw.ds.keyring.to_str().unwrap()))
        .expect("the keyring is opened");
    let data = fresh("keyring");
    let r = traced(
        &sw.ds.root,
        &sw.verify_args(&data),
        &env,
        &["openat"],
        Some(Fault {
            kind: "openat",
            nth: keyring.nth,
            errno: libc::EMFILE,
            plant: false,
        }),
        false,
        TIMEOUT,
    );
    assert_eq!(r.run.code, 2, "{}", r.run.all());
    assert!(
        r.run.stderr.contains(sw.ds.keyring.to_str().unwrap())
            && r.run.stderr.contains("os error 24"),
        "{}",
        r.run.all()
    );
    let reads = t.counts["pread64"];
    assert!(reads >= 10, "{reads} reads");
    let mut live_reads = 0;
    for k in 1..=reads {
        let data = fresh(&format!("pread-{k}"));
        let r = traced(
            &sw.ds.root,
            &sw.verify_args(&data),
            &env,
            &["pread64"],
            Some(Fault {
                kind: "pread64",
                nth: k,
                errno: libc::EIO,
                plant: false,
            }),
            false,
            TIMEOUT,
        );
        let hit = r.injected.expect("every read index is reached");
        let failed: Vec<&str> = r
            .run
            .stdout
            .lines()
            .filter(|l| l.starts_with("FAILED"))
            .collect();
        assert!(failed.len() <= 1, "one fault, one failure: {failed:?}");
        let path = hit
            .what
            .trim_start_matches("pread64(")
            .trim_end_matches(')');
        if !path.contains("/snapshots/") {
            live_reads += 1;
            assert!(
                failed.len() == 1 && failed[0].contains(path.trim_end_matches("Data.db")),
                "pread64 #{k} of {path} failed, verify says: {failed:?}"
            );
        }
        fs::remove_dir_all(&data).unwrap();
    }
    assert!(live_reads > 0);
}

// ------------------------------------------------------------------ the checks themselves

/// Every check of the sweep's tree judgement can fail: damage made by hand to copies of the data
/// set (a removed decoy, a changed snapshot file, a lost SSTable, a leftover log, a partial
/// generation, a planted file removed, a new generation that reuses a snapshot's) is each reported
/// under its own name, and an untouched copy and a real rekey pass.
#[test]
fn sweep_checks_catch_each_kind_of_damage() {
    let sw = Sweep::new(&sweep_tables(), true);
    let base = sw.ds.root.join("judge");
    let snap = table_folder(&sw.ds, "t_snap");
    let enc = table_folder(&sw.ds, "t_Encryptor_kmip_CBC_128");
    let judge = |name: &str, damage: &dyn Fn(&Path) -> Option<PathBuf>| -> Judged {
        let data = base.join(name).join("data");
        sw.ds.copy_data(&data);
        let before = state(&data);
        let planted = damage(&data);
        let mut j = Judged::default();
        judge_tree(&sw, &data, &before, planted.as_deref(), &mut j);
        j
    };
    let whats =
        |j: &Judged| -> BTreeSet<&'static str> { j.findings.iter().map(|f| f.what).collect() };

    assert!(whats(&judge("untouched", &|_| None)).is_empty());
    let rekeyed = judge("rekeyed", &|data| {
        let r = run_in(&sw.ds.root, &rekey_args(&sw.ds, data, 1), ENV);
        assert_eq!(r.code, 0, "{}", r.all());
        None
    });
    assert!(whats(&rekeyed).is_empty(), "{:?}", rekeyed.findings);
    assert_eq!(rekeyed.tally.map(|t| t.new), Some(sw.live));

    /// Damages a copy; returns a file planted as another process's, if any.
    type Damage<'a> = Box<dyn Fn(&Path) -> Option<PathBuf> + 'a>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "decoy-removed",
            Box::new(|d: &Path| {
                fs::remove_file(d.join(&enc).join("nb-2-big-TOC.txt")).unwrap();
                None
            }),
            "foreign file removed",
        ),
        (
            "snapshot-changed",
            Box::new(|d: &Path| {
                fs::write(
                    d.join(&snap).join("snapshots/snap1/nb-1-big-Index.db"),
                    b"x",
                )
                .unwrap();
                None
            }),
            "foreign file changed",
        ),
        (
            "decoy-chmod",
            Box::new(|d: &Path| {
                chmod(&d.join("edge/keyspace-notes.txt"), 0o600);
                None
            }),
            "foreign file changed",
        ),
        (
            "planted-removed",
            Box::new(|d: &Path| Some(d.join(&enc).join("nb-7-big-Data.db"))),
            "foreign file removed",
        ),
        (
            "sstable-lost",
            Box::new(|d: &Path| {
                fs::remove_file(d.join(&enc).join("nb-1-big-Data.db")).unwrap();
                None
            }),
            "SSTable lost",
        ),
        (
            "log-left",
            Box::new(|d: &Path| {
                fs::write(
                    d.join(&snap)
                        .join("nb_txn_upgradesstables_6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a.log"),
                    b"",
                )
                .unwrap();
                None
            }),
            "not resolved",
        ),
        (
            "partial-generation",
            Box::new(|d: &Path| {
                fs::write(d.join(&snap).join(".t_idx/nb-9-big-Data.db"), b"partial").unwrap();
                None
            }),
            "not resolved",
        ),
        (
            "generation-reused",
            Box::new(|d: &Path| {
                // A real rekey, then its new generation of edge.t_snap renamed to 3: below the
                // snapshot's generation 4.
                let r = run_in(&sw.ds.root, &rekey_args(&sw.ds, d, 1), ENV);
                assert_eq!(r.code, 0, "{}", r.all());
                let dir = d.join(&snap);
                for e in fs::read_dir(&dir).unwrap() {
                    let name = e.unwrap().file_name().to_str().unwrap().to_string();
                    if let Some(c) = name.strip_prefix("nb-5-big-") {
                        fs::rename(dir.join(&name), dir.join(format!("nb-3-big-{c}"))).unwrap();
                    }
                }
                None
            }),
            "generation reused",
        ),
    ];
    for (name, damage, want) in &cases {
        let j = judge(name, damage.as_ref());
        assert!(
            whats(&j).contains(want),
            "{name}: want [{want}], got {:?}",
            j.findings
        );
    }
}

// ------------------------------------------------------------------ found by the ScyllaDB sweep

/// Found by `rekey-scylla:write:1:EIO`: when writing the journal of a ScyllaDB swap failed, the
/// empty journal file stayed in `.sstable-rekey-scylla/`: the run exited 1 without saying
/// `recover`, `recover` then failed on it ("not a journal of sstable-rekey") and every later rekey
/// refused to start. The rule: a journal that is not whole and durable is removed with the error
/// (nothing was written in the table folder yet); the run fails that SSTable, `recover` has
/// nothing to do and the next rekey finishes.
#[test]
fn a_failed_scylla_journal_write_leaves_no_journal() {
    let sc = scylla::ScyllaSet::new();
    let base = sc.root().join("journal-write");
    let fresh = |name: &str| {
        let data = base.join(name).join("data");
        copy_tree(&sc.data, &data);
        data
    };
    let data = fresh("count");
    let t = traced(
        sc.root(),
        &sc.rekey_args(&data),
        ENV,
        &["write"],
        None,
        true,
        TIMEOUT,
    );
    assert_eq!(t.run.code, 0, "{}", t.run.all());
    let journal_write = t
        .calls
        .iter()
        .find(|c| c.kind == "write" && c.what.contains(scylla::JOURNALS))
        .expect("the journal is written")
        .clone();

    let data = fresh("faulted");
    let before = state(&data);
    let t = traced(
        sc.root(),
        &sc.rekey_args(&data),
        ENV,
        &["write"],
        Some(Fault {
            kind: "write",
            nth: journal_write.nth,
            errno: libc::EIO,
            plant: false,
        }),
        false,
        TIMEOUT,
    );
    assert!(
        t.injected
            .as_ref()
            .is_some_and(|c| c.what.contains(scylla::JOURNALS)),
        "the fault must hit the journal: {:?}",
        t.injected
    );
    assert_eq!(t.run.code, 1, "that SSTable failed: {}", t.run.all());
    let mut left = Vec::new();
    if data.join(scylla::JOURNALS).is_dir() {
        walk(&data.join(scylla::JOURNALS), &mut left);
    }
    assert!(left.is_empty(), "journal left: {left:?}\n{}", t.run.all());
    let rec = run_in(
        sc.root(),
        &strings(&["recover", "--data-dir", data.to_str().unwrap()]),
        ENV,
    );
    assert_eq!(rec.code, 0, "{}", rec.all());
    let r = run_in(sc.root(), &sc.rekey_args(&data), ENV);
    assert_eq!(r.code, 0, "the next rekey finishes: {}", r.all());
    let after = state(&data);
    assert!(
        before
            .keys()
            .filter(|p| p.to_string_lossy().contains("/snapshots/"))
            .all(|p| after.get(p) == before.get(p)),
        "snapshots untouched"
    );
    assert!(!data.join(scylla::JOURNALS).exists());
}

/// Found by `stage-scylla:fsync:12:EIO` (and the `openat` of the same folder): when the fsync of
/// a staging entry's folder after its manifest's rename failed, `stage` removed the staged files
/// but left `manifest.json`: an entry naming files that are gone (the next rekey found it stale;
/// nothing was lost, but it was not the whole-or-nothing entry the manifest promises). A failed
/// manifest write or fsync left `manifest.json.tmp` likewise. The rule: a manifest that is not
/// whole and durable goes with the error, and the entry folder with it.
#[test]
fn a_failed_staging_manifest_leaves_no_entry() {
    let sc = scylla::ScyllaSet::small();
    let base = sc.root().join("manifest-fsync");
    let fresh = |name: &str| {
        let data = base.join(name).join("data");
        copy_tree(&sc.data, &data);
        data
    };
    let stage = |data: &Path| {
        let mut a = sc.rekey_args(data);
        a[0] = "stage".into();
        a
    };
    let data = fresh("count");
    let kinds = ["fsync", "write"];
    let t = traced(sc.root(), &stage(&data), ENV, &kinds, None, true, TIMEOUT);
    assert_eq!(t.run.code, 0, "{}", t.run.all());
    // The manifest's own write and fsync, and the fsync of its folder after the rename.
    let mut points = Vec::new();
    for (i, c) in t.calls.iter().enumerate() {
        if c.what.contains(STAGING) && c.what.contains("manifest.json.tmp") {
            points.push(c.clone());
            if c.kind == "fsync" {
                let dir = t.calls[i + 1..]
                    .iter()
                    .find(|d| d.kind == "fsync")
                    .expect("the folder is fsynced after the manifest");
                points.push(dir.clone());
            }
        }
    }
    assert_eq!(points.len(), 6, "two entries: {points:?}");
    for c in points {
        let data = fresh(&format!("{}-{}", c.kind, c.nth));
        let t = traced(
            sc.root(),
            &stage(&data),
            ENV,
            &[c.kind],
            Some(Fault {
                kind: c.kind,
                nth: c.nth,
                errno: libc::EIO,
                plant: false,
            }),
            false,
            TIMEOUT,
        );
        assert_eq!(t.run.code, 1, "{}: {}", c.what, t.run.all());
        let mut left = Vec::new();
        if data.join(STAGING).is_dir() {
            walk(&data.join(STAGING), &mut left);
        }
        let what = c.what.replace(data.to_str().unwrap(), "DATA");
        let entries = left.iter().filter(|p| p.ends_with("manifest.json")).count();
        assert!(
            entries == 1 && !left.iter().any(|p| p.ends_with("manifest.json.tmp")),
            "{what} failed: one entry whole, nothing of the other: {left:?}\n{}",
            t.run.all()
        );
        let r = run_in(sc.root(), &sc.rekey_args(&data), ENV);
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(!data.join(STAGING).exists(), "{what}");
    }
}

/// Found by `recover-scylla-doomed:statx:15:EIO` and `recover-scylla-committed:statx:16:EIO`:
/// `recover` asked whether a `TOC.txt.tmp` was there with `Path::exists`, which says "no" when the
/// stat fails; it then took the swap for finished, removed its journal and exited 0, leaving the
/// unsealed copy (or the doomed old SSTable) with its `TOC.txt.tmp`, and every later rekey
/// refused the folder. The rule: a failed stat fails the recovery, the journal stays, and a
/// `recover` without the fault resolves it.
#[test]
fn a_failed_stat_in_scylla_recover_keeps_the_journal() {
    require_failpoints();
    let sc = scylla::ScyllaSet::new();
    for (failpoint, name) in [
        ("scylla.doomed", "doomed"),
        ("scylla.committed", "committed"),
    ] {
        let crashed = |run: &str| {
            let data = sc
                .root()
                .join("recover-stat")
                .join(name)
                .join(run)
                .join("data");
            copy_tree(&sc.data, &data);
            let mut env = ENV.to_vec();
            env.push((sstable_rekey::rekey::failpoint::ENV, failpoint));
            let r = run_in(sc.root(), &sc.rekey_args(&data), &env);
            assert_eq!(r.code, 128 + libc::SIGABRT, "{}", r.all());
            data
        };
        let recover_args =
            |data: &Path| strings(&["recover", "--data-dir", data.to_str().unwrap()]);
        let data = crashed("count");
        let t = traced(
            sc.root(),
            &recover_args(&data),
            ENV,
            &["statx"],
            None,
            true,
            TIMEOUT,
        );
        assert_eq!(t.run.code, 0, "{}", t.run.all());
        let stats: Vec<u64> = t
            .calls
            .iter()
            .filter(|c| c.kind == "statx" && c.what.contains("TOC.txt.tmp"))
            .map(|c| c.nth)
            .collect();
        assert!(!stats.is_empty(), "{name}: recover looks for a TOC.txt.tmp");
        for nth in stats {
            let data = crashed(&format!("statx-{nth}"));
            let t = traced(
                sc.root(),
                &recover_args(&data),
                ENV,
                &["statx"],
                Some(Fault {
                    kind: "statx",
                    nth,
                    errno: libc::EIO,
                    plant: false,
                }),
                false,
                TIMEOUT,
            );
            let mut journals = Vec::new();
            if data.join(scylla::JOURNALS).is_dir() {
                walk(&data.join(scylla::JOURNALS), &mut journals);
            }
            assert!(
                t.run.code != 0 && journals.len() == 1,
                "{name}, statx #{nth} failed: exit {}, journals {journals:?}\n{}",
                t.run.code,
                t.run.all()
            );
            let r = run_in(sc.root(), &recover_args(&data), ENV);
            assert_eq!(r.code, 0, "{}", r.all());
            let mut left = Vec::new();
            walk(&data, &mut left);
            assert!(
                !left.iter().any(|p| p.to_string_lossy().ends_with(".tmp")),
                "{name}: {left:?}"
            );
            assert!(!data.join(scylla::JOURNALS).exists());
        }
    }
}
