//! Runs the subcommands: builds options from the arguments, calls the pipeline, prints results and
//! maps them to the exit-status contract (0 ok, 1 partial failure, 2 before any work, 130 Ctrl-C).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cli::{Cli, Command, InspectArgs, RecoverArgs, RekeyArgs, Scope, VerifyArgs};
use crate::error::{Error, Result};
use crate::keys::KeyRef;
use crate::rekey::find::Selection;
use crate::rekey::node_config::DataDirs;
use crate::rekey::report::{write_json, Status};
use crate::rekey::verify::VerifyOptions;
use crate::rekey::{self, inspect, RekeyOptions};
use crate::sstable::txnlog;
use crate::util::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Interrupted = 130,
}

/// Set by the SIGINT handler; checked between windows of work.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

pub fn run(cli: Cli) -> Exit {
    let r = match cli.command {
        Command::Rekey(a) => run_rekey(&a),
        Command::Verify(a) => run_verify(&a),
        Command::Inspect(a) => run_inspect(&a),
        Command::Recover(a) => run_recover(&a),
        Command::Demo(a) => crate::demo::run(a.dir.as_deref()),
        Command::Bench(a) => run_bench(&a),
        Command::Kmip(a) => crate::kmip_cmd::run(&a),
    };
    match r {
        Ok(code) => code,
        Err(Error::Interrupted) => {
            errln!("sstable-rekey: interrupted; the SSTable in flight was rolled back");
            Exit::Interrupted
        }
        Err(e) => {
            errln!("sstable-rekey: error: {e}");
            if e.is_config() || matches!(e, Error::Io { .. }) {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
    }
}

fn selection(s: &Scope) -> Selection {
    Selection {
        keyspace: s.keyspace.clone(),
        tables: s.tables.clone(),
    }
}

/// The data directories of a command (`--data-dir` deduplicated, else the node's cassandra.yaml,
/// else the default), with what the operator should know said on stderr.
pub fn resolve_data_dirs(given: &[PathBuf], yaml: Option<&std::path::Path>) -> Result<DataDirs> {
    let d = DataDirs::resolve(given, yaml, &|k| std::env::var_os(k))?;
    for n in &d.notes {
        errln!("sstable-rekey: {n}");
    }
    Ok(d)
}

fn print_notes(notes: &[String]) {
    for n in notes {
        errln!("sstable-rekey: {n}");
    }
}

fn parse_refs(v: &[String]) -> Result<Vec<KeyRef>> {
    v.iter().map(|s| s.parse()).collect()
}

pub fn run_rekey(a: &RekeyArgs) -> Result<Exit> {
    let to: KeyRef = a.to.parse()?;
    let from = parse_refs(&a.from)?;
    if a.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let sel = selection(&a.scope);
    let dirs = resolve_data_dirs(&a.scope.data_dirs, a.scope.cassandra_yaml.as_deref())?;
    if let Some(m) = dirs.missing_sentence() {
        errln!("sstable-rekey: warning: {m}. Their SSTables are not rekeyed in this run");
    }
    let keys = crate::kmip_cmd::build_store(
        &a.scope.kmip,
        a.scope.keyring.as_deref(),
        &from,
        Some(&to),
        a.create_key,
        a.dry_run,
        Some((&dirs.dirs, &sel)),
    )?;
    let store = keys.store;
    let opts = RekeyOptions {
        kmip_configured: keys.kmip_configured,
        move_kmip_group: a.move_kmip_group,
        to: keys.to.expect("given"),
        from,
        data_dirs: dirs,
        selection: selection(&a.scope),
        jobs: a.jobs,
        dry_run: a.dry_run,
        progress: !a.quiet,
    };
    if let Some(p) = &a.scope.report {
        check_report_path(p)?;
    }
    let report = rekey::rekey(&opts, &store, &CANCEL)?;
    print_notes(&report.notes);
    let mut report_failed = false;
    if let Some(p) = &a.scope.report {
        if let Err(e) = write_json(p, &report) {
            // The work is done: say so below, and exit 1 rather than "nothing was done" (2).
            errln!("sstable-rekey: error: {e}");
            report_failed = true;
        }
    }
    let t = &report.totals;
    for s in &report.sstables {
        match s.status {
            Status::Failed => outln!("FAILED   {}: {}", s.old, s.reason.as_deref().unwrap_or("")),
            Status::Planned => outln!(
                "PLAN     {} ({} chunks, keys {:?})",
                s.old,
                s.chunks,
                s.keys_before
            ),
            Status::Skipped => {
                outln!("skipped  {}: {}", s.old, s.reason.as_deref().unwrap_or(""))
            }
            Status::NotStarted => {
                outln!(
                    "NOT STARTED {}: {}",
                    s.old,
                    s.reason.as_deref().unwrap_or("")
                )
            }
            Status::Rekeyed => outln!(
                "rekeyed  {} -> {} ({} chunks{})",
                s.old,
                s.new.as_deref().unwrap_or(""),
                s.rekeyed_chunks,
                if s.raw_chunks > 0 {
                    format!(", {} PLAINTEXT chunks copied as they were", s.raw_chunks)
                } else {
                    String::new()
                }
            ),
        }
    }
    outln!(
        "{} SSTables: {} rekeyed, {} planned, {} skipped, {} failed{}; {} in {:.2}s ({:.0} MB/s)",
        t.sstables,
        t.rekeyed,
        t.planned,
        t.skipped,
        t.failed,
        if t.not_started > 0 {
            format!(", {} not started (interrupted)", t.not_started)
        } else {
            String::new()
        },
        human_bytes(t.bytes_in),
        t.seconds,
        t.throughput_mb_s
    );
    if t.raw_chunks > 0 {
        outln!(
            "warning: {} chunks are stored in plaintext on disk (min_compress_ratio); no key protects them",
            t.raw_chunks
        );
    }
    if !report.backups.is_empty() {
        outln!(
            "note: {} snapshot/backup SSTables were not modified; they still need their old keys",
            report.backups.len()
        );
    }
    let unreadable_backups = print_unreadable(&report.backups);
    if !report.alter_table.is_empty() {
        outln!("\nRun once per table (on any node) so that new writes use the new key:");
        for s in &report.alter_table {
            outln!("  {s}");
        }
    }
    if CANCEL.load(Ordering::SeqCst) {
        return Ok(Exit::Interrupted);
    }
    Ok(if t.failed > 0 || report_failed || unreadable_backups {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Snapshot/backup SSTables whose keys could not be read: named, with what to do. True if any.
fn print_unreadable(backups: &[crate::rekey::report::BackupReport]) -> bool {
    let mut any = false;
    for b in crate::rekey::report::unreadable(backups) {
        any = true;
        outln!(
            "FAILED (backup) {} ({:?}): cannot tell which keys it still needs: {}. Fix or remove it before destroying any old key",
            b.data,
            b.location,
            b.error.as_deref().unwrap_or("")
        );
    }
    any
}

/// A report destination that cannot be written is found before any work.
fn check_report_path(p: &std::path::Path) -> Result<()> {
    crate::fsio::check_replaceable(p)
        .map_err(|e| Error::Usage(format!("--report {}: cannot write there: {e}", p.display())))
}

pub fn run_verify(a: &VerifyArgs) -> Result<Exit> {
    let keys = parse_refs(&a.keys)?;
    let store = crate::kmip_cmd::build_store(
        &a.scope.kmip,
        a.scope.keyring.as_deref(),
        &keys,
        None,
        false,
        false,
        None,
    )?
    .store;
    let opts = VerifyOptions {
        keys,
        data_dirs: resolve_data_dirs(&a.scope.data_dirs, a.scope.cassandra_yaml.as_deref())?,
        selection: selection(&a.scope),
        deep: a.deep,
    };
    if let Some(p) = &a.scope.report {
        check_report_path(p)?;
    }
    let rep = rekey::verify::verify(&opts, &store, &CANCEL)?;
    print_notes(&rep.notes);
    if let Some(p) = &a.scope.report {
        write_json(p, &rep)?;
    }
    for v in &rep.sstables {
        let mut keys: Vec<String> = v
            .keys
            .iter()
            .map(|(k, n)| format!("{n} under {k}"))
            .collect();
        keys.extend(
            v.index_pages
                .iter()
                .map(|(k, n)| format!("{n} index pages under {k}")),
        );
        keys.extend(
            v.metadata
                .iter()
                .map(|(k, n)| format!("{n} metadata components under {k}")),
        );
        match v.status {
            "ok" => outln!(
                "OK          {}: {} chunks, {}",
                v.data,
                v.chunks,
                keys.join(", ")
            ),
            "other_keys" => outln!(
                "OTHER KEY   {}: {} (not given: {})",
                v.data,
                keys.join(", "),
                v.other_keys.join(", ")
            ),
            "unencrypted" => outln!("UNENCRYPTED {}", v.data),
            _ => outln!(
                "FAILED      {}: {}",
                v.data,
                v.error.as_deref().unwrap_or("")
            ),
        }
    }
    for b in rep.backups.iter().filter(|b| b.error.is_none()) {
        let keys: Vec<String> = b
            .keys
            .iter()
            .map(|(k, n)| format!("{n} under {k}"))
            .collect();
        outln!(
            "backup      {} ({:?}): {}",
            b.data,
            b.location,
            keys.join(", ")
        );
    }
    outln!(
        "{} SSTables: {} ok, {} under other keys, {} failed, {} unencrypted; {} plaintext chunks{}",
        rep.sstables.len(),
        rep.ok,
        rep.under_other_keys,
        rep.failed,
        rep.unencrypted,
        rep.raw_chunks,
        if rep.deep { " (deep)" } else { "" }
    );
    if !rep.backups.is_empty() {
        outln!(
            "note: {} snapshot/backup SSTables still need the keys listed above; destroying those keys makes them unreadable",
            rep.backups.len()
        );
    }
    print_unreadable(&rep.backups);
    if let Some(m) = rep.data_dirs.missing_sentence() {
        outln!("NOT VERIFIED: {m}. Nothing is proven about their SSTables");
    }
    Ok(if rep.passed() { Exit::Ok } else { Exit::Failed })
}

pub fn run_inspect(a: &InspectArgs) -> Result<Exit> {
    let mut all = Vec::new();
    for p in &a.paths {
        let (found, odd) = inspect::targets(p)?;
        for f in &found {
            all.push(inspect::inspect(f));
        }
        all.extend(odd.iter().map(|(p, why)| inspect::unreadable(p, why)));
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serializable")
        );
    } else {
        for i in &all {
            inspect::print_human(i);
        }
    }
    Ok(if all.iter().any(|i| i.error.is_some()) {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

pub fn run_recover(a: &RecoverArgs) -> Result<Exit> {
    let dirs = resolve_data_dirs(&a.data_dirs, a.cassandra_yaml.as_deref())?;
    if let Some(m) = dirs.missing_sentence() {
        errln!("sstable-rekey: warning: {m}. Their transaction logs are not resolved in this run");
    }
    let _locks = rekey::exclusive::ensure_alone(&dirs.dirs)?;
    let scan = rekey::find::tables(&dirs.dirs, &Selection::default())?;
    print_notes(&scan.notes);
    // Cassandra resolves the logs of what this run cannot read at its own startup; say what it is.
    for u in &scan.unseen {
        errln!(
            "sstable-rekey: warning: not checked for transaction logs: {}: {}",
            u.path.display(),
            u.why
        );
    }
    let mut failed = false;
    let mut n = 0;
    for t in &scan.tables {
        let mut dirs: Vec<PathBuf> = rekey::find::live_dirs(t)?;
        dirs.dedup();
        for d in dirs {
            for log in txnlog::logs_in(&d)? {
                n += 1;
                match txnlog::recover_log(&log) {
                    Ok(r) => outln!(
                        "{}: {}, {} files deleted",
                        r.log.display(),
                        r.outcome,
                        r.deleted.len()
                    ),
                    Err(e) => {
                        failed = true;
                        outln!("FAILED {}: {e}", log.display());
                    }
                }
            }
        }
    }
    outln!(
        "{n} transaction logs resolved{}",
        if failed {
            " (some failed: see above)"
        } else {
            ""
        }
    );
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

pub fn run_bench(a: &crate::cli::BenchArgs) -> Result<Exit> {
    let opts = crate::bench::BenchOptions {
        dir: a.dir.clone(),
        size: crate::bench::parse_size(&a.size).map_err(Error::Usage)?,
        chunk_kib: a.chunk_kib,
        bits: a.bits,
        threads: a.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        runs: a.runs.max(1),
        keep: a.keep,
        sstables: a.sstables.max(1),
    };
    let r = crate::bench::run(&opts)?;
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serializable")
        );
    } else {
        crate::bench::print_human(&r);
    }
    Ok(Exit::Ok)
}
