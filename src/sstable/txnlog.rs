//! Cassandra transaction logs (FORMAT.md 1.5): how SSTables are replaced atomically.
//!
//! A log `<v>_txn_<operation>_<time-uuid>.log` in the table folder lists `ADD` (new SSTables),
//! `REMOVE` (obsoleted ones) and finally `COMMIT` or `ABORT`. At startup Cassandra (and
//! `sstableutil --cleanup`, and [`recover_dir`] here) deletes the REMOVE side of a committed log
//! and the ADD side of any other, then the log. Mirrors `org.apache.cassandra.db.lifecycle.LogRecord`
//! and `LogFile`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Malformed, Result};
use crate::fsio::sync_dir;

/// The operation name in the file name: it must be one Cassandra knows (OperationType's file name),
/// or a node throws at startup.
pub const OPERATION: &str = "upgradesstables";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Add,
    Remove,
    Commit,
    Abort,
}

impl RecordType {
    fn as_str(self) -> &'static str {
        match self {
            RecordType::Add => "ADD",
            RecordType::Remove => "REMOVE",
            RecordType::Commit => "COMMIT",
            RecordType::Abort => "ABORT",
        }
    }

    fn parse(s: &str) -> Option<RecordType> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Some(RecordType::Add),
            "remove" => Some(RecordType::Remove),
            "commit" => Some(RecordType::Commit),
            "abort" => Some(RecordType::Abort),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordType,
    /// SSTable prefix path exactly as written (with the trailing `-` except for 3.x readers).
    pub path: String,
    pub update_time: i64,
    pub num_files: i32,
}

impl Record {
    pub fn add(path: String, num_files: i32) -> Record {
        Record {
            kind: RecordType::Add,
            path,
            update_time: 0,
            num_files,
        }
    }

    pub fn remove(path: String, update_time: i64, num_files: i32) -> Record {
        Record {
            kind: RecordType::Remove,
            path,
            update_time,
            num_files,
        }
    }

    pub fn commit() -> Record {
        Record {
            kind: RecordType::Commit,
            path: String::new(),
            update_time: 0,
            num_files: 0,
        }
    }

    pub fn abort() -> Record {
        Record {
            kind: RecordType::Abort,
            ..Record::commit()
        }
    }

    /// CRC32(path || TYPE || be32(low updateTime) || be32(high updateTime) || be32(numFiles)),
    /// masked to a non-negative Java long (LogRecord.computeChecksum).
    pub fn checksum(&self) -> u64 {
        let mut h = crc32fast::Hasher::new();
        h.update(self.path.as_bytes());
        h.update(self.kind.as_str().as_bytes());
        h.update(&(self.update_time as u32).to_be_bytes());
        h.update(&((self.update_time >> 32) as u32).to_be_bytes());
        h.update(&self.num_files.to_be_bytes());
        (h.finalize() as u64) & 0x7FFF_FFFF_FFFF_FFFF
    }

    /// The line as written, without the newline.
    pub fn format(&self) -> String {
        format!(
            "{}:[{},{},{}][{}]",
            self.kind.as_str(),
            self.path,
            self.update_time,
            self.num_files,
            self.checksum()
        )
    }

    /// Parses one line with Cassandra's regex
    /// `^(add|remove|commit|abort):\[([^,]*),?([^,]*),?([^,]*)\]\[(\d*)\]$` and checks the checksum.
    pub fn parse(line: &str) -> std::result::Result<Record, Malformed> {
        let (kind, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no record type in {line:?}"))?;
        let kind =
            RecordType::parse(kind).ok_or_else(|| format!("unknown record type {kind:?}"))?;
        let rest = rest
            .strip_prefix('[')
            .ok_or_else(|| format!("malformed record {line:?}"))?;
        let (fields, tail) = rest
            .split_once("][")
            .ok_or_else(|| format!("malformed record {line:?}"))?;
        let sum = tail
            .strip_suffix(']')
            .ok_or_else(|| format!("malformed record {line:?}"))?;
        if sum.is_empty() || !sum.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Malformed::from(format!("malformed checksum in {line:?}")));
        }
        let parts: Vec<&str> = fields.split(',').collect();
        if parts.len() > 3 {
            return Err(Malformed::from(format!("too many fields in {line:?}")));
        }
        let path = parts.first().copied().unwrap_or("").to_string();
        // Long.parseLong / Integer.parseInt: every number is there and in range.
        let field = |i: usize| parts.get(i).copied().unwrap_or("");
        let update_time: i64 = field(1)
            .parse()
            .map_err(|_| format!("bad number {:?} in {line:?}", field(1)))?;
        let num_files: i32 = field(2)
            .parse()
            .map_err(|_| format!("bad number {:?} in {line:?}", field(2)))?;
        // LogRecord's constructor: COMMIT/ABORT carry no path and zeros, ADD no updateTime.
        let has_file = matches!(kind, RecordType::Add | RecordType::Remove);
        let rec = Record {
            kind,
            path: if has_file { path } else { String::new() },
            update_time: if kind == RecordType::Remove {
                update_time
            } else {
                0
            },
            num_files: if has_file { num_files } else { 0 },
        };
        let want: u64 = sum
            .parse()
            .map_err(|_| format!("bad checksum in {line:?}"))?;
        if rec.checksum() != want {
            return Err(Malformed::from(format!(
                "checksum mismatch in {line:?} (stored {want}, computed {})",
                rec.checksum()
            )));
        }
        Ok(rec)
    }

    /// The folder and file-name prefix this record's files share. 3.x paths lack the trailing `-`.
    fn file_prefix(&self) -> Option<(PathBuf, String)> {
        let p = Path::new(&self.path);
        let dir = p.parent()?.to_path_buf();
        let mut name = p.file_name()?.to_str()?.to_string();
        if !self.path.ends_with('-') {
            name.push('-');
        }
        Some((dir, name))
    }

    /// The files on disk that belong to this record's SSTable.
    pub fn existing_files(&self) -> Result<Vec<PathBuf>> {
        let Some((dir, prefix)) = self.file_prefix() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&dir, "list folder", e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&dir, "list folder", e))?;
            if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                out.push(entry.path());
            }
        }
        Ok(out)
    }
}

/// The record path for an SSTable prefix path (`/…/nb-5-big-`), in the form its version's reader
/// expects: 3.0/3.11 (`m*`) without the trailing separator (CASSANDRA-13294).
pub fn record_path(prefix_path: &Path, cassandra_3: bool) -> String {
    let s = prefix_path.to_string_lossy().into_owned();
    if cassandra_3 {
        s.trim_end_matches('-').to_string()
    } else {
        s
    }
}

/// `File.lastModified()` as JDK 8 reports it: mtime truncated to whole seconds, in ms. Newer
/// Cassandra compares floor-to-second, older compares exactly: this value satisfies both.
pub fn last_modified_ms(meta: &fs::Metadata) -> i64 {
    meta.mtime() * 1000
}

/// A new RFC 4122 version-1 (time-based) UUID, with random clock sequence and node.
pub fn time_uuid() -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| Error::Usage(format!("system clock before 1970: {e}")))?;
    let ts = (now.as_nanos() / 100) as u64 + 0x01B2_1DD2_1381_4000;
    let mut r = [0u8; 8];
    crate::crypto::random::fill(&mut r)?;
    let time_low = ts as u32;
    let time_mid = (ts >> 32) as u16;
    let time_hi = ((ts >> 48) as u16 & 0x0FFF) | 0x1000;
    let clock = (u16::from_be_bytes([r[0], r[1]]) & 0x3FFF) | 0x8000;
    let mut node = [r[2], r[3], r[4], r[5], r[6], r[7]];
    node[0] |= 0x01; // multicast bit: not a real MAC address
    Ok(format!(
        "{time_low:08x}-{time_mid:04x}-{time_hi:04x}-{clock:04x}-{}",
        node.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// True for a file name Cassandra would read as a transaction log.
pub fn is_log_name(name: &str) -> bool {
    let name = name.strip_prefix("bti-").unwrap_or(name);
    name.ends_with(".log")
        && name.len() > 7
        && name.is_char_boundary(2)
        && name[2..].starts_with("_txn_")
}

/// A transaction log being written. Every append is fsynced, and the folder after creation.
pub struct TxnLog {
    path: PathBuf,
    file: File,
}

impl TxnLog {
    /// Creates `<version>_txn_upgradesstables_<uuid>.log` exclusively in `dir`. Only the two-letter
    /// form is readable by every Cassandra version (FORMAT.md 1.5), so a one-letter BTI version is
    /// padded the way DSE names it.
    pub fn create(dir: &Path, version: &str) -> Result<TxnLog> {
        let v = if version.len() == 2 {
            version.to_string()
        } else {
            format!("{version:a<2}")
        };
        let path = dir.join(format!("{v}_txn_{OPERATION}_{}.log", time_uuid()?));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| Error::io(&path, "create transaction log", e))?;
        if let Err(e) = sync_dir(dir) {
            // Nothing was logged yet: take the empty log away again.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(TxnLog { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        let line = format!("{}\n", record.format());
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, "append to transaction log", e))?;
        // An fsync error is fatal: never retried (the page may already be dropped).
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "fsync transaction log", e))
    }

    /// Removes the log once its outcome is applied, and makes that durable.
    pub fn finish(self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        drop(self.file);
        fs::remove_file(&self.path)
            .map_err(|e| Error::io(&self.path, "remove transaction log", e))?;
        sync_dir(&dir)
    }
}

/// What [`recover_log`] decided for one log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovery {
    pub log: PathBuf,
    /// "committed" (the REMOVE side was deleted) or "rolled back" (the ADD side was deleted).
    pub outcome: &'static str,
    pub deleted: Vec<PathBuf>,
}

/// Parses a log the way Cassandra's LogFile does. Returns the records and whether the last line
/// was torn (ignored). Errors are the states that stop a node from starting.
pub fn read_log(path: &Path) -> Result<(Vec<Record>, bool)> {
    let buf = crate::util::read_small(path, 16 * 1024 * 1024)?;
    // Cassandra reads logs with Files.readAllLines(UTF_8): malformed input stops it, and \n,
    // \r\n and \r all end a line; a blank line is a (bad) record.
    let text = String::from_utf8(buf).map_err(|_| {
        Error::corrupt(
            path,
            "not UTF-8; Cassandra would refuse to start: inspect the log by hand",
        )
    })?;
    let mut lines: Vec<&str> = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' || b[i] == b'\r' {
            lines.push(&text[start..i]);
            if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < b.len() {
        lines.push(&text[start..]);
    }
    let mut records: Vec<Record> = Vec::new();
    let mut torn = false;
    for (i, line) in lines.iter().enumerate() {
        match Record::parse(line) {
            Ok(r) => {
                if records.iter().any(|x| x == &r) {
                    return Err(Error::corrupt(path, format!("duplicate record {line:?}")));
                }
                if let Some(last) = records.last() {
                    if matches!(last.kind, RecordType::Commit | RecordType::Abort) {
                        return Err(Error::corrupt(
                            path,
                            format!("record after {}: {line:?}", last.kind.as_str()),
                        ));
                    }
                }
                records.push(r);
            }
            Err(e) if i + 1 == lines.len() => {
                // A torn last line: the write was interrupted; Cassandra ignores it.
                let _ = e;
                torn = true;
            }
            Err(e) => {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "line {}: {e}; Cassandra would refuse to start: inspect the log by hand",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok((records, torn))
}

/// Applies one leftover log: committed → delete the REMOVE side, otherwise the ADD side; then the log.
pub fn recover_log(path: &Path) -> Result<Recovery> {
    let (records, torn) = read_log(path)?;
    let folder = path.parent().and_then(|d| fs::canonicalize(d).ok());
    for r in records
        .iter()
        .filter(|r| matches!(r.kind, RecordType::Add | RecordType::Remove))
    {
        let dir = Path::new(&r.path)
            .parent()
            .and_then(|d| fs::canonicalize(d).ok());
        if dir.is_none() || dir != folder {
            return Err(Error::corrupt(
                path,
                format!(
                    "record {:?} names files outside the log's folder: inspect the log by hand",
                    r.path
                ),
            ));
        }
    }
    let committed = matches!(records.last(), Some(r) if r.kind == RecordType::Commit);
    // Before deleting anything, check what Cassandra checks: REMOVE records describe files still there.
    for r in records.iter().filter(|r| r.kind == RecordType::Remove) {
        let files = r.existing_files()?;
        if torn && (files.len() as i64) < r.num_files as i64 {
            return Err(Error::corrupt(
                path,
                format!(
                    "torn last line and only {} of the {} files of {} remain; Cassandra would refuse this log: inspect it by hand",
                    files.len(),
                    r.num_files,
                    r.path
                ),
            ));
        }
        // Cassandra checks this for every REMOVE record, committed or not (LogFile.verifyRecord):
        // deletion goes oldest first, so the newest remaining file keeps the logged time.
        if !files.is_empty() {
            let mut newest = 0;
            for f in &files {
                let m = fs::metadata(f).map_err(|e| Error::io(f, "stat", e))?;
                newest = newest.max(last_modified_ms(&m));
            }
            if newest / 1000 != r.update_time / 1000 {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "the files of {} were modified after the log was written (updateTime {}, now {newest}); Cassandra would refuse this log: inspect it by hand",
                        r.path, r.update_time
                    ),
                ));
            }
        }
    }
    let doomed = if committed {
        RecordType::Remove
    } else {
        RecordType::Add
    };
    let mut files: Vec<(i64, PathBuf)> = Vec::new();
    for r in records.iter().filter(|r| r.kind == doomed) {
        for f in r.existing_files()? {
            let m = fs::symlink_metadata(&f).map_err(|e| Error::io(&f, "stat", e))?;
            files.push((m.mtime() * 1_000_000_000 + m.mtime_nsec(), f));
        }
    }
    // Oldest first, so that a REMOVE record's updateTime stays true while deleting.
    files.sort();
    let mut deleted = Vec::new();
    for (_, f) in files {
        match fs::remove_file(&f) {
            Ok(()) => deleted.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&f, "delete", e)),
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir)?;
    fs::remove_file(path).map_err(|e| Error::io(path, "remove transaction log", e))?;
    sync_dir(dir)?;
    Ok(Recovery {
        log: path.to_path_buf(),
        outcome: if committed {
            "committed"
        } else {
            "rolled back"
        },
        deleted,
    })
}

/// Leftover logs in one folder.
pub fn logs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, "list folder", e))? {
        let entry = entry.map_err(|e| Error::io(dir, "list folder", e))?;
        // Cassandra decodes names leniently: a name that is not UTF-8 may still be a log to it.
        if is_log_name(&entry.file_name().to_string_lossy()) {
            let t = entry
                .file_type()
                .map_err(|e| Error::io(entry.path(), "stat", e))?;
            if t.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_format_md() {
        assert_eq!(Record::commit().format(), "COMMIT:[,0,0][2613697770]");
        assert_eq!(Record::abort().format(), "ABORT:[,0,0][737437348]");
        let add = Record::add(
            "/var/lib/cassandra/data/ks/tbl-0123456789abcdef0123456789abcdef/nb-5-big-".into(),
            8,
        );
        assert_eq!(
            add.format(),
            "ADD:[/var/lib/cassandra/data/ks/tbl-0123456789abcdef0123456789abcdef/nb-5-big-,0,8][959075699]"
        );
        assert_eq!(Record::parse(&add.format()).unwrap(), add);
        assert_eq!(
            Record::parse("commit:[,0,0][2613697770]").unwrap(),
            Record::commit()
        );
    }

    #[test]
    fn rejects_bad_checksums_and_shapes() {
        assert!(Record::parse("COMMIT:[,0,0][2613697771]").is_err());
        assert!(Record::parse("COMMIT:[,0,0]").is_err());
        assert!(Record::parse("FOO:[,0,0][1]").is_err());
        assert!(Record::parse("COMMIT:[,0,0][12a]").is_err());
    }

    #[test]
    fn cassandra_3_paths_have_no_trailing_separator() {
        let p = Path::new("/d/ks/t-00/mc-5-big-");
        assert_eq!(record_path(p, true), "/d/ks/t-00/mc-5-big");
        assert_eq!(record_path(p, false), "/d/ks/t-00/mc-5-big-");
    }

    #[test]
    fn log_names() {
        assert!(is_log_name(
            "nb_txn_upgradesstables_6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a.log"
        ));
        assert!(is_log_name("bti-da_txn_compaction_x.log"));
        assert!(!is_log_name("nb-1-big-Data.db"));
        let u = time_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "1");
    }
}
