//! Command line of the `netwatch` binary.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{datapath::AttachMode, report::Format};

/// Loss-free network monitor: an XDP program counts every packet per source IP in the kernel,
/// netwatch reads the counters every interval and reports them.
#[derive(Debug, Parser)]
#[command(name = "netwatch", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to an interface and report its traffic every interval (needs root).
    Monitor(MonitorArgs),
}

/// `netwatch monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Interface to watch.
    #[arg(long, short = 'i')]
    pub iface: String,
    /// XDP attach mode: driver (native), skb (generic), or auto (driver, else skb).
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Time between two readings of the counters, e.g. 1s, 500ms, 2m.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Capacity of the kernel's per-source map; the least recently seen source is evicted
    /// when it is full.
    #[arg(long, default_value_t = netwatch_common::DEFAULT_MAX_SOURCES, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sources: u32,
    /// Sources listed per interval.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Replace an XDP program of another tool already attached to the interface.
    #[arg(long)]
    pub force: bool,
    /// Stop by itself after this long (for scripts and tests), e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write reports to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// `--mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    /// Driver mode, falling back to skb mode.
    Auto,
    /// Native XDP in the driver only.
    Driver,
    /// Generic XDP only.
    Skb,
}

impl From<ModeArg> for AttachMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Auto => Self::Auto,
            ModeArg::Driver => Self::Driver,
            ModeArg::Skb => Self::Skb,
        }
    }
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 1s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|err| format!("{text:?}: {err}"))?;
    if duration < Duration::from_millis(10) {
        return Err(format!("{text:?} is too short: at least 10ms"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("1ms").unwrap_err().contains("too short"));
    }

    #[test]
    fn monitor_arguments_parse() {
        let cli = Cli::try_parse_from([
            "netwatch",
            "monitor",
            "--iface",
            "eth0",
            "--mode",
            "skb",
            "--interval",
            "200ms",
            "--max-sources",
            "1024",
            "--format",
            "json",
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        let Command::Monitor(args) = cli.command;
        assert_eq!(args.iface, "eth0");
        assert_eq!(args.mode, ModeArg::Skb);
        assert_eq!(args.interval, Duration::from_millis(200));
        assert_eq!(args.max_sources, 1024);
        assert_eq!(args.format, Format::Json);
    }

    #[test]
    fn zero_max_sources_is_refused() {
        let err = Cli::try_parse_from(["netwatch", "monitor", "-i", "lo", "--max-sources", "0"])
            .expect_err("accepted an empty map");
        assert!(err.to_string().contains("max-sources"), "{err}");
    }
}
