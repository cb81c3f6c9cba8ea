//! KMIP: a client for the keys DSE keeps on a KMIP server (FORMAT.md section 3).
//!
//! - [`ttlv`]: the KMIP 1.2 binary encoding, written here (see README, Design);
//! - [`client`]: requests and responses over mutually authenticated TLS (rustls), host failover,
//!   timeouts, one connection per run;
//! - [`config`]: `--kmip-config` TOML, or the `kmip_hosts` entry of dse.yaml / scylla.yaml;
//! - [`error`]: [`KmipError`], which all of them return;
//! - [`source`]: the [`crate::keys::KeySource`] that resolves `kmip://GROUP/ID` and enforces the
//!   key-state rules of a rekey.

pub mod client;
pub mod config;
pub mod error;
pub mod source;
pub mod ttlv;

pub use client::{Attributes, Client};
pub use config::{GroupConfig, KmipConfig};
pub use error::KmipError;
pub use source::{ActiveWant, KmipSource, LocateAs};

/// Tags used here (KMIP 1.2 spec section 9.1.3.1).
pub mod tag {
    pub const ACTIVATION_DATE: u32 = 0x420001;
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_INDEX: u32 = 0x420009;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ERROR_CONTINUATION_OPTION: u32 = 0x42000E;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const COMPROMISE_OCCURRENCE_DATE: u32 = 0x420021;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
    pub const CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x42002C;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const MAXIMUM_ITEMS: u32 = 0x42004F;
    pub const NAME: u32 = 0x420053;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const QUERY_FUNCTION: u32 = 0x420074;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_HEADER: u32 = 0x42007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_MESSAGE: u32 = 0x420080;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const SERVER_INFORMATION: u32 = 0x420088;
    pub const STATE: u32 = 0x42008D;
    pub const SYMMETRIC_KEY: u32 = 0x42008F;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
    pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
}

/// Operation codes.
pub mod op {
    pub const CREATE: u32 = 0x01;
    pub const LOCATE: u32 = 0x08;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;

    pub fn name(op: u32) -> &'static str {
        match op {
            CREATE => "Create",
            LOCATE => "Locate",
            GET => "Get",
            GET_ATTRIBUTES => "Get Attributes",
            ACTIVATE => "Activate",
            REVOKE => "Revoke",
            DESTROY => "Destroy",
            QUERY => "Query",
            _ => "operation",
        }
    }
}

pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 2;
pub const KEY_FORMAT_RAW: u32 = 1;
pub const ALGORITHM_AES: u32 = 3;
pub const NAME_TYPE_TEXT: u32 = 1;
pub const USAGE_ENCRYPT: i32 = 0x4;
pub const USAGE_DECRYPT: i32 = 0x8;
pub const RESULT_SUCCESS: u32 = 0;
/// Batch Error Continuation Option: Continue (KMIP 1.2 9.1.3.2.7).
pub const BATCH_CONTINUE: u32 = 1;
pub const REASON_ITEM_NOT_FOUND: u32 = 1;

/// Cryptographic Algorithm names for messages and `kmip list`.
pub fn algorithm_name(a: u32) -> String {
    match a {
        1 => "DES".into(),
        2 => "3DES".into(),
        3 => "AES".into(),
        4 => "RSA".into(),
        6 => "ECDSA".into(),
        0x0A => "HMAC-SHA256".into(),
        _ => format!("algorithm {a:#x}"),
    }
}

/// Result Reason names (KMIP 1.2 9.1.3.2.29, plus 2.0's Wrong Key Lifecycle State).
pub fn reason_name(r: u32) -> &'static str {
    match r {
        0x01 => "Item Not Found",
        0x02 => "Response Too Large",
        0x03 => "Authentication Not Successful",
        0x04 => "Invalid Message",
        0x05 => "Operation Not Supported",
        0x06 => "Missing Data",
        0x07 => "Invalid Field",
        0x08 => "Feature Not Supported",
        0x09 => "Operation Canceled By Requester",
        0x0A => "Cryptographic Failure",
        0x0B => "Illegal Operation",
        0x0C => "Permission Denied",
        0x0D => "Object Archived",
        0x0E => "Index Out Of Bounds",
        0x0F => "Application Namespace Not Supported",
        0x10 => "Key Format Type Not Supported",
        0x11 => "Key Compression Type Not Supported",
        0x43 => "Wrong Key Lifecycle State",
        0x100 => "General Failure",
        _ => "Unknown Reason",
    }
}

/// A managed object's State (FORMAT.md 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    PreActive,
    Active,
    Deactivated,
    Compromised,
    Destroyed,
    DestroyedCompromised,
    Unknown(u32),
}

impl State {
    pub fn from_code(c: u32) -> State {
        match c {
            1 => State::PreActive,
            2 => State::Active,
            3 => State::Deactivated,
            4 => State::Compromised,
            5 => State::Destroyed,
            6 => State::DestroyedCompromised,
            n => State::Unknown(n),
        }
    }

    pub fn code(self) -> u32 {
        match self {
            State::PreActive => 1,
            State::Active => 2,
            State::Deactivated => 3,
            State::Compromised => 4,
            State::Destroyed => 5,
            State::DestroyedCompromised => 6,
            State::Unknown(n) => n,
        }
    }

    /// Data under a key in this state may be decrypted (FORMAT.md 3).
    pub fn may_decrypt(self) -> bool {
        matches!(
            self,
            State::Active | State::Deactivated | State::Compromised
        )
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::PreActive => f.write_str("Pre-Active"),
            State::Active => f.write_str("Active"),
            State::Deactivated => f.write_str("Deactivated"),
            State::Compromised => f.write_str("Compromised"),
            State::Destroyed => f.write_str("Destroyed"),
            State::DestroyedCompromised => f.write_str("Destroyed Compromised"),
            State::Unknown(n) => write!(f, "state {n:#x}"),
        }
    }
}

/// Revocation Reason Codes offered by `kmip revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RevokeReason {
    /// Key Compromise: the key becomes Compromised (decrypt only)
    Compromise,
    /// Superseded: the key becomes Deactivated (decrypt only)
    Superseded,
    /// Cessation Of Operation: the key becomes Deactivated
    Cessation,
}

impl RevokeReason {
    pub fn code(self) -> u32 {
        match self {
            RevokeReason::Compromise => 2,
            RevokeReason::Superseded => 5,
            RevokeReason::Cessation => 6,
        }
    }
}
