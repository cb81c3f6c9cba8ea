//! Scylla.db's ExtensionAttributes (tag 3) and the three encryption attributes it carries
//! (FORMAT.md 4.1, 4.6): `scylla_encryption_options`, `scylla_key_id`, `encrypted_components`.
//!
//! The attribute map is `map<str32, str32>` (big-endian lengths), kept as raw bytes in file order
//! so that attributes this module does not know are written back exactly. The options inside
//! `scylla_encryption_options` are ScyllaDB's IDL `map<string, string>`, little-endian.

use crate::error::Malformed;

use super::wire::{put_str32, put_str32_le, show, Cursor};

pub const ATTR_OPTIONS: &[u8] = b"scylla_encryption_options";
pub const ATTR_KEY_ID: &[u8] = b"scylla_key_id";
pub const ATTR_MASK: &[u8] = b"encrypted_components";

/// Component numbers (`sstables/component_type.hh`, FORMAT.md 4.1) with their file-name suffixes.
/// The mask bit of a component is `1 << number`.
pub const COMPONENTS: [(u32, &str); 15] = [
    (0, "Index.db"),
    (1, "CompressionInfo.db"),
    (2, "Data.db"),
    (3, "TOC.txt"),
    (4, "Summary.db"),
    (5, "Digest.crc32"),
    (6, "CRC.db"),
    (7, "Filter.db"),
    (8, "Statistics.db"),
    (9, "TOC.txt.tmp"),             // TemporaryTOC
    (10, "Statistics.db.tmp"),      // TemporaryStatistics
    (11, "Scylla.db"),              // never encrypted
    (12, "Rows.db"),                // ms/mt only (2025.4+)
    (13, "Partitions.db"),          // ms/mt only (2025.4+)
    (14, "TemporaryHashes.db.tmp"), // TemporaryHashes, deleted before the SSTable is sealed
];

/// The number of a component file suffix (`Data.db` → 2), `None` for one ScyllaDB has no number for.
pub fn component_number(name: &str) -> Option<u32> {
    COMPONENTS.iter().find(|(_, n)| *n == name).map(|(i, _)| *i)
}

/// The file-name suffix of component number `n`.
pub fn component_name(n: u32) -> Option<&'static str> {
    COMPONENTS.iter().find(|(i, _)| *i == n).map(|(_, s)| *s)
}

/// `encrypted_components`: bit `1 << number` set for every non-Data component written encrypted.
///
/// Refused bits: 3 (TOC.txt), 9 (TOC.txt.tmp) and 11 (Scylla.db), which are never encrypted, and
/// 15–31, which name no component (FORMAT.md 4.6); and bit 2 (Data.db). Our choice for bit 2:
/// readers decide Data.db by the presence of `scylla_encryption_options` and ignore the bit, and
/// writers never set it (4.1: "bit 2 is never set"), so a mask with it set did not come from a
/// ScyllaDB writer, and what it means is nobody's statement: refuse rather than carry it into a
/// file we sign off as re-encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentMask(u32);

impl ComponentMask {
    /// Bits 0, 1, 4–8, 10, 12–14.
    pub const ALLOWED: u32 = 0x75F3;

    pub fn new(bits: u32) -> Result<ComponentMask, Malformed> {
        let bad = bits & !Self::ALLOWED;
        if bad != 0 {
            let names: Vec<String> = (0..32)
                .filter(|b| bad >> b & 1 != 0)
                .map(|b| match component_name(b) {
                    Some(n) => format!("{b} ({n})"),
                    None => format!("{b}"),
                })
                .collect();
            return Err(Malformed(format!(
                "encrypted_components {bits:#010x} sets bit(s) {} that no ScyllaDB writer sets \
                 (allowed: {:#06x}); refused",
                names.join(", "),
                Self::ALLOWED
            )));
        }
        Ok(ComponentMask(bits))
    }

    /// The mask for these component file suffixes (`Index.db`, ...); `Data.db`, `TOC.txt`,
    /// `Scylla.db` and names without a number are refused.
    pub fn from_components<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ComponentMask, Malformed> {
        let mut bits = 0u32;
        for name in names {
            let n = component_number(name).ok_or_else(|| {
                Malformed(format!(
                    "component {name:?} has no ScyllaDB component number"
                ))
            })?;
            if Self::ALLOWED >> n & 1 == 0 {
                return Err(Malformed(format!(
                    "component {name} (number {n}) is never marked in encrypted_components"
                )));
            }
            bits |= 1 << n;
        }
        Ok(ComponentMask(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, number: u32) -> bool {
        number < 32 && self.0 >> number & 1 != 0
    }

    /// The file-name suffixes of the marked components, by number.
    pub fn components(self) -> Vec<&'static str> {
        COMPONENTS
            .iter()
            .filter(|(n, _)| self.contains(*n))
            .map(|(_, s)| *s)
            .collect()
    }
}

/// The ExtensionAttributes map (tag 3): raw keys and values in file order, no key twice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionAttributes {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ExtensionAttributes {
    /// Parses a whole tag 3 payload; offsets in messages count from the payload's first byte.
    pub fn parse(payload: &[u8]) -> Result<ExtensionAttributes, Malformed> {
        Self::parse_at(payload, 0)
    }

    /// The same, with offsets counted from `base` (the payload's offset in Scylla.db).
    pub(super) fn parse_at(payload: &[u8], base: usize) -> Result<ExtensionAttributes, Malformed> {
        let mut r = Cursor::new(payload, base);
        let n = r.count("attribute count", 8)?;
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(n);
        for i in 0..n {
            let at = r.offset();
            let k = r.str32(&format!("attribute {i} key"))?;
            let v = r.str32(&format!("attribute {i} value"))?;
            if let Some(j) = pairs.iter().position(|(x, _)| x == k) {
                // ScyllaDB would keep one of the two silently.
                return Err(Malformed(format!(
                    "attribute {i} at offset {at}: key {} repeats attribute {j}; refused",
                    show(k)
                )));
            }
            pairs.push((k.to_vec(), v.to_vec()));
        }
        if r.remaining() != 0 {
            return Err(Malformed(format!(
                "{} bytes after the {n} attributes, at offset {}",
                r.remaining(),
                r.offset()
            )));
        }
        Ok(ExtensionAttributes { pairs })
    }

    /// The payload: u32 count, then each pair as two str32, in this map's order.
    pub fn serialize(&self) -> Vec<u8> {
        let len = 4 + self
            .pairs
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(self.pairs.len() as u32).to_be_bytes());
        for (k, v) in &self.pairs {
            put_str32(&mut out, k);
            put_str32(&mut out, v);
        }
        out
    }

    /// The pairs in file order.
    pub fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pairs
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// Replaces the value of `key` where it stands, or appends the pair at the end.
    pub fn set(&mut self, key: &[u8], value: Vec<u8>) {
        match self.pairs.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.pairs.push((key.to_vec(), value)),
        }
    }

    pub fn remove(&mut self, key: &[u8]) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The encryption attributes (FORMAT.md 4.6), or `None` when none of the three is present (an
    /// SSTable written without encryption).
    ///
    /// Refused: options that do not parse or repeat a key; a missing `encrypted_components` next
    /// to options or a key id; a mask that is not 4 bytes or has a refused bit
    /// ([`ComponentMask`]); a key id, or a mask marking components, without options to say whose.
    pub fn encryption(&self) -> Result<Option<EncryptionAttributes>, Malformed> {
        let options = self.get(ATTR_OPTIONS);
        let key_id = self.get(ATTR_KEY_ID);
        let mask = self.get(ATTR_MASK);
        if options.is_none() && key_id.is_none() && mask.is_none() {
            return Ok(None);
        }
        let options = options
            .map(|v| {
                EncryptionOptions::parse(v)
                    .map_err(|m| Malformed(format!("scylla_encryption_options: {m}")))
            })
            .transpose()?;
        let Some(mask) = mask else {
            return Err(Malformed(
                "scylla_encryption_options or scylla_key_id without encrypted_components: not \
                 written by ScyllaDB 2025.1+ (2025.3+ cannot open such an SSTable's components); \
                 refused"
                    .into(),
            ));
        };
        let bits: [u8; 4] = mask.try_into().map_err(|_| {
            Malformed(format!(
                "encrypted_components is {} bytes ({}), not a 4-byte mask",
                mask.len(),
                show(mask)
            ))
        })?;
        let mask = ComponentMask::new(u32::from_le_bytes(bits))?;
        if options.is_none() {
            if key_id.is_some() {
                return Err(Malformed(
                    "scylla_key_id without scylla_encryption_options: no provider to read it; refused"
                        .into(),
                ));
            }
            if mask.bits() != 0 {
                return Err(Malformed(format!(
                    "encrypted_components {:#x} marks {} as encrypted, but there is no \
                     scylla_encryption_options to say with which key; refused",
                    mask.bits(),
                    mask.components().join(", ")
                )));
            }
        }
        Ok(Some(EncryptionAttributes {
            options,
            key_id: key_id.map(<[u8]>::to_vec),
            mask,
        }))
    }
}

/// The three encryption attributes, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionAttributes {
    /// `scylla_encryption_options`; Data.db is encrypted iff present.
    pub options: Option<EncryptionOptions>,
    /// `scylla_key_id` as stored (see `key_id` for what the bytes mean).
    pub key_id: Option<Vec<u8>>,
    /// `encrypted_components`.
    pub mask: ComponentMask,
}

impl EncryptionAttributes {
    /// Whether ScyllaDB reads component file `name` (a suffix such as `Index.db`) through
    /// decryption: Data.db iff there are options (the mask bit is not consulted), TOC.txt and
    /// Scylla.db never, any other by its mask bit. A name without a component number is an error.
    pub fn is_encrypted(&self, name: &str) -> Result<bool, Malformed> {
        match name {
            "Data.db" => Ok(self.options.is_some()),
            "TOC.txt" | "Scylla.db" => Ok(false),
            _ => component_number(name)
                .map(|n| self.mask.contains(n))
                .ok_or_else(|| {
                    Malformed(format!(
                        "component {name:?} has no ScyllaDB component number: cannot tell whether it is encrypted"
                    ))
                }),
        }
    }
}

/// `scylla_encryption_options`: the options as written in CQL or scylla.yaml, values as strings,
/// in the order stored (ScyllaDB writes them sorted by key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncryptionOptions {
    pairs: Vec<(String, String)>,
}

impl EncryptionOptions {
    /// Parses the attribute value: u32le n, n × (u32le len, key, u32le len, value); offsets in
    /// messages count from the value's first byte. Refused: a repeated key (ScyllaDB would keep
    /// the first silently), text that is not UTF-8, bytes after the map.
    pub fn parse(value: &[u8]) -> Result<EncryptionOptions, Malformed> {
        let mut r = Cursor::new(value, 0);
        let n = r.count_le("option count", 8)?;
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(n);
        for i in 0..n {
            let at = r.offset();
            let k = r.str32_le(&format!("option {i} key"))?;
            let v = r.str32_le(&format!("option {i} value"))?;
            let k = std::str::from_utf8(k).map_err(|_| {
                Malformed(format!(
                    "option {i} at offset {at}: key {} is not UTF-8",
                    show(k)
                ))
            })?;
            let v = std::str::from_utf8(v).map_err(|_| {
                Malformed(format!(
                    "option {}: value {} (at offset {at}) is not UTF-8",
                    show(k.as_bytes()),
                    show(v)
                ))
            })?;
            if pairs.iter().any(|(x, _)| x == k) {
                return Err(Malformed(format!(
                    "option {i} at offset {at}: key {} appears twice (ScyllaDB keeps the first \
                     silently); refused",
                    show(k.as_bytes())
                )));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        if r.remaining() != 0 {
            return Err(Malformed(format!(
                "{} bytes after the {n} options, at offset {}",
                r.remaining(),
                r.offset()
            )));
        }
        Ok(EncryptionOptions { pairs })
    }

    /// Options from pairs; a repeated key is refused.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<EncryptionOptions, Malformed> {
        let mut out = EncryptionOptions::default();
        for (k, v) in pairs {
            let k = k.into();
            if out.get(&k).is_some() {
                return Err(Malformed(format!("option {k:?} given twice")));
            }
            out.pairs.push((k, v.into()));
        }
        Ok(out)
    }

    /// The value as ScyllaDB writes it: sorted by key bytes (`std::map` order), little-endian.
    pub fn serialize(&self) -> Vec<u8> {
        let mut sorted: Vec<&(String, String)> = self.pairs.iter().collect();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out = Vec::new();
        out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
        for (k, v) in sorted {
            put_str32_le(&mut out, k.as_bytes());
            put_str32_le(&mut out, v.as_bytes());
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// u32le 2; "cipher_algorithm" = "AES/ECB/PKCS5Padding"; "secret_key_strength" = "256".
    const OPTIONS: &[u8] = b"\x02\x00\x00\x00\
        \x10\x00\x00\x00cipher_algorithm\x14\x00\x00\x00AES/ECB/PKCS5Padding\
        \x13\x00\x00\x00secret_key_strength\x03\x00\x00\x00256";

    fn attrs(pairs: &[(&[u8], &[u8])]) -> ExtensionAttributes {
        ExtensionAttributes {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn options_parse_from_hand_written_little_endian_bytes_and_serialize_back() {
        let o = EncryptionOptions::parse(OPTIONS).unwrap();
        assert_eq!(o.get("cipher_algorithm"), Some("AES/ECB/PKCS5Padding"));
        assert_eq!(o.get("secret_key_strength"), Some("256"));
        assert_eq!(o.get("key_provider"), None);
        assert_eq!(o.serialize(), OPTIONS);
        // Serialization sorts by key, whatever the order given.
        let o2 = EncryptionOptions::from_pairs([
            ("secret_key_strength", "256"),
            ("cipher_algorithm", "AES/ECB/PKCS5Padding"),
        ])
        .unwrap();
        assert_eq!(o2.serialize(), OPTIONS);
    }

    #[test]
    fn options_refuse_repeats_truncation_trailing_bytes_and_huge_counts() {
        let mut dup = OPTIONS.to_vec();
        // Rename the second key to the first one's name (same length is not needed: rebuild).
        dup.truncate(4);
        for _ in 0..2 {
            dup.extend_from_slice(b"\x01\x00\x00\x00a\x01\x00\x00\x00b");
        }
        let e = EncryptionOptions::parse(&dup).unwrap_err();
        assert!(e.contains("\"a\" appears twice"), "{e}");
        for cut in 0..OPTIONS.len() {
            assert!(EncryptionOptions::parse(&OPTIONS[..cut]).is_err(), "{cut}");
        }
        let mut more = OPTIONS.to_vec();
        more.push(0);
        let e = EncryptionOptions::parse(&more).unwrap_err();
        assert!(e.contains("1 bytes after the 2 options"), "{e}");
        let e = EncryptionOptions::parse(b"\xff\xff\xff\xff").unwrap_err();
        assert!(e.contains("count 4294967295"), "{e}");
        // The same count big-endian is 2 << 24: little-endian matters.
        let e = EncryptionOptions::parse(b"\x00\x00\x00\x02").unwrap_err();
        assert!(e.contains("count 33554432"), "{e}");
        assert!(EncryptionOptions::from_pairs([("a", "1"), ("a", "2")]).is_err());
    }

    #[test]
    fn the_mask_refuses_bits_no_writer_sets() {
        assert_eq!(ComponentMask::new(0x1B3).unwrap().bits(), 0x1B3);
        assert_eq!(
            ComponentMask::new(0x1B3).unwrap().components(),
            [
                "Index.db",
                "CompressionInfo.db",
                "Summary.db",
                "Digest.crc32",
                "Filter.db",
                "Statistics.db"
            ]
        );
        assert!(ComponentMask::new(0x7000 | 0x400 | 0x1F3).is_ok());
        for bit in [2, 3, 9, 11, 15, 16, 31] {
            let e = ComponentMask::new(0x1B3 | 1 << bit).unwrap_err();
            assert!(e.contains(&format!("bit(s) {bit}")), "{bit}: {e}");
        }
        let m =
            ComponentMask::from_components(["Index.db", "Statistics.db", "Partitions.db"]).unwrap();
        assert_eq!(m.bits(), 1 | 1 << 8 | 1 << 13);
        for bad in ["Data.db", "TOC.txt", "Scylla.db", "Digest.sha1"] {
            assert!(ComponentMask::from_components([bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn encryption_attributes_decode_and_refuse() {
        let mask = 0x1B3u32.to_le_bytes();
        let a = attrs(&[
            (b"other", b"x"),
            (ATTR_MASK, &mask),
            (ATTR_OPTIONS, OPTIONS),
            (ATTR_KEY_ID, b"1\x01"),
        ]);
        let e = a.encryption().unwrap().unwrap();
        assert_eq!(e.mask.bits(), 0x1B3);
        assert_eq!(e.key_id.as_deref(), Some(&b"1\x01"[..]));
        assert_eq!(
            e.options.as_ref().unwrap().get("secret_key_strength"),
            Some("256")
        );
        assert!(e.is_encrypted("Data.db").unwrap());
        assert!(e.is_encrypted("Index.db").unwrap());
        assert!(!e.is_encrypted("CRC.db").unwrap());
        assert!(!e.is_encrypted("TOC.txt").unwrap());
        assert!(e.is_encrypted("Digest.sha1").is_err());

        assert_eq!(attrs(&[(b"other", b"x")]).encryption().unwrap(), None);

        let e = attrs(&[(ATTR_OPTIONS, OPTIONS)]).encryption().unwrap_err();
        assert!(e.contains("without encrypted_components"), "{e}");
        let e = attrs(&[(ATTR_OPTIONS, OPTIONS), (ATTR_MASK, b"\xb3\x01\x00")])
            .encryption()
            .unwrap_err();
        assert!(e.contains("3 bytes"), "{e}");
        let e = attrs(&[(ATTR_OPTIONS, OPTIONS), (ATTR_MASK, b"\xb3\x09\x00\x00")])
            .encryption()
            .unwrap_err();
        assert!(e.contains("bit(s) 11 (Scylla.db)"), "{e}");
        let e = attrs(&[(ATTR_MASK, &mask)]).encryption().unwrap_err();
        assert!(e.contains("no scylla_encryption_options"), "{e}");
        let e = attrs(&[(ATTR_MASK, &[0; 4]), (ATTR_KEY_ID, b"1\x01")])
            .encryption()
            .unwrap_err();
        assert!(e.contains("scylla_key_id without"), "{e}");
        // Data.db-only mask, no options: written without encryption; nothing is encrypted.
        let plain = attrs(&[(ATTR_MASK, &[0; 4])])
            .encryption()
            .unwrap()
            .unwrap();
        assert!(!plain.is_encrypted("Data.db").unwrap());
        let e = attrs(&[(ATTR_OPTIONS, b"\x01\x00\x00\x00"), (ATTR_MASK, &mask)])
            .encryption()
            .unwrap_err();
        assert!(
            e.starts_with("scylla_encryption_options: option count"),
            "{e}"
        );
    }

    #[test]
    fn attribute_map_keeps_order_refuses_repeats_and_edits_in_place() {
        // u32 3; "b"="1"; "a"="2"; "c"=""
        let payload = b"\x00\x00\x00\x03\
            \x00\x00\x00\x01b\x00\x00\x00\x011\
            \x00\x00\x00\x01a\x00\x00\x00\x012\
            \x00\x00\x00\x01c\x00\x00\x00\x00";
        let mut a = ExtensionAttributes::parse(payload).unwrap();
        let keys: Vec<&[u8]> = a.pairs().iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"b"[..], b"a", b"c"]);
        assert_eq!(a.serialize(), payload);
        a.set(b"a", b"22".to_vec());
        a.set(b"d", b"4".to_vec());
        a.remove(b"b");
        let keys: Vec<&[u8]> = a.pairs().iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"c", b"d"]);
        assert_eq!(a.get(b"a"), Some(&b"22"[..]));

        let dup = b"\x00\x00\x00\x02\
            \x00\x00\x00\x01a\x00\x00\x00\x011\
            \x00\x00\x00\x01a\x00\x00\x00\x012";
        let e = ExtensionAttributes::parse(dup).unwrap_err();
        assert!(e.contains("repeats attribute 0"), "{e}");
        let e = ExtensionAttributes::parse(&payload[..payload.len() - 1]).unwrap_err();
        assert!(e.contains("attribute 2 value"), "{e}");
    }
}
