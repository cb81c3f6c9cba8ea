//! New generation ids for rewritten SSTables, in the folder's style, that collide with nothing.
//!
//! An integer generation is chosen above every generation-like name anywhere in the table's tree:
//! the table folder, its index folders, `snapshots/*/` and `backups/` (so that restoring a snapshot
//! cannot collide either), counting every file whatever its state or format: incomplete SSTables,
//! other versions, 2.x-style `<ks>-<cf>-[tmp-]<v>-<gen>-` names, temporary files. The listing fails
//! closed: a folder or entry that cannot be read fails the SSTable (nothing is written), because a
//! generation guessed from a partial listing may be a live SSTable's. Names are read as bytes, so a
//! name that is not UTF-8 is counted too. If a name still turns out to be taken when the file is
//! created (`O_EXCL`), the caller abandons that generation and asks again ([`Generations::taken`]).

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::sstable::{Descriptor, Generation};

/// Cassandra's integer generation is a Java `int` (3.0–4.0 `Descriptor.generation`, 4.1+
/// `SequenceBasedSSTableId`).
const MAX_INT_GENERATION: u64 = i32::MAX as u64;

/// Folders below a table folder worth descending: `.<index>/`, `snapshots/<tag>/[.<index>/]`,
/// `backups/[.<index>/]`. Deeper ones hold no SSTables.
const MAX_DEPTH: usize = 3;

/// The generation a file name carries, if it has one: a token of 1–10 digits right after a
/// version token (one or two lower-case letters) and followed by more of the name. Covers
/// `nb-5-big-Data.db`, `b-5-bti-…`, `ks-cf-ka-5-Data.db` and `ks-cf-tmp-ka-5-Data.db`.
/// Over-counting is harmless (a higher generation); missing one is not.
pub fn generation_in_name(name: &[u8]) -> Option<u64> {
    let tokens: Vec<&[u8]> = name.split(|&b| b == b'-').collect();
    let mut best = None;
    for w in tokens.windows(3) {
        let (v, g) = (w[0], w[1]);
        let version = (1..=2).contains(&v.len()) && v.iter().all(u8::is_ascii_lowercase);
        let digits = (1..=10).contains(&g.len()) && g.iter().all(u8::is_ascii_digit);
        if version && digits {
            let n: u64 = std::str::from_utf8(g).ok()?.parse().ok()?;
            best = best.max(Some(n));
        }
    }
    best
}

/// The highest generation named anywhere in a table's tree. Every listing error fails.
pub fn highest_in_tree(root: &Path) -> Result<u64> {
    let mut max = 0;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list folder", e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(&dir, "list folder", e))?;
            let name = e.file_name();
            if let Some(g) = generation_in_name(name.as_bytes()) {
                max = max.max(g);
            }
            if depth < MAX_DEPTH && is_folder(&e)? {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    Ok(max)
}

/// True for a folder, or a link to one (a symlinked `snapshots/` still holds names to avoid).
/// A dangling link names nothing below it. The listing's file type decides, except for links
/// (and file systems that do not report types), which are followed.
fn is_folder(e: &fs::DirEntry) -> Result<bool> {
    let p = &e.path();
    match e.file_type() {
        Ok(t) if t.is_dir() => return Ok(true),
        Ok(t) if t.is_file() => return Ok(false),
        _ => {}
    }
    match fs::metadata(p) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Gone, or a dangling link: its own name was counted; there is nothing below it.
            fs::symlink_metadata(p).map(|_| false).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(false)
                } else {
                    Err(Error::io(p, "stat", e))
                }
            })
        }
        Err(e) => Err(Error::io(p, "stat", e)),
    }
}

/// Hands out new generations, per folder, above every generation named anywhere in the folder's
/// table tree (listed once per table, and again whenever a name was taken). The table folder and
/// its index folders count from the same listing, so their new generations do not depend on which
/// SSTable was rewritten first.
pub struct Generations {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Highest generation named in each table tree, as last listed.
    highest: HashMap<PathBuf, u64>,
    /// Next generation to hand out in each folder.
    next: HashMap<PathBuf, u64>,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

impl Generations {
    pub fn new() -> Self {
        Generations {
            state: Mutex::new(State::default()),
        }
    }

    /// A new descriptor for `old` (in its folder) whose generation no file in the tree of
    /// `table_root` uses, nor any generation handed out before in that folder.
    pub fn allocate(&self, old: &Descriptor, table_root: &Path) -> Result<Descriptor> {
        match old.generation {
            Generation::Int(_) => {
                let mut st = self.state.lock().unwrap();
                let highest = match st.highest.get(table_root) {
                    Some(&h) => h,
                    None => {
                        let h = highest_in_tree(table_root)?;
                        st.highest.insert(table_root.to_path_buf(), h);
                        h
                    }
                };
                let n = st.next.get(&old.dir).copied().unwrap_or(0).max(highest + 1);
                if n > MAX_INT_GENERATION {
                    return Err(Error::unsupported(
                        &old.dir,
                        format!("a file in {} carries generation {}, the largest Cassandra allows: no integer generation is left above it", table_root.display(), n - 1),
                    ));
                }
                st.next.insert(old.dir.clone(), n + 1);
                Ok(old.with_generation(Generation::Int(n)))
            }
            Generation::Uuid(_) => Ok(old.with_generation(Generation::new_uuid_style()?)),
        }
    }

    /// A name in the tree of `table_root` was taken after it was listed: list it again before
    /// the next allocation (never going below what was already handed out).
    pub fn taken(&self, table_root: &Path) -> Result<()> {
        let again = highest_in_tree(table_root)?;
        let mut st = self.state.lock().unwrap();
        let h = st.highest.entry(table_root.to_path_buf()).or_insert(again);
        *h = (*h).max(again);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_in_names() {
        assert_eq!(generation_in_name(b"nb-5-big-Data.db"), Some(5));
        assert_eq!(generation_in_name(b"b-12-bti-Partitions.db"), Some(12));
        assert_eq!(generation_in_name(b"ks-cf-ka-7-Data.db"), Some(7));
        assert_eq!(generation_in_name(b"ks-cf-tmp-ka-9-Data.db"), Some(9));
        assert_eq!(
            generation_in_name(b"ma-2147483647-big-Index.db"),
            Some(2147483647)
        );
        assert_eq!(
            generation_in_name(b"nb-3g1m_0nuf_3vj5m2k1125165rxa7-big-Data.db"),
            None
        );
        assert_eq!(
            generation_in_name(b"nb_txn_upgradesstables_6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a.log"),
            None
        );
        assert_eq!(generation_in_name(b"nb-5"), None);
        assert_eq!(generation_in_name(b"nb-5-big-\xff\xfe.db"), Some(5));
        assert_eq!(generation_in_name(b"README"), None);
    }

    #[test]
    fn the_whole_tree_counts_and_a_failed_listing_fails() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t-0123456789abcdef0123456789abcdef");
        fs::create_dir_all(t.join("snapshots/s1/.idx")).unwrap();
        fs::create_dir_all(t.join(".idx")).unwrap();
        fs::write(t.join("nb-1-big-Data.db"), b"").unwrap();
        fs::write(t.join("nb-4-big-Index.db"), b"").unwrap(); // incomplete: counts
        fs::write(t.join(".idx/nb-6-big-Data.db"), b"").unwrap();
        fs::write(t.join("snapshots/s1/.idx/ma-9-big-Data.db"), b"").unwrap();
        assert_eq!(highest_in_tree(&t).unwrap(), 9);
        let g = Generations::new();
        let old = Descriptor::from_path(&t.join("nb-1-big-Data.db"))
            .unwrap()
            .0;
        assert_eq!(
            g.allocate(&old, &t).unwrap().generation,
            Generation::Int(10)
        );
        assert_eq!(
            g.allocate(&old, &t).unwrap().generation,
            Generation::Int(11)
        );
        // The index folder counts from the same listing, whatever was written meanwhile.
        fs::write(t.join("nb-10-big-Data.db"), b"").unwrap();
        let idx = Descriptor::from_path(&t.join(".idx/nb-6-big-Data.db"))
            .unwrap()
            .0;
        assert_eq!(
            g.allocate(&idx, &t).unwrap().generation,
            Generation::Int(10)
        );
        fs::write(t.join("nb-40-big-Data.db"), b"").unwrap();
        g.taken(&t).unwrap();
        assert_eq!(
            g.allocate(&idx, &t).unwrap().generation,
            Generation::Int(41)
        );
        assert_eq!(
            g.allocate(&old, &t).unwrap().generation,
            Generation::Int(41)
        );
        assert!(highest_in_tree(&d.path().join("missing")).is_err());
    }
}
