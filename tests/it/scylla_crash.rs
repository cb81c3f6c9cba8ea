//! Crash safety of the ScyllaDB swap (FORMAT.md 4.9): a rekey of one ScyllaDB table crashed (or
//! failed) at every failpoint of the swap, judged by an independent model of ScyllaDB's startup
//! rule written from FORMAT.md 4.9, not from the crate (`support::scylla_boot`, shared with the
//! fault sweep: a generation with a TOC.txt.tmp is deleted; one with a TOC.txt is loaded; one with
//! neither stops the node):
//! - before `recover`, the folder as ScyllaDB would start it holds every original SSTable exactly
//!   once (by its Scylla.db SSTableIdentifier, which a rekey keeps), and never stops the node;
//! - `recover` resolves it to that same set, with no TOC.txt.tmp, journal or stray file left;
//! - every SSTable left opens, with the key its Scylla.db names, to its MANIFEST plaintext (the
//!   ScyllaDB oracle of ../shared, when present);
//! - an unfaulted rekey then brings the whole table under the new key.
//!
//! `random_sigkill_of_the_scylla_rekey_then_recover` does the same after SIGKILLs of a whole
//! `rekey` at random instants (seeded: `CRASH_SEED`, `CRASH_KILLS_SCYLLA`), over SSTables large
//! enough (`support::write_scylla_sstable`, ~3 MiB each) that kills land while files are
//! re-ciphered, before and after commit renames.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::oracle::{scylla_oracle, shared};
use crate::support::{
    manifest_identifier as hex_id, require_failpoints, scylla_boot,
    scylla_identifier as identifier, scylla_key_line, scylla_manifest, scylla_prefix as prefix,
    seed_from_env, strings, write_scylla_sstable, Rng, Scratch, ScyllaDb,
};

const TABLE: &str = "t_local_CBC_128";

fn variants() -> Vec<String> {
    let mut v = Vec::new();
    for (name, ks) in [
        ("scylla.doomed", 1..=1),
        ("component.linked", 1..=8),
        ("dir.fsynced", 1..=1),
        ("scylla.committed", 1..=1),
        ("old.deleted", 1..=9),
    ] {
        for k in ks {
            let base = if k == 1 {
                name.to_string()
            } else {
                format!("{name}@{k}")
            };
            v.push(base.clone());
            v.push(format!("{base}:error"));
        }
    }
    v
}

#[test]
fn every_failpoint_of_the_scylla_swap_resolves_like_scylla_startup() {
    every_failpoint(false);
}

/// The same for the commit of staged copies (`stage` first, unfaulted): the staged files are
/// renamed in instead of written, the old files moved aside instead of deleted.
#[test]
fn every_failpoint_of_a_staged_scylla_swap_resolves_like_scylla_startup() {
    every_failpoint(true);
}

fn every_failpoint(staged: bool) {
    require_failpoints();
    let shared = shared();
    let originals: Vec<&serde_json::Value> = scylla_manifest()
        .iter()
        .filter(|e| e["table"] == TABLE && e["location"] == "live")
        .collect();
    assert_eq!(originals.len(), 4, "the table's SSTables");
    let mut failures = Vec::new();
    let mut fired = 0;
    for v in variants() {
        let env = Scratch::of(&["scylla", "keys"]);
        let data = env.s("scylla/data");
        let dir = crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), TABLE);
        let ids_before: BTreeSet<Vec<u8>> = scylla_boot(&dir)
            .unwrap()
            .iter()
            .map(|p| identifier(&dir, p))
            .collect();
        let mut args = strings(&["rekey", "-q", "--to"]);
        args.push(format!("file:{}", env.s("keys/new.key")));
        args.extend(strings(&["--data-dir", &data, "scylla_matrix", TABLE]));
        if staged {
            let mut stage = args.clone();
            stage[0] = "stage".into();
            let st = crate::support::run_in(&env.root, &stage, &[]);
            assert_eq!(st.code, 0, "{}", st.all());
            let mut files = Vec::new();
            crate::support::walk(&env.p("scylla/data/.sstable-rekey-staging"), &mut files);
            let manifests = files.iter().filter(|f| f.ends_with("manifest.json"));
            assert_eq!(manifests.count(), originals.len(), "staged: {files:?}");
        }
        let r = crate::support::run_in(&env.root, &args, &[("SSTABLE_REKEY_TEST_FAILPOINT", &v)]);
        let error = v.ends_with(":error");
        let hit = r.all().contains("injected failure") || r.stderr.contains("aborting");
        fired += hit as usize;
        let outcome = (|| -> Result<(), String> {
            match (hit, error) {
                (false, _) if r.code != 0 => return Err(format!("not fired, exit {}", r.code)),
                (true, false) if r.code != 134 => return Err(format!("crash: exit {}", r.code)),
                (true, true) if r.code != 1 => return Err(format!("error: exit {}", r.code)),
                _ => {}
            }
            // As ScyllaDB would start the folder now.
            let live = scylla_boot(&dir)?;
            let ids: Vec<Vec<u8>> = live.iter().map(|p| identifier(&dir, p)).collect();
            let set: BTreeSet<Vec<u8>> = ids.iter().cloned().collect();
            if ids.len() != set.len() || set != ids_before {
                return Err(format!(
                    "before recover, ScyllaDB would load {live:?}: not each original once"
                ));
            }
            let rec =
                crate::support::run_in(&env.root, &strings(&["recover", "--data-dir", &data]), &[]);
            if rec.code != 0 {
                return Err(format!("recover: exit {}: {}", rec.code, rec.all()));
            }
            let after = scylla_boot(&dir)?;
            if after != live {
                return Err(format!(
                    "recover left {after:?}, ScyllaDB would have kept {live:?}"
                ));
            }
            for e in fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                if n.ends_with(".tmp") || prefix(&n).is_some_and(|p| !live.contains(&p)) {
                    return Err(format!("left after recover: {n}"));
                }
            }
            if env.p("scylla/data/.sstable-rekey-scylla").exists() {
                return Err("the journal folder is left after recover".into());
            }
            if let Some(shared) = &shared {
                for p in &live {
                    let d = dir.join(format!("{p}Data.db"));
                    let sdb = ScyllaDb::read(&dir.join(format!("{p}Scylla.db")));
                    let key = sdb.secret_key_file().unwrap_or_default();
                    let args: Vec<OsString> = vec![
                        "verify".into(),
                        d.clone().into(),
                        "--key-file".into(),
                        key.into(),
                    ];
                    let (code, out) = scylla_oracle(shared, &args);
                    let want = originals
                        .iter()
                        .find(|e| identifier(&dir, p) == hex_id(e))
                        .map(|e| e["plaintext_sha256_all"].clone());
                    if code != 0 || Some(out["plaintext_sha256_all"].clone()) != want {
                        return Err(format!("{p}: the oracle: exit {code}: {out}"));
                    }
                }
            }
            let again = crate::support::run_in(&env.root, &args, &[]);
            if again.code != 0 {
                return Err(format!("the rekey after recover: {}", again.all()));
            }
            let v = crate::support::run_in(
                &env.root,
                &strings(&[
                    "verify",
                    "--key",
                    &format!("file:{}", env.s("keys/new.key")),
                    "--data-dir",
                    &data,
                    "scylla_matrix",
                    TABLE,
                ]),
                &[],
            );
            if v.code != 0 {
                return Err(format!("verify after the final rekey: {}", v.all()));
            }
            for left in [".sstable-rekey-staging", ".sstable-rekey-obsolete"] {
                if env.p("scylla/data").join(left).exists() {
                    return Err(format!("{left} is left after the final rekey"));
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            failures.push(format!("{v}: {e}\n{}", r.all()));
        }
    }
    println!(
        "scylla swap failpoints (staged: {staged}): {} variants, {fired} fired",
        variants().len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        fired >= variants().len() - 4,
        "most variants must fire: {fired}"
    );
}

/// A rekey given a relative `--data-dir`, crashed after its commit rename: the journal names the
/// folder absolutely, so `recover` (relative or absolute) finishes the swap.
#[test]
fn a_journal_from_a_relative_data_dir_is_recovered() {
    require_failpoints();
    let env = Scratch::of(&["scylla", "keys"]);
    let rel = env
        .p("scylla/data")
        .strip_prefix(env.tmp.path())
        .unwrap()
        .display()
        .to_string();
    let mut args = strings(&["rekey", "-q", "--to"]);
    args.push(format!("file:{}", env.s("keys/new.key")));
    args.extend(strings(&["--data-dir", &rel, "scylla_matrix", TABLE]));
    let r = crate::support::run_in(
        env.tmp.path(),
        &args,
        &[("SSTABLE_REKEY_TEST_FAILPOINT", "scylla.committed")],
    );
    assert_eq!(r.code, 134, "{}", r.all());
    let rec = crate::support::run_in(
        env.tmp.path(),
        &strings(&["recover", "--data-dir", &rel]),
        &[],
    );
    assert_eq!(rec.code, 0, "{}", rec.all());
    assert!(rec.stdout.contains("finished"), "{}", rec.all());
    let dir = crate::support::table_dir(&env.p("scylla/data/scylla_matrix"), TABLE);
    assert_eq!(scylla_boot(&dir).unwrap().len(), 4);
    assert!(!env.p("scylla/data/.sstable-rekey-scylla").exists());
}

/// An empty journal (its write failed and removing it failed too, or a crash right after it was
/// created) had no swap: `recover` removes it, leaves every table folder as it was, and a rekey
/// can run again; a journal that is not empty but unreadable still stops `recover`.
#[test]
fn an_empty_journal_is_removed_and_an_unreadable_one_stops_recover() {
    let env = Scratch::of(&["scylla", "keys"]);
    let data = env.s("scylla/data");
    let journals = env.p("scylla/data/.sstable-rekey-scylla");
    fs::create_dir(&journals).unwrap();
    let before = crate::support::tree_strict(&env.p("scylla/data/scylla_matrix"));
    let empty = journals.join("0-me-99-big.json");
    fs::write(&empty, b"").unwrap();
    let recover = strings(&["recover", "--data-dir", &data]);
    let rec = crate::support::run_in(&env.root, &recover, &[]);
    assert_eq!(rec.code, 0, "{}", rec.all());
    assert!(!empty.exists() && !journals.exists(), "{}", rec.all());
    let after = crate::support::tree_strict(&env.p("scylla/data/scylla_matrix"));
    assert_eq!(before, after);

    // An empty file not named as a journal is not the tool's: it stops recover and stays.
    fs::create_dir(&journals).unwrap();
    let foreign = journals.join("notes.txt");
    fs::write(&foreign, b"").unwrap();
    let rec = crate::support::run_in(&env.root, &recover, &[]);
    assert_eq!(rec.code, 1, "{}", rec.all());
    assert!(foreign.exists(), "{}", rec.all());
    fs::remove_file(&foreign).unwrap();

    let garbage = journals.join("0-me-98-big.json");
    fs::write(&garbage, b"{\"dir\":").unwrap();
    let rec = crate::support::run_in(&env.root, &recover, &[]);
    assert_eq!(rec.code, 1, "{}", rec.all());
    assert!(
        garbage.exists() && rec.all().contains("not a journal"),
        "{}",
        rec.all()
    );
}

// ------------------------------------------------------------------ random SIGKILL

/// The data set of the random SIGKILL trials: two tables of three ScyllaDB SSTables each
/// (`support::write_scylla_sstable`, ~3 MiB of Data.db each, so that kills land while files are
/// re-ciphered), under a local key file `old.key`; `new.key` is the target.
struct KillSet {
    _tmp: crate::support::FastDir,
    root: PathBuf,
    pristine: PathBuf,
    new_key: PathBuf,
    /// Table folder (relative to a data dir) → the original generations' prefixes.
    tables: BTreeMap<PathBuf, BTreeSet<String>>,
    /// SSTableIdentifier → (table folder, `plaintext_sha256_all` of its plaintext).
    originals: BTreeMap<Vec<u8>, (PathBuf, String)>,
}

const KILL_TABLES: [&str; 2] = [
    "crash/big_a-0123456789abcdef0123456789abcdef",
    "crash/big_b-fedcba9876543210fedcba9876543210",
];

fn kill_set(rng: &mut Rng) -> KillSet {
    let tmp = crate::support::fast_tempdir();
    let root = tmp.path().canonicalize().unwrap();
    let pristine = root.join("pristine");
    let (mut old, mut new) = (vec![0u8; 16], vec![0u8; 16]);
    rng.fill(&mut old);
    rng.fill(&mut new);
    let (old_key, new_key) = (root.join("old.key"), root.join("new.key"));
    for (p, k) in [(&old_key, &old), (&new_key, &new)] {
        fs::write(p, scylla_key_line(k)).unwrap();
        crate::support::chmod(p, 0o600);
    }
    let mut tables = BTreeMap::new();
    let mut originals = BTreeMap::new();
    for t in KILL_TABLES {
        let dir = pristine.join(t);
        fs::create_dir_all(&dir).unwrap();
        let mut prefixes = BTreeSet::new();
        for g in 1..=3u32 {
            let size = (5 << 19) + rng.below(1 << 20) as usize;
            let (data, digest) = write_scylla_sstable(&dir, g, size, &old, &old_key, rng);
            let p = prefix(&data.file_name().unwrap().to_string_lossy()).unwrap();
            originals.insert(identifier(&dir, &p), (PathBuf::from(t), digest));
            prefixes.insert(p);
        }
        tables.insert(PathBuf::from(t), prefixes);
    }
    KillSet {
        _tmp: tmp,
        root,
        pristine,
        new_key,
        tables,
        originals,
    }
}

impl KillSet {
    fn rekey_args(&self, data: &Path, jobs: usize) -> Vec<String> {
        let mut args = strings(&["rekey", "-q", "--jobs", &jobs.to_string(), "--to"]);
        args.push(format!("file:{}", self.new_key.display()));
        args.extend(strings(&["--data-dir", &data.display().to_string()]));
        args
    }

    fn copy(&self, to: &Path) {
        crate::support::copy_tree(&self.pristine, to);
    }

    /// ScyllaDB's startup over every table folder of `data`: the live generations per folder, or
    /// why the node would not start or would not hold every original SSTable exactly once.
    fn boot(&self, data: &Path) -> Result<BTreeMap<PathBuf, BTreeSet<String>>, String> {
        let mut out = BTreeMap::new();
        for t in self.tables.keys() {
            let dir = data.join(t);
            let live = scylla_boot(&dir).map_err(|e| format!("{}: {e}", t.display()))?;
            let mut ids: Vec<Vec<u8>> = live.iter().map(|p| identifier(&dir, p)).collect();
            ids.sort();
            let want: Vec<Vec<u8>> = self
                .originals
                .iter()
                .filter(|(_, (tt, _))| tt == t)
                .map(|(id, _)| id.clone())
                .collect();
            if ids != want {
                return Err(format!(
                    "{}: ScyllaDB would load {live:?}: not each original SSTable exactly once",
                    t.display()
                ));
            }
            out.insert(t.clone(), live);
        }
        Ok(out)
    }

    /// Where the kill landed, from the table folders alone: a generation holding a TOC.txt.tmp is
    /// a new copy not yet sealed (before its commit rename: still being written, or written and
    /// holding its TOC.txt too) or, when it is an original, an old SSTable the commit rename
    /// doomed (after it). Returns (writing, written, committed) counts.
    fn in_flight(&self, data: &Path) -> (usize, usize, usize) {
        let (mut writing, mut written, mut committed) = (0, 0, 0);
        for (t, originals) in &self.tables {
            let dir = data.join(t);
            for e in fs::read_dir(&dir).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                if let Some(p) = n.strip_suffix("TOC.txt.tmp") {
                    if originals.contains(p) {
                        committed += 1;
                    } else if dir.join(format!("{p}TOC.txt")).exists() {
                        written += 1;
                    } else {
                        writing += 1;
                    }
                }
            }
        }
        (writing, written, committed)
    }

    /// Waits until a commit rename has doomed `k` original SSTables of `data` (its TOC.txt.tmp
    /// seen, or any of its files gone) or `child` has exited, watching by `stat` alone (an open
    /// folder would make the rekey refuse to start: another process has the tables open).
    fn wait_for_commits(&self, data: &Path, k: usize, child: &mut std::process::Child) {
        let mut marks: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
        for (t, ps) in &self.tables {
            for p in ps {
                let files = fs::read_dir(self.pristine.join(t))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.starts_with(p.as_str()))
                    .map(|n| data.join(t).join(n))
                    .collect();
                marks.push((data.join(t).join(format!("{p}TOC.txt.tmp")), files));
            }
        }
        let mut seen = vec![false; marks.len()];
        while child.try_wait().unwrap().is_none() {
            for (j, (tmp, files)) in marks.iter().enumerate() {
                seen[j] = seen[j] || tmp.exists() || files.iter().any(|f| !f.exists());
            }
            if seen.iter().filter(|s| **s).count() >= k {
                return;
            }
        }
    }

    /// After a kill: the folders as ScyllaDB would start them hold each original once; so do they
    /// after `recover`, which keeps what ScyllaDB would have kept and leaves no TOC.txt.tmp,
    /// journal or stray file; every live SSTable opens to its original plaintext (the oracle,
    /// when given); then a rekey finishes and `verify --key NEW` passes. Returns how many
    /// SSTables the kill left under the new key (0 without the oracle).
    fn resolve_kill(
        &self,
        shared: Option<&Path>,
        data: &Path,
        jobs: usize,
    ) -> Result<usize, String> {
        let live = self
            .boot(data)
            .map_err(|e| format!("before recover: {e}"))?;
        let rec = crate::support::run_in(
            &self.root,
            &strings(&["recover", "--data-dir", &data.display().to_string()]),
            &[],
        );
        if rec.code != 0 {
            return Err(format!("recover: {}", rec.all()));
        }
        let after = self.boot(data).map_err(|e| format!("after recover: {e}"))?;
        if after != live {
            return Err(format!(
                "recover left {after:?}, ScyllaDB would have kept {live:?}"
            ));
        }
        for (t, ps) in &after {
            for e in fs::read_dir(data.join(t)).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                if n.ends_with(".tmp") || prefix(&n).is_none_or(|p| !ps.contains(&p)) {
                    return Err(format!("left after recover: {}/{n}", t.display()));
                }
            }
        }
        if data.join(".sstable-rekey-scylla").exists() {
            return Err("the journal folder is left after recover".into());
        }
        let new = match shared {
            Some(shared) => self.oracle(shared, data, &after)?,
            None => 0,
        };
        let again = crate::support::run_in(&self.root, &self.rekey_args(data, jobs), &[]);
        if again.code != 0 {
            return Err(format!("the rekey after recover: {}", again.all()));
        }
        let v = crate::support::run_in(&self.root, &self.verify_args(data), &[]);
        if v.code != 0 {
            return Err(format!("verify after the final rekey: {}", v.all()));
        }
        Ok(new)
    }

    fn verify_args(&self, data: &Path) -> Vec<String> {
        strings(&[
            "verify",
            "--key",
            &format!("file:{}", self.new_key.display()),
            "--data-dir",
            &data.display().to_string(),
        ])
    }

    /// Every live SSTable opens, with the key file its Scylla.db names, to its original
    /// plaintext (the ScyllaDB oracle). Returns how many are under the new key.
    fn oracle(
        &self,
        shared: &Path,
        data: &Path,
        live: &BTreeMap<PathBuf, BTreeSet<String>>,
    ) -> Result<usize, String> {
        let all: Vec<(PathBuf, String)> = live
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (data.join(t), p.clone())))
            .collect();
        let new_key = self.new_key.display().to_string();
        let verdicts = crate::support::oracle::par_map(&all, |(dir, p)| {
            let sdb = ScyllaDb::read(&dir.join(format!("{p}Scylla.db")));
            let key = sdb.secret_key_file().unwrap_or_default();
            let args: Vec<OsString> = vec![
                "verify".into(),
                dir.join(format!("{p}Data.db")).into(),
                "--key-file".into(),
                key.clone().into(),
            ];
            let (code, out) = scylla_oracle(shared, &args);
            let want = &self.originals[&identifier(dir, p)].1;
            if code != 0 || out["plaintext_sha256_all"].as_str() != Some(want.as_str()) {
                return Err(format!(
                    "{}/{p}: the oracle: exit {code}: {out}",
                    dir.display()
                ));
            }
            Ok(key == new_key)
        });
        let mut new = 0;
        for v in verdicts {
            new += v? as usize;
        }
        Ok(new)
    }
}

/// SIGKILL of `sstable-rekey rekey` over ScyllaDB SSTables at random instants (seeded:
/// `CRASH_SEED` replays, `CRASH_KILLS_SCYLLA` sets the count, default 30; every other kill is sent
/// as soon as the folders show a random number of originals doomed). After each kill: the
/// folder as ScyllaDB would start it holds each original SSTable exactly once and starts; so does
/// it after `recover`, which keeps what ScyllaDB would have kept and leaves no TOC.txt.tmp,
/// journal or stray file; every live SSTable opens to its original plaintext with the key its
/// Scylla.db names (the oracle, when ../shared is there); then a rekey finishes the job and
/// `verify --key NEW` passes.
#[test]
fn random_sigkill_of_the_scylla_rekey_then_recover() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let seed = seed_from_env("CRASH_SEED");
    let kills = crate::support::count_from_env("CRASH_KILLS_SCYLLA", 30);
    println!(
        "random SIGKILL (ScyllaDB): CRASH_SEED={seed} CRASH_KILLS_SCYLLA={kills} (set them to replay)"
    );
    let mut rng = Rng(seed);
    let ks = kill_set(&mut rng);
    let shared = shared();
    if let Some(shared) = &shared {
        // The generator and the oracle agree on the pristine copy.
        let live = ks.boot(&ks.pristine).unwrap();
        assert_eq!(ks.oracle(shared, &ks.pristine, &live), Ok(0));
    }

    // How long an uninterrupted run takes: kills are drawn over that span.
    let mut span = Duration::ZERO;
    for jobs in [1, 2] {
        let data = ks.root.join(format!("calibrate{jobs}"));
        ks.copy(&data);
        let t = Instant::now();
        let r = crate::support::run_in(&ks.root, &ks.rekey_args(&data, jobs), &[]);
        span = span.max(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.all());
        let v = crate::support::run_in(&ks.root, &ks.verify_args(&data), &[]);
        assert_eq!(v.code, 0, "{}", v.all());
        fs::remove_dir_all(&data).unwrap();
    }
    let span_us = span.as_micros() as u64 * 11 / 10;

    let (mut writing, mut written, mut after_commit) = (0, 0, 0);
    let (mut between, mut finished) = (0, 0);
    let (mut kept_old, mut kept_new) = (0, 0);
    let mut failures = Vec::new();
    for i in 0..kills {
        let jobs = 1 + rng.below(2) as usize;
        let delay = Duration::from_micros(rng.below(span_us + 1));
        let data = ks.root.join(format!("kill{i}"));
        ks.copy(&data);
        let log = ks.root.join(format!("kill{i}.stderr"));
        let mut child = Command::new(crate::support::BIN)
            .args(ks.rekey_args(&data, jobs))
            .current_dir(&ks.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Every other kill watches the folders and lands just after the k-th commit rename, as
        // the old SSTable's files go (that window is microseconds long: random instants alone
        // rarely reach it).
        let watch = (i % 2 == 1).then(|| 1 + rng.below(ks.originals.len() as u64) as usize);
        match watch {
            None => std::thread::sleep(delay),
            Some(k) => ks.wait_for_commits(&data, k, &mut child),
        }
        let done = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if done {
            finished += 1;
            assert!(
                status.success(),
                "kill {i}: the run failed on its own: {status}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        match ks.in_flight(&data) {
            (0, 0, 0) => between += 1,
            (_, 0, 0) => writing += 1,
            (_, _, 0) => written += 1,
            _ => after_commit += 1,
        }
        let outcome = ks.resolve_kill(shared.as_deref(), &data, jobs).map(|new| {
            kept_new += new;
            kept_old += ks.originals.len() - new;
        });
        if let Err(e) = outcome {
            failures.push(format!(
                "kill {i} (CRASH_SEED={seed}, --jobs {jobs}, {}): {e}",
                match watch {
                    Some(k) => format!("after commit rename {k}"),
                    None => format!("after {delay:?}"),
                }
            ));
        }
        let _ = fs::remove_dir_all(&data);
        let _ = fs::remove_file(&log);
    }
    println!(
        "random SIGKILL (ScyllaDB): {kills} kills over {span:?} runs (seed {seed}): {} survived \
         (startup model before and after recover, {}the final rekey and verify), {} failed; \
         a swap in flight at the kill: {} before its commit rename ({writing} while its copy was \
         written, {written} with the copy sealed by its TOC.txt), {after_commit} after it; \
         {between} between swaps (of which {finished} after the run ended); \
         SSTables kept old {kept_old}, new {kept_new}; {:.1}s",
        kills - failures.len(),
        if shared.is_some() { "the oracle, " } else { "" },
        failures.len(),
        writing + written,
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// SIGKILL around the staged path (seeded like the test above; `CRASH_KILLS_SCYLLA_STAGED`,
/// default 16): every other kill lands in a `stage` at a random instant, after which no table
/// folder has changed, and a stage then the rekey finish the job; the others land in the rekey
/// that commits the staged copies (at a random instant, or as the k-th old SSTable is doomed),
/// judged as above. In both, after the final rekey no staging or obsolete folder is left.
#[test]
fn random_sigkill_of_the_scylla_stage_and_staged_commit() {
    use std::time::{Duration, Instant};
    let seed = seed_from_env("CRASH_SEED");
    let kills = crate::support::count_from_env("CRASH_KILLS_SCYLLA_STAGED", 16);
    println!(
        "random SIGKILL (ScyllaDB, staged): CRASH_SEED={seed} CRASH_KILLS_SCYLLA_STAGED={kills}"
    );
    let mut rng = Rng(seed);
    let ks = kill_set(&mut rng);
    let shared = shared();
    let stage_args = |data: &Path| {
        let mut a = ks.rekey_args(data, 1);
        a[0] = "stage".into();
        a
    };
    let calibrate = ks.root.join("calibrate");
    ks.copy(&calibrate);
    let t = Instant::now();
    let st = crate::support::run_in(&ks.root, &stage_args(&calibrate), &[]);
    assert_eq!(st.code, 0, "{}", st.all());
    let stage_span = t.elapsed().as_micros() as u64 * 11 / 10;
    let t = Instant::now();
    let r = crate::support::run_in(&ks.root, &ks.rekey_args(&calibrate, 1), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    let commit_span = t.elapsed().as_micros() as u64 * 11 / 10;
    fs::remove_dir_all(&calibrate).unwrap();
    let tables = |data: &Path| -> BTreeMap<String, String> {
        let mut t = crate::support::tree_strict(data);
        t.retain(|p, _| !p.starts_with(".sstable-rekey-staging"));
        t
    };
    let pristine = tables(&ks.pristine);

    let (mut stages, mut commits, mut in_flight) = (0, 0, 0);
    let mut failures = Vec::new();
    for i in 0..kills {
        let data = ks.root.join(format!("kill{i}"));
        ks.copy(&data);
        let (args, span) = match i % 2 {
            0 => (stage_args(&data), stage_span),
            _ => {
                let st = crate::support::run_in(&ks.root, &stage_args(&data), &[]);
                assert_eq!(st.code, 0, "{}", st.all());
                (ks.rekey_args(&data, 1), commit_span)
            }
        };
        let mut child = std::process::Command::new(crate::support::BIN)
            .args(&args)
            .current_dir(&ks.root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        match (i % 4, i % 2) {
            (3, _) => {
                let k = 1 + rng.below(ks.originals.len() as u64) as usize;
                ks.wait_for_commits(&data, k, &mut child);
            }
            _ => std::thread::sleep(Duration::from_micros(rng.below(span + 1))),
        }
        in_flight += child.try_wait().unwrap().is_none() as usize;
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let outcome = match i % 2 {
            0 => {
                stages += 1;
                let now = tables(&data);
                if now != pristine {
                    Err("a killed stage changed a table folder".to_string())
                } else {
                    let st = crate::support::run_in(&ks.root, &stage_args(&data), &[]);
                    match st.code {
                        0 => ks.resolve_kill(shared.as_deref(), &data, 1).map(|_| ()),
                        _ => Err(format!("the stage after the kill: {}", st.all())),
                    }
                }
            }
            _ => {
                commits += 1;
                ks.resolve_kill(shared.as_deref(), &data, 1).map(|_| ())
            }
        };
        let left = [".sstable-rekey-staging", ".sstable-rekey-obsolete"]
            .into_iter()
            .filter(|f| data.join(f).exists())
            .collect::<Vec<_>>();
        let outcome = outcome.and_then(|()| match left.is_empty() {
            true => Ok(()),
            false => Err(format!("left after the final rekey: {left:?}")),
        });
        if let Err(e) = outcome {
            failures.push(format!("kill {i} (CRASH_SEED={seed}): {e}"));
        }
        let _ = fs::remove_dir_all(&data);
    }
    println!(
        "random SIGKILL (ScyllaDB, staged): {kills} kills ({stages} of a stage, {commits} of the staged commit; {in_flight} in flight): {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(in_flight > 0, "no run was killed in flight");
}
