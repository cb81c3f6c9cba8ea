//! Data.db (FORMAT.md 1.3): `chunkBytes_i || u32be CRC32(chunkBytes_i)` for every chunk, and
//! Digest.crc32 (FORMAT.md 1.4).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Checks chunk `index`'s CRC32 (the bytes are chunk || crc) and returns the chunk bytes.
pub fn checked_chunk<'a>(framed: &'a [u8], index: usize, path: &Path) -> Result<&'a [u8]> {
    if framed.len() < 4 {
        return Err(Error::corrupt(
            path,
            format!(
                "chunk {index}: {} bytes, too short for its CRC",
                framed.len()
            ),
        ));
    }
    let (chunk, crc) = framed.split_at(framed.len() - 4);
    let stored = u32::from_be_bytes(crc.try_into().unwrap());
    let computed = crc32fast::hash(chunk);
    if stored != computed {
        return Err(Error::corrupt(
            path,
            format!(
                "chunk {index}: CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x}); the file is corrupt: restore it from a backup or run nodetool scrub"
            ),
        ));
    }
    Ok(chunk)
}

/// Reads `len` bytes at `offset`, naming the file on a short read (a file truncated under us).
pub fn read_at(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(
                path,
                format!(
                    "short read of {} bytes at offset {offset}: the file shrank or is truncated",
                    buf.len()
                ),
            )
        } else {
            Error::io(path, "read", e)
        }
    })
}

/// Digest.crc32: ASCII decimal of the unsigned CRC32 of the whole Data.db, no newline.
pub fn format_digest(crc: u32) -> String {
    crc.to_string()
}

pub fn parse_digest(text: &str, path: &Path) -> Result<u32> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| Error::corrupt(path, format!("not a decimal CRC32: {:?}", text.trim())))
}
