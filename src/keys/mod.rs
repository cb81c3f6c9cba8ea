//! Key references and key material. Nothing here knows about SSTables.
//!
//! A [`KeyRef`] is what the operator types (`file:PATH`, `kmip://GROUP/ID`); a [`KeyId`] is the
//! key a record on disk is under: the KMIP id of its header with the table's `kmip_host` group, a
//! replicated UUID, or the table's key file.
//! [`KeySource`]s turn ids into [`KeyMaterial`]: the DSE key files and the offline keyring here, a
//! KMIP client later. Material lives in zeroizing buffers and is never printed.

pub mod keyfile;
pub mod keyring;
pub mod kmip;
pub mod scylla_keyfile;
pub mod store;

pub use keyfile::KeyFiles;
pub use store::{Built, KeyStore, StoreSpec};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::crypto::envelope::{parse_uuid, uuid_string};
use crate::crypto::CipherSpec;
use crate::error::{Error, Result};

/// A key as the operator names it on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// `file:PATH`: a DSE local key file; the line is chosen by the table's cipher and strength.
    File(PathBuf),
    /// `kmip://GROUP/ID`: a KMIP key by unique identifier, in a `kmip_hosts` group.
    Kmip { group: String, id: String },
    /// `replicated:UUID`: a DSE replicated (system-key-wrapped) key, by UUID. Read side only.
    Replicated([u8; 16]),
}

impl FromStr for KeyRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeyRef> {
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(Error::Usage(
                    "file: needs a path, e.g. file:/etc/dse/conf/keys/new_key".into(),
                ));
            }
            return Ok(KeyRef::File(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("kmip://") {
            if let Some((group, id)) = rest.split_once('/') {
                if !group.is_empty() && !id.is_empty() && !group.contains(':') {
                    return Ok(KeyRef::Kmip {
                        group: group.to_string(),
                        id: id.to_string(),
                    });
                }
            }
            return Err(Error::Usage(format!(
                "{s:?}: a KMIP key reference is kmip://GROUP/ID (GROUP a kmip_hosts entry, ID the key's unique identifier)"
            )));
        }
        if let Some(u) = s.strip_prefix("replicated:") {
            return parse_uuid(u).map(KeyRef::Replicated).ok_or_else(|| {
                Error::Usage(format!(
                    "{s:?}: replicated:UUID wants a UUID like 6a8b6e30-7c2f-11ee-9a47-4d1b8d1e2f3a"
                ))
            });
        }
        Err(Error::Usage(format!(
            "{s:?} is not a key reference: use file:PATH (a DSE key file) or kmip://GROUP/ID"
        )))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::File(p) => write!(f, "file:{}", p.display()),
            KeyRef::Kmip { group, id } => write!(f, "kmip://{group}/{id}"),
            KeyRef::Replicated(u) => write!(f, "replicated:{}", uuid_string(u)),
        }
    }
}

impl KeyRef {
    /// The on-disk identity this reference denotes (a key file by its [`canonical`] path).
    pub fn id(&self) -> Result<KeyId> {
        Ok(match self {
            KeyRef::File(p) => KeyId::File(canonical(p)?),
            KeyRef::Kmip { group, id } => KeyId::Kmip {
                group: group.clone(),
                id: id.clone(),
            },
            KeyRef::Replicated(u) => KeyId::Replicated(*u),
        })
    }
}

/// The absolute, symlink-resolved path of a key file (key files are compared by path). A file
/// that is not there is taken as named (made absolute): a key named by an SSTable of another
/// host. Any other error resolving it is an error, never "as named": a symlinked key would then
/// be another key to every comparison, and the permission checks of the new key would look at
/// the link's folders instead of the file's.
pub fn canonical(p: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(p) {
        Ok(c) => Ok(c),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map(|d| d.join(p))
                    .unwrap_or_else(|_| p.to_path_buf())
            })
        }
        Err(e) => Err(Error::io(p, "resolve key file path", e)),
    }
}

/// The key a record on disk is under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyId {
    /// A KMIP key: the id of the record's header in the group of the table's `kmip_host` option
    /// (FORMAT.md 2.1, 2.2). The same id in two groups is two keys (two servers).
    Kmip {
        group: String,
        id: String,
    },
    Replicated([u8; 16]),
    /// A local key file (header-less records), by canonical path.
    File(PathBuf),
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyId::Kmip { group, id } => write!(f, "kmip://{group}/{id}"),
            KeyId::Replicated(u) => write!(f, "replicated:{}", uuid_string(u)),
            KeyId::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Raw key bytes, wiped when dropped. Deliberately not `Debug`/`Display`.
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        KeyMaterial(bytes)
    }

    pub fn bits(&self) -> u32 {
        self.0.len() as u32 * 8
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// One place keys come from. A KMIP client implements this too.
pub trait KeySource: Send + Sync {
    /// Human name for messages ("keyring /etc/…", "KMIP group kmip1").
    fn describe(&self) -> String;
    /// The key `id` names, for a table using `cipher`; `Ok(None)` when this source does not have it.
    fn fetch(&self, id: &KeyId, cipher: &CipherSpec) -> Result<Option<KeyMaterial>>;
    /// What the operator should know since the last call (the library prints nothing).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Constant-time equality of two keys' bytes (their lengths are not secret: a 128-bit key is
/// never equal to a 256-bit one). `subtle` (already in the build through rustls) rather than a
/// hand-written loop: it keeps the compiler from turning the comparison back into an early exit.
pub fn material_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Why a file of key material (or of configuration naming it) cannot be used: it names the file
/// and the reason (not there, not a regular file, too large, unreadable).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl From<String> for Unreadable {
    fn from(s: String) -> Self {
        Unreadable(s)
    }
}

impl From<Unreadable> for String {
    fn from(u: Unreadable) -> Self {
        u.0
    }
}

/// Opens a file of key material (or of configuration naming it) without ever blocking: opened
/// with `O_NONBLOCK` (a FIFO with no writer would hang a plain open or read forever), then the
/// opened descriptor's own metadata must say regular file, and it is read through that same
/// descriptor (no window between the check and the read). Returns its metadata (for mode
/// checks) and its bytes in a zeroizing buffer, at most `max` bytes. Errors name the file.
pub fn read_regular(
    path: &Path,
    what: &str,
    max: u64,
) -> std::result::Result<(std::fs::Metadata, Zeroizing<Vec<u8>>), Unreadable> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{what} {}: stat: {e}", path.display()))?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let kind = if t.is_fifo() {
            "a FIFO (named pipe)"
        } else if t.is_dir() {
            "a folder"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "not a plain file"
        };
        return Err(Unreadable(format!(
            "{what} {}: not a regular file ({kind}); key material is read from regular files only",
            path.display()
        )));
    }
    if meta.len() > max {
        return Err(Unreadable(format!("{what} {}: too large", path.display())));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // Bounded even if the file grows while being read.
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what} {}: read: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(Unreadable(format!("{what} {}: too large", path.display())));
    }
    Ok((meta, buf))
}

/// Refuses key material files that group or others can read (FORMAT.md 2.4).
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Key(format!(
            "{}: mode {mode:03o} lets other users read key material; run `chmod 600 {}` (and check who may have read it)",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fault sweep (`stage-scylla:readlink:*:EIO`): a key file path that could not
    /// be resolved was taken as named, and the run went on as if it had been. Only a file that is
    /// not there is; any other error (here a symlink loop) is an error.
    #[test]
    fn a_key_file_path_that_cannot_be_resolved_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("absent.key");
        assert_eq!(canonical(&missing).unwrap(), missing);
        let under_file = d.path().join("file");
        std::fs::write(&under_file, b"").unwrap();
        assert_eq!(
            canonical(&under_file.join("k")).unwrap(),
            under_file.join("k")
        );
        std::os::unix::fs::symlink(d.path().join("b"), d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("b")).unwrap();
        let looped = d.path().join("a/new.key");
        let e = canonical(&looped).unwrap_err().to_string();
        assert!(e.contains("resolve key file path"), "{e}");
        assert!(KeyRef::File(looped).id().is_err());
    }

    #[test]
    fn key_refs_parse_and_print() {
        let r: KeyRef = "kmip://kmip1/42".parse().unwrap();
        assert_eq!(
            r,
            KeyRef::Kmip {
                group: "kmip1".into(),
                id: "42".into()
            }
        );
        assert_eq!(r.to_string(), "kmip://kmip1/42");
        assert!(matches!(
            "file:/k".parse::<KeyRef>().unwrap(),
            KeyRef::File(_)
        ));
        assert!("kmip://nogroup".parse::<KeyRef>().is_err());
        assert!("/etc/key".parse::<KeyRef>().is_err());
        assert!("replicated:xyz".parse::<KeyRef>().is_err());
    }

    #[test]
    fn a_kmip_key_is_its_group_and_its_id() {
        let a: KeyRef = "kmip://kmip1/42".parse().unwrap();
        let b: KeyRef = "kmip://kmip2/42".parse().unwrap();
        assert_ne!(a.id().unwrap(), b.id().unwrap());
        assert_eq!(a.id().unwrap().to_string(), "kmip://kmip1/42");
    }

    #[test]
    fn material_compares_every_byte() {
        assert!(material_eq(&[7; 16], &[7; 16]));
        for i in 0..16 {
            let mut b = [7u8; 16];
            b[i] ^= 0x80;
            assert!(!material_eq(&[7; 16], &b), "byte {i}");
        }
        assert!(!material_eq(&[7; 16], &[7; 32]));
    }

    #[test]
    fn a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(made.success());
        let Err(e) = read_regular(&p, "key file", 1 << 20) else {
            panic!("a FIFO was read")
        };
        assert!(
            e.0.contains("not a regular file") && e.0.contains("FIFO"),
            "{e}"
        );
        let Err(e) = read_regular(dir.path(), "key file", 1 << 20) else {
            panic!("a folder was read")
        };
        assert!(e.0.contains("folder"), "{e}");
    }
}
