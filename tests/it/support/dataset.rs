//! A data set of several tables built from testdata/ (live SSTables, snapshots, index folders),
//! the arguments that rekey, verify and recover it, and the checks after a run: every original
//! resolved to exactly one generation that decrypts to its plaintext, nothing stray, nothing
//! foreign touched.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use aes::Aes128;
use cbc::cipher::KeyIvInit;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cassandra::{cassandra_startup, Startup};
use super::decrypt::{open_sstable, Ci, Keys};
use super::files::{
    absolute_key_files, chmod, copy_tree, diff, dirs, fast_tempdir, tree, walk, FastDir,
};
use super::run::{run_in, strings, Run};
use super::{hex, manifest, sha256, testdata, Rng, BIN, UUID};

// ------------------------------------------------------------------ a scratch copy of testdata/

/// A scratch copy of parts of testdata/ at `<tmp>/td`: key files 0600 (git keeps no modes; the
/// tool refuses key files others can read), relative `secret_key_file` options pointed at the
/// copy (testdata/README.md; demo/ resolves against itself). The binary runs from `<tmp>`,
/// outside the tree, so that nothing resolves relative to it.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Scratch {
    /// A copy of the folders `parts` of testdata/, or of all of it when `parts` is empty.
    pub fn of(parts: &[&str]) -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap().join("td");
        if parts.is_empty() {
            copy_tree(&testdata(), &root);
        }
        for d in parts {
            copy_tree(&testdata().join(d), &root.join(d));
        }
        for keys in [
            root.join("keys"),
            root.join("demo/keys"),
            root.join("scylla/keys"),
        ] {
            for e in fs::read_dir(&keys).into_iter().flatten() {
                chmod(&e.unwrap().path(), 0o600);
            }
        }
        // demo/ first: the second pass leaves what is already absolute.
        if root.join("demo").is_dir() {
            absolute_key_files(&root.join("demo"), &root.join("demo"));
        }
        absolute_key_files(&root, &root);
        Scratch { tmp, root }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Run {
        Run::of(Command::new(BIN).args(args).current_dir(self.tmp.path()))
    }

    pub fn report_path(&self) -> PathBuf {
        self.tmp.path().join("report.json")
    }

    pub fn report(&self, path: &Path) -> Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// `struct $name(Scratch)`, dereferencing to the [`Scratch`]: a suite's own view of its scratch
/// copy, to which it adds its methods.
#[macro_export]
macro_rules! scratch_env {
    ($name:ident) => {
        struct $name($crate::support::Scratch);

        impl std::ops::Deref for $name {
            type Target = $crate::support::Scratch;
            fn deref(&self) -> &$crate::support::Scratch {
                &self.0
            }
        }
    };
}

// ------------------------------------------------------------------ a data set of several tables

/// An SSTable of the pristine copy.
#[derive(Debug, Clone)]
pub struct Orig {
    /// Its folder, relative to the data dir.
    pub dir: PathBuf,
    /// `nb-1-big-`.
    pub prefix: String,
    /// Component → SHA-256 of the pristine file.
    pub files: BTreeMap<String, String>,
    /// SHA-256 of the plaintext of all chunks (MANIFEST.json's `plaintext_sha256`).
    pub sha256: String,
    pub raw_chunks: u64,
    pub indexes_encrypted: bool,
    /// MANIFEST.json's `metadata_sha256` (encrypted BTI indexes).
    pub metadata_sha256: BTreeMap<String, String>,
    pub live: bool,
}

impl Orig {
    pub fn data_rel(&self) -> PathBuf {
        self.dir.join(format!("{}Data.db", self.prefix))
    }
}

/// A pristine scratch data set: `<root>/data/<keyspace>/<table>-<id>/` copied from testdata table
/// folders, `<root>/keys/` (0600), relative `secret_key_file` options made absolute.
pub struct DataSet {
    pub _tmp: FastDir,
    pub root: PathBuf,
    pub data: PathBuf,
    pub keyring: PathBuf,
    pub sstables: Vec<Orig>,
}

/// Splits a component file name `nb-1-big-Data.db` → (`nb-1-big-`, `Data.db`).
pub fn split_component(name: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = name.splitn(4, '-').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    if !parts[0].bytes().all(|b| b.is_ascii_lowercase())
        || !(parts[2] == "big" || parts[2] == "bti")
    {
        return None;
    }
    Some((
        format!("{}-{}-{}-", parts[0], parts[1], parts[2]),
        parts[3].to_string(),
    ))
}

impl DataSet {
    /// `tables`: testdata-relative table folders (`dd1/edge/t_raw-<id>`), copied to
    /// `data/<keyspace>/<folder>`.
    pub fn new(tables: &[String]) -> DataSet {
        let tmp = fast_tempdir();
        let root = tmp.path().canonicalize().unwrap();
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        copy_tree(&testdata().join("keys"), &root.join("keys"));
        for e in fs::read_dir(root.join("keys")).unwrap() {
            chmod(&e.unwrap().path(), 0o600);
        }
        let mut sstables = Vec::new();
        for t in tables {
            let src = testdata().join(t);
            let rel: PathBuf = Path::new(t).components().skip(1).collect();
            copy_tree(&src, &data.join(&rel));
            for e in manifest() {
                let d = e["data"].as_str().unwrap();
                let Some(under) = d.strip_prefix(&format!("{t}/")) else {
                    continue;
                };
                let p = rel.join(under);
                let dir = p.parent().unwrap().to_path_buf();
                let name = p.file_name().unwrap().to_str().unwrap();
                let prefix = name.strip_suffix("Data.db").unwrap().to_string();
                sstables.push(Orig {
                    dir,
                    prefix,
                    files: BTreeMap::new(),
                    sha256: e["plaintext_sha256"].as_str().unwrap().to_string(),
                    raw_chunks: e["raw_chunks"].as_u64().unwrap(),
                    indexes_encrypted: e["indexes_encrypted"] == true,
                    metadata_sha256: e["metadata_sha256"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    live: !e["location"].as_str().unwrap().starts_with("snapshot"),
                });
            }
        }
        absolute_key_files(&data, &root);
        for o in &mut sstables {
            for e in fs::read_dir(data.join(&o.dir)).unwrap() {
                let e = e.unwrap();
                let n = e.file_name().to_str().unwrap().to_string();
                if let Some(c) = n.strip_prefix(&o.prefix) {
                    o.files
                        .insert(c.to_string(), sha256(&fs::read(e.path()).unwrap()));
                }
            }
        }
        DataSet {
            _tmp: tmp,
            keyring: root.join("keys/keyring"),
            root,
            data,
            sstables,
        }
    }

    /// The table folders of testdata (`dd1/edge/t_x-<id>`) whose SSTables match `f`.
    pub fn tables_where(f: impl Fn(&Value) -> bool) -> Vec<String> {
        let mut out = BTreeSet::new();
        for e in manifest() {
            if f(e) {
                let d = e["data"].as_str().unwrap();
                let parts: Vec<&str> = d.split('/').collect();
                out.insert(parts[..3].join("/"));
            }
        }
        out.into_iter()
            .filter(|t| testdata().join(t).is_dir())
            .collect()
    }

    /// The decryptor's keys: the keyring and the old key file.
    pub fn keys(&self) -> Keys {
        let mut k = Keys::keyring(&self.keyring);
        k.add_key_file(&self.root.join("keys/old.key"));
        k
    }

    /// Adds a large encrypted SSTable written here, not by the crate: class `Encryptor`, KMIP key
    /// `old-128` (header and `kmip_host kmip1` as in testdata), AES/CBC, `chunks` chunks of
    /// `chunk_len` bytes of seeded random plaintext (the last one `chunk_len / 2 + 15` bytes),
    /// in a new table folder `data/<ks>/<table>-<32 hex>/nb-1-big-*`; the other components are
    /// the placeholders of a testdata matrix table.
    pub fn add_big(&mut self, ks: &str, table: &str, chunks: usize, chunk_len: usize, seed: u64) {
        use cbc::cipher::block_padding::Pkcs7;
        use cbc::cipher::BlockModeEncrypt;
        use std::io::Write;
        let mut rng = Rng(seed);
        let dir_rel =
            PathBuf::from(ks).join(format!("{table}-{:016x}{:016x}", rng.next(), rng.next()));
        let dir = self.data.join(&dir_rel);
        fs::create_dir_all(&dir).unwrap();
        let key = Keys::keyring(&self.keyring).ring["old-128"].clone();
        let id = b"old-128";
        let path = |c: &str| dir.join(format!("nb-1-big-{c}"));
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path("Data.db")).unwrap());
        let mut sha = Sha256::new();
        let mut digest = crc32fast::Hasher::new();
        let mut offsets = Vec::with_capacity(chunks);
        let mut pos = 0u64;
        let mut data_length = 0u64;
        let mut plain = vec![0u8; chunk_len];
        for i in 0..chunks {
            let n = if i + 1 == chunks {
                chunk_len / 2 + 15
            } else {
                chunk_len
            };
            rng.fill(&mut plain[..n]);
            sha.update(&plain[..n]);
            data_length += n as u64;
            let mut iv = [0u8; 16];
            rng.fill(&mut iv);
            let mut chunk = Vec::with_capacity(n + 64);
            chunk.push(0);
            chunk.extend_from_slice(&(id.len() as i32).to_be_bytes());
            chunk.extend_from_slice(id);
            chunk.extend_from_slice(&iv);
            chunk.extend_from_slice(
                &cbc::Encryptor::<Aes128>::new_from_slices(&key, &iv)
                    .unwrap()
                    .encrypt_padded_vec::<Pkcs7>(&plain[..n]),
            );
            let crc = crc32fast::hash(&chunk);
            chunk.extend_from_slice(&crc.to_be_bytes());
            w.write_all(&chunk).unwrap();
            digest.update(&chunk);
            offsets.push(pos);
            pos += chunk.len() as u64;
        }
        w.flush().unwrap();
        drop(w);
        let ci = Ci {
            class: "Encryptor".into(),
            options: vec![
                ("cipher_algorithm".into(), "AES/CBC/PKCS5Padding".into()),
                ("secret_key_strength".into(), "128".into()),
                ("key_provider".into(), "KmipKeyProviderFactory".into()),
                ("kmip_host".into(), "kmip1".into()),
            ],
            chunk_length: chunk_len as u32,
            max: Some(i32::MAX),
            data_length,
            offsets,
        };
        fs::write(path("CompressionInfo.db"), ci.serialize()).unwrap();
        fs::write(path("Digest.crc32"), digest.finalize().to_string()).unwrap();
        let like = DataSet::tables_where(|e| {
            e["data"]
                .as_str()
                .unwrap()
                .starts_with("dd1/matrix/t_Encryptor_kmip_CBC_128")
        });
        for c in [
            "Filter.db",
            "Index.db",
            "Summary.db",
            "Statistics.db",
            "TOC.txt",
        ] {
            fs::copy(
                testdata().join(&like[0]).join(format!("nb-1-big-{c}")),
                path(c),
            )
            .unwrap();
        }
        let files = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let n = e.file_name().to_str().unwrap().to_string();
                (
                    n.strip_prefix("nb-1-big-").unwrap().to_string(),
                    sha256(&fs::read(e.path()).unwrap()),
                )
            })
            .collect();
        self.sstables.push(Orig {
            dir: dir_rel,
            prefix: "nb-1-big-".into(),
            files,
            sha256: hex(&sha.finalize()),
            raw_chunks: 0,
            indexes_encrypted: false,
            metadata_sha256: BTreeMap::new(),
            live: true,
        });
    }

    /// Copies the pristine data dir to `<dst>` (fresh files: new mtimes).
    pub fn copy_data(&self, dst: &Path) {
        copy_tree(&self.data, dst);
    }
}

// ------------------------------------------------------------------ checks after a run and recover

/// The key every rekeyed SSTable of a [`DataSet`] is under.
pub const NEW_KEY: &str = "kmip://kmip1/new-128";

/// `rekey -q --to kmip://kmip1/new-128 --move-kmip-group --keyring K --data-dir DATA --jobs N`
/// (data sets hold local-key and replicated tables too: offline, their move to the KMIP group
/// is stated explicitly).
pub fn rekey_args(ds: &DataSet, data: &Path, jobs: usize) -> Vec<String> {
    strings(&[
        "rekey",
        "-q",
        "--to",
        "kmip://kmip1/new-128",
        "--move-kmip-group",
        "--keyring",
        ds.keyring.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--jobs",
        &jobs.to_string(),
    ])
}

/// `verify` accepting every old key of the data set and the new one.
pub fn verify_all(ds: &DataSet, data: &Path) -> Run {
    let file = format!("file:{}", ds.root.join("keys/old.key").display());
    let replicated = format!("replicated:{UUID}");
    run_in(
        &ds.root,
        &strings(&[
            "verify",
            "--key",
            "kmip://kmip1/old-128",
            "--key",
            "kmip://kmip1/new-128",
            "--key",
            "kmip://kmip1/other-128",
            "--key",
            &replicated,
            "--key",
            &file,
            "--keyring",
            ds.keyring.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        &[],
    )
}

pub fn recover(ds: &DataSet, data: &Path) -> Run {
    run_in(
        &ds.root,
        &strings(&["recover", "--data-dir", data.to_str().unwrap()]),
        &[],
    )
}

/// Components a rekey rewrites; all others are hard-linked unchanged.
pub fn rewritten(o: &Orig) -> Vec<&'static str> {
    let mut v = vec!["Data.db", "CompressionInfo.db", "Digest.crc32"];
    if o.indexes_encrypted {
        v.extend(["Partitions.db", "Rows.db", "Statistics.db"]);
    }
    v
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub old: usize,
    pub new: usize,
}

/// The state after recovery: one generation per original, every live SSTable readable with the
/// manifest's plaintext, nothing else.
pub fn check_resolved(ds: &DataSet, keys: &Keys, data: &Path) -> Result<Tally, String> {
    check_resolved_except(ds, keys, data, &BTreeSet::new())
}

/// As [`check_resolved`], with files that are not the tool's to judge (decoys a test put in the
/// table folders, files planted by another process; paths relative to `data`) left out of the
/// folder listings: the caller checks them byte for byte.
pub fn check_resolved_except(
    ds: &DataSet,
    keys: &Keys,
    data: &Path,
    except: &BTreeSet<PathBuf>,
) -> Result<Tally, String> {
    if dirs(data) != dirs(&ds.data) {
        return Err(format!(
            "folders differ: {:?} vs {:?}",
            dirs(data),
            dirs(&ds.data)
        ));
    }
    // Snapshots: byte-identical, nothing added or removed.
    let snap = |t: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        t.iter()
            .filter(|(k, _)| k.contains("/snapshots/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let now = tree(data);
    let d = diff(&snap(&tree(&ds.data)), &snap(&now));
    if !d.is_empty() {
        return Err(format!("snapshots changed: {d:?}"));
    }
    for f in now.keys() {
        if f.contains("_txn_") || f.ends_with(".log") {
            return Err(format!("transaction log left: {f}"));
        }
    }
    let mut tally = Tally::default();
    let folders: BTreeSet<&PathBuf> = ds
        .sstables
        .iter()
        .filter(|o| o.live)
        .map(|o| &o.dir)
        .collect();
    for folder in folders {
        let origs: Vec<&Orig> = ds
            .sstables
            .iter()
            .filter(|o| o.live && &o.dir == folder)
            .collect();
        let mut groups: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
        for e in fs::read_dir(data.join(folder)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                continue;
            }
            let name = e.file_name().to_str().unwrap().to_string();
            if except.contains(&folder.join(&name)) {
                continue;
            }
            let Some((prefix, comp)) = split_component(&name) else {
                return Err(format!("stray file {}", e.path().display()));
            };
            groups.entry(prefix).or_default().insert(comp, e.path());
        }
        let mut matched: BTreeSet<String> = BTreeSet::new();
        for (prefix, files) in &groups {
            let names: BTreeSet<&String> = files.keys().collect();
            let at = data.join(folder).join(prefix);
            if let Some(o) = origs.iter().find(|o| &o.prefix == prefix) {
                // The old generation: every file as it was.
                if names != o.files.keys().collect::<BTreeSet<_>>() {
                    return Err(format!(
                        "{}: components {names:?}, the original had {:?}",
                        at.display(),
                        o.files.keys()
                    ));
                }
                for (c, p) in files {
                    if sha256(&fs::read(p).unwrap()) != o.files[c] {
                        return Err(format!("{}: the old file changed", p.display()));
                    }
                }
                let opened = open_sstable(&files["Data.db"], keys, o.indexes_encrypted)
                    .map_err(|e| format!("{}: {e}", at.display()))?;
                if opened.sha256 != o.sha256 {
                    return Err(format!("{}: plaintext differs", at.display()));
                }
                matched.insert(o.prefix.clone());
                tally.old += 1;
                continue;
            }
            // A new generation: complete, under the new key, with an original's plaintext.
            let Some(data_db) = files.get("Data.db") else {
                return Err(format!(
                    "{}: a generation without Data.db: {names:?}",
                    at.display()
                ));
            };
            let cands: Vec<&&Orig> = origs
                .iter()
                .filter(|o| !matched.contains(&o.prefix) && !groups.contains_key(&o.prefix))
                .filter(|o| names == o.files.keys().collect::<BTreeSet<_>>())
                .collect();
            if cands.is_empty() {
                return Err(format!(
                    "{}: a generation that replaces no original: {names:?}",
                    at.display()
                ));
            }
            let enc = cands[0].indexes_encrypted;
            let opened =
                open_sstable(data_db, keys, enc).map_err(|e| format!("{}: {e}", at.display()))?;
            let Some(o) = cands.iter().find(|o| opened.sha256 == o.sha256) else {
                return Err(format!(
                    "{}: its plaintext matches no original of the folder",
                    at.display()
                ));
            };
            let want_keys: BTreeSet<String> = if opened.raw == opened.chunk_keys.len() && !enc {
                BTreeSet::new()
            } else {
                BTreeSet::from([NEW_KEY.to_string()])
            };
            if opened.key_set() != want_keys {
                return Err(format!(
                    "{}: keys {:?}, want {want_keys:?}",
                    at.display(),
                    opened.key_set()
                ));
            }
            if opened.raw as u64 != o.raw_chunks {
                return Err(format!("{}: raw chunk count changed", at.display()));
            }
            if enc {
                for (k, v) in &opened.metadata_sha256 {
                    if o.metadata_sha256.get(k) != Some(v) {
                        return Err(format!("{}: {k} plaintext differs", at.display()));
                    }
                }
            }
            let skip = rewritten(o);
            for (c, p) in files {
                if !skip.contains(&c.as_str()) && sha256(&fs::read(p).unwrap()) != o.files[c] {
                    return Err(format!("{}: unchanged component {c} differs", p.display()));
                }
            }
            matched.insert(o.prefix.clone());
            tally.new += 1;
        }
        for o in &origs {
            if !matched.contains(&o.prefix) {
                return Err(format!(
                    "{}: no generation of {} survived",
                    folder.display(),
                    o.prefix
                ));
            }
        }
    }
    Ok(tally)
}

/// Leftover logs of a data dir.
pub fn logs_under(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(data, &mut files);
    files
        .into_iter()
        .filter(|f| {
            let n = f.file_name().unwrap().to_str().unwrap();
            n.contains("_txn_") && n.ends_with(".log")
        })
        .collect()
}

pub fn folder_names(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect()
}

#[derive(Debug, Default)]
pub struct Resolved {
    pub tally: Tally,
    pub logs: usize,
    pub committed_logs: usize,
    pub refused: usize,
}

/// Judges every leftover log with the model, runs `recover`, and checks that it did exactly what
/// the model says; then checks the resolved state. With `allow_refuse`, a state the model refuses
/// must be refused by recover too (and is left as it is); otherwise a refusal is a failure.
pub fn resolve(
    ds: &DataSet,
    keys: &Keys,
    data: &Path,
    allow_refuse: bool,
    check_state: bool,
) -> Result<Resolved, String> {
    let logs = logs_under(data);
    let mut r = Resolved {
        logs: logs.len(),
        ..Resolved::default()
    };
    let mut want: BTreeMap<PathBuf, (Startup, BTreeSet<PathBuf>)> = BTreeMap::new();
    for log in &logs {
        let s = cassandra_startup(log);
        if let Startup::Refuse(why) = &s {
            if !allow_refuse {
                return Err(format!(
                    "Cassandra would refuse to start with {}: {why}\n{}",
                    log.display(),
                    fs::read_to_string(log).unwrap_or_default()
                ));
            }
        }
        want.insert(log.clone(), (s, folder_names(log.parent().unwrap())));
    }
    let texts: BTreeMap<PathBuf, String> = logs
        .iter()
        .map(|l| (l.clone(), fs::read_to_string(l).unwrap_or_default()))
        .collect();
    let rec = recover(ds, data);
    let mut refused_any = false;
    for (log, (s, before)) in &want {
        let shown = log.display().to_string();
        let line = rec
            .stdout
            .lines()
            .find(|l| l.contains(&shown))
            .ok_or_else(|| format!("recover says nothing of {shown}\n{}", rec.all()))?;
        let dir = log.parent().unwrap();
        match s {
            Startup::Refuse(why) => {
                r.refused += 1;
                refused_any = true;
                if !line.starts_with("FAILED ") {
                    return Err(format!(
                        "Cassandra would refuse {shown} ({why}), recover did: {line}\n{}",
                        texts[log]
                    ));
                }
                let alone = want.keys().filter(|l| l.parent() == Some(dir)).count() == 1;
                if alone && folder_names(dir) != *before {
                    return Err(format!("{shown}: refused, yet files were deleted"));
                }
            }
            Startup::Resolve { committed, delete } => {
                let says = if *committed {
                    ": committed,"
                } else {
                    ": rolled back,"
                };
                if !line.contains(says) {
                    return Err(format!(
                        "Cassandra would resolve {shown} as committed={committed}, recover: {line}\n{}",
                        texts[log]
                    ));
                }
                if *committed {
                    r.committed_logs += 1;
                }
                let mut expect: BTreeSet<PathBuf> = before.difference(delete).cloned().collect();
                expect.remove(log);
                // Other logs of the same folder resolve their own (disjoint) files.
                for (other, (s2, _)) in &want {
                    if other != log && other.parent() == Some(dir) {
                        match s2 {
                            Startup::Resolve { delete: d2, .. } => {
                                expect = expect.difference(d2).cloned().collect();
                                expect.remove(other);
                            }
                            Startup::Refuse(_) => {}
                        }
                    }
                }
                let got = folder_names(dir);
                if got != expect {
                    return Err(format!(
                        "{shown}: recover left {:?}, Cassandra would leave {:?}\n{}",
                        got.symmetric_difference(&expect).collect::<Vec<_>>(),
                        expect.len(),
                        texts[log]
                    ));
                }
            }
        }
    }
    let want_code = if refused_any { 1 } else { 0 };
    if rec.code != want_code {
        return Err(format!(
            "recover exit {}, want {want_code}\n{}",
            rec.code,
            rec.all()
        ));
    }
    if refused_any || !check_state {
        return Ok(r);
    }
    r.tally = check_resolved(ds, keys, data)?;
    let v = verify_all(ds, data);
    if v.code != 0 {
        return Err(format!("verify after recovery: {}", v.all()));
    }
    Ok(r)
}

/// A folder's files with content and mtime, to put it back exactly between recoveries.
pub struct FolderState(Vec<(PathBuf, Vec<u8>, std::time::SystemTime)>);

impl FolderState {
    pub fn take(dir: &Path) -> FolderState {
        FolderState(
            folder_names(dir)
                .into_iter()
                .map(|p| {
                    let m = fs::metadata(&p).unwrap();
                    (p.clone(), fs::read(&p).unwrap(), m.modified().unwrap())
                })
                .collect(),
        )
    }

    pub fn restore(&self, dir: &Path) {
        let keep: BTreeSet<&PathBuf> = self.0.iter().map(|(p, _, _)| p).collect();
        for p in folder_names(dir) {
            if !keep.contains(&p) {
                fs::remove_file(p).unwrap();
            }
        }
        for (p, b, t) in &self.0 {
            if fs::read(p).ok().as_deref() != Some(&b[..]) {
                let _ = fs::remove_file(p);
                fs::write(p, b).unwrap();
            }
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(*t)
                .unwrap();
        }
    }
}
