//! `stage`: the rewrite before the maintenance window, while the node serves.

use crate::app::cli::StageArgs;
use crate::app::exit::{Exit, CANCEL};
use crate::app::rekey::{not_started, publish};
use crate::app::scope::{check_report_path, parse_refs, resolve_data_dirs, selection};
use sstable_rekey::error::{Error, Result};
use sstable_rekey::keys::KeyRef;
use sstable_rekey::rekey::report::{human_bytes, RekeyReport};
use sstable_rekey::rekey::stage::{self, StageOptions};
use std::sync::atomic::Ordering;

pub fn run(a: &StageArgs) -> Result<Exit> {
    let sel = selection(&a.scope);
    let dirs = resolve_data_dirs(&a.scope.data_dirs, a.scope.cassandra_yaml.as_deref())?;
    if a.discard {
        let n = stage::discard(&dirs.dirs)?;
        outln!("removed {n} staging entries and the staging folders");
        return Ok(Exit::Ok);
    }
    let to: KeyRef = a.to.as_deref().expect("clap requires --to").parse()?;
    let from = parse_refs(&a.from)?;
    if a.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(Error::Usage(
            "--rate must be a positive number of MB/s".into(),
        ));
    }
    if let Some(m) = dirs.missing_sentence() {
        errln!("sstable-rekey: warning: {m}. Their SSTables are not staged in this run");
    }
    let keys = crate::app::kmip::build_keys(
        &crate::app::scope::kmip_opts(&a.scope.kmip)?,
        a.scope.keyring.as_deref(),
        &from,
        Some(&to),
        a.create_key,
        false,
        Some((&dirs.dirs, &sel)),
    )?;
    let opts = StageOptions {
        to: keys.to.expect("given"),
        from,
        data_dirs: dirs,
        selection: sel,
        jobs: a.jobs,
        rate: a.rate,
        idle_io: a.ionice == "idle",
        kmip_configured: keys.kmip_configured,
        move_kmip_group: a.move_kmip_group,
    };
    if let Some(p) = &a.scope.report {
        check_report_path(p)?;
    }
    let report = stage::stage(
        &opts,
        &keys.store,
        &CANCEL,
        &crate::app::progress::Shown::new(!a.quiet),
    )?;
    let report_failed = publish(&report, a.scope.report.as_deref());
    print_totals(&report);
    if CANCEL.load(Ordering::SeqCst) {
        return Ok(Exit::Interrupted);
    }
    Ok(if report.totals.failed > 0 || report_failed {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn print_totals(report: &RekeyReport) {
    let t = &report.totals;
    outln!(
        "{} SSTables: {} staged, {} skipped (already staged or nothing to do), {} failed{}; {} in {:.2}s ({:.0} MB/s)",
        t.sstables,
        t.staged,
        t.skipped,
        t.failed,
        not_started(t.not_started),
        human_bytes(t.bytes_in),
        t.seconds,
        t.throughput_mb_s
    );
    if t.staged + t.skipped > 0 && t.failed == 0 {
        outln!("next, in the maintenance window: stop the node, then `sstable-rekey rekey` with the same --to (it commits the staged copies), then verify");
    }
}
