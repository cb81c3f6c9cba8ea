//! KMIP 1.2 binary TTLV (FORMAT.md section 3; KMIP 1.2 spec section 9.1).
//!
//! An item is tag (3 bytes) · type (1) · length (u32be, of the value without padding) · value padded
//! with zeros to a multiple of 8. A Structure's value is its children, each padded. Everything a
//! server sends is hostile input: lengths are checked against what is left of the message before
//! anything is allocated, a message is at most [`MAX_MESSAGE`] bytes and nests at most [`MAX_DEPTH`]
//! structures, and every error is a value, never a panic. Byte strings (key material) live in
//! zeroizing buffers and are never printed by `Debug`.

use std::fmt;
use std::io::Read;

use zeroize::Zeroizing;

/// Largest message accepted from a server (header included). A Get of an AES key is a few hundred
/// bytes and a Locate of thousands of ids stays far below this.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Deepest structure nesting accepted (real messages nest about 6 deep).
pub const MAX_DEPTH: usize = 32;

/// Item types (the fourth byte of an item).
pub mod ty {
    pub const STRUCTURE: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const LONG: u8 = 0x03;
    pub const BIG_INTEGER: u8 = 0x04;
    pub const ENUMERATION: u8 = 0x05;
    pub const BOOLEAN: u8 = 0x06;
    pub const TEXT: u8 = 0x07;
    pub const BYTES: u8 = 0x08;
    pub const DATE_TIME: u8 = 0x09;
    pub const INTERVAL: u8 = 0x0A;
}

/// A decoding failure. Messages name the tag and offset; they never contain value bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlvError {
    #[error("truncated: item at offset {offset} needs {need} bytes, {have} left")]
    Truncated {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("message of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("structures nested deeper than {MAX_DEPTH} at offset {offset}")]
    TooDeep { offset: usize },
    #[error("item {tag:06X} at offset {offset}: type {ty:#04x} is not a KMIP 1.2 type")]
    UnknownType { tag: u32, ty: u8, offset: usize },
    #[error("item {tag:06X} at offset {offset}: length {len} is invalid for its type {ty:#04x}")]
    BadLength {
        tag: u32,
        ty: u8,
        len: u32,
        offset: usize,
    },
    #[error("item {tag:06X} at offset {offset}: Boolean value is neither 0 nor 1")]
    BadBoolean { tag: u32, offset: usize },
    #[error("item {tag:06X} at offset {offset}: Text String is not UTF-8")]
    BadText { tag: u32, offset: usize },
    #[error("{extra} bytes after the top-level item")]
    Trailing { extra: usize },
    #[error("top-level item is {tag:06X} type {ty:#04x}, expected {want:06X} (a Structure)")]
    Unexpected { tag: u32, ty: u8, want: u32 },
}

/// One TTLV item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: u32,
    pub value: Value,
}

/// An item's value, one variant per type.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    Long(i64),
    /// Two's-complement big-endian, a multiple of 8 bytes as on the wire.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    Text(String),
    /// Wiped on drop: key material travels in these.
    Bytes(Zeroizing<Vec<u8>>),
    /// Seconds since the Unix epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(v) => f.debug_list().entries(v).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::Long(v) => write!(f, "Long({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::Text(v) => write!(f, "Text({v:?})"),
            Value::Bytes(v) => write!(f, "Bytes({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06X} {:?}", self.tag, self.value)
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Value {
    pub fn type_byte(&self) -> u8 {
        match self {
            Value::Structure(_) => ty::STRUCTURE,
            Value::Integer(_) => ty::INTEGER,
            Value::Long(_) => ty::LONG,
            Value::BigInteger(_) => ty::BIG_INTEGER,
            Value::Enumeration(_) => ty::ENUMERATION,
            Value::Boolean(_) => ty::BOOLEAN,
            Value::Text(_) => ty::TEXT,
            Value::Bytes(_) => ty::BYTES,
            Value::DateTime(_) => ty::DATE_TIME,
            Value::Interval(_) => ty::INTERVAL,
        }
    }
}

impl Item {
    pub fn new(tag: u32, value: Value) -> Item {
        Item { tag, value }
    }
    pub fn structure(tag: u32, children: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(children))
    }
    pub fn integer(tag: u32, v: i32) -> Item {
        Item::new(tag, Value::Integer(v))
    }
    pub fn long(tag: u32, v: i64) -> Item {
        Item::new(tag, Value::Long(v))
    }
    pub fn enumeration(tag: u32, v: u32) -> Item {
        Item::new(tag, Value::Enumeration(v))
    }
    pub fn boolean(tag: u32, v: bool) -> Item {
        Item::new(tag, Value::Boolean(v))
    }
    pub fn text(tag: u32, v: impl Into<String>) -> Item {
        Item::new(tag, Value::Text(v.into()))
    }
    pub fn bytes(tag: u32, v: &[u8]) -> Item {
        Item::new(tag, Value::Bytes(Zeroizing::new(v.to_vec())))
    }
    pub fn date_time(tag: u32, v: i64) -> Item {
        Item::new(tag, Value::DateTime(v))
    }
    pub fn interval(tag: u32, v: u32) -> Item {
        Item::new(tag, Value::Interval(v))
    }

    /// Unpadded value length, as written in the length field.
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(c) => c.iter().map(Item::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::Long(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(b) => pad8(b.len().max(1)),
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
        }
    }

    /// Bytes this item takes on the wire, padding included.
    pub fn encoded_len(&self) -> usize {
        8 + pad8(self.value_len())
    }

    /// Appends the wire form of this item.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = self.value_len();
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_byte());
        out.extend_from_slice(&(len as u32).to_be_bytes());
        let start = out.len();
        match &self.value {
            Value::Structure(c) => c.iter().for_each(|i| i.encode_into(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Long(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&(*v as u64).to_be_bytes()),
            Value::BigInteger(b) => {
                // Sign-extend to a multiple of 8 bytes (spec 9.1.1.4).
                let fill = if b.first().is_some_and(|x| x & 0x80 != 0) {
                    0xFF
                } else {
                    0
                };
                out.resize(out.len() + len - b.len(), fill);
                out.extend_from_slice(b);
            }
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bytes(b) => out.extend_from_slice(b),
        }
        let written = out.len() - start;
        out.resize(out.len() + pad8(written) - written, 0);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one item filling `buf` (at most [`MAX_MESSAGE`] bytes).
    pub fn decode(buf: &[u8]) -> Result<Item, TtlvError> {
        if buf.len() > MAX_MESSAGE {
            return Err(TtlvError::TooLarge {
                len: buf.len(),
                max: MAX_MESSAGE,
            });
        }
        let mut d = Decoder { buf, pos: 0 };
        let item = d.item(0)?;
        if d.pos != buf.len() {
            return Err(TtlvError::Trailing {
                extra: buf.len() - d.pos,
            });
        }
        Ok(item)
    }

    // --- navigation -----------------------------------------------------------------------

    /// The children of a Structure (empty for other types).
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(c) => c,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: u32) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Every child with `tag`.
    pub fn all(&self, tag: u32) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }

    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_date_time(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&Zeroizing<Vec<u8>>> {
        match &self.value {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], TtlvError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(TtlvError::Truncated {
                offset: self.pos,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn item(&mut self, depth: usize) -> Result<Item, TtlvError> {
        let offset = self.pos;
        let h = self.take(8)?;
        let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let t = h[3];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let bad_len = || TtlvError::BadLength {
            tag,
            ty: t,
            len,
            offset,
        };
        let fixed = match t {
            ty::INTEGER | ty::ENUMERATION | ty::INTERVAL => Some(4),
            ty::LONG | ty::BOOLEAN | ty::DATE_TIME => Some(8),
            ty::STRUCTURE | ty::BIG_INTEGER | ty::TEXT | ty::BYTES => None,
            _ => return Err(TtlvError::UnknownType { tag, ty: t, offset }),
        };
        if fixed.is_some_and(|n| n != len) {
            return Err(bad_len());
        }
        let len = len as usize;
        // Checked against what is left before anything is allocated or read.
        let padded = pad8(len);
        let have = self.buf.len() - self.pos;
        if padded > have {
            return Err(TtlvError::Truncated {
                offset,
                need: 8 + padded,
                have: have + 8,
            });
        }
        let value = match t {
            ty::STRUCTURE => {
                if !len.is_multiple_of(8) {
                    return Err(bad_len());
                }
                if depth >= MAX_DEPTH {
                    return Err(TtlvError::TooDeep { offset });
                }
                let end = self.pos + len;
                let mut children = Vec::new();
                // Children may not run past the structure's own end.
                let outer = self.buf;
                self.buf = &outer[..end];
                let r = loop {
                    if self.pos >= end {
                        break Ok(());
                    }
                    match self.item(depth + 1) {
                        Ok(i) => children.push(i),
                        Err(e) => break Err(e),
                    }
                };
                self.buf = outer;
                r?;
                Value::Structure(children)
            }
            _ => {
                let v = self.take(padded)?;
                let v = &v[..len];
                match t {
                    ty::INTEGER => Value::Integer(i32::from_be_bytes(v.try_into().unwrap())),
                    ty::ENUMERATION => {
                        Value::Enumeration(u32::from_be_bytes(v.try_into().unwrap()))
                    }
                    ty::INTERVAL => Value::Interval(u32::from_be_bytes(v.try_into().unwrap())),
                    ty::LONG => Value::Long(i64::from_be_bytes(v.try_into().unwrap())),
                    ty::DATE_TIME => Value::DateTime(i64::from_be_bytes(v.try_into().unwrap())),
                    ty::BOOLEAN => match u64::from_be_bytes(v.try_into().unwrap()) {
                        0 => Value::Boolean(false),
                        1 => Value::Boolean(true),
                        _ => return Err(TtlvError::BadBoolean { tag, offset }),
                    },
                    ty::BIG_INTEGER => {
                        if len == 0 || !len.is_multiple_of(8) {
                            return Err(bad_len());
                        }
                        Value::BigInteger(v.to_vec())
                    }
                    ty::TEXT => match std::str::from_utf8(v) {
                        Ok(s) => Value::Text(s.to_string()),
                        Err(_) => return Err(TtlvError::BadText { tag, offset }),
                    },
                    _ => Value::Bytes(Zeroizing::new(v.to_vec())),
                }
            }
        };
        Ok(Item { tag, value })
    }
}

/// Reads one whole message (a Structure tagged `want`) from `r`: the 8-byte header first, its length
/// checked against [`MAX_MESSAGE`], then exactly that many bytes, in a buffer that grows with the
/// bytes received (at most twice them plus [`READ_CHUNK`]) and is wiped on drop.
pub fn read_message(r: &mut impl Read, want: u32) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).map_err(ReadError::Io)?;
    let tag = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if tag != want || h[3] != ty::STRUCTURE {
        return Err(ReadError::Ttlv(TtlvError::Unexpected {
            tag,
            ty: h[3],
            want,
        }));
    }
    if len > MAX_MESSAGE - 8 {
        return Err(ReadError::Ttlv(TtlvError::TooLarge {
            len: len.saturating_add(8),
            max: MAX_MESSAGE,
        }));
    }
    if !len.is_multiple_of(8) {
        return Err(ReadError::Ttlv(TtlvError::BadLength {
            tag,
            ty: h[3],
            len: len as u32,
            offset: 0,
        }));
    }
    // Grow with what actually arrives (a header may lie), never by reallocating in place: each
    // smaller buffer is wiped when the larger one replaces it, so no key bytes stay behind.
    let total = 8 + len;
    let mut buf = Zeroizing::new(vec![0u8; total.min(READ_CHUNK)]);
    buf[..8].copy_from_slice(&h);
    let mut filled = 8;
    while filled < total {
        if filled == buf.len() {
            let mut bigger = Zeroizing::new(vec![0u8; (buf.len() * 2).min(total)]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(ReadError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("response ends after {filled} of {total} bytes"),
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(buf)
}

/// First buffer for a response body; doubled as bytes arrive, up to the length the header gave.
pub const READ_CHUNK: usize = 16 << 10;

/// [`read_message`]'s failure: the transport's or the bytes'.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    Ttlv(TtlvError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// KMIP 1.2 spec, 9.1.2 "Examples": each item encodes to exactly these bytes and back.
    #[test]
    fn spec_examples() {
        let cases = [
            (
                Item::integer(0x420020, 8),
                "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
            ),
            (
                Item::long(0x420020, 123456789000000000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Item::new(
                    0x420020,
                    Value::BigInteger(hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
                ),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (
                Item::enumeration(0x420020, 255),
                "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
            (
                Item::boolean(0x420020, true),
                "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
            ),
            (
                Item::text(0x420020, "Hello World"),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (
                Item::bytes(0x420020, &[1, 2, 3]),
                "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
            ),
            (
                // Friday, March 14, 2008, 11:56:40 GMT
                Item::date_time(0x420020, 0x47DA67F8),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                Item::interval(0x420020, 10 * 86400),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Item::structure(
                    0x420020,
                    vec![
                        Item::enumeration(0x420004, 254),
                        Item::integer(0x420005, 255),
                    ],
                ),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ];
        for (item, wire) in cases {
            let wire = hex(wire);
            assert_eq!(item.encode(), wire, "{item:?}");
            assert_eq!(item.encoded_len(), wire.len());
            assert_eq!(Item::decode(&wire).unwrap(), item);
        }
    }

    #[test]
    fn big_integers_are_sign_extended() {
        let i = Item::new(1, Value::BigInteger(vec![0x80, 1]));
        assert_eq!(&i.encode()[8..], &hex("FF FF FF FF FF FF 80 01"));
        let i = Item::new(1, Value::BigInteger(vec![0x7F]));
        assert_eq!(&i.encode()[8..], &hex("00 00 00 00 00 00 00 7F"));
    }

    #[test]
    fn bad_items_are_typed_errors() {
        let e = |s: &str| Item::decode(&hex(s)).unwrap_err();
        assert!(matches!(
            e("42 00 20 | 02 | 00 00 00 08 | 00 00 00 08 00 00 00 00"),
            TtlvError::BadLength { .. }
        ));
        assert!(matches!(
            e("42 00 20 | 0B | 00 00 00 04 | 00 00 00 08 00 00 00 00"),
            TtlvError::UnknownType { ty: 0x0B, .. }
        ));
        assert!(matches!(
            e("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02"),
            TtlvError::BadBoolean { .. }
        ));
        assert!(matches!(
            e("42 00 20 | 07 | 00 00 00 02 | FF FE 00 00 00 00 00 00"),
            TtlvError::BadText { .. }
        ));
        assert!(matches!(
            e("42 00 20 | 08 | FF FF FF F0 | 01 02 03 00 00 00 00 00"),
            TtlvError::Truncated { .. }
        ));
        assert!(matches!(
            e("42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00 | 00"),
            TtlvError::Trailing { extra: 1 }
        ));
        // A structure whose child runs past the structure's own end.
        assert!(matches!(
            e("42 00 20 | 01 | 00 00 00 08 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00"),
            TtlvError::Truncated { .. }
        ));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut item = Item::integer(0x420001, 1);
        for _ in 0..MAX_DEPTH + 1 {
            item = Item::structure(0x420001, vec![item]);
        }
        assert!(matches!(
            Item::decode(&item.encode()),
            Err(TtlvError::TooDeep { .. })
        ));
    }

    #[test]
    fn read_message_checks_the_length_before_allocating() {
        let mut r = &hex("42 00 7B | 01 | FF FF FF F8")[..];
        assert!(matches!(
            read_message(&mut r, 0x42007B),
            Err(ReadError::Ttlv(TtlvError::TooLarge { .. }))
        ));
        let mut r = &hex("42 00 7B | 01 | 00 00 00 10 | 00 00")[..];
        assert!(matches!(
            read_message(&mut r, 0x42007B),
            Err(ReadError::Io(_))
        ));
        let mut r = &hex("42 00 78 | 01 | 00 00 00 00")[..];
        assert!(matches!(
            read_message(&mut r, 0x42007B),
            Err(ReadError::Ttlv(TtlvError::Unexpected { .. }))
        ));
    }

    #[test]
    fn debug_never_shows_bytes() {
        let i = Item::bytes(0x420043, &[0xAB; 16]);
        let s = format!("{i:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab, "),
            "{s}"
        );
    }
}
