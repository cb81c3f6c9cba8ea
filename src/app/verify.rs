//! `verify`: the proof before a key is destroyed.

use crate::app::cli::VerifyArgs;
use crate::app::exit::{Exit, CANCEL};
use crate::app::scope::{check_report_path, parse_refs, print_notes, print_unreadable, selection};
use sstable_rekey::error::Result;

use crate::app::scope::resolve_data_dirs;
use sstable_rekey::rekey;
use sstable_rekey::rekey::report::write_json;
use sstable_rekey::rekey::verify::VerifyOptions;

pub fn run(a: &VerifyArgs) -> Result<Exit> {
    let keys = parse_refs(&a.keys)?;
    let store = crate::app::kmip::build_keys(
        &a.scope.kmip,
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
    if let Some(m) = rep.data_dirs.missing_sentence() {
        outln!("NOT VERIFIED: {m}. Nothing is proven about their SSTables");
    }
    Ok(if rep.passed() { Exit::Ok } else { Exit::Failed })
}
