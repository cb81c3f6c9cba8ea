//! The staging folders of `stage` (see [`super::stage`]): `<data_dir>/.sstable-rekey-staging/`,
//! one entry folder per staged SSTable, named after the SSTable's folder and prefix, holding the
//! rewritten files by component name and, written last, `manifest.json`. This file reads and
//! removes entries; it knows nothing of jobs or keys. Any listing error, and any file an entry
//! cannot hold, is an error: nothing is decided on a partial view, nothing unknown is deleted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsio::{sync_dir, Created};
use crate::sstable::Descriptor;

/// The staging folder's name in a data directory (no keyspace name starts with a dot).
pub const STAGING: &str = ".sstable-rekey-staging";
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_TMP: &str = "manifest.json.tmp";
/// The files an entry may hold (DSE/HCD: the rewritten components; ScyllaDB: every component it
/// can encrypt); anything else in the staging folder stops `stage`.
const ENTRY_FILES: [&str; 12] = [
    "Data.db",
    "CompressionInfo.db",
    "Partitions.db",
    "Rows.db",
    "Digest.crc32",
    "Index.db",
    "Summary.db",
    "CRC.db",
    "Filter.db",
    "Statistics.db",
    MANIFEST,
    MANIFEST_TMP,
];
pub const MANIFEST_FORMAT: u32 = 1;

/// The staging folder of `data_dir`.
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STAGING)
}

/// The data directory of an entry folder: the folder that holds the staging folder above it.
pub fn data_dir_of_entry(entry: &Path) -> Option<&Path> {
    entry
        .ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == STAGING))
        .and_then(Path::parent)
}

/// The data directory of an SSTable folder, among `dirs`.
pub fn data_dir_of<'a>(dirs: &'a [PathBuf], sstable_dir: &Path) -> Result<&'a PathBuf> {
    dirs.iter()
        .find(|d| sstable_dir.starts_with(d))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is in none of the data directories",
                sstable_dir.display()
            ))
        })
}

/// The entry folder of the SSTable `desc`: its folder's path below the data directory, then its
/// prefix.
pub fn entry_dir(dirs: &[PathBuf], desc: &Descriptor) -> Result<PathBuf> {
    let dd = data_dir_of(dirs, &desc.dir)?;
    let rel = desc.dir.strip_prefix(dd).expect("checked");
    Ok(staging_dir(dd)
        .join(rel)
        .join(desc.prefix().trim_end_matches('-')))
}

/// How writing one entry ended.
pub enum EntryOutcome<W> {
    /// Written, manifest last.
    Written { dir: PathBuf, written: W },
    /// The running node changed or removed the SSTable meanwhile (a compaction): no fault; what
    /// this run wrote of it is gone.
    Moved(Error),
    /// Failed; what this run wrote of it is gone.
    Failed(Error),
    /// Failed, and removing what was written failed too.
    CleanupFailed(Error),
}

/// Writes the staging entry of the SSTable `desc`: its folder made, `write` fills it (every file
/// it creates recorded in the `Created` it is given, each durable), the folder fsynced, the
/// sources checked unchanged since before `write` (`sources` reads their identities), then the
/// manifest `manifest` makes from them, last. On failure what was written of it is removed.
pub fn write_entry<W>(
    dirs: &[PathBuf],
    desc: &Descriptor,
    sources: &dyn Fn() -> Result<Vec<SourceFile>>,
    write: impl FnOnce(&Path, &mut Created) -> Result<W>,
    manifest: impl FnOnce(Vec<SourceFile>, &W) -> Result<Manifest>,
    cancel: &std::sync::atomic::AtomicBool,
) -> EntryOutcome<W> {
    let mut created = Created::new();
    let mut made_dir = None;
    let outcome = (|| {
        let dir = entry_dir(dirs, desc)?;
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create staging entry", e))?;
        made_dir = Some(dir.clone());
        let before = sources()?;
        let written = write(&dir, &mut created)?;
        sync_dir(&dir)?;
        if cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        // The sources must not have moved while they were read.
        if sources()? != before {
            return Err(Error::Changed {
                path: desc.data_path(),
                what: "changed while it was staged (compacted away?); stage again".into(),
            });
        }
        write_manifest(&dir, &manifest(before, &written)?)?;
        Ok((dir, written))
    })();
    match outcome {
        Ok((dir, written)) => {
            created.keep();
            EntryOutcome::Written { dir, written }
        }
        Err(e) => {
            let cleanup = created
                .remove_all()
                .and_then(|()| made_dir.as_deref().map_or(Ok(()), remove_empty_up));
            let moved = matches!(e, Error::Changed { .. }) || !desc.data_path().exists();
            match cleanup {
                Ok(()) if moved => EntryOutcome::Moved(e),
                Ok(()) => EntryOutcome::Failed(e),
                Err(e2) => EntryOutcome::CleanupFailed(Error::rollback_failed(e, e2)),
            }
        }
    }
}

/// Why an SSTable the running node changed or removed meanwhile has no entry.
pub fn moved_reason(e: &Error) -> String {
    format!("changed or removed while it was staged (a compaction?): nothing staged for it ({e})")
}

/// An entry's manifest, last: a temp file, fsync, rename, folder fsync. A manifest that is not
/// whole and durable goes with the error (the caller then removes the files it would name): a
/// failed entry never keeps a manifest, nor a temp file of one.
fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let text = serde_json::to_string_pretty(m).expect("manifests serialize") + "\n";
    let tmp = dir.join(MANIFEST_TMP);
    let dst = dir.join(MANIFEST);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, "create", e))?;
    let mut made = &tmp;
    let done = std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| Error::io(&tmp, "write", e))
        .and_then(|()| f.sync_all().map_err(|e| Error::io(&tmp, "fsync", e)))
        .and_then(|()| fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, "rename", e)))
        .and_then(|()| {
            made = &dst;
            sync_dir(dir)
        });
    drop(f);
    let Err(e) = done else { return Ok(()) };
    match fs::remove_file(made) {
        Ok(()) => Err(e),
        Err(e2) => Err(Error::rollback_failed(
            e,
            Error::io(made, "remove unfinished manifest", e2),
        )),
    }
}

/// A source file as it was when it was staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub component: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl SourceFile {
    pub fn of(path: &Path, component: &str) -> Result<SourceFile> {
        let m = fs::symlink_metadata(path).map_err(|e| Error::io(path, "stat", e))?;
        Ok(SourceFile {
            component: component.to_string(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

/// Consecutive chunks of the source Data.db under one key header (or stored raw), from `first`:
/// with the source unchanged, the rekey that commits the entry rebuilds the chunk table from these
/// runs and one header read per run, instead of reading every chunk's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRun {
    pub first: usize,
    pub count: usize,
    pub raw: bool,
}

/// A staged file: its size and CRC32.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedFile {
    pub component: String,
    pub size: u64,
    pub crc32: u32,
}

/// What an entry holds and what it was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `keyspace.table`.
    pub table: String,
    /// The source Data.db (canonical path).
    pub source: PathBuf,
    /// Every source file a staged file was made from.
    pub sources: Vec<SourceFile>,
    /// The key the staged files are under.
    pub target: String,
    /// DSE/HCD: the check value of the target key's bytes when staged (`AesKey::check_value`);
    /// a copy made under other bytes than the key holds now is stale. Empty in a ScyllaDB entry
    /// (its commit compares first blocks instead) and in older manifests (then stale).
    #[serde(default)]
    pub target_check: String,
    pub files: Vec<StagedFile>,
    pub rekeyed_chunks: usize,
    pub unchanged_chunks: usize,
    pub raw_chunks: usize,
    /// The source's chunks as runs (absent in older manifests: then every header is read).
    #[serde(default)]
    pub chunk_runs: Vec<ChunkRun>,
}

/// A staging entry with its manifest.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Entry {
    /// The components the entry replaces.
    pub fn components(&self) -> Vec<String> {
        self.manifest
            .files
            .iter()
            .map(|f| f.component.clone())
            .collect()
    }

    /// Why this entry cannot stand for the SSTable `desc`, rekeyed to `target` (whose bytes have
    /// the check value `check`, when given) by rewriting the components `expected`, if it cannot.
    pub fn stale_for(
        &self,
        desc: &Descriptor,
        expected: &[&str],
        target: &str,
        check: Option<&str>,
    ) -> Option<String> {
        let m = &self.manifest;
        if m.format != MANIFEST_FORMAT {
            return Some(format!("manifest format {}", m.format));
        }
        if m.target != target {
            return Some(format!("staged for {}, not {target}", m.target));
        }
        if check.is_some_and(|c| c != m.target_check) {
            return Some(format!(
                "staged under other bytes of {target} than it holds now"
            ));
        }
        for s in &m.sources {
            match SourceFile::of(&desc.path(&s.component), &s.component) {
                Ok(now) if now == *s => {}
                Ok(_) => return Some(format!("{} changed since it was staged", s.component)),
                Err(e) => return Some(e.to_string()),
            }
        }
        let staged: Vec<&str> = m.files.iter().map(|f| f.component.as_str()).collect();
        if staged != expected {
            return Some(format!("holds {staged:?}, the SSTable needs {expected:?}"));
        }
        for f in &m.files {
            let p = self.dir.join(&f.component);
            match fs::symlink_metadata(&p) {
                Ok(meta) if meta.is_file() && meta.len() == f.size => {}
                Ok(meta) => {
                    return Some(format!(
                        "{}: {} bytes, the manifest says {}",
                        p.display(),
                        meta.len(),
                        f.size
                    ))
                }
                Err(e) => return Some(format!("{}: {e}", p.display())),
            }
        }
        None
    }

    /// `--verify-staged`: every staged file read back; why one does not match its manifest CRC32.
    pub fn corrupt(&self) -> Option<String> {
        for f in &self.manifest.files {
            let p = self.dir.join(&f.component);
            match crc32_of(&p) {
                Ok(c) if c == f.crc32 => {}
                Ok(c) => {
                    return Some(format!(
                        "{}: CRC32 {c:08x}, the manifest says {:08x}",
                        p.display(),
                        f.crc32
                    ))
                }
                Err(e) => return Some(format!("{}: {e}", p.display())),
            }
        }
        None
    }

    /// The entry's chunk runs, if `desc` is its source and its source files are unchanged.
    pub fn runs_for(&self, desc: &Descriptor) -> Option<&[ChunkRun]> {
        let unchanged = self.manifest.sources.iter().all(|s| {
            SourceFile::of(&desc.path(&s.component), &s.component).is_ok_and(|now| now == *s)
        });
        (unchanged && !self.manifest.chunk_runs.is_empty()).then_some(&self.manifest.chunk_runs[..])
    }
}

/// The CRC32 of a whole file.
fn crc32_of(path: &Path) -> std::io::Result<u32> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finalize()),
            n => h.update(&buf[..n]),
        }
    }
}

/// What the staging folders of a run hold.
#[derive(Debug, Default)]
pub struct Staging {
    pub entries: Vec<Entry>,
    /// Entry folders without a (readable) manifest: left by an interrupted `stage`.
    pub incomplete: Vec<PathBuf>,
}

impl Staging {
    /// The entries by source Data.db (canonical path).
    pub fn by_source(&self) -> StagedIndex<'_> {
        StagedIndex(
            self.entries
                .iter()
                .map(|e| (e.manifest.source.as_path(), e))
                .collect(),
        )
    }
}

/// [`Staging::by_source`].
pub struct StagedIndex<'a>(std::collections::HashMap<&'a Path, &'a Entry>);

impl StagedIndex<'_> {
    /// The chunk runs of the entry whose unchanged source is the SSTable `desc`, if any. A path
    /// that cannot be resolved is an error (never "no entry": that SSTable fails, closed).
    pub fn runs_for(&self, desc: &Descriptor) -> Result<Option<&[ChunkRun]>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let path = desc.data_path();
        let data = fs::canonicalize(&path).map_err(|e| Error::io(&path, "resolve path", e))?;
        Ok(self.0.get(data.as_path()).and_then(|e| e.runs_for(desc)))
    }
}

/// Reads the staging folders of `data_dirs` (a missing one holds nothing). Any listing error, and
/// any file an entry cannot hold, is an error: nothing is decided on a partial view.
pub fn load(data_dirs: &[PathBuf]) -> Result<Staging> {
    let mut st = Staging::default();
    for dd in data_dirs {
        let root = staging_dir(dd);
        match fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() => walk(&root, &mut st)?,
            Ok(_) => {
                return Err(Error::Usage(format!(
                "{} is not a folder: move it away (sstable-rekey keeps its staged copies there)",
                root.display()
            )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&root, "stat staging folder", e)),
        }
    }
    Ok(st)
}

/// One folder of the staging tree: a folder holding files is an entry; others are walked.
fn walk(dir: &Path, st: &mut Staging) -> Result<()> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, "list staging folder", e))? {
        let e = e.map_err(|e| Error::io(dir, "list staging folder", e))?;
        let t = e.file_type().map_err(|x| Error::io(e.path(), "stat", x))?;
        let name = e.file_name();
        if t.is_dir() {
            dirs.push(e.path());
        } else if t.is_file() && ENTRY_FILES.iter().any(|f| name == *f) {
            files.push(name);
        } else {
            return Err(Error::Usage(format!(
                "{}: not something sstable-rekey stages; move it out of the staging folder (nothing there is deleted that the tool does not know)",
                e.path().display()
            )));
        }
    }
    if !files.is_empty() {
        if !dirs.is_empty() {
            return Err(Error::Usage(format!(
                "{}: a staging entry with sub-folders; move them out",
                dir.display()
            )));
        }
        match read_manifest(dir) {
            Some(manifest) => st.entries.push(Entry {
                dir: dir.to_path_buf(),
                manifest,
            }),
            None => st.incomplete.push(dir.to_path_buf()),
        }
        return Ok(());
    }
    for d in dirs {
        walk(&d, st)?;
    }
    Ok(())
}

/// The entry's manifest, when there is one that parses.
fn read_manifest(dir: &Path) -> Option<Manifest> {
    let text = fs::read_to_string(dir.join(MANIFEST)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes an entry folder (only the files an entry holds; the folder, then its empty parents up
/// to the staging folder). An entry is the tool's own output: this is how a stale or incomplete
/// one goes.
pub fn remove_entry(dir: &Path) -> Result<()> {
    remove_entry_files(dir)?;
    remove_empty_up(dir)
}

/// Removes an entry whose staged files a commit has just moved in: its manifest and folder, with
/// no fsync (a manifest a crash brings back names files that are gone: the next run discards it)
/// and its empty parents left to [`prune`] at the end of the run.
pub fn remove_used_entry(dir: &Path) -> Result<()> {
    remove_entry_files(dir)?;
    fs::remove_dir(dir).map_err(|e| Error::io(dir, "remove staging entry", e))
}

/// Removes the files an entry may hold.
fn remove_entry_files(dir: &Path) -> Result<()> {
    for f in ENTRY_FILES {
        let p = dir.join(f);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&p, "remove staged file", e)),
        }
    }
    Ok(())
}

/// Prunes the staging folders of `data_dirs` (see [`prune`]); what could not be removed, as
/// notes (harmless: empty folders).
pub fn prune_all(data_dirs: &[PathBuf]) -> Vec<String> {
    data_dirs
        .iter()
        .filter_map(|dd| prune(dd).err().map(|e| e.to_string()))
        .collect()
}

/// Removes the empty folders of the staging folder of `data_dir`, bottom up (a run killed while
/// removing an entry leaves some), and the staging folder itself when nothing is left in it. It
/// is the tool's own; files are never touched here.
pub fn prune(data_dir: &Path) -> Result<()> {
    let root = staging_dir(data_dir);
    match fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&root, "stat staging folder", e)),
    }
    if prune_dir(&root)? {
        fs::remove_dir(&root).map_err(|e| Error::io(&root, "remove staging folder", e))?;
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Removes the empty sub-folders of `dir`; true when `dir` is left empty.
fn prune_dir(dir: &Path) -> Result<bool> {
    let mut empty = true;
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, "list staging folder", e))? {
        let e = e.map_err(|e| Error::io(dir, "list staging folder", e))?;
        let t = e.file_type().map_err(|x| Error::io(e.path(), "stat", x))?;
        if t.is_dir() && prune_dir(&e.path())? {
            fs::remove_dir(e.path()).map_err(|x| Error::io(e.path(), "remove empty folder", x))?;
        } else {
            empty = false;
        }
    }
    if !empty {
        return Ok(false);
    }
    sync_dir(dir)?;
    Ok(true)
}

/// Removes `dir` and its parents while they are empty, stopping below the staging folder.
pub fn remove_empty_up(dir: &Path) -> Result<()> {
    let mut d = dir.to_path_buf();
    loop {
        if d.file_name().is_some_and(|n| n == STAGING) {
            return sync_dir(&d);
        }
        match fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => return sync_dir(&d),
            Err(e) => return Err(Error::io(&d, "remove staging folder", e)),
        }
        match d.parent() {
            Some(p) => d = p.to_path_buf(),
            None => return Ok(()),
        }
    }
}
