//! The oracle harness shared by tests/it/oracle_interop.rs, tests/it/oracle_bti.rs and
//! tests/it/scylla_testdata.rs: where ../shared and the oracle's Python are, a pool of long-lived
//! Python workers running an oracle's own `main(argv)` (`tde_oracle.py`, or `scylla_oracle.py`
//! through [`scylla_oracle`]; one process start per call made the files several times slower), small
//! helpers to run the tool, and the tests' keys (keys.rs). When ../shared is missing the tests print a notice and pass, unless
//! CI=true (then they fail). Python: $ORACLE_PYTHON, else <repo>/.venv/bin/python, else python3.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

mod keys;
pub use keys::*;

pub use super::{hex, BIN};

// ------------------------------------------------------------------ environment

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared`, or None (with a notice) when it is absent outside CI. Panics when absent with CI=true.
pub fn shared() -> Option<PathBuf> {
    let dir = repo().join("../shared");
    if dir.join("oracle/tde_oracle.py").is_file() && dir.join("testdata/cassandra").is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {} (the oracle and the real Cassandra SSTables) is missing: the interop tests cannot run",
            dir.display()
        );
    }
    // Once per test binary, and past the test harness's output capture (a direct write to stderr),
    // so that a local run shows what it did not check.
    static NOTICE: std::sync::Once = std::sync::Once::new();
    NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: {} is missing: the oracle interop tests are SKIPPED (they run whenever ../shared \
             is beside the checkout; with CI=true they fail instead)",
            dir.display()
        );
    });
    None
}

/// The Python that runs the oracle, checked once for the oracle's imports.
pub fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = repo().join(".venv/bin/python");
        let py = match std::env::var_os("ORACLE_PYTHON") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ if venv.exists() => venv,
            _ => PathBuf::from("python3"),
        };
        let out = Command::new(&py)
            .args(["-c", "import cryptography, lz4"])
            .output();
        let ok = matches!(&out, Ok(o) if o.status.success());
        if !ok {
            panic!(
                "the oracle's Python ({}) cannot import its requirements ({}).\n\
                 Set up the oracle's venv as .ci/run does:\n  \
                 python3 -m venv .venv && .venv/bin/pip install -r ../shared/oracle/requirements.txt\n\
                 or point ORACLE_PYTHON at a Python that has them.",
                py.display(),
                match &out {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                }
            );
        }
        py
    })
}

/// Runs oracle commands in one long-lived Python process: each stdin line is a JSON argv list, run
/// through the oracle's own `main(argv)` exactly as `python3 tde_oracle.py ARGS...` would, and answered
/// with one JSON line `{"code": exit status, "out": its stdout, "err": its stderr}`. This saves a
/// Python start and the oracle's imports (~0.1 s of CPU) per call: several hundred calls here.
const DRIVER: &str = r#"
import contextlib, importlib.util, io, json, sys, traceback
spec = importlib.util.spec_from_file_location("tde_oracle", sys.argv[1])
oracle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(oracle)
for line in sys.stdin:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = oracle.main(json.loads(line))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        code = 1
        err.write(traceback.format_exc())
    sys.__stdout__.write(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}) + "\n")
    sys.__stdout__.flush()
"#;

struct Worker {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Idle oracle processes, each with the script it runs; each caller takes one (or starts one) and
/// gives it back.
static WORKERS: Mutex<Vec<(&'static str, Worker)>> = Mutex::new(Vec::new());

fn start_worker(shared: &Path, script: &str) -> Worker {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(DRIVER)
        .arg(shared.join("oracle").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    Worker {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        _child: child,
    }
}

/// Runs one command of the DSE/HCD oracle (`tde_oracle.py`); returns its exit status and its JSON
/// output.
pub fn oracle(shared: &Path, args: &[OsString]) -> (i32, Value) {
    oracle_script(shared, "tde_oracle.py", args)
}

/// Runs one command of the ScyllaDB oracle (`scylla_oracle.py`); returns its exit status and its
/// JSON output.
pub fn scylla_oracle(shared: &Path, args: &[OsString]) -> (i32, Value) {
    oracle_script(shared, "scylla_oracle.py", args)
}

fn oracle_script(shared: &Path, script: &'static str, args: &[OsString]) -> (i32, Value) {
    let popped = {
        let mut idle = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter()
            .rposition(|(s, _)| *s == script)
            .map(|i| idle.swap_remove(i).1)
    };
    let mut w = popped.unwrap_or_else(|| start_worker(shared, script));
    let argv: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().expect("UTF-8 argument"))
        .collect();
    let mut answer = String::new();
    writeln!(w.stdin, "{}", serde_json::to_string(&argv).unwrap())
        .and_then(|_| w.stdin.flush())
        .and_then(|_| w.stdout.read_line(&mut answer))
        .unwrap_or_else(|e| panic!("oracle {args:?}: the oracle process failed: {e}"));
    assert!(
        !answer.is_empty(),
        "oracle {args:?}: the oracle process died"
    );
    let answer: Value = serde_json::from_str(&answer).unwrap();
    WORKERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((script, w));
    let code = answer["code"].as_i64().unwrap_or(-1) as i32;
    let stdout = answer["out"].as_str().unwrap_or("");
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "oracle {args:?}: exit {code}, output is not JSON ({e}):\n{stdout}\n{}",
            answer["err"].as_str().unwrap_or("")
        )
    });
    (code, json)
}

/// Runs an oracle command that must succeed.
pub fn oracle_ok(shared: &Path, args: &[OsString]) -> Value {
    let (code, json) = oracle(shared, args);
    assert!(
        code == 0 && json["ok"] == true,
        "oracle {args:?} failed (exit {code}): {json}"
    );
    json
}

pub fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

pub fn rekey_tool(args: &[OsString]) -> Output {
    rekey_tool_env(args, &[])
}

pub fn rekey_tool_env(args: &[OsString], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run sstable-rekey")
}

/// Asserts an exit status, showing the tool's output when it differs.
pub fn expect_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` over `items` on a few threads (each item mostly waits on a Python process).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                *slots[i].lock().unwrap() = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every item ran"))
        .collect()
}

pub fn write_private(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

pub fn random_key(bits: u32) -> Vec<u8> {
    let mut k = vec![0u8; bits as usize / 8];
    getrandom::fill(&mut k).unwrap();
    k
}

// ------------------------------------------------------------------ the real SSTables

/// The versions of the real SSTables in ../shared/testdata/cassandra (Cassandra 3.0 to 5.0).
pub const VERSIONS: [&str; 8] = ["ma", "mb", "mc", "md", "na", "nb", "oa", "da"];

/// A real SSTable written by Apache Cassandra.
#[derive(Debug, Clone)]
pub struct Sst {
    pub version: String,
    /// legacy_<v>_clust, ...
    pub table: String,
    pub data: PathBuf,
}

/// Every real SSTable: each `*-Data.db` under `testdata/cassandra/<version>/<table>/`.
pub fn real_sstables(shared: &Path) -> Vec<Sst> {
    let root = shared.join("testdata/cassandra");
    let mut out = Vec::new();
    for v in fs::read_dir(&root).unwrap() {
        let v = v.unwrap();
        for t in fs::read_dir(v.path()).unwrap() {
            let t = t.unwrap();
            for f in fs::read_dir(t.path()).unwrap() {
                let f = f.unwrap();
                if f.file_name().to_str().unwrap().ends_with("-Data.db") {
                    out.push(Sst {
                        version: v.file_name().into_string().unwrap(),
                        table: t.file_name().into_string().unwrap(),
                        data: f.path(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.version, &a.table).cmp(&(&b.version, &b.table)));
    let versions: BTreeSet<&str> = out.iter().map(|s| s.version.as_str()).collect();
    assert_eq!(
        versions,
        VERSIONS.iter().copied().collect(),
        "versions in {}",
        root.display()
    );
    assert_eq!(out.len(), 32, "real SSTables in {}", root.display());
    out
}

// ------------------------------------------------------------------ one data dir, one rekey run

/// The oracle's `encrypt` arguments: the real SSTable `sst` as a DSE/HCD-style encrypted copy in
/// `dir`, with `class`, `cipher` and `strength`, under the key `from`.
pub fn encrypt_args(
    sst: &Sst,
    dir: &Path,
    class: &str,
    cipher: &str,
    strength: u32,
    from: &Key,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "encrypt".into(),
        sst.data.clone().into(),
        dir.into(),
        "--class".into(),
        class.into(),
        "--cipher".into(),
        cipher.into(),
        "--strength".into(),
        strength.to_string().into(),
    ];
    args.extend(from.encrypt_args(strength));
    args
}

/// One `sstable-rekey rekey --to <to>` over `data` with the keyring `ring` (plus `extra` arguments
/// and `env`), which must exit 0 and rekey `expected` SSTables; returns its JSON report.
pub fn rekey_data_dir(
    root: &Path,
    data: &Path,
    ring: &Path,
    to: &Key,
    extra: &[OsString],
    env: &[(&str, &str)],
    expected: usize,
) -> Value {
    let report = root.join("rekey-report.json");
    let mut args: Vec<OsString> = vec![
        "rekey".into(),
        "--to".into(),
        to.keyref().into(),
        "--keyring".into(),
        ring.into(),
        "--data-dir".into(),
        data.into(),
        "--report".into(),
        report.clone().into(),
        "--quiet".into(),
    ];
    args.extend(extra.iter().cloned());
    let out = rekey_tool_env(&args, env);
    expect_exit(&out, 0, &format!("rekey --to {} ({env:?})", to.keyref()));
    let rep: Value = serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(rep["totals"]["rekeyed"], expected, "{}", rep["totals"]);
    assert_eq!(rep["totals"]["failed"], 0);
    rep
}

/// The report entry of the SSTable that was `old_data`: rekeyed, into a new Data.db in the same
/// folder `dir`, which now holds that new SSTable's files and nothing else. Returns the entry and
/// the new Data.db.
pub fn rekeyed_entry<'a>(
    entries: &'a [Value],
    old_data: &Path,
    dir: &Path,
    what: &str,
) -> (&'a Value, PathBuf) {
    let mine: Vec<&Value> = entries
        .iter()
        .filter(|e| Path::new(e["old"].as_str().unwrap()) == old_data)
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "{what}: report entries for {}",
        old_data.display()
    );
    let entry = mine[0];
    assert_eq!(entry["status"], "rekeyed", "{what}: {entry}");
    let new_data = PathBuf::from(entry["new"].as_str().unwrap());
    assert_eq!(new_data.parent(), Some(dir), "{what}");
    assert_ne!(new_data, old_data, "{what}");
    let new_prefix = new_data
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches("Data.db")
        .to_string();
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with(&new_prefix)),
        "{what}: only {new_prefix}* may remain, found {names:?}"
    );
    assert!(!old_data.exists(), "{what}");
    (entry, new_data)
}
