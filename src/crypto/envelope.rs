//! DSE/HCD chunk envelopes (FORMAT.md 2.2, 2.3): which class wraps the compressed chunk how, the
//! key header multi-key providers put in front of every encrypted record, and the structural
//! checks that catch a wrong key the padding check lets through (about 1 time in 256).

use crate::error::Malformed;
use md5::{Digest, Md5};

use super::cipher::{AesKey, CipherSpec};

/// How the table's key provider identifies keys (FORMAT.md 2.1, 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// `KmipKeyProviderFactory`: header `0x00 · i32 n · n bytes of key id`.
    Kmip,
    /// `LocalFileSystemKeyProviderFactory`: no header; the key is the `secret_key_file` line.
    Local,
    /// `ReplicatedKeyProviderFactory` (DSE's default): header `0x00 · 16-byte UUID · MD5(UUID)`.
    Replicated,
}

pub const PROVIDER_PACKAGE: &str = "com.datastax.bdp.cassandra.crypto.";

impl ProviderKind {
    /// From the option map: `key_provider` (older: `secret_key_provider_factory_class`).
    pub fn from_option(value: Option<&str>) -> std::result::Result<ProviderKind, Malformed> {
        let v = value.unwrap_or("").trim();
        let short = v.strip_prefix(PROVIDER_PACKAGE).unwrap_or(v);
        match short {
            "KmipKeyProviderFactory" => Ok(ProviderKind::Kmip),
            "LocalFileSystemKeyProviderFactory" => Ok(ProviderKind::Local),
            "ReplicatedKeyProviderFactory" | "" => Ok(ProviderKind::Replicated),
            other => Err(Malformed(format!(
                "key_provider {other:?} is not one this tool knows"
            ))),
        }
    }

    pub fn factory_name(self) -> &'static str {
        match self {
            ProviderKind::Kmip => "KmipKeyProviderFactory",
            ProviderKind::Local => "LocalFileSystemKeyProviderFactory",
            ProviderKind::Replicated => "ReplicatedKeyProviderFactory",
        }
    }

    /// The provider's header bound (headerLength()), used for BTI page capacity (FORMAT.md 2.6).
    pub fn header_bound(self) -> usize {
        match self {
            ProviderKind::Local => 0,
            ProviderKind::Replicated => 33,
            ProviderKind::Kmip => 5 + 256,
        }
    }
}

/// The compression stage chained before encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Lz4,
    Snappy,
    Deflate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ChunkClass {
    /// HCD's `Encryptor`: `H || IV || E(plain chunk)`.
    Encryptor,
    /// DSE's `Encrypting*Compressor`: `i32be(len S1) || H || IV || E(S1)`, S1 = i32be(plain len) || compressed.
    Chained(Stage),
}

/// What a CompressionInfo class name means to this tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassKind {
    Encrypted(ChunkClass),
    /// A plain Apache compressor: nothing to rekey.
    Plain,
    Unknown,
}

impl ChunkClass {
    pub fn classify(simple_class: &str) -> ClassKind {
        match simple_class {
            "Encryptor" => ClassKind::Encrypted(ChunkClass::Encryptor),
            "EncryptingLZ4Compressor" => ClassKind::Encrypted(ChunkClass::Chained(Stage::Lz4)),
            "EncryptingSnappyCompressor" => {
                ClassKind::Encrypted(ChunkClass::Chained(Stage::Snappy))
            }
            "EncryptingDeflateCompressor" => {
                ClassKind::Encrypted(ChunkClass::Chained(Stage::Deflate))
            }
            "LZ4Compressor" | "SnappyCompressor" | "DeflateCompressor" | "ZstdCompressor"
            | "NoopCompressor" => ClassKind::Plain,
            _ => ClassKind::Unknown,
        }
    }
}

/// The key header at the start of an encrypted record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyHeader {
    /// No header: local-file provider, or a replicated chunk whose MD5 did not match.
    None,
    /// KMIP unique identifier.
    Kmip(String),
    /// Replicated key time-UUID, big-endian.
    Replicated([u8; 16]),
}

/// DSE refuses to write KMIP ids longer than maxKeyLength (default 256).
pub const MAX_KMIP_ID_LEN: usize = 256;

impl KeyHeader {
    pub fn encoded_len(&self) -> usize {
        match self {
            KeyHeader::None => 0,
            KeyHeader::Kmip(id) => 5 + id.len(),
            KeyHeader::Replicated(_) => 33,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            KeyHeader::None => {}
            KeyHeader::Kmip(id) => {
                out.push(0);
                out.extend_from_slice(&(id.len() as i32).to_be_bytes());
                out.extend_from_slice(id.as_bytes());
            }
            KeyHeader::Replicated(u) => {
                out.push(0);
                out.extend_from_slice(u);
                out.extend_from_slice(&Md5::digest(u));
            }
        }
    }

    /// Reads the header a provider of `kind` puts at the start of `buf`; returns it and its length.
    pub fn parse(
        kind: ProviderKind,
        buf: &[u8],
    ) -> std::result::Result<(KeyHeader, usize), Malformed> {
        match kind {
            ProviderKind::Local => Ok((KeyHeader::None, 0)),
            ProviderKind::Kmip => {
                if buf.len() < 5 {
                    return Err("too short for a KMIP key header".into());
                }
                if buf[0] != 0 {
                    return Err(Malformed(format!(
                        "KMIP key header version {} (only 0 exists)",
                        buf[0]
                    )));
                }
                let n = i32::from_be_bytes(buf[1..5].try_into().unwrap());
                if n < 0 || 5 + n as usize > buf.len() {
                    return Err(Malformed(format!(
                        "KMIP key id length {n} does not fit the record"
                    )));
                }
                let id = std::str::from_utf8(&buf[5..5 + n as usize])
                    .map_err(|_| "KMIP key id is not text".to_string())?;
                Ok((KeyHeader::Kmip(id.to_string()), 5 + n as usize))
            }
            ProviderKind::Replicated => {
                if buf.len() >= 33 && buf[0] == 0 && Md5::digest(&buf[1..17])[..] == buf[17..33] {
                    Ok((KeyHeader::Replicated(buf[1..17].try_into().unwrap()), 33))
                } else {
                    // DSE writes header-less chunks while its key table is not ready: local key.
                    Ok((KeyHeader::None, 0))
                }
            }
        }
    }
}

/// Canonical text form of a replicated key UUID.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// How one table's records are wrapped: class, provider and cipher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub class: ChunkClass,
    pub provider: ProviderKind,
    pub cipher: CipherSpec,
}

/// An encrypted chunk taken apart (no decryption yet).
#[derive(Debug)]
pub struct Opened<'a> {
    /// The chained classes' outer prefix: the length of S1.
    pub outer: Option<i32>,
    pub header: KeyHeader,
    pub header_len: usize,
    pub iv: &'a [u8],
    pub ciphertext: &'a [u8],
}

/// Payload bytes [`Envelope::check_payload`] reads: the 4-byte inner length, then at most a
/// 5-byte LZ4 or Snappy length or a 2-byte zlib header. One AES block.
pub const CHECKED_HEAD: usize = 16;

impl Envelope {
    /// Takes a Data.db chunk apart: `[i32 outer] H IV E(...)`.
    pub fn open_chunk<'a>(&self, chunk: &'a [u8]) -> std::result::Result<Opened<'a>, Malformed> {
        let (outer, body) = match self.class {
            ChunkClass::Encryptor => (None, chunk),
            ChunkClass::Chained(_) => {
                if chunk.len() < 4 {
                    return Err("shorter than its length prefix".into());
                }
                (
                    Some(i32::from_be_bytes(chunk[..4].try_into().unwrap())),
                    &chunk[4..],
                )
            }
        };
        self.open_record(outer, body)
    }

    /// Takes an unprefixed record apart: `H IV E(...)` (index pages, metadata components).
    pub fn open_record<'a>(
        &self,
        outer: Option<i32>,
        body: &'a [u8],
    ) -> std::result::Result<Opened<'a>, Malformed> {
        let (header, header_len) = KeyHeader::parse(self.provider, body)?;
        let rest = &body[header_len..];
        if rest.len() < self.cipher.iv_len {
            return Err("too short for its IV".into());
        }
        let (iv, ciphertext) = rest.split_at(self.cipher.iv_len);
        Ok(Opened {
            outer,
            header,
            header_len,
            iv,
            ciphertext,
        })
    }

    /// Checks a decrypted chunk payload against the structure its class implies (FORMAT.md 2.3).
    pub fn check_payload(
        &self,
        outer: Option<i32>,
        payload: &[u8],
        plain_len: usize,
    ) -> std::result::Result<(), Malformed> {
        let head = &payload[..payload.len().min(CHECKED_HEAD)];
        self.check_payload_head(outer, head, payload.len(), plain_len)
    }

    /// [`check_payload`](Self::check_payload) from the payload's length and its first
    /// [`CHECKED_HEAD`] bytes (all of it if shorter): everything the check reads. The fused
    /// rekey decrypts only the first and last block to check a chunk before re-encrypting it.
    pub fn check_payload_head(
        &self,
        outer: Option<i32>,
        payload: &[u8],
        payload_len: usize,
        plain_len: usize,
    ) -> std::result::Result<(), Malformed> {
        debug_assert_eq!(payload.len(), payload_len.min(CHECKED_HEAD));
        match self.class {
            ChunkClass::Encryptor => {
                if payload_len != plain_len {
                    return Err(Malformed(format!(
                        "decrypted {payload_len} bytes, the chunk holds {plain_len}"
                    )));
                }
            }
            ChunkClass::Chained(stage) => {
                if outer != Some(payload_len as i32) {
                    return Err(Malformed(format!(
                        "outer length prefix {} != decrypted length {payload_len}",
                        outer.unwrap_or(-1),
                    )));
                }
                if payload.len() < 4 {
                    return Err("decrypted payload shorter than its length prefix".into());
                }
                let inner = i32::from_be_bytes(payload[..4].try_into().unwrap());
                if inner as i64 != plain_len as i64 {
                    return Err(Malformed(format!(
                        "inner length prefix {inner} != chunk length {plain_len}"
                    )));
                }
                let body = &payload[4..];
                match stage {
                    Stage::Lz4 => {
                        if body.len() < 4 {
                            return Err("LZ4 chunk shorter than its length prefix".into());
                        }
                        let n = u32::from_le_bytes(body[..4].try_into().unwrap());
                        if n as u64 != plain_len as u64 {
                            return Err(Malformed(format!(
                                "LZ4 length prefix {n} != chunk length {plain_len}"
                            )));
                        }
                    }
                    Stage::Snappy => match snap::raw::decompress_len(body) {
                        Ok(n) if n == plain_len => {}
                        Ok(n) => {
                            return Err(Malformed(format!(
                                "Snappy length {n} != chunk length {plain_len}"
                            )))
                        }
                        Err(_) => return Err("not a Snappy block".into()),
                    },
                    Stage::Deflate => {
                        let ok = body.len() >= 2
                            && body[0] & 0x0F == 8
                            && u16::from_be_bytes([body[0], body[1]]).is_multiple_of(31);
                        if !ok {
                            return Err("not a zlib stream".into());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Decompresses a checked payload and confirms its length (`verify --deep`). Returns the plaintext.
    pub fn decompress(
        &self,
        payload: &[u8],
        plain_len: usize,
    ) -> std::result::Result<Vec<u8>, Malformed> {
        match self.class {
            ChunkClass::Encryptor => Ok(payload.to_vec()),
            ChunkClass::Chained(stage) => {
                let body = &payload[4..];
                let out = match stage {
                    Stage::Lz4 => lz4_flex::block::decompress(&body[4..], plain_len)
                        .map_err(|e| format!("LZ4 block does not decompress: {e}"))?,
                    Stage::Snappy => snap::raw::Decoder::new()
                        .decompress_vec(body)
                        .map_err(|e| format!("Snappy block does not decompress: {e}"))?,
                    Stage::Deflate => {
                        miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(body, plain_len)
                            .map_err(|e| format!("zlib stream does not inflate: {e:?}"))?
                    }
                };
                if out.len() != plain_len {
                    return Err(Malformed(format!(
                        "decompressed to {} bytes, the chunk holds {plain_len}",
                        out.len()
                    )));
                }
                Ok(out)
            }
        }
    }

    /// On-disk length of a record once its header is replaced (cipher and IV length unchanged).
    pub fn resized(old_len: usize, old_header: usize, new_header: usize) -> usize {
        old_len - old_header + new_header
    }

    /// Writes a sealed chunk: `[i32 outer] H IV E(payload)`; `iv` must be fresh from the CSPRNG.
    pub fn seal_chunk(
        &self,
        header: &KeyHeader,
        key: &AesKey,
        iv: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        if let ChunkClass::Chained(_) = self.class {
            out.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        }
        self.seal_record(header, key, iv, payload, out);
    }

    /// Writes `H IV E(payload)`.
    pub fn seal_record(
        &self,
        header: &KeyHeader,
        key: &AesKey,
        iv: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        header.write(out);
        out.extend_from_slice(iv);
        key.encrypt_append(self.cipher.mode, iv, payload, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmip_and_replicated_headers_round_trip() {
        let h = KeyHeader::Kmip("abc-1".into());
        let mut b = Vec::new();
        h.write(&mut b);
        assert_eq!(b, [0, 0, 0, 0, 5, b'a', b'b', b'c', b'-', b'1']);
        assert_eq!(KeyHeader::parse(ProviderKind::Kmip, &b).unwrap(), (h, 10));
        let u = parse_uuid("6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a").unwrap();
        let h = KeyHeader::Replicated(u);
        let mut b = Vec::new();
        h.write(&mut b);
        assert_eq!(b.len(), 33);
        assert_eq!(
            KeyHeader::parse(ProviderKind::Replicated, &b).unwrap(),
            (h, 33)
        );
        b[20] ^= 1; // MD5 no longer matches: DSE reads it as a header-less chunk
        assert_eq!(
            KeyHeader::parse(ProviderKind::Replicated, &b).unwrap(),
            (KeyHeader::None, 0)
        );
        assert_eq!(uuid_string(&u), "6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a");
    }

    #[test]
    fn kmip_header_lengths_are_bounded_by_the_record() {
        assert!(KeyHeader::parse(ProviderKind::Kmip, &[0, 0, 0, 1, 0, b'x']).is_err());
        assert!(KeyHeader::parse(ProviderKind::Kmip, &[0, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(KeyHeader::parse(ProviderKind::Kmip, &[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn providers_with_and_without_package() {
        assert_eq!(
            ProviderKind::from_option(Some(
                "com.datastax.bdp.cassandra.crypto.KmipKeyProviderFactory"
            )),
            Ok(ProviderKind::Kmip)
        );
        assert_eq!(
            ProviderKind::from_option(None),
            Ok(ProviderKind::Replicated)
        );
        assert!(ProviderKind::from_option(Some("Bogus")).is_err());
    }
}
