//! Scylla.db framing (FORMAT.md 4.5): `u32 count`, then `count` entries `{u32 tag, u32 size,
//! payload}`, big-endian, in any order; then, iff tag 12 (ComponentsDigests) is present, a
//! big-endian CRC32 (zlib) of every preceding byte.
//!
//! Entries are kept as raw bytes in file order, so [`ScyllaMetadata::serialize`] gives back the
//! parsed file byte for byte. Known tags (1–13) are checked to fill exactly their `size` by their
//! type; unknown tags are carried unread. The values a rekey needs are decoded: ExtensionAttributes
//! (tag 3), SSTableIdentifier (tag 10) and ComponentsDigests (tag 12).

use std::collections::BTreeMap;

use crate::error::Malformed;

use super::attributes::{component_name, component_number, ExtensionAttributes};
use super::wire::Cursor;

pub const TAG_SHARDING: u32 = 1;
pub const TAG_FEATURES: u32 = 2;
pub const TAG_EXTENSION_ATTRIBUTES: u32 = 3;
pub const TAG_RUN_IDENTIFIER: u32 = 4;
pub const TAG_LARGE_DATA_STATS: u32 = 5;
pub const TAG_SSTABLE_ORIGIN: u32 = 6;
pub const TAG_SCYLLA_BUILD_ID: u32 = 7;
pub const TAG_SCYLLA_VERSION: u32 = 8;
pub const TAG_EXT_TIMESTAMP_STATS: u32 = 9;
pub const TAG_SSTABLE_IDENTIFIER: u32 = 10;
pub const TAG_SCHEMA: u32 = 11;
pub const TAG_COMPONENTS_DIGESTS: u32 = 12;
pub const TAG_LARGE_DATA_RECORDS: u32 = 13;

/// The name of a known tag (`sstables/types.hh` `scylla_metadata_type`).
pub fn tag_name(tag: u32) -> Option<&'static str> {
    Some(match tag {
        TAG_SHARDING => "Sharding",
        TAG_FEATURES => "Features",
        TAG_EXTENSION_ATTRIBUTES => "ExtensionAttributes",
        TAG_RUN_IDENTIFIER => "RunIdentifier",
        TAG_LARGE_DATA_STATS => "LargeDataStats",
        TAG_SSTABLE_ORIGIN => "SSTableOrigin",
        TAG_SCYLLA_BUILD_ID => "ScyllaBuildId",
        TAG_SCYLLA_VERSION => "ScyllaVersion",
        TAG_EXT_TIMESTAMP_STATS => "ExtTimestampStats",
        TAG_SSTABLE_IDENTIFIER => "SSTableIdentifier",
        TAG_SCHEMA => "Schema",
        TAG_COMPONENTS_DIGESTS => "ComponentsDigests",
        TAG_LARGE_DATA_RECORDS => "LargeDataRecords",
        _ => return None,
    })
}

fn describe_tag(tag: u32) -> String {
    match tag_name(tag) {
        Some(n) => format!("tag {tag} {n}"),
        None => format!("tag {tag} (unknown)"),
    }
}

/// One Scylla.db entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub tag: u32,
    pub payload: Vec<u8>,
}

/// A parsed Scylla.db: its entries in file order, and the values decoded from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaMetadata {
    entries: Vec<Entry>,
    attributes: Option<ExtensionAttributes>,
    digests: Option<BTreeMap<u32, u32>>,
    identifier: Option<[u8; 16]>,
}

/// What checking a known payload decoded, for the few values kept.
enum Decoded {
    Nothing,
    Attributes(ExtensionAttributes),
    Identifier([u8; 16]),
    Digests(BTreeMap<u32, u32>),
}

impl ScyllaMetadata {
    /// Parses and checks a whole Scylla.db.
    ///
    /// Errors (each with its offset, entry index and tag): a count or size past the end of the
    /// input; a repeated tag (ScyllaDB would keep the first silently); a known payload that does
    /// not fill exactly its size; a repeated ExtensionAttributes key or ComponentsDigests
    /// component; with tag 12, a missing or wrong trailing CRC (stored vs computed); bytes after
    /// the end.
    pub fn parse(buf: &[u8]) -> Result<ScyllaMetadata, Malformed> {
        let mut r = Cursor::new(buf, 0);
        let count = r.count("entry count", 8)?;
        let mut meta = ScyllaMetadata {
            entries: Vec::with_capacity(count),
            attributes: None,
            digests: None,
            identifier: None,
        };
        for i in 0..count {
            let at = r.offset();
            let tag = r.u32(&format!("entry {i} tag"))?;
            let size = r.u32(&format!("entry {i} ({}) size", describe_tag(tag)))? as usize;
            let payload_at = r.offset();
            if size > r.remaining() {
                return Err(Malformed(format!(
                    "entry {i} ({}) at offset {at}: size {size} runs past the end of the file: only \
                     {} bytes left (truncated, or a bad size)",
                    describe_tag(tag),
                    r.remaining()
                )));
            }
            let payload = r.take(size, "payload")?;
            if let Some(j) = meta.entries.iter().position(|e| e.tag == tag) {
                return Err(Malformed(format!(
                    "entry {i} at offset {at}: {} appears again (first as entry {j}); ScyllaDB \
                     would keep the first silently: refused",
                    describe_tag(tag)
                )));
            }
            let decoded = check_payload(tag, payload, payload_at).map_err(|m| {
                Malformed(format!(
                    "entry {i} ({}, {size}-byte payload at offset {payload_at}): {m}",
                    describe_tag(tag)
                ))
            })?;
            match decoded {
                Decoded::Nothing => {}
                Decoded::Attributes(a) => meta.attributes = Some(a),
                Decoded::Identifier(u) => meta.identifier = Some(u),
                Decoded::Digests(d) => meta.digests = Some(d),
            }
            meta.entries.push(Entry {
                tag,
                payload: payload.to_vec(),
            });
        }
        let body_len = r.pos();
        if meta.has_trailing_crc() {
            if r.remaining() < 4 {
                return Err(Malformed(format!(
                    "truncated: ComponentsDigests (tag 12) is present, so a 4-byte CRC32 must \
                     follow the entries at offset {body_len}; only {} bytes left",
                    r.remaining()
                )));
            }
            let stored = r.u32("trailing CRC32")?;
            let computed = crc32fast::hash(&buf[..body_len]);
            if stored != computed {
                return Err(Malformed(format!(
                    "trailing CRC32 at offset {body_len}: stored {stored:#010x}, computed \
                     {computed:#010x} over bytes 0..{body_len}"
                )));
            }
        }
        if r.remaining() != 0 {
            return Err(Malformed(format!(
                "{} unexpected bytes at offset {} after the {}{}",
                r.remaining(),
                r.offset(),
                if meta.has_trailing_crc() {
                    "trailing CRC32"
                } else {
                    "entries"
                },
                if meta.has_trailing_crc() {
                    ""
                } else {
                    " (no ComponentsDigests entry, so no trailing CRC)"
                }
            )));
        }
        Ok(meta)
    }

    /// The file: the entries in order, then the CRC32 of all that iff tag 12 is present.
    pub fn serialize(&self) -> Vec<u8> {
        let len = 4
            + self
                .entries
                .iter()
                .map(|e| 8 + e.payload.len())
                .sum::<usize>()
            + 4;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_be_bytes());
            // Payload lengths fit: parsed from a u32, or bounded in set_extension_attributes.
            out.extend_from_slice(&(e.payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&e.payload);
        }
        if self.has_trailing_crc() {
            let crc = crc32fast::hash(&out);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        out
    }

    /// The entries in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The payload of `tag`, if present.
    pub fn payload(&self, tag: u32) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map(|e| e.payload.as_slice())
    }

    /// Whether the file ends in a CRC32: exactly when ComponentsDigests (tag 12) is present.
    pub fn has_trailing_crc(&self) -> bool {
        self.digests.is_some()
    }

    /// ExtensionAttributes (tag 3), if present.
    pub fn extension_attributes(&self) -> Option<&ExtensionAttributes> {
        self.attributes.as_ref()
    }

    /// SSTableIdentifier (tag 10): the 16 UUID bytes (msb, lsb), if present.
    pub fn sstable_identifier(&self) -> Option<[u8; 16]> {
        self.identifier
    }

    /// ComponentsDigests (tag 12): component number → CRC32 of its plaintext, if present.
    pub fn components_digests(&self) -> Option<&BTreeMap<u32, u32>> {
        self.digests.as_ref()
    }

    /// The ComponentsDigests CRC32 of component file `name` (`Data.db`...), if recorded.
    pub fn component_digest(&self, name: &str) -> Option<u32> {
        let n = component_number(name)?;
        self.digests.as_ref()?.get(&n).copied()
    }

    /// Replaces the ExtensionAttributes payload (and so its size) where it stands; every other
    /// entry is left as it is. Refused if the file has no tag 3, or the payload would not fit a
    /// u32 size.
    pub fn set_extension_attributes(
        &mut self,
        attributes: ExtensionAttributes,
    ) -> Result<(), Malformed> {
        let payload = attributes.serialize();
        if u32::try_from(payload.len()).is_err() {
            return Err(Malformed(format!(
                "new ExtensionAttributes payload of {} bytes does not fit a u32 size",
                payload.len()
            )));
        }
        let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.tag == TAG_EXTENSION_ATTRIBUTES)
        else {
            return Err(Malformed(
                "no ExtensionAttributes entry (tag 3) to replace".into(),
            ));
        };
        entry.payload = payload;
        self.attributes = Some(attributes);
        Ok(())
    }
}

/// Checks that a known payload is exactly its type (FORMAT.md 4.5); offsets count from `base`.
fn check_payload(tag: u32, payload: &[u8], base: usize) -> Result<Decoded, Malformed> {
    if tag == TAG_EXTENSION_ATTRIBUTES {
        return ExtensionAttributes::parse_at(payload, base).map(Decoded::Attributes);
    }
    let Some(name) = tag_name(tag) else {
        return Ok(Decoded::Nothing); // unknown: ScyllaDB skips it by its size
    };
    let mut r = Cursor::new(payload, base);
    let mut decoded = Decoded::Nothing;
    match tag {
        TAG_SHARDING => {
            // u32 n x { u8 exclusive, str16 token, u8 exclusive, str16 token }
            let n = r.count("range count", 6)?;
            for i in 0..n {
                r.u8(&format!("range {i} left exclusive"))?;
                r.str16(&format!("range {i} left token"))?;
                r.u8(&format!("range {i} right exclusive"))?;
                r.str16(&format!("range {i} right token"))?;
            }
        }
        TAG_FEATURES => {
            r.u64("feature mask")?;
        }
        TAG_RUN_IDENTIFIER => {
            r.uuid("run identifier")?;
        }
        TAG_LARGE_DATA_STATS => {
            // map<u32 type, { u64 max, u64 threshold, u32 above }>
            let n = r.count("stats count", 24)?;
            for i in 0..n {
                r.take(24, &format!("stats entry {i}"))?;
            }
        }
        TAG_SSTABLE_ORIGIN | TAG_SCYLLA_BUILD_ID | TAG_SCYLLA_VERSION => {
            r.str32(name)?;
        }
        TAG_EXT_TIMESTAMP_STATS => {
            // map<u32 type, i64>
            let n = r.count("stats count", 12)?;
            for i in 0..n {
                r.take(12, &format!("stats entry {i}"))?;
            }
        }
        TAG_SSTABLE_IDENTIFIER => {
            decoded = Decoded::Identifier(r.uuid("SSTable identifier")?);
        }
        TAG_SCHEMA => {
            // uuid table, uuid version, str32 keyspace, str32 table, u32 n x {u8, str32, str32}
            r.uuid("table id")?;
            r.uuid("schema version")?;
            r.str32("keyspace name")?;
            r.str32("table name")?;
            let n = r.count("column count", 9)?;
            for i in 0..n {
                r.u8(&format!("column {i} kind"))?;
                r.str32(&format!("column {i} name"))?;
                r.str32(&format!("column {i} type"))?;
            }
        }
        TAG_COMPONENTS_DIGESTS => {
            // map<u32 component number, u32 CRC32>
            let n = r.count("digest count", 8)?;
            let mut map = BTreeMap::new();
            for i in 0..n {
                let at = r.offset();
                let c = r.u32(&format!("digest {i} component"))?;
                let crc = r.u32(&format!("digest {i} CRC32"))?;
                if map.insert(c, crc).is_some() {
                    return Err(Malformed(format!(
                        "digest {i} at offset {at}: component {c}{} listed twice",
                        component_name(c)
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    )));
                }
            }
            decoded = Decoded::Digests(map);
        }
        TAG_LARGE_DATA_RECORDS => {
            // u32 n x { u32 type, str32 pk, str32 ck, str32 column, u64 x 4 }
            let n = r.count("record count", 48)?;
            for i in 0..n {
                r.u32(&format!("record {i} type"))?;
                r.str32(&format!("record {i} partition key"))?;
                r.str32(&format!("record {i} clustering key"))?;
                r.str32(&format!("record {i} column"))?;
                r.take(32, &format!("record {i} counters"))?;
            }
        }
        _ => unreachable!("every named tag is handled"),
    }
    if r.remaining() != 0 {
        return Err(Malformed(format!(
            "{name} ends at offset {}, {} bytes before the end of its payload",
            r.offset(),
            r.remaining()
        )));
    }
    Ok(decoded)
}
