//! The KMIP side of the front end: building the key store from `--kmip-config`/`--dse-yaml`/
//! `--scylla-yaml`, resolving `--to kmip://GROUP/active`, and the `kmip list|create|revoke|destroy`
//! commands (mirroring `dsetool managekmip`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::app::cli::{
    KmipArgs, KmipCommand, KmipCreateArgs, KmipDestroyArgs, KmipListArgs, KmipOpts, KmipRevokeArgs,
};
use crate::app::exit::{Exit, CANCEL};
use sstable_rekey::error::{Error, Result};
use sstable_rekey::keys::kmip::{algorithm_name, Attributes, KmipConfig, KmipSource};
use sstable_rekey::keys::{Built, KeyId, KeyRef, KeyStore, StoreSpec};
use sstable_rekey::rekey::find::Selection;
use sstable_rekey::rekey::node_config::DataDirs;
use sstable_rekey::rekey::verify::{self, VerifyOptions};

/// The KMIP configuration the options name, if any.
pub fn load_config(o: &KmipOpts) -> Result<Option<KmipConfig>> {
    Ok(if let Some(p) = &o.kmip_config {
        Some(KmipConfig::from_toml_file(p)?)
    } else if let Some(p) = &o.dse_yaml {
        Some(KmipConfig::from_yaml_file(p, true)?)
    } else if let Some(p) = &o.scylla_yaml {
        Some(KmipConfig::from_yaml_file(p, false)?)
    } else {
        None
    })
}

fn require_config(o: &KmipOpts) -> Result<KmipConfig> {
    load_config(o)?.ok_or_else(|| {
        Error::Usage(
            "kmip commands need the servers: --kmip-config FILE (TOML), --dse-yaml FILE or --scylla-yaml FILE".into(),
        )
    })
}

/// The key store of a rekey or verify, from the arguments; notes (the key `active` found, a key
/// created) are said on stderr.
pub fn build_keys(
    kmip: &KmipOpts,
    keyring: Option<&Path>,
    refs: &[KeyRef],
    to: Option<&KeyRef>,
    create_key: bool,
    dry_run: bool,
    scope: Option<(&[PathBuf], &Selection)>,
) -> Result<Built> {
    let active = || {
        let (dirs, sel) = scope.expect("rekey passes its scope");
        sstable_rekey::rekey::selection_active(dirs, sel)
    };
    let built = KeyStore::build(&StoreSpec {
        kmip: load_config(kmip)?,
        keyring,
        refs,
        to,
        create_key,
        dry_run,
        active: &active,
    })?;
    for n in &built.notes {
        errln!("{n}");
    }
    Ok(built)
}

pub fn run(a: &KmipArgs) -> Result<Exit> {
    match &a.command {
        KmipCommand::List(a) => list(a),
        KmipCommand::Create(a) => create(a),
        KmipCommand::Revoke(a) => revoke(a),
        KmipCommand::Destroy(a) => destroy(a),
    }
}

fn source(o: &KmipOpts, group: &str) -> Result<KmipSource> {
    let src = KmipSource::new(require_config(o)?);
    src.group(group)?;
    Ok(src)
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let s = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[derive(Serialize)]
struct Row {
    id: String,
    name: Option<String>,
    cipher: String,
    state: String,
    activation_date: Option<String>,
    creation_date: Option<String>,
    protect_stop_date: Option<String>,
    namespace: Option<String>,
}

impl Row {
    fn of(a: &Attributes) -> Row {
        Row {
            id: a.id.clone(),
            name: (!a.names.is_empty()).then(|| a.names.join(",")),
            cipher: match (a.algorithm, a.length) {
                (Some(al), Some(l)) => format!("{}-{l}", algorithm_name(al)),
                (Some(al), None) => algorithm_name(al),
                _ => "-".into(),
            },
            state: a.state.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            activation_date: a.activation_date.map(utc),
            creation_date: a.initial_date.map(utc),
            protect_stop_date: a.protect_stop_date.map(utc),
            namespace: (!a.object_groups.is_empty()).then(|| a.object_groups.join(",")),
        }
    }
}

/// Ids in a human order: numbers numerically, then the rest as text.
fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    }
}

fn list(a: &KmipListArgs) -> Result<Exit> {
    let src = source(&a.kmip, &a.group)?;
    // Who answers (Query); servers may restrict Query, and the list does not need it.
    let vendor = src
        .with_client(&a.group, |c| c.query())
        .ok()
        .and_then(|q| q.vendor);
    let filter = match &a.name {
        Some(n) => vec![sstable_rekey::keys::kmip::client::attribute(
            "Name",
            sstable_rekey::keys::kmip::ttlv::Value::Structure(vec![
                sstable_rekey::keys::kmip::ttlv::Item::text(
                    sstable_rekey::keys::kmip::tag::NAME_VALUE,
                    n,
                ),
                sstable_rekey::keys::kmip::ttlv::Item::enumeration(
                    sstable_rekey::keys::kmip::tag::NAME_TYPE,
                    sstable_rekey::keys::kmip::NAME_TYPE_TEXT,
                ),
            ]),
        )],
        None => Vec::new(),
    };
    let mut ids = src.with_client(&a.group, |c| c.locate(filter))?;
    ids.sort_by(|x, y| id_order(x, y));
    let mut rows = Vec::new();
    // Get Attributes batched, a bounded number per request so responses stay small.
    for chunk in ids.chunks(64) {
        for r in src.with_client(&a.group, |c| c.attributes(chunk))? {
            match r {
                Ok(at) => {
                    if let Some(ns) = &a.namespace {
                        if !at.object_groups.contains(ns) {
                            continue;
                        }
                    }
                    rows.push(Row::of(&at));
                }
                // Gone between Locate and Get Attributes: nothing to list.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializable")
        );
        return Ok(Exit::Ok);
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            [
                r.id.clone(),
                o(&r.name),
                r.cipher.clone(),
                r.state.clone(),
                o(&r.activation_date),
                o(&r.creation_date),
                o(&r.protect_stop_date),
                o(&r.namespace),
            ]
        })
        .collect();
    let head = [
        "ID",
        "Name",
        "Cipher",
        "State",
        "Activation Date",
        "Creation Date",
        "Protect Stop Date",
        "Namespace",
    ];
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &table {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    outln!("{}", line(head.to_vec()));
    for r in &table {
        outln!("{}", line(r.iter().map(String::as_str).collect()));
    }
    errln!(
        "{} keys in KMIP group {}{}",
        table.len(),
        a.group,
        vendor
            .map(|v| format!(" (server: {v})"))
            .unwrap_or_default()
    );
    Ok(Exit::Ok)
}

fn create(a: &KmipCreateArgs) -> Result<Exit> {
    let bits: u32 = a.bits.parse().expect("clap checked");
    let src = source(&a.kmip, &a.group)?;
    let id = src.with_client(&a.group, |c| c.create_aes(bits, a.name.as_deref(), &[]))?;
    outln!("created kmip://{}/{id} (AES-{bits}, Active)", a.group);
    Ok(Exit::Ok)
}

fn state_of(src: &KmipSource, group: &str, id: &str) -> Result<Attributes> {
    src.with_client(group, |c| c.attributes(&[id.to_string()]))?
        .pop()
        .expect("one result")
        .map_err(|e| {
            if e.is_not_found() {
                Error::Key(format!(
                    "KMIP group {group} has no key {id} (Item Not Found)"
                ))
            } else {
                e.into()
            }
        })
}

fn revoke(a: &KmipRevokeArgs) -> Result<Exit> {
    let src = source(&a.kmip, &a.group)?;
    src.with_client(&a.group, |c| {
        c.revoke(&a.id, a.reason.code(), a.message.as_deref())
    })?;
    let now = state_of(&src, &a.group, &a.id)?;
    outln!(
        "revoked kmip://{}/{}: now {}",
        a.group,
        a.id,
        now.state
            .map(|s| s.to_string())
            .unwrap_or_else(|| "in an unreported state".into())
    );
    Ok(Exit::Ok)
}

/// What still needs a key: live SSTables and snapshot/backup ones, with their record counts;
/// what could not be read; and the configured data directories left out (nothing known of them).
#[derive(Default)]
struct Usage {
    live: BTreeMap<String, usize>,
    backups: BTreeMap<String, usize>,
    unknown: Vec<String>,
    not_checked: Option<String>,
    /// ScyllaDB commit log segments and hints whose side file names the key.
    segments: Vec<String>,
    /// The same id under another group: another key, unless that group is the same server under
    /// another name, which this tool cannot tell (file → the key names and their counts).
    same_id: BTreeMap<String, Vec<(String, usize)>>,
}

fn usage_of(
    group: &str,
    id: &str,
    dirs: &DataDirs,
    log_dirs: Vec<sstable_rekey::rekey::scylla::commitlog::LogDir>,
) -> Result<Usage> {
    let opts = VerifyOptions {
        keys: Vec::new(),
        data_dirs: dirs.clone(),
        selection: Selection::default(),
        deep: false,
        log_dirs,
    };
    // With no keys given, verify decrypts nothing: it reads every chunk header and checks CRCs.
    let store = KeyStore::new(Vec::new());
    let rep = verify::verify(&opts, &store, &CANCEL)?;
    for n in &rep.notes {
        errln!("sstable-rekey: {n}");
    }
    let name = KeyId::Kmip {
        group: group.to_string(),
        id: id.to_string(),
    }
    .to_string();
    // Report keys are `kmip://GROUP/ID`; a group never contains '/' where it comes from a
    // reference, and a kmip_host that does only makes this match more (fail closed).
    let other_group =
        |k: &str| k != name && k.starts_with("kmip://") && k.ends_with(&format!("/{id}"));
    let mut u = Usage {
        not_checked: rep.data_dirs.missing_sentence(),
        ..Usage::default()
    };
    for v in &rep.sstables {
        let n = v.keys.get(&name).copied().unwrap_or(0)
            + v.index_pages.get(&name).copied().unwrap_or(0)
            + v.metadata.get(&name).copied().unwrap_or(0);
        if n > 0 {
            u.live.insert(v.data.clone(), n);
        } else if v.status == "failed" && v.keys.is_empty() {
            u.unknown.push(format!(
                "{}: {}",
                v.data,
                v.error.as_deref().unwrap_or("unreadable")
            ));
        }
        let mut others: BTreeMap<&str, usize> = BTreeMap::new();
        for (k, n) in v.keys.iter().chain(&v.index_pages).chain(&v.metadata) {
            if other_group(k) {
                *others.entry(k).or_default() += n;
            }
        }
        if !others.is_empty() {
            u.same_id.insert(
                v.data.clone(),
                others
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect(),
            );
        }
    }
    for c in &rep.commitlog {
        if c.key.as_deref() == Some(name.as_str()) {
            u.segments.push(c.path.clone());
        } else if c.status == "failed" {
            u.unknown.push(format!(
                "{}: {}",
                c.path,
                c.error.as_deref().unwrap_or("unreadable")
            ));
        }
    }
    for b in &rep.backups {
        if let Some(e) = &b.error {
            u.unknown.push(format!("{}: {e}", b.data));
        }
        if let Some(n) = b.keys.get(&name) {
            u.backups.insert(b.data.clone(), *n);
        }
        for (k, n) in &b.keys {
            if other_group(k) {
                u.same_id
                    .entry(b.data.clone())
                    .or_default()
                    .push((k.clone(), *n));
            }
        }
    }
    Ok(u)
}

fn destroy(a: &KmipDestroyArgs) -> Result<Exit> {
    let dirs = crate::app::scope::resolve_data_dirs(&a.data_dirs, a.cassandra_yaml.as_deref())?;
    let src = source(&a.kmip, &a.group)?;
    let before = state_of(&src, &a.group, &a.id)?;
    if before.state == Some(sstable_rekey::keys::kmip::State::Active) {
        return Err(Error::Key(format!(
            "kmip://{}/{} is Active: revoke it first (`sstable-rekey kmip revoke {} {}`), rekey, verify, then destroy",
            a.group, a.id, a.group, a.id
        )));
    }
    let key = KeyId::Kmip {
        group: a.group.clone(),
        id: a.id.clone(),
    };
    let mut refuse = Vec::new();
    // With --scylla-yaml, the node's commit log and hints folders too (FORMAT.md 4.10).
    let log_dirs = match &a.kmip.scylla_yaml {
        Some(y) => sstable_rekey::rekey::scylla::commitlog::read_scylla_yaml(y)?.log_dirs,
        None => Vec::new(),
    };
    match usage_of(&a.group, &a.id, &dirs, log_dirs) {
        Ok(u) => {
            for (f, n) in &u.live {
                refuse.push(format!("live      {f}: {n} records under {key}"));
            }
            for (f, n) in &u.backups {
                refuse.push(format!("snapshot/backup {f}: {n} records under {key}"));
            }
            for f in &u.segments {
                refuse.push(format!("segment   {f}: under {key} until ScyllaDB replays it (nodetool drain, then a clean start of the node)"));
            }
            for f in &u.unknown {
                refuse.push(format!("unreadable {f} (cannot tell its keys)"));
            }
            if let Some(m) = &u.not_checked {
                refuse.push(format!("not checked: {m}"));
            }
            // Destroying is for good: the same id under another kmip_host may be this very key
            // on the same server under another group name.
            for (f, keys) in &u.same_id {
                for (k, n) in keys {
                    refuse.push(format!(
                        "same id   {f}: {n} records under {k} (another group with the id {}: if that group is this server under another name, these need the key too)",
                        a.id
                    ));
                }
            }
        }
        Err(e) => refuse.push(format!("could not check the data directories: {e}")),
    }
    if !refuse.is_empty() {
        for r in &refuse {
            outln!("{r}");
        }
        if !a.force {
            outln!(
                "refusing to destroy kmip://{}/{}: the SSTables above still need it, or could not be checked (rekey them, check every data directory of the node, or drop the snapshots/backups you no longer need); --force destroys it anyway and makes them unreadable",
                a.group, a.id
            );
            return Ok(Exit::Failed);
        }
        errln!("sstable-rekey: warning: --force: destroying a key that the files above still need; their data becomes unreadable");
    } else {
        outln!(
            "no SSTable in {} (snapshots and backups included) is under {key}",
            dirs.dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    src.with_client(&a.group, |c| c.destroy(&a.id))?;
    outln!("destroyed kmip://{}/{}", a.group, a.id);
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(0x47DA67F8), "2008-03-14T11:56:40Z");
        assert_eq!(utc(951782400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ids_sort_numerically() {
        let mut v = vec!["10", "9", "b", "1", "a"];
        v.sort_by(|x, y| id_order(x, y));
        assert_eq!(v, ["1", "9", "10", "a", "b"]);
    }
}
