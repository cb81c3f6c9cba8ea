//! `kmip://GROUP/ID` resolved against a KMIP server, with the key-state rules of a rekey:
//! - keys read from chunk headers (old keys) must be Active, Deactivated or Compromised; a Destroyed
//!   or missing one is an error (its data cannot be read without a backup of the key);
//! - the new key must be Active and AES (its length is checked against each table's strength by
//!   [`crate::keys::KeyStore`]);
//! - `kmip://GROUP/active` is the Active AES key of the wanted length (Locate), found the way the
//!   tables' database finds it ([`LocateAs`]: DSE's, or ScyllaDB's with the usage mask and
//!   `x-key-namespace`).
//!
//! A key is its group and its id (the group of an old key is the table's `kmip_host`, carried in
//! its [`KeyId`]). One client, hence one connection, per group for the whole run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::client::{attribute, Attributes, Client, KEY_NAMESPACE, USAGE_MASK};
use super::config::KmipConfig;
use super::error::KmipError;
use super::ttlv::{Item, Value};
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

    /// `kmip://GROUP/active`: the Active AES key `want` describes, found the way the tables'
    /// database finds it ([`LocateAs`]); the most recently activated (else created) one when
    /// there are several. `None` when there is none.
    pub fn locate_active(&self, group: &str, want: &ActiveWant) -> Result<Option<Attributes>> {
        let ids = self.with_client(group, |c| c.locate(want.locate_filter()))?;
        // Check what Locate found: a server may ignore filters it does not support, and
        // x-key-namespace is not in the filter at all (see `locate_filter`).
        let attrs = self.with_client(group, |c| c.attributes_with(&ids, want.extra_names()))?;
        let mut fit = Vec::new();
        for a in attrs {
            match a {
                Ok(a) if want.fits(&a) => fit.push(a),
                Ok(_) => {}
                // Destroyed between Locate and Get Attributes: no longer a candidate.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        fit.sort_by_key(|a| (a.activation_date.or(a.initial_date), a.id.clone()));
        Ok(fit.pop())
    }
}

impl KmipSource {
    /// A key just created for `want` must read back as `want` asks: a server that dropped an
    /// attribute (say `x-key-namespace`) made a key the tables' database would not find.
    pub fn check_created(&self, group: &str, id: &str, want: &ActiveWant) -> Result<()> {
        let a = self
            .with_client(group, |c| {
                c.attributes_with(&[id.to_string()], want.extra_names())
            })?
            .pop()
            .expect("one result")?;
        if want.fits(&a) {
            return Ok(());
        }
        let (aes, more) = want.describe();
        Err(Error::Key(format!(
            "created and activated KMIP key {group}/{id}, but the server does not report it as an Active {aes} key{more}, so the database would not find it: revoke and destroy it (`sstable-rekey kmip revoke`, `kmip destroy`), and make the key with the server's own tools"
        )))
    }
}

/// How `kmip://GROUP/active` looks for its key: as the database of the tables does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateAs {
    /// DSE: Locate on Object Type Symmetric Key, Cryptographic Algorithm AES, Cryptographic
    /// Length and State Active.
    Dse,
    /// ScyllaDB (FORMAT.md 4.4): DSE's attributes plus Cryptographic Usage Mask Encrypt|Decrypt
    /// and, when the tables' `key_namespace` is set (not empty), the text attribute
    /// `x-key-namespace` equal to it. A key it creates carries the same.
    Scylla { key_namespace: Option<String> },
}

/// The key `kmip://GROUP/active` stands for: AES of `bits` bits, found as `how` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveWant {
    pub bits: u32,
    pub how: LocateAs,
}

/// Encrypt|Decrypt, what ScyllaDB asks of (and gives to) its keys.
const SCYLLA_USAGE: i32 = super::USAGE_ENCRYPT | super::USAGE_DECRYPT;

impl ActiveWant {
    pub fn dse(bits: u32) -> ActiveWant {
        ActiveWant {
            bits,
            how: LocateAs::Dse,
        }
    }

    /// The table's `key_namespace`, when ScyllaDB's Locate filters on it.
    pub fn key_namespace(&self) -> Option<&str> {
        match &self.how {
            LocateAs::Scylla { key_namespace } => {
                key_namespace.as_deref().filter(|n| !n.is_empty())
            }
            LocateAs::Dse => None,
        }
    }

    /// The Locate filter sent. `x-key-namespace` is left out and checked on the Get Attributes
    /// answer instead: PyKMIP 0.11 fails a whole Locate naming a custom attribute (General
    /// Failure), and a server that ignored it would still be caught by [`ActiveWant::fits`].
    fn locate_filter(&self) -> Vec<Item> {
        let mut f = vec![
            attribute("Object Type", Value::Enumeration(OBJECT_TYPE_SYMMETRIC_KEY)),
            attribute("Cryptographic Algorithm", Value::Enumeration(ALGORITHM_AES)),
            attribute("Cryptographic Length", Value::Integer(self.bits as i32)),
            attribute("State", Value::Enumeration(State::Active.code())),
        ];
        if let LocateAs::Scylla { .. } = self.how {
            f.push(attribute(USAGE_MASK, Value::Integer(SCYLLA_USAGE)));
        }
        f
    }

    /// The attributes Get Attributes must also return to judge a key.
    fn extra_names(&self) -> &'static [&'static str] {
        match self.how {
            LocateAs::Dse => &[],
            LocateAs::Scylla { .. } => &[USAGE_MASK, KEY_NAMESPACE],
        }
    }

    /// Whether the key with attributes `a` is one the tables' database would find.
    pub fn fits(&self, a: &Attributes) -> bool {
        let dse = a.state == Some(State::Active)
            && a.algorithm == Some(ALGORITHM_AES)
            && a.length == Some(self.bits as i32);
        match self.how {
            LocateAs::Dse => dse,
            LocateAs::Scylla { .. } => {
                dse && a
                    .usage_mask
                    .is_some_and(|m| m & SCYLLA_USAGE == SCYLLA_USAGE)
                    && self
                        .key_namespace()
                        .is_none_or(|n| a.key_namespace.as_deref() == Some(n))
            }
        }
    }

    /// The text attributes a created key gets.
    pub fn create_texts(&self) -> Vec<(&'static str, &str)> {
        self.key_namespace()
            .map(|n| vec![(KEY_NAMESPACE, n)])
            .unwrap_or_default()
    }

    /// For messages: `AES-128`, then what else ScyllaDB asks (` with usage Encrypt|Decrypt…`).
    pub fn describe(&self) -> (String, String) {
        let aes = format!("AES-{}", self.bits);
        let more = match (&self.how, self.key_namespace()) {
            (LocateAs::Dse, _) => String::new(),
            (LocateAs::Scylla { .. }, None) => " with usage Encrypt|Decrypt".into(),
            (LocateAs::Scylla { .. }, Some(n)) => {
                format!(" with usage Encrypt|Decrypt and {KEY_NAMESPACE} {n:?}")
            }
        };
        (aes, more)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::kmip::tag;

    /// A Get Attributes answer as a server sends it.
    fn answer(attrs: Vec<Item>) -> Attributes {
        let mut p = vec![Item::text(tag::UNIQUE_IDENTIFIER, "k")];
        p.extend(attrs);
        super::super::client::parse_attributes(&Item::structure(tag::RESPONSE_PAYLOAD, p), "k")
            .unwrap()
    }

    fn key(bits: i32, mask: Option<i32>, ns: Option<&str>) -> Attributes {
        let mut a = vec![
            attribute("State", Value::Enumeration(State::Active.code())),
            attribute("Cryptographic Algorithm", Value::Enumeration(ALGORITHM_AES)),
            attribute("Cryptographic Length", Value::Integer(bits)),
        ];
        if let Some(m) = mask {
            a.push(attribute(USAGE_MASK, Value::Integer(m)));
        }
        if let Some(n) = ns {
            a.push(attribute(KEY_NAMESPACE, Value::Text(n.into())));
        }
        answer(a)
    }

    fn scylla(bits: u32, ns: Option<&str>) -> ActiveWant {
        ActiveWant {
            bits,
            how: LocateAs::Scylla {
                key_namespace: ns.map(str::to_string),
            },
        }
    }

    #[test]
    fn scylla_wants_the_usage_mask_and_the_namespace_dse_neither() {
        let dse = ActiveWant::dse(128);
        assert!(dse.fits(&key(128, None, None)));
        assert!(dse.fits(&key(128, Some(0), Some("x"))));
        assert!(!dse.fits(&key(256, Some(12), None)));

        let s = scylla(128, None);
        assert!(s.fits(&key(128, Some(12), None)));
        assert!(
            s.fits(&key(128, Some(12 | 0x1), Some("any"))),
            "no namespace asked"
        );
        assert!(!s.fits(&key(128, None, None)), "no usage mask");
        assert!(!s.fits(&key(128, Some(4), None)), "Encrypt only");
        assert!(!s.fits(&key(192, Some(12), None)), "wrong length");

        let n = scylla(128, Some("ns1"));
        assert!(n.fits(&key(128, Some(12), Some("ns1"))));
        assert!(!n.fits(&key(128, Some(12), Some("ns2"))), "wrong namespace");
        assert!(!n.fits(&key(128, Some(12), None)), "no namespace");
        assert!(!n.fits(&key(128, None, Some("ns1"))), "no usage mask");

        // ScyllaDB treats an empty key_namespace as unset.
        assert_eq!(scylla(128, Some("")).key_namespace(), None);
        assert!(scylla(128, Some("")).fits(&key(128, Some(12), Some("other"))));
    }

    #[test]
    fn scylla_locate_filter_and_created_attributes() {
        let names = |w: &ActiveWant| -> Vec<String> {
            w.locate_filter()
                .iter()
                .map(|a| {
                    a.child(tag::ATTRIBUTE_NAME)
                        .and_then(Item::as_text)
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let base = [
            "Object Type",
            "Cryptographic Algorithm",
            "Cryptographic Length",
            "State",
        ];
        assert_eq!(names(&ActiveWant::dse(128)), base);
        let mut with_mask = base.map(str::to_string).to_vec();
        with_mask.push(USAGE_MASK.into());
        assert_eq!(names(&scylla(128, Some("ns1"))), with_mask);
        let mask = scylla(128, None).locate_filter()[4]
            .child(tag::ATTRIBUTE_VALUE)
            .and_then(Item::as_int);
        assert_eq!(mask, Some(12));
        assert!(ActiveWant::dse(128).extra_names().is_empty());
        assert_eq!(
            scylla(128, Some("ns1")).create_texts(),
            vec![(KEY_NAMESPACE, "ns1")]
        );
        assert!(scylla(128, None).create_texts().is_empty());
        assert_eq!(
            scylla(128, Some("ns1")).describe().1,
            " with usage Encrypt|Decrypt and x-key-namespace \"ns1\""
        );
        assert_eq!(
            ActiveWant::dse(192).describe(),
            ("AES-192".into(), String::new())
        );
    }

    #[test]
    fn a_namespace_of_another_type_is_an_error_not_a_match() {
        let p = Item::structure(
            tag::RESPONSE_PAYLOAD,
            vec![attribute(KEY_NAMESPACE, Value::Integer(1))],
        );
        assert!(super::super::client::parse_attributes(&p, "k").is_err());
    }
}
