//! Step 3 and 4 for every admitted SSTable: the worker pool (`--jobs` SSTables at once, largest
//! first), and for each SSTable a new generation, its new files written inside a transaction
//! ([`commit`]), and the commit. A failure before COMMIT removes only the files the transaction
//! created; a new name found taken is abandoned for the next generation.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::crypto::Envelope;
use crate::error::{Error, Result};
use crate::fsio::{free_space, Created};
use crate::rekey::commit::Transaction;
use crate::rekey::failpoint;
use crate::rekey::generation::Generations;
use crate::rekey::obsolete;
use crate::rekey::plan::{self, Job, Target};
use crate::rekey::report::{SstableReport, Status};
use crate::rekey::rewrite::{self, ChunkOpener, Counts, DataChunks, Files, IndexPages, Rekeying};
use crate::rekey::staging::{self, Entry};
use crate::rekey::Progress;
use crate::sstable::data::format_digest;
use crate::sstable::Descriptor;

/// Tries a generation a few times: a name found taken at creation is abandoned for the next one.
const GENERATION_ATTEMPTS: usize = 4;

/// Rewrites and commits `jobs`, `threads` SSTables at a time, largest first. After Ctrl-C
/// (`cancel`) nothing new starts: the SSTables never started are reported as such.
pub fn execute(
    mut jobs: Vec<Job>,
    target: &Target,
    threads: usize,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Vec<SstableReport> {
    // Staged copies first (each a few renames), then the largest rewrites.
    jobs.sort_by_key(|j| (j.staged.is_none(), std::cmp::Reverse(j.loaded.data_len)));
    let total_bytes: u64 = jobs.iter().map(|j| j.loaded.data_len).sum();
    progress.start(total_bytes, jobs.len());
    let gens = Generations::new();
    let (mut done, never) = pool(jobs, threads, cancel, |job| {
        let r = run_job(job, target, &gens, progress, cancel);
        progress.finished(&r);
        r
    });
    progress.end();
    done.extend(never.into_iter().map(not_started));
    done.sort_by(|a, b| a.old.cmp(&b.old));
    done
}

/// Runs `work` on `items` in their order, `threads` at a time. After Ctrl-C (`cancel`) nothing
/// new starts: returns the results, and the items never started.
pub fn pool<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    cancel: &AtomicBool,
    work: impl Fn(T) -> R + Sync,
) -> (Vec<R>, Vec<T>) {
    let queue = Mutex::new(items.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                if cancel.load(Ordering::SeqCst) {
                    break; // Ctrl-C: start nothing new
                }
                let next = queue.lock().unwrap().next();
                let Some(item) = next else { break };
                let r = work(item);
                results.lock().unwrap().push(r);
            });
        }
    });
    let never = queue.into_inner().unwrap().collect();
    (results.into_inner().unwrap(), never)
}

/// An SSTable the interrupted run never started: untouched, still under its old keys.
fn not_started(j: Job) -> SstableReport {
    let mut r = j.report;
    r.status = Status::NotStarted;
    r.reason = Some(format!(
        "not started: the run was interrupted; it is still under {}. Run the same rekey again",
        r.keys_before.keys().cloned().collect::<Vec<_>>().join(", ")
    ));
    r
}

/// One SSTable, rewritten and committed or failed and rolled back, as its report.
fn run_job(
    job: Job,
    target: &Target,
    gens: &Generations,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> SstableReport {
    let t0 = Instant::now();
    let mut r = job.report.clone();
    match rewrite_and_commit(&job, target, gens, progress, cancel) {
        Ok((new_path, counts, bytes_out)) => {
            r.status = Status::Rekeyed;
            r.from_staged = job.staged.is_some();
            r.new = Some(new_path.display().to_string());
            r.rekeyed_chunks = counts.rekeyed;
            r.unchanged_chunks = counts.unchanged;
            r.raw_chunks = counts.raw;
            r.bytes_in = job.loaded.data_len;
            r.bytes_out = bytes_out;
            let after = |n: usize| {
                let mut m = BTreeMap::from([(target.id.to_string(), n)]);
                m.retain(|_, n| *n > 0);
                m
            };
            r.keys_after = after(counts.rekeyed + counts.unchanged);
            r.index_pages_after = after(r.index_pages_before.values().sum());
            r.metadata_after = after(r.metadata_before.values().sum());
            // The staged copy is used up: its manifest (and folder) go. Failing that is harmless:
            // a manifest without its files is stale, and the next run discards it.
            if let Some(Err(e)) = job
                .staged
                .as_ref()
                .map(|e| staging::remove_used_entry(&e.dir))
            {
                r.reason = Some(format!("committed; the used staging entry remains: {e}"));
            }
        }
        Err(e) => r.fail(&e),
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r
}

/// Writes the new SSTable inside a transaction and commits it; on any error before COMMIT the
/// files this transaction created are removed and the original is untouched. A new file name
/// found taken (another process created it after the folder was listed) is never deleted nor
/// overwritten: that generation is abandoned and the next one tried.
fn rewrite_and_commit(
    job: &Job,
    target: &Target,
    gens: &Generations,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(PathBuf, Counts, u64)> {
    let l = &job.loaded;
    let old = &l.found.desc;
    let new_size = plan::sum_new_len(&job.new_lens);
    let (free, _) = free_space(&old.dir)?;
    if job.staged.is_none() && free < new_size + (1 << 20) {
        return Err(Error::io(
            &old.dir,
            "check free space",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    // A staged commit moves the replaced files aside: deleting gigabytes is not window work.
    let aside = job
        .staged
        .as_ref()
        .and_then(|e| staging::data_dir_of_entry(&e.dir))
        .and_then(|dd| obsolete::aside_dir(dd, &old.dir));
    let mut attempt = 1;
    loop {
        let new = gens.allocate(old, &l.found.table.dir)?;
        let mut txn = Transaction::begin(old, &l.found.present, &new, l.found.present.len())?;
        let w = NewSstable {
            job,
            target,
            out: Out::Generation(&new),
            cancel,
        };
        let e = match w.write(txn.created(), progress) {
            Ok((counts, bytes)) => {
                if cancel.load(Ordering::SeqCst) {
                    txn.rollback()?;
                    return Err(Error::Interrupted);
                }
                txn.commit(aside.as_deref())?;
                return Ok((new.data_path(), counts, bytes));
            }
            Err(e) => e,
        };
        if let Err(e2) = txn.rollback() {
            return Err(Error::rollback_failed(e, e2));
        }
        if !e.is_name_taken() || attempt == GENERATION_ATTEMPTS {
            return Err(e);
        }
        gens.taken(&l.found.table.dir)?;
        attempt += 1;
    }
}

/// Where the rewritten files of an SSTable go.
pub enum Out<'a> {
    /// A table folder, under a new generation (rekey).
    Generation(&'a Descriptor),
    /// A staging entry: a folder of its own, files named by component (stage).
    Entry(&'a Path),
}

impl Out<'_> {
    fn path(&self, component: &str) -> PathBuf {
        match self {
            Out::Generation(d) => d.path(component),
            Out::Entry(dir) => dir.join(component),
        }
    }
}

/// What a staged or rekeyed SSTable's rewrite produced: chunk counts, and per rewritten file its
/// component, size and CRC32.
pub struct Rewritten {
    pub counts: Counts,
    pub files: Vec<(String, u64, u32)>,
}

/// The new files of one SSTable, written file by file: Data.db, CompressionInfo.db, encrypted
/// index pages, Statistics.db, Digest.crc32, then hard links for the rest ([`NewSstable::write`]
/// in a table folder); or only the files a staging entry holds ([`NewSstable::write_staged`]).
pub struct NewSstable<'a> {
    pub job: &'a Job,
    pub target: &'a Target,
    pub out: Out<'a>,
    pub cancel: &'a AtomicBool,
}

impl NewSstable<'_> {
    /// Writes every file of the new generation (each durable; the folder is the commit's to
    /// fsync), or moves in the job's staged copies of the rewritten files; returns the chunk
    /// counts and the new Data.db size.
    fn write(&self, created: &mut Created, progress: &dyn Progress) -> Result<(Counts, u64)> {
        let l = &self.job.loaded;
        let (counts, mut written) = match &self.job.staged {
            Some(entry) => {
                progress.advance(l.data_len);
                (self.adopt(created, entry)?, entry.components())
            }
            None => {
                let r = self.rewrite(created, progress)?;
                let names = r.files.iter().map(|(c, _, _)| c.clone()).collect();
                (r.counts, names)
            }
        };
        if let Some(comps) = &l.statistics {
            // From the current file: a running node may have rewritten it since staging.
            let from = l.found.desc.path("Statistics.db");
            let (env, names) = (self.envelope(), l.key_names());
            let bytes = rewrite::rekey_statistics(&from, comps, &self.rekeying(&env, &names))?;
            self.small(created, "Statistics.db", &bytes)?;
            written.push("Statistics.db".into());
        }
        self.link_unchanged(created, &written)?;
        // The folder is fsynced by the commit's first step (`Transaction::commit`).
        Ok((counts, plan::sum_new_len(&self.job.new_lens)))
    }

    /// Writes what a staging entry holds, each file durable (the folder is the caller's to
    /// fsync): the new Data.db, CompressionInfo.db, encrypted index pages and Digest.crc32.
    pub fn write_staged(
        &self,
        created: &mut Created,
        progress: &dyn Progress,
    ) -> Result<Rewritten> {
        self.rewrite(created, progress)
    }

    /// The files the new key changes, except Statistics.db: Data.db, CompressionInfo.db, the
    /// page-encrypted index files, Digest.crc32.
    fn rewrite(&self, created: &mut Created, progress: &dyn Progress) -> Result<Rewritten> {
        let l = &self.job.loaded;
        let env = self.envelope();
        let names = l.key_names();
        let (crc, counts) = self.data(created, self.rekeying(&env, &names), &names, progress)?;
        let mut files = vec![(
            "Data.db".to_string(),
            plan::sum_new_len(&self.job.new_lens),
            crc,
        )];
        files.push(self.compression_info(created)?);
        for pf in &l.paged {
            files.push(self.index_pages(created, pf, self.rekeying(&env, &names))?);
        }
        if l.found.present.iter().any(|c| c == "Digest.crc32") {
            files.push(self.small(created, "Digest.crc32", format_digest(crc).as_bytes())?);
            failpoint::hit("component.linked")?;
        }
        Ok(Rewritten { counts, files })
    }

    /// Moves the staged files of `entry` in under the new generation.
    fn adopt(&self, created: &mut Created, entry: &Entry) -> Result<Counts> {
        for c in entry.components() {
            created.adopt(&entry.dir.join(&c), &self.out.path(&c))?;
            failpoint::hit("component.linked")?;
        }
        let m = &entry.manifest;
        Ok(Counts {
            rekeyed: m.rekeyed_chunks,
            unchanged: m.unchanged_chunks,
            raw: m.raw_chunks,
        })
    }

    /// The SSTable's envelope with the target's provider.
    fn envelope(&self) -> Envelope {
        Envelope {
            provider: self.target.provider,
            ..self.job.loaded.envelope.clone()
        }
    }

    fn rekeying<'b>(&'b self, new_env: &'b Envelope, key_names: &'b [String]) -> Rekeying<'b> {
        let l = &self.job.loaded;
        Rekeying {
            old: &l.envelope,
            new: new_env,
            keys: &self.job.keys,
            key_names,
            target_idx: self.job.target_idx,
            target_key: &self.job.target_key,
            target_header: &self.target.header,
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The new Data.db: every chunk re-encrypted at its precomputed offset, fsynced. Returns the
    /// file's CRC32 (for Digest.crc32) and the chunk counts.
    fn data(
        &self,
        created: &mut Created,
        rk: Rekeying,
        key_names: &[String],
        progress: &dyn Progress,
    ) -> Result<(u32, Counts)> {
        let l = &self.job.loaded;
        let src_path = l.found.desc.data_path();
        let src = File::open(&src_path).map_err(|e| Error::io(&src_path, "open", e))?;
        let src_meta = src
            .metadata()
            .map_err(|e| Error::io(&src_path, "stat", e))?;
        if src_meta.len() != l.data_len {
            return Err(Error::Changed {
                path: src_path,
                what: format!(
                    "changed size since it was planned ({} bytes now, {} then)",
                    src_meta.len(),
                    l.data_len
                ),
            });
        }
        let dst_path = self.out.path("Data.db");
        let dst = created.create_like(&dst_path, &src_path, &src_meta)?;
        dst.set_len(plan::sum_new_len(&self.job.new_lens))
            .map_err(|e| Error::io(&dst_path, "allocate", e))?;
        let spans = l.data_spans(&self.job.new_offsets, &self.job.new_lens);
        let layout = DataChunks {
            opener: ChunkOpener::of(l, &src_path, key_names),
            rk,
        };
        let files = Files {
            src: &src,
            src_path: &src_path,
            dst: &dst,
            dst_path: &dst_path,
        };
        let out =
            rewrite::rewrite_file(&files, &spans, &layout, &|n| progress.advance(n), &|| {
                self.cancelled()
            })?;
        failpoint::hit("data.written")?;
        // An fsync error is fatal for this SSTable: never retried (the page cache may have dropped it).
        dst.sync_all()
            .map_err(|e| Error::io(&dst_path, "fsync", e))?;
        failpoint::hit("data.fsynced")?;
        Ok(out)
    }

    /// The new CompressionInfo.db: the new key's options and the new chunk offsets.
    fn compression_info(&self, created: &mut Created) -> Result<(String, u64, u32)> {
        let l = &self.job.loaded;
        let mut ci = l.ci.clone();
        self.target.rewrite_options(&mut ci);
        ci.offsets = self.job.new_offsets.clone();
        self.small(created, "CompressionInfo.db", &ci.serialize())
    }

    /// One page-encrypted index file, rewritten page by page (same size, same positions).
    fn index_pages(
        &self,
        created: &mut Created,
        pf: &plan::PagedFile,
        rk: Rekeying,
    ) -> Result<(String, u64, u32)> {
        let from = self.job.loaded.found.desc.path(&pf.component);
        let to = self.out.path(&pf.component);
        let src = File::open(&from).map_err(|e| Error::io(&from, "open", e))?;
        let meta = src.metadata().map_err(|e| Error::io(&from, "stat", e))?;
        let dst = created.create_like(&to, &from, &meta)?;
        dst.set_len(meta.len())
            .map_err(|e| Error::io(&to, "allocate", e))?;
        let layout = IndexPages {
            path: &from,
            pages: &pf.pages,
            rk,
        };
        let files = Files {
            src: &src,
            src_path: &from,
            dst: &dst,
            dst_path: &to,
        };
        let (crc, _) =
            rewrite::rewrite_file(&files, &pf.spans(), &layout, &|_| {}, &|| self.cancelled())?;
        dst.sync_all().map_err(|e| Error::io(&to, "fsync", e))?;
        failpoint::hit("index.written")?;
        Ok((pf.component.clone(), meta.len(), crc))
    }

    /// A small new component with `bytes`, made like the old one (mode, owner, attributes).
    fn small(
        &self,
        created: &mut Created,
        component: &str,
        bytes: &[u8],
    ) -> Result<(String, u64, u32)> {
        let from = self.job.loaded.found.desc.path(component);
        let meta = fs::metadata(&from).map_err(|e| Error::io(&from, "stat", e))?;
        created.write_small(&self.out.path(component), &from, &meta, bytes)?;
        Ok((
            component.to_string(),
            bytes.len() as u64,
            crc32fast::hash(bytes),
        ))
    }

    /// Every component not rewritten is unchanged: hard-linked under the new generation.
    fn link_unchanged(&self, created: &mut Created, written: &[String]) -> Result<()> {
        let old = &self.job.loaded.found.desc;
        for c in &self.job.loaded.found.present {
            if written.contains(c) {
                continue;
            }
            created.hard_link(&old.path(c), &self.out.path(c))?;
            failpoint::hit("component.linked")?;
        }
        Ok(())
    }
}
