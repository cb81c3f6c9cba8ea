//! An independent model of Cassandra's startup rule for transaction logs (FORMAT.md 1.5), written
//! from Cassandra's LogFile / LogRecord / LogReplicaSet (3.11, 4.0, 5.0) and never calling the
//! crate: `LogRecord.make` (regex, Long.parseLong), `LogReplicaSet.readRecords` (duplicates, a
//! final record before the last line), `LogFile.verify` / `verifyRecord` (checksums, REMOVE
//! updateTime floor-to-second, a corrupt last record tolerated when every REMOVE still has its
//! numFiles files) and `removeUnfinishedLeftovers` (last record a valid COMMIT: delete the REMOVE
//! side, else the ADD side).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What Cassandra's startup (or `sstableutil --cleanup`) does with one transaction log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// The node refuses to start (LogFile.verify is false).
    Refuse(String),
    /// The log is resolved: the REMOVE side (committed) or the ADD side deleted, then the log.
    Resolve {
        committed: bool,
        delete: BTreeSet<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Remove,
    Commit,
    Abort,
    Unknown,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Add => "ADD",
            Kind::Remove => "REMOVE",
            Kind::Commit => "COMMIT",
            Kind::Abort => "ABORT",
            Kind::Unknown => "UNKNOWN",
        }
    }
}

/// LogRecord as Cassandra holds it after `LogRecord.make(line)`.
#[derive(Debug, Clone)]
pub struct JRecord {
    pub kind: Kind,
    /// `absolutePath`: only for ADD/REMOVE (COMMIT/ABORT drop whatever the line says).
    pub path: Option<String>,
    /// Kept only for REMOVE (the constructor zeroes it otherwise).
    pub update_time: i64,
    pub num_files: i32,
    pub checksum: i64,
    pub error: Option<String>,
    /// For REMOVE records that passed their checksum: (files on disk, max lastModified).
    pub on_disk: Option<(usize, i64)>,
}

impl JRecord {
    /// equals(): type, absolutePath, numFiles, updateTime (checksum and raw text excluded).
    pub fn same(&self, o: &JRecord) -> bool {
        self.kind == o.kind
            && self.path == o.path
            && self.num_files == o.num_files
            && self.update_time == o.update_time
    }

    /// computeChecksum(): CRC32(path || TYPE || int(updateTime) || int(updateTime >>> 32) ||
    /// numFiles) & Long.MAX_VALUE, over the normalized fields.
    pub fn compute_checksum(&self) -> i64 {
        let mut h = crc32fast::Hasher::new();
        h.update(self.path.as_deref().unwrap_or("").as_bytes());
        h.update(self.kind.name().as_bytes());
        h.update(&(self.update_time as i32).to_be_bytes());
        h.update(&(((self.update_time as u64) >> 32) as i32).to_be_bytes());
        h.update(&self.num_files.to_be_bytes());
        i64::from(h.finalize())
    }
}

/// `BufferedReader.readLine` over the whole file (Files.readAllLines): `\n`, `\r\n` and `\r`
/// end a line; a final line without terminator counts; no empty line after a final terminator.
pub fn java_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push(std::mem::take(&mut cur)),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `LogRecord.make(line)`: the regex
/// `^(add|remove|commit|abort):\[([^,]*),?([^,]*),?([^,]*)\]\[(\d*)\]$` (case-insensitive), then
/// Long.parseLong / Integer.parseInt of the groups (an empty or out-of-range number makes the
/// record UNKNOWN and invalid, as a failed match does).
pub fn make_record(line: &str) -> JRecord {
    let unknown = |why: String| JRecord {
        kind: Kind::Unknown,
        path: None,
        update_time: 0,
        num_files: 0,
        checksum: 0,
        error: Some(why),
        on_disk: None,
    };
    let Some((ty, rest)) = line.split_once(':') else {
        return unknown(format!("Failed to parse [{line}]"));
    };
    let kind = match ty.to_ascii_lowercase().as_str() {
        "add" => Kind::Add,
        "remove" => Kind::Remove,
        "commit" => Kind::Commit,
        "abort" => Kind::Abort,
        _ => return unknown(format!("Failed to parse [{line}]")),
    };
    // `(\d*)\]$` preceded by `\]\[`: the checksum is the maximal digit run before the last `]`.
    let Some(body) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return unknown(format!("Failed to parse [{line}]"));
    };
    let digits_at = body
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    let (head, sum) = body.split_at(digits_at);
    let Some(fields) = head.strip_suffix("][") else {
        return unknown(format!("Failed to parse [{line}]"));
    };
    let parts: Vec<&str> = fields.split(',').collect();
    if parts.len() > 3 {
        return unknown(format!("Failed to parse [{line}]"));
    }
    let g = |i: usize| parts.get(i).copied().unwrap_or("");
    let (Ok(update_time), Ok(num_files), Ok(checksum)) =
        (java_long(g(1)), java_int(g(2)), java_long(sum))
    else {
        return unknown(format!("Failed to parse line: {line}"));
    };
    let has_file = matches!(kind, Kind::Add | Kind::Remove);
    JRecord {
        kind,
        path: has_file.then(|| g(0).to_string()),
        update_time: if kind == Kind::Remove { update_time } else { 0 },
        num_files: if has_file { num_files } else { 0 },
        checksum,
        error: None,
        on_disk: None,
    }
}

fn java_long(s: &str) -> Result<i64, ()> {
    java_number(s).and_then(|v| i64::try_from(v).map_err(|_| ()))
}

fn java_int(s: &str) -> Result<i32, ()> {
    java_number(s).and_then(|v| i32::try_from(v).map_err(|_| ()))
}

/// Long.parseLong: optional sign, then at least one ASCII digit.
fn java_number(s: &str) -> Result<i128, ()> {
    let (neg, d) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if d.is_empty() || d.len() > 30 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let v: i128 = d.parse().map_err(|_| ())?;
    Ok(if neg { -v } else { v })
}

/// The files of a record path: in its parent folder, names starting with its file name (with the
/// `-` that 3.x readers append, CASSANDRA-13294). (name, lastModified in ms as JDK 11+ reports it).
pub fn record_files(path: &str) -> Vec<(PathBuf, i64)> {
    let p = Path::new(path);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = if name.ends_with('-') {
        name.to_string()
    } else {
        format!("{name}-")
    };
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            if let Ok(m) = fs::symlink_metadata(e.path()) {
                out.push((e.path(), m.mtime() * 1000 + m.mtime_nsec() / 1_000_000));
            }
        }
    }
    out
}

/// Cassandra's startup on one log (LogFile.verify, then removeUnfinishedLeftovers), without
/// touching anything: what it would refuse, or which files it would delete.
pub fn cassandra_startup(log: &Path) -> Startup {
    let Ok(bytes) = fs::read(log) else {
        return Startup::Refuse("cannot read the log".into());
    };
    // Files.readAllLines(UTF_8) throws on malformed input.
    let Ok(text) = String::from_utf8(bytes) else {
        return Startup::Refuse("not UTF-8".into());
    };
    let lines = java_lines(&text);
    // LogReplicaSet.readRecords: duplicates and a final record before the last line stop it.
    let mut records: Vec<JRecord> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let r = make_record(line);
        if records.iter().any(|x| x.same(&r)) {
            return Startup::Refuse(format!("duplicate record {line:?}"));
        }
        let is_final = matches!(r.kind, Kind::Commit | Kind::Abort);
        records.push(r);
        if is_final && i != lines.len() - 1 {
            return Startup::Refuse(format!("{line:?} should have been the last record"));
        }
    }
    // LogFile.verifyRecord on every record.
    for r in records.iter_mut() {
        if r.error.is_some() {
            continue;
        }
        if r.checksum != r.compute_checksum() {
            r.error = Some(format!(
                "invalid checksum {} (computed {})",
                r.checksum,
                r.compute_checksum()
            ));
            continue;
        }
        if r.kind != Kind::Remove {
            continue;
        }
        let files = record_files(r.path.as_deref().unwrap());
        let newest = files
            .iter()
            .map(|(_, t)| *t)
            .filter(|&t| t > 0)
            .max()
            .unwrap_or(0);
        r.on_disk = Some((files.len(), newest));
        let trunc = |t: i64| t - t % 1000;
        if trunc(r.update_time) != trunc(newest) && newest > 0 {
            r.error = Some(format!(
                "unexpected files: last update time {newest} should have been {}",
                r.update_time
            ));
        }
    }
    if let Some(first) = records.iter().position(|r| r.error.is_some()) {
        if first != records.len() - 1 {
            return Startup::Refuse(format!(
                "record {} invalid: {}",
                first + 1,
                records[first].error.as_deref().unwrap()
            ));
        }
        // A corrupt last record: go on only if every other REMOVE has all its files.
        for r in &records[..first] {
            if r.kind == Kind::Remove
                && r.on_disk
                    .is_some_and(|(n, _)| (n as i64) < r.num_files as i64)
            {
                return Startup::Refuse(format!(
                    "incomplete fileset for {:?} with a corrupt last record",
                    r.path
                ));
            }
        }
    }
    let committed = records
        .last()
        .is_some_and(|r| r.kind == Kind::Commit && r.error.is_none());
    let doomed = if committed { Kind::Remove } else { Kind::Add };
    let delete = records
        .iter()
        .filter(|r| r.kind == doomed)
        .flat_map(|r| record_files(r.path.as_deref().unwrap()))
        .map(|(p, _)| p)
        .collect();
    Startup::Resolve { committed, delete }
}
