//! Step 1, find: the SSTables of the selected tables in the data directories.
//!
//! Layout (FORMAT.md 1.1): `<data_dir>/<keyspace>/<table>-<32 hex id>/`, with `snapshots/<tag>/`
//! and `backups/` (hard-linked copies: never rewritten, reported) and `.<index>/` (secondary index
//! SSTables, encrypted like the table: rekeyed with it).
//!
//! Cassandra 3.0–5.0 also still reads the pre-2.1 folder `<data_dir>/<keyspace>/<table>/`: the
//! `Directories` constructor (apache/cassandra `src/java/org/apache/cassandra/db/Directories.java`,
//! "If upgraded from version less than 2.1, use existing directories") uses `<keyspace>/<table>`
//! in every data directory as soon as it exists in one of them, and `<table>-<table id>` only
//! otherwise. Both are table folders here; when both exist, both are rekeyed and verified (the one
//! Cassandra ignores still holds data under its keys, and is read again if the other goes) and a
//! note says which one Cassandra reads.
//!
//! Nothing that could hold SSTables is passed over in silence. What cannot be read as part of a
//! table (a name that is not UTF-8; a folder that is neither a table folder nor one of its known
//! subfolders but holds SSTable files; a `snapshots/` link that leads nowhere; an entry named like
//! an SSTable component that is not a regular file) is returned as [`Unseen`], which rekey and
//! verify report as failed.
//!
//! Symbolic links are never followed in live folders (`exclusive` refuses those that matter).
//! `snapshots/` and `backups/` and what they hold are never written, so they are read through
//! links (snapshots kept on another disk), with a note.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Malformed, Result};
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
    /// The table folder `<data_dir>/<keyspace>/<table>-<id>` (or the pre-2.1 `<table>`).
    pub dir: PathBuf,
}

impl Table {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.keyspace, self.table)
    }

    /// The pre-2.1 folder `<keyspace>/<table>`, without the table id.
    fn is_pre_2_1(&self) -> bool {
        self.dir.file_name().map(|n| n.as_bytes()) == Some(self.table.as_bytes())
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

/// Something that could hold SSTables but is not read as part of a table: reported as failed by
/// rekey and verify, so that neither passes while SSTables sit where the tool did not look.
#[derive(Debug, Clone, Serialize)]
pub struct Unseen {
    /// `keyspace.table` as far as known (names that are not UTF-8 shown lossily).
    pub table: String,
    pub location: Location,
    pub path: PathBuf,
    pub why: String,
}

/// The table folders of a selection, what else was found there, and notes for the operator.
#[derive(Debug, Default)]
pub struct Scan {
    pub tables: Vec<Table>,
    pub unseen: Vec<Unseen>,
    pub notes: Vec<String>,
}

/// The SSTables of one table folder, and what in it could not be read as such.
#[derive(Debug, Default)]
pub struct Contents {
    pub found: Vec<Found>,
    pub unseen: Vec<Unseen>,
    pub notes: Vec<String>,
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

/// A keyspace subfolder → its table name: `<table>-<32 hex>`, or the pre-2.1 `<table>` (Cassandra
/// names are `[A-Za-z0-9_]+`, `SchemaConstants.isValidName`).
fn table_name(folder: &str) -> Option<&str> {
    if let Some((name, id)) = folder.rsplit_once('-') {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty() {
            return Some(name);
        }
    }
    (!folder.is_empty()
        && folder
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    .then_some(folder)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
    /// FIFO, socket, device.
    Other,
}

/// A folder entry: its name if UTF-8, path, and type (links not followed).
#[derive(Debug)]
struct Entry {
    name: Option<String>,
    path: PathBuf,
    kind: Kind,
}

impl Entry {
    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn dotted(&self) -> bool {
        self.path
            .file_name()
            .is_some_and(|n| n.as_bytes().starts_with(b"."))
    }
}

fn list(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        let t = e.file_type().map_err(|x| Error::io(e.path(), "stat", x))?;
        let kind = if t.is_symlink() {
            Kind::Link
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        out.push(Entry {
            name: e.file_name().to_str().map(str::to_string),
            path: e.path(),
            kind,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The kind of what a link leads to, or why it cannot be followed.
fn follow(e: &Entry) -> std::result::Result<Kind, Malformed> {
    match fs::metadata(&e.path) {
        Ok(m) if m.is_dir() => Ok(Kind::Dir),
        Ok(m) if m.is_file() => Ok(Kind::File),
        Ok(_) => Ok(Kind::Other),
        Err(x) => Err(Malformed(format!(
            "a symbolic link that cannot be followed ({x}): what it held cannot be listed. Restore what it leads to, or remove the link"
        ))),
    }
}

/// A link where a keyspace, table or index folder is looked for (also refused by `exclusive`).
const LINK: &str = "a symbolic link to a folder: sstable-rekey never follows links where it rewrites SSTables, so what it leads to would stay under its keys. Move the data into the data directory (or pass the real location with --data-dir)";

fn linked_folder(e: &Entry) -> bool {
    e.kind == Kind::Link && fs::metadata(&e.path).is_ok_and(|m| m.is_dir())
}

const NOT_UTF8: &str = "name is not UTF-8: sstable-rekey neither rekeys nor verifies what it holds. Rename it (or move it out of the data directory)";

/// What one folder holds: complete SSTables (with a Data.db), subfolders, and entries that could
/// be SSTable files but cannot be read as such (path, why). With `through_links` (snapshots and
/// backups, never written), links are followed; in live folders they are not.
struct Listing {
    sstables: BTreeMap<String, (Descriptor, Vec<String>)>,
    dirs: Vec<Entry>,
    odd: Vec<(PathBuf, String)>,
}

fn listing(dir: &Path, through_links: bool) -> Result<Listing> {
    let mut l = Listing {
        sstables: BTreeMap::new(),
        dirs: Vec::new(),
        odd: Vec::new(),
    };
    for mut e in list(dir)? {
        if e.kind == Kind::Link && through_links {
            match follow(&e) {
                Ok(k) => e.kind = k,
                Err(why) => {
                    l.odd.push((e.path, why.into()));
                    continue;
                }
            }
        }
        if e.kind == Kind::Dir {
            l.dirs.push(e);
            continue;
        }
        if e.dotted() && linked_folder(&e) {
            l.odd.push((e.path, LINK.into()));
            continue;
        }
        let Some(name) = &e.name else {
            l.odd.push((e.path, NOT_UTF8.into()));
            continue;
        };
        let Some((desc, comp)) = Descriptor::parse_file_name(dir, name) else {
            continue;
        };
        match e.kind {
            Kind::File => l
                .sstables
                .entry(desc.prefix())
                .or_insert_with(|| (desc, Vec::new()))
                .1
                .push(comp),
            Kind::Link => l.odd.push((
                e.path,
                "a symbolic link named like an SSTable component: never followed in a live folder. Replace it with the file it leads to".into(),
            )),
            _ => l.odd.push((
                e.path,
                "named like an SSTable component but not a regular file (a FIFO, socket or device)"
                    .into(),
            )),
        }
    }
    // Only complete SSTables: a Data.db must be there.
    l.sstables
        .retain(|_, (_, comps)| comps.iter().any(|c| c == "Data.db"));
    Ok(l)
}

/// SSTables in one folder, grouped by descriptor. Only regular files count.
pub fn sstables_in(dir: &Path) -> Result<BTreeMap<String, (Descriptor, Vec<String>)>> {
    Ok(listing(dir, false)?.sstables)
}

/// As [`sstables_in`], and the entries that could be SSTable files but cannot be read as such
/// (path, why).
pub type FolderSstables = (
    BTreeMap<String, (Descriptor, Vec<String>)>,
    Vec<(PathBuf, String)>,
);

pub fn sstables_and_odd_entries_in(dir: &Path) -> Result<FolderSstables> {
    let l = listing(dir, false)?;
    Ok((l.sstables, l.odd))
}

/// A file under `dir` (down to `depth` folders, links not followed) that could be an SSTable
/// component: named like one, or with a name that is not UTF-8.
fn sstable_file_under(dir: &Path, depth: usize) -> Result<Option<PathBuf>> {
    for e in list(dir)? {
        match (&e.name, e.kind) {
            (None, _) => return Ok(Some(e.path)),
            (Some(_), Kind::Dir) if depth > 0 => {
                if let Some(p) = sstable_file_under(&e.path, depth - 1)? {
                    return Ok(Some(p));
                }
            }
            (Some(n), Kind::File | Kind::Link | Kind::Other)
                if Descriptor::parse_file_name(dir, n).is_some() =>
            {
                return Ok(Some(e.path))
            }
            _ => {}
        }
    }
    Ok(None)
}

/// A folder that is no folder Cassandra reads SSTables from: reported if it holds SSTable files
/// (they are under some key, and would otherwise pass unnoticed), or cannot be looked through.
fn stray_folder(e: &Entry, table: &str, location: Location, what: &str) -> Option<Unseen> {
    let why = match sstable_file_under(&e.path, 4) {
        Ok(None) => return None,
        Ok(Some(f)) => format!(
            "{what}, yet it holds SSTable files ({}): sstable-rekey neither rekeys nor verifies them. Move it out of the data directory, or back to the folder it was copied from",
            f.display()
        ),
        Err(x) => format!("{what}, and it cannot be looked through: {x}"),
    };
    Some(Unseen {
        table: table.to_string(),
        location,
        path: e.path.clone(),
        why,
    })
}

fn unseen(table: &str, location: Location, path: PathBuf, why: impl Into<String>) -> Unseen {
    Unseen {
        table: table.to_string(),
        location,
        path,
        why: why.into(),
    }
}

/// Every table folder of the selection (whether or not it holds SSTables), and what in the
/// keyspace folders could hold SSTables but is no table folder.
pub fn tables(data_dirs: &[PathBuf], sel: &Selection) -> Result<Scan> {
    let mut scan = Scan::default();
    for dd in data_dirs {
        let meta = fs::metadata(dd)
            .map_err(|e| Error::Usage(format!("data directory {}: {e}", dd.display())))?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "data directory {} is not a folder",
                dd.display()
            )));
        }
        for ks in list(dd)? {
            // Files are no keyspace; a data directory that is a mount point has the file system's
            // lost+found, never a keyspace (no '+' in names). Links are never followed.
            if linked_folder(&ks) && ks.name.as_deref().is_none_or(|n| sel.keyspace_ok(n)) {
                let shown = ks.shown();
                scan.unseen
                    .push(unseen(&shown, Location::Live, ks.path, LINK));
                continue;
            }
            // sstable-rekey's own staging and obsolete folders hold no live SSTable (see
            // `stage` and `obsolete`).
            if ks.kind != Kind::Dir
                || matches!(
                    ks.name.as_deref(),
                    Some("lost+found" | super::staging::STAGING | super::obsolete::OBSOLETE)
                )
            {
                continue;
            }
            let Some(ks_name) = ks.name.clone() else {
                if sel.keyspace.is_none() {
                    let shown = ks.shown();
                    scan.unseen
                        .push(unseen(&shown, Location::Live, ks.path, NOT_UTF8));
                }
                continue;
            };
            if !sel.keyspace_ok(&ks_name) {
                continue;
            }
            for t in list(&ks.path)? {
                let selected = |n: &str| table_name(n).is_some_and(|n| sel.table_ok(n));
                if linked_folder(&t) && t.name.as_deref().is_none_or(selected) {
                    let shown = format!("{ks_name}.{}", t.path.display());
                    scan.unseen
                        .push(unseen(&shown, Location::Live, t.path, LINK));
                    continue;
                }
                if t.kind != Kind::Dir {
                    continue;
                }
                let Some(folder) = t.name.as_deref() else {
                    if sel.tables.is_empty() {
                        let shown = format!(
                            "{ks_name}.{}",
                            t.path.file_name().unwrap_or_default().to_string_lossy()
                        );
                        scan.unseen
                            .push(unseen(&shown, Location::Live, t.path, NOT_UTF8));
                    }
                    continue;
                };
                match table_name(folder) {
                    Some(name) if sel.table_ok(name) => scan.tables.push(Table {
                        keyspace: ks_name.clone(),
                        table: name.to_string(),
                        dir: t.path.clone(),
                    }),
                    Some(_) => {}
                    None => {
                        // With TABLE... given, only copies of those tables (`orders-<id>.bak`):
                        // the name up to its first character no table name has.
                        let stem = folder
                            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or_default();
                        if !sel.table_ok(stem) {
                            continue;
                        }
                        let what = "not a table folder (<table> or <table>-<32 hex id>) that Cassandra reads";
                        scan.unseen.extend(stray_folder(
                            &t,
                            &format!("{ks_name}.{folder}"),
                            Location::Live,
                            what,
                        ));
                    }
                }
            }
        }
    }
    scan.notes = shadowed(&scan.tables);
    Ok(scan)
}

/// Cassandra reads `<ks>/<t>/` wherever it exists in one data directory and then ignores every
/// `<ks>/<t>-<id>/` (Directories.java): say so for each such folder.
fn shadowed(tables: &[Table]) -> Vec<String> {
    let mut notes = Vec::new();
    for t in tables.iter().filter(|t| !t.is_pre_2_1()) {
        let legacy = tables
            .iter()
            .find(|l| l.is_pre_2_1() && l.keyspace == t.keyspace && l.table == t.table);
        if let Some(l) = legacy {
            notes.push(format!(
                "note: {} has a pre-2.1 folder {} and a folder {}: Cassandra reads only the pre-2.1 one (in every data directory) and ignores the other. Both are rekeyed and verified, since the other still holds data under its keys; if it is a leftover, move it out of the data directory",
                t.qualified(),
                l.dir.display(),
                t.dir.display()
            ));
        }
    }
    notes
}

/// The SSTables of one table folder: live, index folders, snapshots and backups, and what could
/// not be read as part of the table.
pub fn sstables_of(table: &Table) -> Result<Contents> {
    let mut c = Contents::default();
    let name = table.qualified();
    let top = listing(&table.dir, false)?;
    c.add(table, top.sstables, top.odd, &Location::Live);
    for e in top.dirs {
        match e.name.as_deref() {
            None if e.dotted() => {
                let idx = e
                    .path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .trim_start_matches('.')
                    .to_string();
                c.unseen
                    .push(unseen(&name, Location::Index(idx), e.path, NOT_UTF8));
            }
            None => c
                .unseen
                .push(unseen(&name, Location::Live, e.path, NOT_UTF8)),
            Some(n) if n.starts_with('.') => {
                let l = listing(&e.path, false)?;
                let at = Location::Index(n[1..].to_string());
                c.add(table, l.sstables, l.odd, &at);
                c.strays(
                    &name,
                    l.dirs,
                    &at,
                    "not a folder Cassandra reads SSTables from",
                );
            }
            Some("snapshots" | "backups") => {} // below
            Some(_) => {
                let what = "not a folder Cassandra reads SSTables from (only .<index>/, snapshots/ and backups/ are)";
                c.unseen
                    .extend(stray_folder(&e, &name, Location::Live, what));
            }
        }
    }
    // snapshots/ and backups/ may be links (never written, so read through them).
    let snapshots = Location::Snapshot(String::new());
    if let Some(dir) = c.through_link(&name, &table.dir.join("snapshots"), &snapshots)? {
        let tags = listing(&dir, true)?;
        // SSTables directly in snapshots/ belong to no snapshot: listed as snapshot "" anyway.
        c.add(table, tags.sstables, tags.odd, &snapshots);
        for tag in tags.dirs {
            let Some(t) = tag.name.clone() else {
                let shown = tag.path.file_name().unwrap_or_default().to_string_lossy();
                let at = Location::Snapshot(shown.into_owned());
                c.unseen.push(unseen(&name, at, tag.path, NOT_UTF8));
                continue;
            };
            c.copies(table, &tag.path, &Location::Snapshot(t))?;
        }
    }
    if let Some(dir) = c.through_link(&name, &table.dir.join("backups"), &Location::Backup)? {
        c.copies(table, &dir, &Location::Backup)?;
    }
    Ok(c)
}

impl Contents {
    fn add(
        &mut self,
        table: &Table,
        sstables: BTreeMap<String, (Descriptor, Vec<String>)>,
        odd: Vec<(PathBuf, String)>,
        at: &Location,
    ) {
        for (_, (desc, present)) in sstables {
            self.found.push(Found {
                table: table.clone(),
                location: at.clone(),
                desc,
                present,
            });
        }
        for (path, why) in odd {
            self.unseen
                .push(unseen(&table.qualified(), at.clone(), path, why));
        }
    }

    fn strays(&mut self, table: &str, dirs: Vec<Entry>, at: &Location, what: &str) {
        for d in dirs {
            if d.name.is_none() {
                self.unseen
                    .push(unseen(table, at.clone(), d.path, NOT_UTF8));
            } else {
                self.unseen
                    .extend(stray_folder(&d, table, at.clone(), what));
            }
        }
    }

    /// `snapshots/` or `backups/`: the folder to list (through a link, with a note), or None when
    /// there is none; a link that cannot be followed, or something else by that name, is unseen.
    fn through_link(&mut self, table: &str, path: &Path, at: &Location) -> Result<Option<PathBuf>> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, "stat", e)),
        };
        if meta.is_dir() {
            return Ok(Some(path.to_path_buf()));
        }
        if !meta.file_type().is_symlink() {
            return Ok(None); // a file named snapshots: holds no SSTable
        }
        match fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let target = fs::canonicalize(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                self.notes.push(format!(
                    "note: {} is a symbolic link to {target}: its SSTables are listed through it (snapshots and backups are never written)",
                    path.display()
                ));
                Ok(Some(path.to_path_buf()))
            }
            Ok(_) => {
                self.unseen.push(unseen(
                    table,
                    at.clone(),
                    path.to_path_buf(),
                    "a symbolic link to something that is not a folder",
                ));
                Ok(None)
            }
            Err(x) => {
                self.unseen.push(unseen(
                    table,
                    at.clone(),
                    path.to_path_buf(),
                    format!("a symbolic link that cannot be followed ({x}): the snapshots or backups it held cannot be listed. Restore what it leads to, or remove the link"),
                ));
                Ok(None)
            }
        }
    }

    /// A snapshot tag or backups folder: its SSTables and those of its `.<index>/` folders, read
    /// through links.
    fn copies(&mut self, table: &Table, dir: &Path, at: &Location) -> Result<()> {
        let name = table.qualified();
        let l = listing(dir, true)?;
        self.add(table, l.sstables, l.odd, at);
        for sub in l.dirs {
            match sub.name.as_deref() {
                Some(n) if n.starts_with('.') => {
                    let il = listing(&sub.path, true)?;
                    self.add(table, il.sstables, il.odd, at);
                    self.strays(&name, il.dirs, at, "not a folder of a snapshot or backup");
                }
                None => self
                    .unseen
                    .push(unseen(&name, at.clone(), sub.path, NOT_UTF8)),
                Some(_) => self.unseen.extend(stray_folder(
                    &sub,
                    &name,
                    at.clone(),
                    "not a folder of a snapshot or backup (only .<index>/ is)",
                )),
            }
        }
        Ok(())
    }
}

/// Live folders of a table (the table folder and its index folders, whatever their names'
/// encoding): where logs and new files go.
pub fn live_dirs(table: &Table) -> Result<Vec<PathBuf>> {
    let mut v = vec![table.dir.clone()];
    for e in list(&table.dir)? {
        if e.kind == Kind::Dir && e.dotted() {
            v.push(e.path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_folder_names() {
        assert_eq!(
            table_name("orders-0123456789abcdef0123456789ABCDEF"),
            Some("orders")
        );
        assert_eq!(table_name("orders"), Some("orders"));
        assert_eq!(table_name("t_2"), Some("t_2"));
        for stray in [
            "orders.bak",
            "orders-123",
            "orders-0123456789abcdef0123456789abcdef.old",
            "-",
            "",
        ] {
            assert_eq!(table_name(stray), None, "{stray}");
        }
    }
}
