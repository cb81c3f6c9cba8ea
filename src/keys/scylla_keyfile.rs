//! ScyllaDB local key files (`secret_key_file`, FORMAT.md 4.4). The line format is DSE's
//! (`<cipher_algorithm>:<strength>:<base64 key>`), but ScyllaDB reads the file differently:
//! - it scans the raw bytes for the pattern `WORD[/WORD[/WORD]]:DIGITS:NONSPACE` anywhere (not a
//!   line parser: text around the matches is ignored);
//! - for each match whose (cipher, strength) it has not seen yet, it decodes the key and builds a
//!   cipher key; one that fails (bad base64 by its own decoder, a cipher it rejects, a key shorter
//!   than the cipher's) fails the **whole file**, so a file is usable only when every such line is;
//! - a key longer than strength/8 is valid: AES takes the first strength/8 bytes, the IV key of
//!   the file cipher hashes all of them. The full decoded bytes are kept.
//!
//! This tool judges only AES CBC/ECB 128/192/256 lines; any other cipher line makes the file
//! refused (whether OpenSSL would take it is not ours to guess, and ScyllaDB fails the whole file
//! when it does not).

use std::path::Path;

use zeroize::Zeroizing;

use super::{check_private, read_regular, KeyMaterial};
use crate::error::{Error, Result};

/// A ScyllaDB key file: the key ScyllaDB builds for each (cipher string, strength), first match
/// wins, raw bytes kept whole.
pub struct ScyllaKeyFile {
    keys: Vec<(String, u32, Zeroizing<Vec<u8>>)>,
}

impl ScyllaKeyFile {
    /// Reads a key file (a private regular file, at most 1 MiB).
    pub fn load(path: &Path) -> Result<ScyllaKeyFile> {
        let (meta, text) =
            read_regular(path, "key file", 1 << 20).map_err(|e| Error::Key(e.into()))?;
        check_private(path, &meta)?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &[u8], path: &Path) -> Result<ScyllaKeyFile> {
        let mut keys: Vec<(String, u32, Zeroizing<Vec<u8>>)> = Vec::new();
        for m in matches(text) {
            let alg = String::from_utf8_lossy(m.alg).into_owned();
            let bad = |why: String| {
                Error::Key(format!(
                    "key file {}: the line {alg}:{}: {why}; ScyllaDB fails the whole file on it. Fix or remove that line",
                    path.display(),
                    String::from_utf8_lossy(&m.digits[..m.digits.len().min(24)])
                ))
            };
            let strength = strength(m.digits).ok_or_else(|| bad("strength out of range".into()))?;
            if keys.iter().any(|(a, s, _)| *a == alg && *s == strength) {
                continue; // ScyllaDB skips a repeated (cipher, strength) without decoding it
            }
            let raw = Zeroizing::new(decode_base64(m.key).map_err(bad)?);
            if !aes_cbc_or_ecb(&alg) || !matches!(strength, 128 | 192 | 256) {
                return Err(bad(
                    "only AES CBC/ECB 128/192/256 key lines are accepted here (another cipher may or may not be one ScyllaDB can build)".into(),
                ));
            }
            if raw.len() < strength as usize / 8 {
                return Err(bad(format!(
                    "a {}-byte key, the cipher needs {}",
                    raw.len(),
                    strength / 8
                )));
            }
            keys.push((alg, strength, raw));
        }
        Ok(ScyllaKeyFile { keys })
    }

    /// Every (cipher string, strength) the file has a key for, in file order.
    pub fn ciphers(&self) -> Vec<(String, u32)> {
        self.keys.iter().map(|(a, s, _)| (a.clone(), *s)).collect()
    }

    /// The key ScyllaDB takes for a table whose options say `cipher_algorithm` and
    /// `secret_key_strength` (compared exactly, case-sensitively, as ScyllaDB does).
    pub fn get(&self, cipher_algorithm: &str, strength: u32) -> Option<KeyMaterial> {
        self.keys
            .iter()
            .find(|(a, s, _)| a == cipher_algorithm && *s == strength)
            .map(|(_, _, k)| KeyMaterial::new(k.clone()))
    }
}

/// One match of the key-line pattern.
struct Match<'a> {
    alg: &'a [u8],
    digits: &'a [u8],
    key: &'a [u8],
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length of the run of bytes satisfying `f` from `i`.
fn run(text: &[u8], i: usize, f: impl Fn(u8) -> bool) -> usize {
    text[i.min(text.len())..]
        .iter()
        .take_while(|&&b| f(b))
        .count()
}

/// Every non-overlapping match, left to right, of `(\w+(/\w+)?(/\w+)?):(\d+):(\S+)\s*` in
/// `text` (what a regex search for ScyllaDB's pattern finds).
fn matches(text: &[u8]) -> Vec<Match<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match match_at(text, i) {
            Some((m, end)) => {
                out.push(m);
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// The match starting at `i`, and where it ends. Word runs cannot shrink usefully (the byte after
/// a shorter run is a word byte), so the cipher part is the longest of its three forms that a `:`
/// follows.
fn match_at(text: &[u8], i: usize) -> Option<(Match<'_>, usize)> {
    let w = run(text, i, is_word);
    if w == 0 {
        return None;
    }
    let mut ends = vec![i + w];
    for _ in 0..2 {
        let e = *ends.last().expect("one");
        if text.get(e) == Some(&b'/') {
            let n = run(text, e + 1, is_word);
            if n == 0 {
                break;
            }
            ends.push(e + 1 + n);
        } else {
            break;
        }
    }
    let alg_end = ends
        .into_iter()
        .rev()
        .find(|&e| text.get(e) == Some(&b':'))?;
    let d = run(text, alg_end + 1, |b| b.is_ascii_digit());
    let colon = alg_end + 1 + d;
    if d == 0 || text.get(colon) != Some(&b':') {
        return None;
    }
    let k = run(text, colon + 1, |b| !b.is_ascii_whitespace() && b != 0x0b);
    if k == 0 {
        return None;
    }
    let key_end = colon + 1 + k;
    let end = key_end + run(text, key_end, |b| b.is_ascii_whitespace() || b == 0x0b);
    Some((
        Match {
            alg: &text[i..alg_end],
            digits: &text[alg_end + 1..colon],
            key: &text[colon + 1..key_end],
        },
        end,
    ))
}

/// `unsigned(std::stoul(digits))`: out of range (2^64 and up) is an error; the low 32 bits count.
fn strength(digits: &[u8]) -> Option<u32> {
    let d = std::str::from_utf8(digits).ok()?.trim_start_matches('0');
    let n: u64 = if d.is_empty() { 0 } else { d.parse().ok()? };
    Some(n as u32)
}

/// ScyllaDB's base64 decoder: the length a multiple of 4, at most two trailing `=` dropped, every
/// other byte in the standard alphabet; leftover bits are ignored (not an error).
fn decode_base64(tok: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if !tok.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            tok.len()
        ));
    }
    let body = tok
        .strip_suffix(b"==")
        .or_else(|| tok.strip_suffix(b"="))
        .unwrap_or(tok);
    let (mut bits, mut n, mut out) = (0u32, 0u32, Vec::with_capacity(body.len() * 3 / 4));
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("byte {:?} is not base64", c as char)),
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    // The last key bits (best effort: the compiler may keep copies in registers).
    zeroize::Zeroize::zeroize(&mut bits);
    Ok(out)
}

/// `AES[/CBC|/ECB[/padding]]`, case-insensitively, with the paddings ScyllaDB accepts (4.2).
fn aes_cbc_or_ecb(alg: &str) -> bool {
    let parts: Vec<String> = alg.split('/').map(str::to_ascii_lowercase).collect();
    let padding_ok = |p: &str| {
        matches!(
            p,
            "pkcs5" | "pkcs" | "pkcs7" | "no" | "" | "pkcs5padding" | "nopadding" | "pkcs7padding"
        )
    };
    match parts.as_slice() {
        [t] => t == "aes",
        [t, m] => t == "aes" && matches!(m.as_str(), "cbc" | "ecb"),
        [t, m, p] => t == "aes" && matches!(m.as_str(), "cbc" | "ecb") && padding_ok(p),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn parse(text: &str) -> Result<ScyllaKeyFile> {
        ScyllaKeyFile::parse(text.as_bytes(), Path::new("/k"))
    }

    #[test]
    fn first_match_per_cipher_and_strength_wins_and_long_keys_stay_whole() {
        let (a, b, long) = ([1u8; 16], [2u8; 16], [3u8; 40]);
        let text = format!(
            "# comment AES/CBC/PKCS5Padding:128:{}\nnoise AES/CBC/PKCS5Padding:128:{} AES/ECB/PKCS5Padding:256:{}",
            b64(&a),
            b64(&b),
            b64(&long)
        );
        let f = parse(&text).unwrap();
        assert_eq!(f.get("AES/CBC/PKCS5Padding", 128).unwrap().expose(), &a);
        assert_eq!(f.get("AES/ECB/PKCS5Padding", 256).unwrap().expose(), &long);
        // Exact, case-sensitive cipher names; the strength must be equal.
        assert!(f.get("aes/cbc/pkcs5padding", 128).is_none());
        assert!(f.get("AES/CBC/PKCS5Padding", 192).is_none());
    }

    #[test]
    fn one_bad_line_fails_the_whole_file() {
        let good = format!("AES/CBC/PKCS5Padding:128:{}\n", b64(&[1; 16]));
        for bad in [
            format!("AES/ECB/PKCS5Padding:128:{}", &b64(&[1; 16])[1..]), // length % 4
            format!("AES/ECB/PKCS5Padding:128:{}", b64(&[1; 8])),        // short key
            format!(
                "AES/ECB/PKCS5Padding:128:A{}",
                &b64(&[1; 16])[1..].replace('A', "*")
            ),
            format!("DES/CBC/PKCS5Padding:128:{}", b64(&[1; 16])),
            format!("AES/CTR/PKCS5Padding:128:{}", b64(&[1; 16])),
            format!(
                "AES/CBC/PKCS5Padding:99999999999999999999999:{}",
                b64(&[1; 16])
            ),
        ] {
            let e = parse(&format!("{good}{bad}\n"));
            assert!(e.is_err(), "{bad}");
        }
        // A repeated (cipher, strength) is skipped unread, even when it is bad.
        let f = parse(&format!("{good}AES/CBC/PKCS5Padding:128:!!!!\n")).unwrap();
        assert_eq!(
            f.get("AES/CBC/PKCS5Padding", 128).unwrap().expose(),
            &[1; 16]
        );
    }

    #[test]
    fn the_pattern_is_a_scan_not_a_line_parser() {
        let k = b64(&[7; 16]);
        // Found inside other text: no match from "a" (a/AES/CBC is followed by '/'), one from
        // "AES" (its three-part form is followed by ':').
        let f = parse(&format!("x=a/AES/CBC/PKCS5Padding:0128:{k}  tail")).unwrap();
        assert_eq!(
            f.get("AES/CBC/PKCS5Padding", 128).unwrap().expose(),
            &[7; 16]
        );
        let f = parse(&format!("junk AES:128:{k}")).unwrap();
        assert_eq!(f.get("AES", 128).unwrap().expose(), &[7; 16]);
        let f = parse(&format!("::AES/ECB:128:{k}\tAES/CBC:256:{}", b64(&[9; 32]))).unwrap();
        assert!(f.get("AES/ECB", 128).is_some() && f.get("AES/CBC", 256).is_some());
        // Leading zeros and the low 32 bits of the strength, as unsigned(stoul(...)).
        assert_eq!(strength(b"000128"), Some(128));
        assert_eq!(strength(b"4294967424"), Some(128));
        assert_eq!(strength(b"18446744073709551616"), None);
    }

    #[test]
    fn base64_as_scylla_decodes_it() {
        assert_eq!(decode_base64(b"AAEC").unwrap(), vec![0, 1, 2]);
        assert_eq!(decode_base64(b"AAE=").unwrap(), vec![0, 1]);
        assert_eq!(decode_base64(b"AA==").unwrap(), vec![0]);
        assert_eq!(
            decode_base64(b"AB==").unwrap(),
            vec![0],
            "leftover bits ignored"
        );
        assert!(decode_base64(b"A===").is_err(), "a stray =");
        assert!(decode_base64(b"AAE").is_err());
        assert!(decode_base64(b"AA=A").is_err());
    }
}
