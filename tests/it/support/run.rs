//! Running the built binary and collecting what it said.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::files::{diff, tree_strict};
use super::BIN;

// ------------------------------------------------------------------ the binary

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// Runs `cmd` to its end.
    pub fn of(cmd: &mut Command) -> Run {
        Run::from(cmd.output().expect("run sstable-rekey"))
    }
}

/// The exit code as a shell reports it: 128 + N when killed by signal N.
impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o
                .status
                .code()
                .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run_in(cwd: &Path, args: &[String], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    Run::of(&mut c)
}

/// `rekey -q --to TO --keyring RING --data-dir DATA`, then `rest` (more options, the scope).
pub fn rekey_cmd(to: &str, ring: &str, data: &str, rest: &[&str]) -> Vec<String> {
    let mut args = strings(&[
        "rekey",
        "-q",
        "--to",
        to,
        "--keyring",
        ring,
        "--data-dir",
        data,
    ]);
    args.extend(strings(rest));
    args
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs `run` and checks the contract of a refusal: exit `code`, an error that names `names` and
/// says each of `says` (in any case), every file under `root` byte-identical afterwards with no
/// stray file (no new generation, no transaction log), and a report at `report` only when an
/// SSTable failed (exit 1), naming a failed SSTable and its error kind.
pub fn refused(
    root: &Path,
    report: &Path,
    run: impl FnOnce() -> Run,
    code: i32,
    names: &Path,
    says: &[&str],
) -> Run {
    let before = tree_strict(root);
    let r = run();
    assert_eq!(r.code, code, "{}", r.all());
    let out = r.all();
    assert!(
        out.contains(&names.display().to_string()),
        "the error does not name {}: {out}",
        names.display()
    );
    for s in says {
        assert!(
            out.to_lowercase().contains(&s.to_lowercase()),
            "the error does not say {s:?}: {out}"
        );
    }
    assert_eq!(
        diff(&before, &tree_strict(root)),
        Vec::<String>::new(),
        "{out}"
    );
    if code == 1 {
        let rep: Value = serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap();
        assert!(rep["totals"]["failed"].as_u64().unwrap() >= 1, "{rep}");
        assert!(
            rep["sstables"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] == "failed" && s["error_kind"].is_string()),
            "{rep}"
        );
    } else {
        assert!(
            !report.exists(),
            "a report was written although nothing ran"
        );
    }
    r
}
