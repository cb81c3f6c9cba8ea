//! The rekey pipeline, one file per step: [`discover`] (find the SSTables and load what they
//! are) → [`admit`] (per SSTable: skip, fail, or a job with every key resolved) → [`evidence`]
//! (every old key proven by trial decryption) → [`plan::check_space`] → [`execute`] (rewrite in
//! parallel and commit with Cassandra's transaction log, [`commit`]) → [`report`]. Beside it:
//! [`stage`] (the same rewrite into [`staging`] folders while the node serves, which a rekey then
//! commits with renames), [`verify`] (the proof before destroying a key) and [`inspect`].
//! [`rekey`] is the driver.

pub mod admit;
pub mod commit;
pub mod discover;
pub mod evidence;
pub mod exclusive;
pub mod execute;
pub mod failpoint;
pub mod find;
pub mod generation;
pub mod inspect;
pub mod node_config;
pub mod obsolete;
pub mod plan;
pub mod report;
pub mod rewrite;
pub mod scylla;
pub mod stage;
pub mod staging;
pub mod verify;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::error::Result;
use crate::keys::{KeyRef, KeyStore};
use find::Selection;
use plan::Target;
use report::RekeyReport;

pub use discover::{discover, fallback_file, selection_active, Discovered, Discovery};
pub use report::{Progress, Silent};

pub struct RekeyOptions {
    pub to: KeyRef,
    pub from: Vec<KeyRef>,
    pub data_dirs: node_config::DataDirs,
    pub selection: Selection,
    pub jobs: usize,
    pub dry_run: bool,
    /// A KMIP configuration confirmed the `--to` group (see [`admit::kmip_group_move`]).
    pub kmip_configured: bool,
    /// `--move-kmip-group`: tables may move to the `--to` group from another one (or from a
    /// local key file) without a KMIP configuration confirming it.
    pub move_kmip_group: bool,
    /// Rewrite every SSTable now, leaving the staged copies of `stage` where they are.
    pub ignore_staged: bool,
    /// Read every staged file back and check its CRC32 before committing it.
    pub verify_staged: bool,
    /// Leave the replaced files that staged commits moved aside for `sstable-rekey purge`.
    pub purge_later: bool,
    /// `--scylla-yaml`: the node's scylla.yaml (path and what it says), for its follow-up.
    pub scylla_yaml: Option<(std::path::PathBuf, scylla::commitlog::ScyllaYaml)>,
}

/// Runs a rekey. Returns `Err` only for errors before any work (configuration, keys, space):
/// per-SSTable failures are in the report.
pub fn rekey(
    opts: &RekeyOptions,
    store: &KeyStore,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    let started = Instant::now();
    admit::refs(&opts.to, &opts.from)?;
    let target = Target::new(&opts.to)?;
    let _locks = match opts.dry_run {
        true => None,
        false => Some(exclusive::ensure_alone(&opts.data_dirs.dirs)?),
    };
    scylla::refuse_unfinished(&opts.data_dirs.dirs)?;
    let fallback = fallback_file(&opts.from)?;
    let from = opts
        .from
        .iter()
        .map(KeyRef::id)
        .collect::<Result<Vec<_>>>()?;
    // Staged copies, before loading: an SSTable with one is loaded from its chunk runs.
    let mut staged = staged_copies(opts)?;
    let incomplete = std::mem::take(&mut staged.incomplete);
    let found = discover::discover_with(
        &opts.data_dirs.dirs,
        &opts.selection,
        fallback.as_ref(),
        discover::Logs::Refuse,
        &staged,
        true,
    )?;
    let mut report = RekeyReport::begin(
        &opts.to,
        &opts.from,
        opts.dry_run,
        &opts.data_dirs,
        &found.unseen,
        discover::backup_reports(&found.backups),
        found.notes.clone(),
    );

    // Plan: every SSTable admitted or not, every key resolved, before anything is written.
    let Planned {
        jobs,
        scylla,
        stale,
    } = plan_all(opts, store, &target, &from, found.live, staged, &mut report)?;
    if opts.dry_run {
        report.planned(jobs.into_iter().map(|j| j.report), &target.id);
        report.done(
            scylla_sstables(scylla, &from, opts, store).0,
            &Default::default(),
        );
        return Ok(report.finish(started));
    }

    // Stale staged copies go first: never committed, they only take room.
    stage::discard_stale(stale, incomplete, &mut report)?;
    // Rewrite and commit.
    let statements = plan::alter_statements(&jobs, &target);
    let mut done = execute::execute(jobs, &target, opts.jobs, cancel, progress);
    let (scylla_done, scylla_statements) = scylla_sstables(scylla, &from, opts, store);
    done.extend(scylla_done);
    report.done(
        done,
        &statements.into_iter().chain(scylla_statements).collect(),
    );
    report.scylla_yaml = scylla_yaml_changes(opts, &report);
    if !opts.ignore_staged {
        let notes = staging::prune_all(&opts.data_dirs.dirs);
        report.notes.extend(notes);
    }
    // The window ends here: every SSTable is committed. Then the replaced files moved aside go,
    // unless they are left for `purge` (the node serving again).
    report.totals.window_seconds = started.elapsed().as_secs_f64();
    report.obsolete = obsolete_files(&opts.data_dirs.dirs, opts.purge_later);
    Ok(report.finish(started))
}

/// What a rekey will do, decided before anything is written.
struct Planned {
    jobs: Vec<plan::Job>,
    scylla: Vec<scylla::ScyllaJob>,
    /// Staged copies that can no longer be used, with why.
    stale: Vec<(staging::Entry, String)>,
}

/// Every live SSTable admitted or not (its report in `report` when not), owners checked, the old
/// keys proven, the staged copies attached, the space checked.
fn plan_all(
    opts: &RekeyOptions,
    store: &KeyStore,
    target: &Target,
    from: &[crate::keys::KeyId],
    live: Discovered,
    staged: staging::Staging,
    report: &mut RekeyReport,
) -> Result<Planned> {
    let cx = admit::Context {
        target,
        from: from.to_vec(),
        store,
        kmip_configured: opts.kmip_configured,
        move_kmip_group: opts.move_kmip_group,
    };
    let (mut scylla, live) = scylla::split(live);
    let jobs = admit::all(live, &cx, &opts.to, &mut report.sstables)?;
    let scylla_found = scylla.iter().map(|j| &j.loaded.found);
    admit::owners(
        jobs.iter().map(|j| &j.loaded.found).chain(scylla_found),
        target,
    )?;
    let (mut jobs, refused) = evidence::confirm(jobs);
    report.sstables.extend(refused);
    let stale = stage::attach(
        &mut jobs,
        &mut scylla,
        staged,
        &target.id.to_string(),
        &opts.selection,
        opts.verify_staged,
    )?;
    let unstaged: Vec<&plan::Job> = jobs.iter().filter(|j| j.staged.is_none()).collect();
    plan::check_space(&unstaged, opts.jobs)?;
    Ok(Planned {
        jobs,
        scylla,
        stale,
    })
}

/// The ScyllaDB SSTables of the run (FORMAT.md 4), rekeyed one after the other (planned only with
/// `--dry-run`).
fn scylla_sstables(
    sstables: Vec<scylla::ScyllaJob>,
    from: &[crate::keys::KeyId],
    opts: &RekeyOptions,
    store: &KeyStore,
) -> (
    Vec<report::SstableReport>,
    std::collections::HashMap<String, String>,
) {
    let done = scylla::run::all(
        sstables,
        &scylla::run::Context {
            to: &opts.to,
            from,
            store,
            data_dirs: &opts.data_dirs.dirs,
            dry_run: opts.dry_run,
        },
    );
    // The journal folders, when every swap finished (a journal left keeps its folder).
    for dd in &opts.data_dirs.dirs {
        let _ = std::fs::remove_dir(dd.join(scylla::swap::JOURNALS));
    }
    done
}

/// The scylla.yaml changes this run calls for (see [`scylla::follow_up::yaml_changes`]).
fn scylla_yaml_changes(opts: &RekeyOptions, report: &RekeyReport) -> Vec<String> {
    let Some((path, yaml)) = &opts.scylla_yaml else {
        return Vec::new();
    };
    let replaced = report
        .sstables
        .iter()
        .filter(|r| r.status == report::Status::Rekeyed)
        .flat_map(|r| r.keys_before.keys().cloned())
        .collect();
    scylla::follow_up::yaml_changes(path, yaml, &replaced, &opts.to)
}

/// The purge of the replaced files moved aside (or, with `later`, what waits for one).
fn obsolete_files(data_dirs: &[std::path::PathBuf], later: bool) -> Option<report::ObsoleteReport> {
    let t0 = Instant::now();
    let outcome = match later {
        true => obsolete::pending(data_dirs),
        false => obsolete::purge(data_dirs),
    };
    let (o, error) = match outcome {
        Ok(o) if o.files == 0 && o.folders.is_empty() => return None,
        Ok(o) => (o, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    Some(report::ObsoleteReport {
        purged: !later && error.is_none(),
        files: o.files,
        bytes: o.bytes,
        folders: o.folders,
        seconds: t0.elapsed().as_secs_f64(),
        error,
    })
}

/// The staged copies of earlier `stage` runs (none with `--ignore-staged`).
fn staged_copies(opts: &RekeyOptions) -> Result<staging::Staging> {
    match opts.ignore_staged {
        true => Ok(staging::Staging::default()),
        false => staging::load(&opts.data_dirs.dirs),
    }
}
