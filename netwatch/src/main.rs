//! The `netwatch` binary.

use std::process::ExitCode;

use clap::Parser as _;
use netwatch::{
    cli::{Cli, Command},
    monitor,
};

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("netwatch: error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Monitor(args) => runtime.block_on(monitor::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netwatch: error: {err}");
            ExitCode::FAILURE
        }
    }
}
