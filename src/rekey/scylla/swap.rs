//! Steps 3 and 4 for a ScyllaDB SSTable X (generation g): the rekeyed copy X' (a fresh generation
//! g') written beside it, then swapped in by ScyllaDB's own startup rules (FORMAT.md 4.9; there is
//! no transaction log: a generation's state is which TOC files exist):
//!
//! 1. a journal `(folder, g, g')` in `<data_dir>/.sstable-rekey-scylla/` (never in a table
//!    folder: ScyllaDB refuses to start on a file there it cannot parse as an SSTable name);
//! 2. `TOC.txt.tmp(g')` (X's TOC bytes), durable: from here a start deletes whatever g' has;
//! 3. X's other components under g': the encrypted ones re-ciphered, Scylla.db with the new key's
//!    attributes, the rest hard-linked; each durable, then the folder;
//! 4. `TOC.txt(g')`, durable (g' has both TOC files: still deleted at start);
//! 5. **the commit**: rename `TOC.txt.tmp(g')` onto the free name `TOC.txt.tmp(g)`, folder fsync.
//!    One rename seals X' (only its TOC.txt is left) and dooms X (a start deletes a generation with
//!    a TOC.txt.tmp). No instant has both live: the "closing the window" order of 4.9;
//! 6. X's files deleted, its `TOC.txt.tmp(g)` last, the folder fsynced; the journal removed.
//!    A swap of a staged copy moves X's files aside instead ([`obsolete`]): deleting gigabytes is
//!    not window work; its `TOC.txt.tmp(g)` is still deleted last.
//!
//! With a staged copy (`stage`), step 3 renames the staged re-ciphered files in instead of writing
//! them; a failure before 5 moves them back into their staging entry.
//!
//! Before 5 a failure removes what this SSTable's swap created (TOC.txt.tmp(g') last) and the
//! journal; a crash leaves g' doomed (a start, or `recover`, deletes it). After 5 a failure is
//! finished by `recover` (or a start): X is doomed.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::scylla::{plain_len, recipher_into, FileCipher, FILE_BLOCK};
use crate::error::{Error, Result};
use crate::fsio::{rename_noreplace, sync_dir, Created};
use crate::keys::KeyId;
use crate::rekey::scylla::load::ScyllaLoaded;
use crate::rekey::staging::Entry;
use crate::rekey::{failpoint, obsolete};
use crate::sstable::data::read_at;
use crate::sstable::scylla::{rekey_scylla_db, RekeyTarget};
use crate::sstable::Descriptor;

/// The folder of a data directory that holds the swaps in progress.
pub const JOURNALS: &str = ".sstable-rekey-scylla";
/// File blocks per window: 1 MiB, windows in parallel.
const WINDOW_BLOCKS: usize = 256;

/// A swap in progress, as `recover` needs it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Journal {
    /// The SSTable folder.
    pub dir: PathBuf,
    /// `me-3-big-` (X) and `me-4-big-` (X').
    pub old: String,
    pub new: String,
}

/// What a swap needs beyond the SSTable.
pub struct Swap<'a> {
    pub l: &'a ScyllaLoaded,
    pub old: &'a FileCipher,
    pub new: &'a FileCipher,
    pub target: &'a RekeyTarget,
    /// The data directory holding the SSTable (for the journal).
    pub data_dir: &'a Path,
    /// The SSTable's staged copy (`stage`), whose re-ciphered files are moved in.
    pub staged: Option<&'a Entry>,
}

impl Swap<'_> {
    /// Writes X' under `new` and swaps it in. Returns the bytes written.
    pub fn run(&self, new: &Descriptor) -> Result<u64> {
        let journal = self.journal(new)?;
        let mut created = Created::new();
        let written = match self.write(new, &mut created) {
            Ok(n) => n,
            Err(e) => return Err(self.abandon(e, created, &journal)),
        };
        // The commit point: one rename seals X' and dooms X.
        let old_tmp = self.l.found.desc.path("TOC.txt.tmp");
        let sealed = rename_noreplace(&new.path("TOC.txt.tmp"), &old_tmp)
            .map_err(|e| Error::io(&old_tmp, "rename (commit)", e))
            .and_then(|()| sync_dir(&new.dir));
        if let Err(e) = sealed {
            if old_tmp.try_exists().unwrap_or(true) {
                // The rename happened (or whether it did is unknown); whether it is durable is
                // unknown: recover decides. Nothing of X' may be removed now.
                return Err(Error::CleanupFailed(Box::new(e)));
            }
            return Err(self.abandon(e, created, &journal));
        }
        created.keep();
        failpoint::hit("scylla.committed").map_err(|e| Error::CleanupFailed(Box::new(e)))?;
        let d = &self.l.found.desc;
        let aside = self
            .staged
            .and_then(|_| obsolete::aside_dir(self.data_dir, &d.dir));
        finish(&d.dir, &d.prefix(), &self.l.found.present, aside.as_deref())
            .and_then(|()| remove_journal(&journal))
            .map_err(|e| Error::CleanupFailed(Box::new(e)))?;
        Ok(written)
    }

    /// Steps 2–4: every file of X' (TOC.txt.tmp first), each durable, and the folder.
    fn write(&self, new: &Descriptor, created: &mut Created) -> Result<u64> {
        let d = &self.l.found.desc;
        let toc_path = d.path("TOC.txt");
        let toc = fs::read(&toc_path).map_err(|e| Error::io(&toc_path, "read", e))?;
        let toc_meta = fs::metadata(&toc_path).map_err(|e| Error::io(&toc_path, "stat", e))?;
        created.write_small(&new.path("TOC.txt.tmp"), &toc_path, &toc_meta, &toc)?;
        sync_dir(&d.dir)?;
        failpoint::hit("scylla.doomed")?;
        let mut written = 0;
        for c in self.l.toc.iter().filter(|c| *c != "TOC.txt") {
            let (from, to) = (d.path(c), new.path(c));
            if c == "Scylla.db" {
                let old = fs::read(&from).map_err(|e| Error::io(&from, "read", e))?;
                let bytes =
                    rekey_scylla_db(&old, self.target).map_err(|m| Error::corrupt(&from, m.0))?;
                let meta = fs::metadata(&from).map_err(|e| Error::io(&from, "stat", e))?;
                created.write_small(&to, &from, &meta, &bytes)?;
            } else if let Some(f) = self.l.files.iter().find(|f| f.component == *c) {
                match self.staged {
                    Some(entry) => created.adopt(&entry.dir.join(c), &to)?,
                    None => {
                        let ciphers = Reciphering {
                            old: self.old,
                            new: self.new,
                            key: &self.l.key,
                        };
                        ciphers.file(&from, &to, f.file_len, created, false, &|_| {})?;
                    }
                }
                written += f.file_len;
            } else {
                created.hard_link(&from, &to)?;
            }
            failpoint::hit("component.linked")?;
        }
        created.write_small(&new.path("TOC.txt"), &toc_path, &toc_meta, &toc)?;
        sync_dir(&d.dir)?;
        failpoint::hit("dir.fsynced")?;
        Ok(written)
    }

    /// The journal of this swap, durable before anything is written in the table folder.
    fn journal(&self, new: &Descriptor) -> Result<PathBuf> {
        let root = self.data_dir.join(JOURNALS);
        if !root.is_dir() {
            match fs::create_dir(&root) {
                Ok(()) => {
                    let m = fs::metadata(self.data_dir)
                        .map_err(|e| Error::io(self.data_dir, "stat", e))?;
                    std::os::unix::fs::chown(&root, Some(m.uid()), Some(m.gid()))
                        .map_err(|e| Error::io(&root, "chown", e))?;
                    sync_dir(self.data_dir)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&root, "create folder", e)),
            }
        }
        // Absolute and resolved: `recover` may run from another working directory, and checks
        // the folder is inside the journal's data directory.
        let dir = fs::canonicalize(&self.l.found.desc.dir)
            .map_err(|e| Error::io(&self.l.found.desc.dir, "resolve path", e))?;
        let j = Journal {
            dir,
            old: self.l.found.desc.prefix(),
            new: new.prefix(),
        };
        let name = format!(
            "{}{}.json",
            crate::sstable::txnlog::time_uuid()?,
            new.prefix().trim_end_matches('-')
        );
        let path = root.join(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(&path, "create journal", e))?;
        // A journal that is not whole and durable is removed before the error is returned: an
        // empty or partial one would stop `recover` (it cannot tell what it named) and every
        // later rekey, and nothing in the table folder has been written yet.
        let whole = std::io::Write::write_all(&mut f, &serde_json::to_vec(&j).expect("serializes"))
            .map_err(|e| Error::io(&path, "write", e))
            .and_then(|()| f.sync_all().map_err(|e| Error::io(&path, "fsync", e)))
            .and_then(|()| sync_dir(&root));
        drop(f);
        match whole {
            Ok(()) => Ok(path),
            Err(e) => Err(match remove_journal(&path) {
                Ok(()) => e,
                Err(e2) => Error::rollback_failed(e, e2),
            }),
        }
    }

    /// Before the commit: removes what this swap created (newest first: TOC.txt.tmp(g') last)
    /// and its journal.
    fn abandon(&self, e: Error, mut created: Created, journal: &Path) -> Error {
        let undone = created
            .remove_all()
            .and_then(|()| sync_dir(&self.l.found.desc.dir))
            .and_then(|()| remove_journal(journal));
        match undone {
            Ok(()) => e,
            Err(e2) => Error::rollback_failed(e, e2),
        }
    }
}

/// The two file ciphers of a re-cipher, and the old key's name (for errors).
pub struct Reciphering<'a> {
    pub old: &'a FileCipher,
    pub new: &'a FileCipher,
    pub key: &'a KeyId,
}

impl Reciphering<'_> {
    /// One encrypted component file `from` (`len` bytes) re-ciphered from the old key to the new
    /// into the new file `to` (owned like `from`, durable), window by window; `advance` is told
    /// the bytes of each window done. With `crc`, returns the CRC32 of what was written (a
    /// staging manifest's; a rekey needs none, and it is a pass over every byte).
    pub fn file(
        &self,
        from: &Path,
        to: &Path,
        len: u64,
        created: &mut Created,
        crc: bool,
        advance: &(dyn Fn(u64) + Sync),
    ) -> Result<Option<u32>> {
        let plain = plain_len(len).map_err(|m| Error::corrupt(from, m.0))?;
        let src = File::open(from).map_err(|e| Error::io(from, "open", e))?;
        let meta = src.metadata().map_err(|e| Error::io(from, "stat", e))?;
        if meta.len() != len {
            return Err(Error::Changed {
                path: from.to_path_buf(),
                what: "changed size since it was read".into(),
            });
        }
        let dst = created.create_like(to, from, &meta)?;
        // Windows end to end in parallel (read, re-cipher, write), each worker reusing its two
        // buffers: reads, AES work and page-cache writes of different windows overlap.
        let window = (WINDOW_BLOCKS * FILE_BLOCK) as u64;
        let starts: Vec<u64> = (0..len.div_ceil(window)).map(|i| i * window).collect();
        let done: Vec<Result<(bool, crc32fast::Hasher)>> = starts
            .par_iter()
            .map_init(
                || {
                    (
                        Zeroizing::new(vec![0u8; window as usize]),
                        vec![0u8; window as usize],
                    )
                },
                |(input, output), &off| {
                    let n = (len - off).min(window) as usize;
                    read_at(&src, from, off, &mut input[..n])?;
                    let first = off / FILE_BLOCK as u64;
                    let ok = recipher_into(
                        self.old,
                        self.new,
                        first,
                        &input[..n],
                        &mut output[..n],
                        plain,
                    );
                    dst.write_all_at(&output[..n], off)
                        .map_err(|e| Error::io(to, "write", e))?;
                    let mut part = crc32fast::Hasher::new();
                    if crc {
                        part.update(&output[..n]);
                    }
                    advance(n as u64);
                    Ok((ok, part))
                },
            )
            .collect();
        let mut whole = crc32fast::Hasher::new();
        for d in done {
            let (ok, part) = d?;
            if !ok {
                return Err(Error::WrongKey {
                    path: from.to_path_buf(),
                    what: "its last block".into(),
                    key: self.key.to_string(),
                    msg: "the bytes after its plaintext's end are not zero".into(),
                });
            }
            whole.combine(&part);
        }
        dst.sync_all().map_err(|e| Error::io(to, "fsync", e))?;
        Ok(crc.then(|| whole.finalize()))
    }
}

/// After the commit: deletes the doomed generation `prefix` in `dir`, its `components` (as the run
/// listed them; moved into `aside` instead when given), then its TOC.txt.tmp last, so that until
/// then a start still deletes whatever is left of it. A file already gone is fine (a finish
/// resumed by `recover`).
pub fn finish(dir: &Path, prefix: &str, components: &[String], aside: Option<&Path>) -> Result<()> {
    for c in components.iter().filter(|c| *c != "TOC.txt.tmp") {
        let p = dir.join(format!("{prefix}{c}"));
        match aside {
            Some(a) if exists(&p)? && obsolete::move_aside(&p, a)? => {}
            _ => remove_if_there(&p)?,
        }
        failpoint::hit("old.deleted")?;
    }
    sync_dir(dir)?;
    remove_if_there(&dir.join(format!("{prefix}TOC.txt.tmp")))?;
    sync_dir(dir)
}

/// The components of generation `prefix` in `dir`, from a listing (any error fails).
pub fn components_of(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))? {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        let name = e.file_name();
        if let Some(c) = name.as_encoded_bytes().strip_prefix(prefix.as_bytes()) {
            v.push(String::from_utf8_lossy(c).into_owned());
        }
    }
    Ok(v)
}

/// Whether `p` names a file (a failed stat is an error, never "not there").
fn exists(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(p, "stat", e)),
    }
}

fn remove_if_there(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, "delete", e)),
    }
}

/// Removes a finished swap's journal.
pub fn remove_journal(path: &Path) -> Result<()> {
    remove_if_there(path)?;
    match path.parent() {
        Some(root) => sync_dir(root),
        None => Ok(()),
    }
}
