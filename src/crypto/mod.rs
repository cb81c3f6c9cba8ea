//! Ciphers and the DSE/HCD encryption envelopes (FORMAT.md 2). Nothing here knows about files.

pub mod cipher;
pub mod envelope;
pub mod fused;
pub mod multibuf;
pub mod random;
#[cfg(test)]
pub(crate) mod reference;

pub use cipher::{AesKey, CipherSpec, Mode};
pub use envelope::{ChunkClass, Envelope, KeyHeader, ProviderKind};
