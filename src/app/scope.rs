//! What several subcommands share: the selection and data directories of a run, key references,
//! notes on stderr, the report destination and the snapshot/backup SSTables that could not be read.

use std::path::{Path, PathBuf};

use crate::app::cli::Scope;
use sstable_rekey::error::{Error, Result};
use sstable_rekey::keys::KeyRef;
use sstable_rekey::rekey::find::Selection;
use sstable_rekey::rekey::node_config::DataDirs;
use sstable_rekey::rekey::report::BackupReport;

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

/// The KMIP options of a run: a `--scylla-yaml` without `kmip_hosts` (a node with local keys only)
/// names folders and node-wide encryption settings, not KMIP servers.
pub fn kmip_opts(o: &crate::app::cli::KmipOpts) -> Result<crate::app::cli::KmipOpts> {
    let mut o = o.clone();
    if let Some(y) = &o.scylla_yaml {
        let has_hosts =
            sstable_rekey::rekey::scylla::commitlog::read_scylla_yaml(y)?.has_kmip_hosts;
        if !has_hosts {
            errln!(
                "sstable-rekey: note: {} has no kmip_hosts: KMIP keys only through --keyring",
                y.display()
            );
            o.scylla_yaml = None;
        }
    }
    Ok(o)
}
