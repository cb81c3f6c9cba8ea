//! ScyllaDB SSTables (FORMAT.md section 4): the same steps as DSE's, for SSTables whose component
//! files ScyllaDB encrypts whole (4.3) and whose key Scylla.db names (4.6).
//!
//! - [`load`]: what an SSTable with encryption attributes in Scylla.db is, and which key it needs;
//! - [`check`]: every encrypted component decrypted with a key and checked the way a wrong key
//!   cannot pass (4.8): the proof `verify` gives and the evidence a rekey needs.

pub mod check;
pub mod load;

pub use load::{load, ScyllaLoaded};
