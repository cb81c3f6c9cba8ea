//! Step 5, report: what happened to every SSTable, as JSON for automation and lines for people.
//! Never contains key material: keys appear only by id (KMIP id, UUID, key file path).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::keys::KeyRef;
use crate::rekey::find::{Location, Unseen};
use crate::rekey::node_config::DataDirs;
use crate::sstable::CompressionInfo;
use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Rekeyed,
    /// `--dry-run`: would be rekeyed.
    Planned,
    Skipped,
    Failed,
    /// Interrupted (Ctrl-C) before its turn: untouched, still under its old key.
    NotStarted,
    /// `stage`: its rewritten files are in the staging folder, for the next rekey to commit.
    Staged,
}

#[derive(Debug, Clone, Serialize)]
pub struct SstableReport {
    pub table: String,
    pub location: Location,
    /// Data.db path before.
    pub old: String,
    /// Data.db path after (rekeyed only).
    pub new: Option<String>,
    pub status: Status,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    pub error_kind: Option<&'static str>,
    pub chunks: usize,
    pub rekeyed_chunks: usize,
    pub unchanged_chunks: usize,
    /// Chunks the writer stored in plaintext (FORMAT.md 2.5): unprotected data on disk.
    pub raw_chunks: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Data.db chunks per key, before and after.
    pub keys_before: BTreeMap<String, usize>,
    pub keys_after: BTreeMap<String, usize>,
    /// Encrypted Partitions.db/Rows.db pages per key (DSE 6.8+/HCD BTI), before and after.
    pub index_pages_before: BTreeMap<String, usize>,
    pub index_pages_after: BTreeMap<String, usize>,
    /// Encrypted Statistics.db components per key, before and after.
    pub metadata_before: BTreeMap<String, usize>,
    pub metadata_after: BTreeMap<String, usize>,
    /// Rekeyed by moving in the copy an earlier `stage` wrote (no rewrite in this run).
    pub from_staged: bool,
    /// A ScyllaDB SSTable: its encrypted component files (re-ciphered whole; no chunks counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted_files: Option<usize>,
    pub seconds: f64,
}

impl SstableReport {
    pub fn new(table: String, location: Location, old: &Path) -> Self {
        SstableReport {
            table,
            location,
            old: old.display().to_string(),
            new: None,
            status: Status::Skipped,
            reason: None,
            error_kind: None,
            chunks: 0,
            rekeyed_chunks: 0,
            unchanged_chunks: 0,
            raw_chunks: 0,
            encrypted_files: None,
            bytes_in: 0,
            bytes_out: 0,
            keys_before: BTreeMap::new(),
            keys_after: BTreeMap::new(),
            index_pages_before: BTreeMap::new(),
            index_pages_after: BTreeMap::new(),
            metadata_before: BTreeMap::new(),
            metadata_after: BTreeMap::new(),
            from_staged: false,
            seconds: 0.0,
        }
    }

    /// Something that could hold SSTables but was not read as part of a table: failed.
    pub fn unseen(u: &Unseen) -> Self {
        let mut r = SstableReport::new(u.table.clone(), u.location.clone(), &u.path);
        r.status = Status::Failed;
        r.reason = Some(u.why.clone());
        r.error_kind = Some("not_scanned");
        r
    }

    /// Nothing rewritten: the counts after are the counts before.
    pub fn keep_counts(&mut self) {
        self.keys_after = self.keys_before.clone();
        self.index_pages_after = self.index_pages_before.clone();
        self.metadata_after = self.metadata_before.clone();
    }

    pub fn fail(&mut self, e: &Error) {
        self.status = Status::Failed;
        self.reason = Some(e.to_string());
        self.error_kind = Some(e.kind());
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Totals {
    pub sstables: usize,
    pub rekeyed: usize,
    pub planned: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Left untouched because the run was interrupted before their turn.
    pub not_started: usize,
    /// `stage`: SSTables whose rewritten copy is now staged.
    pub staged: usize,
    /// `rekey`: rekeyed from a staged copy, rekeyed by rewriting now, and staged copies found
    /// stale and discarded.
    pub staged_committed: usize,
    pub rekeyed_now: usize,
    pub staged_discarded: usize,
    pub chunks_rekeyed: usize,
    pub raw_chunks: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub seconds: f64,
    /// `rekey`: seconds until the last SSTable was committed (the node could start from then
    /// on); the rest of `seconds` is the purge of replaced files (see [`ObsoleteReport`]).
    pub window_seconds: f64,
    pub throughput_mb_s: f64,
}

/// The replaced files a staged commit moved aside (see [`crate::rekey::obsolete`]).
#[derive(Debug, Clone, Serialize)]
pub struct ObsoleteReport {
    /// Deleted by this run; false with `--purge-later` (or when the purge failed): then they wait
    /// in `folders` for `sstable-rekey purge`.
    pub purged: bool,
    pub files: usize,
    pub bytes: u64,
    pub folders: Vec<String>,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RekeyReport {
    pub command: &'static str,
    pub version: &'static str,
    pub to: String,
    pub from: Vec<String>,
    pub dry_run: bool,
    /// The AES path used for CBC chunks (see `crypto::cipher::cbc_kernel`).
    pub kernel: &'static str,
    pub sstables: Vec<SstableReport>,
    pub totals: Totals,
    /// Statements each rekeyed table now needs so that new writes use the new key too.
    pub alter_table: Vec<String>,
    /// scylla.yaml changes (`--scylla-yaml`): a node-wide encryption section still under a key
    /// this run replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scylla_yaml: Vec<String>,
    /// Snapshot and backup SSTables: never modified; they still need their old keys.
    pub backups: Vec<BackupReport>,
    /// The data directories scanned, and where they came from (`--data-dir`, the node's
    /// cassandra.yaml, or the default), with the configured ones `--data-dir` left out.
    pub data_dirs: DataDirs,
    /// What the operator should know about the layout (e.g. a table folder Cassandra ignores).
    pub notes: Vec<String>,
    /// Replaced files moved aside by staged commits, purged or waiting (none: absent).
    pub obsolete: Option<ObsoleteReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub table: String,
    pub location: Location,
    pub data: String,
    /// Records (chunks, encrypted index pages and metadata components) per key they are under.
    pub keys: BTreeMap<String, usize>,
    /// Why its keys could not be read: then nothing is known of the keys it still needs.
    pub error: Option<String>,
}

impl RekeyReport {
    /// The report of a run that found `found`, before any SSTable is decided: the failed entries
    /// (what could hold SSTables but was not read) are in it already.
    pub fn begin(
        to: &KeyRef,
        from: &[KeyRef],
        dry_run: bool,
        data_dirs: &DataDirs,
        unseen: &[Unseen],
        backups: Vec<BackupReport>,
        notes: Vec<String>,
    ) -> RekeyReport {
        RekeyReport {
            command: "rekey",
            version: env!("CARGO_PKG_VERSION"),
            to: to.to_string(),
            from: from.iter().map(|r| r.to_string()).collect(),
            dry_run,
            kernel: crate::crypto::cipher::cbc_kernel(),
            sstables: unseen.iter().map(SstableReport::unseen).collect(),
            totals: Default::default(),
            alter_table: Vec::new(),
            scylla_yaml: Vec::new(),
            backups,
            data_dirs: data_dirs.clone(),
            notes,
            obsolete: None,
        }
    }

    /// `--dry-run`: the SSTables that would be rekeyed to `to`.
    pub fn planned(
        &mut self,
        planned: impl Iterator<Item = SstableReport>,
        to: &impl std::fmt::Display,
    ) {
        for mut r in planned {
            r.status = Status::Planned;
            r.reason = Some(format!("would rekey to {to}"));
            self.sstables.push(r);
        }
    }

    /// The executed SSTables, and the `ALTER TABLE` of every live table with one rekeyed.
    pub fn done(&mut self, done: Vec<SstableReport>, statements: &HashMap<String, String>) {
        let mut alter: BTreeMap<String, String> = BTreeMap::new();
        for r in &done {
            if r.status == Status::Rekeyed && r.location == Location::Live {
                if let Some(stmt) = statements.get(&r.table) {
                    alter.insert(r.table.clone(), stmt.clone());
                }
            }
        }
        self.sstables.extend(done);
        self.alter_table = alter.into_values().collect();
    }

    /// Totals and the run's seconds.
    pub fn finish(mut self, started: Instant) -> RekeyReport {
        self.totals.seconds = started.elapsed().as_secs_f64();
        self.compute_totals();
        self
    }

    pub fn compute_totals(&mut self) {
        let mut t = Totals {
            sstables: self.sstables.len(),
            ..Totals::default()
        };
        for s in &self.sstables {
            match s.status {
                Status::Rekeyed => t.rekeyed += 1,
                Status::Planned => t.planned += 1,
                Status::Skipped => t.skipped += 1,
                Status::Failed => t.failed += 1,
                Status::NotStarted => t.not_started += 1,
                Status::Staged => t.staged += 1,
            }
            if s.status == Status::Rekeyed {
                match s.from_staged {
                    true => t.staged_committed += 1,
                    false => t.rekeyed_now += 1,
                }
            }
            t.chunks_rekeyed += s.rekeyed_chunks;
            t.raw_chunks += s.raw_chunks;
            t.bytes_in += s.bytes_in;
            t.bytes_out += s.bytes_out;
        }
        t.seconds = self.totals.seconds;
        t.window_seconds = self.totals.window_seconds;
        t.staged_discarded = self.totals.staged_discarded;
        if t.seconds > 0.0 {
            t.throughput_mb_s = t.bytes_in as f64 / 1e6 / t.seconds;
        }
        self.totals = t;
    }
}

/// Writes a report atomically for automation: to a new file of its own, then renamed over `path`
/// (no other file is ever written or replaced).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    crate::fsio::replace_file(path, (text + "\n").as_bytes())
}

/// What a rekey tells its caller as it goes. The library prints nothing: the front end shows
/// this (a bar, or a line per SSTable), or nothing ([`Silent`]).
pub trait Progress: Sync {
    /// The rewrite starts: `sstables` SSTables holding `bytes` of Data.db.
    fn start(&self, _bytes: u64, _sstables: usize) {}
    /// `bytes` more of Data.db rewritten.
    fn advance(&self, _bytes: u64) {}
    /// One SSTable is done (rekeyed, or failed and rolled back).
    fn finished(&self, _r: &SstableReport) {}
    /// The rewrite is over.
    fn end(&self) {}
}

/// No progress shown.
pub struct Silent;

impl Progress for Silent {}

/// Snapshot/backup SSTables whose keys could not be read.
pub fn unreadable(backups: &[BackupReport]) -> impl Iterator<Item = &BackupReport> {
    backups.iter().filter(|b| b.error.is_some())
}

/// Formats a byte count for humans.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `ALTER TABLE` making new writes use the new key: the table's compression options as the new
/// CompressionInfo has them (computed, never read back from disk, so a failing read cannot drop a
/// statement the procedure needs).
pub fn alter_statement(table: &str, ci: &CompressionInfo) -> Option<String> {
    let mut m: Vec<(String, String)> = vec![
        ("class".into(), ci.class.clone()),
        (
            "chunk_length_in_kb".into(),
            (ci.chunk_length / 1024).to_string(),
        ),
    ];
    if let Some(max) = ci.max_compressed_length.filter(|&m| m != i32::MAX) {
        m.push((
            "min_compress_ratio".into(),
            format!("{:.3}", ci.chunk_length as f64 / max as f64),
        ));
    }
    m.extend(ci.options.iter().cloned());
    let (ks, table) = table.split_once('.')?;
    let body: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("'{}': '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
        .collect();
    Some(format!(
        "ALTER TABLE \"{ks}\".\"{table}\" WITH compression = {{{}}};",
        body.join(", ")
    ))
}
