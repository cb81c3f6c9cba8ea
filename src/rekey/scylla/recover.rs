//! `recover` for ScyllaDB swaps (FORMAT.md 4.9): every journal a crashed rekey left in
//! `<data_dir>/.sstable-rekey-scylla/` is finished or undone the way ScyllaDB's startup would
//! resolve the folder: a new generation still holding its `TOC.txt.tmp` was never sealed (it is
//! deleted, `TOC.txt.tmp` last); an old one holding a `TOC.txt.tmp` was doomed by the commit
//! rename (it is deleted, `TOC.txt.tmp` last). Nothing else is touched. An empty journal had no
//! swap (it is removed); any other journal that cannot be read stops the recovery with nothing
//! done for it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsio::sync_dir;
use crate::rekey::scylla::swap::{components_of, finish, remove_journal, Journal, JOURNALS};

/// What recovering one journal did.
pub struct Recovered {
    pub journal: PathBuf,
    pub outcome: &'static str,
}

/// The journals of `data_dirs` (a missing folder holds none; any listing error fails).
pub fn journals(data_dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for dd in data_dirs {
        let root = dd.join(JOURNALS);
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&root, "list journal folder", e)),
        };
        for e in entries {
            let e = e.map_err(|e| Error::io(&root, "list journal folder", e))?;
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Resolves every journal of `data_dirs`, then removes the empty journal folders.
pub fn recover(data_dirs: &[PathBuf]) -> Result<Vec<Recovered>> {
    let mut done = Vec::new();
    for dd in data_dirs {
        // Journals name absolute folders: one that names a folder outside its own data
        // directory is not trusted to decide what to delete.
        let home = fs::canonicalize(dd).map_err(|e| Error::io(dd, "resolve path", e))?;
        for j in journals(std::slice::from_ref(dd))? {
            done.push(Recovered {
                outcome: one(&j, &home)?,
                journal: j,
            });
        }
    }
    for dd in data_dirs {
        match fs::remove_dir(dd.join(JOURNALS)) {
            Ok(()) => sync_dir(dd)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) => return Err(Error::io(dd.join(JOURNALS), "remove folder", e)),
        }
    }
    Ok(done)
}

/// Whether `path` is a regular file named as this tool names journals (`….json`): only such an
/// empty file is taken for an empty journal and removed; anything else stops `recover`.
fn is_journal_file(path: &Path) -> Result<bool> {
    let m = fs::symlink_metadata(path).map_err(|e| Error::io(path, "stat journal", e))?;
    let named = path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().ends_with(b".json"));
    Ok(m.is_file() && named)
}

fn one(path: &Path, home: &Path) -> Result<&'static str> {
    let text = fs::read(path).map_err(|e| Error::io(path, "read journal", e))?;
    if text.is_empty() && is_journal_file(path)? {
        // A swap writes nothing in a table folder before its journal is whole and durable: an
        // empty journal (a crash, or a failed write whose cleanup failed too) had no swap.
        remove_journal(path)?;
        return Ok("removed (empty: its swap never started)");
    }
    let j: Journal = serde_json::from_slice(&text).map_err(|e| {
        Error::corrupt(
            path,
            format!("not a journal of sstable-rekey ({e}): move it away and resolve the folder it names by starting ScyllaDB"),
        )
    })?;
    let sane = |p: &str| p.ends_with('-') && !p.contains('/') && !p.contains('\0');
    if !sane(&j.old) || !sane(&j.new) || !j.dir.is_absolute() {
        return Err(Error::corrupt(path, "names no SSTable prefixes"));
    }
    if !j.dir.starts_with(home) || j.dir == home {
        return Err(Error::corrupt(
            path,
            format!(
                "names the folder {}, outside the data directory {} that holds it: move it away and resolve that folder by starting ScyllaDB",
                j.dir.display(),
                home.display()
            ),
        ));
    }
    // Whether a TOC.txt.tmp is there decides everything: a stat that fails is an error, never
    // "not there" (that would remove the journal and leave the swap unresolved).
    let there = |prefix: &str| {
        let p = j.dir.join(format!("{prefix}TOC.txt.tmp"));
        p.try_exists().map_err(|e| Error::io(&p, "stat", e))
    };
    let outcome = if there(&j.new)? {
        // Never sealed: the old SSTable is the live one.
        finish(&j.dir, &j.new, &components_of(&j.dir, &j.new)?, None)?;
        "rolled back (the new copy was not sealed)"
    } else if there(&j.old)? {
        // Committed: the old SSTable was doomed by the rename.
        finish(&j.dir, &j.old, &components_of(&j.dir, &j.old)?, None)?;
        "finished (the old SSTable deleted)"
    } else {
        "nothing left to do"
    };
    remove_journal(path)?;
    Ok(outcome)
}
