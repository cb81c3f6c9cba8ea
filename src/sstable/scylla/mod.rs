//! ScyllaDB's Scylla.db component and the encryption attributes it carries (FORMAT.md 4.1, 4.4–4.7).
//!
//! - [`metadata`]: the framing (`u32 count`, `{tag, size, payload}` entries, trailing CRC32 iff
//!   ComponentsDigests), checked strictly and written back byte for byte;
//! - [`attributes`]: ExtensionAttributes (tag 3), the three encryption attributes, the component
//!   numbers and the `encrypted_components` mask;
//! - [`options`]: what the options say about the key (provider, cipher, strength, source);
//! - [`key_id`]: `scylla_key_id` for KMIP (and the replicated shape, to refuse it by name);
//! - [`rekey`]: the Scylla.db a rekey writes;
//! - [`commitlog`]: the side file naming the key of a commit log segment or hints file (4.10).
//!
//! Bytes in, bytes out: nothing here reads files or knows keys. Errors are
//! [`Malformed`](crate::error::Malformed) messages naming the entry, attribute or option and the offset; the
//! caller adds the file. Failures of `ScyllaMetadata::parse` and `ExtensionAttributes::encryption`
//! are corrupt or unsupported input; failures of `KeySpec::from_attributes` are refusals of
//! well-formed options this tool does not handle.

pub mod attributes;
pub mod commitlog;
pub mod key_id;
pub mod metadata;
pub mod options;
pub mod rekey;
mod wire;

#[cfg(test)]
mod tests;

pub use attributes::{
    component_name, component_number, ComponentMask, EncryptionAttributes, EncryptionOptions,
    ExtensionAttributes,
};
pub use key_id::{decode_kmip_id, encode_kmip_id, replicated_key_uuid};
pub use metadata::{Entry, ScyllaMetadata};
pub use options::{CipherMode, KeySource, KeySpec, Provider, ProviderKind, ScyllaCipher};
pub use rekey::{rekey_scylla_db, RekeyTarget};
