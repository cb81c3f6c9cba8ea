use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::Parser;
use sstable_rekey::cli::Cli;
use sstable_rekey::commands::{self, Exit, CANCEL};

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: async-signal-safe. Work stops at the next window and rolls back.
    CANCEL.store(true, Ordering::SeqCst);
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    // SAFETY: installing a handler that only stores to an atomic; and no core dumps, which could
    // hold key material.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    ExitCode::from(commands::run(cli) as u8)
}
