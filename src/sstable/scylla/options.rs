//! What `scylla_encryption_options` say about the key (FORMAT.md 4.2, 4.4): the provider, the
//! cipher and strength, and where the key comes from. Every refusal names the option it is about.

use crate::error::Malformed;

use super::attributes::{EncryptionAttributes, EncryptionOptions};
use super::key_id::{decode_kmip_id, replicated_key_uuid, uuid_to_string};
use super::wire::show;

/// The package prefix ScyllaDB ignores in provider names.
pub const PROVIDER_PREFIX: &str = "com.datastax.bdp.cassandra.crypto.";
pub const LOCAL_PROVIDER: &str = "LocalFileSystemKeyProviderFactory";
pub const KMIP_PROVIDER: &str = "KmipKeyProviderFactory";
/// `cipher_algorithm` when absent.
pub const DEFAULT_CIPHER: &str = "AES/CBC/PKCS5Padding";

/// The key provider (`encryption.cc` `get_provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// `LocalFileSystemKeyProviderFactory`, also when neither option names a provider.
    Local,
    Kmip,
    /// `ReplicatedKeyProviderFactory` (deprecated): keys wrapped in `system_replicated_keys`.
    Replicated,
    Kms,
    Gcp,
    Azure,
    /// `""` or `none`: no encryption.
    None,
    /// A name ScyllaDB does not have.
    Unknown,
}

/// The provider and its name as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub kind: ProviderKind,
    /// `key_provider`, else `secret_key_provider_factory_class`, as written; `None` if neither is set.
    pub written: Option<String>,
}

impl Provider {
    pub fn from_options(options: &EncryptionOptions) -> Provider {
        let written = options
            .get("key_provider")
            .or_else(|| options.get("secret_key_provider_factory_class"));
        let kind = match written {
            None => ProviderKind::Local,
            Some(p) if p.is_empty() || p.eq_ignore_ascii_case("none") => ProviderKind::None,
            Some(p) => match p.strip_prefix(PROVIDER_PREFIX).unwrap_or(p) {
                LOCAL_PROVIDER => ProviderKind::Local,
                KMIP_PROVIDER => ProviderKind::Kmip,
                "ReplicatedKeyProviderFactory" => ProviderKind::Replicated,
                "KmsKeyProviderFactory" => ProviderKind::Kms,
                "GcpKeyProviderFactory" => ProviderKind::Gcp,
                "AzureKeyProviderFactory" => ProviderKind::Azure,
                _ => ProviderKind::Unknown,
            },
        };
        Provider {
            kind,
            written: written.map(str::to_string),
        }
    }

    /// How a message names it: `key_provider "X"` or `key_provider (absent: LocalFileSystem...)`.
    fn describe(&self) -> String {
        match &self.written {
            Some(p) => format!("key_provider {}", show(p.as_bytes())),
            None => format!("key_provider (absent: {LOCAL_PROVIDER})"),
        }
    }
}

/// The file cipher mode: AES in CBC (with ESSIV) or ECB over 4096-byte blocks (FORMAT.md 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherMode {
    Cbc,
    Ecb,
}

/// `cipher_algorithm` and `secret_key_strength`, checked (FORMAT.md 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaCipher {
    /// `cipher_algorithm` as written (or the default): local key files are matched on this text,
    /// case-sensitively.
    pub algorithm: String,
    pub mode: CipherMode,
    /// `secret_key_strength`: 128, 192 or 256.
    pub key_bits: u32,
}

impl ScyllaCipher {
    /// From the two options (`None` = absent). ScyllaDB reads `cipher_algorithm`
    /// case-insensitively as `TYPE[/MODE[/PADDING]]` (each part letters, digits, `_`), mode CBC
    /// by default, padding PKCS5, PKCS, PKCS7, No or empty, any of them with `Padding` after.
    /// Accepted here: AES with CBC or ECB only, 128, 192 or 256 bits.
    pub fn from_options(
        cipher_algorithm: Option<&str>,
        secret_key_strength: Option<&str>,
    ) -> Result<ScyllaCipher, Malformed> {
        let algorithm = cipher_algorithm.unwrap_or(DEFAULT_CIPHER);
        let shown = show(algorithm.as_bytes());
        let parts: Vec<&str> = algorithm.split('/').collect();
        let word =
            |p: &&str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if parts.len() > 3 || !parts.iter().all(word) {
            return Err(Malformed(format!(
                "cipher_algorithm {shown} is not TYPE[/MODE[/PADDING]]"
            )));
        }
        let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        if let Some(p) = lower.get(2) {
            let p = p.strip_suffix("padding").unwrap_or(p);
            if !matches!(p, "" | "no" | "pkcs5" | "pkcs" | "pkcs7") {
                return Err(Malformed(format!(
                    "cipher_algorithm {shown}: padding {} is not one ScyllaDB accepts \
                     (PKCS5, PKCS, PKCS7, No)",
                    show(parts[2].as_bytes())
                )));
            }
        }
        if lower[0] != "aes" {
            return Err(Malformed(format!(
                "cipher_algorithm {shown}: cipher {} is not supported (only AES)",
                show(parts[0].as_bytes())
            )));
        }
        let mode = match lower.get(1).map(String::as_str) {
            None | Some("cbc") => CipherMode::Cbc,
            Some("ecb") => CipherMode::Ecb,
            Some(_) => {
                return Err(Malformed(format!(
                    "cipher_algorithm {shown}: mode {} is not supported (only CBC and ECB)",
                    show(parts[1].as_bytes())
                )))
            }
        };
        let key_bits = match secret_key_strength {
            None => 128,
            Some(s) => match s {
                "128" => 128,
                "192" => 192,
                "256" => 256,
                _ => {
                    return Err(Malformed(format!(
                        "secret_key_strength {} is not 128, 192 or 256",
                        show(s.as_bytes())
                    )))
                }
            },
        };
        Ok(ScyllaCipher {
            algorithm: algorithm.to_string(),
            mode,
            key_bits,
        })
    }
}

/// Where the key of an SSTable comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The local provider reads only this file; `None`: no `secret_key_file`, so
    /// `<conf>/data_encryption_keys` of the server (FORMAT.md 4.4): resolving that is the caller's.
    Local { secret_key_file: Option<String> },
    /// KMIP: the `kmip_hosts` group and the unique identifier `scylla_key_id` names.
    Kmip { kmip_host: String, key_id: String },
}

/// What key an encrypted SSTable needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub provider: Provider,
    pub cipher: ScyllaCipher,
    pub source: KeySource,
    /// `scylla_key_id` of a local-provider SSTable, which ScyllaDB ignores (a rekey drops it).
    pub ignored_key_id: Option<Vec<u8>>,
}

impl KeySpec {
    /// The key an SSTable with these attributes is read with.
    ///
    /// Refused, each naming the option: an SSTable without options (Data.db is not encrypted: no
    /// key); `key_provider` none, unknown, replicated, KMS, GCP or Azure; a cipher or strength
    /// [`ScyllaCipher`] refuses; KMIP without `kmip_host`, without `scylla_key_id`, or with a key
    /// id that does not decode or has the replicated provider's shape.
    pub fn from_attributes(attrs: &EncryptionAttributes) -> Result<KeySpec, Malformed> {
        let Some(options) = &attrs.options else {
            return Err(Malformed(
                "no scylla_encryption_options: Data.db is not encrypted, no key to find".into(),
            ));
        };
        Self::from_options(options, attrs.key_id.as_deref())
    }

    /// The key that `options` with the provider id `key_id` (`scylla_key_id` of an SSTable, the
    /// `key_id` line of a commit log side file) name; refused as [`KeySpec::from_attributes`] says.
    pub fn from_options(
        options: &EncryptionOptions,
        key_id: Option<&[u8]>,
    ) -> Result<KeySpec, Malformed> {
        let provider = Provider::from_options(options);
        let refuse = |why: &str| {
            Err(Malformed(format!(
                "{}: refused: {why}",
                provider.describe()
            )))
        };
        match provider.kind {
            ProviderKind::Local | ProviderKind::Kmip => {}
            ProviderKind::Replicated => return refuse(
                "the replicated provider's keys live in system_replicated_keys.encrypted_keys, \
                     wrapped by the system key; an offline tool cannot read them",
            ),
            ProviderKind::Kms => return refuse("AWS KMS keys are not supported (yet)"),
            ProviderKind::Gcp => return refuse("GCP KMS keys are not supported (yet)"),
            ProviderKind::Azure => return refuse("Azure Key Vault keys are not supported (yet)"),
            ProviderKind::None => {
                return refuse(
                    "means no encryption to ScyllaDB, yet the SSTable carries \
                     scylla_encryption_options",
                )
            }
            ProviderKind::Unknown => return refuse("not a key provider ScyllaDB has"),
        }
        let cipher = ScyllaCipher::from_options(
            options.get("cipher_algorithm"),
            options.get("secret_key_strength"),
        )?;
        if provider.kind == ProviderKind::Local {
            return Ok(KeySpec {
                provider,
                cipher,
                source: KeySource::Local {
                    secret_key_file: options.get("secret_key_file").map(str::to_string),
                },
                ignored_key_id: key_id.map(<[u8]>::to_vec),
            });
        }
        let Some(kmip_host) = options.get("kmip_host") else {
            return refuse("no kmip_host option (ScyllaDB: \"kmip_host must be provided\")");
        };
        let Some(raw_id) = key_id else {
            return refuse(
                "no scylla_key_id attribute: ScyllaDB would read with whatever key a new write \
                 gets (Locate or Create), not a fixed one",
            );
        };
        if let Some(u) = replicated_key_uuid(raw_id) {
            return refuse(&format!(
                "scylla_key_id has the replicated provider's shape (00, UUID {}, MD5 of it)",
                uuid_to_string(&u)
            ));
        }
        let key_id = decode_kmip_id(raw_id)?;
        Ok(KeySpec {
            provider,
            cipher,
            source: KeySource::Kmip {
                kmip_host: kmip_host.to_string(),
                key_id,
            },
            ignored_key_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sstable::scylla::attributes::ComponentMask;

    fn spec(options: &[(&str, &str)], key_id: Option<&[u8]>) -> Result<KeySpec, Malformed> {
        KeySpec::from_attributes(&EncryptionAttributes {
            options: Some(EncryptionOptions::from_pairs(options.iter().copied()).unwrap()),
            key_id: key_id.map(<[u8]>::to_vec),
            mask: ComponentMask::new(0x1B3).unwrap(),
        })
    }

    #[test]
    fn ciphers_as_scylla_reads_them() {
        let c = ScyllaCipher::from_options(None, None).unwrap();
        assert_eq!(
            (c.algorithm.as_str(), c.mode, c.key_bits),
            (DEFAULT_CIPHER, CipherMode::Cbc, 128)
        );
        for (name, mode) in [
            ("AES", CipherMode::Cbc),
            ("aes/ecb", CipherMode::Ecb),
            ("AES/CBC/PKCS5Padding", CipherMode::Cbc),
            ("AES/ECB/NoPadding", CipherMode::Ecb),
            ("Aes/Cbc/pkcs7", CipherMode::Cbc),
            ("AES/CBC/PKCS", CipherMode::Cbc),
            ("AES/CBC/no", CipherMode::Cbc),
            ("AES/CBC/Padding", CipherMode::Cbc),
        ] {
            let c = ScyllaCipher::from_options(Some(name), Some("192")).unwrap();
            assert_eq!((c.mode, c.key_bits), (mode, 192), "{name}");
            assert_eq!(c.algorithm, name);
        }
        for (name, what) in [
            ("AES/CTR/NoPadding", "mode"),
            ("AES/CFB", "mode"),
            ("AES/OFB/PKCS5Padding", "mode"),
            ("Blowfish/CBC/PKCS5Padding", "only AES"),
            ("DES", "only AES"),
            ("AES/CBC/ISO10126Padding", "padding"),
            ("AES/CBC/PKCS5Padding/x", "TYPE[/MODE[/PADDING]]"),
            ("AES//PKCS5Padding", "TYPE[/MODE[/PADDING]]"),
            ("AES-128/CBC", "TYPE[/MODE[/PADDING]]"),
            ("", "TYPE[/MODE[/PADDING]]"),
        ] {
            let e = ScyllaCipher::from_options(Some(name), None).unwrap_err();
            assert!(
                e.contains("cipher_algorithm") && e.contains(what),
                "{name}: {e}"
            );
        }
        for s in ["64", "512", "", " 128", "0x80", "abc"] {
            let e = ScyllaCipher::from_options(None, Some(s)).unwrap_err();
            assert!(e.contains("secret_key_strength"), "{s}: {e}");
        }
    }

    #[test]
    fn providers_by_name() {
        let kind = |o: &[(&str, &str)]| {
            Provider::from_options(&EncryptionOptions::from_pairs(o.iter().copied()).unwrap()).kind
        };
        assert_eq!(kind(&[]), ProviderKind::Local);
        assert_eq!(
            kind(&[("key_provider", "KmipKeyProviderFactory")]),
            ProviderKind::Kmip
        );
        assert_eq!(
            kind(&[(
                "key_provider",
                "com.datastax.bdp.cassandra.crypto.KmipKeyProviderFactory"
            )]),
            ProviderKind::Kmip
        );
        assert_eq!(
            kind(&[(
                "secret_key_provider_factory_class",
                "ReplicatedKeyProviderFactory"
            )]),
            ProviderKind::Replicated
        );
        // key_provider wins over the older name.
        assert_eq!(
            kind(&[
                ("key_provider", "LocalFileSystemKeyProviderFactory"),
                (
                    "secret_key_provider_factory_class",
                    "KmipKeyProviderFactory"
                )
            ]),
            ProviderKind::Local
        );
        assert_eq!(kind(&[("key_provider", "")]), ProviderKind::None);
        assert_eq!(kind(&[("key_provider", "None")]), ProviderKind::None);
        assert_eq!(
            kind(&[("key_provider", "KmsKeyProviderFactory")]),
            ProviderKind::Kms
        );
        assert_eq!(
            kind(&[("key_provider", "GcpKeyProviderFactory")]),
            ProviderKind::Gcp
        );
        assert_eq!(
            kind(&[("key_provider", "AzureKeyProviderFactory")]),
            ProviderKind::Azure
        );
        assert_eq!(
            kind(&[("key_provider", "kmipkeyproviderfactory")]),
            ProviderKind::Unknown
        );
    }

    #[test]
    fn local_and_kmip_key_sources() {
        let s = spec(
            &[("secret_key_file", "/etc/scylla/keys/k1")],
            Some(b"stale\x01"),
        )
        .unwrap();
        assert_eq!(s.provider.kind, ProviderKind::Local);
        assert_eq!(
            s.source,
            KeySource::Local {
                secret_key_file: Some("/etc/scylla/keys/k1".into())
            }
        );
        assert_eq!(s.ignored_key_id.as_deref(), Some(&b"stale\x01"[..]));
        assert_eq!(s.cipher.key_bits, 128);

        let s = spec(
            &[
                ("key_provider", "KmipKeyProviderFactory"),
                ("kmip_host", "kmip1"),
                ("cipher_algorithm", "AES/ECB/PKCS5Padding"),
                ("secret_key_strength", "256"),
            ],
            Some(b"1\x01"),
        )
        .unwrap();
        assert_eq!(
            s.source,
            KeySource::Kmip {
                kmip_host: "kmip1".into(),
                key_id: "1".into()
            }
        );
        assert_eq!((s.cipher.mode, s.cipher.key_bits), (CipherMode::Ecb, 256));
    }

    #[test]
    fn refusals_name_the_option() {
        let kmip = ("key_provider", "KmipKeyProviderFactory");
        for (opts, id, want) in [
            (vec![kmip], Some(&b"1\x01"[..]), "no kmip_host"),
            (vec![kmip, ("kmip_host", "h")], None, "no scylla_key_id"),
            (
                vec![kmip, ("kmip_host", "h")],
                Some(&b"1\x05"[..]),
                "scylla_key_id",
            ),
            (
                vec![("key_provider", "ReplicatedKeyProviderFactory")],
                None,
                "system_replicated_keys",
            ),
            (
                vec![("key_provider", "KmsKeyProviderFactory")],
                None,
                "AWS KMS",
            ),
            (
                vec![("key_provider", "GcpKeyProviderFactory")],
                None,
                "GCP KMS",
            ),
            (
                vec![("key_provider", "AzureKeyProviderFactory")],
                None,
                "Azure",
            ),
            (vec![("key_provider", "none")], None, "no encryption"),
            (vec![("key_provider", "Foo")], None, "not a key provider"),
            (
                vec![("cipher_algorithm", "AES/CTR/NoPadding")],
                None,
                "cipher_algorithm",
            ),
            (
                vec![("secret_key_strength", "512")],
                None,
                "secret_key_strength",
            ),
        ] {
            let e = spec(&opts, id).unwrap_err();
            assert!(e.contains(want), "{opts:?}: {e}");
        }
        // A replicated-shaped id under KMIP is refused by name (MD5 of 16 x 0f from hashlib).
        let mut rep = vec![0u8];
        rep.extend_from_slice(&[0x0f; 16]);
        rep.extend_from_slice(&[
            0x1c, 0x01, 0x13, 0x09, 0xf4, 0x05, 0x94, 0x6f, 0x1d, 0xf8, 0x26, 0x60, 0x43, 0x13,
            0xb4, 0xe6,
        ]);
        assert!(replicated_key_uuid(&rep).is_some(), "test vector");
        let e = spec(&[kmip, ("kmip_host", "h")], Some(&rep)).unwrap_err();
        assert!(e.contains("replicated provider's shape"), "{e}");
        let e = KeySpec::from_attributes(&EncryptionAttributes {
            options: None,
            key_id: None,
            mask: ComponentMask::new(0).unwrap(),
        })
        .unwrap_err();
        assert!(e.contains("not encrypted"), "{e}");
    }
}
