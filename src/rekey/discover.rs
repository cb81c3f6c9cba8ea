//! Step 1, find, and the start of step 2: every SSTable of the selection located ([`find`]) and
//! loaded ([`plan::load`]: what it is, which key every record names), split into live ones and
//! snapshot/backup ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyRef};
use crate::rekey::find::{self, Found, Selection};
use crate::rekey::plan::{self, Load};
use crate::rekey::report::BackupReport;
use crate::rekey::staging::Staging;

/// The single `file:` key among `--from`/`--key`: the key of header-less chunks of a table that
/// names no `secret_key_file`.
pub fn fallback_file(refs: &[KeyRef]) -> Result<Option<KeyId>> {
    let files: Vec<&KeyRef> = refs
        .iter()
        .filter(|r| matches!(r, KeyRef::File(_)))
        .collect();
    (files.len() == 1).then(|| files[0].id()).transpose()
}

/// SSTables with what loading them found.
pub type Discovered = Vec<(Found, Result<Load>)>;

/// What [`discover`] found: live SSTables and snapshot/backup ones, loaded; what could hold
/// SSTables but could not be read as part of a table (to report as failed); notes for the operator.
pub struct Discovery {
    pub live: Discovered,
    pub backups: Discovered,
    pub unseen: Vec<find::Unseen>,
    pub notes: Vec<String>,
}

/// Loads every SSTable of the selection, split into live ones and snapshots/backups.
pub fn discover(
    data_dirs: &[PathBuf],
    sel: &Selection,
    fallback: Option<&KeyId>,
) -> Result<Discovery> {
    discover_with(
        data_dirs,
        sel,
        fallback,
        Logs::Refuse,
        &Staging::default(),
        true,
    )
}

/// What a leftover transaction log means to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// The node is stopped: a log is an interrupted compaction or rekey, to recover first.
    Refuse,
    /// The node runs (`stage`): a log is a compaction in progress.
    Allow,
}

/// [`discover`], with leftover transaction logs treated as `logs` says. An SSTable with an entry in
/// `staging` whose source is unchanged is loaded from the entry's chunk runs (one header read per
/// run, not per chunk): the commit of a staged copy does not read the whole Data.db. Without
/// `backups` (`stage`: it leaves snapshots to the rekey, which reports the keys they need),
/// snapshot and backup SSTables are neither loaded nor returned: reading their chunk headers
/// while the node serves was wasted, and a failure there went unreported.
pub fn discover_with(
    data_dirs: &[PathBuf],
    sel: &Selection,
    fallback: Option<&KeyId>,
    logs: Logs,
    staging: &Staging,
    backups: bool,
) -> Result<Discovery> {
    let scan = find::tables(data_dirs, sel)?;
    if scan.tables.is_empty() && scan.unseen.is_empty() {
        return Err(Error::Usage(format!(
            "no table folders match{} in {}",
            match (&sel.keyspace, sel.tables.is_empty()) {
                (None, _) => String::new(),
                (Some(k), true) => format!(" keyspace {k}"),
                (Some(k), false) => format!(" {k}.{{{}}}", sel.tables.join(",")),
            },
            data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (mut unseen, mut notes) = (scan.unseen, scan.notes);
    let mut found = Vec::new();
    for t in &scan.tables {
        let leftover = match logs {
            Logs::Refuse => find::leftover_logs(t)?,
            Logs::Allow => Vec::new(),
        };
        if !leftover.is_empty() {
            return Err(Error::Usage(format!(
                "{} has unfinished transaction logs ({}): a compaction or rekey was interrupted. Run `sstable-rekey recover` (with Cassandra stopped) first",
                t.qualified(),
                leftover.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let c = find::sstables_of(t)?;
        found.extend(
            c.found
                .into_iter()
                .filter(|f| backups || f.location.is_live()),
        );
        unseen.extend(c.unseen);
        notes.extend(c.notes);
    }
    // Loading reads every chunk header: in parallel across SSTables (many small SSTables plan
    // as fast per byte as one large one). Order is kept.
    let staged = staging.by_source();
    let loaded: Vec<(Found, Result<Load>)> = {
        use rayon::prelude::*;
        found
            .into_par_iter()
            .map(|f| {
                let l = staged
                    .runs_for(&f.desc)
                    .and_then(|runs| plan::load_with(&f, fallback, runs));
                (f, l)
            })
            .collect()
    };
    let (live, backups) = loaded.into_iter().partition(|(f, _)| f.location.is_live());
    Ok(Discovery {
        live,
        backups,
        unseen,
        notes,
    })
}

/// The one `secret_key_strength` of the selected encrypted SSTables (for `kmip://GROUP/active`).
pub fn selection_key_bits(dirs: &[PathBuf], sel: &Selection) -> Result<u32> {
    let live = discover(dirs, sel, None)?.live;
    let bits: BTreeSet<u32> = live
        .iter()
        .filter_map(|(_, l)| match l {
            Ok(Load::Encrypted(l)) => Some(l.envelope.cipher.key_bits),
            Ok(Load::Scylla(s)) => Some(s.spec.cipher.key_bits),
            _ => None,
        })
        .collect();
    match bits.len() {
        1 => Ok(*bits.first().expect("one")),
        0 => Err(Error::Usage(
            "kmip://GROUP/active: no encrypted SSTable in the selection to take the key strength from".into(),
        )),
        _ => Err(Error::Usage(format!(
            "kmip://GROUP/active: the selected tables use {} bit keys; rekey one strength at a time (KEYSPACE TABLE...) or name the key",
            bits.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" and ")
        ))),
    }
}

/// One entry per snapshot/backup SSTable, with the keys its records name; one that cannot be
/// read says so (never an empty key list that would pass for "needs no key").
pub fn backup_reports(backups: &[(Found, Result<Load>)]) -> Vec<BackupReport> {
    backups
        .iter()
        .map(|(f, l)| BackupReport {
            table: f.table.qualified(),
            location: f.location.clone(),
            data: f.desc.data_path().display().to_string(),
            keys: match l {
                Ok(Load::Encrypted(l)) => {
                    let mut k = l.key_counts();
                    for (id, n) in l
                        .page_key_counts()
                        .into_iter()
                        .chain(l.metadata_key_counts())
                    {
                        *k.entry(id).or_default() += n;
                    }
                    k
                }
                // A ScyllaDB SSTable: its encrypted files, all under the one key Scylla.db names.
                Ok(Load::Scylla(s)) => BTreeMap::from([(s.key.to_string(), s.files.len())]),
                _ => BTreeMap::new(),
            },
            error: l.as_ref().err().map(|e| e.to_string()),
        })
        .collect()
}
