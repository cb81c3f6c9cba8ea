//! Test-only fault injection at each step of the commit protocol (issue: crash safety).
//!
//! `SSTABLE_REKEY_TEST_FAILPOINT=NAME[@K][:error]` makes the K-th (default first) pass through
//! failpoint NAME either abort the process on the spot (a crash: no destructors, no cleanup), or,
//! with `:error`, return an injected I/O error (the error path: rollback). Unset, a failpoint is
//! one load of a cached `Option`. Names are listed in [`NAMES`].
//!
//! Compiled in only with the cargo feature `failpoints` (tools/test.sh enables it): without it
//! [`hit`] is an empty inline function and the variable is never read, so a production binary has
//! no hidden crash switch.

pub const ENV: &str = "SSTABLE_REKEY_TEST_FAILPOINT";

/// Every failpoint, in the order a rekey passes them.
pub const NAMES: &[&str] = &[
    "txn.created",      // log file created, nothing in it
    "txn.add",          // ADD record appended and fsynced
    "data.written",     // new Data.db fully written, not yet fsynced
    "data.fsynced",     // new Data.db fsynced
    "index.written",    // encrypted index pages / Statistics.db rewritten (BTI)
    "component.linked", // after each new small file or hard link (use @K)
    "dir.fsynced",      // new files complete and the folder fsynced
    "txn.remove",       // REMOVE record appended and fsynced
    "txn.committing",   // just before COMMIT is appended (with :error, a failed COMMIT fsync)
    "txn.commit",       // COMMIT appended and fsynced: the commit point
    "old.deleted",      // after each obsolete file is deleted or moved aside (use @K)
    "log.removed",      // log removed: the transaction is over
    "obsolete.deleted", // after each file moved aside is purged (use @K)
    "scylla.doomed",    // ScyllaDB swap: the new generation's TOC.txt.tmp written and durable
    "scylla.committed", // ScyllaDB swap: the commit rename done and durable
];

/// True when this build honours [`ENV`] (built with the `failpoints` feature).
pub fn enabled() -> bool {
    cfg!(feature = "failpoints")
}

/// Passes failpoint `name`: nothing at all in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) -> crate::error::Result<()> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use armed::hit;

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use super::ENV;
    use crate::error::{Error, Result};

    struct Spec {
        name: String,
        nth: usize,
        error: bool,
    }

    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    static HITS: AtomicUsize = AtomicUsize::new(0);

    fn spec() -> &'static Option<Spec> {
        SPEC.get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (v, error) = match v.strip_suffix(":error") {
                Some(n) => (n.to_string(), true),
                None => (v, false),
            };
            let (name, nth) = match v.split_once('@') {
                Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
                None => (v, 1),
            };
            Some(Spec { name, nth, error })
        })
    }

    /// Passes failpoint `name`.
    pub fn hit(name: &'static str) -> Result<()> {
        let Some(s) = spec() else { return Ok(()) };
        if s.name != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != s.nth {
            return Ok(());
        }
        if s.error {
            return Err(Error::io(
                name,
                "injected failure",
                std::io::Error::other(format!("{ENV}={name}")),
            ));
        }
        eprintln!("sstable-rekey: failpoint {name}: aborting (test crash)");
        std::process::abort();
    }
}
