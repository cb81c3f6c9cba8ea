//! Step 1, find, and the start of step 2: every SSTable of the selection located ([`find`]) and
//! loaded ([`plan::load`]: what it is, which key every record names), split into live ones and
//! snapshot/backup ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::keys::kmip::{ActiveWant, LocateAs};
use crate::keys::{KeyId, KeyRef};
use crate::rekey::find::{self, Found, Selection};
use crate::rekey::plan::{self, Load};
use crate::rekey::report::BackupReport;
use crate::rekey::scylla::ScyllaLoaded;
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

/// What `kmip://GROUP/active` must find for the selected encrypted SSTables: their one
/// `secret_key_strength`, looked for the way their database looks for a new key (DSE's Locate, or
/// ScyllaDB's with the tables' one `key_namespace`, FORMAT.md 4.4).
///
/// SSTables that failed to load are left out here: the run reports each of them as failed.
pub fn selection_active(dirs: &[PathBuf], sel: &Selection) -> Result<ActiveWant> {
    let live = discover(dirs, sel, None)?.live;
    let mut kinds: BTreeMap<TableKind, BTreeSet<String>> = BTreeMap::new();
    let mut bits = BTreeSet::new();
    let mut unread = Vec::new();
    for (f, l) in &live {
        let (kind, b) = match l {
            Ok(Load::Encrypted(l)) => (TableKind::Dse, l.envelope.cipher.key_bits),
            Ok(Load::Scylla(s)) => (scylla_kind(s)?, s.spec.cipher.key_bits),
            Ok(Load::Unencrypted { .. }) => continue,
            Err(e) => {
                unread.push(e);
                continue;
            }
        };
        bits.insert(b);
        kinds.entry(kind).or_default().insert(f.table.qualified());
    }
    if bits.is_empty() {
        if let Some(e) = unread.first() {
            return Err(Error::Usage(format!(
                "kmip://GROUP/active: no encrypted SSTable in the selection could be read to take the key strength from ({} could not; the first: {e})",
                unread.len()
            )));
        }
    }
    Ok(ActiveWant {
        bits: one_strength(&bits)?,
        how: one_way(kinds)?,
    })
}

/// A table as `kmip://GROUP/active` sees it: a DSE table, or a ScyllaDB one with its
/// `key_namespace` (`None`: unset or empty, as ScyllaDB reads it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TableKind {
    Dse,
    Scylla(Option<String>),
}

/// The kind of a ScyllaDB SSTable; refused when its options name a `template_name`, which
/// ScyllaDB's Locate sends as a Template attribute in its KMIP SDK's encoding (not known here).
fn scylla_kind(s: &ScyllaLoaded) -> Result<TableKind> {
    let option = |k: &str| {
        s.encryption
            .options
            .as_ref()
            .and_then(|o| o.get(k))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if let Some(t) = option("template_name") {
        return Err(Error::Usage(format!(
            "kmip://GROUP/active: table {} sets template_name {t:?}, which ScyllaDB adds to its Locate as a Template attribute; this tool does not send it and could pick a key ScyllaDB would not: name the key (--to kmip://GROUP/ID)",
            s.found.table.qualified()
        )));
    }
    Ok(TableKind::Scylla(option("key_namespace")))
}

fn one_strength(bits: &BTreeSet<u32>) -> Result<u32> {
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

/// The one way the selected tables look for a new key; refused when they differ (DSE and
/// ScyllaDB tables, or ScyllaDB tables with different `key_namespace`s), naming the tables.
fn one_way(kinds: BTreeMap<TableKind, BTreeSet<String>>) -> Result<LocateAs> {
    let list = |t: &BTreeSet<String>| t.iter().cloned().collect::<Vec<_>>().join(", ");
    if kinds.len() > 1 {
        if let Some(dse) = kinds.get(&TableKind::Dse) {
            let scylla: BTreeSet<String> = kinds.values().flatten().cloned().collect();
            let scylla: BTreeSet<String> = scylla.difference(dse).cloned().collect();
            return Err(Error::Usage(format!(
                "kmip://GROUP/active: the selection holds DSE tables ({}) and ScyllaDB tables ({}), which look for their key differently: rekey them in separate runs (KEYSPACE TABLE...) or name the key",
                list(dse),
                list(&scylla)
            )));
        }
        let each: Vec<String> = kinds
            .iter()
            .map(|(k, t)| match k {
                TableKind::Scylla(Some(n)) => format!("key_namespace {n:?}: {}", list(t)),
                _ => format!("no key_namespace: {}", list(t)),
            })
            .collect();
        return Err(Error::Usage(format!(
            "kmip://GROUP/active: the selected ScyllaDB tables disagree on key_namespace ({}); ScyllaDB finds a different key for each: rekey them in separate runs (KEYSPACE TABLE...) or name the key",
            each.join("; ")
        )));
    }
    Ok(match kinds.into_keys().next() {
        Some(TableKind::Scylla(key_namespace)) => LocateAs::Scylla { key_namespace },
        Some(TableKind::Dse) | None => LocateAs::Dse,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(of: &[(TableKind, &str)]) -> BTreeMap<TableKind, BTreeSet<String>> {
        let mut m: BTreeMap<TableKind, BTreeSet<String>> = BTreeMap::new();
        for (k, t) in of {
            m.entry(k.clone()).or_default().insert(t.to_string());
        }
        m
    }

    fn ns(n: &str) -> TableKind {
        TableKind::Scylla(Some(n.into()))
    }

    #[test]
    fn one_way_for_the_selection_or_a_usage_error_naming_the_tables() {
        assert_eq!(one_way(kinds(&[])).unwrap(), LocateAs::Dse);
        assert_eq!(
            one_way(kinds(&[(TableKind::Dse, "ks.a"), (TableKind::Dse, "ks.b")])).unwrap(),
            LocateAs::Dse
        );
        assert_eq!(
            one_way(kinds(&[(ns("n1"), "ks.a"), (ns("n1"), "ks.b")])).unwrap(),
            LocateAs::Scylla {
                key_namespace: Some("n1".into())
            }
        );
        assert_eq!(
            one_way(kinds(&[(TableKind::Scylla(None), "ks.a")])).unwrap(),
            LocateAs::Scylla {
                key_namespace: None
            }
        );
        let e = one_way(kinds(&[(ns("n1"), "ks.a"), (ns("n2"), "ks.b")])).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Usage(_)), "{m}");
        assert!(
            m.contains(r#"key_namespace "n1": ks.a; key_namespace "n2": ks.b"#),
            "{m}"
        );
        let m = one_way(kinds(&[
            (TableKind::Scylla(None), "ks.a"),
            (ns("n2"), "ks.b"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(m.contains("no key_namespace: ks.a;"), "{m}");
        let e = one_way(kinds(&[
            (TableKind::Dse, "d.t"),
            (ns("n2"), "s.t"),
            (ns("n3"), "s.u"),
        ]))
        .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Usage(_)), "{m}");
        assert!(
            m.contains("DSE tables (d.t) and ScyllaDB tables (s.t, s.u)"),
            "{m}"
        );
    }
}
