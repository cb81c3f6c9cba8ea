//! `stage` for ScyllaDB SSTables (node serving): each encrypted component file re-ciphered under
//! the new key into the SSTable's staging entry (files named by component, as for DSE/HCD:
//! [`crate::rekey::staging`]), the manifest last. Nothing in a table folder is touched.
//!
//! The entry's sources are the encrypted component files and Scylla.db (which names the key). The
//! window's `rekey` renames the staged files in under the new generation ([`super::swap`]) and
//! writes Scylla.db then: it is a few KiB.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::rekey::report::{Progress, SstableReport, Status};
use crate::rekey::scylla::load::ScyllaLoaded;
use crate::rekey::scylla::run::{Prepared, ScyllaJob};
use crate::rekey::scylla::swap::Reciphering;
use crate::rekey::staging::{
    moved_reason, write_entry, EntryOutcome, Manifest, SourceFile, StagedFile, MANIFEST_FORMAT,
};

/// A ScyllaDB SSTable to stage: decided, with its report so far.
pub struct Todo {
    pub job: ScyllaJob,
    pub prepared: Prepared,
    pub report: SstableReport,
}

/// The files an entry of `l` holds: its encrypted components, Data.db first.
pub fn files_of(l: &ScyllaLoaded) -> Vec<&str> {
    l.files.iter().map(|f| f.component.as_str()).collect()
}

/// Stages `todo` one SSTable after the other (each re-ciphered in parallel windows); after
/// Ctrl-C nothing new starts.
pub fn stage_all(
    todo: Vec<Todo>,
    dirs: &[PathBuf],
    target: &str,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Vec<SstableReport> {
    todo.into_iter()
        .map(|t| {
            let mut r = t.report;
            if cancel.load(Ordering::SeqCst) {
                r.status = Status::NotStarted;
                r.reason = Some("not started: the stage was interrupted; run it again".into());
                return r;
            }
            let t0 = Instant::now();
            let l = &t.job.loaded;
            match stage_one(l, &t.prepared, dirs, target, cancel, progress) {
                EntryOutcome::Written { dir, .. } => {
                    r.status = Status::Staged;
                    r.new = Some(dir.display().to_string());
                    r.bytes_in = l.encrypted_bytes();
                    r.bytes_out = l.encrypted_bytes();
                }
                EntryOutcome::Moved(e) => {
                    r.status = Status::Skipped;
                    r.reason = Some(moved_reason(&e));
                }
                EntryOutcome::Failed(e) => r.fail(&e),
                EntryOutcome::CleanupFailed(e) => r.fail(&e),
            }
            progress.finished(&r);
            r.seconds = t0.elapsed().as_secs_f64();
            r
        })
        .collect()
}

/// One SSTable's entry: every encrypted component re-ciphered into it, the manifest last.
fn stage_one(
    l: &ScyllaLoaded,
    p: &Prepared,
    dirs: &[PathBuf],
    target: &str,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> EntryOutcome<Vec<StagedFile>> {
    let ciphers = Reciphering {
        old: &p.old,
        new: &p.new,
        key: &l.key,
    };
    write_entry(
        dirs,
        &l.found.desc,
        &|| sources_of(l),
        |dir, created| {
            let mut files = Vec::new();
            for f in &l.files {
                if cancel.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted);
                }
                let (from, to) = (l.path(&f.component), dir.join(&f.component));
                let advance = |n| progress.advance(n);
                let crc32 = ciphers.file(&from, &to, f.file_len, created, true, &advance)?;
                let crc32 = crc32.expect("asked for");
                files.push(StagedFile {
                    component: f.component.clone(),
                    size: f.file_len,
                    crc32,
                });
            }
            Ok(files)
        },
        |sources, files| manifest_of(l, sources, target, files),
        cancel,
    )
}

/// The identities of the files an entry is made from: the encrypted components and Scylla.db.
fn sources_of(l: &ScyllaLoaded) -> Result<Vec<SourceFile>> {
    files_of(l)
        .into_iter()
        .chain(["Scylla.db"])
        .map(|c| SourceFile::of(&l.path(c), c))
        .collect()
}

fn manifest_of(
    l: &ScyllaLoaded,
    sources: Vec<SourceFile>,
    target: &str,
    files: &[StagedFile],
) -> Result<Manifest> {
    let data = l.found.desc.data_path();
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        table: l.found.table.qualified(),
        source: fs::canonicalize(&data).map_err(|e| Error::io(&data, "resolve path", e))?,
        sources,
        target: target.to_string(),
        target_check: String::new(),
        files: files.to_vec(),
        rekeyed_chunks: files.len(),
        unchanged_chunks: 0,
        raw_chunks: 0,
        chunk_runs: Vec::new(),
    })
}
