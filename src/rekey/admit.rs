//! Step 2b, admission: per SSTable, whether it is rekeyed ([`admit`]: skipped, failed, a key
//! problem, or a [`Job`] with every key resolved), and what a rekey refuses before any work (exit 2):
//! - `--to` may not be one of the `--from` keys, and a `--to file:` path must be absolute;
//! - offline, a table may not move to another KMIP group unless the operator says so;
//! - the new key's material may not equal an old key's (the data would stay under it);
//! - the node's user must be able to read what the run writes: new files get the originals'
//!   owner and group (so the run is root, or that owner in that group), and the new key file
//!   must be readable by the owner.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::crypto::envelope::ProviderKind;
use crate::error::{Error, Result};
use crate::fsio;
use crate::keys::{canonical, KeyId, KeyRef, KeyStore};
use crate::rekey::find::Found;
use crate::rekey::plan::{self, Job, Load, Loaded, Target};
use crate::rekey::report::SstableReport;

/// What admission decided for one SSTable.
pub enum Admission {
    /// Nothing to do (not encrypted, already under the target, under no `--from` key): reported.
    Skip(SstableReport),
    /// Refused for this SSTable alone (exit 1): reported, the others go on.
    Fail(SstableReport),
    /// A key that cannot be resolved or must not be used: the whole run stops before any work.
    KeyProblem(KeyProblem),
    /// Ready to rewrite.
    Ready(Box<Job>),
}

/// Why a run stops before any work (exit 2).
pub struct KeyProblem {
    pub messages: Vec<String>,
    /// The table would move to another KMIP group offline (see [`kmip_group_move`]).
    pub group_move: bool,
}

/// What every SSTable is admitted against.
pub struct Context<'a> {
    pub target: &'a Target,
    /// `--from`: only SSTables under one of these keys (empty: every SSTable).
    pub from: Vec<KeyId>,
    pub store: &'a KeyStore,
    /// A KMIP configuration confirmed the `--to` group.
    pub kmip_configured: bool,
    /// `--move-kmip-group`.
    pub move_kmip_group: bool,
}

/// Admits every live SSTable: the skipped and failed go to `reports`, key problems stop the run
/// before any work (the error says them all), the rest are the jobs.
pub fn all(
    live: Vec<(Found, Result<Load>)>,
    cx: &Context,
    to: &KeyRef,
    reports: &mut Vec<SstableReport>,
) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut problems = KeyProblems::default();
    for (f, load) in live {
        match admit(f, load, cx) {
            Admission::Skip(r) | Admission::Fail(r) => reports.push(r),
            Admission::KeyProblem(p) => problems.push(p),
            Admission::Ready(job) => jobs.push(*job),
        }
    }
    problems.check(to)?;
    Ok(jobs)
}

/// Decides one SSTable: what it is, whether it is rekeyed, with which keys, at which new layout.
pub fn admit(found: Found, load: Result<Load>, cx: &Context) -> Admission {
    let mut r = SstableReport::new(
        found.table.qualified(),
        found.location.clone(),
        &found.desc.data_path(),
    );
    let loaded = match load {
        Ok(Load::Encrypted(l)) => l,
        Ok(Load::Unencrypted { class }) => {
            r.reason = Some(format!("not encrypted ({class})"));
            return Admission::Skip(r);
        }
        Ok(Load::Scylla(_)) => {
            // `rekey` and `stage` take ScyllaDB SSTables apart (rekey::scylla) before admission.
            r.reason = Some("a ScyllaDB SSTable: rekeyed by its own path (rekey::scylla)".into());
            return Admission::Skip(r);
        }
        Err(e) if e.is_config() => return problem(vec![e.to_string()]),
        Err(e) => return fail(r, &e),
    };
    loaded.count_into(&mut r);
    let target_idx = loaded.key_index(&cx.target.id);
    if let Some(why) = already_done(&loaded, cx.target, target_idx, &r) {
        r.reason = Some(why);
        r.keep_counts();
        return Admission::Skip(r);
    }
    // Outside `--from`, an SSTable is not this run's business: never failed for what a rewrite
    // to the target would meet.
    if !cx.from.is_empty() && !loaded.keys.iter().any(|k| cx.from.contains(k)) {
        r.reason = Some("not under any --from key".into());
        return Admission::Skip(r);
    }
    if let Err(e) = provider_type_kept(&loaded, cx.target) {
        return fail(r, &e);
    }
    if let Some(m) = kmip_group_move(&loaded, cx.target, cx.kmip_configured, cx.move_kmip_group) {
        return Admission::KeyProblem(KeyProblem {
            messages: vec![m],
            group_move: true,
        });
    }
    let (keys, target_key) = match resolve_keys(&loaded, cx, target_idx) {
        Ok(k) => k,
        Err(messages) => return problem(messages),
    };
    let same = same_material(cx.store, &loaded, cx.target, target_idx, cx.move_kmip_group);
    if !same.is_empty() {
        return problem(same);
    }
    match plan::new_layout(&loaded, cx.target, target_idx) {
        Ok((new_lens, new_offsets)) => Admission::Ready(Box::new(Job {
            loaded,
            report: r,
            keys,
            target_key,
            target_idx,
            new_lens,
            new_offsets,
            staged: None,
        })),
        Err(e) => fail(r, &e),
    }
}

fn fail(mut r: SstableReport, e: &Error) -> Admission {
    r.fail(e);
    Admission::Fail(r)
}

fn problem(messages: Vec<String>) -> Admission {
    Admission::KeyProblem(KeyProblem {
        messages,
        group_move: false,
    })
}

/// Why an SSTable needs no rekey: all its records are under the target already (or stored in
/// plaintext).
fn already_done(
    l: &Loaded,
    target: &Target,
    target_idx: Option<u32>,
    r: &SstableReport,
) -> Option<String> {
    if !l.record_keys().all(|k| Some(k) == target_idx) {
        return None;
    }
    Some(if l.record_keys().next().is_none() {
        format!(
            "no encrypted chunks: all {} chunks are stored in plaintext",
            r.raw_chunks
        )
    } else {
        format!("already under {}", target.id)
    })
}

/// SSTables with encrypted index pages keep their provider type: readers size index pages by the
/// provider's header bound (FORMAT.md 2.6).
fn provider_type_kept(l: &Loaded, target: &Target) -> Result<()> {
    if !l.indexes_encrypted() || target.provider == l.envelope.provider {
        return Ok(());
    }
    let cap = |p: ProviderKind| {
        crate::sstable::pages::max_bytes_in_page(p.header_bound(), l.envelope.cipher.iv_len)
    };
    Err(Error::unsupported(
        l.found.desc.data_path(),
        format!(
            "its index pages hold at most {} plaintext bytes each under a {} key, {} under a {} key: readers locate the index footer by that capacity, so these SSTables cannot move between provider types. Rekey to another {} key, or rewrite them with nodetool upgradesstables",
            cap(l.envelope.provider),
            l.envelope.provider.factory_name(),
            cap(target.provider),
            target.provider.factory_name(),
            l.envelope.provider.factory_name(),
        ),
    ))
}

/// Every old key of the SSTable (the target's own index aside) and the target key, from the
/// store; the messages of those that cannot be had.
#[allow(clippy::type_complexity)]
fn resolve_keys(
    l: &Loaded,
    cx: &Context,
    target_idx: Option<u32>,
) -> std::result::Result<
    (
        Vec<Option<std::sync::Arc<crate::crypto::AesKey>>>,
        std::sync::Arc<crate::crypto::AesKey>,
    ),
    Vec<String>,
> {
    let cipher = &l.envelope.cipher;
    let path = l.found.desc.data_path();
    let mut problems = Vec::new();
    let mut keys = Vec::with_capacity(l.keys.len());
    for (i, id) in l.keys.iter().enumerate() {
        if Some(i as u32) == target_idx {
            keys.push(None);
            continue;
        }
        match cx.store.get(id, cipher) {
            Ok(k) => keys.push(Some(k)),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    let target_key = cx.store.get(&cx.target.id, cipher).map_err(|e| {
        let mut p = problems.clone();
        p.push(format!("{}: target key: {e}", path.display()));
        p
    })?;
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((keys, target_key))
}

/// The key problems of a run: none, or the error that stops it before any work.
#[derive(Default)]
pub struct KeyProblems {
    messages: Vec<String>,
    group_moves: usize,
}

impl KeyProblems {
    pub fn push(&mut self, p: KeyProblem) {
        self.messages.extend(p.messages);
        self.group_moves += p.group_move as usize;
    }

    /// `Err` naming every problem (and, for group moves, what to do) when there is any.
    pub fn check(mut self, to: &KeyRef) -> Result<()> {
        if self.group_moves > 0 {
            if let KeyRef::Kmip { group, .. } = to {
                self.messages.push(kmip_group_move_advice(group));
            }
        }
        if self.messages.is_empty() {
            return Ok(());
        }
        self.messages.dedup();
        Err(Error::Key(format!(
            "nothing was written; resolve these key problems first:\n  {}",
            self.messages.join("\n  ")
        )))
    }
}

/// `--to` among the `--from` keys (same identity: group and id, or the same key file by its
/// canonical path) is a usage error, as is a relative `--to file:` path: it is written into every
/// new CompressionInfo, and the node would resolve it against its own working folder.
pub fn refs(to: &KeyRef, from: &[KeyRef]) -> Result<()> {
    let to_id = to.id()?;
    let mut same = None;
    for f in from {
        if f.id()? == to_id {
            same = Some(f);
            break;
        }
    }
    if let Some(f) = same {
        return Err(Error::Usage(format!(
            "--to {to} is also given as --from {f}: the new key must be another key than the ones the data is under"
        )));
    }
    if let KeyRef::File(p) = to {
        if !p.is_absolute() {
            return Err(Error::Usage(format!(
                "--to {to}: give the key file's absolute path (it is written into every new CompressionInfo as secret_key_file, and the node resolves a relative one against its own working folder), e.g. --to file:{}",
                canonical(p).unwrap_or_else(|_| p.clone()).display()
            )));
        }
    }
    Ok(())
}

/// Offline (no KMIP configuration confirmed the `--to` group), an SSTable whose records are
/// not in the `--to` group (another `kmip_host`, or a local key file or replicated keys) moves
/// to that group only when the operator says so with `--move-kmip-group`: a typo in GROUP would
/// otherwise write a group no node has into every new CompressionInfo. The message names the
/// table (not the SSTable), so that the SSTables of one table make one line.
pub fn kmip_group_move(
    l: &Loaded,
    target: &Target,
    configured: bool,
    allowed: bool,
) -> Option<String> {
    let KeyRef::Kmip { group, .. } = &target.kref else {
        return None;
    };
    let current = match l.envelope.provider {
        ProviderKind::Kmip => l.ci.option("kmip_host"),
        _ => None,
    };
    if configured || allowed || current == Some(group.as_str()) {
        return None;
    }
    let now = match (current, l.envelope.provider) {
        (Some(g), _) => format!("is under KMIP group {g}"),
        (None, ProviderKind::Local) => "is under a local key file (no KMIP group)".into(),
        (None, ProviderKind::Replicated) => "is under replicated keys (no KMIP group)".into(),
        (None, ProviderKind::Kmip) => "names no KMIP group".into(),
    };
    Some(format!(
        "table {} ({}) {now}; --to names KMIP group {group}",
        l.found.table.qualified(),
        l.found.table.dir.display()
    ))
}

/// Said once after the tables [`kmip_group_move`] names.
pub fn kmip_group_move_advice(group: &str) -> String {
    format!(
        "offline (no --kmip-config/--dse-yaml/--scylla-yaml) nothing confirms that KMIP group {group} exists on the nodes, and a wrong group in every rewritten CompressionInfo (kmip_host) makes the tables unreadable. Fix the group in --to, or, if these tables really move to group {group} (a kmip_hosts entry of every node's dse.yaml), say so with --move-kmip-group"
    )
}

/// Old keys of this SSTable whose material equals the new key's: the data would stay under the
/// compromised key. Compared in constant time ([`KeyStore::same_material`]); a key moving to
/// another group under its own id (`--move-kmip-group`) is the same key on purpose.
pub fn same_material(
    store: &KeyStore,
    l: &Loaded,
    target: &Target,
    target_idx: Option<u32>,
    moving_groups: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, old) in l.keys.iter().enumerate() {
        if Some(i as u32) == target_idx {
            continue;
        }
        if let (KeyId::Kmip { id: a, .. }, KeyId::Kmip { id: b, .. }) = (old, &target.id) {
            if moving_groups && a == b {
                continue;
            }
        }
        match store.same_material(old, &target.id, &l.envelope.cipher) {
            Ok(false) => {}
            Ok(true) => out.push(format!(
                "the new key {} has the same key material as {old}, which SSTables are under: rekeyed to it, the data would stay under the compromised key. Choose a key with new material (a new KMIP key, e.g. `sstable-rekey kmip create GROUP --bits N`, or a new key file)",
                target.id
            )),
            Err(e) => out.push(e.to_string()),
        }
    }
    out
}

/// A user as messages name it: `cassandra (uid 999)`, or `uid 4242` without a passwd entry.
fn user(uid: u32) -> String {
    match fsio::passwd(uid) {
        Some((name, _)) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Whether a process of `uid` in `gids` has permission `bit` (4 read, 1 search) on `m`.
fn may(uid: u32, gids: &[u32], m: &std::fs::Metadata, bit: u32) -> bool {
    allows(uid, gids, (m.uid(), m.gid(), m.mode()), bit)
}

/// The owner, group and other classes of a file `(owner, group, mode)`; root passes read and
/// search checks. (ACLs are not consulted: a key file must be 0600 or 0400 anyway.)
fn allows(uid: u32, gids: &[u32], (owner, group, mode): (u32, u32, u32), bit: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let class = if owner == uid {
        mode >> 6
    } else if gids.contains(&group) {
        mode >> 3
    } else {
        mode
    };
    class & bit != 0
}

/// Before any work: every file the run rewrites or links (the components of `sstables`) gets a
/// new copy owned like the original, which only root or that owner can do. And, for `--to
/// file:PATH`, the node's user (the owner of the data files) must be able to read that file.
pub fn owners<'a>(sstables: impl Iterator<Item = &'a Found>, target: &Target) -> Result<()> {
    let euid = fsio::effective_uid();
    let my_groups = fsio::own_groups();
    // Node users (owner uid, gid) → one of their Data.db files, for messages.
    let mut node_users: BTreeMap<(u32, u32), PathBuf> = BTreeMap::new();
    for f in sstables {
        for c in &f.present {
            let p = f.desc.path(c);
            let m = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "stat", e))?;
            if euid != 0 && m.uid() != euid {
                return Err(Error::Usage(format!(
                    "{} is owned by {}, but this run is {}: its rewritten copy would belong to {} (only root may give files away), and the node could not read it. Run sstable-rekey as root or as {}",
                    p.display(),
                    user(m.uid()),
                    user(euid),
                    user(euid),
                    user(m.uid())
                )));
            }
            if euid != 0 && !my_groups.contains(&m.gid()) {
                return Err(Error::Usage(format!(
                    "{} has group {}, which this run ({}) is not in: its rewritten copy could not get that group back. Run sstable-rekey as root, or as {} with group {}",
                    p.display(),
                    m.gid(),
                    user(euid),
                    user(m.uid()),
                    m.gid()
                )));
            }
            if c == "Data.db" {
                node_users.entry((m.uid(), m.gid())).or_insert(p);
            }
        }
    }
    if let KeyRef::File(p) = &target.kref {
        for ((uid, gid), data) in &node_users {
            key_file_readable(p, *uid, *gid, data)?;
        }
    }
    Ok(())
}

/// The new key file as the node reads it: as the owner of the data files, through every folder
/// on the way (search permission), the file itself readable (and, key material, 0600 or 0400).
fn key_file_readable(typed: &Path, uid: u32, gid: u32, data: &Path) -> Result<()> {
    if uid == 0 {
        return Ok(());
    }
    let path = canonical(typed)?;
    let gids = fsio::groups_of(uid, gid);
    let who = user(uid);
    let refuse = |what: String| {
        Error::Usage(format!(
            "--to file:{}: the node reads this key file as the owner of the data files ({who}, e.g. {}), {what}. Nothing was written",
            typed.display(),
            data.display()
        ))
    };
    let mut dir = PathBuf::from("/");
    let parents: Vec<_> = path
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents.into_iter().skip(1) {
        dir.push(c);
        let m = std::fs::metadata(&dir).map_err(|e| Error::io(&dir, "stat", e))?;
        if !may(uid, &gids, &m, 0o1) {
            return Err(refuse(format!(
                "but it may not enter folder {} (owned by {}, mode {:04o}): give that user search permission on it (e.g. `chmod o+x {}`), or put the key file where the node keeps its keys",
                dir.display(),
                user(m.uid()),
                m.mode() & 0o7777,
                dir.display()
            )));
        }
    }
    let m = std::fs::metadata(&path).map_err(|e| Error::io(&path, "stat", e))?;
    if !m.is_file() {
        return Err(refuse(format!(
            "but {} is not a regular file",
            path.display()
        )));
    }
    if !may(uid, &gids, &m, 0o4) {
        return Err(refuse(format!(
            "but the file is owned by {}, mode {:04o}: make it owned by {who}, mode 0400 or 0600 (`chown {uid} {} && chmod 600 {}`)",
            user(m.uid()),
            m.mode() & 0o7777,
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_classes() {
        let f = (4242, 4242, 0o100640);
        assert!(allows(4242, &[], f, 4));
        assert!(!allows(4242, &[], f, 1));
        assert!(allows(4243, &[4242], f, 4));
        assert!(!allows(4243, &[4243], f, 4));
        assert!(!allows(4243, &[4242], f, 2));
        assert!(allows(0, &[], f, 1));
        // Owner class decides for the owner even when others may (as the kernel does).
        assert!(!allows(4242, &[], (4242, 4242, 0o007), 4));
        let dir = (0, 0, 0o40711);
        assert!(allows(4242, &[], dir, 1));
        assert!(!allows(4242, &[], (0, 0, 0o40700), 1));
    }
}
