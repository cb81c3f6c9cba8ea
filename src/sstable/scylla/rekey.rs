//! The Scylla.db a rekey writes (FORMAT.md 4.7): only the ExtensionAttributes (tag 3) payload
//! changes. In it, `scylla_encryption_options` becomes the target's options, `scylla_key_id` is set
//! (KMIP) or removed (local), `encrypted_components` and every other attribute stay as they were.
//!
//! Pair order: the options keep their position in the map; a KMIP key id replaces the old one
//! where it stands, or is appended after the last pair when the old SSTable had none (ScyllaDB
//! reads the map into a hash map, so the order carries no meaning; keeping it keeps the diff to
//! the changed values). Every other entry is written back byte for byte in its place; the
//! trailing CRC is recomputed when the file has one.

use crate::error::Malformed;

use super::attributes::{EncryptionOptions, ATTR_KEY_ID, ATTR_OPTIONS};
use super::key_id::encode_kmip_id;
use super::metadata::ScyllaMetadata;
use super::options::{KeySource, KeySpec, ScyllaCipher, KMIP_PROVIDER, LOCAL_PROVIDER};

/// The key an SSTable is rewritten with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RekeyTarget {
    /// A local key file: an absolute path, the same on every node, that already holds the
    /// `cipher_algorithm:secret_key_strength:base64` line (checking that is the caller's).
    Local {
        secret_key_file: String,
        cipher_algorithm: String,
        secret_key_strength: u32,
    },
    /// A KMIP key: the `kmip_hosts` group configured on every node, and the key's unique
    /// identifier; its length must equal the strength (checking that is the caller's).
    Kmip {
        kmip_host: String,
        key_id: String,
        cipher_algorithm: String,
        secret_key_strength: u32,
    },
}

impl RekeyTarget {
    /// The new `scylla_encryption_options` and `scylla_key_id` (`None`: remove it).
    ///
    /// Local: `key_provider`, `secret_key_file`, `cipher_algorithm`, `secret_key_strength`;
    /// KMIP: `key_provider`, `kmip_host`, `cipher_algorithm`, `secret_key_strength`. Options of
    /// the old SSTable are not carried: they describe the old key.
    ///
    /// Refused: a cipher or strength [`ScyllaCipher`] refuses; a relative or empty
    /// `secret_key_file` (ScyllaDB would resolve it against its working directory); an empty
    /// `kmip_host`; a KMIP id [`encode_kmip_id`] refuses.
    pub fn attributes(&self) -> Result<(EncryptionOptions, Option<Vec<u8>>), Malformed> {
        let (cipher, bits) = match self {
            RekeyTarget::Local {
                cipher_algorithm,
                secret_key_strength,
                ..
            }
            | RekeyTarget::Kmip {
                cipher_algorithm,
                secret_key_strength,
                ..
            } => (cipher_algorithm, secret_key_strength.to_string()),
        };
        ScyllaCipher::from_options(Some(cipher), Some(&bits))
            .map_err(|m| Malformed(format!("rekey target: {m}")))?;
        match self {
            RekeyTarget::Local {
                secret_key_file, ..
            } => {
                if !secret_key_file.starts_with('/') {
                    return Err(Malformed(format!(
                        "rekey target: secret_key_file {secret_key_file:?} is not an absolute path \
                         (ScyllaDB resolves a relative one against its working directory)"
                    )));
                }
                let options = EncryptionOptions::from_pairs([
                    ("key_provider", LOCAL_PROVIDER),
                    ("secret_key_file", secret_key_file.as_str()),
                    ("cipher_algorithm", cipher.as_str()),
                    ("secret_key_strength", bits.as_str()),
                ])?;
                Ok((options, None))
            }
            RekeyTarget::Kmip {
                kmip_host, key_id, ..
            } => {
                if kmip_host.is_empty() {
                    return Err(Malformed("rekey target: kmip_host is empty".into()));
                }
                let id =
                    encode_kmip_id(key_id).map_err(|m| Malformed(format!("rekey target: {m}")))?;
                let options = EncryptionOptions::from_pairs([
                    ("key_provider", KMIP_PROVIDER),
                    ("kmip_host", kmip_host.as_str()),
                    ("cipher_algorithm", cipher.as_str()),
                    ("secret_key_strength", bits.as_str()),
                ])?;
                Ok((options, Some(id)))
            }
        }
    }
}

impl RekeyTarget {
    /// Whether an SSTable whose attributes read as `spec` is under this target's key.
    fn is_read_as(&self, spec: &KeySpec) -> bool {
        let (source, cipher, bits) = match self {
            RekeyTarget::Local {
                secret_key_file,
                cipher_algorithm,
                secret_key_strength,
            } => (
                KeySource::Local {
                    secret_key_file: Some(secret_key_file.clone()),
                },
                cipher_algorithm,
                *secret_key_strength,
            ),
            RekeyTarget::Kmip {
                kmip_host,
                key_id,
                cipher_algorithm,
                secret_key_strength,
            } => (
                KeySource::Kmip {
                    kmip_host: kmip_host.clone(),
                    key_id: key_id.clone(),
                },
                cipher_algorithm,
                *secret_key_strength,
            ),
        };
        spec.source == source
            && spec.cipher.algorithm == *cipher
            && spec.cipher.key_bits == bits
            && spec.ignored_key_id.is_none()
    }
}

impl ScyllaMetadata {
    /// This Scylla.db naming `target`'s key instead: see the module's notes for what changes.
    ///
    /// Refused: no ExtensionAttributes, encryption attributes that do not decode (missing mask,
    /// refused bits, bad options), no `scylla_encryption_options` (Data.db is not encrypted:
    /// nothing to rekey), and the target's own refusals ([`RekeyTarget::attributes`]).
    pub fn rekeyed(&self, target: &RekeyTarget) -> Result<ScyllaMetadata, Malformed> {
        let Some(old) = self.extension_attributes() else {
            return Err(Malformed(
                "no ExtensionAttributes entry (tag 3): no encryption attributes to rewrite".into(),
            ));
        };
        let Some(enc) = old.encryption()? else {
            return Err(Malformed(
                "ExtensionAttributes has no encryption attributes: the SSTable is not encrypted"
                    .into(),
            ));
        };
        if enc.options.is_none() {
            return Err(Malformed(
                "no scylla_encryption_options: Data.db is not encrypted, nothing to rekey".into(),
            ));
        }
        let (options, key_id) = target.attributes()?;
        let mut new = old.clone();
        new.set(ATTR_OPTIONS, options.serialize());
        match key_id {
            Some(id) => new.set(ATTR_KEY_ID, id),
            None => new.remove(ATTR_KEY_ID),
        }
        // What we write must read back as the target, with the same mask.
        let reads_back = new
            .encryption()
            .ok()
            .flatten()
            .filter(|c| c.mask == enc.mask)
            .and_then(|c| KeySpec::from_attributes(&c).ok())
            .is_some_and(|spec| target.is_read_as(&spec));
        if !reads_back {
            return Err(Malformed(format!(
                "internal: the rewritten ExtensionAttributes do not read back as {target:?} with \
                 encrypted_components {:#x}",
                enc.mask.bits()
            )));
        }
        let mut out = self.clone();
        out.set_extension_attributes(new)?;
        Ok(out)
    }
}

/// Parses a Scylla.db, rewrites it for `target` ([`ScyllaMetadata::rekeyed`]) and serializes it.
pub fn rekey_scylla_db(old: &[u8], target: &RekeyTarget) -> Result<Vec<u8>, Malformed> {
    Ok(ScyllaMetadata::parse(old)?.rekeyed(target)?.serialize())
}
