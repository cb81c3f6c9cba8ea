//! The integration tests: one binary, a module per suite (as ripgrep's tests/ are), sharing
//! `support/`. Every suite runs the built `sstable-rekey` or calls the library, and judges the
//! result by a reference that is not the crate: the decryptor and the Cassandra startup model of
//! `support/`, the oracle of ../shared, a real PyKMIP server, real Cassandra SSTables.
//!
//! One suite: `cargo test --release --features failpoints --test it kmip::` (tools/test.sh
//! passes its arguments on, and starts the KMIP server and the oracle's venv first).

mod support;

// Where the data is, and what a run does with it.
mod find_scope;
mod key_identity;
mod recover;
mod staged;
// The cluster rollout with real ansible-core.
mod ansible;
mod testdata_matrix;
// The README's first command.
mod demo;
// Encrypted BTI indexes.
mod bti_indexes;
// Interop with the independent oracle of ../shared (real Cassandra SSTables).
mod oracle_bti;
mod oracle_interop;
// ScyllaDB encryption at rest: key files, commit log and hints, and the ScyllaDB part of testdata/ checked with
// the ScyllaDB oracle of ../shared.
mod scylla_commitlog;
mod scylla_crash;
mod scylla_hostile;
mod scylla_keys;
mod scylla_rekey;
mod scylla_testdata;
mod scylla_verify;
// KMIP against a real PyKMIP server, and the TTLV codec on random input.
mod kmip;
mod ttlv_fuzz;
// Never lose data: bad input, crashes, faults, the system-call sweep.
mod bad_input;
mod crash;
#[cfg(target_arch = "x86_64")]
mod fault_sweep;
mod faults;
// Secrets and hostile input.
mod hostile;
mod secrets;

#[global_allocator]
static ALLOC: support::alloc::Counting = support::alloc::Counting;
