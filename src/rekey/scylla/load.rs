//! Loading a ScyllaDB SSTable: its Scylla.db (4.5), the encryption attributes (4.6), the key they
//! name (4.4), and the component files that are encrypted (4.1) with their sizes. Nothing is
//! decrypted here.

use std::path::{Path, PathBuf};

use crate::crypto::cipher::{CipherSpec, Mode};
use crate::crypto::scylla::FileCipher;
use crate::error::{Error, Result};
use crate::keys::scylla_keyfile::ScyllaKeyFile;
use crate::keys::{KeyId, KeyMaterial, KeyStore};
use crate::rekey::find::Found;
use crate::sstable::scylla::{
    CipherMode, EncryptionAttributes, KeySource, KeySpec, ScyllaMetadata,
};
use crate::sstable::toc;
use crate::util::read_small;

/// Scylla.db is a few KiB; this bounds what a hostile one makes us read.
const MAX_SCYLLA_DB: u64 = 16 << 20;

/// One encrypted component file.
#[derive(Debug, Clone)]
pub struct EncryptedFile {
    pub component: String,
    /// Its size on disk (the ciphertext, FORMAT.md 4.3 length rule).
    pub file_len: u64,
}

/// A ScyllaDB SSTable with encryption attributes, read far enough to know its key.
#[derive(Debug)]
pub struct ScyllaLoaded {
    pub found: Found,
    pub toc: Vec<String>,
    pub metadata: ScyllaMetadata,
    pub encryption: EncryptionAttributes,
    pub spec: KeySpec,
    /// The key, as the rest of the tool names keys: `file:` the key file (by the path the options
    /// give, or the single `file:` key given when they name none), or `kmip://GROUP/ID`.
    pub key: KeyId,
    /// The cipher as a key lookup needs it (the key file line is chosen by the text of
    /// `cipher_algorithm` and the strength).
    pub cipher: CipherSpec,
    /// The encrypted component files, Data.db first, then in TOC order.
    pub files: Vec<EncryptedFile>,
}

impl ScyllaLoaded {
    /// Bytes of encrypted component files: what a rekey rewrites.
    pub fn encrypted_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.file_len).sum()
    }

    pub fn path(&self, component: &str) -> PathBuf {
        self.found.desc.path(component)
    }

    /// The raw key of this SSTable: a local key file read the way ScyllaDB reads it (FORMAT.md
    /// 4.4), a KMIP key through the store (its length must be the strength).
    pub fn material(&self, store: &KeyStore) -> Result<KeyMaterial> {
        key_material(&self.key, &self.spec.cipher.algorithm, &self.cipher, store)
    }

    /// The file cipher of this SSTable's key.
    pub fn file_cipher(&self, store: &KeyStore) -> Result<FileCipher> {
        self.cipher_of(&self.material(store)?, &self.key)
    }

    /// The file cipher of `material` for this SSTable's cipher and strength.
    pub fn cipher_of(&self, material: &KeyMaterial, id: &KeyId) -> Result<FileCipher> {
        FileCipher::new(
            material.expose(),
            self.spec.cipher.key_bits,
            self.cipher.mode,
        )
        .map_err(|m| Error::Key(format!("key {id}: {}", m.0)))
    }
}

/// The raw bytes of key `id` for a table whose options say `algorithm` (`cipher` with its
/// strength): a local key file's line for them, else the store's key.
pub fn key_material(
    id: &KeyId,
    algorithm: &str,
    cipher: &CipherSpec,
    store: &KeyStore,
) -> Result<KeyMaterial> {
    let bits = cipher.key_bits;
    match id {
        KeyId::File(p) => ScyllaKeyFile::load(p)?.get(algorithm, bits).ok_or_else(|| {
            Error::Key(format!(
                "key file {} has no {algorithm}:{bits} line. ScyllaDB generates a random key and rewrites the file when the line is missing: add the line on every node first",
                p.display()
            ))
        }),
        id => store.material(id, cipher),
    }
}

/// The SSTable as ScyllaDB encrypted it, or `None` when its Scylla.db has no encryption
/// attributes (then it is a plain SSTable: the ordinary path says so). `fallback` is the key of
/// an SSTable whose options name no `secret_key_file` (ScyllaDB would read its configuration
/// folder's `data_encryption_keys`, which this tool does not guess).
pub fn load(found: &Found, fallback: Option<&KeyId>) -> Result<Option<ScyllaLoaded>> {
    let path = found.desc.path("Scylla.db");
    let bytes = read_small(&path, MAX_SCYLLA_DB)?;
    let metadata = ScyllaMetadata::parse(&bytes).map_err(|m| Error::corrupt(&path, m.0))?;
    let Some(attrs) = metadata.extension_attributes() else {
        return Ok(None);
    };
    let Some(encryption) = attrs.encryption().map_err(|m| Error::corrupt(&path, m.0))? else {
        return Ok(None);
    };
    let spec = KeySpec::from_attributes(&encryption).map_err(|m| Error::unsupported(&path, m.0))?;
    let key = key_of(&spec, fallback, &path)?;
    let cipher = CipherSpec {
        transformation: spec.cipher.algorithm.clone(),
        mode: match spec.cipher.mode {
            CipherMode::Cbc => Mode::Cbc,
            CipherMode::Ecb => Mode::Ecb,
        },
        iv_len: 0,
        key_bits: spec.cipher.key_bits,
    };
    let toc_path = found.desc.path("TOC.txt");
    let toc = toc::read(&toc_path)?;
    let files = encrypted_files(found, &toc, &encryption)?;
    Ok(Some(ScyllaLoaded {
        found: found.clone(),
        toc,
        metadata,
        encryption,
        spec,
        key,
        cipher,
        files,
    }))
}

/// The key an SSTable's options name (also a commit log side file's: `path` is the file named in errors).
pub(crate) fn key_of(spec: &KeySpec, fallback: Option<&KeyId>, path: &Path) -> Result<KeyId> {
    match &spec.source {
        KeySource::Kmip { kmip_host, key_id } => Ok(KeyId::Kmip {
            group: kmip_host.clone(),
            id: key_id.clone(),
        }),
        KeySource::Local {
            secret_key_file: Some(f),
        } => {
            let p = Path::new(f);
            if p.is_absolute() {
                return Ok(KeyId::File(crate::keys::canonical(p)?));
            }
            fallback.cloned().ok_or_else(|| {
                Error::unsupported(
                    path,
                    format!("secret_key_file {f:?} is relative: ScyllaDB resolves it against its working directory, which this tool cannot know. Give the file as the only --from file:PATH (verify: --key file:PATH)"),
                )
            })
        }
        KeySource::Local {
            secret_key_file: None,
        } => fallback.cloned().ok_or_else(|| {
            Error::unsupported(
                path,
                "the options name no secret_key_file: ScyllaDB reads <its conf folder>/data_encryption_keys. Give that file as the only --from file:PATH (verify: --key file:PATH)",
            )
        }),
    }
}

/// The components whose files are encrypted (Data.db first), each present and listed in TOC.txt.
fn encrypted_files(
    found: &Found,
    toc: &[String],
    enc: &EncryptionAttributes,
) -> Result<Vec<EncryptedFile>> {
    let scylla = found.desc.path("Scylla.db");
    let mut names: Vec<&str> = Vec::new();
    for c in toc {
        let encrypted = enc
            .is_encrypted(c)
            .map_err(|m| Error::corrupt(&scylla, m.0))?;
        if encrypted {
            names.push(c);
        }
    }
    names.sort_by_key(|c| *c != "Data.db");
    if names.first() != Some(&"Data.db") {
        return Err(Error::corrupt(
            &scylla,
            "encryption options, but Data.db is not in TOC.txt",
        ));
    }
    names
        .into_iter()
        .map(|c| {
            let p = found.desc.path(c);
            let m = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, "stat", e))?;
            if !m.is_file() {
                return Err(Error::corrupt(&p, "not a regular file"));
            }
            Ok(EncryptedFile {
                component: c.to_string(),
                file_len: m.len(),
            })
        })
        .collect()
}
