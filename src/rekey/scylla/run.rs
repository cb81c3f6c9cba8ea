//! A rekey's ScyllaDB SSTables, each decided and rewritten: skipped when already under the
//! target or outside `--from`; its old key proven on its plaintext ([`check::evidence`]); the new
//! key taken for the table's cipher and strength; then [`swap`] writes the copy and swaps it in.
//! Failures are per SSTable, in its report; nothing of a failed SSTable stays. `stage` decides
//! its SSTables here too ([`prepare`]) and writes their copies with [`super::stage`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::crypto::scylla::{cipher_len, plain_len, FileCipher};
use crate::error::{Error, Result};
use crate::keys::{material_eq, KeyId, KeyRef, KeyStore};
use crate::rekey::generation::Generations;
use crate::rekey::report::{SstableReport, Status};
use crate::rekey::scylla::load::{key_material, ScyllaLoaded};
use crate::rekey::scylla::swap::Swap;
use crate::rekey::scylla::{check, follow_up};
use crate::rekey::staging::{remove_entry, remove_used_entry, Entry};
use crate::sstable::data::read_at;
use crate::sstable::scylla::RekeyTarget;
use zeroize::Zeroizing;

/// What every SSTable of the run shares.
pub struct Context<'a> {
    pub to: &'a KeyRef,
    pub from: &'a [KeyId],
    pub store: &'a KeyStore,
    pub data_dirs: &'a [PathBuf],
    pub dry_run: bool,
}

/// A ScyllaDB SSTable of a run, with the staged copy `stage` left for it, if still valid.
pub struct ScyllaJob {
    pub loaded: Box<ScyllaLoaded>,
    pub staged: Option<Box<Entry>>,
}

/// What rekeying one SSTable needs, decided before anything is written: both file ciphers (the
/// old key proven on the plaintext) and the target's Scylla.db attributes.
pub struct Prepared {
    pub old: FileCipher,
    pub new: FileCipher,
    pub target: RekeyTarget,
}

/// Rekeys `jobs` one after the other; returns their reports and, per table, the statement that
/// makes ScyllaDB's new writes use the target.
pub fn all(jobs: Vec<ScyllaJob>, cx: &Context) -> (Vec<SstableReport>, HashMap<String, String>) {
    let gens = Generations::new();
    let mut statements = HashMap::new();
    let reports = jobs
        .into_iter()
        .map(|job| {
            let mut r = report_of(&job.loaded);
            match one(&job, cx, &gens, &mut r) {
                Ok(Some(stmt)) => {
                    statements.insert(job.loaded.found.table.qualified(), stmt);
                }
                Ok(None) => {}
                Err(e) => r.fail(&e),
            }
            r
        })
        .collect();
    (reports, statements)
}

/// The report of an SSTable before anything is done: its files under its key.
pub fn report_of(l: &ScyllaLoaded) -> SstableReport {
    let found = &l.found;
    let mut r = SstableReport::new(
        found.table.qualified(),
        found.location.clone(),
        &found.desc.data_path(),
    );
    r.keys_before = BTreeMap::from([(l.key.to_string(), l.files.len())]);
    r.chunks = l.files.len();
    r.encrypted_files = Some(l.files.len());
    r
}

/// One SSTable: skipped (`Ok(None)`, the reason in `r`), or rekeyed (its table's statement).
fn one(
    job: &ScyllaJob,
    cx: &Context,
    gens: &Generations,
    r: &mut SstableReport,
) -> Result<Option<String>> {
    let t0 = std::time::Instant::now();
    let l = &job.loaded;
    let Some(p) = prepare(l, cx, r)? else {
        return Ok(None);
    };
    unfinished_in(&l.found.desc.dir)?;
    if cx.dry_run {
        r.status = Status::Planned;
        r.reason = Some(format!("would rekey to {}", cx.to.id()?));
        return Ok(None);
    }
    let staged = staged_or_proven(job, &p, r)?;
    let data_dir = data_dir_of(cx.data_dirs, &l.found.desc.dir)?;
    if staged.is_none() {
        enough_space(l)?;
    }
    let new_desc = gens.allocate(&l.found.desc, &l.found.table.dir)?;
    let swap = Swap {
        l,
        old: &p.old,
        new: &p.new,
        target: &p.target,
        data_dir,
        staged,
    };
    let written = swap.run(&new_desc)?;
    r.status = Status::Rekeyed;
    r.from_staged = staged.is_some();
    r.new = Some(new_desc.data_path().display().to_string());
    r.bytes_in = written;
    r.bytes_out = written;
    r.keys_after = BTreeMap::from([(cx.to.id()?.to_string(), l.files.len())]);
    r.seconds = t0.elapsed().as_secs_f64();
    // The staged copy is used up: its manifest and folder go. Failing that is harmless: a
    // manifest without its files is stale, and the next run discards it.
    if let Some(Err(e)) = staged.map(|e| remove_used_entry(&e.dir)) {
        r.reason = Some(format!("committed; the used staging entry remains: {e}"));
    }
    let ns = l.encryption.options.as_ref();
    let ns = ns
        .and_then(|o| o.get("key_namespace"))
        .filter(|n| !n.is_empty());
    Ok(Some(follow_up::statement(&r.table, &p.target, ns)))
}

/// Decides one SSTable for `rekey` or `stage`: skipped (`Ok(None)`, the reason in `r`) when it
/// is already under the target or outside `--from`; else both keys taken for the table's cipher
/// and strength (refused when they are the same bytes). The old key is proven on the plaintext
/// by the caller ([`check::evidence`]) before anything is written from it.
pub fn prepare(l: &ScyllaLoaded, cx: &Context, r: &mut SstableReport) -> Result<Option<Prepared>> {
    let to = cx.to.id()?;
    if l.key == to {
        r.reason = Some(format!("already under {to}"));
        r.keep_counts();
        return Ok(None);
    }
    if !cx.from.is_empty() && !cx.from.contains(&l.key) {
        r.reason = Some("not under any --from key".into());
        r.keep_counts();
        return Ok(None);
    }
    // Key errors name the SSTable: another SSTable of the run may need the same key fine.
    let named = |e: Error| match e {
        Error::Key(m) => Error::Key(format!("{}: {m}", l.found.desc.data_path().display())),
        e => e,
    };
    let old_raw = l.material(cx.store).map_err(named)?;
    let new_raw =
        key_material(&to, &l.spec.cipher.algorithm, &l.cipher, cx.store).map_err(named)?;
    if material_eq(old_raw.expose(), new_raw.expose()) {
        return Err(named(Error::Key(format!(
            "{to} holds the same key bytes as {}, which the SSTable is under: rekeying to it changes nothing",
            l.key
        ))));
    }
    let (old, new) = (l.cipher_of(&old_raw, &l.key)?, l.cipher_of(&new_raw, &to)?);
    drop((old_raw, new_raw));
    let target = target_of(cx.to, l)?;
    Ok(Some(Prepared { old, new, target }))
}

/// The staged copy to commit, when it holds the source's plaintext under the new key as its
/// bytes are now: the first block of every staged file, decrypted with the new key, equals the
/// source's under the old key (a key file whose bytes changed since `stage` would otherwise
/// commit files no key opens). Else, with no copy or one that does not match (discarded, with a
/// reason), the old key is proven as for a rewrite.
fn staged_or_proven<'a>(
    job: &'a ScyllaJob,
    p: &Prepared,
    r: &mut SstableReport,
) -> Result<Option<&'a Entry>> {
    let l = &job.loaded;
    if let Some(e) = job.staged.as_deref() {
        if same_first_blocks(l, e, p)? {
            return Ok(Some(e));
        }
        remove_entry(&e.dir)?;
        r.reason = Some(format!(
            "its staged copy ({}) was made with other key bytes than the keys hold now: discarded, rewritten now",
            e.dir.display()
        ));
    }
    check::evidence(l, &p.old)?;
    Ok(None)
}

/// Whether every staged file's first block decrypts under the new key to the source file's
/// first block under the old key.
fn same_first_blocks(l: &ScyllaLoaded, e: &Entry, p: &Prepared) -> Result<bool> {
    for f in &l.files {
        let path = l.path(&f.component);
        let n = cipher_len(
            plain_len(f.file_len).map_err(|m| Error::corrupt(&path, m.0))?,
            0,
        );
        if n == 0 {
            continue;
        }
        let first = |path: &Path, cipher: &FileCipher| -> Result<Zeroizing<Vec<u8>>> {
            let mut buf = Zeroizing::new(vec![0u8; n]);
            let file = std::fs::File::open(path).map_err(|x| Error::io(path, "open", x))?;
            read_at(&file, path, 0, &mut buf)?;
            cipher.decrypt_block(0, &mut buf);
            Ok(buf)
        };
        let source = first(&path, &p.old)?;
        let staged = first(&e.dir.join(&f.component), &p.new)?;
        if source != staged {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Room beside the SSTable for its re-ciphered copy.
fn enough_space(l: &ScyllaLoaded) -> Result<()> {
    let (free, _) = crate::fsio::free_space(&l.found.desc.dir)?;
    if free < l.encrypted_bytes() + (1 << 20) {
        return Err(Error::io(
            &l.found.desc.dir,
            "check free space",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    Ok(())
}

/// The Scylla.db attributes of the target for this SSTable's cipher and strength.
fn target_of(to: &KeyRef, l: &ScyllaLoaded) -> Result<RekeyTarget> {
    let (cipher_algorithm, secret_key_strength) =
        (l.spec.cipher.algorithm.clone(), l.spec.cipher.key_bits);
    match to {
        KeyRef::File(p) => Ok(RekeyTarget::Local {
            secret_key_file: crate::keys::canonical(p)?.display().to_string(),
            cipher_algorithm,
            secret_key_strength,
        }),
        KeyRef::Kmip { group, id } => Ok(RekeyTarget::Kmip {
            kmip_host: group.clone(),
            key_id: id.clone(),
            cipher_algorithm,
            secret_key_strength,
        }),
        KeyRef::Replicated(_) => Err(Error::Usage(
            "replicated keys can only be read: rekey --to a key file or a KMIP key".into(),
        )),
    }
}

/// ScyllaDB has unfinished work in an SSTable folder (FORMAT.md 4.9): a `TOC.txt.tmp` (an SSTable
/// being written or deleted) or a `pending_delete/` entry. Its startup finishes that work; a
/// rekey does not start in the middle of it. Any listing error refuses too.
fn unfinished_in(dir: &Path) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::unsupported(
            dir,
            format!("{what}: ScyllaDB has unfinished work here. Start ScyllaDB once (its startup finishes it) or run `sstable-rekey recover` if a rekey was interrupted, then rekey again"),
        ))
    };
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))? {
        let e = e.map_err(|e| Error::io(dir, "list folder", e))?;
        if e.file_name().as_encoded_bytes().ends_with(b"TOC.txt.tmp") {
            return refuse(format!("{} exists", e.path().display()));
        }
    }
    let pending = dir.join("pending_delete");
    match std::fs::read_dir(&pending) {
        Ok(mut it) => match it.next() {
            None => Ok(()),
            Some(_) => refuse(format!("{} is not empty", pending.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&pending, "list folder", e)),
    }
}

/// The data directory holding an SSTable folder.
pub fn data_dir_of<'a>(dirs: &'a [PathBuf], dir: &Path) -> Result<&'a Path> {
    dirs.iter()
        .find(|d| dir.starts_with(d))
        .map(PathBuf::as_path)
        .ok_or_else(|| {
            Error::Usage(format!(
                "{} is in none of the data directories",
                dir.display()
            ))
        })
}
