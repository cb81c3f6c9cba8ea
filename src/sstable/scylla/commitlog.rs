//! The side file of a ScyllaDB commit log segment or hints file (FORMAT.md 4.10): `<dir>/.<name>`
//! beside segment `<dir>/<name>`, text, one `key=value` option a line (`^([^=]+)=(\S+)$`), then
//! `key_id=<base64 of the provider's id bytes>` if the provider has one, then the end mark
//! `#-- end of file`. No side file, or one without the end mark (a crash while writing it): the
//! segment is read unencrypted.
//!
//! Bytes in: the options and the key id, or "not encrypted". What ScyllaDB would do with input
//! its writer never produces is not known here, so such input is refused (the caller reports the
//! segment as failed, never as unencrypted): a line that is not `key=value`, an option given
//! twice, a `key_id` that is not base64, anything after the end mark but its newline, text that
//! is not UTF-8, no options before the end mark.

use base64::Engine;

use crate::error::Malformed;

use super::attributes::EncryptionOptions;
use super::wire::show;

/// The line that ends a complete side file.
pub const END_MARK: &str = "#-- end of file";

/// The option line that carries the provider's key id, base64.
pub const KEY_ID: &str = "key_id";

/// A side file is a few hundred bytes; this bounds what a hostile one makes us read.
pub const MAX_SIDE_FILE: usize = 64 << 10;

/// What a side file says about its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideFile {
    /// No end mark: ScyllaDB opens the segment unencrypted.
    Unterminated,
    /// The options in force when the segment was created, and the provider's key id.
    Encrypted {
        options: EncryptionOptions,
        key_id: Option<Vec<u8>>,
    },
}

/// The side file's name for segment file name `segment`.
pub fn side_file_name(segment: &str) -> String {
    format!(".{segment}")
}

/// Parses a side file's bytes (at most [`MAX_SIDE_FILE`]). Lines end with `\n`; the last line
/// may lack it.
pub fn parse_side_file(bytes: &[u8]) -> Result<SideFile, Malformed> {
    if bytes.len() > MAX_SIDE_FILE {
        return Err(Malformed(format!(
            "{} bytes, more than the {MAX_SIDE_FILE} a side file can sensibly have",
            bytes.len()
        )));
    }
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let Some(end) = lines.iter().position(|l| *l == END_MARK.as_bytes()) else {
        return Ok(SideFile::Unterminated);
    };
    // After the end mark: only its newline (an empty last piece), else refuse.
    let after = &lines[end + 1..];
    if !(after.is_empty() || (after.len() == 1 && after[0].is_empty())) {
        return Err(Malformed(format!(
            "line {}: text after the end mark {END_MARK:?}",
            end + 2
        )));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut key_id: Option<Vec<u8>> = None;
    for (i, raw) in lines[..end].iter().enumerate() {
        let n = i + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| Malformed(format!("line {n}: {} is not UTF-8", show(raw))))?;
        let (k, v) = line
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty() && !v.chars().any(char::is_whitespace))
            .ok_or_else(|| {
                Malformed(format!(
                    "line {n}: {} is not key=value (a value without spaces)",
                    show(raw)
                ))
            })?;
        if k == KEY_ID {
            if key_id.is_some() {
                return Err(Malformed(format!("line {n}: key_id appears twice")));
            }
            let id = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|e| {
                    Malformed(format!(
                        "line {n}: key_id {} is not base64: {e}",
                        show(v.as_bytes())
                    ))
                })?;
            if id.is_empty() {
                return Err(Malformed(format!("line {n}: key_id is empty")));
            }
            key_id = Some(id);
            continue;
        }
        if pairs.iter().any(|(x, _)| x == k) {
            return Err(Malformed(format!(
                "line {n}: option {} appears twice",
                show(k.as_bytes())
            )));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    if pairs.is_empty() {
        return Err(Malformed(
            "no options before the end mark: not a side file ScyllaDB writes".into(),
        ));
    }
    let options = EncryptionOptions::from_pairs(pairs)?;
    Ok(SideFile::Encrypted { options, key_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "cipher_algorithm=AES/CBC/PKCS5Padding\nkey_provider=LocalFileSystemKeyProviderFactory\nsecret_key_file=/etc/scylla/keys/k1\nsecret_key_strength=128\n#-- end of file\n";

    #[test]
    fn a_complete_side_file_gives_options_and_key_id() {
        let SideFile::Encrypted { options, key_id } = parse_side_file(LOCAL.as_bytes()).unwrap()
        else {
            panic!("complete")
        };
        assert_eq!(options.get("secret_key_file"), Some("/etc/scylla/keys/k1"));
        assert_eq!(options.get("secret_key_strength"), Some("128"));
        assert_eq!(key_id, None);
        // KMIP: key_id is the encoded id ("1" -> 31 01), not an option; '=' in the value.
        let kmip =
            "kmip_host=kmip1\nkey_provider=KmipKeyProviderFactory\nkey_id=MQE=\n#-- end of file";
        let SideFile::Encrypted { options, key_id } = parse_side_file(kmip.as_bytes()).unwrap()
        else {
            panic!("complete")
        };
        assert_eq!(key_id.as_deref(), Some(&[0x31, 0x01][..]));
        assert_eq!(options.get("key_id"), None);
        assert_eq!(options.get("kmip_host"), Some("kmip1"));
    }

    #[test]
    fn without_the_end_mark_the_segment_is_unencrypted() {
        for text in [
            "",
            "\n",
            "cipher_algorithm=AES/CBC/PKCS5Padding\n",
            "cipher_algorithm=AES\n#-- end of fil",
            "cipher_algorithm=AES\n#-- end of file ",
            "garbage without equals\n",
        ] {
            assert_eq!(
                parse_side_file(text.as_bytes()).unwrap(),
                SideFile::Unterminated,
                "{text:?}"
            );
        }
        let cut = &LOCAL[..LOCAL.len() - 3];
        assert_eq!(
            parse_side_file(cut.as_bytes()).unwrap(),
            SideFile::Unterminated
        );
    }

    #[test]
    fn input_the_writer_never_makes_is_refused_by_line() {
        for (text, says) in [
            ("a=b\nnot a pair\n#-- end of file\n", "line 2"),
            ("a=b c\n#-- end of file\n", "line 1"),
            ("=b\n#-- end of file\n", "key=value"),
            ("a=\n#-- end of file\n", "key=value"),
            ("\n#-- end of file\n", "key=value"),
            ("a=b\na=c\n#-- end of file\n", "twice"),
            ("a=b\nkey_id=MQE=\nkey_id=MQE=\n#-- end of file\n", "twice"),
            ("a=b\nkey_id=!!\n#-- end of file\n", "base64"),
            ("a=b\nkey_id=MQ\n#-- end of file\n", "base64"),
            ("#-- end of file\n", "no options"),
            ("key_id=MQE=\n#-- end of file\n", "no options"),
            ("a=b\n#-- end of file\nc=d\n", "after the end mark"),
            ("a=b\n#-- end of file\n\n", "after the end mark"),
        ] {
            let e = parse_side_file(text.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let e = parse_side_file(b"a=\xff\n#-- end of file\n").unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        let big = vec![b'a'; MAX_SIDE_FILE + 1];
        assert!(parse_side_file(&big).unwrap_err().contains("bytes"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_side_file(&b);
        }

        #[test]
        fn never_panics_on_near_valid_text(
            lines in proptest::collection::vec("[a-z_=/ #\\-]{0,12}|key_id=[A-Za-z0-9+/=]{0,8}|#-- end of file", 0..8),
        ) {
            let text = lines.join("\n");
            if let Ok(SideFile::Encrypted { options, .. }) = parse_side_file(text.as_bytes()) {
                proptest::prop_assert!(!options.pairs().is_empty());
                proptest::prop_assert!(text.contains(END_MARK));
            }
        }
    }
}
