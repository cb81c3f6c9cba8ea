//! `rekey`: the main job.

use crate::app::cli::RekeyArgs;
use crate::app::exit::{Exit, CANCEL};
use crate::app::scope::{check_report_path, parse_refs, print_notes, print_unreadable, selection};
use sstable_rekey::error::{Error, Result};
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::app::scope::resolve_data_dirs;
use sstable_rekey::keys::KeyRef;
use sstable_rekey::rekey::report::{human_bytes, write_json, RekeyReport, SstableReport, Status};
use sstable_rekey::rekey::scylla::commitlog::read_scylla_yaml;
use sstable_rekey::rekey::{self, RekeyOptions};

pub fn run(a: &RekeyArgs) -> Result<Exit> {
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
    let keys = crate::app::kmip::build_keys(
        &crate::app::scope::kmip_opts(&a.scope.kmip)?,
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
        ignore_staged: a.ignore_staged,
        verify_staged: a.verify_staged,
        purge_later: a.purge_later,
        scylla_yaml: match &a.scope.kmip.scylla_yaml {
            Some(p) => Some((p.clone(), read_scylla_yaml(p)?)),
            None => None,
        },
    };
    if let Some(p) = &a.scope.report {
        check_report_path(p)?;
    }
    let report = rekey::rekey(
        &opts,
        &store,
        &CANCEL,
        &crate::app::progress::Shown::new(!a.quiet),
    )?;
    for w in store.warnings() {
        errln!("sstable-rekey: {w}");
    }
    let report_failed = publish(&report, a.scope.report.as_deref());
    print_totals(&report);
    let purge_failed = print_obsolete(&report);
    let unreadable_backups = print_unreadable(&report.backups);
    if !report.alter_table.is_empty() {
        outln!("\nRun once per table (on any node) so that new writes use the new key:");
        for s in &report.alter_table {
            outln!("  {s}");
        }
    }
    if !report.scylla_yaml.is_empty() {
        outln!("\nChange scylla.yaml on every node so that new writes use the new key:");
        for s in &report.scylla_yaml {
            outln!("  {s}");
        }
    }
    if CANCEL.load(Ordering::SeqCst) {
        return Ok(Exit::Interrupted);
    }
    Ok(
        if report.totals.failed > 0 || report_failed || unreadable_backups || purge_failed {
            Exit::Failed
        } else {
            Exit::Ok
        },
    )
}

/// The notes on stderr, the JSON report when asked for, and a line per SSTable. True when the
/// report could not be written: the work is done, so that is exit 1, not "nothing was done" (2).
pub fn publish(report: &RekeyReport, path: Option<&Path>) -> bool {
    print_notes(&report.notes);
    let mut report_failed = false;
    if let Some(p) = path {
        if let Err(e) = write_json(p, report) {
            errln!("sstable-rekey: error: {e}");
            report_failed = true;
        }
    }
    print_sstables(&report.sstables);
    report_failed
}

/// `, N not started (interrupted)` for a totals line, when some SSTables never started.
pub fn not_started(n: usize) -> String {
    match n {
        0 => String::new(),
        n => format!(", {n} not started (interrupted)"),
    }
}

/// One line per SSTable: what happened to it.
fn print_sstables(sstables: &[SstableReport]) {
    for s in sstables {
        match s.status {
            Status::Failed => outln!("FAILED   {}: {}", s.old, s.reason.as_deref().unwrap_or("")),
            Status::Planned => outln!(
                "PLAN     {} ({}, keys {:?})",
                s.old,
                match s.encrypted_files {
                    Some(_) => units(s),
                    None => format!("{} chunks", s.chunks),
                },
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
            Status::Staged => outln!(
                "staged   {} -> {} ({})",
                s.old,
                s.new.as_deref().unwrap_or(""),
                units(s)
            ),
            Status::Rekeyed => outln!(
                "rekeyed  {} -> {} ({}{}{})",
                s.old,
                s.new.as_deref().unwrap_or(""),
                units(s),
                if s.from_staged { ", staged copy" } else { "" },
                if s.raw_chunks > 0 {
                    format!(", {} PLAINTEXT chunks copied as they were", s.raw_chunks)
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// What an SSTable's rewrite counts: chunks (DSE/HCD), or whole encrypted files (ScyllaDB).
fn units(s: &SstableReport) -> String {
    match s.encrypted_files {
        Some(1) => "1 encrypted file".into(),
        Some(n) => format!("{n} encrypted files"),
        None => format!("{} chunks", s.rekeyed_chunks),
    }
}

/// What became of the old files the staged commits moved aside; true when their purge failed.
fn print_obsolete(report: &RekeyReport) -> bool {
    let Some(o) = &report.obsolete else {
        return false;
    };
    if let Some(e) = &o.error {
        errln!("sstable-rekey: error: every rekeyed SSTable is committed and live, but deleting the old files moved aside failed: {e}");
        errln!("sstable-rekey: they are obsolete (no live SSTable needs them); fix the cause and run `sstable-rekey purge`");
        return true;
    }
    let t = &report.totals;
    match o.purged {
        true => outln!(
            "window: every SSTable committed after {:.2}s; then {} replaced files ({}) purged in {:.2}s",
            t.window_seconds,
            o.files,
            human_bytes(o.bytes),
            o.seconds
        ),
        false => outln!(
            "window: every SSTable committed after {:.2}s; {} replaced files ({}, still under the old keys) wait in {}: run `sstable-rekey purge` once the node is up",
            t.window_seconds,
            o.files,
            human_bytes(o.bytes),
            o.folders.join(", ")
        ),
    }
    false
}

/// The totals line and the warnings that concern the whole run.
fn print_totals(report: &RekeyReport) {
    let t = &report.totals;
    outln!(
        "{} SSTables: {} rekeyed, {} planned, {} skipped, {} failed{}; {} in {:.2}s ({:.0} MB/s)",
        t.sstables,
        t.rekeyed,
        t.planned,
        t.skipped,
        t.failed,
        not_started(t.not_started),
        human_bytes(t.bytes_in),
        t.seconds,
        t.throughput_mb_s
    );
    if t.staged_committed + t.staged_discarded > 0 {
        outln!(
            "staged copies: {} committed, {} rewritten now, {} stale copies discarded",
            t.staged_committed,
            t.rekeyed_now,
            t.staged_discarded
        );
    }
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
}
