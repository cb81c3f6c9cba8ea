//! The front end: one file per subcommand, each building options from the arguments, calling the
//! library, printing results and mapping them to the exit-status contract ([`exit`]).

pub mod bench;
pub mod cli;
pub mod demo;
pub mod exit;
pub mod inspect;
pub mod kmip;
pub mod progress;
pub mod recover;
pub mod rekey;
pub mod verify;

use std::path::{Path, PathBuf};

use cli::{Cli, Command, Scope};
use exit::Exit;
use sstable_rekey::error::{Error, Result};
use sstable_rekey::keys::KeyRef;
use sstable_rekey::rekey::find::Selection;
use sstable_rekey::rekey::node_config::DataDirs;
use sstable_rekey::rekey::report::BackupReport;

pub fn run(cli: Cli) -> Exit {
    let r = match cli.command {
        Command::Rekey(a) => rekey::run(&a),
        Command::Verify(a) => verify::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Recover(a) => recover::run(&a),
        Command::Demo(a) => crate::app::demo::run(a.dir.as_deref()),
        Command::Bench(a) => bench::run_command(&a),
        Command::Kmip(a) => crate::app::kmip::run(&a),
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

pub fn selection(s: &Scope) -> Selection {
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

pub fn print_notes(notes: &[String]) {
    for n in notes {
        errln!("sstable-rekey: {n}");
    }
}

pub fn parse_refs(v: &[String]) -> Result<Vec<KeyRef>> {
    v.iter().map(|s| s.parse()).collect()
}

/// Snapshot/backup SSTables whose keys could not be read: named, with what to do. True if any.
pub fn print_unreadable(backups: &[BackupReport]) -> bool {
    let mut any = false;
    for b in sstable_rekey::rekey::report::unreadable(backups) {
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
pub fn check_report_path(p: &Path) -> Result<()> {
    sstable_rekey::fsio::check_replaceable(p)
        .map_err(|e| Error::Usage(format!("--report {}: cannot write there: {e}", p.display())))
}
