//! sstable-rekey: offline re-encryption of DSE/HCD encrypted Cassandra SSTables.
//!
//! Data flows one way: [`rekey::find`] SSTables → [`rekey::plan`] what each becomes →
//! [`rekey::rewrite`] its records in parallel → [`rekey::commit`] with Cassandra's transaction-log
//! protocol → [`rekey::report`]. Beside this pipeline:
//! - [`sstable`] knows Cassandra's on-disk formats and nothing about keys;
//! - [`crypto`] knows ciphers and DSE/HCD envelopes and nothing about files;
//! - [`keys`] resolves key references to key material and knows nothing about SSTables.

/// `println!` that never panics. With stdout closed or failing (`| head`, a dead pipe, a full
/// disk under a redirect) `println!` panics mid-run; the work, the exit status and the JSON report
/// must come out right regardless, so output errors are ignored.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see [`outln!`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

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
