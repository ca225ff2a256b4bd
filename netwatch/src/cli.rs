//! Command line of the `netwatch` binary.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Config, ConfigError, IfaceNameError, ModeArg, SourceMapArg, check_iface_name},
    datapath::AttachMode,
    duration::{DurationError, parse_duration},
    mitigate::{BanTtlError, check_ban_ttl},
    report::Format,
};

/// What `netwatch --version` prints: the version, the git commit it was built from
/// (`unknown` outside a checkout) and the build id of the XDP object it embeds and loads (a
/// hash of the object's bytes).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NETWATCH_GIT_COMMIT"),
    ", eBPF object ",
    env!("NETWATCH_EBPF_BUILD_ID"),
    ")"
);

/// Loss-free network monitor: an XDP program counts every packet per source IP in the kernel,
/// netwatch reads the counters every interval and reports them.
#[derive(Debug, Parser)]
#[command(name = "netwatch", version = VERSION)]
pub struct Cli {
    /// Least severe messages written to stderr: error, warn, info, debug, trace or off
    /// (default: RUST_LOG, else info).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<log::LevelFilter>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to an interface and report its traffic and alerts every interval (needs root).
    Monitor(MonitorArgs),
    /// Feed a pcap or pcapng capture through the same XDP program, collection, detection and
    /// reports, on the capture's clock (needs root: the program runs in the kernel).
    Replay(ReplayArgs),
    /// List or edit the known sources that unknown-source detection compares against.
    Known(KnownArgs),
    /// Query the history in the store: a source's traffic, recent alerts, top sources.
    History(HistoryArgs),
    /// Ask the running daemon what it sees, through its control socket: interfaces, uptime,
    /// counts, blind spots, the last alerts, the store and the webhooks.
    Status(StatusArgs),
    /// A live view of the running daemon in the terminal: rates, blind spots, top sources,
    /// alerts and events (or, with --iface and no daemon, of an interface watched by top's
    /// own monitor).
    Top(TopArgs),
    /// Ban, unban and list bans of the running daemon, through its control socket (needs
    /// `[mitigate] mode` "dry-run" or "drop" in the daemon's configuration).
    Ban(BanArgs),
    /// List, add and remove the signature rules of the running daemon (those of
    /// `[[mitigate.signatures]]`, and by hand), through its control socket.
    Mitigate(MitigateArgs),
    /// Capture the frames of a source, a prefix or a destination now, for a time, into a
    /// pcapng file of the running daemon's captures' folder, through its control socket.
    Capture(CaptureArgs),
    /// Say, without loading or attaching anything, whether this machine can run netwatch:
    /// kernel, BTF, privileges, bpffs, and each interface's driver and native XDP. Exits 1
    /// when something it needs is missing.
    Check(CheckArgs),
}

/// `netwatch check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// TOML configuration file, for the interfaces to check (`monitor.iface`, `ifaces`).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// An interface to check (repeatable); default: those of the configuration.
    #[arg(long, short = 'i', value_parser = parse_iface)]
    pub iface: Vec<String>,
}

/// `netwatch ban`.
#[derive(Debug, Args)]
pub struct BanArgs {
    /// TOML configuration file, for `monitor.control` (before or after the action).
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: `monitor.control` in the config, else
    /// /run/netwatch/control.sock), before or after the action.
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: BanAction,
}

/// `netwatch mitigate`.
#[derive(Debug, Args)]
pub struct MitigateArgs {
    /// TOML configuration file, for `monitor.control` (before or after the action).
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: `monitor.control` in the config, else
    /// /run/netwatch/control.sock), before or after the action.
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: MitigateAction,
}

/// `netwatch capture`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("subject").required(true)))]
pub struct CaptureArgs {
    /// TOML configuration file, for `monitor.control`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: `monitor.control` in the config, else
    /// /run/netwatch/control.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// The frames from this address.
    #[arg(long, group = "subject")]
    pub source: Option<IpAddr>,
    /// The frames from this network, ADDR/LEN.
    #[arg(long, group = "subject", value_name = "ADDR/LEN")]
    pub prefix: Option<String>,
    /// The frames to this address or network (ADDR or ADDR/LEN).
    #[arg(long, group = "subject")]
    pub destination: Option<String>,
    /// How long, 1s to 1h.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
}

/// `netwatch mitigate` actions.
#[derive(Debug, Subcommand)]
pub enum MitigateAction {
    /// The signature rules in force, with what each matched and dropped so far.
    List {
        /// The daemon's answer, one JSON line (the protocol's, see the README).
        #[arg(long)]
        json: bool,
    },
    /// Set a signature rule by hand: its frames are dropped (or rate-limited) in XDP, only
    /// counted in dry-run mode, until the TTL ends; told to the notify commands as any rule.
    Add {
        /// The destination: ADDR or ADDR/LEN (host bits clear), IPv4 or IPv6.
        #[arg(long)]
        destination: String,
        /// tcp, udp, icmp or other.
        #[arg(long)]
        protocol: Option<String>,
        /// The transport source port (a reflected service's: 123 for NTP, 11211 for
        /// memcached).
        #[arg(long)]
        source_port: Option<u16>,
        /// The transport destination port.
        #[arg(long)]
        destination_port: Option<u16>,
        /// TCP SYNs without ACK only.
        #[arg(long)]
        syn: bool,
        /// IP fragments only.
        #[arg(long)]
        fragments: bool,
        /// Pass this many packets a second and drop the rest, rather than drop them all.
        #[arg(long, value_name = "PPS")]
        rate_limit: Option<u32>,
        /// How long, 1s to 8784h, e.g. 90s, 10m, 2h (default: mitigate.manual_ttl, 1h).
        #[arg(long, value_parser = parse_ban_ttl)]
        ttl: Option<Duration>,
        /// Ask the routers upstream to blackhole the destination too (RTBH): it takes the
        /// destination offline.
        #[arg(long)]
        rtbh: bool,
    },
    /// End a signature rule now (the notify commands withdraw it upstream).
    Remove {
        /// Its index, as `netwatch mitigate list` shows it.
        index: u32,
    },
}

/// `netwatch ban` actions.
#[derive(Debug, Subcommand)]
pub enum BanAction {
    /// Ban an address or network: its frames are dropped in XDP (or only counted in
    /// dry-run mode) until the TTL ends.
    Add {
        /// ADDR or ADDR/LEN (host bits clear), IPv4 or IPv6.
        subject: String,
        /// How long, 1s to 8784h, e.g. 90s, 10m, 2h (default: mitigate.manual_ttl, 1h).
        #[arg(long, value_parser = parse_ban_ttl)]
        ttl: Option<Duration>,
        /// Why, kept with the ban and shown with it.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Remove {
        /// ADDR or ADDR/LEN, as banned.
        subject: String,
    },
    /// The bans in force, with what each dropped so far.
    List {
        /// The daemon's answer, one JSON line (the protocol's, see the README).
        #[arg(long)]
        json: bool,
    },
}

/// `netwatch top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// TOML configuration file, for `monitor.control`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: `monitor.control` in the config, else
    /// /run/netwatch/control.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// With no daemon answering, watch this interface with a monitor of top's own (the
    /// default configuration, no outputs but its socket; stopped with top).
    #[arg(long, short = 'i', value_parser = parse_iface)]
    pub iface: Option<String>,
    /// When the daemon stops, exit rather than wait for it to come back.
    #[arg(long)]
    pub exit_with_daemon: bool,
}

/// `netwatch status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// TOML configuration file, for `monitor.control`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The daemon's control socket (default: `monitor.control` in the config, else
    /// /run/netwatch/control.sock).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// The status object itself, one JSON line (the protocol's, see the README).
    #[arg(long)]
    pub json: bool,
}

fn parse_iface(text: &str) -> Result<String, IfaceNameError> {
    check_iface_name(text).map(|()| text.to_owned())
}

/// Why `--ttl` of `netwatch ban add` was refused: the message of the duration's parser or of
/// the daemon's bound, as they are.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BanTtlArgError {
    /// Not a duration.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A duration out of a ban's bounds.
    #[error(transparent)]
    Bounds(#[from] BanTtlError),
}

/// A ban's TTL: a duration within the bound the daemon takes too.
fn parse_ban_ttl(text: &str) -> Result<Duration, BanTtlArgError> {
    Ok(check_ban_ttl(parse_duration(text)?)?)
}

/// A `--log-level` that names no level.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not one of error, warn, info, debug, trace, off")]
struct LevelError(String);

fn parse_level(text: &str) -> Result<log::LevelFilter, LevelError> {
    text.parse().map_err(|_| LevelError(text.to_owned()))
}

/// `netwatch history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// TOML configuration file, for `store.path`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// SQLite store (overrides the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// From this long ago, e.g. 1h, 30m, 24h.
    #[arg(long, default_value = "1h", value_parser = parse_duration, allow_hyphen_values = true)]
    pub since: Duration,
    /// Up to this long ago (default: now).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub until: Option<Duration>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// What to ask.
    #[command(subcommand)]
    pub query: HistoryQuery,
}

/// `netwatch history` questions.
#[derive(Debug, Subcommand)]
pub enum HistoryQuery {
    /// One source's packets and bytes per interval.
    Source {
        /// The address.
        addr: IpAddr,
    },
    /// The alerts of the period.
    Alerts,
    /// The sources that sent the most bytes in the period.
    Top {
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

/// Options of `monitor` and `replay` that the config file can also set.
#[derive(Clone, Debug, Args, Default)]
pub struct PipelineArgs {
    /// TOML configuration file (see netwatch.example.toml); flags override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Time between two readings of the counters, e.g. 1s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Option<Duration>,
    /// Sources the kernel counts at once (slots); the slots of the sources idle longest are
    /// taken back when they run low.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sources: Option<u32>,
    /// The per-source map: per-cpu (fastest), shared (one value per source whatever the
    /// number of CPUs, atomic adds), or auto (per-cpu while its values fit in 512 MiB).
    #[arg(long, value_enum)]
    pub source_map: Option<SourceMapArg>,
    /// Sources listed per interval.
    #[arg(long)]
    pub top: Option<usize>,
    /// Report format.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Also write every alert and event (credentials, HTTP, DNS) as a JSON line to this file,
    /// created 0600; `type` tells them apart.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
    /// Print the secrets of cleartext credentials instead of `<redacted>`.
    #[arg(long)]
    pub show_secrets: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (monitor only; default
    /// 127.0.0.1:9477), or `off`.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// The control socket that `netwatch status` and subscribers connect to (monitor only;
    /// default /run/netwatch/control.sock), or `off`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<String>,
    /// Write reports to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The folder of the events' packet captures (`capture.dir`; monitor default:
    /// `captures/` beside the store; a replay writes captures only when this or the config
    /// names a folder).
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Option<PathBuf>,
}

impl PipelineArgs {
    /// Lets these flags win over `to` (the file's), then validates the result.
    pub fn apply(&self, to: &mut Config) -> Result<(), ConfigError> {
        let Self {
            config,
            interval,
            max_sources,
            source_map,
            top,
            format,
            alerts,
            show_secrets,
            metrics_addr,
            control,
            output: _,
            capture_dir,
        } = self;
        if let Some(dir) = capture_dir {
            to.capture.dir.clone_from(dir);
        }
        if *show_secrets {
            to.inspect.show_secrets = true;
        }
        let monitor = &mut to.monitor;
        if let Some(interval) = interval {
            monitor.interval = *interval;
        }
        if let Some(max_sources) = max_sources {
            monitor.max_sources = *max_sources;
        }
        if let Some(source_map) = source_map {
            monitor.source_map = *source_map;
        }
        if let Some(top) = top {
            monitor.top = *top;
        }
        if let Some(format) = format {
            monitor.format = *format;
        }
        if alerts.is_some() {
            monitor.alerts.clone_from(alerts);
        }
        if let Some(addr) = metrics_addr {
            monitor.metrics_addr.clone_from(addr);
        }
        if let Some(control) = control {
            monitor.control.clone_from(control);
        }
        let source = config.clone().unwrap_or_else(|| PathBuf::from("(flags)"));
        to.validate(&source)
    }
}

/// `netwatch monitor`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Interface to watch (or `monitor.iface` / `monitor.ifaces` in the config); repeat it
    /// to watch several, each with a program of its own, and their sum.
    #[arg(long, short = 'i', value_parser = parse_iface)]
    pub iface: Vec<String>,
    /// XDP attach mode: driver (native), skb (generic), or auto (driver, else skb).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Replace an XDP program of another tool already attached to the interface.
    #[arg(long)]
    pub force: bool,
    /// Stop by itself after this long (for scripts and tests), e.g. 30s.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// SQLite store of known sources, history and the webhook queue (default: `store.path`
    /// in the config, else /var/lib/netwatch/netwatch.db).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// POST alerts and events to this URL as JSON batches (repeatable; adds to
    /// `webhook.urls`). A bearer token comes from NETWATCH_WEBHOOK_TOKEN or the config file,
    /// never from the command line.
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    /// Everything the config file can also set.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// `netwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng, Ethernet).
    pub file: PathBuf,
    /// Keep known sources in this SQLite store; by default a replay learns in memory only and
    /// leaves the daemon's store alone.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Everything the config file can also set.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// `netwatch known`.
#[derive(Debug, Args)]
pub struct KnownArgs {
    /// TOML configuration file, for `store.path`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// SQLite store (overrides the config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: KnownAction,
}

/// `netwatch known` actions.
#[derive(Debug, Subcommand)]
pub enum KnownAction {
    /// Print every known source with its origin and when it was first and last seen.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add sources by hand.
    Add {
        /// Addresses.
        #[arg(required = true)]
        addrs: Vec<IpAddr>,
    },
    /// Remove sources (they alert again if they come back after learning).
    Remove {
        /// Addresses.
        #[arg(required = true)]
        addrs: Vec<IpAddr>,
    },
    /// Remove sources not seen for this long, e.g. 30d... written as 720h.
    Prune {
        /// Age, e.g. 720h.
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        older_than: Duration,
    },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
        let Command::Monitor(args) = cli.command else {
            panic!("not monitor");
        };
        assert_eq!(args.iface, ["eth0"]);
        assert_eq!(args.mode, Some(ModeArg::Skb));
        assert_eq!(args.pipeline.interval, Some(Duration::from_millis(200)));
        assert_eq!(args.pipeline.max_sources, Some(1024));
        assert_eq!(args.pipeline.format, Some(Format::Json));
        assert_eq!(args.pipeline.config, None);
    }

    #[test]
    fn known_arguments_parse() {
        let cli = Cli::try_parse_from([
            "netwatch",
            "known",
            "--db",
            "/tmp/k.db",
            "add",
            "192.0.2.1",
            "2001:db8::1",
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        let Command::Known(args) = cli.command else {
            panic!("not known");
        };
        let KnownAction::Add { addrs } = args.action else {
            panic!("not add");
        };
        assert_eq!(addrs.len(), 2);
        assert!(Cli::try_parse_from(["netwatch", "known", "add", "not-an-ip"]).is_err());
    }

    #[test]
    fn zero_max_sources_is_refused() {
        let err = Cli::try_parse_from(["netwatch", "monitor", "-i", "lo", "--max-sources", "0"])
            .expect_err("accepted an empty map");
        assert!(err.to_string().contains("max-sources"), "{err}");
    }

    #[test]
    fn source_map_is_read_from_the_file_and_a_flag_wins() {
        let mut config = Config::parse(
            "[monitor]\nsource_map = \"shared\"\n",
            Path::new("test.toml"),
        )
        .unwrap();
        assert_eq!(config.monitor.source_map, SourceMapArg::Shared);
        assert_eq!(Config::default().monitor.source_map, SourceMapArg::Auto);
        let flags = PipelineArgs {
            source_map: Some(SourceMapArg::PerCpu),
            ..Default::default()
        };
        flags.apply(&mut config).unwrap();
        assert_eq!(config.monitor.source_map, SourceMapArg::PerCpu);
        let err = Config::parse(
            "[monitor]\nsource_map = \"percpu\"\n",
            Path::new("test.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("source_map"), "{err}");
    }

    /// `netwatch ban list --control P` as `netwatch ban --control P list`, and -c too.
    #[test]
    fn ban_takes_its_socket_and_config_before_or_after_the_action() {
        for args in [
            [
                "netwatch",
                "ban",
                "--control",
                "/run/x.sock",
                "list",
                "-c",
                "/etc/n.toml",
            ],
            [
                "netwatch",
                "ban",
                "list",
                "--control",
                "/run/x.sock",
                "-c",
                "/etc/n.toml",
            ],
            [
                "netwatch",
                "ban",
                "-c",
                "/etc/n.toml",
                "list",
                "--control",
                "/run/x.sock",
            ],
        ] {
            let Cli {
                command: Command::Ban(ban),
                ..
            } = Cli::try_parse_from(args).unwrap_or_else(|err| panic!("{args:?}: {err}"))
            else {
                panic!("{args:?}: not ban");
            };
            assert_eq!(ban.control, Some(PathBuf::from("/run/x.sock")), "{args:?}");
            assert_eq!(ban.config, Some(PathBuf::from("/etc/n.toml")), "{args:?}");
            assert!(matches!(ban.action, BanAction::List { .. }), "{args:?}");
        }
    }

    /// One bound for a ban's TTL, with the daemon's message.
    #[test]
    fn a_ban_ttl_is_bounded_as_the_daemon_bounds_it() {
        assert_eq!(parse_ban_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_ban_ttl("8784h"),
            Ok(Duration::from_secs(366 * 86_400))
        );
        let long = parse_ban_ttl("8785h").unwrap_err();
        assert_eq!(
            long,
            BanTtlArgError::Bounds(check_ban_ttl(Duration::from_secs(8785 * 3600)).unwrap_err())
        );
        assert_eq!(
            long.to_string(),
            "a ban lasts 1s to 8784h (a leap year); 366d1h is out of that"
        );
        assert_eq!(
            parse_ban_ttl("500ms").unwrap_err().to_string(),
            "a ban lasts 1s to 8784h (a leap year); 500ms is out of that"
        );
        assert_eq!(
            parse_ban_ttl("1d").unwrap_err().to_string(),
            "unknown unit \"d\" in \"1d\": use ms, s, m or h"
        );
    }

    #[test]
    fn a_log_level_and_an_interface_are_checked() {
        assert_eq!(parse_level("warn").ok(), Some(log::LevelFilter::Warn));
        assert_eq!(
            parse_level("loud").unwrap_err().to_string(),
            "\"loud\" is not one of error, warn, info, debug, trace, off"
        );
        assert_eq!(parse_iface("eth0").ok().as_deref(), Some("eth0"));
        assert_eq!(
            parse_iface("all").unwrap_err().to_string(),
            "\"all\" names the sum of the interfaces in reports, not an interface"
        );
    }
}
