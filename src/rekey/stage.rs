//! Staged rekey: the expensive rewrite done before the maintenance window, while the node serves.
//!
//! `stage` writes, for every live SSTable still under an old key, its rewritten files (Data.db,
//! CompressionInfo.db, page-encrypted Partitions.db/Rows.db, Digest.crc32) into an entry of the
//! staging folder of its data directory, `<data_dir>/.sstable-rekey-staging/`, which must be on
//! the tables' file system. It never writes, renames, links or deletes anything in a table
//! folder. An entry's manifest, written last (temp file, fsync, rename, folder fsync), records
//! the source files' identities (device, inode, size, mtime) and each staged file's size and
//! CRC32: no manifest, no entry. Staged files carry no generation.
//!
//! The `rekey` that follows (node stopped) takes every entry whose sources are unchanged and
//! moves its files in with renames under a fresh generation, inside Cassandra's transaction; an
//! encrypted Statistics.db is re-encrypted from the current file and the other components are
//! hard-linked, as in an ordinary rekey ([`super::execute`]). Stale entries (a source gone or
//! changed, another target) are discarded; SSTables without a valid entry are rewritten then.
//!
//! The staging folders themselves (entries, manifests, what may be deleted) are [`super::staging`].
//! The staging folder belongs to this tool: `stage` removes the entries an earlier, interrupted
//! `stage` left without a manifest, and any file there it does not know stops it (never deleted).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fsio::{self, free_space, sync_dir};
use crate::keys::{KeyRef, KeyStore};
use crate::rekey::admit;
use crate::rekey::discover::{discover_with, fallback_file, Logs};
use crate::rekey::execute::{pool, NewSstable, Out, Rewritten};
use crate::rekey::find::Selection;
use crate::rekey::plan::{self, Job, Target};
use crate::rekey::report::{human_bytes, RekeyReport, SstableReport, Status};
use crate::rekey::scylla::{self, stage::Todo, ScyllaJob};
use crate::rekey::staging::{
    data_dir_of, load, moved_reason, prune, remove_entry, staging_dir, write_entry, Entry,
    EntryOutcome, Manifest, SourceFile, StagedFile, Staging, MANIFEST_FORMAT,
};
use crate::rekey::{evidence, exclusive, node_config, Progress};
use crate::sstable::Descriptor;

/// The files an entry of `job` holds, in the order they are written.
fn files_of(job: &Job) -> Vec<&str> {
    let l = &job.loaded;
    let mut v = vec!["Data.db", "CompressionInfo.db"];
    v.extend(l.paged.iter().map(|p| p.component.as_str()));
    if l.found.present.iter().any(|c| c == "Digest.crc32") {
        v.push("Digest.crc32");
    }
    v
}

/// For a rekey: attaches to each job (DSE/HCD and ScyllaDB) the valid entry of its SSTable, and
/// returns the entries that can no longer be used (their source gone or changed, or another
/// target), with why. Entries of tables outside `sel` are left alone.
pub fn attach<'a>(
    jobs: &mut [Job],
    scylla: impl IntoIterator<Item = &'a mut ScyllaJob>,
    staging: Staging,
    target: &str,
    sel: &Selection,
    verify: bool,
) -> Result<Vec<(Entry, String)>> {
    let mut entries: std::collections::HashMap<PathBuf, Entry> = staging
        .entries
        .into_iter()
        .map(|e| (e.manifest.source.clone(), e))
        .collect();
    let mut stale = Vec::new();
    let mut take =
        |desc: &Descriptor, expected: &[&str], check: Option<&str>| -> Result<Option<Box<Entry>>> {
            let path = desc.data_path();
            let data = fs::canonicalize(&path).map_err(|e| Error::io(&path, "resolve path", e))?;
            let Some(e) = entries.remove(&data) else {
                return Ok(None);
            };
            let why = e
                .stale_for(desc, expected, target, check)
                .or_else(|| verify.then(|| e.corrupt()).flatten());
            match why {
                None => Ok(Some(Box::new(e))),
                Some(why) => {
                    stale.push((e, why));
                    Ok(None)
                }
            }
        };
    for j in jobs.iter_mut() {
        let check = j.target_key.check_value();
        j.staged = take(&j.loaded.found.desc, &files_of(j), Some(&check))?;
    }
    for j in scylla {
        // A ScyllaDB copy's key bytes are checked at its commit (first blocks compared).
        j.staged = take(
            &j.loaded.found.desc,
            &scylla::stage::files_of(&j.loaded),
            None,
        )?;
    }
    for e in entries.into_values() {
        let (ks, t) = e.manifest.table.split_once('.').unwrap_or(("", ""));
        if sel.keyspace.as_deref().is_none_or(|k| k == ks)
            && (sel.tables.is_empty() || sel.tables.iter().any(|x| x == t))
        {
            let why = "its SSTable is no longer live or no longer under an old key".to_string();
            stale.push((e, why));
        }
    }
    Ok(stale)
}

/// For a rekey: removes the stale entries `attach` returned, each with a note in the report.
/// Also removes the entries an interrupted `stage` left without a manifest: after the window
/// nobody may run `stage` again, and they only take room.
pub fn discard_stale(
    stale: Vec<(Entry, String)>,
    incomplete: Vec<PathBuf>,
    report: &mut RekeyReport,
) -> Result<()> {
    report.totals.staged_discarded = stale.len();
    for (e, why) in stale {
        remove_entry(&e.dir)?;
        report.notes.push(format!(
            "discarded the staged copy of {} ({why})",
            e.manifest.source.display()
        ));
    }
    for d in incomplete {
        remove_entry(&d)?;
        report.notes.push(format!(
            "removed an incomplete staging entry {} (left by an interrupted stage)",
            d.display()
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ the stage command

pub struct StageOptions {
    pub to: KeyRef,
    pub from: Vec<KeyRef>,
    pub data_dirs: node_config::DataDirs,
    pub selection: Selection,
    pub jobs: usize,
    /// Read plus write bytes per second, at most (`--rate`, MB/s).
    pub rate: Option<f64>,
    /// The idle I/O class instead of best-effort level 7.
    pub idle_io: bool,
    pub kmip_configured: bool,
    pub move_kmip_group: bool,
}

/// Stages every selected live SSTable still under an old key (node running). Returns `Err` only
/// for errors before any work; per-SSTable outcomes are in the report (`staged`, `skipped` with
/// "already staged", `failed`).
pub fn stage(
    opts: &StageOptions,
    store: &KeyStore,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    let started = Instant::now();
    admit::refs(&opts.to, &opts.from)?;
    let target = Target::new(&opts.to)?;
    let dirs = &opts.data_dirs.dirs;
    // Never while a rekey or recover works on the data directories; verify may run.
    let _locks = exclusive::lock_data_dirs_shared(dirs)?;
    let (mut report, work) = admitted(opts, store, &target)?;
    let staging = lock_staging(dirs)?;
    let todo = match reconcile(dirs, work, &target, &opts.selection, &mut report)
        .and_then(|todo| check_staging_space(dirs, &todo).map(|()| todo))
    {
        Ok(todo) => todo,
        Err(e) => {
            staging.remove_if_new_and_empty();
            return Err(e);
        }
    };
    if let Err(e) = fsio::lower_priority(opts.idle_io) {
        report
            .notes
            .push(format!("could not lower the process's priority: {e}"));
    }
    write_entries(todo, opts, &target, cancel, progress, &mut report);
    Ok(report.finish(started))
}

/// What a stage writes: DSE/HCD jobs and ScyllaDB SSTables, each decided.
struct Work {
    jobs: Vec<Job>,
    scylla: Vec<Todo>,
}

/// Discovery, admission and the old keys' evidence, as for a rekey: the report so far and the
/// SSTables to stage. The tables may be in use: a compaction's transaction log is no obstacle.
fn admitted(opts: &StageOptions, store: &KeyStore, target: &Target) -> Result<(RekeyReport, Work)> {
    let dirs = &opts.data_dirs.dirs;
    let fallback = fallback_file(&opts.from)?;
    let found = discover_with(
        dirs,
        &opts.selection,
        fallback.as_ref(),
        Logs::Allow,
        &Staging::default(),
        false,
    )?;
    let mut report = RekeyReport::begin(
        &opts.to,
        &opts.from,
        false,
        &opts.data_dirs,
        &found.unseen,
        Vec::new(),
        found.notes.clone(),
    );
    report.command = "stage";
    let cx = admit::Context {
        target,
        from: opts.from.iter().map(KeyRef::id).collect::<Result<_>>()?,
        store,
        kmip_configured: opts.kmip_configured,
        move_kmip_group: opts.move_kmip_group,
    };
    let busy = compacting(&found.live)?;
    let (scylla, live) = scylla::split(found.live);
    let before = report.sstables.len();
    let jobs = admit::all(live, &cx, &opts.to, &mut report.sstables)?;
    // An SSTable that fails in a table a compaction writes in is probably its output: nothing to
    // stage yet (the rekey reads it again).
    for r in report.sstables[before..]
        .iter_mut()
        .filter(|r| r.status == Status::Failed)
    {
        if busy.iter().any(|t| Path::new(&r.old).starts_with(t)) {
            r.status = Status::Skipped;
            r.reason = Some(format!(
                "not staged while a compaction runs in its table ({}); the rekey reads it again",
                r.reason.as_deref().unwrap_or("unreadable")
            ));
        }
    }
    let from = cx.from.clone();
    let scylla = scylla_decided(scylla, opts, store, &from, &mut report.sstables);
    let work = Work { jobs, scylla };
    admit::owners(work.founds(), target)?;
    same_file_system(dirs, work.descs())?;
    let (jobs, refused) = evidence::confirm(work.jobs);
    report.sstables.extend(refused);
    Ok((
        report,
        Work {
            jobs,
            scylla: work.scylla,
        },
    ))
}

impl Work {
    fn founds(&self) -> impl Iterator<Item = &crate::rekey::find::Found> {
        let dse = self.jobs.iter().map(|j| &j.loaded.found);
        dse.chain(self.scylla.iter().map(|t| &t.job.loaded.found))
    }

    fn descs(&self) -> impl Iterator<Item = &Descriptor> {
        self.founds().map(|f| &f.desc)
    }
}

/// The ScyllaDB SSTables to stage, each decided as a rekey would ([`scylla::run::prepare`]: its
/// old key proven); the others reported (skipped or failed) into `reports`.
fn scylla_decided(
    sstables: Vec<ScyllaJob>,
    opts: &StageOptions,
    store: &KeyStore,
    from: &[crate::keys::KeyId],
    reports: &mut Vec<SstableReport>,
) -> Vec<Todo> {
    let cx = scylla::run::Context {
        to: &opts.to,
        from,
        store,
        data_dirs: &opts.data_dirs.dirs,
        dry_run: false,
    };
    let mut todo = Vec::new();
    for job in sstables {
        let mut report = scylla::run::report_of(&job.loaded);
        let decided = scylla::run::prepare(&job.loaded, &cx, &mut report).and_then(|p| {
            p.map(|p| scylla::check::evidence(&job.loaded, &p.old).map(|()| p))
                .transpose()
        });
        match decided {
            Ok(Some(prepared)) => todo.push(Todo {
                job,
                prepared,
                report,
            }),
            Ok(None) => reports.push(report),
            Err(e) => {
                report.fail(&e);
                reports.push(report);
            }
        }
    }
    todo
}

/// The table folders with a transaction log: a compaction (or flush) is writing there now.
fn compacting(
    live: &[(crate::rekey::find::Found, Result<plan::Load>)],
) -> Result<std::collections::HashSet<PathBuf>> {
    let mut busy = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for (f, _) in live {
        if seen.insert(f.table.dir.clone())
            && !crate::rekey::find::leftover_logs(&f.table)?.is_empty()
        {
            busy.insert(f.table.dir.clone());
        }
    }
    Ok(busy)
}

/// What earlier stages left: incomplete and stale entries go, valid ones are kept (their
/// SSTables reported as already staged). Returns the jobs still to stage.
fn reconcile(
    dirs: &[PathBuf],
    mut work: Work,
    target: &Target,
    sel: &Selection,
    report: &mut RekeyReport,
) -> Result<Work> {
    let mut staging = load(dirs)?;
    for d in std::mem::take(&mut staging.incomplete) {
        remove_entry(&d)?;
        report.notes.push(format!(
            "removed an incomplete staging entry {}",
            d.display()
        ));
    }
    let scylla = work.scylla.iter_mut().map(|t| &mut t.job);
    let target = target.id.to_string();
    for (e, why) in attach(&mut work.jobs, scylla, staging, &target, sel, false)? {
        remove_entry(&e.dir)?;
        report.notes.push(format!(
            "removed the stale staging entry of {} ({why})",
            e.manifest.source.display()
        ));
    }
    let (kept, jobs): (Vec<Job>, Vec<Job>) =
        work.jobs.into_iter().partition(|j| j.staged.is_some());
    let (kept_scylla, scylla): (Vec<Todo>, Vec<Todo>) = work
        .scylla
        .into_iter()
        .partition(|t| t.job.staged.is_some());
    let kept = kept.into_iter().map(|j| j.report);
    for mut r in kept.chain(kept_scylla.into_iter().map(|t| t.report)) {
        r.status = Status::Skipped;
        r.reason = Some("already staged (valid entry kept)".into());
        r.keep_counts();
        report.sstables.push(r);
    }
    Ok(Work { jobs, scylla })
}

/// Stages `todo`, `--jobs` at a time under `--rate`; after Ctrl-C nothing new starts.
fn write_entries(
    todo: Work,
    opts: &StageOptions,
    target: &Target,
    cancel: &AtomicBool,
    progress: &dyn Progress,
    report: &mut RekeyReport,
) {
    let throttle = Throttle::new(opts.rate, progress);
    let dse: u64 = todo.jobs.iter().map(|j| j.loaded.data_len).sum();
    let scylla: u64 = todo
        .scylla
        .iter()
        .map(|t| t.job.loaded.encrypted_bytes())
        .sum();
    progress.start(dse + scylla, todo.jobs.len() + todo.scylla.len());
    let (done, never) = pool(todo.jobs, opts.jobs, cancel, |job| {
        let r = stage_one(&job, &opts.data_dirs.dirs, target, cancel, &throttle);
        progress.finished(&r);
        r
    });
    let dirs = &opts.data_dirs.dirs;
    let target = target.id.to_string();
    let scylla = scylla::stage::stage_all(todo.scylla, dirs, &target, cancel, &throttle);
    progress.end();
    report.sstables.extend(done);
    report.sstables.extend(scylla);
    report.sstables.extend(never.into_iter().map(|j| {
        let mut r = j.report;
        r.status = Status::NotStarted;
        r.reason = Some("not started: the stage was interrupted; run it again".into());
        r
    }));
    report.sstables.sort_by(|a, b| a.old.cmp(&b.old));
}

/// `stage --discard`: removes every staging entry of `data_dirs` and the staging folders.
pub fn discard(data_dirs: &[PathBuf]) -> Result<usize> {
    let _locks = exclusive::lock_data_dirs_shared(data_dirs)?;
    let _staging_locks = lock_staging(data_dirs)?;
    let st = load(data_dirs)?;
    let n = st.entries.len() + st.incomplete.len();
    for e in st.entries {
        remove_entry(&e.dir)?;
    }
    for d in st.incomplete {
        remove_entry(&d)?;
    }
    for dd in data_dirs {
        prune(dd)?;
    }
    Ok(n)
}

/// The staging folders, locked for this run; those it created are remembered.
struct StagingLocks {
    _held: Vec<File>,
    created: Vec<PathBuf>,
}

impl StagingLocks {
    /// An early error leaves no trace: the staging folders this run made go while still empty.
    fn remove_if_new_and_empty(&self) {
        for d in &self.created {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Creates the staging folders (owned like their data directory) and takes an exclusive lock on
/// each: one `stage` at a time.
fn lock_staging(data_dirs: &[PathBuf]) -> Result<StagingLocks> {
    let mut locks = StagingLocks {
        _held: Vec::new(),
        created: Vec::new(),
    };
    for dd in data_dirs {
        let root = staging_dir(dd);
        match fs::create_dir(&root) {
            Ok(()) => {
                locks.created.push(root.clone());
                let m = fs::metadata(dd).map_err(|e| Error::io(dd, "stat", e))?;
                std::os::unix::fs::chown(&root, Some(m.uid()), Some(m.gid()))
                    .map_err(|e| Error::io(&root, "chown", e))?;
                sync_dir(dd)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&root, "create staging folder", e)),
        }
        let f = File::open(&root).map_err(|e| Error::io(&root, "open staging folder", e))?;
        match fsio::try_lock(&f, true) {
            Ok(true) => locks._held.push(f),
            Ok(false) => {
                return Err(Error::Usage(format!(
                    "another sstable-rekey stage is working on {}; wait for it to finish",
                    root.display()
                )))
            }
            Err(e) => return Err(Error::io(&root, "lock staging folder", e)),
        }
    }
    Ok(locks)
}

/// Committing is a rename: every table folder must be on its staging folder's file system.
fn same_file_system<'a>(
    dirs: &[PathBuf],
    sstables: impl Iterator<Item = &'a Descriptor>,
) -> Result<()> {
    for d in sstables {
        let dir = &d.dir;
        let dd = data_dir_of(dirs, dir)?;
        // The staging folder is made in the data directory, or is there already.
        let root = match staging_dir(dd) {
            r if r.exists() => r,
            _ => dd.clone(),
        };
        let a = fs::metadata(dir).map_err(|e| Error::io(dir, "stat", e))?;
        let b = fs::metadata(&root).map_err(|e| Error::io(&root, "stat", e))?;
        if a.dev() != b.dev() {
            return Err(Error::Usage(format!(
                "{} is on another file system than {}: a staged copy could not be renamed in. Stage with the data directory that holds it (--data-dir), or rekey that table offline",
                dir.display(),
                root.display()
            )));
        }
    }
    Ok(())
}

/// Room for every staged copy at once (they stay until the rekey), per file system.
fn check_staging_space(dirs: &[PathBuf], work: &Work) -> Result<()> {
    let dse = work
        .jobs
        .iter()
        .map(|j| (&j.loaded.found.desc, plan::sum_new_len(&j.new_lens)));
    let scylla = work
        .scylla
        .iter()
        .map(|t| (&t.job.loaded.found.desc, t.job.loaded.encrypted_bytes()));
    let mut per_fs: BTreeMap<u64, (u64, u64, PathBuf)> = BTreeMap::new();
    for (desc, bytes) in dse.chain(scylla) {
        let root = staging_dir(data_dir_of(dirs, &desc.dir)?);
        let (free, fsid) = free_space(&root)?;
        let e = per_fs.entry(fsid).or_insert((free, 0, root));
        e.1 += bytes + 64 * 1024;
    }
    for (free, need, root) in per_fs.into_values() {
        if need > free {
            return Err(Error::Usage(format!(
                "not enough free space for the staged copies in {}: {} needed, {} free. Stage fewer tables at a time (KEYSPACE TABLE...) and rekey in between, or free some space",
                root.display(),
                human_bytes(need),
                human_bytes(free)
            )));
        }
    }
    Ok(())
}

/// Stages one SSTable: its entry written and its manifest last; on failure, what this run wrote
/// of it is removed.
fn stage_one(
    job: &Job,
    dirs: &[PathBuf],
    target: &Target,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> SstableReport {
    let t0 = Instant::now();
    let desc = &job.loaded.found.desc;
    let outcome = write_entry(
        dirs,
        desc,
        &|| sources_of(job),
        |dir, created| {
            let w = NewSstable {
                job,
                target,
                out: Out::Entry(dir),
                cancel,
            };
            w.write_staged(created, progress)
        },
        |sources, w| manifest_of(job, sources, target, w),
        cancel,
    );
    let mut r = job.report.clone();
    match outcome {
        EntryOutcome::Written { dir, written: w } => {
            r.status = Status::Staged;
            r.new = Some(dir.display().to_string());
            r.rekeyed_chunks = w.counts.rekeyed;
            r.unchanged_chunks = w.counts.unchanged;
            r.raw_chunks = w.counts.raw;
            r.bytes_in = job.loaded.data_len;
            r.bytes_out = plan::sum_new_len(&job.new_lens);
        }
        EntryOutcome::Moved(e) => {
            r.status = Status::Skipped;
            r.reason = Some(moved_reason(&e));
        }
        EntryOutcome::Failed(e) => r.fail(&e),
        EntryOutcome::CleanupFailed(e) => r.fail(&e),
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r
}

/// The identities of the source files a staged file is made from.
fn sources_of(job: &Job) -> Result<Vec<SourceFile>> {
    let desc = &job.loaded.found.desc;
    let mut v = vec!["Data.db", "CompressionInfo.db"];
    v.extend(job.loaded.paged.iter().map(|p| p.component.as_str()));
    v.iter().map(|c| SourceFile::of(&desc.path(c), c)).collect()
}

/// The manifest of a DSE/HCD entry.
fn manifest_of(
    job: &Job,
    sources: Vec<SourceFile>,
    target: &Target,
    w: &Rewritten,
) -> Result<Manifest> {
    let data = job.loaded.found.desc.data_path();
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        table: job.loaded.found.table.qualified(),
        source: fs::canonicalize(&data).map_err(|e| Error::io(&data, "resolve path", e))?,
        sources,
        target: target.id.to_string(),
        target_check: job.target_key.check_value(),
        files: w
            .files
            .iter()
            .map(|(c, size, crc32)| StagedFile {
                component: c.clone(),
                size: *size,
                crc32: *crc32,
            })
            .collect(),
        rekeyed_chunks: w.counts.rekeyed,
        unchanged_chunks: w.counts.unchanged,
        raw_chunks: w.counts.raw,
        chunk_runs: job.loaded.chunk_runs(),
    })
}

/// `--rate`: a token bucket over read plus write bytes, wrapped around the caller's progress. It
/// starts empty and holds at most a tenth of a second of credit, so that the rate holds over any
/// few seconds, not only on average over a long run.
struct Throttle<'a> {
    rate: Option<f64>,
    state: Mutex<(f64, Instant)>,
    inner: &'a dyn Progress,
}

impl<'a> Throttle<'a> {
    fn new(rate_mb_s: Option<f64>, inner: &'a dyn Progress) -> Self {
        let rate = rate_mb_s.map(|r| r * 1e6);
        Throttle {
            rate,
            state: Mutex::new((0.0, Instant::now())),
            inner,
        }
    }
}

impl Progress for Throttle<'_> {
    fn advance(&self, bytes: u64) {
        if let Some(rate) = self.rate {
            let wait = {
                let mut s = self.state.lock().unwrap();
                let now = Instant::now();
                s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(rate / 10.0);
                s.1 = now;
                // Read once, written once.
                s.0 -= 2.0 * bytes as f64;
                if s.0 < 0.0 {
                    -s.0 / rate
                } else {
                    0.0
                }
            };
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
        }
        self.inner.advance(bytes);
    }

    fn finished(&self, r: &SstableReport) {
        self.inner.finished(r);
    }
}
