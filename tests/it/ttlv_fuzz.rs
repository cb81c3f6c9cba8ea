//! Fuzz-style tests of the KMIP TTLV codec and response parsing on random and mutated input: no
//! panic, and allocation bounded by the input (a hostile server cannot make the client allocate
//! gigabytes). Allocation is measured per thread by a counting global allocator.

use proptest::prelude::*;
use sstable_rekey::keys::kmip::client::{
    attribute, parse_attributes, parse_key, parse_response, request, Op,
};
use sstable_rekey::keys::kmip::tag;
use sstable_rekey::keys::kmip::ttlv::{self, Item, Value};

use crate::support::alloc::peak_of;

/// Whatever the input, decoding allocates at most this much: items are at most one per 8 input
/// bytes, each a few dozen bytes of tree, values copied once.
/// `read_message` adds at most twice the bytes received plus its first 16 KiB buffer.
fn bound(n: usize) -> usize {
    20 * n + ttlv::READ_CHUNK + 4096
}

/// Realistic messages: a batched request and the responses a server sends.
fn corpus() -> Vec<Vec<u8>> {
    let get = |id: &str| Op {
        op: 0x0A,
        payload: vec![
            Item::text(tag::UNIQUE_IDENTIFIER, id),
            Item::enumeration(tag::KEY_FORMAT_TYPE, 1),
        ],
    };
    let key = Item::structure(
        tag::SYMMETRIC_KEY,
        vec![Item::structure(
            tag::KEY_BLOCK,
            vec![
                Item::enumeration(tag::KEY_FORMAT_TYPE, 1),
                Item::structure(
                    tag::KEY_VALUE,
                    vec![Item::bytes(tag::KEY_MATERIAL, &[7u8; 32])],
                ),
                Item::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                Item::integer(tag::CRYPTOGRAPHIC_LENGTH, 256),
            ],
        )],
    );
    let response = Item::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Item::structure(
                tag::RESPONSE_HEADER,
                vec![
                    Item::date_time(0x420092, 1_700_000_000),
                    Item::integer(tag::BATCH_COUNT, 2),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::enumeration(tag::OPERATION, 0x0B),
                    Item::enumeration(tag::RESULT_STATUS, 0),
                    Item::structure(
                        tag::RESPONSE_PAYLOAD,
                        vec![
                            Item::text(tag::UNIQUE_IDENTIFIER, "17"),
                            attribute("State", Value::Enumeration(4)),
                            attribute(
                                "Name",
                                Value::Structure(vec![
                                    Item::text(tag::NAME_VALUE, "k"),
                                    Item::enumeration(tag::NAME_TYPE, 1),
                                ]),
                            ),
                            attribute("Cryptographic Length", Value::Integer(256)),
                            attribute("Initial Date", Value::DateTime(1_700_000_000)),
                        ],
                    ),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    Item::enumeration(tag::OPERATION, 0x0A),
                    Item::enumeration(tag::RESULT_STATUS, 0),
                    Item::structure(
                        tag::RESPONSE_PAYLOAD,
                        vec![
                            Item::enumeration(tag::OBJECT_TYPE, 2),
                            Item::text(tag::UNIQUE_IDENTIFIER, "17"),
                            key,
                            Item::long(0x420020, -5),
                            Item::new(0x420021, Value::BigInteger(vec![0xFF; 16])),
                            Item::boolean(0x420022, true),
                            Item::interval(0x420023, 86400),
                        ],
                    ),
                ],
            ),
        ],
    );
    vec![request(&[get("17"), get("18")]).encode(), response.encode()]
}

/// Decodes and walks the whole response path; must never panic.
fn exercise(buf: &[u8]) {
    let _ = Item::decode(buf);
    let ops = [
        Op {
            op: 0x0B,
            payload: vec![],
        },
        Op {
            op: 0x0A,
            payload: vec![],
        },
    ];
    if let Ok(results) = parse_response(buf, &ops) {
        for p in results.iter().flatten().flatten() {
            let _ = parse_attributes(p, "17");
            let _ = parse_key(p, "17");
        }
    }
    let mut r = buf;
    let _ = ttlv::read_message(&mut r, tag::RESPONSE_MESSAGE);
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrite a 4-byte length field (offsets 4, 12, 20, ... of aligned items).
    Length(usize, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..24)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), any::<u32>()).prop_map(|(i, n)| Mutation::Length(i, n)),
    ]
}

fn apply(mut buf: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        match m {
            Mutation::Flip(i, b) => buf[i % n] ^= b | 1,
            Mutation::Truncate(i) => buf.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % n;
                buf.splice(at..at, v.iter().copied());
            }
            Mutation::Length(i, len) => {
                let at = (i % (n / 8).max(1)) * 8 + 4;
                if at + 4 <= n {
                    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_and_allocate_little(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let ((), peak) = peak_of(|| exercise(&buf));
        prop_assert!(peak <= bound(buf.len()), "peak {peak} for {} bytes", buf.len());
    }

    #[test]
    fn mutated_messages_never_panic_and_allocate_little(
        which in 0usize..2,
        ms in proptest::collection::vec(mutation(), 1..6),
    ) {
        let buf = apply(corpus()[which].clone(), &ms);
        let ((), peak) = peak_of(|| exercise(&buf));
        prop_assert!(peak <= bound(buf.len()), "peak {peak} for {} bytes", buf.len());
    }

    #[test]
    fn headers_claiming_anything_allocate_only_what_arrives(
        len in prop_oneof![any::<u32>(), (0u32..(1 << 17)).prop_map(|x| x * 8)],
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = vec![0x42, 0x00, 0x7B, 0x01];
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&body);
        let mut r = &buf[..];
        let (res, peak) = peak_of(|| ttlv::read_message(&mut r, tag::RESPONSE_MESSAGE));
        // Whatever the header claims (up to 1 MiB is accepted), 72 bytes received cost one
        // first buffer, not the claim.
        prop_assert!(peak <= ttlv::READ_CHUNK + 1024, "peak {peak}");
        if len as usize > ttlv::MAX_MESSAGE - 8 {
            prop_assert!(res.is_err());
            prop_assert!(peak < 4096, "refused header still allocated {peak}");
        }
    }
}

#[test]
fn the_corpus_round_trips() {
    for m in corpus() {
        let item = Item::decode(&m).unwrap();
        assert_eq!(item.encode(), m);
    }
}

#[test]
fn a_four_gigabyte_claim_allocates_nothing_big() {
    let buf = [0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8];
    let mut r = &buf[..];
    let (res, peak) = peak_of(|| ttlv::read_message(&mut r, tag::RESPONSE_MESSAGE));
    assert!(res.is_err());
    assert!(peak < 4096, "{peak}");
    // Inside a message: a Byte String claiming 4 GiB in 16 bytes.
    let item = [
        0x42, 0x00, 0x43, 0x08, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    let (res, peak) = peak_of(|| Item::decode(&item));
    assert!(res.is_err());
    assert!(peak < 4096, "{peak}");
}
