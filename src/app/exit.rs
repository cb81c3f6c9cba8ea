//! The exit-status contract (0 ok, 1 partial failure, 2 before any work, 130 Ctrl-C), and the
//! Ctrl-C flag the work checks between windows.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Interrupted = 130,
}

/// Set by the SIGINT handler; checked between windows of work.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe. Work stops at the next window and rolls back.
    CANCEL.store(true, Ordering::SeqCst);
}

/// Ctrl-C sets [`CANCEL`] instead of ending the process.
pub fn catch_ctrl_c() {
    sstable_rekey::fsio::on_sigint(on_sigint);
}
