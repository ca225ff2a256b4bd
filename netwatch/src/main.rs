//! The `netwatch` binary.

use std::process::ExitCode;

use clap::Parser as _;
use netwatch::{
    cli::{Cli, Command},
    history, known, monitor, replay,
};

fn main() -> ExitCode {
    let Cli { command } = Cli::parse();
    let result: Result<(), Box<dyn std::error::Error>> = match command {
        Command::Monitor(args) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(monitor::run(args)).map_err(Into::into),
            Err(err) => Err(format!("cannot start the runtime: {err}").into()),
        },
        Command::Replay(args) => replay::run(args)
            .map(|summary| {
                eprintln!(
                    "netwatch: replayed {} frames in {} intervals, {} alert lines{}",
                    summary.frames,
                    summary.tally.intervals,
                    summary.tally.alerts.values().sum::<u64>(),
                    if summary.refused > 0 {
                        format!("; {} frames refused", summary.refused)
                    } else {
                        String::new()
                    }
                );
            })
            .map_err(Into::into),
        Command::Known(args) => known::run(args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::History(args) => {
            history::run(args, &mut std::io::stdout().lock()).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netwatch: error: {err}");
            ExitCode::FAILURE
        }
    }
}
