//! The configuration file (TOML). Every field has a default, documented in
//! `netwatch.example.toml`; the file is validated at start and an error names the field and
//! the reason. Command-line flags override the file.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use netwatch_common::SAMPLE_MAX_SNAP_LEN;
use serde::Deserialize;

use crate::{
    datapath::{Sampling, SourceMap},
    detect::{DetectConfig, cidr::Cidr},
    enrich::EnrichConfig,
    evidence::CaptureConfig,
    inspect::InspectConfig,
    intel::IntelConfig,
    mitigate::MitigateConfig,
    report::{Format, kafka::KafkaConfig, webhook::WebhookConfig},
};

/// The shortest `inspect.snap_len`: an Ethernet header, two VLAN tags, IPv6 with a few
/// extension headers and a TCP header with options, and some payload.
const MIN_SNAP_LEN: u32 = 128;

/// Where metrics are served unless told otherwise: loopback only.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9477";
/// Where the control socket is, unless configured.
pub const DEFAULT_CONTROL_PATH: &str = "/run/netwatch/control.sock";

/// Where the SQLite store lives when neither the file nor `--db` says.
pub const DEFAULT_DB_PATH: &str = "/var/lib/netwatch/netwatch.db";

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Collection and output.
    pub monitor: MonitorConfig,
    /// Detection rules.
    pub detect: DetectConfig,
    /// Payload sampling and inspection.
    pub inspect: InspectConfig,
    /// The SQLite store.
    pub store: StoreConfig,
    /// SIEM webhooks.
    pub webhook: WebhookConfig,
    /// The networks netwatch guards.
    pub networks: NetworksConfig,
    /// Bans, opt-in.
    pub mitigate: MitigateConfig,
    /// Packet captures of events.
    pub capture: CaptureConfig,
    /// Export to the fleet's engines.
    pub export: ExportConfig,
    /// Threat-intelligence feeds.
    pub intel: IntelConfig,
    /// AS and country databases.
    pub enrich: EnrichConfig,
}

/// `[export]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `[export.kafka]`.
    pub kafka: KafkaConfig,
}

/// `[networks]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworksConfig {
    /// Networks whose hosts are counted per destination (the victim view), at most
    /// [`netwatch_common::MAX_LOCAL_NETWORKS`]. None by default.
    pub local: Vec<Cidr>,
    /// While `local` is empty: count one frame in this many (a power of two, at most
    /// [`netwatch_common::MAX_DESTINATION_SAMPLE`]) per destination, whatever it is, so that
    /// flood alerts name their victims with no network configured (estimates). 0 turns it
    /// off; 1 counts every frame.
    pub sample_destinations: u32,
}

/// [`NetworksConfig::sample_destinations`] by default: its cost per frame is in the
/// benchmarks' table, and at this rate a victim of 1,000 pkt/s is seen about 60 times a
/// second.
pub const DEFAULT_SAMPLE_DESTINATIONS: u32 = 16;

impl Default for NetworksConfig {
    fn default() -> Self {
        Self {
            local: Vec::new(),
            sample_destinations: DEFAULT_SAMPLE_DESTINATIONS,
        }
    }
}

impl NetworksConfig {
    /// Whether the kernel needs room to count destinations: local networks, or a sample of
    /// every destination.
    pub fn counts_destinations(&self) -> bool {
        !self.local.is_empty() || self.sample_destinations != 0
    }

    /// The local networks as the datapath takes them.
    pub fn local_networks(&self) -> Vec<(std::net::IpAddr, u8)> {
        self.local
            .iter()
            .map(|cidr| (cidr.addr(), cidr.prefix_len()))
            .collect()
    }
}

/// `[monitor]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Interface to watch (the `--iface` flags win).
    pub iface: Option<String>,
    /// Interfaces to watch, each with a program of its own, and their sum (with `iface`, if
    /// set, first).
    pub ifaces: Vec<String>,
    /// XDP attach mode.
    pub mode: ModeArg,
    /// Time between two readings.
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    /// Slots for sources in the kernel.
    pub max_sources: u32,
    /// Per-CPU or shared values of the sources.
    pub source_map: SourceMapArg,
    /// Sources listed per interval.
    pub top: usize,
    /// Report format.
    pub format: Format,
    /// Also write alerts as JSON lines to this file.
    pub alerts: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`), or `off`.
    pub metrics_addr: String,
    /// The control socket (`netwatch status`, subscriptions), or `off`.
    pub control: String,
}

impl MonitorConfig {
    /// The interfaces to watch: `iface`, then `ifaces`, each once.
    pub fn interfaces(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for iface in self.iface.iter().chain(&self.ifaces) {
            if !all.contains(iface) {
                all.push(iface.clone());
            }
        }
        all
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            iface: None,
            ifaces: Vec::new(),
            mode: ModeArg::Auto,
            interval: Duration::from_secs(1),
            max_sources: netwatch_common::DEFAULT_MAX_SOURCES,
            source_map: SourceMapArg::Auto,
            top: 10,
            format: Format::Text,
            alerts: None,
            metrics_addr: String::from(DEFAULT_METRICS_ADDR),
            control: String::from(DEFAULT_CONTROL_PATH),
        }
    }
}

/// `[store]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file: known sources, history, webhook queue.
    pub path: PathBuf,
    /// Sources kept per interval in the history (the top by bytes).
    pub history_top: usize,
    /// History older than this is pruned.
    #[serde(with = "crate::duration")]
    pub retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_DB_PATH),
            history_top: 20,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field, or a value of the wrong type.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with the field and line.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("config {path}: {field}: {reason}")]
    Invalid {
        /// The file (or `(flags)`).
        path: PathBuf,
        /// The field, dotted.
        field: String,
        /// Why.
        reason: String,
    },
}

/// `--mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    /// Driver mode, falling back to skb mode.
    Auto,
    /// Native XDP in the driver only.
    Driver,
    /// Generic XDP only.
    Skb,
}

/// `--source-map` values: the datapath's [`SourceMap`], which takes neither clap nor serde.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMapArg {
    /// Per-CPU while its values fit in 512 MiB, shared beyond.
    Auto,
    /// A region of the values array per possible CPU.
    PerCpu,
    /// One region, updated with atomic adds.
    Shared,
}

impl From<SourceMapArg> for SourceMap {
    fn from(map: SourceMapArg) -> Self {
        match map {
            SourceMapArg::Auto => Self::Auto,
            SourceMapArg::PerCpu => Self::PerCpu,
            SourceMapArg::Shared => Self::Shared,
        }
    }
}

/// Why a name is not one an interface could have. Each message quotes the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IfaceNameError {
    /// Empty, or longer than 15 bytes.
    #[error("{0:?} is not an interface name (1 to 15 bytes)")]
    Length(String),
    /// A `/`, `:`, white space or control character, or `.` or `..`.
    #[error("{0:?} is not an interface name")]
    Characters(String),
    /// `all`, which names the sum of the interfaces in every record.
    #[error("{0:?} names the sum of the interfaces in reports, not an interface")]
    Combined(String),
}

/// An interface name Linux could have: 1 to 15 bytes, no `/`, whitespace or NUL, and not
/// `all` (which names the sum of the interfaces in every record) or `.`/`..`.
pub fn check_iface_name(iface: &str) -> Result<(), IfaceNameError> {
    if iface.is_empty() || iface.len() > 15 {
        return Err(IfaceNameError::Length(iface.to_owned()));
    }
    if iface
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        || iface == "."
        || iface == ".."
    {
        return Err(IfaceNameError::Characters(iface.to_owned()));
    }
    if iface == crate::collect::COMBINED {
        return Err(IfaceNameError::Combined(iface.to_owned()));
    }
    Ok(())
}

impl Config {
    /// The file at `path`, or the defaults when there is none.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_config_file(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        config.detect.scan.normalize();
        config.validate(path)?;
        Ok(config)
    }

    /// Checks every value; the error names the first bad field.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.networks.local.len() > netwatch_common::MAX_LOCAL_NETWORKS {
            return Err(invalid(
                "networks.local",
                &format!(
                    "at most {} networks (cover more hosts with shorter prefixes)",
                    netwatch_common::MAX_LOCAL_NETWORKS
                ),
            ));
        }
        let sample = self.networks.sample_destinations;
        if sample != 0
            && (!sample.is_power_of_two() || sample > netwatch_common::MAX_DESTINATION_SAMPLE)
        {
            return Err(invalid(
                "networks.sample_destinations",
                &format!(
                    "must be 0 (off) or a power of two up to {} (1, 2, 4, ... one frame in that many)",
                    netwatch_common::MAX_DESTINATION_SAMPLE
                ),
            ));
        }
        let monitor = &self.monitor;
        if monitor.interval < Duration::from_millis(10) {
            return Err(invalid("monitor.interval", "must be at least 10ms"));
        }
        if monitor.interval > Duration::from_secs(3600) {
            return Err(invalid("monitor.interval", "must be at most 1h"));
        }
        for (field, duration, max) in [
            (
                "webhook.timeout",
                self.webhook.timeout,
                Duration::from_secs(600),
            ),
            (
                "webhook.max_backoff",
                self.webhook.max_backoff,
                Duration::from_secs(3600),
            ),
            (
                "inspect.follow_timeout",
                self.inspect.follow_timeout,
                Duration::from_secs(3600),
            ),
        ] {
            if duration > max {
                return Err(invalid(
                    field,
                    &format!("must be at most {}s", max.as_secs()),
                ));
            }
        }
        if monitor.max_sources == 0 || monitor.max_sources > 16_777_216 {
            return Err(invalid("monitor.max_sources", "must be 1 to 16777216"));
        }
        if monitor.metrics_addr != "off"
            && monitor
                .metrics_addr
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(
                "monitor.metrics_addr",
                "must be ADDRESS:PORT (e.g. 127.0.0.1:9477) or \"off\"",
            ));
        }
        if monitor.iface.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("monitor.iface", "is empty"));
        }
        for iface in monitor.iface.iter().chain(&monitor.ifaces) {
            check_iface_name(iface)
                .map_err(|reason| invalid("monitor.ifaces", &reason.to_string()))?;
        }
        if monitor.control.is_empty()
            || (monitor.control != "off" && !Path::new(&monitor.control).is_absolute())
        {
            return Err(invalid(
                "monitor.control",
                "must be an absolute path (e.g. /run/netwatch/control.sock) or \"off\"",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "is empty"));
        }
        if self.store.retention < Duration::from_secs(60) {
            return Err(invalid("store.retention", "must be at least 1m"));
        }
        for url in &self.webhook.urls {
            if let Err(reason) = check_url(url) {
                return Err(invalid("webhook.urls", &reason.to_string()));
            }
        }
        if let Some(url) = self
            .webhook
            .urls
            .iter()
            .find(|url| url.starts_with("http://"))
            && !self.webhook.allow_insecure
            && self.webhook.effective_token().is_some()
        {
            return Err(invalid(
                "webhook.urls",
                &format!(
                    "the bearer token would cross the network in clear text to {url}: use https://, or set webhook.allow_insecure = true"
                ),
            ));
        }
        if self.webhook.batch == 0 {
            return Err(invalid("webhook.batch", "must be at least 1"));
        }
        if let Err(reason) = self.webhook.tls() {
            return Err(invalid("webhook.ca_file", &reason.to_string()));
        }
        let inspect = &self.inspect;
        if inspect.enabled && inspect.rate == 0 {
            return Err(invalid(
                "inspect.rate",
                "must be at least 1 (or set inspect.enabled = false)",
            ));
        }
        if inspect.keywords.enabled && inspect.keywords.words.iter().any(String::is_empty) {
            return Err(invalid("inspect.keywords.words", "has an empty keyword"));
        }
        if !(MIN_SNAP_LEN..=SAMPLE_MAX_SNAP_LEN as u32).contains(&inspect.snap_len) {
            return Err(invalid(
                "inspect.snap_len",
                &format!("must be {MIN_SNAP_LEN} to {SAMPLE_MAX_SNAP_LEN} bytes"),
            ));
        }
        if inspect.follow_bytes == 0 {
            return Err(invalid("inspect.follow_bytes", "must be at least 1"));
        }
        if inspect.max_flows == 0 {
            return Err(invalid("inspect.max_flows", "must be at least 1"));
        }
        let tunnel = &inspect.dns_tunnel;
        if !(tunnel.entropy_bits.is_finite() && tunnel.entropy_bits > 0.0) {
            return Err(invalid(
                "inspect.dns_tunnel.entropy_bits",
                "must be a positive number",
            ));
        }
        if tunnel.subdomains == 0 || tunnel.max_name_len == 0 {
            return Err(invalid(
                "inspect.dns_tunnel",
                "subdomains and max_name_len must be at least 1",
            ));
        }
        self.mitigate
            .validate()
            .map_err(|(field, reason)| invalid(&field, &reason))?;
        self.capture
            .validate()
            .map_err(|(field, reason)| invalid(&field, &reason))?;
        self.export
            .kafka
            .validate()
            .map_err(|(field, reason)| invalid(&field, &reason))?;
        if self.intel.repeat_after < Duration::from_secs(1) {
            return Err(invalid("intel.repeat_after", "must be at least 1s"));
        }
        // A rule is kept by its attack's updates: one that ends before the next update
        // would lapse in the middle of the attack.
        let updates = monitor
            .interval
            .saturating_mul(self.detect.update_every.max(1));
        for (i, rule) in self.mitigate.signatures.iter().enumerate() {
            if rule.ttl <= updates {
                return Err(invalid(
                    &format!("mitigate.signatures[{i}].ttl"),
                    &format!(
                        "must be longer than an attack's updates are apart ({}: monitor.interval times detect.update_every), or the rule lapses mid-attack",
                        crate::time_text::ttl_text(updates)
                    ),
                ));
            }
        }
        self.detect
            .validate()
            .map_err(|(field, reason)| invalid(&field, &reason))
    }

    /// What the kernel should sample, from `[inspect]`.
    pub fn sampling(&self) -> Sampling {
        let inspect = &self.inspect;
        Sampling {
            rate: if inspect.enabled { inspect.rate } else { 0 },
            burst: inspect.burst,
            tcp_ports: inspect.tcp_ports.clone(),
            udp_ports: inspect.udp_ports.clone(),
            all_tcp: inspect.keywords.enabled,
            snap_len: inspect.snap_len,
        }
    }
}

/// The most a configuration file may hold: far more than any real one, far less than a
/// device that never ends.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a configuration file: a regular file of at most [`MAX_CONFIG_BYTES`]. Opened without
/// blocking, so that a FIFO (or a device) named by mistake, or swapped in before a SIGHUP, is
/// refused at once instead of stalling netwatch until someone writes to it.
fn read_config_file(path: &Path) -> std::io::Result<String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a FIFO, a device or a folder)",
        ));
    }
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes is more than the {MAX_CONFIG_BYTES} a configuration may hold",
            metadata.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other("grew past 1 MiB while read"));
    }
    Ok(text)
}

/// Why a webhook URL is refused. Each message quotes the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `http://` nor `https://`.
    #[error("{0:?} is not an http(s) URL")]
    Scheme(String),
    /// A `[` with no `]` after it.
    #[error("{0:?} has an unclosed [ in its host")]
    UnclosedBracket(String),
    /// An empty host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("{url:?} has port {port:?}: a port is 1 to 65535")]
    Port {
        /// The URL.
        url: String,
        /// The port as written.
        port: String,
    },
}

/// Checks a webhook URL: `http://` or `https://`, a host, and a port (if given) from 1 to
/// 65535. Says what is wrong.
fn check_url(url: &str) -> Result<(), UrlError> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(UrlError::Scheme(url.to_owned()));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| UrlError::UnclosedBracket(url.to_owned()))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost(url.to_owned()));
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|port| port > 0)
    {
        return Err(UrlError::Port {
            url: url.to_owned(),
            port: port.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
