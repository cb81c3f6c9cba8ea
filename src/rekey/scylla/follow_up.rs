//! What the operator does after a ScyllaDB rekey so that new writes use the new key too: per
//! table, `ALTER TABLE … WITH scylla_encryption_options`; and, when the node's scylla.yaml encrypts
//! tables without options of their own (`user_info_encryption`, `system_info_encryption`, FORMAT.md
//! 4.1) under a key the rekey replaced, the change to make there instead. A Scylla.db records the
//! options in force whichever of the two they came from, so both are printed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::Result;
use crate::keys::{KeyId, KeyRef};
use crate::rekey::scylla::commitlog::ScyllaYaml;
use crate::sstable::scylla::{EncryptionOptions, Provider, ProviderKind, RekeyTarget};

/// `ALTER TABLE "ks"."t" WITH scylla_encryption_options = {...}`: new writes under the target.
/// A KMIP target keeps the table's `key_namespace` (its new writes Locate with it, FORMAT.md 4.4:
/// without it they could take another Active key of the group).
pub fn statement(table: &str, target: &RekeyTarget, key_namespace: Option<&str>) -> String {
    let quote = |s: &str| s.replace('\'', "''");
    let mut opts: Vec<(&str, String)> = match target {
        RekeyTarget::Local {
            secret_key_file,
            cipher_algorithm,
            secret_key_strength,
        } => vec![
            ("cipher_algorithm", cipher_algorithm.clone()),
            ("secret_key_strength", secret_key_strength.to_string()),
            ("key_provider", "LocalFileSystemKeyProviderFactory".into()),
            ("secret_key_file", secret_key_file.clone()),
        ],
        RekeyTarget::Kmip {
            kmip_host,
            cipher_algorithm,
            secret_key_strength,
            ..
        } => vec![
            ("cipher_algorithm", cipher_algorithm.clone()),
            ("secret_key_strength", secret_key_strength.to_string()),
            ("key_provider", "KmipKeyProviderFactory".into()),
            ("kmip_host", kmip_host.clone()),
        ],
    };
    if let (RekeyTarget::Kmip { .. }, Some(ns)) = (target, key_namespace) {
        opts.push(("key_namespace", ns.to_string()));
    }
    let body: Vec<String> = opts
        .iter()
        .map(|(k, v)| format!("'{k}': '{}'", quote(v)))
        .collect();
    let (ks, t) = table.split_once('.').unwrap_or(("", table));
    format!(
        "ALTER TABLE \"{ks}\".\"{t}\" WITH scylla_encryption_options = {{{}}};",
        body.join(", ")
    )
}

/// For each enabled `*_info_encryption` section of the scylla.yaml at `path` whose key is one of
/// `replaced` (keys as reports name them): the change that makes its new writes use `to`.
pub fn yaml_changes(
    path: &Path,
    yaml: &ScyllaYaml,
    replaced: &BTreeSet<String>,
    to: &KeyRef,
) -> Vec<String> {
    let mut out = Vec::new();
    for (section, options) in &yaml.info_encryption {
        let old = match section_key(path, options) {
            Ok(Some(old)) => old,
            Ok(None) => continue,
            Err(e) => {
                out.push(format!(
                    "{} {section}: cannot tell which key it names ({e}): check by hand that it does not name a key this rekey replaced",
                    path.display()
                ));
                continue;
            }
        };
        let hit: Vec<&String> = replaced.iter().filter(|k| old.matches(k)).collect();
        if hit.is_empty() || hit.iter().all(|k| **k == to.to_string()) {
            continue;
        }
        let set = match to.id() {
            Ok(KeyId::File(p)) => format!(
                "key_provider: LocalFileSystemKeyProviderFactory and secret_key_file: {}",
                p.display()
            ),
            Ok(KeyId::Kmip { group, .. }) => format!(
                "key_provider: KmipKeyProviderFactory and kmip_host: {group} (ScyllaDB then writes with the group's Active key: revoke the old one)"
            ),
            Ok(KeyId::Replicated(_)) => continue,
            Err(e) => format!("the new key ({e})"),
        };
        let names: Vec<&str> = hit.iter().map(|k| k.as_str()).collect();
        out.push(format!(
            "{} {section} still encrypts new writes under {}, which this rekey replaced: on every node set {set} there (same cipher_algorithm and secret_key_strength), then restart it. Tables without scylla_encryption_options of their own follow it: for them this replaces the ALTER TABLE",
            path.display(),
            names.join(", ")
        ));
    }
    out
}

/// The key a section's new writes use, as far as the options say.
enum SectionKey {
    /// A local key file (report name `file:PATH`).
    File(String),
    /// Whatever Active key KMIP group `.0` has.
    KmipGroup(String),
}

impl SectionKey {
    fn matches(&self, key: &str) -> bool {
        match self {
            SectionKey::File(f) => key == f,
            SectionKey::KmipGroup(g) => key
                .strip_prefix("kmip://")
                .and_then(|r| r.split_once('/'))
                .is_some_and(|(group, _)| group == g),
        }
    }
}

/// The key of a section: a local provider's `secret_key_file` (absent: `data_encryption_keys`
/// beside the scylla.yaml, ScyllaDB's configuration folder), or a KMIP provider's group. Other
/// providers, and a relative file (resolved against a working folder this tool cannot know),
/// are not followed.
fn section_key(path: &Path, options: &EncryptionOptions) -> Result<Option<SectionKey>> {
    match Provider::from_options(options).kind {
        ProviderKind::Local => {
            let file = match options.get("secret_key_file") {
                Some(f) if Path::new(f).is_absolute() => Path::new(f).to_path_buf(),
                Some(_) => return Ok(None),
                None => match path.parent() {
                    Some(conf) => conf.join("data_encryption_keys"),
                    None => return Ok(None),
                },
            };
            let file = crate::keys::canonical(&file)?;
            Ok(Some(SectionKey::File(format!("file:{}", file.display()))))
        }
        ProviderKind::Kmip => Ok(options
            .get("kmip_host")
            .map(|g| SectionKey::KmipGroup(g.to_string()))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kmip_statement_keeps_the_key_namespace_and_quotes() {
        let kmip = RekeyTarget::Kmip {
            kmip_host: "g'1".into(),
            key_id: "7".into(),
            cipher_algorithm: "AES/CBC/PKCS5Padding".into(),
            secret_key_strength: 128,
        };
        assert_eq!(
            statement("ks.t", &kmip, Some("ns")),
            "ALTER TABLE \"ks\".\"t\" WITH scylla_encryption_options = {'cipher_algorithm': 'AES/CBC/PKCS5Padding', 'secret_key_strength': '128', 'key_provider': 'KmipKeyProviderFactory', 'kmip_host': 'g''1', 'key_namespace': 'ns'};"
        );
        let local = RekeyTarget::Local {
            secret_key_file: "/k".into(),
            cipher_algorithm: "AES/ECB/PKCS5Padding".into(),
            secret_key_strength: 256,
        };
        let s = statement("ks.t", &local, Some("ns"));
        assert!(
            !s.contains("key_namespace") && s.contains("'secret_key_file': '/k'"),
            "{s}"
        );
    }
}
