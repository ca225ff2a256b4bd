//! Alerts: what detection tells the report stage.

use std::{fmt, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    attack::{Attack, AttackType},
    cidr::Cidr,
};
use crate::datapath::{SlotlessPrefix, Target};

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// A source or prefix with no baseline yet (new, or still warming up) sends a large share
    /// of the interface's traffic: a spike that no learned baseline could catch. On a local
    /// host or prefix (a destination), one that receives it: a new victim.
    HeavyHitter,
    /// Alerts over the per-interval cap, left out and counted in this one line.
    Suppressed,
    /// Traffic of an indicator of a threat-intelligence feed (`[intel]`): an address, a
    /// domain, a URL or a user agent listed.
    Intel,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [Self; 12] = [
        Self::ThresholdPps,
        Self::ThresholdBps,
        Self::SpikePps,
        Self::UnknownSource,
        Self::SynFlood,
        Self::PortScan,
        Self::HostSweep,
        Self::TrackingCapacity,
        Self::DnsTunnel,
        Self::HeavyHitter,
        Self::Suppressed,
        Self::Intel,
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
            Self::HeavyHitter => "heavy_hitter",
            Self::Suppressed => "suppressed",
            Self::Intel => "intel",
        }
    }

    /// The unit of `observed` and `threshold`.
    pub fn unit(self) -> &'static str {
        match self {
            Self::ThresholdPps | Self::SpikePps | Self::HeavyHitter => "pkt/s",
            Self::ThresholdBps => "bit/s",
            Self::UnknownSource => "packets",
            Self::SynFlood => "syn/s",
            Self::PortScan => "ports",
            Self::HostSweep => "hosts",
            Self::TrackingCapacity => "series",
            Self::DnsTunnel => "score",
            Self::Suppressed => "alerts",
            Self::Intel => "matches",
        }
    }

    /// True for the rules that watch a traffic rate: their alerts say what the traffic is.
    pub fn is_flood(self) -> bool {
        matches!(
            self,
            Self::ThresholdPps
                | Self::ThresholdBps
                | Self::SpikePps
                | Self::HeavyHitter
                | Self::SynFlood
        )
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
    /// One host of the local networks, for what it receives.
    Destination(IpAddr),
    /// A prefix of the local networks (`prefix_v4`, `prefix_v6` long), for what its hosts
    /// receive together: where a flood spread over many hosts (carpet bombing) shows.
    DestinationPrefix(Cidr),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Prefix(cidr) | Self::DestinationPrefix(cidr) => write!(f, "{cidr}"),
            Self::Source(addr) | Self::Destination(addr) => write!(f, "{addr}"),
        }
    }
}

impl Subject {
    /// `global`, `prefix`, `source`, `destination` or `destination_prefix`.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Prefix(_) => "prefix",
            Self::Source(_) => "source",
            Self::Destination(_) => "destination",
            Self::DestinationPrefix(_) => "destination_prefix",
        }
    }

    /// True for the subjects that receive the traffic (the local networks' hosts and
    /// prefixes), false for those that send it.
    pub fn receives(&self) -> bool {
        matches!(self, Self::Destination(_) | Self::DestinationPrefix(_))
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
    /// Who sent most of the subject's traffic this interval, largest first: sources, and for
    /// the global subject prefixes too. Rate alerts on the global and prefix subjects, at
    /// start and update.
    pub contributors: Vec<Contributor>,
    /// What the traffic is, for flood alerts: of the whole event so far.
    pub attack: Option<Attack>,
    /// For one alert that stands for many sources of a prefix that met the same rule in the
    /// same interval: how many, and the first few.
    pub members: Option<Members>,
    /// For a global rate alert at start and update: the traffic this interval that had no
    /// source slot, when it is a tenth of the interface's packets or more.
    pub slotless: Option<SlotlessEvidence>,
    /// Whom the traffic hit: the top local hosts it went to this interval, for a flood alert
    /// on a sender (the global, prefix or source subject) at start and update, when the
    /// kernel counts destinations (`[networks] local`).
    pub victims: Vec<Victim>,
    /// The packet capture of the event, when it has one: set on the way to the sinks.
    pub capture: Option<CaptureLink>,
    /// For an `intel` alert: what matched.
    pub intel: Option<IntelMatch>,
    /// What the AS and country databases (`[enrich]`) say of the addresses it names.
    pub context: Places,
    /// Its contributors' share of the packets by AS, largest first (with an AS database).
    pub by_as: Vec<AsShare>,
}

/// An address's autonomous system and country, as far as the databases know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// Its AS number.
    pub asn: Option<u32>,
    /// Its AS's organisation.
    pub as_org: Option<String>,
    /// Its country's ISO code.
    pub country: Option<String>,
}

/// What the AS and country databases say of each address they know.
pub type Places = std::collections::BTreeMap<IpAddr, Place>;

/// The contributors of one AS, together.
#[derive(Clone, Debug, PartialEq)]
pub struct AsShare {
    /// The AS number.
    pub asn: u32,
    /// Its organisation.
    pub as_org: Option<String>,
    /// Their share of the subject's packets (0 to 1).
    pub share: f64,
}

/// What an `intel` alert matched: the indicator, where it was seen, what its feed says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntelMatch {
    /// The indicator, as the feed lists it (an address as a network).
    pub indicator: String,
    /// Its type, as Zeek writes it: `Intel::ADDR`, `Intel::DOMAIN`...
    pub indicator_type: &'static str,
    /// Where: `source`, `destination`, `dns_name`, `dns_cname`, `http_host`, `url` or
    /// `user_agent`.
    pub seen: &'static str,
    /// What was seen there (the name, the URL, the user agent, the address).
    pub value: String,
    /// The feed's `meta.source`.
    pub feed: String,
    /// Its `meta.desc`.
    pub desc: String,
    /// The local host involved: the client of a DNS query or an HTTP request, the host a
    /// listed source's frames went to, the host that sent to a listed destination.
    pub host: Option<IpAddr>,
    /// Matches of this host and indicator since the last alert of them (this one included).
    pub matches: u64,
}

/// The packet capture of an alert's event (its evidence): the pcapng file, in the captures'
/// folder, and what it holds so far; at the event's end, all of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureLink {
    /// The file's name.
    pub file: String,
    /// Frames in it.
    pub frames: u64,
    /// One frame of the subject in this many was kept (after the first few), lately.
    pub every: u32,
    /// Why it stopped before the event's end (its budget, the disk), if it did.
    pub cut: Option<String>,
}

/// A host a flood went to: a local host, or, with no local network set, any destination the
/// kernel's sample saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Victim {
    /// The host.
    pub addr: IpAddr,
    /// Packets the alert's subject sent it this interval: all it received for the global
    /// subject; for a source or a prefix, what the host's top senders say came from the
    /// source's /24 (IPv6 /48), an upper bound.
    pub packets: u64,
    /// Packets per second.
    pub pps: f64,
    /// Its share of the subject's packets this interval (0 to 1).
    pub share: f64,
    /// What the host received, typed (for a reflection, the service's port).
    pub attack: Option<AttackType>,
    /// The host's main destination port, when the kernel's vote names one (see
    /// [`crate::datapath::DestinationReading::port`]).
    pub port: Option<u16>,
    /// Counted from a sample of one frame in this many (no local network set): `packets`,
    /// `pps` and `share` are estimates. `None`: counted exactly.
    pub sampled: Option<u32>,
}

/// Traffic without a source slot behind a global alert, from the kernel's breakdown of it:
/// how much, from how many sources, from where and to whom. What a flood from spoofed
/// sources looks like, which per-source counting cannot show.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotlessEvidence {
    /// Its packets this interval.
    pub packets: u64,
    /// Packets per second.
    pub pps: f64,
    /// Its share of the interface's packets (0 to 1).
    pub share: f64,
    /// Distinct source addresses, estimated.
    pub sources: u32,
    /// Distinct IPv4 /16 and IPv6 /48 prefixes of those, estimated.
    pub prefixes: u32,
    /// Few packets per source: at least 1,000 sources, sending four packets each or fewer on
    /// average. What a flood from random (spoofed) addresses looks like.
    pub random_sources: bool,
    /// The destinations that took most of it, largest first.
    pub targets: Vec<SlotlessShare<Target>>,
    /// The source prefixes (/16, /48) that sent most of it, largest first.
    pub prefixes_top: Vec<SlotlessShare<SlotlessPrefix>>,
}

/// One destination or prefix of [`SlotlessEvidence`].
#[derive(Clone, Debug, PartialEq)]
pub struct SlotlessShare<T> {
    /// Which.
    pub what: T,
    /// Its packets this interval.
    pub packets: u64,
    /// Its share of the traffic without a slot (0 to 1).
    pub share: f64,
}

/// One of the top senders behind a global or prefix alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Contributor {
    /// A source, or a prefix (for the global subject).
    pub subject: Subject,
    /// Its packets this interval.
    pub packets: u64,
    /// Its bytes this interval.
    pub bytes: u64,
    /// Packets per second.
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
    /// Its share of the alert subject's packets (0 to 1).
    pub share: f64,
    /// How much of the subject's excess (its rate over the baseline, or over the threshold)
    /// this contributor's own excess over its baseline explains (0 to 1); the whole rate of a
    /// contributor with no baseline yet counts as excess.
    pub excess_share: Option<f64>,
    /// No baseline yet: new, or still warming up.
    pub new: bool,
}

/// The sources one alert stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members {
    /// How many sources.
    pub count: u64,
    /// The first few, in address order.
    pub first: Vec<IpAddr>,
}
