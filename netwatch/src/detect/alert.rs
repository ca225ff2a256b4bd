//! Alerts: what detection tells the report stage.

use std::{fmt, net::IpAddr, time::Duration};

use serde::Serialize;

use super::cidr::Cidr;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A rate above a configured packets-per-second limit.
    ThresholdPps,
    /// A rate above a configured bits-per-second limit.
    ThresholdBps,
    /// A packet rate far above its learned baseline.
    SpikePps,
    /// A source neither learned nor allowlisted sent more than the minimum.
    UnknownSource,
    /// A source sends TCP SYNs without ACK faster than the limit.
    SynFlood,
    /// A source reached more distinct destination ports in one interval than the limit.
    PortScan,
    /// A source reached more distinct destination hosts in one interval than the limit.
    HostSweep,
    /// Detection stopped tracking new series: its memory cap is reached.
    TrackingCapacity,
    /// DNS queries from a source look like data smuggled in names.
    DnsTunnel,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::ThresholdPps,
        Self::ThresholdBps,
        Self::SpikePps,
        Self::UnknownSource,
        Self::SynFlood,
        Self::PortScan,
        Self::HostSweep,
        Self::TrackingCapacity,
        Self::DnsTunnel,
    ];

    /// The name used in JSON and on the console.
    pub fn name(self) -> &'static str {
        match self {
            Self::ThresholdPps => "threshold_pps",
            Self::ThresholdBps => "threshold_bps",
            Self::SpikePps => "spike_pps",
            Self::UnknownSource => "unknown_source",
            Self::SynFlood => "syn_flood",
            Self::PortScan => "port_scan",
            Self::HostSweep => "host_sweep",
            Self::TrackingCapacity => "tracking_capacity",
            Self::DnsTunnel => "dns_tunnel",
        }
    }

    /// The unit of `observed` and `threshold`.
    pub fn unit(self) -> &'static str {
        match self {
            Self::ThresholdPps | Self::SpikePps => "pkt/s",
            Self::ThresholdBps => "bit/s",
            Self::UnknownSource => "packets",
            Self::SynFlood => "syn/s",
            Self::PortScan => "ports",
            Self::HostSweep => "hosts",
            Self::TrackingCapacity => "series",
            Self::DnsTunnel => "score",
        }
    }
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition began.
    Start,
    /// Still going: a periodic reminder with the peak and totals so far.
    Update,
    /// Over, with the peak and totals of the whole event.
    End,
    /// A one-off alert with no duration (an unknown source).
    Instant,
}

impl AlertState {
    /// Every state.
    pub const ALL: [Self; 4] = [Self::Start, Self::Update, Self::End, Self::Instant];

    /// The name used in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Update => "update",
            Self::End => "end",
            Self::Instant => "instant",
        }
    }
}

/// How urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth a look.
    Warning,
    /// Ten times over the threshold or more.
    Critical,
}

/// What is alerting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The whole interface.
    Global,
    /// A network aggregate.
    Prefix(Cidr),
    /// One source address.
    Source(IpAddr),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Prefix(cidr) => write!(f, "{cidr}"),
            Self::Source(addr) => write!(f, "{addr}"),
        }
    }
}

impl Subject {
    /// `global`, `prefix` or `source`.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Prefix(_) => "prefix",
            Self::Source(_) => "source",
        }
    }
}

/// One alert line.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Identifies the event: every line of one event (start, updates, end) has the same id.
    pub id: String,
    /// What.
    pub kind: AlertKind,
    /// Start, update, end or instant.
    pub state: AlertState,
    /// How urgent.
    pub severity: Severity,
    /// Who.
    pub subject: Subject,
    /// The value this interval (for an end: the last value seen).
    pub observed: f64,
    /// The learned baseline mean, for spikes.
    pub baseline: Option<f64>,
    /// The value that was crossed.
    pub threshold: f64,
    /// End of the interval, on the collection clock (capture time in replay).
    pub at: Duration,
    /// Length of the interval.
    pub interval: Duration,
    /// When the event started.
    pub started: Duration,
    /// The highest value during the event.
    pub peak: f64,
    /// Packets of the subject during the event so far.
    pub packets: u64,
    /// Bytes of the subject during the event so far.
    pub bytes: u64,
    /// More about it, when a rule has more to say (the domain of a DNS tunnel).
    pub detail: Option<String>,
}
