//! Where the node keeps its data: the data directories a run scans, from `--data-dir`, else from
//! the node's own `cassandra.yaml`, else the packaged default; and, when `--data-dir` names only
//! some of the directories the configuration lists, which ones it leaves out (so that `verify`
//! and `kmip destroy` never declare a key unused while a forgotten disk still needs it).
//!
//! What Cassandra does (apache/cassandra `DatabaseDescriptor.applySimpleConfig`): an absent or
//! empty `data_file_directories` means `<cassandra.storagedir>/data`, and likewise
//! `<storagedir>/commitlog` and `<storagedir>/hints`; `cassandra.storagedir` is set by the start
//! scripts: `$CASSANDRA_HOME/data` in an Apache tarball (`bin/cassandra.in.sh`), `$DSE_HOME/data`
//! and `$HCD_HOME/data` in DSE and HCD tarballs (`bin/dse-env.sh`, `bin/hcd-env.sh`), and
//! `/var/lib/cassandra` in the packages. `local_system_data_file_directory` (4.0+) holds the
//! system keyspaces, which DSE can encrypt too: it is a data directory here as well.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// The last resort when neither `--data-dir` nor a configuration gives one.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cassandra/data";

/// The settings of a node's cassandra.yaml that say where its files are.
#[derive(Debug, Clone, Serialize)]
pub struct NodeConfig {
    pub path: PathBuf,
    /// `data_file_directories`, or Cassandra's default for this layout when it is absent.
    pub data_file_directories: Vec<PathBuf>,
    /// Whether `data_file_directories` was absent (or empty) and the default was taken.
    pub data_dirs_defaulted: bool,
    pub local_system_data_file_directory: Option<PathBuf>,
    /// For later use (commit log segments and hints may be encrypted too): as set, or defaulted.
    pub commitlog_directory: PathBuf,
    pub hints_directory: PathBuf,
}

impl NodeConfig {
    /// Reads a cassandra.yaml: a regular file (opened without blocking, so a FIFO cannot hang the
    /// run), at most 4 MiB.
    pub fn read(path: &Path) -> Result<NodeConfig> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let bad = |e: std::io::Error| {
            Error::Usage(format!(
                "cassandra.yaml {}: {e}. Point --cassandra-yaml at the node's configuration, or name the data directories with --data-dir",
                path.display()
            ))
        };
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(bad)?;
        let meta = f.metadata().map_err(bad)?;
        if !meta.is_file() {
            return Err(Error::Usage(format!(
                "cassandra.yaml {}: not a regular file",
                path.display()
            )));
        }
        if meta.len() > 4 << 20 {
            return Err(Error::Usage(format!(
                "cassandra.yaml {}: {} bytes, too large for a configuration file",
                path.display(),
                meta.len()
            )));
        }
        let mut text = String::new();
        f.take(4 << 20).read_to_string(&mut text).map_err(bad)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig> {
        use yaml_rust2::{Yaml, YamlLoader};
        let at = |msg: String| Error::Usage(format!("cassandra.yaml {}: {msg}", path.display()));
        let docs =
            YamlLoader::load_from_str(text).map_err(|e| at(format!("not valid YAML: {e}")))?;
        let empty = Yaml::Hash(Default::default());
        let doc = docs.first().unwrap_or(&empty);
        if !matches!(doc, Yaml::Hash(_) | Yaml::Null) {
            return Err(at(
                "not a YAML mapping of settings (`name: value` lines)".into()
            ));
        }
        let folder = |key: &str, y: &Yaml| -> Result<PathBuf> {
            match y {
                Yaml::String(s) if Path::new(s).is_absolute() => Ok(PathBuf::from(s)),
                Yaml::String(s) => Err(at(format!(
                    "{key}: {s:?} is not an absolute path (Cassandra would resolve it against its working folder): write the absolute path"
                ))),
                other => Err(at(format!(
                    "{key}: expected a folder path, found {}",
                    kind(other)
                ))),
            }
        };
        let optional = |key: &str| -> Result<Option<PathBuf>> {
            match &doc[key] {
                Yaml::BadValue | Yaml::Null => Ok(None),
                y => folder(key, y).map(Some),
            }
        };
        let listed: Vec<PathBuf> = match &doc["data_file_directories"] {
            Yaml::BadValue | Yaml::Null => Vec::new(),
            Yaml::Array(a) => a
                .iter()
                .map(|y| folder("data_file_directories", y))
                .collect::<Result<_>>()?,
            other => {
                return Err(at(format!(
                    "data_file_directories must be a list of folder paths, found {}",
                    kind(other)
                )))
            }
        };
        let storagedir = storage_dir(path);
        let data_dirs_defaulted = listed.is_empty();
        Ok(NodeConfig {
            path: path.to_path_buf(),
            data_file_directories: if data_dirs_defaulted {
                vec![storagedir.join("data")]
            } else {
                listed
            },
            data_dirs_defaulted,
            local_system_data_file_directory: optional("local_system_data_file_directory")?,
            commitlog_directory: optional("commitlog_directory")?
                .unwrap_or_else(|| storagedir.join("commitlog")),
            hints_directory: optional("hints_directory")?
                .unwrap_or_else(|| storagedir.join("hints")),
        })
    }

    /// Every folder that holds SSTables of this node.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        let mut v = self.data_file_directories.clone();
        v.extend(self.local_system_data_file_directory.clone());
        v
    }
}

fn kind(y: &yaml_rust2::Yaml) -> &'static str {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(_) | Yaml::Integer(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "nothing",
        Yaml::BadValue => "an unreadable value",
    }
}

/// `cassandra.storagedir` as the start scripts set it for the layout the file is in: a tarball's
/// `<home>/conf/cassandra.yaml` (Apache) or `<home>/resources/cassandra/conf/cassandra.yaml`
/// (DSE, HCD) → `<home>/data`; anything else (the packages' `/etc/...`) → `/var/lib/cassandra`.
fn storage_dir(yaml: &Path) -> PathBuf {
    let conf = yaml
        .parent()
        .filter(|c| c.file_name() == Some("conf".as_ref()));
    let Some(home) = conf.and_then(Path::parent) else {
        return PathBuf::from("/var/lib/cassandra");
    };
    let dse_home = Some(home)
        .filter(|h| h.file_name() == Some("cassandra".as_ref()))
        .and_then(Path::parent)
        .filter(|r| r.file_name() == Some("resources".as_ref()))
        .and_then(Path::parent);
    dse_home.unwrap_or(home).join("data")
}

/// Where the start scripts of Cassandra, DSE and HCD look for cassandra.yaml, in their order:
/// `$CASSANDRA_CONF`, the tarball layouts under `$CASSANDRA_HOME`, `$DSE_HOME`, `$HCD_HOME`, then
/// the packages' folders (`bin/dse-env.sh`, `bin/hcd-env.sh`, `bin/cassandra.in.sh`).
pub fn standard_locations(env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut v = Vec::new();
    v.extend(var("CASSANDRA_CONF").map(|c| c.join("cassandra.yaml")));
    v.extend(var("CASSANDRA_HOME").map(|h| h.join("conf/cassandra.yaml")));
    for home in ["DSE_HOME", "HCD_HOME"] {
        v.extend(var(home).map(|h| h.join("resources/cassandra/conf/cassandra.yaml")));
    }
    for p in [
        "/etc/dse/cassandra/cassandra.yaml",
        "/etc/dse/cassandra.yaml",
        "/etc/hcd/cassandra/cassandra.yaml",
        "/etc/hcd/cassandra.yaml",
        "/etc/cassandra/cassandra.yaml",
    ] {
        v.push(PathBuf::from(p));
    }
    v
}

/// The data directories of a run, where they come from, and what the operator should know.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataDirs {
    /// The folders scanned, each once.
    pub dirs: Vec<PathBuf>,
    /// `--data-dir`, `cassandra.yaml` or `default`.
    pub from: String,
    /// The node configuration read, if one was given or found.
    pub cassandra_yaml: Option<PathBuf>,
    /// Data directories of that configuration that `--data-dir` leaves out.
    pub missing: Vec<PathBuf>,
    /// Lines for stderr: which file was used, duplicates dropped, the default taken.
    #[serde(skip)]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub node: Option<NodeConfig>,
}

impl DataDirs {
    /// Exactly these folders, with no configuration (the demo, tests, library callers).
    pub fn given(dirs: Vec<PathBuf>) -> DataDirs {
        DataDirs {
            dirs,
            from: "--data-dir".into(),
            ..DataDirs::default()
        }
    }

    /// `--data-dir` (deduplicated by canonical path) if given, else the node configuration's data
    /// directories, else [`DEFAULT_DATA_DIR`]. The configuration is `yaml` if given, else the first
    /// of [`standard_locations`] that exists; it is read even with `--data-dir`, to name the
    /// directories `--data-dir` leaves out. A configuration that cannot be read is an error.
    pub fn resolve(
        given: &[PathBuf],
        yaml: Option<&Path>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<DataDirs> {
        let mut notes = Vec::new();
        let node = match yaml {
            Some(p) => Some(NodeConfig::read(p)?),
            None => {
                // A location that cannot even be checked counts as present: it is then read, and
                // its error reported, rather than skipped.
                let found: Vec<PathBuf> = standard_locations(env)
                    .into_iter()
                    .filter(|p| p.try_exists().unwrap_or(true))
                    .collect();
                if found.len() > 1 {
                    notes.push(format!(
                        "note: using {}; also present, not used: {}",
                        found[0].display(),
                        join(&found[1..])
                    ));
                }
                found.first().map(|p| NodeConfig::read(p)).transpose()?
            }
        };
        let mut d = DataDirs {
            cassandra_yaml: node.as_ref().map(|n| n.path.clone()),
            ..DataDirs::default()
        };
        if !given.is_empty() {
            d.dirs = dedup(given, &mut notes)?;
            d.from = "--data-dir".into();
            if let Some(n) = &node {
                d.missing = not_covered(&n.data_dirs(), &d.dirs);
            }
        } else if let Some(n) = &node {
            d.dirs = dedup(&n.data_dirs(), &mut notes)?;
            d.from = "cassandra.yaml".into();
            notes.push(format!(
                "note: data directories from {}: {}",
                n.path.display(),
                join(&d.dirs)
            ));
            if n.data_dirs_defaulted {
                notes.push(format!(
                    "note: {} sets no data_file_directories: Cassandra then uses <cassandra.storagedir>/data, {} for this layout (the start scripts' default). If the node sets -Dcassandra.storagedir otherwise, pass --data-dir",
                    n.path.display(),
                    join(&n.data_file_directories)
                ));
            }
        } else {
            d.dirs = vec![PathBuf::from(DEFAULT_DATA_DIR)];
            d.from = "default".into();
            notes.push(format!(
                "note: no --data-dir, and no cassandra.yaml at {}: using {DEFAULT_DATA_DIR}, the packaged default. Name the node's data directories with --data-dir, or its configuration with --cassandra-yaml",
                join(&standard_locations(env))
            ));
        }
        d.notes = notes;
        d.node = node;
        Ok(d)
    }

    /// The sentence naming what `--data-dir` leaves out, if anything.
    pub fn missing_sentence(&self) -> Option<String> {
        let yaml = self.cassandra_yaml.as_ref()?;
        if self.missing.is_empty() {
            return None;
        }
        let flags: Vec<String> = self
            .missing
            .iter()
            .map(|m| format!("--data-dir {}", m.display()))
            .collect();
        Some(format!(
            "{} lists data directories that --data-dir leaves out: {} (add {}, or leave --data-dir out to scan every data directory of the file)",
            yaml.display(),
            join(&self.missing),
            flags.join(" ")
        ))
    }
}

fn join(v: &[PathBuf]) -> String {
    v.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops folders that are the same folder as an earlier one (by canonical path), with a note:
/// a data directory given twice would be scanned (and locked) twice.
/// A folder that does not exist is kept as given (its reader says so); any other error resolving
/// it fails, rather than scan one folder twice under two names.
fn dedup(dirs: &[PathBuf], notes: &mut Vec<String>) -> Result<Vec<PathBuf>> {
    let mut kept: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for d in dirs {
        let canon = match fs::canonicalize(d) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(d, "resolve path", e)),
        };
        let same = kept
            .iter()
            .find(|(p, c)| p == d || (canon.is_some() && *c == canon));
        if let Some((first, _)) = same {
            notes.push(format!(
                "note: {} and {} are the same folder{}: scanned once",
                first.display(),
                d.display(),
                canon
                    .as_ref()
                    .map(|c| format!(" ({})", c.display()))
                    .unwrap_or_default()
            ));
            continue;
        }
        kept.push((d.clone(), canon));
    }
    Ok(kept.into_iter().map(|(p, _)| p).collect())
}

/// The configured folders that none of `scanned` is (compared by canonical path; a folder that
/// cannot be resolved is covered only if given exactly).
fn not_covered(configured: &[PathBuf], scanned: &[PathBuf]) -> Vec<PathBuf> {
    let scanned_canon: Vec<PathBuf> = scanned
        .iter()
        .filter_map(|d| fs::canonicalize(d).ok())
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    for c in configured {
        let covered = match fs::canonicalize(c) {
            Ok(cc) => scanned_canon.contains(&cc),
            Err(_) => scanned.contains(c),
        };
        if !covered && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, at: &str) -> Result<NodeConfig> {
        NodeConfig::parse(text, Path::new(at))
    }

    #[test]
    fn reads_the_folders_and_defaults_by_layout() {
        let c = parse(
            "data_file_directories:\n  - /d1/data\n  - /d2/data\nlocal_system_data_file_directory: /sys/data\nhints_directory: /h\n",
            "/etc/cassandra/cassandra.yaml",
        )
        .unwrap();
        assert_eq!(
            c.data_dirs(),
            [
                PathBuf::from("/d1/data"),
                "/d2/data".into(),
                "/sys/data".into()
            ]
        );
        assert_eq!(c.hints_directory, PathBuf::from("/h"));
        assert_eq!(
            c.commitlog_directory,
            PathBuf::from("/var/lib/cassandra/commitlog")
        );
        for (yaml, data) in [
            (
                "/etc/dse/cassandra/cassandra.yaml",
                "/var/lib/cassandra/data",
            ),
            (
                "/opt/apache-cassandra-4.1/conf/cassandra.yaml",
                "/opt/apache-cassandra-4.1/data/data",
            ),
            (
                "/opt/dse-6.8/resources/cassandra/conf/cassandra.yaml",
                "/opt/dse-6.8/data/data",
            ),
        ] {
            let c = parse("cluster_name: x\n# data_file_directories:\n", yaml).unwrap();
            assert!(c.data_dirs_defaulted);
            assert_eq!(c.data_dirs(), [PathBuf::from(data)], "{yaml}");
        }
        let c = parse("", "/etc/cassandra/cassandra.yaml").unwrap();
        assert_eq!(c.data_dirs(), [PathBuf::from(DEFAULT_DATA_DIR)]);
    }

    #[test]
    fn malformed_settings_name_the_file() {
        for (text, says) in [
            ("data_file_directories: [x", "not valid YAML"),
            ("data_file_directories: /one/dir\n", "must be a list"),
            ("data_file_directories: [1]\n", "found a number"),
            ("data_file_directories: [data]\n", "not an absolute path"),
            ("commitlog_directory: [a]\n", "commitlog_directory"),
            ("- a\n", "mapping"),
        ] {
            let e = parse(text, "/n/cassandra.yaml").unwrap_err().to_string();
            assert!(
                e.contains("/n/cassandra.yaml") && e.contains(says),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn standard_locations_follow_the_start_scripts() {
        let env = |k: &str| match k {
            "CASSANDRA_CONF" => Some(OsString::from("/c")),
            "DSE_HOME" => Some(OsString::from("/opt/dse")),
            "HCD_HOME" => Some(OsString::new()),
            _ => None,
        };
        let v = standard_locations(&env);
        assert_eq!(v[0], PathBuf::from("/c/cassandra.yaml"));
        assert_eq!(
            v[1],
            PathBuf::from("/opt/dse/resources/cassandra/conf/cassandra.yaml")
        );
        assert_eq!(
            v.last().unwrap(),
            &PathBuf::from("/etc/cassandra/cassandra.yaml")
        );
        assert_eq!(v.len(), 7);
    }
}
