//! Step 4, commit: Cassandra's own transaction-log protocol (FORMAT.md 1.5), so that a crash at
//! any instant leaves exactly one of the old and new SSTable once `recover` or Cassandra's startup
//! has run. Order: log ADD(new) → write new files → fsync files and folder → REMOVE(old) → COMMIT
//! → delete old files (oldest first) → delete the log. Before COMMIT, any failure rolls back.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::rekey::failpoint;
use crate::sstable::txnlog::{last_modified_ms, record_path, Record, TxnLog};
use crate::sstable::Descriptor;
use crate::util::sync_dir;

pub struct Transaction {
    log: TxnLog,
    dir: PathBuf,
    old: Descriptor,
    /// The old SSTable's components, as found when the run listed the folder.
    old_components: Vec<String>,
    new: Descriptor,
    cassandra_3: bool,
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
        })
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// Files whose names start with a descriptor's prefix.
    fn files_of(&self, d: &Descriptor) -> Result<Vec<(i64, PathBuf)>> {
        let prefix = d.prefix();
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, "list folder", e))? {
            let e = e.map_err(|e| Error::io(&self.dir, "list folder", e))?;
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
            {
                let m =
                    fs::symlink_metadata(e.path()).map_err(|x| Error::io(e.path(), "stat", x))?;
                out.push((m.mtime() * 1_000_000_000 + m.mtime_nsec(), e.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Commits: the new SSTable's files must already be durable. After COMMIT the old files are
    /// deleted oldest first and the log removed; a crash in between is finished by `recover`.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
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
            let _ = fs::remove_file(&log)
                .and_then(|()| sync_dir(&self.dir).map_err(std::io::Error::other));
            for (_, f) in self.files_of(&self.new).unwrap_or_default() {
                let _ = fs::remove_file(f);
            }
            let _ = sync_dir(&self.dir);
            return Err(e);
        }
        // Committed: from here the new SSTable is the live one. Errors now leave a committed log
        // for `recover` (or Cassandra's startup) to finish.
        let after = |e: Error| {
            Error::Usage(format!(
                "the new SSTable is committed and live, but cleaning up failed: {e}. Run `sstable-rekey recover` before starting Cassandra"
            ))
        };
        failpoint::hit("txn.commit").map_err(after)?;
        let mut deleted = Vec::new();
        for (_, f) in old_files {
            fs::remove_file(&f).map_err(|e| after(Error::io(&f, "delete obsolete file", e)))?;
            failpoint::hit("old.deleted").map_err(after)?;
            deleted.push(f);
        }
        sync_dir(&self.dir).map_err(after)?;
        self.log.finish().map_err(after)?;
        failpoint::hit("log.removed").map_err(after)?;
        Ok(deleted)
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
            Err(e2) => Error::Usage(format!(
                "{e}; and rolling back failed too: {e2}. Run `sstable-rekey recover` before starting Cassandra"
            )),
        }
    }

    /// Rolls back: ABORT, delete every file of the new SSTable, remove the log.
    pub fn rollback(mut self) -> Result<()> {
        let _ = self.log.append(&Record::abort());
        for (_, f) in self.files_of(&self.new)? {
            match fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&f, "delete partial output", e)),
            }
        }
        sync_dir(&self.dir)?;
        self.log.finish()
    }
}
