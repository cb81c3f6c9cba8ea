//! `purge`: delete the replaced files a `rekey --purge-later` moved aside.

use crate::app::cli::PurgeArgs;
use crate::app::exit::Exit;
use crate::app::scope::{check_report_path, resolve_data_dirs};
use sstable_rekey::error::{Error, Result};
use sstable_rekey::fsio;
use sstable_rekey::rekey::report::{human_bytes, write_json};
use sstable_rekey::rekey::{exclusive, obsolete};

pub fn run(a: &PurgeArgs) -> Result<Exit> {
    let dirs = resolve_data_dirs(&a.data_dirs, a.cassandra_yaml.as_deref())?;
    if let Some(m) = dirs.missing_sentence() {
        errln!("sstable-rekey: warning: {m}. Their obsolete folders are not purged in this run");
    }
    if let Some(p) = &a.report {
        check_report_path(p)?;
    }
    // The node may be serving: be polite to it, as `stage` is.
    fsio::lower_priority(a.ionice == "idle")
        .map_err(|e| Error::Usage(format!("lowering this process's priority: {e}")))?;
    // Not while a rekey (which moves files in) holds the data directories.
    let _locks = exclusive::lock_data_dirs_shared(&dirs.dirs)?;
    let t0 = std::time::Instant::now();
    let outcome = obsolete::purge(&dirs.dirs);
    let seconds = t0.elapsed().as_secs_f64();
    let (done, error) = match outcome {
        Ok(done) => (done, None),
        Err(e) => (obsolete::Obsolete::default(), Some(e.to_string())),
    };
    let mut report_failed = false;
    if let Some(p) = &a.report {
        let json = serde_json::json!({
            "command": "purge",
            "version": env!("CARGO_PKG_VERSION"),
            "files": done.files,
            "bytes": done.bytes,
            "folders": done.folders,
            "seconds": seconds,
            "error": error,
        });
        if let Err(e) = write_json(p, &json) {
            errln!("sstable-rekey: error: {e}");
            report_failed = true;
        }
    }
    if let Some(e) = error {
        errln!("sstable-rekey: error: {e}");
        errln!("sstable-rekey: the purge is not finished: fix the cause and run `sstable-rekey purge` again (the files left are obsolete: no live SSTable needs them)");
        return Ok(Exit::Failed);
    }
    match done.folders.is_empty() {
        true => outln!("nothing to purge: no obsolete folder in the data directories"),
        false => outln!(
            "purged {} obsolete files ({}) in {:.2}s: {}",
            done.files,
            human_bytes(done.bytes),
            seconds,
            done.folders.join(", ")
        ),
    }
    Ok(if report_failed {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
