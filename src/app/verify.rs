//! `verify`: the proof before a key is destroyed.

use crate::app::cli::VerifyArgs;
use crate::app::exit::{Exit, CANCEL};
use crate::app::scope::{check_report_path, parse_refs, print_notes, print_unreadable, selection};
use sstable_rekey::error::Result;

use crate::app::scope::resolve_data_dirs;
use sstable_rekey::rekey;
use sstable_rekey::rekey::report::write_json;
use sstable_rekey::rekey::scylla::commitlog::{read_scylla_yaml, LogDir};
use sstable_rekey::rekey::verify::VerifyOptions;

/// The commit log and hints folders to check: `--commitlog-dir`/`--hints-dir`, each kind else
/// from `--scylla-yaml` (its settings or ScyllaDB's defaults); none without either.
fn log_dirs(a: &VerifyArgs) -> Result<Vec<LogDir>> {
    let from_yaml = match &a.scope.kmip.scylla_yaml {
        Some(y) => read_scylla_yaml(y)?.log_dirs,
        None => Vec::new(),
    };
    let mut out = Vec::new();
    for (kind, given, flag) in [
        ("commitlog", &a.commitlog_dirs, "--commitlog-dir"),
        ("hints", &a.hints_dirs, "--hints-dir"),
    ] {
        if given.is_empty() {
            out.extend(from_yaml.iter().filter(|d| d.kind == kind).cloned());
        } else {
            out.extend(given.iter().map(|p| LogDir {
                path: p.clone(),
                kind,
                from: flag.into(),
            }));
        }
    }
    for d in &out {
        if d.from.starts_with("scylla.yaml") {
            errln!(
                "sstable-rekey: note: {} folder {} from {}",
                d.kind,
                d.path.display(),
                d.from
            );
        }
    }
    Ok(out)
}

pub fn run(a: &VerifyArgs) -> Result<Exit> {
    let keys = parse_refs(&a.keys)?;
    let kmip = crate::app::scope::kmip_opts(&a.scope.kmip)?;
    let store = crate::app::kmip::build_keys(
        &kmip,
        a.scope.keyring.as_deref(),
        &keys,
        None,
        false,
        false,
        None,
    )?
    .store;
    let opts = VerifyOptions {
        keys,
        data_dirs: resolve_data_dirs(&a.scope.data_dirs, a.scope.cassandra_yaml.as_deref())?,
        selection: selection(&a.scope),
        deep: a.deep,
        log_dirs: log_dirs(a)?,
    };
    if let Some(p) = &a.scope.report {
        check_report_path(p)?;
    }
    let rep = rekey::verify::verify(&opts, &store, &CANCEL)?;
    for w in store.warnings() {
        errln!("sstable-rekey: {w}");
    }
    print_notes(&rep.notes);
    if let Some(p) = &a.scope.report {
        write_json(p, &rep)?;
    }
    for v in &rep.sstables {
        let mut keys: Vec<String> = v
            .keys
            .iter()
            .map(|(k, n)| format!("{n} under {k}"))
            .collect();
        keys.extend(
            v.index_pages
                .iter()
                .map(|(k, n)| format!("{n} index pages under {k}")),
        );
        keys.extend(
            v.metadata
                .iter()
                .map(|(k, n)| format!("{n} metadata components under {k}")),
        );
        match v.status {
            "ok" => outln!(
                "OK          {}: {} chunks, {}",
                v.data,
                v.chunks,
                keys.join(", ")
            ),
            "other_keys" => outln!(
                "OTHER KEY   {}: {} (not given: {})",
                v.data,
                keys.join(", "),
                v.other_keys.join(", ")
            ),
            "unencrypted" => outln!("UNENCRYPTED {}", v.data),
            _ => outln!(
                "FAILED      {}: {}",
                v.data,
                v.error.as_deref().unwrap_or("")
            ),
        }
    }
    for c in &rep.commitlog {
        let key = c.key.as_deref().unwrap_or("");
        let what = if c.kind == "hints" {
            "hints  "
        } else {
            "segment"
        };
        match c.status {
            "ok" => outln!("OK  {what}  {}: under {key}", c.path),
            "other_key" => outln!(
                "OTHER KEY {what} {}: under {key} (not given); ScyllaDB needs that key until it replays the segment: nodetool drain, then a clean start of the node, then verify again",
                c.path
            ),
            "unencrypted" => outln!("UNENCRYPTED {what} {}", c.path),
            _ => outln!(
                "FAILED {what} {}: {}",
                c.path,
                c.error.as_deref().unwrap_or("")
            ),
        }
    }
    for b in rep.backups.iter().filter(|b| b.error.is_none()) {
        let keys: Vec<String> = b
            .keys
            .iter()
            .map(|(k, n)| format!("{n} under {k}"))
            .collect();
        outln!(
            "backup      {} ({:?}): {}",
            b.data,
            b.location,
            keys.join(", ")
        );
    }
    outln!(
        "{} SSTables: {} ok, {} under other keys, {} failed, {} unencrypted; {} plaintext chunks{}",
        rep.sstables.len(),
        rep.ok,
        rep.under_other_keys,
        rep.failed,
        rep.unencrypted,
        rep.raw_chunks,
        if rep.deep { " (deep)" } else { "" }
    );
    if !rep.backups.is_empty() {
        outln!(
            "note: {} snapshot/backup SSTables still need the keys listed above; destroying those keys makes them unreadable",
            rep.backups.len()
        );
    }
    print_unreadable(&rep.backups);
    if !rep.commitlog_dirs.is_empty() {
        let n = |st: &str| rep.commitlog.iter().filter(|c| c.status == st).count();
        let other = n("other_key");
        outln!(
            "{} commit log segments and hints: {} under given keys, {} under other keys, {} failed, {} unencrypted",
            rep.commitlog.len(),
            n("ok"),
            other,
            rep.commitlog.len() - n("ok") - other - n("unencrypted"),
            n("unencrypted")
        );
        if other > 0 {
            outln!("note: the keys of commit log segments and hints above stay needed until ScyllaDB replays them (nodetool drain, then a clean start); they are never rewritten. Do not destroy those keys before verify passes");
        }
    }
    if let Some(m) = rep.data_dirs.missing_sentence() {
        outln!("NOT VERIFIED: {m}. Nothing is proven about their SSTables");
    }
    Ok(if rep.passed() { Exit::Ok } else { Exit::Failed })
}
