//! The offline keyring: `<key id>:<base64 key>` a line (split at the last `:`), mode 0600.
//! Resolves KMIP ids and replicated-key UUIDs where no KMIP server is reachable (tests, air gaps).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroize::Zeroizing;

use super::{check_private, read_regular, KeyId, KeyMaterial, KeySource};
use crate::crypto::envelope::uuid_string;
use crate::crypto::CipherSpec;
use crate::error::{Error, Result};

pub struct Keyring {
    path: PathBuf,
    keys: HashMap<String, Zeroizing<Vec<u8>>>,
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring> {
        let (meta, text) =
            read_regular(path, "keyring", 16 << 20).map_err(|e| Error::Key(e.into()))?;
        check_private(path, &meta)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &[u8], path: &Path) -> Result<Keyring> {
        let bad = |n: usize, why: &str| {
            Error::Key(format!(
                "keyring {} line {n}: {why}; expected <key id>:<base64 key>",
                path.display()
            ))
        };
        let text = std::str::from_utf8(text).map_err(|_| bad(1, "not text"))?;
        let mut keys = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, b64) = line.rsplit_once(':').ok_or_else(|| bad(i + 1, "no ':'"))?;
            if id.is_empty() {
                return Err(bad(i + 1, "empty key id"));
            }
            let key = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| bad(i + 1, "key is not base64"))?,
            );
            if !matches!(key.len(), 16 | 24 | 32) {
                return Err(bad(
                    i + 1,
                    &format!("a {}-bit key is not an AES key", key.len() * 8),
                ));
            }
            if keys.insert(id.to_string(), key).is_some() {
                return Err(bad(i + 1, &format!("key id {id} appears twice")));
            }
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
        })
    }
}

impl KeySource for Keyring {
    fn describe(&self) -> String {
        format!("keyring {}", self.path.display())
    }

    fn fetch(&self, id: &KeyId, _cipher: &CipherSpec) -> Result<Option<KeyMaterial>> {
        let name = match id {
            // By id: a keyring line names no group (chunk headers name none either).
            KeyId::Kmip { id, .. } => id.clone(),
            KeyId::Replicated(u) => uuid_string(u),
            KeyId::File(_) => return Ok(None),
        };
        Ok(self.keys.get(&name).map(|k| KeyMaterial::new(k.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_last_colon() {
        let r = Keyring::parse(
            b"# test\ngroup:a:b:AAAAAAAAAAAAAAAAAAAAAA==\n",
            Path::new("r"),
        )
        .unwrap();
        let spec = CipherSpec::from_options(None, None, None).unwrap();
        assert!(r
            .fetch(
                &KeyId::Kmip {
                    group: "g".into(),
                    id: "group:a:b".into()
                },
                &spec
            )
            .unwrap()
            .is_some());
        assert!(r
            .fetch(
                &KeyId::Kmip {
                    group: "g".into(),
                    id: "group".into()
                },
                &spec
            )
            .unwrap()
            .is_none());
        assert!(Keyring::parse(b"x:AAAA\n", Path::new("r")).is_err());
    }
}
