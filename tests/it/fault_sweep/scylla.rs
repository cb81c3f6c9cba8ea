//! The ScyllaDB part of the sweep: `rekey-scylla` (the swap of FORMAT.md 4.9 under every injection
//! point), `recover-scylla-*` (the journal a rekey crashed at `scylla.doomed` or
//! `scylla.committed` left, resolved by `recover` under every injection point), and on a smaller
//! set `stage-scylla` (`stage`, the node serving) and `rekey-scylla-staged` (the window's `rekey`
//! committing the entries an unfaulted `stage` of the same copy made).
//!
//! The data set: `scylla_edge.t_snap` (two live SSTables under the local key file `keys/old.key`,
//! and `snapshots/snap1/` with copies of both) and the first SSTable of
//! `scylla_matrix.t_kmip_CBC_128` (KMIP key `old-128`, read from the offline keyring that joins
//! `keys/keyring` and `scylla/keys/keyring`), plus an operator's file in a keyspace folder. The
//! target is `file:<copy>/keys/new.key`. The smaller set of the staged commands keeps only the
//! first live SSTable of `t_snap` (its snapshot whole): one SSTable under each kind of key.
//!
//! After each swap (`rekey`, `recover`, and a `recover` without fault after them), judged by
//! `support::scylla_boot` (ScyllaDB's startup rule, written from FORMAT.md 4.9), MANIFEST.json and
//! the ScyllaDB oracle of ../shared:
//! - right after the run, every table folder as ScyllaDB would start it boots and holds every
//!   original SSTable exactly once (by its Scylla.db SSTableIdentifier, tag 10); a generation still
//!   live keeps its files byte for byte;
//! - `recover` exits 0 and resolves each folder to the generations ScyllaDB would have kept; then
//!   no `*.tmp`, no journal folder, no file of a generation that is not live;
//! - every live SSTable opens, with the key its Scylla.db names, to its MANIFEST plaintext
//!   (`plaintext_sha256_all`, the oracle; verdicts cached by file contents);
//! - nothing but the table folders' own generations, the journal folder and the tool's staging
//!   and obsolete folders changed (snapshots, operators' files and a file "another process"
//!   created under the tool's feet included);
//! - the staging folder (before and after `recover`): a staging entry may lose its manifest or go
//!   stale by its sizes (the next rekey discards it and rewrites that SSTable), but a staged file
//!   never keeps its manifest's size with other bytes (a rekey would commit it); the obsolete
//!   folder holds only files of original generations that are no longer live, byte for byte;
//! - the exit status tells the truth: 0 only when every SSTable was rekeyed (its report and both
//!   `ALTER TABLE`s written, the replaced files purged), 2 only when nothing was written, a
//!   journal left comes with exit 1 and the word `recover` (and never with `recover`'s exit 0), an
//!   EINTR run ends as the unfaulted one; a recover of the `scylla.committed` journal leaves the
//!   first SSTable under the new key, of the `scylla.doomed` one none; a fault in the `/proc` scan
//!   never goes unreported (`super::fail_open`).
//!
//! After `stage`: nothing written outside the staging folder (every file of the data dir as it
//! was, no folder added or removed elsewhere), every entry with a manifest whole (its files of the
//! manifest's sizes and CRC32, its sources the files now there), exit 0 only with every SSTable
//! staged and reported so, 2 only with nothing written, EINTR retried.
//!
//! Then an unfaulted `rekey` must finish the job: every SSTable once, under the new key, no
//! journal or obsolete folder and no staging entry with a manifest left (entries without one are
//! the next `stage`'s to remove: it must), and `verify --key file:new.key` exits 0; for the
//! staged commands the oracle also opens what that rekey committed (the entries the faulted run
//! left, committed only then).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, OnceLock};

use serde_json::Value;

use super::{
    check_report, judge_exit, judge_fail_open, judge_left_for_recover, last_line, report_path,
    state, state_diff, Cmd, CmdKind, Judged, Left, State, Sweep, ENV, OBSOLETE, STAGING, TIMEOUT,
};
use crate::support::inject::{traced, Fault, Traced, PLANTED};
use crate::support::oracle::{scylla_oracle, shared};
use crate::support::*;

/// The journal folder of a data directory (FORMAT.md 4.9).
pub const JOURNALS: &str = ".sstable-rekey-scylla";

/// An original live SSTable of the data set.
struct Orig {
    /// Its table folder, relative to the data dir.
    table: PathBuf,
    prefix: String,
    id: Vec<u8>,
    /// Component → SHA-256 of the pristine file.
    files: BTreeMap<String, String>,
    /// MANIFEST.json's `plaintext_sha256_all`.
    plaintext: Value,
    /// The oracle's `key_ref` of its old key.
    old_ref: String,
}

/// The oracle's verdict on a generation: the key it opened it with and its plaintext digest.
type Verdict = Result<(String, Value), String>;

pub struct ScyllaSet {
    scratch: Scratch,
    /// The pristine data dir (each run copies it).
    pub data: PathBuf,
    keyring: PathBuf,
    new_key: PathBuf,
    tables: Vec<PathBuf>,
    originals: Vec<Orig>,
    /// The oracle's `--key-file`/`--key` arguments: every key of the data set.
    oracle_keys: Vec<OsString>,
    oracle: Option<PathBuf>,
    /// Oracle verdicts by the SHA-256 of a generation's files.
    verdicts: Mutex<BTreeMap<String, Verdict>>,
}

impl ScyllaSet {
    /// The set of `rekey-scylla` and `recover-scylla-*`.
    pub fn new() -> ScyllaSet {
        ScyllaSet::of(None)
    }

    /// The set of `stage-scylla` and `rekey-scylla-staged`: the first SSTable of each table (one
    /// under the local key, one under KMIP), the snapshot of `t_snap` whole.
    pub fn small() -> ScyllaSet {
        ScyllaSet::of(Some("me-1-big-"))
    }

    /// `edge_only`: the prefix of the only live SSTable kept in `t_snap`.
    fn of(edge_only: Option<&str>) -> ScyllaSet {
        let scratch = Scratch::of(&["scylla", "keys"]);
        let root = scratch.root.clone();
        let mut ring = fs::read_to_string(root.join("keys/keyring")).unwrap();
        ring.push_str(&fs::read_to_string(root.join("scylla/keys/keyring")).unwrap());
        let keyring = root.join("all.keyring");
        fs::write(&keyring, &ring).unwrap();
        chmod(&keyring, 0o600);
        let data = root.join("sweep-data");
        let src = root.join("scylla/data");
        let mut tables = Vec::new();
        for (ks, table, only) in [
            ("scylla_edge", "t_snap", edge_only),
            ("scylla_matrix", "t_kmip_CBC_128", Some("me-1-big-")),
        ] {
            let from = table_dir(&src.join(ks), table);
            let rel = from.strip_prefix(&src).unwrap().to_path_buf();
            copy_tree(&from, &data.join(&rel));
            if let Some(keep) = only {
                for e in fs::read_dir(data.join(&rel)).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_file() && !p.file_name().unwrap().to_str().unwrap().starts_with(keep) {
                        fs::remove_file(p).unwrap();
                    }
                }
            }
            tables.push(rel);
        }
        let notes = data.join("scylla_edge/keyspace-notes.txt");
        fs::write(&notes, b"decoy: an operator's file in a keyspace folder\n").unwrap();
        chmod(&notes, 0o644);

        let mut originals = Vec::new();
        for e in scylla_manifest().iter().filter(|e| e["location"] == "live") {
            let rel = Path::new(e["data"].as_str().unwrap())
                .strip_prefix("scylla/data")
                .unwrap()
                .to_path_buf();
            if !data.join(&rel).exists() {
                continue;
            }
            let table = rel.parent().unwrap().to_path_buf();
            let name = rel.file_name().unwrap().to_str().unwrap();
            let prefix = scylla_prefix(name).unwrap();
            let mut files = BTreeMap::new();
            for c in e["components"].as_object().unwrap().keys() {
                let b = fs::read(data.join(&table).join(format!("{prefix}{c}"))).unwrap();
                files.insert(c.clone(), sha256(&b));
            }
            let old_ref = match e["key_file"].as_str() {
                Some(f) => root.join(f).display().to_string(),
                None => e["key_id"].as_str().unwrap().to_string(),
            };
            let id = manifest_identifier(e);
            assert_eq!(id, scylla_identifier(&data.join(&table), &prefix));
            originals.push(Orig {
                table,
                prefix,
                id,
                files,
                plaintext: e["plaintext_sha256_all"].clone(),
                old_ref,
            });
        }
        let want = if edge_only.is_some() { 2 } else { 3 };
        assert_eq!(originals.len(), want, "the ScyllaDB sweep's SSTables");

        let mut oracle_keys: Vec<OsString> = Vec::new();
        for f in ["keys/old.key", "keys/new.key"] {
            oracle_keys.extend(["--key-file".into(), root.join(f).into()]);
        }
        for l in ring
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(':'))
        {
            let (id, k) = l.rsplit_once(':').unwrap();
            if ["old-128", "new-128"].contains(&id) {
                oracle_keys.extend(["--key".into(), format!("{id}:{}", hex(&b64(k))).into()]);
            }
        }
        ScyllaSet {
            new_key: root.join("keys/new.key"),
            scratch,
            data,
            keyring,
            tables,
            originals,
            oracle_keys,
            oracle: shared(),
            verdicts: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn live(&self) -> usize {
        self.originals.len()
    }

    pub fn root(&self) -> &Path {
        &self.scratch.root
    }

    pub fn rekey_args(&self, data: &Path) -> Vec<String> {
        self.command_args("rekey", data)
    }

    fn command_args(&self, command: &str, data: &Path) -> Vec<String> {
        strings(&[
            command,
            "-q",
            "--to",
            &format!("file:{}", self.new_key.display()),
            "--keyring",
            self.keyring.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--jobs",
            "1",
        ])
    }

    /// A file of an original live SSTable (it may go once its new generation replaced it).
    fn is_original(&self, rel: &Path) -> bool {
        let name = rel.file_name().unwrap().to_str().unwrap_or("");
        self.originals
            .iter()
            .any(|o| rel.parent() == Some(o.table.as_path()) && name.starts_with(&o.prefix))
    }

    /// The oracle's verdict on generation `prefix` in `dir`: the key it opened it with (its
    /// `key_ref`, the key the Scylla.db names) and its `plaintext_sha256_all`.
    fn oracle_verdict(&self, shared: &Path, dir: &Path, prefix: &str) -> Verdict {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
            .collect();
        files.sort();
        let mut all = Vec::new();
        for f in &files {
            all.extend_from_slice(f.file_name().unwrap().as_encoded_bytes());
            all.extend_from_slice(sha256(&fs::read(f).unwrap()).as_bytes());
        }
        let digest = sha256(&all);
        if let Some(v) = self.verdicts.lock().unwrap().get(&digest) {
            return v.clone();
        }
        let mut args: Vec<OsString> =
            vec!["verify".into(), dir.join(format!("{prefix}Data.db")).into()];
        args.extend(self.oracle_keys.iter().cloned());
        let (code, out) = oracle_call(shared, args);
        let v = match code {
            0 => Ok((
                out["key_ref"].as_str().unwrap_or("").to_string(),
                out["plaintext_sha256_all"].clone(),
            )),
            _ => Err(format!("the oracle: exit {code}: {out}")),
        };
        self.verdicts.lock().unwrap().insert(digest, v.clone());
        v
    }

    /// Every table folder as ScyllaDB would start it (files of `skip` left out): the live
    /// generations per folder, with the finding when it would not start or does not hold every
    /// original exactly once.
    fn boot(
        &self,
        data: &Path,
        skip: &BTreeSet<String>,
        when: &str,
        j: &mut Judged,
    ) -> BTreeMap<PathBuf, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        for t in &self.tables {
            let dir = data.join(t);
            let live = match scylla_boot_except(&dir, skip) {
                Ok(l) => l,
                Err(e) => {
                    j.add(
                        "ScyllaDB would not start",
                        format!("{when}: {}: {e}", t.display()),
                    );
                    continue;
                }
            };
            let mut ids: BTreeMap<Vec<u8>, Vec<&String>> = BTreeMap::new();
            for p in &live {
                ids.entry(scylla_identifier(&dir, p)).or_default().push(p);
            }
            for o in self.originals.iter().filter(|o| &o.table == t) {
                match ids.get(&o.id).map(Vec::len).unwrap_or(0) {
                    1 => {}
                    0 => {
                        j.lost += 1;
                        j.add(
                            "SSTable lost",
                            format!(
                                "{when}: {}{} is not in what ScyllaDB would load: {live:?}",
                                t.display(),
                                o.prefix
                            ),
                        );
                    }
                    n => j.add(
                        "SSTable loaded twice",
                        format!(
                            "{when}: {}{}: {n} live generations ({live:?})",
                            t.display(),
                            o.prefix
                        ),
                    ),
                }
            }
            for p in &live {
                let id = scylla_identifier(&dir, p);
                if !self.originals.iter().any(|o| o.id == id) {
                    j.add(
                        "not resolved",
                        format!(
                            "{when}: {}{p}: a live generation of no original",
                            t.display()
                        ),
                    );
                }
            }
            // A live original keeps its files byte for byte.
            for o in self
                .originals
                .iter()
                .filter(|o| &o.table == t && live.contains(&o.prefix))
            {
                for (c, sha) in &o.files {
                    let f = dir.join(format!("{}{c}", o.prefix));
                    if !fs::read(&f).is_ok_and(|b| sha256(&b) == *sha) {
                        j.add(
                            "SSTable changed",
                            format!("{when}: {}{}{c}", t.display(), o.prefix),
                        );
                    }
                }
            }
            out.insert(t.clone(), live);
        }
        out
    }

    /// The live generations (per table folder) whose Scylla.db names the new key file.
    fn under_new_key(&self, data: &Path, live: &BTreeMap<PathBuf, BTreeSet<String>>) -> usize {
        let new = self.new_key.display().to_string();
        live.iter()
            .map(|(t, gens)| {
                gens.iter()
                    .filter(|p| {
                        ScyllaDb::read(&data.join(t).join(format!("{p}Scylla.db")))
                            .secret_key_file()
                            .as_deref()
                            == Some(new.as_str())
                    })
                    .count()
            })
            .sum()
    }

    /// The checks after `recover` (`when`): leftovers, foreign files, every live SSTable opened.
    /// The staging and obsolete folders are [`ScyllaSet::judge_tool_folders`]'.
    fn judge_resolved(
        &self,
        data: &Path,
        before: &State,
        planted: Option<&Path>,
        live: &BTreeMap<PathBuf, BTreeSet<String>>,
        when: &str,
        j: &mut Judged,
    ) {
        let after = state(data);
        let planted_rel = planted.map(|p| p.strip_prefix(data).unwrap_or(p).to_path_buf());
        // Foreign files: byte for byte, with their metadata.
        for (p, s) in before {
            if self.is_original(p) {
                continue;
            }
            match after.get(p) {
                None => {
                    j.foreign += 1;
                    j.add("foreign file removed", format!("{when}: {}", p.display()));
                }
                Some(t) if t != s => {
                    j.foreign += 1;
                    j.add("foreign file changed", format!("{when}: {}", p.display()));
                }
                _ => {}
            }
        }
        // Leftovers: nothing but the files of live generations in the table folders.
        if data.join(JOURNALS).exists() {
            j.add(
                "not resolved",
                format!("{when}: the journal folder is left"),
            );
        }
        for p in after.keys() {
            if before.contains_key(p)
                || planted_rel.as_deref() == Some(p.as_path())
                || p.starts_with(STAGING)
                || p.starts_with(OBSOLETE)
            {
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap_or("");
            let in_live = p.parent().and_then(|t| live.get(t)).is_some_and(|gens| {
                !name.ends_with(".tmp") && scylla_prefix(name).is_some_and(|g| gens.contains(&g))
            });
            if !in_live {
                j.add("not resolved", format!("{when}: left: {}", p.display()));
            }
        }
        // Every live SSTable opens, with the key its Scylla.db names, to its plaintext.
        let Some(shared) = &self.oracle else { return };
        let new = self.new_key.display().to_string();
        for (t, gens) in live {
            let dir = data.join(t);
            for p in gens {
                let id = scylla_identifier(&dir, p);
                let Some(o) = self.originals.iter().find(|o| o.id == id) else {
                    continue;
                };
                match self.oracle_verdict(shared, &dir, p) {
                    Ok((key, plain))
                        if plain == o.plaintext && (key == o.old_ref || key == new) => {}
                    Ok((key, plain)) => j.add(
                        "SSTable does not open to its plaintext",
                        format!(
                            "{when}: {}{p}: key {key}, plaintext {plain} (want {} under {} or {new})",
                            t.display(),
                            o.plaintext,
                            o.old_ref
                        ),
                    ),
                    Err(e) => j.add(
                        "SSTable does not open to its plaintext",
                        format!("{when}: {}{p}: {e}", t.display()),
                    ),
                }
            }
        }
    }
}

type OracleJob = (Vec<OsString>, mpsc::Sender<(i32, Value)>);

/// The oracle, called from one thread that never ends: its Python workers are that thread's
/// children, never those of a thread the injector traces from (its `waitpid(-1, __WNOTHREAD)`
/// would wait for them forever).
fn oracle_call(shared: &Path, args: Vec<OsString>) -> (i32, Value) {
    static JOBS: OnceLock<Mutex<mpsc::Sender<OracleJob>>> = OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<OracleJob>();
        let shared = shared.to_path_buf();
        std::thread::spawn(move || {
            for (args, reply) in rx {
                let _ = reply.send(scylla_oracle(&shared, &args));
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    jobs.lock().unwrap().send((args, tx)).unwrap();
    rx.recv().expect("the oracle thread answers")
}

/// The data set of a Scylla command.
fn set(sw: &Sweep, kind: CmdKind) -> &ScyllaSet {
    match kind {
        CmdKind::StageScylla | CmdKind::RekeyScyllaStaged => sw.scylla_small.as_ref(),
        _ => sw.scylla.as_ref(),
    }
    .expect("the ScyllaDB data set")
}

/// A Scylla command's line (with its `--report` for rekey and stage).
pub fn args(sw: &Sweep, kind: CmdKind, data: &Path) -> Vec<String> {
    let command = match kind {
        CmdKind::RecoverScylla { .. } => {
            return strings(&["recover", "--data-dir", data.to_str().unwrap()])
        }
        CmdKind::StageScylla => "stage",
        _ => "rekey",
    };
    let mut a = set(sw, kind).command_args(command, data);
    a.push("--report".into());
    a.push(report_path(data).display().to_string());
    a
}

fn journals(data: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if data.join(JOURNALS).is_dir() {
        walk(&data.join(JOURNALS), &mut v);
    }
    v
}

/// Every file under `data`'s folder `name` (none when it is not there).
fn files_in(data: &Path, name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if data.join(name).is_dir() {
        walk(&data.join(name), &mut v);
    }
    v
}

/// The file planted by "another process" is as it was planted (`when`: the moment judged).
fn planted_intact(planted: Option<&Path>, when: &str, j: &mut Judged) {
    let Some(p) = planted else { return };
    let what = match fs::read(p) {
        Ok(b) if b == PLANTED => return,
        Ok(_) => "foreign file changed",
        Err(_) => "foreign file removed",
    };
    j.foreign += 1;
    j.add(
        what,
        format!("{} (planted by another process, {when})", p.display()),
    );
}

/// Why a staging entry with a manifest cannot be committed as it is, if it cannot.
enum Unfit {
    /// A staged file is missing or of another length than its manifest's: a rekey finds it
    /// stale by its sizes and discards it (no loss: the SSTable is rewritten instead).
    Stale(String),
    /// The manifest is unreadable, a staged file has the manifest's length but not its CRC32
    /// (a rekey that checks sizes would commit it), or a source changed.
    Wrong(String),
}

/// A staging entry with a manifest, checked independently of the tool: its files against the
/// manifest's sizes and CRC32, and (`sources`) its sources' identities against the files now.
fn entry_unfit(dir: &Path, sources: bool) -> Option<Unfit> {
    let text = fs::read_to_string(dir.join("manifest.json")).ok()?;
    let m: Value = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return Some(Unfit::Wrong(format!("manifest: {e}"))),
    };
    let files = m["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        return Some(Unfit::Wrong("the manifest names no file".into()));
    }
    let mut stale = None;
    for f in &files {
        let c = f["component"].as_str().unwrap_or("?");
        match fs::read(dir.join(c)) {
            Err(e) => stale = Some(format!("{c}: {e}")),
            Ok(b) if Some(b.len() as u64) != f["size"].as_u64() => {
                stale = Some(format!(
                    "{c}: {} bytes, the manifest says {}",
                    b.len(),
                    f["size"]
                ))
            }
            Ok(b) if Some(crc32fast::hash(&b) as u64) != f["crc32"].as_u64() => {
                return Some(Unfit::Wrong(format!(
                    "{c}: the manifest's size, but CRC32 {:08x}, the manifest says {}",
                    crc32fast::hash(&b),
                    f["crc32"]
                )))
            }
            Ok(_) => {}
        }
    }
    if let Some(s) = stale {
        return Some(Unfit::Stale(s));
    }
    if sources {
        let source = Path::new(m["source"].as_str().unwrap_or(""));
        let prefix = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix("Data.db"))
            .unwrap_or("?");
        for s in m["sources"].as_array().cloned().unwrap_or_default() {
            let c = s["component"].as_str().unwrap_or("?");
            let p = source.with_file_name(format!("{prefix}{c}"));
            let same = fs::symlink_metadata(&p).is_ok_and(|now| {
                Some(now.ino()) == s["ino"].as_u64()
                    && Some(now.size()) == s["size"].as_u64()
                    && Some(now.mtime() * 1_000_000_000 + now.mtime_nsec())
                        == s["mtime_ns"].as_i64()
            });
            if !same {
                return Some(Unfit::Wrong(format!(
                    "source {} is not the file it was staged from",
                    p.display()
                )));
            }
        }
    }
    None
}

impl ScyllaSet {
    /// The tool's staging and obsolete folders at `when` (`live`: the generations ScyllaDB
    /// would load then). A staging entry may lack its manifest (an interrupted `stage`: the
    /// next run removes it) or, with `whole` unset, be stale by its sizes; never does a staged
    /// file keep its manifest's size with other bytes. With `whole` (after `stage`), every
    /// entry with a manifest holds what it says, made from the files now there. The obsolete
    /// folder holds only files of original generations no longer live, byte for byte.
    /// Returns the entries fit to commit.
    fn judge_tool_folders(
        &self,
        data: &Path,
        live: &BTreeMap<PathBuf, BTreeSet<String>>,
        planted: Option<&Path>,
        whole: bool,
        when: &str,
        j: &mut Judged,
    ) -> usize {
        let entries: BTreeSet<PathBuf> = files_in(data, STAGING)
            .into_iter()
            .filter(|p| Some(p.as_path()) != planted)
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        let mut fit = 0;
        for e in &entries {
            let rel = e.strip_prefix(data).unwrap_or(e).display();
            match entry_unfit(e, whole) {
                None if e.join("manifest.json").exists() => fit += 1,
                None => {}
                Some(Unfit::Stale(why)) if whole => {
                    j.add("staging entry not whole", format!("{when}: {rel}: {why}"))
                }
                Some(Unfit::Stale(_)) => {}
                Some(Unfit::Wrong(why)) => {
                    j.add("staging entry wrong", format!("{when}: {rel}: {why}"))
                }
            }
        }
        let root = data.join(OBSOLETE);
        for p in files_in(data, OBSOLETE) {
            let rel = p.strip_prefix(&root).unwrap();
            let (table, name) = (rel.parent().unwrap(), rel.file_name().unwrap().to_str());
            let o = self
                .originals
                .iter()
                .find(|o| o.table == table && name.is_some_and(|n| n.starts_with(&o.prefix)));
            let why = match o {
                None => Some("not a file of an original SSTable".to_string()),
                Some(o) if live.get(table).is_some_and(|g| g.contains(&o.prefix)) => {
                    Some(format!("{} is still live", o.prefix))
                }
                Some(o) => {
                    let c = &name.unwrap()[o.prefix.len()..];
                    let same = fs::read(&p).is_ok_and(|b| o.files.get(c) == Some(&sha256(&b)));
                    (!same).then(|| "not the original's file byte for byte".to_string())
                }
            };
            if let Some(why) = why {
                j.add(
                    "obsolete folder holds what is not replaced",
                    format!("{when}: {}: {why}", rel.display()),
                );
            }
        }
        fit
    }
}

/// One run of a Scylla command under the injector, and the checks (module comment).
pub fn run(
    cmd: &Cmd,
    sw: &Sweep,
    dir: &Path,
    fault: Option<Fault>,
    record: bool,
) -> (Traced, Judged) {
    let sc = set(sw, cmd.kind);
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    let data = dir.join("data");
    copy_tree(&cmd.template, &data);
    let before = state(&data);
    match cmd.kind {
        CmdKind::RecoverScylla { failpoint, .. } => {
            let mut env = ENV.to_vec();
            env.push((sstable_rekey::rekey::failpoint::ENV, failpoint));
            let r = run_in(sc.root(), &sc.rekey_args(&data), &env);
            let left = journals(&data);
            assert!(
                r.code == 128 + libc::SIGABRT && left.len() == 1,
                "the rekey crashed at {failpoint} should leave one journal: {left:?}\n{}",
                r.all()
            );
        }
        CmdKind::RekeyScyllaStaged => {
            // Manifests name their sources by path and inode: staged on this very copy.
            let r = run_in(sc.root(), &sc.command_args("stage", &data), ENV);
            let mut j = Judged::default();
            let fit = sc.judge_tool_folders(&data, &BTreeMap::new(), None, true, "staged", &mut j);
            assert!(
                r.code == 0 && fit == sc.live() && j.findings.is_empty(),
                "staging the copy: {fit} entries, {:?}\n{}",
                j.findings,
                r.all()
            );
        }
        _ => {}
    }
    let ready = state(&data);
    let ready_dirs = dirs(&data);
    let kinds = match fault {
        Some(f) => vec![f.kind],
        None => sw.kinds.clone(),
    };
    let t = traced(
        sc.root(),
        &args(sw, cmd.kind, &data),
        ENV,
        &kinds,
        fault,
        record,
        TIMEOUT,
    );
    let mut j = Judged::default();
    judge_exit(&t, fault.is_some(), &mut j);
    judge_fail_open(&t, fault, cmd.baseline, &mut j);
    let eintr = fault.is_some_and(|f| f.errno == libc::EINTR);
    let planted = t.planted.clone();
    planted_intact(planted.as_deref(), "after the run", &mut j);
    let mut written = state_diff(&ready, &state(&data));
    if let Some(p) = &planted {
        let rel = p.strip_prefix(&data).unwrap_or(p);
        written.retain(|d| d != &format!("added {}", rel.display()));
    }
    if t.run.code == 2 && !written.is_empty() {
        j.add(
            "exit 2 after writing",
            format!(
                "\"nothing was written\" is not true: {}",
                written.join(", ")
            ),
        );
    }
    if cmd.kind == CmdKind::StageScylla {
        let outside = |d: &PathBuf| !d.starts_with(STAGING);
        let folders = |d: BTreeSet<PathBuf>| d.into_iter().filter(outside).collect::<Vec<_>>();
        written.retain(|d| !d.contains(STAGING));
        if folders(dirs(&data)) != folders(ready_dirs) {
            written.push("folders added or removed".into());
        }
        judge_stage(sc, &t, &data, &written, planted.as_deref(), eintr, &mut j);
    } else {
        let run = (&t, eintr);
        judge_swap(
            cmd.kind,
            sc,
            run,
            &data,
            &before,
            planted.as_deref(),
            &mut j,
        );
    }

    // An unfaulted rekey finishes the job (the planted file taken back by its owner first; one
    // in the staging folder is the tool's to remove).
    if let Some(p) = planted
        .as_ref()
        .filter(|p| !p.starts_with(data.join(STAGING)))
    {
        let _ = fs::remove_file(p);
    }
    let r = run_in(sc.root(), &sc.rekey_args(&data), ENV);
    if r.code != 0 {
        j.add(
            "rekey after the fault failed",
            format!("exit {}: {}", r.code, last_line(&r)),
        );
    }
    let mut k = Judged::default();
    let when = "after the final rekey";
    let last = sc.boot(&data, &BTreeSet::new(), when, &mut k);
    let done = sc.under_new_key(&data, &last);
    if done != sc.live() || !journals(&data).is_empty() {
        k.add(
            "not done after recover and rekey",
            format!("{done} of {} under the new key", sc.live()),
        );
    }
    let staged = files_in(&data, STAGING);
    if staged.iter().any(|p| p.ends_with("manifest.json")) || data.join(OBSOLETE).exists() {
        k.add(
            "tool folder left after the final rekey",
            format!("{staged:?}, {:?}", files_in(&data, OBSOLETE)),
        );
    } else if data.join(STAGING).exists() {
        // Entries without a manifest (a failed stage's, a name planted in one) are the next
        // `stage`'s to remove (README), not the rekey's.
        let s = run_in(sc.root(), &sc.command_args("stage", &data), ENV);
        if s.code != 0 || !files_in(&data, STAGING).is_empty() {
            k.add(
                "staging folder left after the next stage",
                format!("exit {}: {:?}", s.code, files_in(&data, STAGING)),
            );
        }
    }
    if matches!(cmd.kind, CmdKind::StageScylla | CmdKind::RekeyScyllaStaged) {
        // What the final rekey committed of the entries the faulted run left, opened.
        sc.judge_resolved(&data, &before, None, &last, when, &mut k);
    }
    let v = run_in(
        sc.root(),
        &strings(&[
            "verify",
            "--key",
            &format!("file:{}", sc.new_key.display()),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        ENV,
    );
    if v.code != 0 {
        k.add(
            "verify after the final rekey failed",
            format!("exit {}: {}", v.code, last_line(&v)),
        );
    }
    // Counted once: what the final rekey finds lost was lost by the run.
    if j.lost == 0 {
        j.lost = k.lost;
    }
    j.findings.extend(k.findings);
    (t, j)
}

/// `stage`: nothing written outside the staging folder (`written`: every change there was), every
/// entry left whole and valid, and exit 0 only with every SSTable staged.
fn judge_stage(
    sc: &ScyllaSet,
    t: &Traced,
    data: &Path,
    written: &[String],
    planted: Option<&Path>,
    eintr: bool,
    j: &mut Judged,
) {
    let code = t.run.code;
    if !written.is_empty() {
        j.add("stage wrote outside its staging folder", written.join(", "));
    }
    let fit = sc.judge_tool_folders(data, &BTreeMap::new(), planted, true, "after the stage", j);
    if code == 0 {
        if let Err(e) = check_report(CmdKind::StageScylla, &report_path(data), sc.live()) {
            j.add("exit 0 with a wrong report", e);
        }
        if fit != sc.live() {
            j.add(
                "exit 0 but not done",
                format!("{fit} of {} SSTables staged", sc.live()),
            );
        }
    }
    if eintr && code != 0 {
        j.add(
            "EINTR not retried",
            format!("exit {code}: {}", last_line(&t.run)),
        );
    }
}

/// A swap (`rekey`, `recover`): the folders as ScyllaDB would start them right after the run and
/// after a `recover` without fault (each original exactly once, `recover` resolving as a start
/// would), journals, the tool's folders, every live SSTable opened, and the exit status.
fn judge_swap(
    kind: CmdKind,
    sc: &ScyllaSet,
    (t, eintr): (&Traced, bool),
    data: &Path,
    before: &State,
    planted: Option<&Path>,
    j: &mut Judged,
) {
    let code = t.run.code;
    let is_recover = matches!(kind, CmdKind::RecoverScylla { .. });
    let skip: BTreeSet<String> = planted
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();

    // The folder as ScyllaDB would start it now.
    let booted = sc.boot(data, &skip, "before recover", j);
    sc.judge_tool_folders(data, &booted, planted, false, "before recover", j);
    let left = journals(data);
    let left: Vec<&PathBuf> = left
        .iter()
        .filter(|p| Some(p.as_path()) != planted)
        .collect();
    let n = Left::Journals(left.len());
    judge_left_for_recover(j, n, code, &t.run, is_recover, &left);
    if code == 0 && !is_recover {
        let new = sc.under_new_key(data, &booted);
        if new != sc.live() || !left.is_empty() {
            j.add(
                "exit 0 but not done",
                format!(
                    "{new} of {} SSTables under the new key, {} journals",
                    sc.live(),
                    left.len()
                ),
            );
        }
        // Without --purge-later the replaced files are purged before exit 0.
        if data.join(OBSOLETE).exists() {
            j.add(
                "exit 0 but not done",
                format!("{OBSOLETE} left: {:?}", files_in(data, OBSOLETE)),
            );
        }
        match fs::read_to_string(report_path(data))
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str::<Value>(&s).map_err(|e| e.to_string()))
        {
            Ok(v) if v["totals"]["rekeyed"] == sc.live() && v["totals"]["failed"] == 0 => {}
            Ok(v) => j.add(
                "exit 0 with a wrong report",
                format!("totals {}", v["totals"]),
            ),
            Err(e) => j.add("exit 0 with a wrong report", e),
        }
        for table in [
            "\"scylla_edge\".\"t_snap\"",
            "\"scylla_matrix\".\"t_kmip_CBC_128\"",
        ] {
            if !t.run.stdout.contains(&format!(
                "ALTER TABLE {table} WITH scylla_encryption_options"
            )) {
                j.add(
                    "exit 0 without an ALTER TABLE",
                    format!("the statement for {table} is missing"),
                );
            }
        }
    }
    if eintr && (code != 0 || !left.is_empty()) {
        j.add(
            "EINTR not retried",
            format!("exit {code}: {}", last_line(&t.run)),
        );
    }

    // A name planted in the journal folder is not a journal: recover rightly refuses it, and its
    // owner takes it back.
    let taken_back = planted
        .filter(|p| p.starts_with(data.join(JOURNALS)))
        .is_some_and(|p| fs::remove_file(p).is_ok());
    let rec = run_in(
        sc.root(),
        &strings(&["recover", "--data-dir", data.to_str().unwrap()]),
        ENV,
    );
    if rec.code != 0 {
        j.add(
            "recover after the fault failed",
            format!("exit {}: {}", rec.code, last_line(&rec)),
        );
    }
    if !taken_back {
        planted_intact(planted, "after recover", j);
    }
    let when = "after recover";
    let resolved = sc.boot(data, &skip, when, j);
    if j.findings
        .iter()
        .all(|f| f.what != "ScyllaDB would not start")
        && resolved != booted
    {
        j.add(
            "recover resolved otherwise than ScyllaDB would",
            format!("ScyllaDB would have loaded {booted:?}, recover left {resolved:?}"),
        );
    }
    sc.judge_resolved(data, before, planted, &resolved, when, j);
    sc.judge_tool_folders(data, &resolved, planted, false, when, j);
    let new = sc.under_new_key(data, &resolved);
    match kind {
        CmdKind::RecoverScylla { committed, .. } if new != committed as usize => {
            j.add(
                "journal resolved the wrong way",
                format!(
                    "{new} SSTables under the new key, {} expected",
                    committed as usize
                ),
            );
        }
        CmdKind::RecoverScylla { .. } => {}
        _ if eintr && new != sc.live() => {
            j.add(
                "EINTR not retried",
                format!("{new} of {} rekeyed", sc.live()),
            );
        }
        _ => {}
    }
}
