//! `verify`: decrypt every chunk of every selected SSTable and count chunks per key. The proof an
//! operator runs before destroying the old key: exit 1 names every SSTable with a chunk under a key
//! not given. Snapshots and backups are listed separately (never modified; they keep their keys).

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::crypto::AesKey;
use crate::error::{Error, Result};
use crate::keys::{KeyId, KeyRef, KeyStore};
use crate::rekey::find::{Location, Selection, Unseen};
use crate::rekey::node_config::DataDirs;
use crate::rekey::plan::{Load, Loaded};
use crate::rekey::report::BackupReport;
use crate::rekey::rewrite::{each_window, ChunkOpener, Framed};
use crate::rekey::scylla::commitlog::{LogDir, SegmentVerdict};
use crate::sstable::crc;
use crate::sstable::data::{parse_digest, read_at};
use crate::sstable::pages;

pub struct VerifyOptions {
    pub keys: Vec<KeyRef>,
    pub data_dirs: DataDirs,
    pub selection: Selection,
    pub deep: bool,
    /// ScyllaDB commit log and hints folders whose segments must not be under other keys
    /// (FORMAT.md 4.10); empty: none checked.
    pub log_dirs: Vec<LogDir>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SstableVerdict {
    pub table: String,
    pub location: Location,
    pub data: String,
    /// "ok", "other_keys" (chunks under a key not given), "failed" (corrupt, wrong key), "unencrypted".
    pub status: &'static str,
    pub chunks: usize,
    pub raw_chunks: usize,
    /// Chunks per key: decrypted and checked for the given keys, counted from headers for others.
    pub keys: BTreeMap<String, usize>,
    pub other_keys: Vec<String>,
    /// Encrypted Partitions.db/Rows.db pages per key (DSE 6.8+/HCD BTI).
    pub index_pages: BTreeMap<String, usize>,
    /// Encrypted Statistics.db components per key.
    pub metadata: BTreeMap<String, usize>,
    pub error: Option<String>,
    pub deep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub command: &'static str,
    pub version: &'static str,
    pub keys: Vec<String>,
    pub deep: bool,
    pub sstables: Vec<SstableVerdict>,
    pub ok: usize,
    pub under_other_keys: usize,
    pub failed: usize,
    pub unencrypted: usize,
    pub raw_chunks: usize,
    pub backups: Vec<BackupReport>,
    /// The data directories scanned and where they came from; a configured one left out
    /// (`missing`) means nothing is proven about it, so verification does not pass.
    pub data_dirs: DataDirs,
    pub notes: Vec<String>,
    /// Old files a `rekey --purge-later` moved aside, waiting for `purge` (not live: no verdict
    /// depends on them, but they are still data under the old keys).
    pub obsolete: Option<crate::rekey::obsolete::Obsolete>,
    /// The ScyllaDB commit log and hints folders checked, and where they come from.
    pub commitlog_dirs: Vec<LogDir>,
    /// Every segment of those folders: a segment under a key not given ("other_key") still needs
    /// that key until ScyllaDB replays it; one that could not be told ("failed") fails too.
    pub commitlog: Vec<SegmentVerdict>,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.under_other_keys == 0
            && self.failed == 0
            && self.data_dirs.missing.is_empty()
            && self
                .commitlog
                .iter()
                .all(|s| matches!(s.status, "ok" | "unencrypted"))
            && crate::rekey::report::unreadable(&self.backups)
                .next()
                .is_none()
    }
}

impl SstableVerdict {
    /// A verdict still "ok", with nothing counted yet.
    fn new(table: String, location: Location, data: String, deep: bool) -> Self {
        SstableVerdict {
            table,
            location,
            data,
            status: "ok",
            chunks: 0,
            raw_chunks: 0,
            keys: BTreeMap::new(),
            other_keys: Vec::new(),
            index_pages: BTreeMap::new(),
            metadata: BTreeMap::new(),
            error: None,
            deep,
        }
    }

    /// Something that could hold SSTables but was not read as part of a table: failed.
    fn unseen(u: &Unseen, deep: bool) -> Self {
        let mut v = Self::new(
            u.table.clone(),
            u.location.clone(),
            u.path.display().to_string(),
            deep,
        );
        v.status = "failed";
        v.error = Some(u.why.clone());
        v
    }
}

/// Says what waits in the obsolete folders (old files of staged commits, until `purge`).
fn obsolete_note(data_dirs: &[std::path::PathBuf], rep: &mut VerifyReport) {
    match crate::rekey::obsolete::pending(data_dirs) {
        Ok(o) if o.folders.is_empty() => {}
        Ok(o) => {
            rep.notes.push(format!(
                "{} old files ({} bytes) that staged commits replaced wait in {}: not live, but still under the old keys; `sstable-rekey purge` deletes them (safe while the node serves)",
                o.files,
                o.bytes,
                o.folders.join(", ")
            ));
            rep.obsolete = Some(o);
        }
        Err(e) => rep
            .notes
            .push(format!("the obsolete folders could not be read: {e}")),
    }
}

pub fn verify(opts: &VerifyOptions, store: &KeyStore, cancel: &AtomicBool) -> Result<VerifyReport> {
    let t0 = Instant::now();
    let allowed: Vec<KeyId> = opts.keys.iter().map(KeyRef::id).collect::<Result<_>>()?;
    let fallback = crate::rekey::discover::fallback_file(&opts.keys)?;
    // Never while a rekey or recover works on the folders (their logs would look interrupted).
    let _lock = crate::rekey::exclusive::lock_data_dirs_shared(&opts.data_dirs.dirs)?;
    crate::rekey::exclusive::refuse_symlinks(&opts.data_dirs.dirs)?;
    let found =
        crate::rekey::discover::discover(&opts.data_dirs.dirs, &opts.selection, fallback.as_ref())?;
    let mut rep = VerifyReport {
        command: "verify",
        version: env!("CARGO_PKG_VERSION"),
        keys: opts.keys.iter().map(|k| k.to_string()).collect(),
        deep: opts.deep,
        sstables: Vec::new(),
        ok: 0,
        under_other_keys: 0,
        failed: 0,
        unencrypted: 0,
        raw_chunks: 0,
        backups: crate::rekey::discover::backup_reports(&found.backups),
        data_dirs: opts.data_dirs.clone(),
        notes: found.notes,
        obsolete: None,
        commitlog_dirs: opts.log_dirs.clone(),
        commitlog: Vec::new(),
        seconds: 0.0,
    };
    obsolete_note(&opts.data_dirs.dirs, &mut rep);
    for u in &found.unseen {
        rep.sstables.push(SstableVerdict::unseen(u, opts.deep));
        rep.failed += 1;
    }
    let scylla_seen = found
        .live
        .iter()
        .any(|(_, l)| matches!(l, Ok(Load::Scylla(_))));
    for (found, load) in found.live {
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let mut v = SstableVerdict::new(
            found.table.qualified(),
            found.location.clone(),
            found.desc.data_path().display().to_string(),
            opts.deep,
        );
        match load {
            Ok(Load::Unencrypted { class }) => {
                v.status = "unencrypted";
                v.error = Some(format!("not encrypted ({class})"));
            }
            Err(e) if e.is_config() => return Err(e),
            Err(e) => {
                v.status = "failed";
                v.error = Some(e.to_string());
            }
            Ok(Load::Scylla(s)) => verify_scylla(&s, &allowed, store, &mut v)?,
            Ok(Load::Encrypted(l)) => {
                v.chunks = l.chunks.len();
                v.raw_chunks = l.raw_chunks();
                v.keys = l.key_counts();
                v.index_pages = l.page_key_counts();
                v.metadata = l.metadata_key_counts();
                // Material for the given keys this SSTable uses; a missing one is a config error.
                let mut keys: Vec<Option<Arc<AesKey>>> = Vec::new();
                for id in &l.keys {
                    if allowed.contains(id) {
                        keys.push(Some(store.get(id, &l.envelope.cipher)?));
                    } else {
                        keys.push(None);
                        v.other_keys.push(id.to_string());
                    }
                }
                if let Err(e) =
                    check_chunks(&l, &keys, opts.deep).and_then(|()| check_indexes(&l, &keys))
                {
                    v.status = "failed";
                    v.error = Some(e.to_string());
                } else if !v.other_keys.is_empty() {
                    v.status = "other_keys";
                }
            }
        }
        match v.status {
            "ok" => rep.ok += 1,
            "other_keys" => rep.under_other_keys += 1,
            "unencrypted" => rep.unencrypted += 1,
            _ => rep.failed += 1,
        }
        rep.raw_chunks += v.raw_chunks;
        rep.sstables.push(v);
    }
    rep.commitlog =
        crate::rekey::scylla::commitlog::scan(&opts.log_dirs, &allowed, fallback.as_ref());
    if scylla_seen && opts.log_dirs.is_empty() {
        rep.notes.push("note: ScyllaDB SSTables, but no commit log or hints folder checked: their segments may still need an old key (FORMAT.md 4.10). Give --scylla-yaml, or --commitlog-dir and --hints-dir".into());
    }
    rep.seconds = t0.elapsed().as_secs_f64();
    Ok(rep)
}

/// A ScyllaDB SSTable: under a given key, every encrypted component decrypted and checked
/// (FORMAT.md 4.8); else counted under the key it names. A key that cannot be had is a
/// configuration error (exit 2), as for DSE SSTables.
fn verify_scylla(
    s: &crate::rekey::scylla::ScyllaLoaded,
    allowed: &[KeyId],
    store: &KeyStore,
    v: &mut SstableVerdict,
) -> Result<()> {
    let key = s.key.to_string();
    let components = s.files.len() - 1;
    v.metadata = BTreeMap::from([(key.clone(), components)]);
    v.metadata.retain(|_, n| *n > 0);
    if !allowed.contains(&s.key) {
        v.keys = BTreeMap::from([(key.clone(), 1)]);
        v.other_keys.push(key);
        v.status = "other_keys";
        return Ok(());
    }
    let cipher = s.file_cipher(store)?;
    match crate::rekey::scylla::check::check(s, &cipher) {
        Ok(c) => {
            v.chunks = c.records;
            v.keys = BTreeMap::from([(key, c.records)]);
        }
        Err(e) => {
            v.status = "failed";
            v.error = Some(e.to_string());
        }
    }
    Ok(())
}

/// Checks every chunk's CRC, decrypts those under given keys and checks their structure (and
/// with `deep`, decompresses them), and compares Digest.crc32 with the whole file. Read through
/// the rewrite's window engine, chunks opened the way the rewrite opens them.
fn check_chunks(l: &Loaded, keys: &[Option<Arc<AesKey>>], deep: bool) -> Result<()> {
    let path = l.found.desc.data_path();
    let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    let spans = l.data_spans(&l.ci.offsets, &l.chunk_lens());
    let key_names: Vec<String> = l.keys.iter().map(|k| k.to_string()).collect();
    let opener = ChunkOpener::of(l, &path, &key_names);
    let windows = each_window(&f, &path, &spans, &|| false, &|first, w, input, ws| {
        let base = w[0].in_off;
        // The window's plaintext accumulates in one arena, reserved up front (no reallocation
        // leaves a copy behind) and wiped whole after the window.
        ws.plain.reserve(input.len());
        for (k, s) in w.iter().enumerate() {
            let i = first + k;
            let a = (s.in_off - base) as usize;
            let Framed::Sealed { key: ki, opened } =
                opener.frame(i, &input[a..a + s.in_len as usize])?
            else {
                continue; // stored in plaintext: its CRC checked
            };
            let Some(key) = &keys[ki as usize] else {
                continue; // under a key not given: counted, not decryptable here
            };
            let p = opener.decrypt(i, ki, &opened, key, &mut ws.plain)?;
            if deep {
                l.envelope
                    .decompress(&ws.plain[p], l.ci.plain_len(i))
                    .map_err(|m| Error::corrupt(&path, format!("chunk {i}: {m}")))?;
            }
        }
        Ok((crc32fast::hash(input), input.len() as u64))
    })?;
    let crc = windows
        .into_iter()
        .fold(0, |crc, (w, len)| crc::combine(crc, w, len));
    // Trailing bytes after the last chunk's CRC belong to no chunk but are part of the file.
    let end = spans
        .last()
        .map(|s| s.in_off + s.in_len as u64)
        .unwrap_or(0);
    if end != l.data_len {
        return Err(Error::corrupt(
            &path,
            format!("{} bytes after the last chunk", l.data_len - end),
        ));
    }
    if l.found.present.iter().any(|c| c == "Digest.crc32") {
        let dp = l.found.desc.path("Digest.crc32");
        let text = crate::util::read_small(&dp, 64)?;
        let want = parse_digest(&String::from_utf8_lossy(&text), &dp)?;
        let got = crc;
        if want != got {
            return Err(Error::corrupt(
                &dp,
                format!("says CRC32 {want}, Data.db has {got}"),
            ));
        }
    }
    Ok(())
}

/// Decrypts every index page and metadata component under a given key (FORMAT.md 2.6).
fn check_indexes(l: &Loaded, keys: &[Option<Arc<AesKey>>]) -> Result<()> {
    let env = &l.envelope;
    let open = |path: &std::path::Path, what: String, key: u32, blob: &[u8]| -> Result<usize> {
        let Some(k) = &keys[key as usize] else {
            return Ok(0);
        };
        let opened = env
            .open_record(None, blob)
            .map_err(|m| Error::corrupt(path, format!("{what}: {m}")))?;
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        k.decrypt_append(env.cipher.mode, opened.iv, opened.ciphertext, &mut plain)
            .map_err(|e| Error::WrongKey {
                path: path.to_path_buf(),
                what: what.clone(),
                key: l.keys[key as usize].to_string(),
                msg: e.to_string(),
            })?;
        Ok(plain.len())
    };
    let cap = pages::max_bytes_in_page(env.provider.header_bound(), env.cipher.iv_len);
    for pf in &l.paged {
        let path = l.found.desc.path(&pf.component);
        let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let mut page = vec![0u8; pages::PAGE];
        for (i, meta) in pf.pages.iter().enumerate() {
            read_at(&f, &path, (i * pages::PAGE) as u64, &mut page)?;
            let blob = pages::open_page(&page, i, &path)?;
            let n = open(&path, format!("page {i}"), meta.key, blob)?;
            if n > cap {
                return Err(Error::corrupt(
                    &path,
                    format!("page {i}: {n} plain bytes, more than a page holds ({cap})"),
                ));
            }
        }
    }
    for c in l.statistics.iter().flatten() {
        let path = l.found.desc.path("Statistics.db");
        open(&path, format!("component {}", c.kind), c.key, &c.body)?;
    }
    Ok(())
}
