//! [`KmipError`]: what can go wrong talking to a KMIP group, from its configuration (certificates,
//! host lists) to the server's answers. A leaf of `keys::kmip`: the configuration, the client and
//! the key source all return it, and it names none of them.

/// What can go wrong talking to a KMIP group. Messages name the group and host and say what to
/// check; they never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KmipError {
    /// No host of the group completed a connection and TLS handshake.
    #[error("KMIP group {group}: no server could be used ({}); nothing was sent", tried.join("; "))]
    Unreachable { group: String, tried: Vec<String> },
    /// The connection failed or timed out during a request.
    #[error("KMIP group {group}, server {host}: {msg}")]
    Transport {
        group: String,
        host: String,
        msg: String,
    },
    /// The server answered something that is not a valid KMIP response.
    #[error("KMIP group {group}, server {host}: invalid response: {msg}")]
    Protocol {
        group: String,
        host: String,
        msg: String,
    },
    /// The server answered with an Operation Failed result.
    #[error("KMIP group {group}: {op}{} failed: {} ({reason:#x}){}", id.as_deref().map(|i| format!(" of key {i}")).unwrap_or_default(), super::reason_name(*reason), if message.is_empty() { String::new() } else { format!(": {message}") })]
    Failed {
        group: String,
        op: &'static str,
        id: Option<String>,
        reason: u32,
        message: String,
    },
    /// The server's answer is valid KMIP but not what a rekey can use.
    #[error("KMIP group {group}: {msg}")]
    Unusable { group: String, msg: String },
    /// Local configuration: certificates, keys, host lists.
    #[error("{0}")]
    Config(String),
}

impl KmipError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, KmipError::Failed { reason, .. } if *reason == super::REASON_ITEM_NOT_FOUND)
    }
}

impl From<KmipError> for crate::Error {
    fn from(e: KmipError) -> Self {
        crate::Error::Key(e.to_string())
    }
}

/// Why one server of a group could not be connected to (TCP, TLS, timeouts), in words for the
/// operator; a group's failures are listed together in [`KmipError::Unreachable`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

impl From<String> for ConnectError {
    fn from(s: String) -> Self {
        ConnectError(s)
    }
}
