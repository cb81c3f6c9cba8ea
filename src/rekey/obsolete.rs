//! The replaced files of staged commits, moved aside. After COMMIT, the rekey that commits a
//! staged copy renames the old SSTable's files into `<data_dir>/.sstable-rekey-obsolete/<the
//! table folder below the data dir>/` instead of deleting them: a rename is a directory entry,
//! while a deletion makes the file system free every block (or page) of gigabytes inside the
//! maintenance window. Cassandra does the same in its own way: obsolete SSTables are deleted by a
//! background task after their transaction commits.
//!
//! [`purge`] deletes them: at the end of that rekey, or later with `sstable-rekey purge` (the node
//! serving again) when the rekey was told `--purge-later`. Only SSTable component files are ever
//! deleted from here, and only after the whole tree was listed without error; anything else stops
//! the purge with nothing deleted.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fsio::{rename_noreplace, sync_dir};
use crate::rekey::failpoint;
use crate::sstable::Descriptor;

/// The folder of a data directory that holds replaced files until they are purged (no keyspace
/// name starts with a dot).
pub const OBSOLETE: &str = ".sstable-rekey-obsolete";

/// Where the replaced files of SSTables in `sstable_dir` go, when it is inside `data_dir`.
pub fn aside_dir(data_dir: &Path, sstable_dir: &Path) -> Option<PathBuf> {
    let rel = sstable_dir.strip_prefix(data_dir).ok()?;
    (!rel.as_os_str().is_empty()).then(|| data_dir.join(OBSOLETE).join(rel))
}

/// Moves `file` into the folder `aside` (made as needed, owned like the data directory above it).
/// False when it cannot go there for a reason a deletion in place settles (another file system,
/// the name taken): the caller deletes it instead.
pub fn move_aside(file: &Path, aside: &Path) -> Result<bool> {
    let name = file
        .file_name()
        .ok_or_else(|| Error::corrupt(file, "no file name"))?;
    let to = aside.join(name);
    // The folder usually exists (made for the first file of its table): try before making it.
    let moved = match rename_noreplace(file, &to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_dirs(aside)?;
            rename_noreplace(file, &to)
        }
        r => r,
    };
    match moved {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EEXIST)) => Ok(false),
        Err(e) => Err(Error::io(file, "move aside obsolete file", e)),
    }
}

/// Creates `dir` and the missing folders above it, each owned like its parent and made durable.
fn make_dirs(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(Error::corrupt(dir, "not a folder: move it away")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, "stat", e)),
    }
    let parent = dir
        .parent()
        .ok_or_else(|| Error::corrupt(dir, "no parent folder"))?;
    make_dirs(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(dir, "create folder", e)),
    }
    let m = fs::metadata(parent).map_err(|e| Error::io(parent, "stat", e))?;
    std::os::unix::fs::chown(dir, Some(m.uid()), Some(m.gid()))
        .map_err(|e| Error::io(dir, "chown", e))?;
    sync_dir(parent)
}

/// Replaced files waiting in (or deleted from) the obsolete folders.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Obsolete {
    pub files: usize,
    pub bytes: u64,
    /// The obsolete folders that hold them.
    pub folders: Vec<String>,
}

/// One obsolete folder, listed whole: its component files, and its folders deepest first.
#[derive(Default)]
struct Listing {
    files: Vec<(PathBuf, u64)>,
    dirs: Vec<PathBuf>,
}

/// What the obsolete folders of `data_dirs` hold. Any listing error, and anything that is not an
/// SSTable component file or a folder, is an error.
pub fn pending(data_dirs: &[PathBuf]) -> Result<Obsolete> {
    let mut o = Obsolete::default();
    for dd in data_dirs {
        if let Some(l) = list(dd)? {
            o.files += l.files.len();
            o.bytes += l.files.iter().map(|f| f.1).sum::<u64>();
            o.folders.push(dd.join(OBSOLETE).display().to_string());
        }
    }
    Ok(o)
}

/// Deletes the replaced files in the obsolete folders of `data_dirs`, then the folders. Each
/// folder is listed whole first: a listing error, or anything but component files and folders,
/// deletes nothing there. Returns what was deleted.
pub fn purge(data_dirs: &[PathBuf]) -> Result<Obsolete> {
    let mut done = Obsolete::default();
    for dd in data_dirs {
        let Some(l) = list(dd)? else { continue };
        for (f, size) in &l.files {
            fs::remove_file(f).map_err(|e| Error::io(f, "delete obsolete file", e))?;
            failpoint::hit("obsolete.deleted")?;
            done.files += 1;
            done.bytes += size;
        }
        // Deepest first; durability is a courtesy here (a file a crash brings back is purged
        // by the next purge), so one fsync of the data directory.
        for d in &l.dirs {
            fs::remove_dir(d).map_err(|e| Error::io(d, "remove obsolete folder", e))?;
        }
        sync_dir(dd)?;
        done.folders.push(dd.join(OBSOLETE).display().to_string());
    }
    Ok(done)
}

/// The obsolete folder of `data_dir` listed whole, or None when there is none.
fn list(data_dir: &Path) -> Result<Option<Listing>> {
    let root = data_dir.join(OBSOLETE);
    match fs::symlink_metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Usage(format!(
                "{} is not a folder: move it away (sstable-rekey keeps replaced files there until they are purged)",
                root.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&root, "stat obsolete folder", e)),
    }
    let mut l = Listing::default();
    walk(&root, &mut l)?;
    Ok(Some(l))
}

/// Lists `dir` into `l` (its sub-folders before it in `l.dirs`).
fn walk(dir: &Path, l: &mut Listing) -> Result<()> {
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, "list obsolete folder", e))? {
        let e = e.map_err(|e| Error::io(dir, "list obsolete folder", e))?;
        let path = e.path();
        let m = fs::symlink_metadata(&path).map_err(|x| Error::io(&path, "stat", x))?;
        let component = e
            .file_name()
            .to_str()
            .is_some_and(|n| Descriptor::parse_file_name(dir, n).is_some());
        if m.is_dir() {
            walk(&path, l)?;
        } else if m.is_file() && component {
            l.files.push((path, m.len()));
        } else {
            return Err(Error::Usage(format!(
                "{}: not a file sstable-rekey moves aside; move it out of {OBSOLETE} (nothing unknown is deleted)",
                path.display()
            )));
        }
    }
    l.dirs.push(dir.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_dir_is_the_table_folder_below_the_obsolete_folder() {
        let dd = Path::new("/d");
        assert_eq!(
            aside_dir(dd, Path::new("/d/ks/t-1/.idx")),
            Some(PathBuf::from("/d/.sstable-rekey-obsolete/ks/t-1/.idx"))
        );
        assert_eq!(aside_dir(dd, Path::new("/e/ks/t-1")), None);
        assert_eq!(aside_dir(dd, dd), None);
    }

    #[test]
    fn purge_deletes_component_files_only_and_refuses_anything_else() {
        let tmp = std::env::temp_dir().join(format!("obsolete-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let table = tmp.join("ks/t-1");
        fs::create_dir_all(&table).unwrap();
        let f = table.join("nb-1-big-Data.db");
        fs::write(&f, b"12345").unwrap();
        let aside = aside_dir(&tmp, &table).unwrap();
        assert!(move_aside(&f, &aside).unwrap());
        assert!(!f.exists());
        let dirs = [tmp.clone()];
        let p = pending(&dirs).unwrap();
        assert_eq!((p.files, p.bytes), (1, 5));
        let stray = aside.join("notes.txt");
        fs::write(&stray, b"x").unwrap();
        assert!(purge(&dirs).is_err());
        assert!(aside.join("nb-1-big-Data.db").exists(), "nothing deleted");
        fs::remove_file(&stray).unwrap();
        let done = purge(&dirs).unwrap();
        assert_eq!((done.files, done.bytes), (1, 5));
        assert!(!tmp.join(OBSOLETE).exists());
        assert_eq!(pending(&dirs).unwrap().files, 0);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
