//! Ciphers and the DSE/HCD encryption envelopes (FORMAT.md 2). Nothing here knows about files.
//!
//! - [`cipher`]: AES-CBC/ECB with PKCS#5 padding ([`AesKey`]), over the SIMD [`kernel`]s;
//! - [`envelope`]: the DSE/HCD chunk envelopes, key headers and their structural checks;
//! - [`random`]: IVs and ids from the operating system's CSPRNG;
//! - [`scylla`]: ScyllaDB's file encryption at rest (FORMAT.md 4.3), 4 KiB blocks with ESSIV IVs.

pub mod cipher;
pub mod envelope;
pub mod kernel;
pub mod random;
#[cfg(test)]
pub(crate) mod reference;
pub mod scylla;

pub use cipher::{AesKey, CipherSpec, Mode};
pub use envelope::{ChunkClass, Envelope, KeyHeader, ProviderKind};

/// `crypto::fused`: the fused kernel's `ReJob` (what `AesKey::rekey_cbc_many` takes) and its CPU
/// check, under the path the rekey and the benchmarks use.
pub use kernel::fused;
