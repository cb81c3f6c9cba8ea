//! Step 1, find: the SSTables of the selected tables in the data directories.
//!
//! Layout (FORMAT.md 1.1): `<data_dir>/<keyspace>/<table>-<32 hex id>/`, with `snapshots/<tag>/`
//! and `backups/` (hard-linked copies: never rewritten, reported) and `.<index>/` (secondary index
//! SSTables, encrypted like the table: rekeyed with it). Symlinks are never followed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::sstable::{txnlog, Descriptor};

/// Where an SSTable lives relative to its table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Location {
    Live,
    /// In `.<index>/`: a secondary index's SSTables.
    Index(String),
    Snapshot(String),
    Backup,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Live => f.write_str("live"),
            Location::Index(i) => write!(f, "index {i}"),
            Location::Snapshot(t) => write!(f, "snapshot {t}"),
            Location::Backup => f.write_str("backup"),
        }
    }
}

impl Location {
    pub fn is_live(&self) -> bool {
        matches!(self, Location::Live | Location::Index(_))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub keyspace: String,
    pub table: String,
    /// The table folder `<data_dir>/<keyspace>/<table>-<id>`.
    pub dir: PathBuf,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.keyspace, self.table)
    }
}

#[derive(Debug, Clone)]
pub struct Found {
    pub table: Table,
    pub location: Location,
    pub desc: Descriptor,
    /// Component names present on disk (from the file names).
    pub present: Vec<String>,
}

/// What to look at: `KEYSPACE [TABLE...]`, like `nodetool upgradesstables`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub keyspace: Option<String>,
    pub tables: Vec<String>,
}

impl Selection {
    fn keyspace_ok(&self, ks: &str) -> bool {
        self.keyspace.as_deref().is_none_or(|k| k == ks)
    }

    fn table_ok(&self, t: &str) -> bool {
        self.tables.is_empty() || self.tables.iter().any(|x| x == t)
    }
}

/// A table folder name `<table>-<32 hex>` → table name.
fn table_name(folder: &str) -> Option<&str> {
    let (name, id) = folder.rsplit_once('-')?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty())
        .then_some(name)
}

fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        // file_type() does not follow symlinks: a symlinked folder is skipped, never entered.
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(n) = e.file_name().to_str() {
                out.push((n.to_string(), e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// SSTables in one folder, grouped by descriptor. Only regular files count.
pub fn sstables_in(dir: &Path) -> Result<BTreeMap<String, (Descriptor, Vec<String>)>> {
    let mut by_prefix: BTreeMap<String, (Descriptor, Vec<String>)> = BTreeMap::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some((desc, comp)) = Descriptor::parse_file_name(dir, &name) {
            by_prefix
                .entry(desc.prefix())
                .or_insert_with(|| (desc, Vec::new()))
                .1
                .push(comp);
        }
    }
    // Only complete SSTables: a Data.db must be there.
    by_prefix.retain(|_, (_, comps)| comps.iter().any(|c| c == "Data.db"));
    Ok(by_prefix)
}

/// Every table folder of the selection (whether or not it holds SSTables).
pub fn tables(data_dirs: &[PathBuf], sel: &Selection) -> Result<Vec<Table>> {
    let mut out = Vec::new();
    for dd in data_dirs {
        let meta = fs::metadata(dd)
            .map_err(|e| Error::Usage(format!("data directory {}: {e}", dd.display())))?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "data directory {} is not a folder",
                dd.display()
            )));
        }
        for (ks, ks_dir) in subdirs(dd)? {
            if !sel.keyspace_ok(&ks) {
                continue;
            }
            for (folder, dir) in subdirs(&ks_dir)? {
                let Some(t) = table_name(&folder) else {
                    continue;
                };
                if !sel.table_ok(t) {
                    continue;
                }
                out.push(Table {
                    keyspace: ks.clone(),
                    table: t.to_string(),
                    dir,
                });
            }
        }
    }
    Ok(out)
}

/// The SSTables of one table folder: live, index folders, snapshots and backups.
pub fn sstables_of(table: &Table) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut push = |dir: &Path, location: Location| -> Result<()> {
        for (_, (desc, present)) in sstables_in(dir)? {
            out.push(Found {
                table: table.clone(),
                location: location.clone(),
                desc,
                present,
            });
        }
        Ok(())
    };
    push(&table.dir, Location::Live)?;
    for (name, dir) in subdirs(&table.dir)? {
        if let Some(idx) = name.strip_prefix('.') {
            push(&dir, Location::Index(idx.to_string()))?;
        } else if name == "snapshots" {
            for (tag, sdir) in subdirs(&dir)? {
                push(&sdir, Location::Snapshot(tag.clone()))?;
                for (n, idir) in subdirs(&sdir)? {
                    if n.starts_with('.') {
                        push(&idir, Location::Snapshot(tag.clone()))?;
                    }
                }
            }
        } else if name == "backups" {
            push(&dir, Location::Backup)?;
            for (n, idir) in subdirs(&dir)? {
                if n.starts_with('.') {
                    push(&idir, Location::Backup)?;
                }
            }
        }
    }
    Ok(out)
}

/// Live folders of a table (the table folder and its index folders): where logs and new files go.
pub fn live_dirs(table: &Table) -> Result<Vec<PathBuf>> {
    let mut v = vec![table.dir.clone()];
    for (name, dir) in subdirs(&table.dir)? {
        if name.starts_with('.') {
            v.push(dir);
        }
    }
    Ok(v)
}

/// Leftover transaction logs in a table's live folders: a crashed operation to resolve first.
pub fn leftover_logs(table: &Table) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for d in live_dirs(table)? {
        v.extend(txnlog::logs_in(&d)?);
    }
    Ok(v)
}
