//! Crash safety: at any instant exactly one of the old and the new SSTable survives, once
//! `sstable-rekey recover` (or Cassandra's startup) has run.
//!
//! - `every_failpoint_crash_and_error_then_recover`: every failpoint of the commit protocol
//!   (`sstable_rekey::rekey::failpoint::NAMES`, with `@K` for the repeated ones), as a crash
//!   (abort) and as an injected error, with `--jobs 1` and `--jobs 2`, over a data set of two dozen
//!   live SSTables in as many tables (dd1/edge, the 128-bit matrix tables, the KMIP 128-bit dd3 tables with
//!   encrypted indexes), a snapshot and an index folder.
//! - `torn_transaction_logs_resolve_like_cassandra`: every byte-length prefix of a crashed log (a
//!   power loss tearing its last line), with all and with some obsolete files left.
//! - `random_sigkill_then_recover`: SIGKILL at random instants (seeded: `CRASH_SEED` replays the
//!   delays, `CRASH_KILLS` sets the count, default 200).
//!
//! After each crash: the leftover logs are judged by `cassandra_startup`, an independent model of
//! Cassandra's startup rule (FORMAT.md 1.5, LogFile.verify / removeUnfinishedLeftovers, written
//! here from Cassandra's source and never calling the crate), then `sstable-rekey recover` runs on
//! the crashed state and must decide the same for every log and delete exactly the same files.
//! Then: exactly one generation per original SSTable, every live SSTable decrypts (independent
//! decryptor, old or new key) to the MANIFEST plaintext digest (and metadata digests for encrypted
//! indexes), unchanged components byte-identical, no stray file (no partial generation, no log),
//! snapshots untouched, and `verify --key OLD... --key NEW` exits 0.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cassandra::*;
use crate::support::*;

#[test]
fn the_startup_model_reads_format_md_examples() {
    let add = make_record(
        "ADD:[/var/lib/cassandra/data/ks/tbl-0123456789abcdef0123456789abcdef/nb-5-big-,0,8][959075699]",
    );
    assert!(add.error.is_none() && add.kind == Kind::Add);
    assert_eq!(add.checksum, add.compute_checksum());
    for (line, kind) in [
        ("COMMIT:[,0,0][2613697770]", Kind::Commit),
        ("ABORT:[,0,0][737437348]", Kind::Abort),
        ("commit:[,0,0][2613697770]", Kind::Commit),
    ] {
        let r = make_record(line);
        assert_eq!(r.kind, kind);
        assert_eq!(r.checksum, r.compute_checksum(), "{line}");
    }
    for bad in [
        "COMMIT:[,0,0]",
        "FOO:[,0,0][1]",
        "COMMIT:[,0,0][12a]",
        "COMMIT:[,,][2613697770]",
        "ADD:[a,b,c,d][1]",
        "",
    ] {
        assert_eq!(make_record(bad).kind, Kind::Unknown, "{bad:?}");
    }
    assert_eq!(java_lines("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
    assert_eq!(java_lines("a\n\nb\n"), ["a", "", "b"]);
}

// ------------------------------------------------------------------ the data set and the checks

fn crash_set() -> DataSet {
    let tables = DataSet::tables_where(|e| {
        let d = e["data"].as_str().unwrap();
        d.starts_with("dd1/edge/")
            || (d.starts_with("dd1/matrix/") && e["bits"] == 128)
            || (d.starts_with("dd3/") && e["provider"] == "kmip" && e["bits"] == 128)
    });
    DataSet::new(&tables)
}

// ------------------------------------------------------------------ deterministic failpoints

/// A failpoint passed before the commit point (`NAMES` lists them in the order a rekey passes
/// them; `txn.commit` is the commit point): an error there must leave nothing behind.
fn before_commit(name: &str) -> bool {
    let names = sstable_rekey::rekey::failpoint::NAMES;
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    at(name) < at("txn.commit")
}

fn variants() -> Vec<String> {
    let names = sstable_rekey::rekey::failpoint::NAMES;
    let mut v = Vec::new();
    for n in names {
        let ks: Vec<usize> = match *n {
            "component.linked" => (1..=7).collect(),
            "old.deleted" => (1..=9).collect(),
            "obsolete.deleted" => (1..=3).collect(),
            _ => vec![1],
        };
        for k in ks {
            let base = if k == 1 {
                n.to_string()
            } else {
                format!("{n}@{k}")
            };
            v.push(base.clone());
            v.push(format!("{base}:error"));
        }
    }
    v
}

#[test]
fn every_failpoint_crash_and_error_then_recover() {
    every_failpoint(false, &[1, 2]);
}

/// The same over a rekey that commits staged copies (`stage` ran first): a crash or an error at
/// any step of moving them in resolves like any rekey; then a rekey finishes the job.
#[test]
fn every_failpoint_of_a_staged_commit_then_recover() {
    every_failpoint(true, &[1]);
}

/// Every failpoint variant, as a crash and as an error, with each `--jobs` of `jobs`, then
/// recover, judged as the module comment says. With `staged`, an unfaulted `stage` runs first, and
/// after the checks an unfaulted `rekey` must bring every SSTable under the new key.
fn every_failpoint(staged: bool, jobs: &[usize]) {
    require_failpoints();
    let t0 = Instant::now();
    let ds = crash_set();
    let keys = ds.keys();
    let live = ds.sstables.iter().filter(|o| o.live).count();
    assert!(
        live >= 20,
        "a data set of several tables: {live} live SSTables"
    );
    let scratch = fast_tempdir();
    let base = scratch.path().canonicalize().unwrap();
    let mut hit: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut summary = Vec::new();
    for &jobs in jobs {
        for v in variants() {
            runs += 1;
            let data = base.join(format!("j{jobs}-{}", v.replace([':', '@'], "_")));
            ds.copy_data(&data);
            if staged {
                let mut args = rekey_args(&ds, &data, jobs);
                args[0] = "stage".into();
                let r = run_in(&ds.root, &args, &[]);
                assert_eq!(r.code, 0, "stage: {}", r.all());
            }
            let r = run_in(
                &ds.root,
                &rekey_args(&ds, &data, jobs),
                &[("SSTABLE_REKEY_TEST_FAILPOINT", &v)],
            );
            let name = v.split([':', '@']).next().unwrap();
            let error = v.ends_with(":error");
            let fired = if error {
                r.all().contains("injected failure")
            } else {
                r.stderr.contains(&format!("failpoint {name}: aborting"))
            };
            // The staging folder is the tool's, outside what the checks below judge: set aside.
            let staging = data.join(STAGING);
            let aside = base.join(format!("staging-j{jobs}-{}", v.replace([':', '@'], "_")));
            if staging.exists() {
                fs::rename(&staging, &aside).unwrap();
            }
            let outcome = (|| -> Result<String, String> {
                match (fired, error) {
                    (false, _) if r.code != 0 => {
                        return Err(format!("not fired, yet exit {}", r.code))
                    }
                    (true, false) if r.code != 134 => {
                        return Err(format!("crash at {v}: exit {} (want SIGABRT)", r.code))
                    }
                    (true, true) if r.code != 1 => {
                        return Err(format!("error at {v}: exit {}, want 1", r.code))
                    }
                    _ => {}
                }
                if fired {
                    *hit.entry(v.clone()).or_default() += 1;
                }
                if fired && error && !before_commit(name) {
                    // After the commit point: the SSTable is live; the error says so.
                    if !r.all().contains("committed and live") {
                        return Err(
                            "a post-commit error that does not say the new SSTable is live".into(),
                        );
                    }
                }
                if fired && error && before_commit(name) {
                    // Rolled back on the spot: no log, no partial generation, before any recover.
                    check_resolved(&ds, &keys, &data)
                        .map_err(|e| format!("after the injected error, before recover: {e}"))?;
                }
                let res = resolve(&ds, &keys, &data, false, true)?;
                if error && fired && before_commit(name) && res.tally.old != 1 {
                    return Err(format!(
                        "an error before the commit point must keep exactly the failed SSTable old: {:?}",
                        res.tally
                    ));
                }
                if staged {
                    finish_staged(&ds, &keys, &data, &aside, live)?;
                }
                Ok(format!(
                    "logs {} (committed {}), old {} new {}",
                    res.logs, res.committed_logs, res.tally.old, res.tally.new
                ))
            })();
            match outcome {
                Ok(s) => summary.push(format!("--jobs {jobs} {v:<28} fired={fired:<5} {s}")),
                Err(e) => failures.push(format!("--jobs {jobs} {v}: {e}\n{}", r.all())),
            }
            let _ = fs::remove_dir_all(&data);
            let _ = fs::remove_dir_all(&aside);
        }
    }
    for s in &summary {
        println!("{s}");
    }
    let never: Vec<String> = variants()
        .into_iter()
        .filter(|v| !hit.contains_key(v))
        .collect();
    println!(
        "failpoints{}: {} names, {} variants x {} job settings = {runs} runs; {} variants fired; never fired: {never:?}; {:.1}s",
        if staged { " (staged commit)" } else { "" },
        sstable_rekey::rekey::failpoint::NAMES.len(),
        variants().len(),
        jobs.len(),
        hit.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // A staged commit rewrites nothing: it never passes the rewrite's own failpoints; only a
    // staged commit moves old files aside, for the purge at the end of the run.
    let rewrite_only = ["data.written", "data.fsynced", "index.written"];
    let expected: Vec<String> = variants()
        .into_iter()
        .filter(|v| {
            let name = v.split([':', '@']).next().unwrap();
            // ScyllaDB's swap has its own (tests/it/scylla_crash.rs): no DSE SSTable passes them.
            name.starts_with("scylla.")
                || match staged {
                    true => rewrite_only.contains(&name),
                    false => name == "obsolete.deleted",
                }
        })
        .collect();
    assert_eq!(never, expected, "failpoint variants never reached");
}

/// The staging folder `stage` writes in.
const STAGING: &str = ".sstable-rekey-staging";

/// After a staged commit was crashed or failed and recovered: the staging folder back in place,
/// an unfaulted rekey commits what is still staged and rewrites the rest; then every live
/// SSTable is under the new key and nothing of the staging folder is left.
fn finish_staged(
    ds: &DataSet,
    keys: &Keys,
    data: &Path,
    aside: &Path,
    live: usize,
) -> Result<(), String> {
    if aside.exists() {
        fs::rename(aside, data.join(STAGING)).unwrap();
    }
    let r = run_in(&ds.root, &rekey_args(ds, data, 1), &[]);
    if r.code != 0 {
        return Err(format!(
            "the rekey after recover: exit {}\n{}",
            r.code,
            r.all()
        ));
    }
    if data.join(STAGING).exists() {
        return Err("the staging folder is left after the final rekey".into());
    }
    let t = check_resolved(ds, keys, data).map_err(|e| format!("after the final rekey: {e}"))?;
    if t.new != live {
        return Err(format!("after the final rekey: {t:?}"));
    }
    Ok(())
}

// ------------------------------------------------------------------ torn logs (power loss)

/// Crashes a rekey at `failpoint` (`--jobs 1`) and returns the data dir with its one log.
fn crashed_at(ds: &DataSet, scratch: &Path, failpoint: &str) -> (PathBuf, PathBuf) {
    let data = scratch.join(failpoint.replace([':', '@'], "_"));
    ds.copy_data(&data);
    let r = run_in(
        &ds.root,
        &rekey_args(ds, &data, 1),
        &[("SSTABLE_REKEY_TEST_FAILPOINT", failpoint)],
    );
    assert_eq!(r.code, 134, "{}", r.all());
    let logs = logs_under(&data);
    assert_eq!(logs.len(), 1, "{failpoint}: {logs:?}");
    (data, logs[0].clone())
}

#[test]
fn torn_transaction_logs_resolve_like_cassandra() {
    require_failpoints();
    let t0 = Instant::now();
    let ds = crash_set();
    let keys = ds.keys();
    let scratch = fast_tempdir();
    let mut cases = 0;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    // (failpoint, every prefix length or only those inside the last line)
    // (crash point, every prefix length or only those inside the last line). old.deleted@3 with a
    // torn last line is not reachable (COMMIT was complete before any deletion) but exercises the
    // numFiles rule: Cassandra refuses it, so must recover.
    for (fp, all) in [("txn.commit", true), ("old.deleted@3", false)] {
        let (data, log) = crashed_at(&ds, &scratch.path().canonicalize().unwrap(), fp);
        let dir = log.parent().unwrap().to_path_buf();
        let full = fs::read(&log).unwrap();
        let state = FolderState::take(&dir);
        let last_line = full[..full.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let from = if all { 0 } else { last_line };
        for len in from..=full.len() {
            state.restore(&dir);
            fs::write(&log, &full[..len]).unwrap();
            let m = cassandra_startup(&log);
            let key = match &m {
                Startup::Refuse(_) => "refused".to_string(),
                Startup::Resolve {
                    committed: true, ..
                } => "committed".to_string(),
                Startup::Resolve { .. } => "rolled back".to_string(),
            };
            *outcomes.entry(format!("{fp}: {key}")).or_default() += 1;
            cases += 1;
            // Only the append in flight can be torn (each append is fsynced before the next
            // step): cuts inside the last line are states a power loss can leave, and must end
            // consistent; earlier cuts only check that the model and recover agree.
            let reachable = fp == "txn.commit" && len >= last_line;
            if let Err(e) = resolve(&ds, &keys, &data, true, reachable) {
                panic!("{fp}, log cut to {len} of {} bytes: {e}", full.len());
            }
            if reachable && matches!(m, Startup::Refuse(_)) {
                panic!("{fp}, log cut to {len} bytes: a reachable state Cassandra refuses");
            }
        }
    }
    println!(
        "torn logs: {cases} prefixes judged alike by the model and recover: {outcomes:?} ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(outcomes.keys().any(|k| k.ends_with("refused")));
    assert!(outcomes.keys().any(|k| k.ends_with("committed")));
    assert!(outcomes.keys().any(|k| k.ends_with("rolled back")));
}

// ------------------------------------------------------------------ random SIGKILL

#[test]
fn random_sigkill_then_recover() {
    let t0 = Instant::now();
    let seed = seed_from_env("CRASH_SEED");
    let kills = crate::support::count_from_env("CRASH_KILLS", 200);
    println!("random SIGKILL: CRASH_SEED={seed} CRASH_KILLS={kills} (set them to replay)");
    let mut rng = Rng(seed);
    let ds = crash_set();
    let keys = ds.keys();
    let scratch = fast_tempdir();

    // How long an uninterrupted run takes: kills are drawn over that span.
    let mut span = Duration::ZERO;
    for jobs in [1, 2] {
        let data = scratch
            .path()
            .canonicalize()
            .unwrap()
            .join(format!("calibrate{jobs}"));
        ds.copy_data(&data);
        let t = Instant::now();
        let r = run_in(&ds.root, &rekey_args(&ds, &data, jobs), &[]);
        span = span.max(t.elapsed());
        assert_eq!(r.code, 0, "{}", r.all());
        let res = resolve(&ds, &keys, &data, false, true).unwrap();
        assert_eq!(res.tally.old, 0, "an uninterrupted run rekeys everything");
        fs::remove_dir_all(&data).unwrap();
    }
    let span_us = span.as_micros() as u64 * 11 / 10;

    let mut before_any_commit = 0; // every SSTable still old
    let mut all_committed = 0; // every SSTable new
    let mut mixed = 0;
    let mut in_flight_uncommitted = 0; // logs without COMMIT at the kill
    let mut in_flight_committed = 0; // committed logs not yet cleaned up
    let mut finished_before_kill = 0;
    let mut sstables_old = 0;
    let mut sstables_new = 0;
    let mut failures = Vec::new();
    for i in 0..kills {
        let jobs = 1 + rng.below(2) as usize;
        let delay = Duration::from_micros(rng.below(span_us + 1));
        let data = scratch
            .path()
            .canonicalize()
            .unwrap()
            .join(format!("kill{i}"));
        ds.copy_data(&data);
        let mut child = Command::new(BIN)
            .args(rekey_args(&ds, &data, jobs))
            .current_dir(&ds.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if finished {
            finished_before_kill += 1;
            assert!(status.success(), "kill {i}: the run failed on its own");
        }
        for log in logs_under(&data) {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.lines().last().is_some_and(|l| l.starts_with("COMMIT")) {
                in_flight_committed += 1;
            } else {
                in_flight_uncommitted += 1;
            }
        }
        match resolve(&ds, &keys, &data, false, true) {
            Ok(r) => {
                sstables_old += r.tally.old;
                sstables_new += r.tally.new;
                match (r.tally.old, r.tally.new) {
                    (_, 0) => before_any_commit += 1,
                    (0, _) => all_committed += 1,
                    _ => mixed += 1,
                }
            }
            Err(e) => failures.push(format!(
                "kill {i} (CRASH_SEED={seed}, --jobs {jobs}, after {delay:?}): {e}"
            )),
        }
        let _ = fs::remove_dir_all(&data);
    }
    println!(
        "random SIGKILL: {kills} kills over {:?} runs (seed {seed}): {} survived (recovered and verified), {} failed; \
         kill landed before any commit {before_any_commit}, between commits {mixed}, after the last commit {all_committed} \
         (of which {finished_before_kill} after the run ended); transactions in flight at the kill: {in_flight_uncommitted} \
         before their COMMIT (rolled back), {in_flight_committed} after it (finished by recover); \
         SSTables kept old {sstables_old}, new {sstables_new}; {:.1}s",
        span,
        kills - failures.len(),
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ SIGKILL around a staged rekey

/// `rekey_args` as a `stage` command line.
fn stage_args(ds: &DataSet, data: &Path, jobs: usize) -> Vec<String> {
    let mut args = rekey_args(ds, data, jobs);
    args[0] = "stage".into();
    args
}

/// Runs `args` and SIGKILLs it after `delay` (if it is still running); true if it finished.
fn killed_after(ds: &DataSet, args: &[String], delay: Duration) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(&ds.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(!finished || status.success(), "the run failed on its own");
    finished
}

/// SIGKILL at random instants (seeded: `CRASH_SEED`; `CRASH_KILLS_STAGED`, default 40) of a
/// `stage` (every table file must stay byte-identical; the next stage and a rekey finish the job)
/// and of the `rekey` that commits staged copies (recover resolves it like any rekey, exactly one
/// of old and new per SSTable; a rekey then finishes the job and leaves no staging folder).
#[test]
fn random_sigkill_of_stage_and_of_the_staged_commit() {
    let seed = seed_from_env("CRASH_SEED");
    let kills = crate::support::count_from_env("CRASH_KILLS_STAGED", 40);
    println!("random SIGKILL (staged): CRASH_SEED={seed} CRASH_KILLS_STAGED={kills}");
    let mut rng = Rng(seed);
    let ds = crash_set();
    let keys = ds.keys();
    let live = ds.sstables.iter().filter(|o| o.live).count();
    let scratch = fast_tempdir();
    let base = scratch.path().canonicalize().unwrap();

    // Calibrate: how long an uninterrupted stage and commit take.
    let data = base.join("calibrate");
    ds.copy_data(&data);
    let t = Instant::now();
    assert_eq!(run_in(&ds.root, &stage_args(&ds, &data, 1), &[]).code, 0);
    let stage_span = t.elapsed();
    let t = Instant::now();
    assert_eq!(run_in(&ds.root, &rekey_args(&ds, &data, 1), &[]).code, 0);
    let commit_span = t.elapsed();
    fs::remove_dir_all(&data).unwrap();

    let mut failures = Vec::new();
    let (mut killed_stage, mut killed_commit) = (0, 0);
    for i in 0..kills {
        let data = base.join(format!("kill{i}"));
        ds.copy_data(&data);
        let pristine = tree_strict(&data);
        let outcome = if i % 2 == 0 {
            let span = stage_span.as_micros() as u64 * 11 / 10;
            let delay = Duration::from_micros(rng.below(span + 1));
            if !killed_after(&ds, &stage_args(&ds, &data, 1), delay) {
                killed_stage += 1;
            }
            let mut now = tree_strict(&data);
            now.retain(|p, _| !p.contains(STAGING));
            let d = diff(&pristine, &now);
            match d.is_empty() {
                true => finish_after_stage(&ds, &keys, &data, live),
                false => Err(format!("a killed stage changed table files: {d:?}")),
            }
        } else {
            assert_eq!(run_in(&ds.root, &stage_args(&ds, &data, 1), &[]).code, 0);
            let span = commit_span.as_micros() as u64 * 11 / 10;
            let delay = Duration::from_micros(rng.below(span + 1));
            if !killed_after(&ds, &rekey_args(&ds, &data, 1), delay) {
                killed_commit += 1;
            }
            let aside = base.join(format!("aside{i}"));
            if data.join(STAGING).exists() {
                fs::rename(data.join(STAGING), &aside).unwrap();
            }
            resolve(&ds, &keys, &data, false, true)
                .and_then(|_| finish_staged(&ds, &keys, &data, &aside, live))
        };
        if let Err(e) = outcome {
            failures.push(format!("kill {i}: {e}"));
        }
        let _ = fs::remove_dir_all(&data);
    }
    println!(
        "random SIGKILL (staged): {kills} kills, {killed_stage} stages and {killed_commit} commits killed in flight, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        killed_stage > 0 && killed_commit > 0,
        "no run was killed in flight"
    );
}

/// After a killed stage: stage again, then rekey; every live SSTable ends under the new key.
fn finish_after_stage(ds: &DataSet, keys: &Keys, data: &Path, live: usize) -> Result<(), String> {
    let r = run_in(&ds.root, &stage_args(ds, data, 1), &[]);
    if r.code != 0 {
        return Err(format!("the stage after the kill: {}", r.all()));
    }
    let aside = data.with_extension("aside");
    finish_staged(ds, keys, data, &aside, live)
}
