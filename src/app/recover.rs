//! `recover`: resolve leftover transaction logs the way Cassandra's startup does.

use crate::app::cli::RecoverArgs;
use crate::app::exit::Exit;
use sstable_rekey::rekey;
use std::path::PathBuf;

use crate::app::scope::{print_notes, resolve_data_dirs};
use sstable_rekey::error::Result;
use sstable_rekey::rekey::find::Selection;
use sstable_rekey::sstable::txnlog;

pub fn run(a: &RecoverArgs) -> Result<Exit> {
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
    // ScyllaDB swaps a crashed rekey left (FORMAT.md 4.9).
    match rekey::scylla::recover::recover(&dirs.dirs) {
        Ok(done) => {
            for r in done {
                outln!("{}: {}", r.journal.display(), r.outcome);
            }
        }
        Err(e) => {
            failed = true;
            outln!("FAILED resolving an interrupted ScyllaDB swap: {e}");
        }
    }
    // The old files a crashed staged commit had moved aside are obsolete by a committed log:
    // the rekey would have purged them at its end.
    match rekey::obsolete::purge(&dirs.dirs) {
        Ok(o) if o.folders.is_empty() => {}
        Ok(o) => outln!("{} obsolete files moved aside by a rekey purged", o.files),
        Err(e) => {
            failed = true;
            outln!("FAILED purging the obsolete files: {e}");
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}
