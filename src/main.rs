//! The `sstable-rekey` binary: the front end (src/app/) over the library.

/// `println!` that never panics. With stdout closed or failing (`| head`, a dead pipe, a full
/// disk under a redirect) `println!` panics mid-run; the work, the exit status and the JSON report
/// must come out right regardless, so output errors are ignored.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see [`outln!`]).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

mod app;

use std::process::ExitCode;

use clap::Parser;

use app::cli::Cli;
use app::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    sstable_rekey::fsio::no_core_dumps();
    app::exit::catch_ctrl_c();
    ExitCode::from(app::run(cli) as u8)
}
