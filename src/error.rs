//! The library's error type. Every message says what broke, where (file, chunk, offset) and, where
//! there is one, what the operator can do next. Key material never appears in an error.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with bytes or text read from a file or a server, before the caller says where
/// they came from: it wraps this with the file, the chunk or the message it was reading
/// (`Error::corrupt(path, m)`), so a parser never has to know its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<String> for Malformed {
    fn from(s: String) -> Self {
        Malformed(s)
    }
}

impl From<&str> for Malformed {
    fn from(s: &str) -> Self {
        Malformed(s.to_string())
    }
}

impl std::ops::Deref for Malformed {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Malformed> for String {
    fn from(m: Malformed) -> Self {
        m.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The bytes on disk do not have the layout FORMAT.md describes (corrupt or truncated input).
    #[error("{path}: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    /// A well-formed file this tool deliberately does not handle.
    #[error("{path}: unsupported: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// A chunk or record did not decrypt to a valid structure with the key its header names.
    #[error("{path}: {what} does not decrypt with key {key}: {msg} (wrong key, or corrupt data)")]
    WrongKey {
        path: PathBuf,
        what: String,
        key: String,
        msg: String,
    },
    /// Key references, key files, keyrings: configuration problems found before any work.
    #[error("{0}")]
    Key(String),
    /// Bad command-line usage or configuration.
    #[error("{0}")]
    Usage(String),
    /// The operation was interrupted (Ctrl-C) and rolled back.
    #[error("interrupted")]
    Interrupted,
    /// A file changed while the run was using it (another process wrote it, or it was truncated).
    #[error("{path}: {what}")]
    Changed { path: PathBuf, what: String },
    /// An SSTable failed, and rolling its transaction back failed too: its log is left for
    /// `recover` (or Cassandra's startup) to finish by Cassandra's rule.
    #[error("{error}; and rolling back failed too: {rollback}. {next}")]
    RollbackFailed {
        error: Box<Error>,
        rollback: Box<Error>,
        /// What the operator does now.
        next: String,
    },
    /// The new SSTable is committed and live, but deleting the old one (or the log) failed.
    #[error("the new SSTable is committed and live, but cleaning up failed: {0}. Run `sstable-rekey recover` before starting Cassandra")]
    CleanupFailed(Box<Error>),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            op,
            source,
        }
    }

    pub fn corrupt(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn unsupported(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// An exclusive create or a link that found its name taken (`EEXIST`, from `fsio::Created`):
    /// another name must be chosen; nothing under this name is ours.
    pub fn is_name_taken(&self) -> bool {
        matches!(self, Error::Io { op, source, .. }
            if (*op == "create" || *op == "hard-link")
                && source.kind() == std::io::ErrorKind::AlreadyExists)
    }

    /// `error`, and the rollback after it failed with `rollback`: the log is left for `recover`.
    pub fn rollback_failed(error: Error, rollback: Error) -> Self {
        Error::RollbackFailed {
            error: Box::new(error),
            rollback: Box::new(rollback),
            next: "Run `sstable-rekey recover` before starting Cassandra".into(),
        }
    }

    /// Errors that are the operator's configuration (exit 2) rather than a per-SSTable failure.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Key(_) | Error::Usage(_))
    }

    /// A short machine-readable kind for JSON reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => "no_space",
            Error::Io { .. } => "io",
            Error::Corrupt { .. } => "corrupt",
            Error::Unsupported { .. } => "unsupported",
            Error::WrongKey { .. } => "wrong_key",
            Error::Key(_) => "key",
            Error::Usage(_) => "usage",
            Error::Interrupted => "interrupted",
            Error::Changed { .. } => "changed",
            Error::RollbackFailed { .. } => "rollback_failed",
            Error::CleanupFailed(_) => "cleanup_failed",
        }
    }
}
