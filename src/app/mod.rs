//! The front end: one file per subcommand, each building options from the arguments, calling the
//! library, printing results and mapping them to the exit-status contract ([`exit`]).

pub mod bench;
pub mod bench_kit;
pub mod bench_scylla;
pub mod cli;
pub mod demo;
pub mod exit;
pub mod inspect;
pub mod kmip;
pub mod progress;
pub mod purge;
pub mod recover;
pub mod rekey;
pub mod scope;
pub mod stage;
pub mod verify;

use cli::{Cli, Command};
use exit::Exit;
use sstable_rekey::error::Error;

pub fn run(cli: Cli) -> Exit {
    let r = match cli.command {
        Command::Rekey(a) => rekey::run(&a),
        Command::Stage(a) => stage::run(&a),
        Command::Verify(a) => verify::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Recover(a) => recover::run(&a),
        Command::Purge(a) => purge::run(&a),
        Command::Demo(a) => crate::app::demo::run(a.dir.as_deref()),
        Command::Bench(a) => bench::run_command(&a),
        Command::Kmip(a) => crate::app::kmip::run(&a),
    };
    match r {
        Ok(code) => code,
        Err(Error::Interrupted) => {
            errln!("sstable-rekey: interrupted; the SSTable in flight was rolled back");
            Exit::Interrupted
        }
        Err(e) => {
            errln!("sstable-rekey: error: {e}");
            if e.is_config() || matches!(e, Error::Io { .. }) {
                Exit::Usage
            } else {
                Exit::Failed
            }
        }
    }
}
