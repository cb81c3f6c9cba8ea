//! Step 4, commit: Cassandra's own transaction-log protocol (FORMAT.md 1.5), so that a crash at
//! any instant leaves exactly one of the old and new SSTable once `recover` or Cassandra's startup
//! has run. Order: log ADD(new) → write new files → fsync files and folder → REMOVE(old) → COMMIT
//! → delete old files (oldest first) → delete the log. Before COMMIT, any failure rolls back.
//!
//! A rollback removes only the files this transaction created ([`Created`]: by path and inode),
//! never "every file with the new prefix": if a name was taken by someone else, it stays theirs.
//! After COMMIT, the old SSTable's files, as the run listed them, are deleted: Cassandra's rule.
//! A staged commit moves them aside instead ([`obsolete`]), to be deleted after the window.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsio::sync_dir;
use crate::fsio::Created;
use crate::rekey::failpoint;
use crate::rekey::obsolete;
use crate::sstable::txnlog::{last_modified_ms, record_path, Record, TxnLog};
use crate::sstable::Descriptor;

pub struct Transaction {
    log: TxnLog,
    dir: PathBuf,
    old: Descriptor,
    /// The old SSTable's components, as found when the run listed the folder.
    old_components: Vec<String>,
    new: Descriptor,
    cassandra_3: bool,
    /// The new SSTable's files as this transaction creates them: all a rollback may remove.
    created: Created,
}

/// Takes an obsolete file out of its table folder: moved into `aside` when given and possible,
/// else deleted.
fn dispose(f: &Path, aside: Option<&Path>) -> Result<()> {
    if let Some(dir) = aside {
        if obsolete::move_aside(f, dir)? {
            return Ok(());
        }
    }
    fs::remove_file(f).map_err(|e| Error::io(f, "delete obsolete file", e))
}

/// `/canonical/dir/nb-5-big-` for a descriptor.
fn prefix_path(dir: &Path, d: &Descriptor) -> Result<PathBuf> {
    let canon = fs::canonicalize(dir).map_err(|e| Error::io(dir, "resolve path", e))?;
    Ok(canon.join(d.prefix()))
}

impl Transaction {
    /// Opens the log and records the new SSTable (`numFiles` = its component count).
    /// `old_components` are the old SSTable's files as found when the run listed the folder: the
    /// folder is held exclusively, so they are still exactly the files with its prefix (listing a
    /// folder of thousands of SSTables again per SSTable made many small SSTables slow).
    pub fn begin(
        old: &Descriptor,
        old_components: &[String],
        new: &Descriptor,
        components: usize,
    ) -> Result<Transaction> {
        let dir = old.dir.clone();
        let cassandra_3 = old.is_cassandra_3();
        let mut log = TxnLog::create(&dir, &old.version)?;
        let added = failpoint::hit("txn.created")
            .and_then(|()| prefix_path(&dir, new))
            .and_then(|p| {
                log.append(&Record::add(
                    record_path(&p, cassandra_3),
                    components as i32,
                ))
            })
            .and_then(|()| failpoint::hit("txn.add"));
        if let Err(e) = added {
            let _ = log.finish();
            return Err(e);
        }
        Ok(Transaction {
            log,
            dir,
            old: old.clone(),
            old_components: old_components.to_vec(),
            new: new.clone(),
            cassandra_3,
            created: Created::new(),
        })
    }

    /// The new SSTable's files are created through this, so that a rollback knows them.
    pub fn created(&mut self) -> &mut Created {
        &mut self.created
    }

    pub fn new_descriptor(&self) -> &Descriptor {
        &self.new
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// Commits: the new SSTable's files must already be durable. After COMMIT the old files are
    /// deleted oldest first (or moved into the folder `aside`, see [`obsolete`]) and the log
    /// removed; a crash in between is finished by `recover`.
    pub fn commit(mut self, aside: Option<&Path>) -> Result<()> {
        let old_files = match self.log_remove() {
            Ok(f) => f,
            Err(e) => return Err(self.rollback_after(e)),
        };
        let committing =
            failpoint::hit("txn.committing").and_then(|()| self.log.append(&Record::commit()));
        if let Err(e) = committing {
            // Whether the COMMIT record reached the disk is unknown (an fsync error is never
            // retried). Take the log away first, so that no later recovery can read a COMMIT and
            // delete the old files; then remove the new files (complete and durable by now).
            let log = self.log.path().to_path_buf();
            if let Err(e2) = fs::remove_file(&log)
                .map_err(|x| Error::io(&log, "remove transaction log", x))
                .and_then(|()| sync_dir(&self.dir))
            {
                // The log is still there: leave every file as it is for `recover` to judge.
                return Err(Error::rollback_failed(e, e2));
            }
            if let Err(e2) = self.created.remove_all().and_then(|()| sync_dir(&self.dir)) {
                return Err(Error::RollbackFailed {
                    error: Box::new(e),
                    rollback: Box::new(e2),
                    next: format!(
                        "The new SSTable was abandoned (its log removed, the old SSTable is live): remove the files of {} by hand before starting Cassandra",
                        self.new.prefix()
                    ),
                });
            }
            return Err(e);
        }
        // Committed: from here the new SSTable is the live one. Errors now leave a committed log
        // for `recover` (or Cassandra's startup) to finish.
        self.created.keep();
        let after = |e: Error| Error::CleanupFailed(Box::new(e));
        failpoint::hit("txn.commit").map_err(after)?;
        for (_, f) in old_files {
            dispose(&f, aside).map_err(after)?;
            failpoint::hit("old.deleted").map_err(after)?;
        }
        sync_dir(&self.dir).map_err(after)?;
        self.log.finish().map_err(after)?;
        failpoint::hit("log.removed").map_err(after)?;
        Ok(())
    }

    /// Logs the REMOVE record of the old SSTable; returns its files, oldest first.
    fn log_remove(&mut self) -> Result<Vec<(i64, PathBuf)>> {
        sync_dir(&self.dir)?;
        failpoint::hit("dir.fsynced")?;
        let mut old_files = Vec::with_capacity(self.old_components.len());
        let mut update_time = 0;
        for c in &self.old_components {
            let f = self.old.path(c);
            let m = fs::symlink_metadata(&f).map_err(|e| Error::io(&f, "stat", e))?;
            update_time = update_time.max(last_modified_ms(&m));
            old_files.push((m.mtime() * 1_000_000_000 + m.mtime_nsec(), f));
        }
        old_files.sort();
        let path = record_path(&prefix_path(&self.dir, &self.old)?, self.cassandra_3);
        self.log
            .append(&Record::remove(path, update_time, old_files.len() as i32))?;
        failpoint::hit("txn.remove")?;
        Ok(old_files)
    }

    fn rollback_after(self, e: Error) -> Error {
        match self.rollback() {
            Ok(()) => e,
            Err(e2) => Error::rollback_failed(e, e2),
        }
    }

    /// Rolls back: ABORT, delete the files this transaction created (and nothing else), remove
    /// the log. If this fails, the log stays: `recover` finishes the rollback by Cassandra's rule.
    pub fn rollback(mut self) -> Result<()> {
        // Best effort: without ABORT the log still rolls back (no COMMIT is the same outcome).
        let _ = self.log.append(&Record::abort());
        self.created.remove_all()?;
        sync_dir(&self.dir)?;
        self.log.finish()
    }
}
