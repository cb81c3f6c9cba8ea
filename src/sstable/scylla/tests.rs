//! Whole-file tests: hand-written Scylla.db bytes (FORMAT.md 4.5, 4.6 tables), hostile input, the
//! rekey rewrite. (Files written by the independent oracle are checked by the integration tests,
//! over the project's own generated ScyllaDB test data.)

use proptest::prelude::*;

use super::attributes::{ExtensionAttributes, ATTR_KEY_ID, ATTR_MASK, ATTR_OPTIONS};
use super::key_id::{decode_kmip_id, encode_kmip_id, scylla_accepts_as_uuid};
use super::metadata::ScyllaMetadata;
use super::options::{CipherMode, KeySource, KeySpec, ProviderKind};
use super::rekey::{rekey_scylla_db, RekeyTarget};
use super::EncryptionOptions;

const UUID: &[u8] = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff";

/// scylla_encryption_options (u32le lengths), 103 bytes: no key_provider (= local),
/// cipher_algorithm AES/CBC/PKCS5Padding, secret_key_file /k, secret_key_strength 128.
const OPTIONS_LOCAL: &[u8] = b"\x03\x00\x00\x00\
    \x10\x00\x00\x00cipher_algorithm\x14\x00\x00\x00AES/CBC/PKCS5Padding\
    \x0f\x00\x00\x00secret_key_file\x02\x00\x00\x00/k\
    \x13\x00\x00\x00secret_key_strength\x03\x00\x00\x00128";

/// scylla_encryption_options, 98 bytes: key_provider KmipKeyProviderFactory, kmip_host kmip1,
/// secret_key_strength 256 (cipher_algorithm absent: AES/CBC/PKCS5Padding).
const OPTIONS_KMIP: &[u8] = b"\x03\x00\x00\x00\
    \x0c\x00\x00\x00key_provider\x16\x00\x00\x00KmipKeyProviderFactory\
    \x09\x00\x00\x00kmip_host\x05\x00\x00\x00kmip1\
    \x13\x00\x00\x00secret_key_strength\x03\x00\x00\x00256";

/// A 2025.1–2026.1 Scylla.db: no tag 12, no CRC; entries not in tag order; an unknown tag 200.
fn no_crc() -> Vec<u8> {
    [
        &b"\x00\x00\x00\x06"[..], // 6 entries
        // tag 8 ScyllaVersion, 12 bytes: str32 "2025.1.0"
        b"\x00\x00\x00\x08\x00\x00\x00\x0c",
        b"\x00\x00\x00\x082025.1.0",
        // tag 1 Sharding, 26 bytes: 1 range {exclusive 0, token min+1, exclusive 1, token max}
        b"\x00\x00\x00\x01\x00\x00\x00\x1a",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x08\x80\x00\x00\x00\x00\x00\x00\x01",
        b"\x01\x00\x08\x7f\xff\xff\xff\xff\xff\xff\xff",
        // tag 3 ExtensionAttributes, 189 bytes: 3 pairs
        b"\x00\x00\x00\x03\x00\x00\x00\xbd",
        b"\x00\x00\x00\x03",
        b"\x00\x00\x00\x14encrypted_components",
        b"\x00\x00\x00\x04\xb3\x01\x00\x00", // u32le 0x1B3
        b"\x00\x00\x00\x19scylla_encryption_options",
        b"\x00\x00\x00\x67",
        OPTIONS_LOCAL,
        b"\x00\x00\x00\x05other",
        b"\x00\x00\x00\x04keep",
        // tag 10 SSTableIdentifier, 16 bytes
        b"\x00\x00\x00\x0a\x00\x00\x00\x10",
        UUID,
        // tag 200, unknown: 8 bytes carried as they are
        b"\x00\x00\x00\xc8\x00\x00\x00\x08",
        b"\xffunknown",
        // tag 2 Features, 8 bytes
        b"\x00\x00\x00\x02\x00\x00\x00\x08",
        b"\x00\x00\x00\x00\x00\x00\x00\x7f",
    ]
    .concat()
}

/// (offset, width) of every length or count field of the framing and of the known payloads in
/// [`no_crc`] (the options map inside tag 3 is read only by `encryption()`).
const NO_CRC_LENGTH_FIELDS: [(usize, usize); 18] = [
    (0, 4),   // entry count
    (8, 4),   // tag 8 size
    (12, 4),  // ScyllaVersion str32 length
    (28, 4),  // tag 1 size
    (32, 4),  // range count
    (37, 2),  // left token str16 length
    (48, 2),  // right token str16 length
    (62, 4),  // tag 3 size
    (66, 4),  // attribute count
    (70, 4),  // "encrypted_components" length
    (94, 4),  // its value length
    (102, 4), // "scylla_encryption_options" length
    (131, 4), // its value length
    (238, 4), // "other" length
    (247, 4), // its value length
    (259, 4), // tag 10 size
    (283, 4), // tag 200 size
    (299, 4), // tag 2 size
];

/// A 2026.2+ Scylla.db: every known tag 1–13 plus 200, not in tag order, KMIP key id, and the
/// trailing CRC32.
fn with_crc() -> Vec<u8> {
    let mut v = with_crc_body();
    v.extend_from_slice(b"\x9c\xdb\xc7\x7a"); // zlib.crc32 of the body, computed in Python
    v
}

fn with_crc_body() -> Vec<u8> {
    [
        &b"\x00\x00\x00\x0e"[..], // 14 entries
        // tag 8 ScyllaVersion: str32 "2026.2.0"
        b"\x00\x00\x00\x08\x00\x00\x00\x0c",
        b"\x00\x00\x00\x082026.2.0",
        // tag 1 Sharding, 26 bytes
        b"\x00\x00\x00\x01\x00\x00\x00\x1a",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x08\x80\x00\x00\x00\x00\x00\x00\x01",
        b"\x01\x00\x08\x7f\xff\xff\xff\xff\xff\xff\xff",
        // tag 5 LargeDataStats, 28 bytes: {1: max 0x1000, threshold 0x100000, above 0}
        b"\x00\x00\x00\x05\x00\x00\x00\x1c",
        b"\x00\x00\x00\x01\x00\x00\x00\x01",
        b"\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00",
        // tag 3 ExtensionAttributes, 207 bytes: 4 pairs, the key id first
        b"\x00\x00\x00\x03\x00\x00\x00\xcf",
        b"\x00\x00\x00\x04",
        b"\x00\x00\x00\x0dscylla_key_id",
        b"\x00\x00\x00\x021\x01", // KMIP id "1"
        b"\x00\x00\x00\x14encrypted_components",
        b"\x00\x00\x00\x04\xb3\x01\x00\x00",
        b"\x00\x00\x00\x19scylla_encryption_options",
        b"\x00\x00\x00\x62",
        OPTIONS_KMIP,
        b"\x00\x00\x00\x05other",
        b"\x00\x00\x00\x04keep",
        // tag 10 SSTableIdentifier
        b"\x00\x00\x00\x0a\x00\x00\x00\x10",
        UUID,
        // tag 200, unknown
        b"\x00\x00\x00\xc8\x00\x00\x00\x08",
        b"\xffunknown",
        // tag 2 Features
        b"\x00\x00\x00\x02\x00\x00\x00\x08",
        b"\x00\x00\x00\x00\x00\x00\x00\x7f",
        // tag 7 ScyllaBuildId: str32 "abc123"
        b"\x00\x00\x00\x07\x00\x00\x00\x0a",
        b"\x00\x00\x00\x06abc123",
        // tag 11 Schema, 61 bytes: table id, version, "ks", "t", 1 column {1, "pk", "int"}
        b"\x00\x00\x00\x0b\x00\x00\x00\x3d",
        UUID,
        UUID,
        b"\x00\x00\x00\x02ks\x00\x00\x00\x01t",
        b"\x00\x00\x00\x01\x01\x00\x00\x00\x02pk\x00\x00\x00\x03int",
        // tag 4 RunIdentifier
        b"\x00\x00\x00\x04\x00\x00\x00\x10",
        UUID,
        // tag 6 SSTableOrigin: str32 "memtable"
        b"\x00\x00\x00\x06\x00\x00\x00\x0c",
        b"\x00\x00\x00\x08memtable",
        // tag 9 ExtTimestampStats, 16 bytes: {1: 0x0102030405060708}
        b"\x00\x00\x00\x09\x00\x00\x00\x10",
        b"\x00\x00\x00\x01\x00\x00\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08",
        // tag 12 ComponentsDigests, 20 bytes: {2 (Data.db): deadbeef, 8 (Statistics.db): 01020304}
        b"\x00\x00\x00\x0c\x00\x00\x00\x14",
        b"\x00\x00\x00\x02\x00\x00\x00\x02\xde\xad\xbe\xef\x00\x00\x00\x08\x01\x02\x03\x04",
        // tag 13 LargeDataRecords, 55 bytes: 1 record {1, "pk", "", "c", 1, 2, 3, 4}
        b"\x00\x00\x00\x0d\x00\x00\x00\x37",
        b"\x00\x00\x00\x01\x00\x00\x00\x01",
        b"\x00\x00\x00\x02pk\x00\x00\x00\x00\x00\x00\x00\x01c",
        b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02",
        b"\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x04",
    ]
    .concat()
}

fn tags(m: &ScyllaMetadata) -> Vec<u32> {
    m.entries().iter().map(|e| e.tag).collect()
}

fn keys(a: &ExtensionAttributes) -> Vec<&[u8]> {
    a.pairs().iter().map(|(k, _)| k.as_slice()).collect()
}

#[test]
fn hand_written_file_without_crc_parses_and_serializes_back() {
    let buf = no_crc();
    assert_eq!(buf.len(), 311);
    let m = ScyllaMetadata::parse(&buf).unwrap();
    assert_eq!(tags(&m), [8, 1, 3, 10, 200, 2]);
    assert!(!m.has_trailing_crc());
    assert_eq!(m.components_digests(), None);
    assert_eq!(m.sstable_identifier().as_ref().map(|u| &u[..]), Some(UUID));
    assert_eq!(m.payload(200), Some(&b"\xffunknown"[..]));
    let a = m.extension_attributes().unwrap();
    assert_eq!(
        keys(a),
        [
            &b"encrypted_components"[..],
            b"scylla_encryption_options",
            b"other"
        ]
    );
    let enc = a.encryption().unwrap().unwrap();
    assert_eq!(enc.mask.bits(), 0x1B3);
    assert_eq!(enc.key_id, None);
    let spec = KeySpec::from_attributes(&enc).unwrap();
    assert_eq!(spec.provider.kind, ProviderKind::Local);
    assert_eq!(spec.provider.written, None);
    assert_eq!(
        spec.source,
        KeySource::Local {
            secret_key_file: Some("/k".into())
        }
    );
    assert_eq!(
        (
            spec.cipher.algorithm.as_str(),
            spec.cipher.mode,
            spec.cipher.key_bits
        ),
        ("AES/CBC/PKCS5Padding", CipherMode::Cbc, 128)
    );
    assert_eq!(m.serialize(), buf);
}

#[test]
fn hand_written_file_with_every_tag_and_the_crc_parses_and_serializes_back() {
    let buf = with_crc();
    let m = ScyllaMetadata::parse(&buf).unwrap();
    assert_eq!(tags(&m), [8, 1, 5, 3, 10, 200, 2, 7, 11, 4, 6, 9, 12, 13]);
    assert!(m.has_trailing_crc());
    let d = m.components_digests().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(m.component_digest("Data.db"), Some(0xdeadbeef));
    assert_eq!(m.component_digest("Statistics.db"), Some(0x01020304));
    assert_eq!(m.component_digest("Index.db"), None);
    assert_eq!(m.sstable_identifier().as_ref().map(|u| &u[..]), Some(UUID));
    let enc = m
        .extension_attributes()
        .unwrap()
        .encryption()
        .unwrap()
        .unwrap();
    let spec = KeySpec::from_attributes(&enc).unwrap();
    assert_eq!(
        spec.source,
        KeySource::Kmip {
            kmip_host: "kmip1".into(),
            key_id: "1".into()
        }
    );
    assert_eq!(spec.cipher.key_bits, 256);
    assert_eq!(m.serialize(), buf);
    // The CRC covers every byte before it.
    let body = with_crc_body();
    assert_eq!(
        crc32fast::hash(&body).to_be_bytes(),
        buf[body.len()..],
        "test vector"
    );
}

#[test]
fn every_truncation_is_an_error() {
    for buf in [no_crc(), with_crc()] {
        for cut in 0..buf.len() {
            assert!(ScyllaMetadata::parse(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }
    let e = ScyllaMetadata::parse(&with_crc()[..with_crc_body().len() + 2]).unwrap_err();
    assert!(e.contains("4-byte CRC32"), "{e}");
}

#[test]
fn every_value_of_every_length_field_byte_but_the_right_one_is_an_error() {
    let buf = no_crc();
    for &(f, width) in &NO_CRC_LENGTH_FIELDS {
        for i in f..f + width {
            for b in 0..=255u8 {
                if b == buf[i] {
                    continue;
                }
                let mut m = buf.clone();
                m[i] = b;
                assert!(
                    ScyllaMetadata::parse(&m).is_err(),
                    "byte {i} (field at {f}) set to {b:#04x}"
                );
            }
        }
    }
    // The little-endian option count is read through encryption(), not the framing.
    let mut m = buf.clone();
    m[135] = 4;
    let meta = ScyllaMetadata::parse(&m).unwrap();
    let e = meta
        .extension_attributes()
        .unwrap()
        .encryption()
        .unwrap_err();
    assert!(e.contains("scylla_encryption_options"), "{e}");
}

#[test]
fn with_the_crc_every_single_byte_change_is_an_error() {
    let buf = with_crc();
    for i in 0..buf.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut m = buf.clone();
            m[i] ^= x;
            assert!(ScyllaMetadata::parse(&m).is_err(), "byte {i} ^ {x:#04x}");
        }
    }
    let mut m = buf.clone();
    let n = m.len();
    m[n - 1] ^= 1;
    let e = ScyllaMetadata::parse(&m).unwrap_err();
    assert!(
        e.contains("stored 0x9cdbc77b") && e.contains("computed 0x9cdbc77a"),
        "{e}"
    );
}

#[test]
fn huge_counts_and_sizes_are_refused_before_allocating() {
    let e = ScyllaMetadata::parse(b"\xff\xff\xff\xff").unwrap_err();
    assert!(e.contains("entry count: count 4294967295"), "{e}");
    let e = ScyllaMetadata::parse(b"\x00\x00\x00\x01\x00\x00\x00\xc8\xff\xff\xff\xff").unwrap_err();
    assert!(e.contains("size 4294967295 runs past the end"), "{e}");
    // Attribute count, key length, option count at their maximum.
    let e =
        ScyllaMetadata::parse(b"\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x04\xff\xff\xff\xff")
            .unwrap_err();
    assert!(e.contains("attribute count: count 4294967295"), "{e}");
    let e = ScyllaMetadata::parse(
        b"\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x0c\x00\x00\x00\x01\xff\xff\xff\xff\x00\x00\x00\x00",
    )
    .unwrap_err();
    assert!(e.contains("attribute 0 key: length 4294967295"), "{e}");
    let mut huge_options = ExtensionAttributes::default();
    huge_options.set(ATTR_OPTIONS, b"\xff\xff\xff\x7f".to_vec());
    huge_options.set(ATTR_MASK, b"\x00\x00\x00\x00".to_vec());
    let e = huge_options.encryption().unwrap_err();
    assert!(e.contains("option count: count 2147483647"), "{e}");
    // Sharding's range count, Schema's column count, LargeDataRecords' record count.
    for (tag, payload) in [
        (1u8, &b"\xff\xff\xff\xff"[..]),
        (5, b"\x10\x00\x00\x00"),
        (13, b"\x00\x10\x00\x00"),
    ] {
        let mut f = b"\x00\x00\x00\x01\x00\x00\x00".to_vec();
        f.push(tag);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        let e = ScyllaMetadata::parse(&f).unwrap_err();
        assert!(e.contains("count") && e.contains("needs at least"), "{e}");
    }
}

#[test]
fn repeated_tags_trailing_bytes_and_short_payloads_are_refused() {
    // Two ScyllaVersion entries.
    let dup = b"\x00\x00\x00\x02\
        \x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00\x01a\
        \x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x00\x01b";
    let e = ScyllaMetadata::parse(dup).unwrap_err();
    assert!(
        e.contains("tag 8 ScyllaVersion appears again (first as entry 0)"),
        "{e}"
    );
    // Two unknown entries with the same tag are refused too.
    let dup = b"\x00\x00\x00\x02\x00\x00\x00\xc8\x00\x00\x00\x00\x00\x00\x00\xc8\x00\x00\x00\x00";
    assert!(ScyllaMetadata::parse(dup).is_err());
    for mut buf in [no_crc(), with_crc()] {
        buf.push(0);
        let e = ScyllaMetadata::parse(&buf).unwrap_err();
        assert!(e.contains("1 unexpected bytes"), "{e}");
    }
    // A Features payload one byte longer than a u64.
    let long =
        b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let e = ScyllaMetadata::parse(long).unwrap_err();
    assert!(
        e.contains("Features ends at offset 20, 1 bytes before the end"),
        "{e}"
    );
    // A ComponentsDigests listing a component twice.
    let twice = b"\x00\x00\x00\x01\x00\x00\x00\x0c\x00\x00\x00\x14\
        \x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02";
    let e = ScyllaMetadata::parse(twice).unwrap_err();
    assert!(e.contains("component 2 (Data.db) listed twice"), "{e}");
    // An empty file has no count.
    assert!(ScyllaMetadata::parse(b"").is_err());
    // No entries at all is a well-formed (if useless) file.
    assert_eq!(
        ScyllaMetadata::parse(b"\x00\x00\x00\x00")
            .unwrap()
            .serialize(),
        b"\x00\x00\x00\x00"
    );
}

type Pair<'a> = (&'a [u8], &'a [u8]);

/// A one-entry Scylla.db whose tag 3 holds these pairs (framed by hand here, no CRC).
fn with_attributes(pairs: &[Pair]) -> Vec<u8> {
    let mut payload = (pairs.len() as u32).to_be_bytes().to_vec();
    for (k, v) in pairs {
        payload.extend_from_slice(&(k.len() as u32).to_be_bytes());
        payload.extend_from_slice(k);
        payload.extend_from_slice(&(v.len() as u32).to_be_bytes());
        payload.extend_from_slice(v);
    }
    let mut f = b"\x00\x00\x00\x01\x00\x00\x00\x03".to_vec();
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&payload);
    f
}

#[test]
fn encryption_attribute_refusals_in_a_whole_file() {
    let mask = b"\xb3\x01\x00\x00";
    let cases: [(&[Pair], &str); 5] = [
        (&[(ATTR_OPTIONS, OPTIONS_LOCAL)], "without encrypted_components"),
        (
            &[(ATTR_OPTIONS, OPTIONS_LOCAL), (ATTR_MASK, b"\xb3\x01\x00\x80")],
            "bit(s) 31",
        ),
        (
            &[(ATTR_OPTIONS, OPTIONS_LOCAL), (ATTR_MASK, b"\xbb\x01\x00\x00")],
            "bit(s) 3 (TOC.txt)",
        ),
        (
            &[(ATTR_OPTIONS, OPTIONS_LOCAL), (ATTR_MASK, b"\xb7\x01\x00\x00")],
            "bit(s) 2 (Data.db)",
        ),
        (
            &[
                (
                    ATTR_OPTIONS,
                    b"\x02\x00\x00\x00\x01\x00\x00\x00k\x01\x00\x00\x00a\x01\x00\x00\x00k\x01\x00\x00\x00b",
                ),
                (ATTR_MASK, mask),
            ],
            "key \"k\" appears twice",
        ),
    ];
    for (pairs, want) in cases {
        let m = ScyllaMetadata::parse(&with_attributes(pairs)).unwrap();
        let e = m.extension_attributes().unwrap().encryption().unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
        assert!(m.rekeyed(&local_target()).is_err());
    }
    // A repeated attribute key is a framing error.
    let e = ScyllaMetadata::parse(&with_attributes(&[(ATTR_MASK, mask), (ATTR_MASK, mask)]))
        .unwrap_err();
    assert!(e.contains("repeats attribute 0"), "{e}");
}

fn local_target() -> RekeyTarget {
    RekeyTarget::Local {
        secret_key_file: "/etc/scylla/keys/new".into(),
        cipher_algorithm: "AES/ECB/PKCS5Padding".into(),
        secret_key_strength: 192,
    }
}

fn kmip_target(id: &str) -> RekeyTarget {
    RekeyTarget::Kmip {
        kmip_host: "kmip2".into(),
        key_id: id.into(),
        cipher_algorithm: "AES/CBC/PKCS5Padding".into(),
        secret_key_strength: 128,
    }
}

/// Checks that `new` differs from `old` only in tag 3's payload, where only the three encryption
/// attributes may differ, and that its CRC (if any) is right.
fn assert_only_tag3_changed(old: &[u8], new: &[u8]) -> ExtensionAttributes {
    let o = ScyllaMetadata::parse(old).unwrap();
    let n = ScyllaMetadata::parse(new).unwrap();
    assert_eq!(tags(&o), tags(&n));
    for (a, b) in o.entries().iter().zip(n.entries()) {
        if a.tag != 3 {
            assert_eq!(a, b, "tag {}", a.tag);
        }
    }
    assert_eq!(o.has_trailing_crc(), n.has_trailing_crc());
    if n.has_trailing_crc() {
        let (body, crc) = new.split_at(new.len() - 4);
        assert_eq!(crc32fast::hash(body).to_be_bytes(), crc);
    }
    let oa = o.extension_attributes().unwrap();
    let na = n.extension_attributes().unwrap();
    let others = |a: &ExtensionAttributes| -> Vec<(Vec<u8>, Vec<u8>)> {
        a.pairs()
            .iter()
            .filter(|(k, _)| k != ATTR_OPTIONS && k != ATTR_KEY_ID)
            .cloned()
            .collect()
    };
    assert_eq!(
        others(oa),
        others(na),
        "other attributes and the mask, in order"
    );
    na.clone()
}

#[test]
fn rekey_to_a_local_key() {
    for old in [no_crc(), with_crc()] {
        let new = rekey_scylla_db(&old, &local_target()).unwrap();
        let a = assert_only_tag3_changed(&old, &new);
        // The KMIP id is removed; the options keep their place.
        assert_eq!(
            keys(&a),
            [
                &b"encrypted_components"[..],
                b"scylla_encryption_options",
                b"other"
            ]
        );
        let options = EncryptionOptions::parse(a.get(ATTR_OPTIONS).unwrap()).unwrap();
        assert_eq!(
            options.pairs(),
            [
                ("cipher_algorithm".into(), "AES/ECB/PKCS5Padding".into()),
                (
                    "key_provider".into(),
                    "LocalFileSystemKeyProviderFactory".into()
                ),
                ("secret_key_file".into(), "/etc/scylla/keys/new".into()),
                ("secret_key_strength".into(), "192".into()),
            ]
        );
        let spec = KeySpec::from_attributes(&a.encryption().unwrap().unwrap()).unwrap();
        assert_eq!(spec.provider.kind, ProviderKind::Local);
        assert_eq!(
            (spec.cipher.mode, spec.cipher.key_bits),
            (CipherMode::Ecb, 192)
        );
    }
}

#[test]
fn rekey_to_a_kmip_key() {
    // No key id before: appended after the last pair.
    let old = no_crc();
    let new = rekey_scylla_db(&old, &kmip_target("new-key")).unwrap();
    let a = assert_only_tag3_changed(&old, &new);
    assert_eq!(
        keys(&a),
        [
            &b"encrypted_components"[..],
            b"scylla_encryption_options",
            b"other",
            b"scylla_key_id"
        ]
    );
    assert_eq!(a.get(ATTR_KEY_ID), Some(&b"new-key\x01"[..]));
    // The options, written out by hand: sorted by key, little-endian lengths.
    let want: &[u8] = b"\x04\x00\x00\x00\
        \x10\x00\x00\x00cipher_algorithm\x14\x00\x00\x00AES/CBC/PKCS5Padding\
        \x0c\x00\x00\x00key_provider\x16\x00\x00\x00KmipKeyProviderFactory\
        \x09\x00\x00\x00kmip_host\x05\x00\x00\x00kmip2\
        \x13\x00\x00\x00secret_key_strength\x03\x00\x00\x00128";
    assert_eq!(a.get(ATTR_OPTIONS), Some(want));

    // A key id before: replaced where it stands.
    let old = with_crc();
    let uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let new = rekey_scylla_db(&old, &kmip_target(uuid)).unwrap();
    let a = assert_only_tag3_changed(&old, &new);
    assert_eq!(
        keys(&a),
        [
            &b"scylla_key_id"[..],
            b"encrypted_components",
            b"scylla_encryption_options",
            b"other"
        ]
    );
    assert_eq!(a.get(ATTR_KEY_ID).unwrap().len(), 16);
    let spec = KeySpec::from_attributes(&a.encryption().unwrap().unwrap()).unwrap();
    assert_eq!(
        spec.source,
        KeySource::Kmip {
            kmip_host: "kmip2".into(),
            key_id: uuid.into()
        }
    );
    // The size field of tag 3 follows the new payload: options 98 -> 142 bytes, key id 2 -> 16.
    let m = ScyllaMetadata::parse(&new).unwrap();
    assert_eq!(m.payload(3).unwrap().len(), 207 - 98 + 142 - 2 + 16);
    assert_eq!(new.len(), old.len() - 207 + 265);
}

#[test]
fn rekey_refusals() {
    let old = with_crc();
    for (target, want) in [
        (kmip_target(""), "empty"),
        (
            kmip_target("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"),
            "8-4-4-4-12",
        ),
        (
            RekeyTarget::Kmip {
                kmip_host: "".into(),
                key_id: "k".into(),
                cipher_algorithm: "AES".into(),
                secret_key_strength: 128,
            },
            "kmip_host is empty",
        ),
        (
            RekeyTarget::Local {
                secret_key_file: "keys/new".into(),
                cipher_algorithm: "AES".into(),
                secret_key_strength: 128,
            },
            "not an absolute path",
        ),
        (
            RekeyTarget::Local {
                secret_key_file: "/k".into(),
                cipher_algorithm: "AES/CTR/NoPadding".into(),
                secret_key_strength: 128,
            },
            "mode \"CTR\"",
        ),
        (
            RekeyTarget::Local {
                secret_key_file: "/k".into(),
                cipher_algorithm: "AES".into(),
                secret_key_strength: 64,
            },
            "secret_key_strength \"64\"",
        ),
    ] {
        let e = rekey_scylla_db(&old, &target).unwrap_err();
        assert!(e.contains(want), "{target:?}: {e}");
    }
    // Nothing to rekey: no tag 3, or no options.
    let e = rekey_scylla_db(b"\x00\x00\x00\x00", &local_target()).unwrap_err();
    assert!(e.contains("no ExtensionAttributes"), "{e}");
    let plain = with_attributes(&[(ATTR_MASK, b"\x00\x00\x00\x00")]);
    let e = rekey_scylla_db(&plain, &local_target()).unwrap_err();
    assert!(e.contains("not encrypted"), "{e}");
}

/// A valid file with a few bytes changed, cut or inserted.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(no_crc()), Just(with_crc())],
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(mut buf, edits)| {
            for (at, byte, how) in edits {
                let i = at.index(buf.len().max(1));
                match how {
                    0 | 1 if i < buf.len() => buf[i] = byte,
                    2 => buf.insert(i.min(buf.len()), byte),
                    _ => buf.truncate(i),
                }
            }
            buf
        })
}

/// Everything a caller does with a Scylla.db: none of it may panic; what parses serializes back.
fn exercise(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = ScyllaMetadata::parse(buf) {
        prop_assert_eq!(&m.serialize()[..], buf);
        if let Some(a) = m.extension_attributes() {
            if let Ok(Some(enc)) = a.encryption() {
                let _ = KeySpec::from_attributes(&enc);
                for c in ["Data.db", "Index.db", "TOC.txt", "Rows.db", "x"] {
                    let _ = enc.is_encrypted(c);
                }
            }
        }
        for target in [local_target(), kmip_target("k")] {
            if let Ok(r) = m.rekeyed(&target) {
                prop_assert!(ScyllaMetadata::parse(&r.serialize()).is_ok());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&buf)?;
        let _ = ExtensionAttributes::parse(&buf);
        let _ = EncryptionOptions::parse(&buf);
        let _ = decode_kmip_id(&buf);
    }

    #[test]
    fn random_bytes_behind_a_plausible_header_never_panic(
        tag in 0u32..16,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut buf = b"\x00\x00\x00\x01".to_vec();
        buf.extend_from_slice(&tag.to_be_bytes());
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        exercise(&buf)?;
    }

    #[test]
    fn mutated_files_never_panic(buf in mutated()) {
        exercise(&buf)?;
    }

    #[test]
    fn mutated_options_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut o = OPTIONS_KMIP.to_vec();
        for (at, b) in edits {
            let i = at.index(o.len());
            o[i] = b;
        }
        if let Ok(opts) = EncryptionOptions::parse(&o) {
            // Serializing sorts the (unique) keys by their bytes and loses nothing.
            let mut sorted = opts.pairs().to_vec();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let back = EncryptionOptions::parse(&opts.serialize()).unwrap();
            prop_assert_eq!(back.pairs(), &sorted[..]);
        }
    }

    #[test]
    fn kmip_ids_that_encode_decode_to_themselves(id in "\\PC{0,40}|[-0-9a-fA-F +xX]{30,40}") {
        let accepted_as_uuid = scylla_accepts_as_uuid(&id);
        match encode_kmip_id(&id) {
            Ok(b) => {
                prop_assert_eq!(b.len() == 16, accepted_as_uuid);
                prop_assert_eq!(decode_kmip_id(&b).unwrap(), id);
            }
            Err(_) => prop_assert!(id.is_empty() || accepted_as_uuid),
        }
    }
}
