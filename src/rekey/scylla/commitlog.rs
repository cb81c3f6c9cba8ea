//! ScyllaDB commit log segments and hints under a key (FORMAT.md 4.10): what `verify` reports so
//! that an old key is not destroyed while a segment still needs it. Read only: segments and side
//! files are never modified (ScyllaDB may be replaying or recycling them).
//!
//! Every regular file of a folder (and of its sub-folders: hints keep one per host or shard, the
//! schema commit log sits in `<commitlog>/schema`) whose name does not start with `.` is a
//! segment; its side file `.<name>` names its key, resolved exactly as an SSTable's
//! (`file:<canonical path>` or `kmip://<kmip_host>/<id>`). A side file that cannot be read or
//! parsed, a symbolic link, a folder that is missing: failed, never "unencrypted".

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::sstable::scylla::commitlog::{parse_side_file, SideFile, MAX_SIDE_FILE};
use crate::sstable::scylla::{EncryptionOptions, KeySpec};

/// Where ScyllaDB keeps its files when scylla.yaml sets no `workdir`.
pub const DEFAULT_WORKDIR: &str = "/var/lib/scylla";

/// Folders deeper than this below a commit log or hints folder are not walked (failed).
const MAX_DEPTH: usize = 6;

/// A commit log or hints folder to check, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogDir {
    pub path: PathBuf,
    /// `commitlog` or `hints`.
    pub kind: &'static str,
    /// `--commitlog-dir`, `--hints-dir`, or `scylla.yaml <setting>` (`(default)` when it sets none).
    pub from: String,
}

/// One segment (or a folder that could not be walked).
#[derive(Debug, Clone, Serialize)]
pub struct SegmentVerdict {
    /// `commitlog` or `hints`.
    pub kind: &'static str,
    pub path: String,
    /// "ok" (under a given key), "other_key" (under a key not given), "unencrypted" (no side
    /// file, or one without the end mark), "failed" (side file or folder unreadable, refused).
    pub status: &'static str,
    /// The key the side file names.
    pub key: Option<String>,
    pub side_file: Option<String>,
    pub cipher: Option<String>,
    pub key_bits: Option<u32>,
    pub error: Option<String>,
}

impl SegmentVerdict {
    fn new(kind: &'static str, path: &Path) -> Self {
        SegmentVerdict {
            kind,
            path: path.display().to_string(),
            status: "unencrypted",
            key: None,
            side_file: None,
            cipher: None,
            key_bits: None,
            error: None,
        }
    }

    fn failed(kind: &'static str, path: &Path, why: String) -> Self {
        let mut v = Self::new(kind, path);
        v.status = "failed";
        v.error = Some(why);
        v
    }
}

/// Every segment of every folder, in folder then name order. `fallback` is the key of a side file
/// whose options name no absolute `secret_key_file` (as for SSTables: the single `file:` key given).
pub fn scan(dirs: &[LogDir], allowed: &[KeyId], fallback: Option<&KeyId>) -> Vec<SegmentVerdict> {
    let mut out = Vec::new();
    for d in dirs {
        match fs::metadata(&d.path) {
            Ok(m) if m.is_dir() => walk(d.kind, &d.path, 0, allowed, fallback, &mut out),
            Ok(_) => out.push(SegmentVerdict::failed(
                d.kind,
                &d.path,
                format!("{} folder (from {}) is not a folder", d.kind, d.from),
            )),
            Err(e) => out.push(SegmentVerdict::failed(
                d.kind,
                &d.path,
                format!(
                    "{} folder (from {}) cannot be read: {e}. Name the node's folder with --{}-dir (or its scylla.yaml with --scylla-yaml)",
                    d.kind, d.from, d.kind
                ),
            )),
        }
    }
    out
}

fn walk(
    kind: &'static str,
    dir: &Path,
    depth: usize,
    allowed: &[KeyId],
    fallback: Option<&KeyId>,
    out: &mut Vec<SegmentVerdict>,
) {
    if depth > MAX_DEPTH {
        out.push(SegmentVerdict::failed(
            kind,
            dir,
            format!("more than {MAX_DEPTH} folders deep below the {kind} folder: not walked; check it by hand"),
        ));
        return;
    }
    let entries = match fs::read_dir(dir).and_then(|r| r.collect::<std::io::Result<Vec<_>>>()) {
        Ok(e) => e,
        Err(e) => {
            out.push(SegmentVerdict::failed(
                kind,
                dir,
                format!("cannot list the folder: {e}"),
            ));
            return;
        }
    };
    let mut names: Vec<OsString> = entries.into_iter().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since the listing: a segment ScyllaDB deleted (with its side file).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.push(SegmentVerdict::failed(kind, &path, format!("stat: {e}")));
                continue;
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            walk(kind, &path, depth + 1, allowed, fallback, out);
        } else if ft.is_symlink() {
            out.push(SegmentVerdict::failed(
                kind,
                &path,
                "a symbolic link: not followed; check what it points to by hand, or name that folder with --commitlog-dir/--hints-dir".into(),
            ));
        } else if std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).first() == Some(&b'.') {
            // A side file: read with its segment (one whose segment is gone needs no key).
        } else if !ft.is_file() {
            out.push(SegmentVerdict::failed(
                kind,
                &path,
                "not a regular file".into(),
            ));
        } else {
            out.push(segment(kind, dir, &name, allowed, fallback));
        }
    }
}

/// The verdict of segment `dir/name`, from its side file `dir/.name`.
fn segment(
    kind: &'static str,
    dir: &Path,
    name: &OsString,
    allowed: &[KeyId],
    fallback: Option<&KeyId>,
) -> SegmentVerdict {
    let path = dir.join(name);
    let mut side_name = OsString::from(".");
    side_name.push(name);
    let side = dir.join(side_name);
    let mut v = SegmentVerdict::new(kind, &path);
    let fail = |mut v: SegmentVerdict, why: String| {
        v.status = "failed";
        v.error = Some(format!(
            "side file {}: {why}. The segment's key cannot be told; fix or inspect the file (never delete it while ScyllaDB may need the segment)",
            side.display()
        ));
        v
    };
    match fs::symlink_metadata(&side) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            v.error = Some("no side file: ScyllaDB reads the segment unencrypted".into());
            return v;
        }
        Err(e) => return fail(v, format!("stat: {e}")),
        Ok(m) if !m.file_type().is_file() => {
            v.side_file = Some(side.display().to_string());
            return fail(v, "not a regular file".into());
        }
        Ok(_) => {}
    }
    v.side_file = Some(side.display().to_string());
    let parsed = match read_side(&side) {
        Ok(b) => parse_side_file(&b).map_err(|m| m.0),
        Err(e) => Err(e.to_string()),
    };
    let (options, key_id) = match parsed {
        Err(why) => return fail(v, why),
        Ok(SideFile::Unterminated) => {
            v.error = Some(
                "side file without the end mark (written partly): ScyllaDB reads the segment unencrypted"
                    .into(),
            );
            return v;
        }
        Ok(SideFile::Encrypted { options, key_id }) => (options, key_id),
    };
    let spec = match KeySpec::from_options(&options, key_id.as_deref()) {
        Ok(s) => s,
        Err(m) => return fail(v, m.0),
    };
    v.cipher = Some(spec.cipher.algorithm.clone());
    v.key_bits = Some(spec.cipher.key_bits);
    let key = match crate::rekey::scylla::load::key_of(&spec, fallback, &side) {
        Ok(k) => k,
        Err(e) => return fail(v, e.to_string()),
    };
    v.key = Some(key.to_string());
    v.status = if allowed.contains(&key) {
        "ok"
    } else {
        "other_key"
    };
    v
}

fn read_side(side: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO swapped in after the check cannot hang the run.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(side)
        .map_err(|e| Error::io(side, "open", e))?;
    let mut buf = Vec::new();
    f.take(MAX_SIDE_FILE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(side, "read", e))?;
    Ok(buf)
}

/// The commit log and hints folders a scylla.yaml names: `commitlog_directory` (default
/// `<workdir>/commitlog`), `schema_commitlog_directory` when set outside it (default
/// `<commitlog_directory>/schema`, walked with it), `hints_directory` (`<workdir>/hints`) and
/// `view_hints_directory` (`<workdir>/view_hints`); `workdir` defaults to [`DEFAULT_WORKDIR`].
pub fn read_scylla_yaml(path: &Path) -> Result<ScyllaYaml> {
    let bytes = crate::util::read_small(path, 4 << 20)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Usage(format!("scylla.yaml {}: not UTF-8 text", path.display())))?;
    parse_scylla_yaml(&text, path)
}

/// What `verify` and `rekey` take from a scylla.yaml besides KMIP servers.
#[derive(Debug, Clone)]
pub struct ScyllaYaml {
    pub log_dirs: Vec<LogDir>,
    /// Whether it has a `kmip_hosts` section (a node with local keys only has none).
    pub has_kmip_hosts: bool,
    /// The enabled node-wide encryption sections (`user_info_encryption`,
    /// `system_info_encryption`) with their options: what new writes of tables without options
    /// of their own use (FORMAT.md 4.1).
    pub info_encryption: Vec<(&'static str, EncryptionOptions)>,
}

/// The scylla.yaml sections whose options encrypt tables without options of their own.
const INFO_SECTIONS: [&str; 2] = ["user_info_encryption", "system_info_encryption"];

/// The options of an `*_info_encryption` section when it is enabled (`enabled: true`); values
/// as strings, as ScyllaDB reads them.
fn info_section(
    doc: &yaml_rust2::Yaml,
    section: &str,
    at: &dyn Fn(String) -> Error,
) -> Result<Option<EncryptionOptions>> {
    use yaml_rust2::Yaml;
    let map = match &doc[section] {
        Yaml::BadValue | Yaml::Null => return Ok(None),
        Yaml::Hash(h) => h,
        _ => return Err(at(format!("{section}: expected a mapping of options"))),
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .ok_or_else(|| at(format!("{section}: an option name that is not text")))?;
        let value = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Boolean(b) => b.to_string(),
            Yaml::Real(r) => r.clone(),
            _ => return Err(at(format!("{section}.{key}: expected a single value"))),
        };
        pairs.push((key.to_string(), value));
    }
    let options =
        EncryptionOptions::from_pairs(pairs).map_err(|m| at(format!("{section}: {}", m.0)))?;
    let enabled = options
        .get("enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Ok(enabled.then_some(options))
}

pub fn parse_scylla_yaml(text: &str, path: &Path) -> Result<ScyllaYaml> {
    use yaml_rust2::{Yaml, YamlLoader};
    let at = |msg: String| Error::Usage(format!("scylla.yaml {}: {msg}", path.display()));
    let docs = YamlLoader::load_from_str(text).map_err(|e| at(format!("not valid YAML: {e}")))?;
    let empty = Yaml::Hash(Default::default());
    let doc = docs.first().unwrap_or(&empty);
    if !matches!(doc, Yaml::Hash(_) | Yaml::Null) {
        return Err(at(
            "not a YAML mapping of settings (`name: value` lines)".into()
        ));
    }
    let setting = |key: &str| -> Result<Option<PathBuf>> {
        match &doc[key] {
            Yaml::BadValue | Yaml::Null => Ok(None),
            Yaml::String(s) if s.is_empty() => Ok(None),
            Yaml::String(s) if Path::new(s).is_absolute() => Ok(Some(PathBuf::from(s))),
            Yaml::String(s) => Err(at(format!(
                "{key}: {s:?} is not an absolute path (ScyllaDB would resolve it against its working folder): give the folder with --commitlog-dir/--hints-dir"
            ))),
            _ => Err(at(format!("{key}: expected a folder path"))),
        }
    };
    let workdir = setting("workdir")?;
    let base = workdir.unwrap_or_else(|| PathBuf::from(DEFAULT_WORKDIR));
    let mut out = Vec::new();
    let mut add = |key: &str, kind: &'static str, default: PathBuf| -> Result<PathBuf> {
        let (p, from) = match setting(key)? {
            Some(p) => (p, format!("scylla.yaml {key}")),
            None => (default, format!("scylla.yaml {key} (default)")),
        };
        out.push(LogDir {
            path: p.clone(),
            kind,
            from,
        });
        Ok(p)
    };
    let commitlog = add("commitlog_directory", "commitlog", base.join("commitlog"))?;
    add("hints_directory", "hints", base.join("hints"))?;
    add("view_hints_directory", "hints", base.join("view_hints"))?;
    if let Some(schema) = setting("schema_commitlog_directory")? {
        if !schema.starts_with(&commitlog) {
            out.push(LogDir {
                path: schema,
                kind: "commitlog",
                from: "scylla.yaml schema_commitlog_directory".into(),
            });
        }
    }
    let mut info_encryption = Vec::new();
    for section in INFO_SECTIONS {
        if let Some(o) = info_section(doc, section, &at)? {
            info_encryption.push((section, o));
        }
    }
    Ok(ScyllaYaml {
        log_dirs: out,
        has_kmip_hosts: !doc["kmip_hosts"].is_badvalue(),
        info_encryption,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scylla_yaml_info_encryption_sections() {
        let y = Path::new("/etc/scylla/scylla.yaml");
        let d = parse_scylla_yaml(
            "user_info_encryption:\n  enabled: True\n  secret_key_strength: 256\n  key_provider: KmipKeyProviderFactory\n  kmip_host: g\nsystem_info_encryption:\n  enabled: false\n  key_provider: x\n",
            y,
        )
        .unwrap();
        assert_eq!(d.info_encryption.len(), 1);
        let (name, o) = &d.info_encryption[0];
        assert_eq!(*name, "user_info_encryption");
        assert_eq!(o.get("secret_key_strength"), Some("256"));
        assert_eq!(o.get("kmip_host"), Some("g"));
        for (text, says) in [
            ("user_info_encryption: 1\n", "expected a mapping"),
            (
                "user_info_encryption:\n  enabled: [1]\n",
                "user_info_encryption.enabled",
            ),
        ] {
            let e = parse_scylla_yaml(text, y).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn scylla_yaml_folders_and_defaults() {
        let y = Path::new("/etc/scylla/scylla.yaml");
        let d = parse_scylla_yaml("cluster_name: x\n", y).unwrap();
        assert!(!d.has_kmip_hosts);
        let d = d.log_dirs;
        let paths: Vec<(&str, PathBuf)> = d.iter().map(|d| (d.kind, d.path.clone())).collect();
        assert_eq!(
            paths,
            [
                ("commitlog", PathBuf::from("/var/lib/scylla/commitlog")),
                ("hints", "/var/lib/scylla/hints".into()),
                ("hints", "/var/lib/scylla/view_hints".into()),
            ]
        );
        assert!(d[0].from.contains("(default)"));
        let d = parse_scylla_yaml(
            "workdir: /w\ncommitlog_directory: /c\nschema_commitlog_directory: /s\nkmip_hosts:\n  k: {hosts: h}\n",
            y,
        )
        .unwrap();
        assert!(d.has_kmip_hosts);
        let d = d.log_dirs;
        let paths: Vec<PathBuf> = d.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            [
                PathBuf::from("/c"),
                "/w/hints".into(),
                "/w/view_hints".into(),
                "/s".into()
            ]
        );
        assert_eq!(d[0].from, "scylla.yaml commitlog_directory");
        for (text, says) in [
            ("commitlog_directory: rel\n", "not an absolute path"),
            ("hints_directory: [a]\n", "hints_directory"),
            ("- a\n", "mapping"),
            ("a: [", "not valid YAML"),
        ] {
            let e = parse_scylla_yaml(text, y).unwrap_err().to_string();
            assert!(
                e.contains("/etc/scylla/scylla.yaml") && e.contains(says),
                "{text}: {e}"
            );
        }
    }
}
