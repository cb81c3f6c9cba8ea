//! DSE local key files (`secret_key_file`, FORMAT.md 2.4): `<cipher>:<strength>:<base64 key>` a line.

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use super::{check_private, read_regular, KeyId, KeyMaterial, KeySource};
use crate::crypto::CipherSpec;
use crate::error::{Error, Result};

pub struct KeyFile {
    entries: Vec<(String, u32, Zeroizing<Vec<u8>>)>,
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<KeyFile> {
        let (meta, text) =
            read_regular(path, "key file", 1 << 20).map_err(|e| Error::Key(e.into()))?;
        check_private(path, &meta)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &[u8], path: &Path) -> Result<KeyFile> {
        let bad = |n: usize, why: &str| {
            Error::Key(format!(
                "key file {} line {n}: {why}; expected <cipher_algorithm>:<strength>:<base64 key>, e.g. AES/CBC/PKCS5Padding:128:<key>",
                path.display()
            ))
        };
        let text = std::str::from_utf8(text).map_err(|_| bad(1, "not text"))?;
        let mut entries = Vec::new();
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, raw) in lines.iter().enumerate() {
            let line = raw.trim_end_matches('\r').trim();
            if line.is_empty() {
                // DSE's loader stops at a blank line: a key after one is invisible to DSE.
                if lines[i + 1..].iter().any(|l| !l.trim().is_empty()) {
                    return Err(bad(
                        i + 1,
                        "blank line before more keys (DSE stops reading there)",
                    ));
                }
                continue;
            }
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 3 {
                return Err(bad(i + 1, "not three ':'-separated fields"));
            }
            let bits: u32 = fields[1]
                .parse()
                .map_err(|_| bad(i + 1, "strength is not a number"))?;
            let key = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(fields[2])
                    .map_err(|_| bad(i + 1, "key is not base64"))?,
            );
            if key.len() as u32 * 8 != bits {
                return Err(bad(
                    i + 1,
                    &format!("the key is {} bits, the line says {bits}", key.len() * 8),
                ));
            }
            entries.push((fields[0].to_string(), bits, key));
        }
        Ok(KeyFile { entries })
    }

    /// The key for a table's cipher: the line whose first two fields equal them (case-sensitively).
    pub fn get(&self, transformation: &str, bits: u32) -> Option<KeyMaterial> {
        self.entries
            .iter()
            .find(|(t, b, _)| t == transformation && *b == bits)
            .map(|(_, _, k)| KeyMaterial::new(k.clone()))
    }
}

/// Key files are read on demand by path: any `file:` id can be resolved by reading that file.
pub struct KeyFiles;

impl KeySource for KeyFiles {
    fn describe(&self) -> String {
        "DSE key files".into()
    }

    fn fetch(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Option<KeyMaterial>> {
        match id {
            KeyId::File(path) => KeyFile::load(path)?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_line_by_cipher_and_strength() {
        let f = KeyFile::parse(
            b"AES/CBC/PKCS5Padding:128:AAAAAAAAAAAAAAAAAAAAAA==\nAES/ECB/PKCS5Padding:128:AQEBAQEBAQEBAQEBAQEBAQ==\n",
            Path::new("k"),
        )
        .unwrap();
        assert_eq!(
            f.get("AES/ECB/PKCS5Padding", 128).unwrap().expose(),
            &[1u8; 16]
        );
        assert!(f.get("AES/CBC/PKCS5Padding", 256).is_none());
        assert!(f.get("aes/cbc/pkcs5padding", 128).is_none());
    }

    #[test]
    fn malformed_files_are_refused() {
        for bad in [
            &b"AES/CBC/PKCS5Padding:128\n"[..],
            b"AES/CBC/PKCS5Padding:128:not base64!\n",
            b"AES/CBC/PKCS5Padding:256:AAAAAAAAAAAAAAAAAAAAAA==\n",
            b"AES/CBC/PKCS5Padding:128:AAAAAAAAAAAAAAAAAAAAAA==\n\nAES/ECB/PKCS5Padding:128:AQEBAQEBAQEBAQEBAQEBAQ==\n",
        ] {
            let e = KeyFile::parse(bad, Path::new("k")).err().expect("refused");
            assert!(!e.to_string().contains("AAAAAAAA"), "key bytes leaked: {e}");
        }
    }
}
