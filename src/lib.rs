//! sstable-rekey: offline re-encryption of DSE/HCD encrypted Cassandra SSTables.
//!
//! Data flows one way: [`rekey::find`] SSTables → [`rekey::plan`] what each becomes →
//! [`rekey::rewrite`] its records in parallel → [`rekey::commit`] with Cassandra's transaction-log
//! protocol → [`rekey::report`]. Beside this pipeline:
//! - [`sstable`] knows Cassandra's on-disk formats and nothing about keys;
//! - [`crypto`] knows ciphers and DSE/HCD envelopes and nothing about files;
//! - [`keys`] resolves key references to key material and knows nothing about SSTables.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod crypto;
pub mod demo;
pub mod error;
pub mod fsio;
pub mod keys;
pub mod kmip_cmd;
pub mod rekey;
pub mod sstable;
pub mod util;

pub use error::{Error, Result};
