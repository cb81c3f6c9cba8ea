//! `kmip://GROUP/ID` resolved against a KMIP server, with the key-state rules of a rekey:
//! - keys read from chunk headers (old keys) must be Active, Deactivated or Compromised; a Destroyed
//!   or missing one is an error (its data cannot be read without a backup of the key);
//! - the new key must be Active and AES (its length is checked against each table's strength by
//!   [`crate::keys::KeyStore`]);
//! - `kmip://GROUP/active` is the Active AES key of the wanted length (Locate).
//!
//! A key is its group and its id (the group of an old key is the table's `kmip_host`, carried in
//! its [`KeyId`]). One client, hence one connection, per group for the whole run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::client::{attribute, Attributes, Client};
use super::config::KmipConfig;
use super::error::KmipError;
use super::ttlv::Value;
use super::{State, ALGORITHM_AES, OBJECT_TYPE_SYMMETRIC_KEY};
use crate::crypto::CipherSpec;
use crate::error::{Error, Result};
use crate::keys::{keyring::Keyring, KeyId, KeyMaterial, KeySource};

/// The id `kmip://GROUP/active` stands for.
pub const ACTIVE: &str = "active";

pub struct KmipSource {
    config: KmipConfig,
    clients: Mutex<HashMap<String, Client>>,
    /// Key material for keys the server will not hand out any more (destroyed, or Get refused on
    /// revoked keys): the offline keyring, when one is given too.
    fallback: Option<Keyring>,
    /// What the operator should know (a key taken from the keyring instead of the server).
    warnings: std::sync::Mutex<Vec<String>>,
    /// Attributes of every key fetched, for reports.
    seen: Mutex<BTreeMap<String, Attributes>>,
}

impl KmipSource {
    pub fn new(config: KmipConfig) -> KmipSource {
        KmipSource {
            config,
            clients: Mutex::new(HashMap::new()),
            fallback: None,
            warnings: Default::default(),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The configured group `name`: an error naming the configuration and its groups otherwise.
    pub fn group(&self, name: &str) -> Result<()> {
        self.config.group(name)?;
        Ok(())
    }

    pub fn with_fallback(mut self, keyring: Option<Keyring>) -> Self {
        self.fallback = keyring;
        self
    }

    /// Runs `f` with the group's client, connecting on first use.
    pub fn with_client<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, KmipError>,
    ) -> std::result::Result<T, KmipError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(group) {
            let c = Client::new(self.config.group(group)?)?;
            clients.insert(group.to_string(), c);
        }
        f(clients.get_mut(group).expect("inserted"))
    }

    /// Attributes of every key fetched so far.
    pub fn seen(&self) -> BTreeMap<String, Attributes> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The new key must be an Active AES key (of `bits` when known).
    pub fn check_target(&self, group: &str, id: &str, bits: Option<u32>) -> Result<Attributes> {
        let a = self
            .with_client(group, |c| c.attributes(&[id.to_string()]))?
            .pop()
            .expect("one result");
        let a = a.map_err(|e| {
            if e.is_not_found() {
                Error::Key(format!(
                    "--to kmip://{group}/{id}: no such key on KMIP group {group} (Item Not Found); `sstable-rekey kmip list {group}` shows the keys this certificate may use"
                ))
            } else {
                e.into()
            }
        })?;
        if a.state != Some(State::Active) {
            return Err(Error::Key(format!(
                "--to kmip://{group}/{id}: the key is {}, not Active: new data may only be encrypted under an Active key (activate it on the KMIP server, or create one with `sstable-rekey kmip create {group}`)",
                a.state.map(|s| s.to_string()).unwrap_or_else(|| "of unknown state".into())
            )));
        }
        check_aes(&a, group, bits)?;
        Ok(a)
    }

    /// `kmip://GROUP/active`: the Active AES key of `bits` bits, as DSE finds it (Locate by
    /// Object Type, Cryptographic Algorithm and Length, and State Active); the most recently
    /// activated (else created) one when there are several. `None` when there is none.
    pub fn locate_active(&self, group: &str, bits: u32) -> Result<Option<Attributes>> {
        let filter = vec![
            attribute("Object Type", Value::Enumeration(OBJECT_TYPE_SYMMETRIC_KEY)),
            attribute("Cryptographic Algorithm", Value::Enumeration(ALGORITHM_AES)),
            attribute("Cryptographic Length", Value::Integer(bits as i32)),
            attribute("State", Value::Enumeration(State::Active.code())),
        ];
        let ids = self.with_client(group, |c| c.locate(filter))?;
        // Check what Locate found: a server may ignore filters it does not support.
        let attrs = self.with_client(group, |c| c.attributes(&ids))?;
        let mut fit: Vec<Attributes> = attrs
            .into_iter()
            .filter_map(|a| a.ok())
            .filter(|a| {
                a.state == Some(State::Active)
                    && a.algorithm == Some(ALGORITHM_AES)
                    && a.length == Some(bits as i32)
            })
            .collect();
        fit.sort_by_key(|a| (a.activation_date.or(a.initial_date), a.id.clone()));
        Ok(fit.pop())
    }
}

fn check_aes(a: &Attributes, group: &str, bits: Option<u32>) -> Result<()> {
    if let Some(alg) = a.algorithm {
        if alg != ALGORITHM_AES {
            return Err(Error::Key(format!(
                "KMIP key {group}/{} is a {} key; DSE encryption needs AES",
                a.id,
                super::algorithm_name(alg)
            )));
        }
    }
    if let (Some(len), Some(bits)) = (a.length, bits) {
        if len != bits as i32 {
            return Err(Error::Key(format!(
                "KMIP key {group}/{} is AES-{len}, but the tables use secret_key_strength {bits}",
                a.id
            )));
        }
    }
    Ok(())
}

impl KeySource for KmipSource {
    fn describe(&self) -> String {
        let g: Vec<&str> = self.config.groups.keys().map(String::as_str).collect();
        format!("KMIP groups {} of {}", g.join(", "), self.config.origin)
    }

    fn warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap())
    }

    fn fetch(&self, key: &KeyId, cipher: &CipherSpec) -> Result<Option<KeyMaterial>> {
        let KeyId::Kmip { group, id } = key else {
            return Ok(None);
        };
        let fallback = |why: &str| -> Result<Option<KeyMaterial>> {
            if let Some(k) = &self.fallback {
                if let Some(m) = k.fetch(key, cipher)? {
                    self.warnings.lock().unwrap().push(format!(
                        "warning: KMIP key {group}/{id}: {why}; using the copy in {}",
                        k.describe()
                    ));
                    return Ok(Some(m));
                }
            }
            Ok(None)
        };
        // The table's kmip_host must be a configured group: DSE finds the server by it.
        if let Err(e) = self.config.group(group) {
            if let Some(m) = fallback(&format!("group {group} is not configured"))? {
                return Ok(Some(m));
            }
            return Err(Error::Key(format!(
                "key kmip://{group}/{id}: {e}. The tables under it name kmip_host {group}: add that group to the configuration (as in the node's dse.yaml), or give a backup of the key with --keyring"
            )));
        }
        let (attrs, key) = match self.with_client(group, |c| c.fetch(id)) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                if let Some(m) = fallback("not on the server (destroyed?)")? {
                    return Ok(Some(m));
                }
                return Err(Error::Key(format!(
                    "KMIP key {id} does not exist on group {group} (Item Not Found): it was destroyed, or this client certificate may not see it. Data under it cannot be read without a backup of the key (--keyring)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{group}/{id}"), attrs.clone());
        match attrs.state {
            Some(s) if s.may_decrypt() => {}
            Some(s @ (State::Destroyed | State::DestroyedCompromised)) => {
                if let Some(m) = fallback(&format!("the server says {s}"))? {
                    return Ok(Some(m));
                }
                return Err(Error::Key(format!(
                    "KMIP key {group}/{id} is {s}: data under it cannot be read without a backup of the key (--keyring)"
                )));
            }
            s => {
                return Err(Error::Key(format!(
                    "KMIP key {group}/{id} is {}: only Active, Deactivated or Compromised keys decrypt data",
                    s.map(|s| s.to_string())
                        .unwrap_or_else(|| "of unknown state (the server reported none)".into())
                )))
            }
        }
        check_aes(&attrs, group, Some(cipher.key_bits))?;
        match key {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                let state = attrs.state.map(|s| s.to_string()).unwrap_or_default();
                if let Some(m) = fallback(&format!("the server refuses Get ({state})"))? {
                    return Ok(Some(m));
                }
                Err(Error::Key(format!(
                    "{e}. The key is {state}: some servers refuse Get on revoked keys; fetch keys before revoking them, or give a backup with --keyring"
                )))
            }
        }
    }
}
