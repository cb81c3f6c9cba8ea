//! ScyllaDB SSTables (FORMAT.md section 4): the same steps as DSE's, for SSTables whose component
//! files ScyllaDB encrypts whole (4.3) and whose key Scylla.db names (4.6).
//!
//! - [`load`]: what an SSTable with encryption attributes in Scylla.db is, and which key it needs;
//! - [`check`]: every encrypted component decrypted with a key and checked the way a wrong key
//!   cannot pass (4.8): the proof `verify` gives and the evidence a rekey needs;
//! - [`commitlog`]: the commit log segments and hints still under a key (4.10), for `verify`;
//! - [`follow_up`]: the ALTER TABLE statements and scylla.yaml changes a rekey prints;
//! - [`run`]: each SSTable decided and, through [`swap`], rekeyed (with its staged copy, if any);
//! - [`stage`]: the re-ciphered files written into a staging entry while the node serves;
//! - [`recover`]: the swaps an interrupted rekey left, finished or undone.

pub mod check;
pub mod commitlog;
pub mod follow_up;
pub mod load;
pub mod recover;
pub mod run;
pub mod stage;
pub mod swap;

pub use load::{load, ScyllaLoaded};
pub use run::ScyllaJob;

use crate::rekey::discover::Discovered;
use crate::rekey::plan::Load;

/// Splits loaded live SSTables into the ScyllaDB encrypted ones and the others.
pub fn split(live: Discovered) -> (Vec<ScyllaJob>, Discovered) {
    let mut scylla = Vec::new();
    let mut others = Vec::new();
    for (f, l) in live {
        match l {
            Ok(Load::Scylla(loaded)) => scylla.push(ScyllaJob {
                loaded,
                staged: None,
            }),
            l => others.push((f, l)),
        }
    }
    (scylla, others)
}

/// A rekey does not start while a ScyllaDB swap of an earlier run is unfinished.
pub fn refuse_unfinished(data_dirs: &[std::path::PathBuf]) -> crate::error::Result<()> {
    let left = recover::journals(data_dirs)?;
    match left.first() {
        None => Ok(()),
        Some(j) => Err(crate::error::Error::Usage(format!(
            "an earlier rekey of a ScyllaDB SSTable was interrupted ({}): run `sstable-rekey recover` (with ScyllaDB stopped) first",
            j.display()
        ))),
    }
}
