//! `sstable-rekey recover` on hand-written Cassandra transaction logs (FORMAT.md 1.5).
//!
//! Every test builds its own data dir `<tmp>/<ks>/<table>-<32 hex>/` with dummy SSTable component
//! files (recover only looks at names, mtimes and the log), writes a log with its own checksum code
//! (checked against the constants in FORMAT.md), runs the binary and checks which files remain.
//! None of these tests needs ../shared.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_sstable-rekey");
const COMPONENTS: [&str; 8] = [
    "CompressionInfo.db",
    "Data.db",
    "Digest.crc32",
    "Filter.db",
    "Index.db",
    "Statistics.db",
    "Summary.db",
    "TOC.txt",
];
const UUID: &str = "6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a";
/// Old SSTable files get mtimes BASE+i seconds plus a sub-second part, i = 0..7.
const BASE: u64 = 1_700_000_000;

// ------------------------------------------------------------------ log records, written by hand

/// One record line per FORMAT.md 1.5: `TYPE:[path,updateTime,numFiles][checksum]`, where
/// checksum = CRC32(path || TYPE || be32(low updateTime) || be32(high updateTime) || be32(numFiles))
/// masked to a non-negative Java long.
fn record(kind: &str, path: &str, update_time: i64, num_files: i32) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(path.as_bytes());
    h.update(kind.as_bytes());
    h.update(&(update_time as u32).to_be_bytes());
    h.update(&((update_time >> 32) as u32).to_be_bytes());
    h.update(&num_files.to_be_bytes());
    let sum = u64::from(h.finalize()) & 0x7FFF_FFFF_FFFF_FFFF;
    format!("{kind}:[{path},{update_time},{num_files}][{sum}]")
}

fn add(path: &str, n: i32) -> String {
    record("ADD", path, 0, n)
}

fn remove(path: &str, update_time: i64, n: i32) -> String {
    record("REMOVE", path, update_time, n)
}

/// The same record with its type prefix in lower case (checksum unchanged).
fn lower_type(line: &str) -> String {
    let (kind, rest) = line.split_once(':').unwrap();
    format!("{}:{rest}", kind.to_ascii_lowercase())
}

fn commit() -> String {
    record("COMMIT", "", 0, 0)
}

fn abort() -> String {
    record("ABORT", "", 0, 0)
}

#[test]
fn own_checksums_match_format_md() {
    assert_eq!(commit(), "COMMIT:[,0,0][2613697770]");
    assert_eq!(abort(), "ABORT:[,0,0][737437348]");
    assert_eq!(
        add("/var/lib/cassandra/data/ks/tbl-0123456789abcdef0123456789abcdef/nb-5-big-", 8),
        "ADD:[/var/lib/cassandra/data/ks/tbl-0123456789abcdef0123456789abcdef/nb-5-big-,0,8][959075699]"
    );
}

// ------------------------------------------------------------------ fixture

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    /// The table folder, canonical (record paths are canonical absolute paths).
    table: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let table = data.join("ks").join("tbl-0123456789abcdef0123456789abcdef");
        fs::create_dir_all(&table).unwrap();
        let table = fs::canonicalize(&table).unwrap();
        Fixture {
            _tmp: tmp,
            data,
            table,
        }
    }

    /// Writes the 8 components of `<prefix>` (e.g. `nb-1-big-`) in `dir`, component i with mtime
    /// `base + i` seconds and `123_456_789 + i` ns. Returns the truncated-to-seconds max mtime in ms,
    /// i.e. what JDK 8's `File.lastModified()` reports and what a REMOVE record must carry.
    fn sstable(&self, dir: &Path, prefix: &str, base: u64) -> i64 {
        for (i, c) in COMPONENTS.iter().enumerate() {
            let p = dir.join(format!("{prefix}{c}"));
            fs::write(&p, format!("dummy {prefix}{c}\n")).unwrap();
            let t = UNIX_EPOCH + Duration::new(base + i as u64, 123_456_789 + i as u32);
            set_mtime(&p, t);
        }
        ((base + COMPONENTS.len() as u64 - 1) * 1000) as i64
    }

    /// `/canonical/table/nb-1-big-` (4.0+ form) for a prefix in the table folder.
    fn path(&self, prefix: &str) -> String {
        self.table.join(prefix).to_str().unwrap().to_string()
    }

    fn write_log(&self, dir: &Path, version: &str, operation: &str, lines: &[String]) -> PathBuf {
        let log = dir.join(format!("{version}_txn_{operation}_{UUID}.log"));
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        fs::write(&log, text).unwrap();
        log
    }

    fn recover(&self) -> Output {
        let out = Command::new(BIN)
            .arg("recover")
            .arg("--data-dir")
            .arg(&self.data)
            .output()
            .unwrap();
        eprintln!(
            "recover exit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn set_mtime(p: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn files_of(prefixes: &[&str]) -> BTreeSet<String> {
    prefixes
        .iter()
        .flat_map(|p| COMPONENTS.iter().map(move |c| format!("{p}{c}")))
        .collect()
}

fn with(mut set: BTreeSet<String>, extra: &Path) -> BTreeSet<String> {
    set.insert(extra.file_name().unwrap().to_str().unwrap().to_string());
    set
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "recover exit status");
}

// ------------------------------------------------------------------ outcomes

/// old = nb-1 (REMOVE side), new = nb-2 (ADD side), bystander nb-10 (no record, must survive;
/// also catches a prefix match of `nb-1-big` against `nb-10-big`).
struct Case {
    f: Fixture,
    old_time: i64,
}

impl Case {
    fn new() -> Case {
        let f = Fixture::new();
        let old_time = f.sstable(&f.table, "nb-1-big-", BASE);
        f.sstable(&f.table, "nb-2-big-", BASE + 100);
        f.sstable(&f.table, "nb-10-big-", BASE + 50);
        Case { f, old_time }
    }

    fn lines(&self, upto: &str) -> Vec<String> {
        let mut v = vec![add(&self.f.path("nb-2-big-"), 8)];
        if upto == "add" {
            return v;
        }
        v.push(remove(&self.f.path("nb-1-big-"), self.old_time, 8));
        if upto == "commit" {
            v.push(commit());
        }
        v
    }

    fn run(&self, lines: &[String]) -> Output {
        self.f
            .write_log(&self.f.table, "nb", "upgradesstables", lines);
        self.f.recover()
    }

    fn assert_rolled_back(&self, out: &Output) {
        assert_exit(out, 0);
        assert_eq!(
            names(&self.f.table),
            files_of(&["nb-1-big-", "nb-10-big-"]),
            "rolled back: the new SSTable and the log are gone, the old one and the bystander stay"
        );
    }

    fn assert_committed(&self, out: &Output) {
        assert_exit(out, 0);
        assert_eq!(
            names(&self.f.table),
            files_of(&["nb-2-big-", "nb-10-big-"]),
            "committed: the old SSTable and the log are gone, the new one and the bystander stay"
        );
    }

    /// Refused: exit 1, nothing deleted, the log still there.
    fn assert_untouched(&self, out: &Output, log: &Path) {
        assert_exit(out, 1);
        assert_eq!(
            names(&self.f.table),
            with(files_of(&["nb-1-big-", "nb-2-big-", "nb-10-big-"]), log),
            "refused: every file and the log stay"
        );
    }
}

#[test]
fn stopped_after_add_rolls_back() {
    let c = Case::new();
    let out = c.run(&c.lines("add"));
    c.assert_rolled_back(&out);
}

#[test]
fn stopped_after_remove_without_commit_rolls_back() {
    let c = Case::new();
    let out = c.run(&c.lines("remove"));
    c.assert_rolled_back(&out);
}

#[test]
fn committed_log_deletes_the_old_sstable() {
    let c = Case::new();
    let out = c.run(&c.lines("commit"));
    c.assert_committed(&out);
}

#[test]
fn committed_log_after_some_old_files_were_deleted() {
    // A crash while deleting the old files (oldest first): the REMOVE updateTime still matches the
    // newest remaining file, and recover finishes the deletion.
    let c = Case::new();
    for comp in &COMPONENTS[..3] {
        fs::remove_file(c.f.table.join(format!("nb-1-big-{comp}"))).unwrap();
    }
    let out = c.run(&c.lines("commit"));
    c.assert_committed(&out);
}

#[test]
fn torn_commit_line_rolls_back() {
    let c = Case::new();
    let mut lines = c.lines("remove");
    let full = commit();
    lines.push(full[..full.len() - 5].to_string()); // "COMMIT:[,0,0][26136"
    let out = c.run(&lines);
    c.assert_rolled_back(&out);
}

#[test]
fn torn_line_without_newline_rolls_back() {
    let c = Case::new();
    let mut text = String::new();
    for l in c.lines("remove") {
        text.push_str(&l);
        text.push('\n');
    }
    text.push_str("COMMIT:[,0"); // no trailing newline: the write stopped mid-line
    fs::write(
        c.f.table.join(format!("nb_txn_upgradesstables_{UUID}.log")),
        text,
    )
    .unwrap();
    let out = c.f.recover();
    c.assert_rolled_back(&out);
}

#[test]
fn torn_last_line_with_old_files_missing_is_refused() {
    // With a torn last line Cassandra continues only if every REMOVE record still has all its
    // files (LogFile.verifyRecordWithCorruptedLastRecord); otherwise the node refuses to start.
    let c = Case::new();
    fs::remove_file(c.f.table.join("nb-1-big-Data.db")).unwrap();
    let mut lines = c.lines("remove");
    lines.push("COMMIT:[,0,0][26".to_string());
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &lines);
    let out = c.f.recover();
    assert_exit(&out, 1);
    let mut want = with(files_of(&["nb-1-big-", "nb-2-big-", "nb-10-big-"]), &log);
    want.remove("nb-1-big-Data.db");
    assert_eq!(
        names(&c.f.table),
        want,
        "refused: every file and the log stay"
    );
}

#[test]
fn abort_rolls_back() {
    let c = Case::new();
    let mut lines = c.lines("remove");
    lines.push(abort());
    let out = c.run(&lines);
    c.assert_rolled_back(&out);

    let c = Case::new();
    let out = c.run(&[add(&c.f.path("nb-2-big-"), 8), abort()]);
    c.assert_rolled_back(&out);
}

#[test]
fn lower_case_record_types_are_read() {
    // Cassandra reads the type case-insensitively (Pattern.CASE_INSENSITIVE); the checksum is over
    // the enum name, i.e. the upper-case type, whatever case the line uses.
    let c = Case::new();
    let lines: Vec<String> = c.lines("commit").iter().map(|l| lower_type(l)).collect();
    assert!(lines[0].starts_with("add:[") && lines[2].starts_with("commit:["));
    let out = c.run(&lines);
    c.assert_committed(&out);
}

#[test]
fn corrupt_line_in_the_middle_is_refused() {
    let c = Case::new();
    let lines = c.lines("commit");
    let mut bad = lines.clone();
    // a wrong checksum on the REMOVE line (not the last line): Cassandra would refuse to start
    let r = &lines[1];
    let open = r.rfind('[').unwrap();
    let sum: u64 = r[open + 1..r.len() - 1].parse().unwrap();
    bad[1] = format!("{}[{}]", &r[..open], sum ^ 1);
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &bad);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);

    // a line that is not a record at all
    let c = Case::new();
    let mut bad = c.lines("commit");
    bad.insert(1, "this is not a record".to_string());
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &bad);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);
}

#[test]
fn commit_not_last_and_duplicates_are_refused() {
    let c = Case::new();
    let mut lines = c.lines("commit");
    lines.push(add(&c.f.path("nb-3-big-"), 8));
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &lines);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);

    let c = Case::new();
    let mut lines = c.lines("remove");
    lines.insert(1, lines[0].clone());
    lines.push(commit());
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &lines);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);
}

#[test]
fn remove_update_time_is_max_mtime_truncated_to_seconds() {
    // The fixture's newest old file has mtime BASE+7.123456796 s: the record must say (BASE+7)*1000.
    let c = Case::new();
    assert_eq!(c.old_time, ((BASE + 7) * 1000) as i64);
    let newest = COMPONENTS
        .iter()
        .map(|comp| {
            fs::metadata(c.f.table.join(format!("nb-1-big-{comp}")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .max()
        .unwrap();
    assert_eq!(
        newest.duration_since(UNIX_EPOCH).unwrap().as_secs() * 1000,
        c.old_time as u64
    );
    let out = c.run(&c.lines("remove"));
    c.assert_rolled_back(&out);
}

#[test]
fn stale_remove_update_time_is_refused() {
    // The old files were modified after the log was written (or restored from a backup): the
    // REMOVE record no longer describes them, and Cassandra refuses the log.
    let c = Case::new();
    let lines = vec![
        add(&c.f.path("nb-2-big-"), 8),
        remove(&c.f.path("nb-1-big-"), c.old_time - 1000, 8),
    ];
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &lines);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);
}

#[test]
fn committed_log_with_stale_remove_update_time_is_refused() {
    // The case Cassandra's check exists for (LogFile.verifyRecord: "we don't want to delete files by
    // mistake if the user has copied them from backup and forgot to remove a txn log file that
    // obsoleted the very same files"): a COMMITTED log whose REMOVE side on disk has other mtimes.
    // Deleting those files would destroy the restored data; Cassandra refuses to start instead.
    let c = Case::new();
    let lines = vec![
        add(&c.f.path("nb-2-big-"), 8),
        remove(&c.f.path("nb-1-big-"), c.old_time - 60_000, 8),
        commit(),
    ];
    let log = c.f.write_log(&c.f.table, "nb", "upgradesstables", &lines);
    let out = c.f.recover();
    c.assert_untouched(&out, &log);
}

#[test]
fn cassandra_3_paths_without_trailing_separator() {
    // CASSANDRA-13294: 3.0/3.11 logs name `/…/mc-1-big`, and the reader appends the `-`.
    for committed in [true, false] {
        let f = Fixture::new();
        let old_time = f.sstable(&f.table, "mc-1-big-", BASE);
        f.sstable(&f.table, "mc-2-big-", BASE + 100);
        f.sstable(&f.table, "mc-10-big-", BASE + 50);
        f.sstable(&f.table, "mc-20-big-", BASE + 50);
        let old = f.path("mc-1-big");
        let new = f.path("mc-2-big");
        assert!(!old.ends_with('-') && !new.ends_with('-'));
        let mut lines = vec![add(&new, 8), remove(&old, old_time, 8)];
        if committed {
            lines.push(commit());
        }
        f.write_log(&f.table, "mc", "upgradesstables", &lines);
        let out = f.recover();
        assert_exit(&out, 0);
        let kept = if committed { "mc-2-big-" } else { "mc-1-big-" };
        assert_eq!(
            names(&f.table),
            files_of(&[kept, "mc-10-big-", "mc-20-big-"]),
            "mc log (committed: {committed})"
        );
    }
}

#[test]
fn cassandra_own_operation_logs_and_index_folders() {
    // A compaction log left by Cassandra itself in a secondary-index folder, and a committed
    // upgradesstables log in the table folder: both resolved by one run.
    let f = Fixture::new();
    let idx = f.table.join(".tbl_val_idx");
    fs::create_dir(&idx).unwrap();
    let idx_old = f.sstable(&idx, "nb-1-big-", BASE);
    f.sstable(&idx, "nb-2-big-", BASE + 10);
    f.sstable(&idx, "nb-3-big-", BASE + 20);
    let p = |prefix: &str| idx.join(prefix).to_str().unwrap().to_string();
    f.write_log(
        &idx,
        "nb",
        "compaction",
        &[
            add(&p("nb-3-big-"), 8),
            remove(&p("nb-1-big-"), idx_old, 8),
            remove(&p("nb-2-big-"), idx_old + 10_000, 8),
            commit(),
        ],
    );
    let old = f.sstable(&f.table, "nb-1-big-", BASE);
    f.sstable(&f.table, "nb-2-big-", BASE + 100);
    f.write_log(
        &f.table,
        "nb",
        "upgradesstables",
        &[
            add(&f.path("nb-2-big-"), 8),
            remove(&f.path("nb-1-big-"), old, 8),
        ],
    );
    let out = f.recover();
    assert_exit(&out, 0);
    assert_eq!(names(&idx), files_of(&["nb-3-big-"]));
    let mut want = files_of(&["nb-1-big-"]);
    want.insert(".tbl_val_idx".to_string());
    let mut got = names(&f.table);
    got.extend(
        fs::read_dir(&f.table)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.')),
    );
    assert_eq!(got, want);
}

#[test]
fn nothing_to_recover() {
    let f = Fixture::new();
    f.sstable(&f.table, "nb-1-big-", BASE);
    let out = f.recover();
    assert_exit(&out, 0);
    assert_eq!(names(&f.table), files_of(&["nb-1-big-"]));
}

#[test]
fn committed_log_with_mtimes_out_of_name_order() {
    // Old files with mtimes out of name order: all of the REMOVE side goes on commit, the log too.
    let f = Fixture::new();
    f.sstable(&f.table, "nb-1-big-", BASE);
    for (i, comp) in COMPONENTS.iter().rev().enumerate() {
        set_mtime(
            &f.table.join(format!("nb-1-big-{comp}")),
            UNIX_EPOCH + Duration::new(BASE + 30 - i as u64, 999_000_000),
        );
    }
    let old = ((BASE + 30) * 1000) as i64;
    f.sstable(&f.table, "nb-2-big-", BASE + 100);
    f.write_log(
        &f.table,
        "nb",
        "upgradesstables",
        &[
            add(&f.path("nb-2-big-"), 8),
            remove(&f.path("nb-1-big-"), old, 8),
            commit(),
        ],
    );
    let out = f.recover();
    assert_exit(&out, 0);
    assert_eq!(names(&f.table), files_of(&["nb-2-big-"]));
}

#[test]
fn leftover_log_in_a_pre_2_1_table_folder_is_resolved() {
    // Cassandra 3.0–5.0 still uses `<ks>/<table>/` when it exists (Directories.java), and resolves
    // the logs it finds there at startup: recover must see that folder too (before the fix it
    // listed only `<table>-<32 hex>` folders and left the log, and the new SSTable, behind).
    let f = Fixture::new();
    let legacy = f.data.join("ks").join("tbl");
    fs::rename(&f.table, &legacy).unwrap();
    let f = Fixture {
        table: fs::canonicalize(&legacy).unwrap(),
        ..f
    };
    let old_time = f.sstable(&f.table, "nb-1-big-", BASE);
    f.sstable(&f.table, "nb-2-big-", BASE + 100);
    f.write_log(
        &f.table,
        "nb",
        "upgradesstables",
        &[
            add(&f.path("nb-2-big-"), 8),
            remove(&f.path("nb-1-big-"), old_time, 8),
        ],
    );
    let out = f.recover();
    assert_exit(&out, 0);
    assert_eq!(
        names(&f.table),
        files_of(&["nb-1-big-"]),
        "rolled back: the new SSTable and the log are gone, the old one stays"
    );
}
