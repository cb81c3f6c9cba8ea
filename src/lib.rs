//! sstable-rekey: offline re-encryption of DSE/HCD encrypted Cassandra SSTables.
//!
//! Data flows one way: [`rekey::find`] SSTables → [`rekey::plan`] what each becomes →
//! [`rekey::rewrite`] its records in parallel → [`rekey::commit`] with Cassandra's transaction-log
//! protocol → [`rekey::report`]. Beside this pipeline:
//! - [`sstable`] knows Cassandra's on-disk formats and nothing about keys;
//! - [`crypto`] knows ciphers and DSE/HCD envelopes and nothing about files;
//! - [`keys`] resolves key references to key material and knows nothing about SSTables;
//! - [`fsio`] holds the calls that create, link and remove files, and the rule they keep.
//!
//! The front end (arguments, exit codes, progress, printing) is the binary's (`src/app/`): the
//! library prints nothing.

pub mod crypto;
pub mod error;
pub mod fsio;
pub mod keys;
pub mod rekey;
pub mod sstable;
mod util;

pub use error::{Error, Result};
