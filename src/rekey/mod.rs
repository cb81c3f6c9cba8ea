//! The rekey pipeline: [`find`] → [`plan`] → [`rewrite`] → [`commit`] → [`report`], plus
//! [`verify`] (the proof before destroying a key) and [`inspect`].

pub mod admit;
pub mod commit;
pub mod exclusive;
pub mod failpoint;
pub mod find;
pub mod generation;
pub mod inspect;
pub mod node_config;
pub mod plan;
pub mod report;
pub mod rewrite;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::crypto::{AesKey, Envelope};
use crate::error::{Error, Result};
use crate::fsio::sync_dir;
use crate::fsio::{free_space, Created};
use crate::keys::{KeyId, KeyRef, KeyStore};
use crate::sstable::data::format_digest;
use crate::sstable::Descriptor;
use report::human_bytes;

use crate::sstable::pages::PAGE;
use find::{Found, Selection};
use generation::Generations;
use plan::{Load, Loaded, Target};
use report::{BackupReport, RekeyReport, SstableReport, Status};
use rewrite::{DataChunks, IndexPages, Rekeying, Span};

pub struct RekeyOptions {
    pub to: KeyRef,
    pub from: Vec<KeyRef>,
    pub data_dirs: node_config::DataDirs,
    pub selection: Selection,
    pub jobs: usize,
    pub dry_run: bool,
    /// A KMIP configuration confirmed the `--to` group (see [`admit::kmip_group_move`]).
    pub kmip_configured: bool,
    /// `--move-kmip-group`: tables may move to the `--to` group from another one (or from a
    /// local key file) without a KMIP configuration confirming it.
    pub move_kmip_group: bool,
}

/// An SSTable with everything resolved: ready to rewrite.
struct Job {
    loaded: Box<Loaded>,
    report: SstableReport,
    keys: Vec<Option<Arc<AesKey>>>,
    target_key: Arc<AesKey>,
    target_idx: Option<u32>,
    new_lens: Vec<u32>,
    new_offsets: Vec<u64>,
}

/// The single `file:` key among `--from`/`--key`: the key of header-less chunks of a table that
/// names no `secret_key_file`.
pub fn fallback_file(refs: &[KeyRef]) -> Option<KeyId> {
    let files: Vec<&KeyRef> = refs
        .iter()
        .filter(|r| matches!(r, KeyRef::File(_)))
        .collect();
    (files.len() == 1).then(|| files[0].id())
}

/// SSTables with what loading them found.
pub type Discovered = Vec<(Found, Result<Load>)>;

/// What [`discover`] found: live SSTables and snapshot/backup ones, loaded; what could hold
/// SSTables but could not be read as part of a table (to report as failed); notes for the operator.
pub struct Discovery {
    pub live: Discovered,
    pub backups: Discovered,
    pub unseen: Vec<find::Unseen>,
    pub notes: Vec<String>,
}

/// Loads every SSTable of the selection, split into live ones and snapshots/backups.
pub fn discover(
    data_dirs: &[PathBuf],
    sel: &Selection,
    fallback: Option<&KeyId>,
) -> Result<Discovery> {
    let scan = find::tables(data_dirs, sel)?;
    if scan.tables.is_empty() && scan.unseen.is_empty() {
        return Err(Error::Usage(format!(
            "no table folders match{} in {}",
            match (&sel.keyspace, sel.tables.is_empty()) {
                (None, _) => String::new(),
                (Some(k), true) => format!(" keyspace {k}"),
                (Some(k), false) => format!(" {k}.{{{}}}", sel.tables.join(",")),
            },
            data_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (mut unseen, mut notes) = (scan.unseen, scan.notes);
    let mut found = Vec::new();
    for t in &scan.tables {
        let logs = find::leftover_logs(t)?;
        if !logs.is_empty() {
            return Err(Error::Usage(format!(
                "{} has unfinished transaction logs ({}): a compaction or rekey was interrupted. Run `sstable-rekey recover` (with Cassandra stopped) first",
                t.qualified(),
                logs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let c = find::sstables_of(t)?;
        found.extend(c.found);
        unseen.extend(c.unseen);
        notes.extend(c.notes);
    }
    // Loading reads every chunk header: in parallel across SSTables (many small SSTables plan
    // as fast per byte as one large one). Order is kept.
    let loaded: Vec<(Found, Result<Load>)> = {
        use rayon::prelude::*;
        found
            .into_par_iter()
            .map(|f| {
                let l = plan::load(&f, fallback);
                (f, l)
            })
            .collect()
    };
    let (live, backups) = loaded.into_iter().partition(|(f, _)| f.location.is_live());
    Ok(Discovery {
        live,
        backups,
        unseen,
        notes,
    })
}

/// The one `secret_key_strength` of the selected encrypted SSTables (for `kmip://GROUP/active`).
pub fn selection_key_bits(dirs: &[PathBuf], sel: &Selection) -> Result<u32> {
    let live = discover(dirs, sel, None)?.live;
    let bits: BTreeSet<u32> = live
        .iter()
        .filter_map(|(_, l)| match l {
            Ok(plan::Load::Encrypted(l)) => Some(l.envelope.cipher.key_bits),
            _ => None,
        })
        .collect();
    match bits.len() {
        1 => Ok(*bits.first().expect("one")),
        0 => Err(Error::Usage(
            "kmip://GROUP/active: no encrypted SSTable in the selection to take the key strength from".into(),
        )),
        _ => Err(Error::Usage(format!(
            "kmip://GROUP/active: the selected tables use {} bit keys; rekey one strength at a time (KEYSPACE TABLE...) or name the key",
            bits.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" and ")
        ))),
    }
}

/// What a rekey tells its caller as it goes. The library prints nothing: the front end shows
/// this (a bar, or a line per SSTable), or nothing ([`Silent`]).
pub trait Progress: Sync {
    /// The rewrite starts: `sstables` SSTables holding `bytes` of Data.db.
    fn start(&self, _bytes: u64, _sstables: usize) {}
    /// `bytes` more of Data.db rewritten.
    fn advance(&self, _bytes: u64) {}
    /// One SSTable is done (rekeyed, or failed and rolled back).
    fn finished(&self, _r: &SstableReport) {}
    /// The rewrite is over.
    fn end(&self) {}
}

/// No progress shown.
pub struct Silent;

impl Progress for Silent {}

/// Runs a rekey. Returns `Err` only for errors before any work (configuration, keys, space):
/// per-SSTable failures are in the report.
pub fn rekey(
    opts: &RekeyOptions,
    store: &KeyStore,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> Result<RekeyReport> {
    let started = Instant::now();
    admit::refs(&opts.to, &opts.from)?;
    let target = Target::new(&opts.to)?;
    let from_ids: Vec<KeyId> = opts.from.iter().map(KeyRef::id).collect();
    let fallback = fallback_file(&opts.from);
    let _locks = if opts.dry_run {
        None
    } else {
        Some(exclusive::ensure_alone(&opts.data_dirs.dirs)?)
    };
    let found = discover(&opts.data_dirs.dirs, &opts.selection, fallback.as_ref())?;

    let mut report = RekeyReport {
        command: "rekey",
        version: env!("CARGO_PKG_VERSION"),
        to: opts.to.to_string(),
        from: opts.from.iter().map(|r| r.to_string()).collect(),
        dry_run: opts.dry_run,
        kernel: crate::crypto::cipher::cbc_kernel(),
        sstables: Vec::new(),
        totals: Default::default(),
        alter_table: Vec::new(),
        backups: BackupReport::list(&found.backups),
        data_dirs: opts.data_dirs.clone(),
        notes: found.notes,
    };
    report
        .sstables
        .extend(found.unseen.iter().map(SstableReport::unseen));

    // Plan: decide per SSTable, resolve every key before writing anything.
    let mut jobs: Vec<Job> = Vec::new();
    let mut key_errors: Vec<String> = Vec::new();
    let mut group_moves = 0;
    // Evidence per old key, gathered across every SSTable of the run (see KEY_EVIDENCE_BITS).
    let mut evidence: HashMap<KeyId, u32> = HashMap::new();
    for (found, load) in found.live {
        let mut r = SstableReport::new(
            found.table.qualified(),
            found.location.clone(),
            &found.desc.data_path(),
        );
        let loaded = match load {
            Ok(Load::Encrypted(l)) => l,
            Ok(Load::Unencrypted { class }) => {
                r.reason = Some(format!("not encrypted ({class})"));
                report.sstables.push(r);
                continue;
            }
            Err(e) if e.is_config() => {
                key_errors.push(e.to_string());
                continue;
            }
            Err(e) => {
                r.fail(&e);
                report.sstables.push(r);
                continue;
            }
        };
        r.chunks = loaded.chunks.len();
        r.raw_chunks = loaded.raw_chunks();
        r.keys_before = loaded.key_counts();
        r.index_pages_before = loaded.page_key_counts();
        r.metadata_before = loaded.metadata_key_counts();
        let target_idx = loaded.key_index(&target.id);
        if loaded.record_keys().all(|k| Some(k) == target_idx) {
            r.reason = Some(if loaded.record_keys().next().is_none() {
                format!(
                    "no encrypted chunks: all {} chunks are stored in plaintext",
                    r.raw_chunks
                )
            } else {
                format!("already under {}", target.id)
            });
            r.keys_after = r.keys_before.clone();
            r.index_pages_after = r.index_pages_before.clone();
            r.metadata_after = r.metadata_before.clone();
            report.sstables.push(r);
            continue;
        }
        if loaded.indexes_encrypted() && target.provider != loaded.envelope.provider {
            // Readers size index pages by the provider's header bound (FORMAT.md 2.6).
            let e = Error::unsupported(
                found.desc.data_path(),
                format!(
                    "its index pages hold at most {} plaintext bytes each under a {} key, {} under a {} key: readers locate the index footer by that capacity, so these SSTables cannot move between provider types. Rekey to another {} key, or rewrite them with nodetool upgradesstables",
                    crate::sstable::pages::max_bytes_in_page(loaded.envelope.provider.header_bound(), loaded.envelope.cipher.iv_len),
                    loaded.envelope.provider.factory_name(),
                    crate::sstable::pages::max_bytes_in_page(target.provider.header_bound(), loaded.envelope.cipher.iv_len),
                    target.provider.factory_name(),
                    loaded.envelope.provider.factory_name(),
                ),
            );
            r.fail(&e);
            report.sstables.push(r);
            continue;
        }
        if !from_ids.is_empty() && !loaded.keys.iter().any(|k| from_ids.contains(k)) {
            r.reason = Some("not under any --from key".into());
            report.sstables.push(r);
            continue;
        }
        if let Some(m) =
            admit::kmip_group_move(&loaded, &target, opts.kmip_configured, opts.move_kmip_group)
        {
            key_errors.push(m);
            group_moves += 1;
            continue;
        }
        let cipher = &loaded.envelope.cipher;
        let mut keys = Vec::with_capacity(loaded.keys.len());
        let mut ok = true;
        for (i, id) in loaded.keys.iter().enumerate() {
            if Some(i as u32) == target_idx {
                keys.push(None);
                continue;
            }
            match store.get(id, cipher) {
                Ok(k) => keys.push(Some(k)),
                Err(e) => {
                    key_errors.push(format!("{}: {e}", found.desc.data_path().display()));
                    ok = false;
                }
            }
        }
        let target_key = match store.get(&target.id, cipher) {
            Ok(k) => Some(k),
            Err(e) => {
                key_errors.push(format!(
                    "{}: target key: {e}",
                    found.desc.data_path().display()
                ));
                None
            }
        };
        let (Some(target_key), true) = (target_key, ok) else {
            continue;
        };
        let same = admit::same_material(store, &loaded, &target, target_idx, opts.move_kmip_group);
        if !same.is_empty() {
            key_errors.extend(same);
            continue;
        }
        // A wrong old key fails here, on one chunk per key, before anything is written.
        match trial_decrypt(&loaded, &keys, target_idx, &evidence) {
            Ok(bits) => {
                for (k, b) in bits.into_iter().enumerate() {
                    *evidence.entry(loaded.keys[k].clone()).or_default() += b;
                }
            }
            Err(e) => {
                r.fail(&e);
                report.sstables.push(r);
                continue;
            }
        }
        match plan::new_layout(&loaded, &target, target_idx) {
            Ok((new_lens, new_offsets)) => jobs.push(Job {
                loaded,
                report: r,
                keys,
                target_key,
                target_idx,
                new_lens,
                new_offsets,
            }),
            Err(e) => {
                r.fail(&e);
                report.sstables.push(r);
            }
        }
    }
    if group_moves > 0 {
        if let KeyRef::Kmip { group, .. } = &opts.to {
            key_errors.push(admit::kmip_group_move_advice(group));
        }
    }
    if !key_errors.is_empty() {
        key_errors.dedup();
        return Err(Error::Key(format!(
            "nothing was written; resolve these key problems first:\n  {}",
            key_errors.join("\n  ")
        )));
    }
    admit::owners(jobs.iter().map(|j| &j.loaded.found), &target)?;
    // An old key whose chunks all together give too little evidence is not trusted with data.
    let (confirmed, weak): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        let l = &j.loaded;
        l.chunks.iter().all(|c| {
            c.key == plan::RAW
                || Some(c.key) == j.target_idx
                || evidence.get(&l.keys[c.key as usize]).copied().unwrap_or(0) >= KEY_EVIDENCE_BITS
        })
    });
    jobs = confirmed;
    for mut j in weak {
        let e = Error::WrongKey {
            path: j.loaded.found.desc.data_path(),
            what: "its chunks".into(),
            key: j.loaded.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "),
            msg: format!(
                "they decrypt, but give fewer than {KEY_EVIDENCE_BITS} bits of evidence that the key is right (short chunks with little padding); refusing rather than risk rewriting garbage. Rekey this table together with larger SSTables under the same key"
            ),
        };
        j.report.fail(&e);
        report.sstables.push(j.report);
    }

    // Free space: the largest `jobs` SSTables in flight at once, per filesystem.
    let jobs_n = opts.jobs.max(1);
    let mut per_fs: HashMap<u64, (u64, Vec<u64>, PathBuf)> = HashMap::new();
    for j in &jobs {
        let (free, fsid) = free_space(&j.loaded.found.desc.dir)?;
        let e = per_fs
            .entry(fsid)
            .or_insert((free, Vec::new(), j.loaded.found.desc.dir.clone()));
        e.1.push(plan::sum_new_len(&j.new_lens) + (1 << 20));
    }
    for (free, mut sizes, dir) in per_fs.into_values() {
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let need: u64 = sizes.iter().take(jobs_n).sum();
        if need > free {
            return Err(Error::Usage(format!(
                "not enough free space on the filesystem of {}: {} needed for {} SSTable(s) in flight, {} free. Free some space or lower --jobs",
                dir.display(),
                human_bytes(need),
                jobs_n.min(sizes.len()),
                human_bytes(free)
            )));
        }
    }

    if opts.dry_run {
        for mut j in jobs {
            j.report.status = Status::Planned;
            j.report.reason = Some(format!("would rekey to {}", target.id));
            report.sstables.push(j.report);
        }
        report.totals.seconds = started.elapsed().as_secs_f64();
        report.compute_totals();
        return Ok(report);
    }

    // The statement each table will need, from its SSTables' options (one per table).
    let mut statements: HashMap<String, String> = HashMap::new();
    for j in jobs
        .iter()
        .filter(|j| j.loaded.found.location == find::Location::Live)
    {
        if let Some(stmt) = alter_statement(&j.report.table, &j.loaded.ci, &target) {
            statements.entry(j.report.table.clone()).or_insert(stmt);
        }
    }

    // Rewrite and commit, `jobs` SSTables at a time, largest first.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.loaded.data_len));
    let total_bytes: u64 = jobs.iter().map(|j| j.loaded.data_len).sum();
    progress.start(total_bytes, jobs.len());
    let gens = Generations::new();
    let queue = Mutex::new(jobs.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs_n {
            s.spawn(|| loop {
                if cancel.load(Ordering::SeqCst) {
                    break; // Ctrl-C: start nothing new
                }
                let next = queue.lock().unwrap().next();
                let Some(job) = next else { break };
                let r = run_job(job, &target, &gens, progress, cancel);
                progress.finished(&r);
                results.lock().unwrap().push(r);
            });
        }
    });
    progress.end();
    let mut done = results.into_inner().unwrap();
    // Interrupted: the SSTables never started are part of the summary too.
    for j in queue.into_inner().unwrap() {
        let mut r = j.report;
        r.status = Status::NotStarted;
        r.reason = Some(format!(
            "not started: the run was interrupted; it is still under {}. Run the same rekey again",
            r.keys_before.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        done.push(r);
    }
    done.sort_by(|a, b| a.old.cmp(&b.old));

    let mut alter: BTreeMap<String, String> = BTreeMap::new();
    for r in &done {
        if r.status == Status::Rekeyed && r.location == find::Location::Live {
            if let Some(stmt) = statements.get(&r.table) {
                alter.insert(r.table.clone(), stmt.clone());
            }
        }
    }
    report.sstables.extend(done);
    report.alter_table = alter.into_values().collect();
    report.totals.seconds = started.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// Bits of evidence a wrong key must beat before an old key is trusted with data. A wrong key
/// passes a PKCS#5 check of p padding bytes with probability ~2^-8p, and the chained classes add a
/// 32-bit inner length prefix (and LZ4 another). A short Encryptor chunk with one padding byte is
/// only 8 bits: alone it lets one wrong key in 256 through, and the rewrite would turn the data
/// into garbage. Evidence adds up over every chunk, and every SSTable, under the same key in a
/// run; 32 bits (a wrong key accepted once in ~4 billion) refuses only lone tiny Encryptor
/// SSTables whose one chunk has under four padding bytes.
pub const KEY_EVIDENCE_BITS: u32 = 32;

/// Decrypts and checks chunks under each old key of an SSTable until that key has
/// [`KEY_EVIDENCE_BITS`] bits of evidence (or the chunks run out), and a suspicious last chunk
/// (FORMAT.md 2.5). Returns the evidence gathered per key index. A failing chunk is a wrong key.
fn trial_decrypt(
    l: &Loaded,
    keys: &[Option<Arc<AesKey>>],
    target_idx: Option<u32>,
    known: &HashMap<KeyId, u32>,
) -> Result<Vec<u32>> {
    let path = l.found.desc.data_path();
    let f = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
    let mut bits = vec![0u32; l.keys.len()];
    let structure_bits = match l.envelope.class {
        crate::crypto::ChunkClass::Encryptor => 0,
        crate::crypto::ChunkClass::Chained(crate::crypto::envelope::Stage::Lz4) => 64,
        crate::crypto::ChunkClass::Chained(_) => 32,
    };
    let last = l.chunks.len() - 1;
    let suspicious_last = l.chunks[last].key != plan::RAW
        && !plan::raw_last_chunk_hint(&l.ci, last, l.chunks[last].len as u64).is_empty();
    for (i, c) in l.chunks.iter().enumerate() {
        if c.key == plan::RAW || Some(c.key) == target_idx {
            continue;
        }
        let k = c.key as usize;
        let enough = bits[k] + known.get(&l.keys[k]).copied().unwrap_or(0) >= KEY_EVIDENCE_BITS;
        if enough && !(suspicious_last && i == last) {
            continue;
        }
        let Some(key) = keys[k].as_ref() else {
            continue;
        };
        let mut framed = vec![0u8; c.len as usize + 4];
        crate::sstable::data::read_at(&f, &path, l.ci.offsets[i], &mut framed)?;
        let chunk = crate::sstable::data::checked_chunk(&framed, i, &path)?;
        let payload =
            rewrite::open_and_check(&l.envelope, chunk, l.ci.plain_len(i), key).map_err(|msg| {
                Error::WrongKey {
                    path: path.clone(),
                    what: format!("chunk {i}"),
                    key: l.keys[k].to_string(),
                    msg: format!("{msg}{}", plan::raw_last_chunk_hint(&l.ci, i, c.len as u64)),
                }
            })?;
        let pad = 16 - (payload.len() % 16) as u32;
        bits[k] += 8 * pad + structure_bits;
    }
    Ok(bits)
}

/// `ALTER TABLE` making new writes use the new key: the table's compression options as the new
/// CompressionInfo has them (computed, never read back from disk, so a failing read cannot drop a
/// statement the procedure needs).
fn alter_statement(
    table: &str,
    old_ci: &crate::sstable::CompressionInfo,
    target: &Target,
) -> Option<String> {
    let mut ci = old_ci.clone();
    target.rewrite_options(&mut ci);
    let mut m: Vec<(String, String)> = vec![
        ("class".into(), ci.class.clone()),
        (
            "chunk_length_in_kb".into(),
            (ci.chunk_length / 1024).to_string(),
        ),
    ];
    if let Some(max) = ci.max_compressed_length.filter(|&m| m != i32::MAX) {
        m.push((
            "min_compress_ratio".into(),
            format!("{:.3}", ci.chunk_length as f64 / max as f64),
        ));
    }
    m.extend(ci.options.iter().cloned());
    let (ks, table) = table.split_once('.')?;
    let body: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("'{}': '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
        .collect();
    Some(format!(
        "ALTER TABLE \"{ks}\".\"{table}\" WITH compression = {{{}}};",
        body.join(", ")
    ))
}

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
        }
        Err(e) => r.fail(&e),
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r
}

/// Tries a generation a few times: a name found taken at creation is abandoned for the next one.
const GENERATION_ATTEMPTS: usize = 4;

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
) -> Result<(PathBuf, rewrite::Counts, u64)> {
    let l = &job.loaded;
    let old = &l.found.desc;
    let new_size = plan::sum_new_len(&job.new_lens);
    let (free, _) = free_space(&old.dir)?;
    if free < new_size + (1 << 20) {
        return Err(Error::io(
            &old.dir,
            "check free space",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    let mut attempt = 1;
    loop {
        let new = gens.allocate(old, &l.found.table.dir)?;
        let mut txn =
            commit::Transaction::begin(old, &l.found.present, &new, l.found.present.len())?;
        let written = write_new(job, target, &new, txn.created(), progress, cancel);
        let e = match written {
            Ok((counts, bytes)) => {
                if cancel.load(Ordering::SeqCst) {
                    txn.rollback()?;
                    return Err(Error::Interrupted);
                }
                txn.commit()?;
                return Ok((new.data_path(), counts, bytes));
            }
            Err(e) => e,
        };
        if let Err(e2) = txn.rollback() {
            return Err(Error::Usage(format!(
                "{e}; and rolling back failed too: {e2}. Run `sstable-rekey recover` before starting Cassandra"
            )));
        }
        if !e.is_name_taken() || attempt == GENERATION_ATTEMPTS {
            return Err(e);
        }
        gens.taken(&l.found.table.dir)?;
        attempt += 1;
    }
}

fn write_new(
    job: &Job,
    target: &Target,
    new: &Descriptor,
    created: &mut Created,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(rewrite::Counts, u64)> {
    let l = &job.loaded;
    let old = &l.found.desc;
    let src_path = old.data_path();
    let src = File::open(&src_path).map_err(|e| Error::io(&src_path, "open", e))?;
    let src_meta = src
        .metadata()
        .map_err(|e| Error::io(&src_path, "stat", e))?;
    if src_meta.len() != l.data_len {
        return Err(Error::corrupt(
            &src_path,
            "changed size since it was planned",
        ));
    }
    let dst_path = new.data_path();
    let dst = created.create_like(&dst_path, &src_path, &src_meta)?;
    let new_size = plan::sum_new_len(&job.new_lens);
    dst.set_len(new_size)
        .map_err(|e| Error::io(&dst_path, "allocate", e))?;

    let spans: Vec<Span> = (0..l.chunks.len())
        .map(|i| Span {
            in_off: l.ci.offsets[i],
            in_len: l.chunks[i].len + 4,
            out_off: job.new_offsets[i],
            out_len: job.new_lens[i] + 4,
        })
        .collect();
    let new_env = Envelope {
        provider: target.provider,
        ..l.envelope.clone()
    };
    let key_names: Vec<String> = l.keys.iter().map(|k| k.to_string()).collect();
    let ci = &l.ci;
    let plain_len = |i: usize| ci.plain_len(i);
    let rk = || Rekeying {
        old: &l.envelope,
        new: &new_env,
        keys: &job.keys,
        key_names: &key_names,
        target_idx: job.target_idx,
        target_key: &job.target_key,
        target_header: &target.header,
    };
    let layout = DataChunks {
        path: &src_path,
        chunks: &l.chunks,
        plain_len: &plain_len,
        rk: rk(),
    };
    let files = rewrite::Files {
        src: &src,
        src_path: &src_path,
        dst: &dst,
        dst_path: &dst_path,
    };
    let (crc, counts) =
        rewrite::rewrite_file(&files, &spans, &layout, &|n| progress.advance(n), &|| {
            cancel.load(Ordering::SeqCst)
        })?;
    failpoint::hit("data.written")?;
    // An fsync error is fatal for this SSTable: never retried (the page cache may have dropped it).
    dst.sync_all()
        .map_err(|e| Error::io(&dst_path, "fsync", e))?;
    failpoint::hit("data.fsynced")?;

    let mut new_ci = l.ci.clone();
    target.rewrite_options(&mut new_ci);
    new_ci.offsets = job.new_offsets.clone();
    let ci_path = old.path("CompressionInfo.db");
    let ci_meta = fs::metadata(&ci_path).map_err(|e| Error::io(&ci_path, "stat", e))?;
    created.write_small(
        &new.path("CompressionInfo.db"),
        &ci_path,
        &ci_meta,
        &new_ci.serialize(),
    )?;
    let mut written = vec!["Data.db", "CompressionInfo.db"];
    // Encrypted index pages: rewritten in place under the new generation, page by page.
    for pf in &l.paged {
        let from = old.path(&pf.component);
        let to = new.path(&pf.component);
        let src = File::open(&from).map_err(|e| Error::io(&from, "open", e))?;
        let meta = src.metadata().map_err(|e| Error::io(&from, "stat", e))?;
        let dst = created.create_like(&to, &from, &meta)?;
        dst.set_len(meta.len())
            .map_err(|e| Error::io(&to, "allocate", e))?;
        let spans: Vec<Span> = (0..pf.pages.len())
            .map(|i| Span {
                in_off: (i * PAGE) as u64,
                in_len: PAGE as u32,
                out_off: (i * PAGE) as u64,
                out_len: PAGE as u32,
            })
            .collect();
        let layout = IndexPages {
            path: &from,
            pages: &pf.pages,
            rk: rk(),
        };
        let files = rewrite::Files {
            src: &src,
            src_path: &from,
            dst: &dst,
            dst_path: &to,
        };
        rewrite::rewrite_file(&files, &spans, &layout, &|_| {}, &|| {
            cancel.load(Ordering::SeqCst)
        })?;
        dst.sync_all().map_err(|e| Error::io(&to, "fsync", e))?;
        failpoint::hit("index.written")?;
        written.push(pf.component.as_str());
    }
    if let Some(comps) = &l.statistics {
        let from = old.path("Statistics.db");
        let bytes = rewrite::rekey_statistics(&from, comps, &rk())?;
        let meta = fs::metadata(&from).map_err(|e| Error::io(&from, "stat", e))?;
        created.write_small(&new.path("Statistics.db"), &from, &meta, &bytes)?;
        written.push("Statistics.db");
    }
    if l.found.present.iter().any(|c| c == "Digest.crc32") {
        let from = old.path("Digest.crc32");
        let m = fs::metadata(&from).map_err(|e| Error::io(&from, "stat", e))?;
        created.write_small(
            &new.path("Digest.crc32"),
            &from,
            &m,
            format_digest(crc).as_bytes(),
        )?;
        failpoint::hit("component.linked")?;
        written.push("Digest.crc32");
    }
    // Everything else is unchanged: hard-link it under the new generation.
    for c in &l.found.present {
        if written.contains(&c.as_str()) {
            continue;
        }
        created.hard_link(&old.path(c), &new.path(c))?;
        failpoint::hit("component.linked")?;
    }
    sync_dir(&new.dir)?;
    Ok((counts, new_size))
}
