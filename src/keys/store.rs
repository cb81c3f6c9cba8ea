//! The key store: every configured source of key material behind one lookup, and how it is built
//! from what the operator named (key files, an offline keyring, a KMIP configuration; resolving
//! `--to kmip://GROUP/active`). Knows nothing of SSTables: what `active` must find (the tables'
//! key strength, and whether to look for it as DSE or as ScyllaDB does) is asked of the caller.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::crypto::envelope::uuid_string;
use crate::crypto::{AesKey, CipherSpec};
use crate::error::{Error, Result};
use crate::keys::keyring::Keyring;
use crate::keys::kmip::source::ACTIVE;
use crate::keys::kmip::{ActiveWant, KmipConfig, KmipError, KmipSource};
use crate::keys::{material_eq, KeyFiles, KeyId, KeyMaterial, KeyRef, KeySource};

/// Resolves ids to expanded AES keys through the configured sources, once per (id, cipher).
pub struct KeyStore {
    sources: Vec<Box<dyn KeySource>>,
    /// The expanded key and its material (kept for [`KeyStore::same_material`]; the round keys
    /// are as secret as the key itself, so this keeps nothing more sensitive in memory).
    cache: Mutex<HashMap<Slot, (Arc<AesKey>, KeyMaterial)>>,
}

/// A key for one table cipher: (id, transformation, bits).
type Slot = (KeyId, String, u32);

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
            sources.push(Box::new(Keyring::load(p)?));
        }
        Ok(KeyStore::new(sources))
    }

    /// The expanded key for `id` under `cipher`, checking its strength against the table's.
    pub fn get(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Arc<AesKey>> {
        let slot = (id.clone(), cipher.transformation.clone(), cipher.key_bits);
        if let Some((k, _)) = self.cache.lock().unwrap().get(&slot) {
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
                    KeyId::Kmip { id, .. } =>
                        format!("add it to the keyring (--keyring) as {id}:<base64 key>"),
                    KeyId::Replicated(u) => format!(
                        "add it to the keyring (--keyring) as {}:<base64 key>",
                        uuid_string(u)
                    ),
                    KeyId::File(_) => "check the path".to_string(),
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
        self.cache
            .lock()
            .unwrap()
            .insert(slot, (key.clone(), material));
        Ok(key)
    }

    /// The raw bytes of `id` under `cipher` (through [`KeyStore::get`], with its checks and
    /// cache): for ScyllaDB's file cipher, whose IV key hashes the raw key (FORMAT.md 4.3).
    pub fn material(&self, id: &KeyId, cipher: &CipherSpec) -> Result<KeyMaterial> {
        self.get(id, cipher)?;
        let slot = (id.clone(), cipher.transformation.clone(), cipher.key_bits);
        let cache = self.cache.lock().unwrap();
        let (_, m) = cache.get(&slot).expect("cached by get");
        Ok(KeyMaterial::new(zeroize::Zeroizing::new(
            m.expose().to_vec(),
        )))
    }

    /// What the sources want the operator to know since the last call (e.g. a KMIP key taken
    /// from the keyring because the server no longer has it).
    pub fn warnings(&self) -> Vec<String> {
        self.sources.iter().flat_map(|s| s.warnings()).collect()
    }

    /// True when `a` and `b` hold the same key material for `cipher` (both are fetched through
    /// [`KeyStore::get`] first). The bytes are compared in constant time (`subtle`): no early
    /// exit on the first differing byte, so timing tells nothing about a compromised key's bytes.
    pub fn same_material(&self, a: &KeyId, b: &KeyId, cipher: &CipherSpec) -> Result<bool> {
        self.get(a, cipher)?;
        self.get(b, cipher)?;
        let cache = self.cache.lock().unwrap();
        let slot = |id: &KeyId| (id.clone(), cipher.transformation.clone(), cipher.key_bits);
        let (Some((_, x)), Some((_, y))) = (cache.get(&slot(a)), cache.get(&slot(b))) else {
            unreachable!("both were just cached by get")
        };
        Ok(material_eq(x.expose(), y.expose()))
    }
}

/// What a key store is built from.
pub struct StoreSpec<'a> {
    /// The KMIP servers (`--kmip-config`/`--dse-yaml`/`--scylla-yaml`), if any.
    pub kmip: Option<KmipConfig>,
    /// The offline keyring (`--keyring`).
    pub keyring: Option<&'a Path>,
    /// The old keys named (`--from`, `--key`).
    pub refs: &'a [KeyRef],
    /// The new key (`--to`), checked on the server and, for `kmip://GROUP/active`, resolved.
    pub to: Option<&'a KeyRef>,
    /// `--create-key`: create the Active key `active` names when there is none.
    pub create_key: bool,
    pub dry_run: bool,
    /// What `kmip://GROUP/active` must find: the tables' `secret_key_strength`, and how their
    /// database looks for it; asked only when `--to` is `active`.
    pub active: &'a dyn Fn() -> Result<ActiveWant>,
}

/// A built store, and what the building found.
pub struct Built {
    pub store: KeyStore,
    /// `--to`, with `kmip://GROUP/active` replaced by the key it found or created.
    pub to: Option<KeyRef>,
    /// A KMIP configuration was given: every `kmip://GROUP/…` reference names one of its groups.
    pub kmip_configured: bool,
    /// What the operator should know (the key `active` found, a key created).
    pub notes: Vec<String>,
}

impl KeyStore {
    /// Key files, then the KMIP server (when configured), then the offline keyring. The KMIP
    /// source checks key states; with `to`, the new key is checked (Active, AES) and `active`
    /// resolved. Old keys are fetched from the group their tables name (`kmip_host`).
    pub fn build(spec: &StoreSpec) -> Result<Built> {
        let to = spec.to;
        let wants_active = matches!(to, Some(KeyRef::Kmip { id, .. }) if id == ACTIVE);
        if spec
            .refs
            .iter()
            .any(|r| matches!(r, KeyRef::Kmip { id, .. } if id == ACTIVE))
        {
            return Err(Error::Usage(
                "kmip://GROUP/active names the new key (--to); name old keys by their id".into(),
            ));
        }
        if spec.create_key && !wants_active {
            return Err(Error::Usage(
                "--create-key goes with --to kmip://GROUP/active".into(),
            ));
        }
        let Some(cfg) = spec.kmip.clone() else {
            if wants_active {
                return Err(Error::Usage(
                    "--to kmip://GROUP/active asks the KMIP server: give --kmip-config, --dse-yaml or --scylla-yaml".into(),
                ));
            }
            return Ok(Built {
                store: KeyStore::offline(spec.keyring)?,
                to: to.cloned(),
                kmip_configured: false,
                notes: Vec::new(),
            });
        };
        let src = KmipSource::new(cfg);
        // Every group named on the command line must be configured (a typo is an error, not a
        // group of its own).
        for r in to.into_iter().chain(spec.refs) {
            if let KeyRef::Kmip { group, .. } = r {
                src.group(group)
                    .map_err(|e| Error::Usage(format!("{r}: {e}")))?;
            }
        }
        let mut notes = Vec::new();
        let mut to = to.cloned();
        if let Some(KeyRef::Kmip { group, id }) = to.clone() {
            let id = if id == ACTIVE {
                resolve_active(&src, &group, spec, &mut notes)?
            } else {
                id
            };
            src.check_target(&group, &id, None)?;
            to = Some(KeyRef::Kmip { group, id });
        }
        let fallback = spec.keyring.map(Keyring::load).transpose()?;
        let mut sources: Vec<Box<dyn KeySource>> =
            vec![Box::new(KeyFiles), Box::new(src.with_fallback(fallback))];
        if let Some(k) = spec.keyring {
            sources.push(Box::new(Keyring::load(k)?));
        }
        Ok(Built {
            store: KeyStore::new(sources),
            to,
            kmip_configured: true,
            notes,
        })
    }
}

/// The id `kmip://GROUP/active` stands for: the group's Active AES key that the tables' database
/// would find ([`ActiveWant`]), or one created with `--create-key`.
fn resolve_active(
    src: &KmipSource,
    group: &str,
    spec: &StoreSpec,
    notes: &mut Vec<String>,
) -> Result<String> {
    let want = (spec.active)()?;
    let (bits, (aes, more)) = (want.bits, want.describe());
    match src.locate_active(group, &want)? {
        Some(a) => {
            notes.push(format!("kmip://{group}/active is key {} ({aes}{more})", a.id));
            Ok(a.id)
        }
        None if spec.create_key && spec.dry_run => Err(Error::Usage(format!(
            "KMIP group {group} has no Active {aes} key{more}; a run without --dry-run would create one (--create-key)"
        ))),
        None if spec.create_key => {
            let id = src
                .with_client(group, |c| c.create_aes(bits, None, &want.create_texts()))
                .map_err(|e| refused_create(e, &want))?;
            src.check_created(group, &id, &want)?;
            notes.push(format!(
                "created and activated KMIP key {group}/{id} ({aes}{more})"
            ));
            Ok(id)
        }
        None => Err(Error::Key(format!(
            "KMIP group {group} has no Active {aes} key{more}: add --create-key, or {}",
            match want.key_namespace() {
                None => format!("run `sstable-rekey kmip create {group} --bits {bits}`"),
                Some(_) => "create one with that namespace with the KMIP server's tools".into(),
            }
        ))),
    }
}

/// A failed Create; a refused one with a namespace says that the server may not store it.
fn refused_create(e: KmipError, want: &ActiveWant) -> Error {
    match want.key_namespace() {
        Some(n) if matches!(e, KmipError::Failed { .. }) => Error::Key(format!(
            "{e}. The key was to carry the text attribute x-key-namespace {n:?} (the tables' key_namespace), as ScyllaDB creates it; a server that does not store custom attributes (PyKMIP 0.11 refuses them) cannot hold such a key, and ScyllaDB's own Create would fail the same way"
        )),
        _ => e.into(),
    }
}
