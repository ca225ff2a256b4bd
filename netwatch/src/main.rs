//! The `netwatch` binary.

use std::process::ExitCode;

use clap::Parser as _;
use netwatch::{
    cli::{Cli, Command},
    cmd::{ban, capture, check, history, known, mitigate, monitor, replay, status, top},
    escape::escape_escaped,
    logging,
};

fn main() -> ExitCode {
    let Cli { log_level, command } = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version: what was asked for, on stdout.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // A usage error is a user error like any other: one line, exit 1.
            eprintln!(
                "netwatch: error: {} (see `netwatch --help`)",
                usage_error(&err)
            );
            return ExitCode::FAILURE;
        }
    };
    logging::init(log_level);
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
                log::info!(
                    "replayed {} frames in {} intervals, {} alert lines{}{}",
                    summary.frames,
                    summary.tally.intervals,
                    summary.tally.alerts.values().sum::<u64>(),
                    if summary.runts > 0 {
                        format!(
                            "; {} frames shorter than an Ethernet header, counted as malformed",
                            summary.runts
                        )
                    } else {
                        String::new()
                    },
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
        Command::Status(args) => {
            status::run(args, &mut std::io::stdout().lock()).map_err(Into::into)
        }
        Command::Top(args) => top::run(args).map_err(Into::into),
        Command::Ban(args) => ban::run(args, &mut std::io::stdout().lock()).map_err(Into::into),
        Command::Mitigate(args) => {
            mitigate::run(args, &mut std::io::stdout().lock()).map_err(Into::into)
        }
        Command::Capture(args) => {
            capture::run(args, &mut std::io::stdout().lock()).map_err(Into::into)
        }
        Command::Check(args) => check::run(args, &mut std::io::stdout().lock()).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Errors quote what they were given (a file's bytes, a daemon's answer): what
            // was not escaped already is, here.
            log::error!("{}", escape_escaped(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Clap's message on one line: its first paragraph (the error, and the names of missing
/// arguments when it lists them), without `error: `, tips and usage dropped.
fn usage_error(err: &clap::Error) -> String {
    let text = err.to_string();
    let message = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    if message.is_empty() {
        String::from("bad arguments")
    } else {
        message.to_owned()
    }
}
