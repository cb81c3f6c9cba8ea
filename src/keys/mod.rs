//! Key references and key material. Nothing here knows about SSTables.
//!
//! A [`KeyRef`] is what the operator types (`file:PATH`, `kmip://GROUP/ID`); a [`KeyId`] is what
//! a record on disk names (a KMIP id or replicated UUID in its header, or the table's key file).
//! [`KeySource`]s turn ids into [`KeyMaterial`]: the DSE key files and the offline keyring here, a
//! KMIP client later. Material lives in zeroizing buffers and is never printed.

pub mod keyfile;
pub mod keyring;
pub mod kmip;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::crypto::envelope::{parse_uuid, uuid_string};
use crate::crypto::{AesKey, CipherSpec};
use crate::error::{Error, Result};

/// A key as the operator names it on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// `file:PATH`: a DSE local key file; the line is chosen by the table's cipher and strength.
    File(PathBuf),
    /// `kmip://GROUP/ID`: a KMIP key by unique identifier, in a `kmip_hosts` group.
    Kmip { group: String, id: String },
    /// `replicated:UUID`: a DSE replicated (system-key-wrapped) key, by UUID. Read side only.
    Replicated([u8; 16]),
}

impl FromStr for KeyRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyRef> {
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(Error::Usage(
                    "file: needs a path, e.g. file:/etc/dse/conf/keys/new_key".into(),
                ));
            }
            return Ok(KeyRef::File(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("kmip://") {
            if let Some((group, id)) = rest.split_once('/') {
                if !group.is_empty() && !id.is_empty() && !group.contains(':') {
                    return Ok(KeyRef::Kmip {
                        group: group.to_string(),
                        id: id.to_string(),
                    });
                }
            }
            return Err(Error::Usage(format!(
                "{s:?}: a KMIP key reference is kmip://GROUP/ID (GROUP a kmip_hosts entry, ID the key's unique identifier)"
            )));
        }
        if let Some(u) = s.strip_prefix("replicated:") {
            return parse_uuid(u).map(KeyRef::Replicated).ok_or_else(|| {
                Error::Usage(format!(
                    "{s:?}: replicated:UUID wants a UUID like 6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a"
                ))
            });
        }
        Err(Error::Usage(format!(
            "{s:?} is not a key reference: use file:PATH (a DSE key file) or kmip://GROUP/ID"
        )))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(p) => write!(f, "file:{}", p.display()),
            KeyRef::Kmip { group, id } => write!(f, "kmip://{group}/{id}"),
            KeyRef::Replicated(u) => write!(f, "replicated:{}", uuid_string(u)),
        }
    }
}

impl KeyRef {
    /// The on-disk identity this reference denotes.
    pub fn id(&self) -> KeyId {
        match self {
            KeyRef::File(p) => KeyId::File(canonical(p)),
            KeyRef::Kmip { id, .. } => KeyId::Kmip(id.clone()),
            KeyRef::Replicated(u) => KeyId::Replicated(*u),
        }
    }
}

/// Absolute, symlink-resolved path where possible (key files are compared by path).
pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        }
    })
}

/// A key as a record on disk names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyId {
    Kmip(String),
    Replicated([u8; 16]),
    /// A local key file (header-less records), by canonical path.
    File(PathBuf),
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyId::Kmip(id) => write!(f, "kmip:{id}"),
            KeyId::Replicated(u) => write!(f, "replicated:{}", uuid_string(u)),
            KeyId::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Raw key bytes, wiped when dropped. Deliberately not `Debug`/`Display`.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        KeyMaterial(bytes)
    }

    pub fn bits(&self) -> u32 {
        self.0.len() as u32 * 8
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// One place keys come from. A KMIP client implements this too.
pub trait KeySource: Send + Sync {
    /// Human name for messages ("keyring /etc/…", "KMIP group kmip1").
    fn describe(&self) -> String;
    /// The key `id` names, for a table using `cipher`; `Ok(None)` when this source does not have it.
    fn fetch(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Option<KeyMaterial>>;
}

/// Key files are read on demand by path: any `file:` id can be resolved by reading that file.
pub struct KeyFiles;

impl KeySource for KeyFiles {
    fn describe(&self) -> String {
        "DSE key files".into()
    }

    fn fetch(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Option<KeyMaterial>> {
        match id {
            KeyId::File(path) => keyfile::KeyFile::load(path)?
                .get(&cipher.transformation, cipher.key_bits)
                .map(Some)
                .ok_or_else(|| {
                    Error::Key(format!(
                        "{}: no {}:{} line; DSE would generate a new key there, which cannot decrypt existing data. Add the right line or name the right file",
                        path.display(),
                        cipher.transformation,
                        cipher.key_bits
                    ))
                }),
            _ => Ok(None),
        }
    }
}

/// Resolves ids to expanded AES keys through the configured sources, once per (id, cipher).
pub struct KeyStore {
    sources: Vec<Box<dyn KeySource>>,
    cache: Mutex<HashMap<(KeyId, String, u32), Arc<AesKey>>>,
}

impl KeyStore {
    pub fn new(sources: Vec<Box<dyn KeySource>>) -> Self {
        KeyStore {
            sources,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Key files plus, if given, an offline keyring.
    pub fn offline(keyring: Option<&Path>) -> Result<KeyStore> {
        let mut sources: Vec<Box<dyn KeySource>> = vec![Box::new(KeyFiles)];
        if let Some(p) = keyring {
            sources.push(Box::new(keyring::Keyring::load(p)?));
        }
        Ok(KeyStore::new(sources))
    }

    /// The expanded key for `id` under `cipher`, checking its strength against the table's.
    pub fn get(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Arc<AesKey>> {
        let slot = (id.clone(), cipher.transformation.clone(), cipher.key_bits);
        if let Some(k) = self.cache.lock().unwrap().get(&slot) {
            return Ok(k.clone());
        }
        let mut found = None;
        for s in &self.sources {
            if let Some(m) = s.fetch(id, cipher)? {
                found = Some(m);
                break;
            }
        }
        let material = found.ok_or_else(|| {
            let tried: Vec<String> = self.sources.iter().map(|s| s.describe()).collect();
            Error::Key(format!(
                "key {id} not found (looked in: {}); {}",
                tried.join(", "),
                match id {
                    KeyId::Kmip(_) | KeyId::Replicated(_) =>
                        "add it to the keyring (--keyring) as <id>:<base64 key>",
                    KeyId::File(_) => "check the path",
                }
            ))
        })?;
        if material.bits() != cipher.key_bits {
            return Err(Error::Key(format!(
                "key {id} is {} bits, but the table uses secret_key_strength {}",
                material.bits(),
                cipher.key_bits
            )));
        }
        let key = Arc::new(
            AesKey::new(material.expose()).map_err(|e| Error::Key(format!("key {id}: {e}")))?,
        );
        self.cache.lock().unwrap().insert(slot, key.clone());
        Ok(key)
    }
}

/// Refuses key material files that group or others can read (FORMAT.md 2.4).
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Key(format!(
            "{}: mode {mode:03o} lets other users read key material; run `chmod 600 {}` (and check who may have read it)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_parse_and_print() {
        let r: KeyRef = "kmip://kmip1/42".parse().unwrap();
        assert_eq!(
            r,
            KeyRef::Kmip {
                group: "kmip1".into(),
                id: "42".into()
            }
        );
        assert_eq!(r.to_string(), "kmip://kmip1/42");
        assert!(matches!(
            "file:/k".parse::<KeyRef>().unwrap(),
            KeyRef::File(_)
        ));
        assert!("kmip://nogroup".parse::<KeyRef>().is_err());
        assert!("/etc/key".parse::<KeyRef>().is_err());
        assert!("replicated:xyz".parse::<KeyRef>().is_err());
    }
}
