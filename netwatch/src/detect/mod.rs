//! Detection: from the per-interval series to alerts.
//!
//! Pure code: an [`Interval`] and the time it ended go in; alerts and the changes to the set
//! of known sources come out. No clock is read, so replaying a capture gives the alerts the
//! same traffic gives live, and every rule is unit-tested without root.
//!
//! Rules:
//! - static thresholds on packets and bits per second, for the whole interface, per prefix
//!   (IPv4 /24 and IPv6 /64 by default) and per source;
//! - spikes: a packet rate above `mean + k * sigma` of its EWMA baseline, above a minimum rate
//!   and a minimum ratio to the mean, once the series is warmed up;
//! - unknown sources: after a learning period, a source neither learned nor allowlisted that
//!   sends at least a minimum of packets;
//! - SYN floods, port scans and host sweeps per source, from the SYN counter and the kernel's
//!   distinct-destination estimates.
//!
//! - heavy hitters: a source or prefix with no baseline yet (first seen after the interface's
//!   own baseline warmed up) that sends a large share of the interface's packets.
//!
//! Every rule except unknown sources has hysteresis: one event is one `start`, periodic
//! `update`s and one `end` carrying the peak and the totals.
//!
//! Alerts explain themselves: flood alerts say what the traffic is ([`attack`]); global and
//! prefix rate alerts name their top contributors. Many sources of one prefix that meet the
//! same rule in the same interval make one alert for the prefix, and the alerts of one
//! interval are capped, the rest counted in one `suppressed` line.
//!
//! Evidence first: a rate rule fires only on at least `min_packets` packets in the interval
//! (a SYN flood on at least `scan.min_syn` SYNs), and an interval shorter than half the
//! configured one (the end of a capture, the last interval at shutdown) is reported but never
//! starts an event, nor teaches a baseline.

pub mod alert;
pub mod attack;
pub mod cidr;
pub mod ewma;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use serde::Deserialize;

use self::{
    alert::{
        Alert, AlertKind, AlertState, Contributor, Members, Severity, SlotlessEvidence,
        SlotlessShare, Subject,
    },
    attack::{Attack, DEFAULT_REFLECTION_PORTS},
    cidr::Cidr,
    ewma::{Ewma, alpha_for_window},
};
use crate::collect::{Interval, Mix};

/// Sources of one prefix that meet the same per-source rule in one interval and are reported
/// as one alert for the prefix.
const GROUP_MIN: usize = 2;
/// Addresses an alert for many sources lists.
const MEMBERS_LISTED: usize = 5;
/// A prefix's heavy hitter is left out when one source of it that is a heavy hitter itself
/// sends this share of the prefix's packets: it is the same attack.
const ONE_SOURCE_SHARE: f64 = 0.8;

/// Packet and bit rate limits of one scope; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Packets per second.
    pub pps: Option<f64>,
    /// Bits per second.
    pub bps: Option<f64>,
}

/// Spike detection.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    /// Off switch.
    pub enabled: bool,
    /// How many standard deviations above the mean make a spike.
    pub k: f64,
    /// Samples the EWMA baseline spans (its smoothing is `2 / (window + 1)`).
    pub window: u32,
    /// Intervals a series must have been seen before it may alert.
    pub warmup: u32,
    /// A spike must also exceed this rate (packets per second), so that a quiet host going
    /// from 1 to 5 pps says nothing.
    pub min_pps: f64,
    /// ... and be at least this many times the mean.
    pub min_ratio: f64,
}

impl SpikeConfig {
    /// The rate a series with `baseline` must exceed to spike: `mean + k * sigma`, at least
    /// `min_ratio` times the mean and `min_pps`.
    fn threshold(&self, baseline: &Ewma) -> f64 {
        let mean = baseline.mean();
        (mean + self.k * baseline.sigma())
            .max(mean * self.min_ratio)
            .max(self.min_pps)
    }
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            k: 4.0,
            window: 60,
            warmup: 30,
            min_pps: 100.0,
            min_ratio: 2.0,
        }
    }
}

/// Heavy hitters: sources and prefixes with no baseline yet that send a large share of the
/// traffic. Spike detection cannot see them (a new series has no baseline to exceed), and
/// unknown-source detection says "new", not "flooding".
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeavyConfig {
    /// Off switch.
    pub enabled: bool,
    /// Share of the interface's packets (0 to 1) that makes a new series a heavy hitter ...
    pub share: f64,
    /// ... when it also sends at least this many packets per second.
    pub min_pps: f64,
}

impl Default for HeavyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: 0.2,
            min_pps: 500.0,
        }
    }
}

/// Unknown-source detection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnknownConfig {
    /// Off switch.
    pub enabled: bool,
    /// How long sources are learned as known after the first start (kept across restarts).
    #[serde(with = "crate::duration")]
    pub learning: Duration,
    /// Packets an unknown source must send before it alerts.
    pub min_packets: u64,
    /// Networks never reported as unknown.
    pub allowlist: Vec<Cidr>,
}

impl Default for UnknownConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            learning: Duration::from_secs(3600),
            min_packets: 10,
            allowlist: Vec::new(),
        }
    }
}

/// SYN flood and scan detection, per source and interval. `None` turns a rule off.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// TCP SYN (without ACK) per second.
    pub syn_pps: Option<f64>,
    /// Distinct destination ports in one interval.
    pub ports: Option<u32>,
    /// Distinct destination hosts in one interval.
    pub hosts: Option<u32>,
    /// SYNs a source must send in one interval before `syn_pps` may fire: a rate taken over a
    /// handful of SYNs says nothing.
    pub min_syn: u64,
}

impl ScanConfig {
    /// True when a rule needs the kernel's distinct-destination sketches.
    pub fn needs_sketches(&self) -> bool {
        self.ports.is_some() || self.hosts.is_some()
    }

    /// A limit of 0 in the file turns its rule off (a field left out keeps its default).
    pub fn normalize(&mut self) {
        self.syn_pps = self.syn_pps.filter(|limit| *limit != 0.0);
        self.ports = self.ports.filter(|limit| *limit != 0);
        self.hosts = self.hosts.filter(|limit| *limit != 0);
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            syn_pps: Some(500.0),
            ports: Some(100),
            hosts: Some(64),
            min_syn: 200,
        }
    }
}

/// Detection settings. Every field has a default; see `netwatch.example.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Prefix length of IPv4 aggregates.
    pub prefix_v4: u8,
    /// Prefix length of IPv6 aggregates.
    pub prefix_v6: u8,
    /// Limits on the whole interface.
    pub global: Limits,
    /// Limits on each prefix aggregate.
    pub prefix: Limits,
    /// Limits on each source.
    pub source: Limits,
    /// Limits on each host of the local networks (`[networks] local`), on what it receives.
    pub destination: Limits,
    /// Spikes.
    pub spike: SpikeConfig,
    /// Unknown sources.
    pub unknown: UnknownConfig,
    /// SYN floods and scans.
    pub scan: ScanConfig,
    /// Heavy hitters without a baseline.
    pub heavy: HeavyConfig,
    /// Packets a subject must send in one interval before a rate rule (threshold, spike,
    /// heavy hitter) may fire on it.
    pub min_packets: u64,
    /// Top contributors listed in a global or prefix rate alert (sources, and prefixes for the
    /// global subject).
    pub contributors: usize,
    /// Most alert lines in one interval; the rest are counted in one `suppressed` line.
    pub max_alerts: usize,
    /// UDP source ports counted as reflection (amplification) traffic in the kernel.
    pub reflection_ports: Vec<u16>,
    /// Consecutive quiet intervals that end an event.
    pub end_after: u32,
    /// Intervals between two updates of a running event.
    pub update_every: u32,
    /// Most rate series (prefixes and sources) tracked at once; past it new ones are not
    /// tracked and a `tracking_capacity` alert says so.
    pub max_series: usize,
    /// Intervals without traffic after which a series is forgotten.
    pub idle_expiry: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            prefix_v4: 24,
            prefix_v6: 64,
            global: Limits::default(),
            prefix: Limits::default(),
            source: Limits::default(),
            destination: Limits::default(),
            spike: SpikeConfig::default(),
            unknown: UnknownConfig::default(),
            scan: ScanConfig::default(),
            heavy: HeavyConfig::default(),
            min_packets: 20,
            contributors: 5,
            max_alerts: 20,
            reflection_ports: DEFAULT_REFLECTION_PORTS
                .iter()
                .map(|(port, _)| *port)
                .collect(),
            end_after: 3,
            update_every: 10,
            max_series: 200_000,
            idle_expiry: 300,
        }
    }
}

impl DetectConfig {
    /// Checks values that parse but make no sense; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, reason: String| Err((format!("detect.{field}"), reason));
        if self.prefix_v4 > 32 {
            return fail("prefix_v4", format!("{} is more than 32", self.prefix_v4));
        }
        if self.prefix_v6 > 128 {
            return fail("prefix_v6", format!("{} is more than 128", self.prefix_v6));
        }
        for (scope, limits) in [
            ("global", &self.global),
            ("prefix", &self.prefix),
            ("source", &self.source),
            ("destination", &self.destination),
        ] {
            for (name, value) in [("pps", limits.pps), ("bps", limits.bps)] {
                if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return fail(
                        &format!("{scope}.{name}"),
                        "must be a positive number".into(),
                    );
                }
            }
        }
        let spike = &self.spike;
        if !(spike.k.is_finite() && spike.k > 0.0) {
            return fail("spike.k", format!("{} is not a positive number", spike.k));
        }
        if spike.window == 0 {
            return fail("spike.window", "must be at least 1".into());
        }
        if !(spike.min_pps.is_finite() && spike.min_pps >= 0.0) {
            return fail("spike.min_pps", "must be zero or more".into());
        }
        if !(spike.min_ratio.is_finite() && spike.min_ratio >= 1.0) {
            return fail("spike.min_ratio", "must be 1 or more".into());
        }
        if self
            .scan
            .syn_pps
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            return fail("scan.syn_pps", "must be a positive number".into());
        }
        if self.end_after == 0 || self.update_every == 0 {
            return fail(
                "end_after",
                "end_after and update_every must be at least 1".into(),
            );
        }
        if self.max_series == 0 {
            return fail("max_series", "must be at least 1".into());
        }
        let heavy = &self.heavy;
        if !(heavy.share.is_finite() && heavy.share > 0.0 && heavy.share <= 1.0) {
            return fail("heavy.share", format!("{} is not in (0, 1]", heavy.share));
        }
        if !(heavy.min_pps.is_finite() && heavy.min_pps >= 0.0) {
            return fail("heavy.min_pps", "must be zero or more".into());
        }
        if self.max_alerts == 0 {
            return fail("max_alerts", "must be at least 1".into());
        }
        if self.reflection_ports.contains(&0) {
            return fail("reflection_ports", "port 0 is no service's".into());
        }
        Ok(())
    }
}

/// A change to the set of known sources, for the store to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnownChange {
    /// The learning period began at this time.
    LearningStarted(Duration),
    /// Learned during the learning period.
    Learned(IpAddr),
    /// Reported as unknown; known from now on, so it alerts once.
    Alerted(IpAddr),
}

/// What one interval gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Alerts, in a stable order.
    pub alerts: Vec<Alert>,
    /// Changes to the known set.
    pub known: Vec<KnownChange>,
}

/// Where known-source detection stands at start.
#[derive(Clone, Debug, Default)]
pub struct KnownState {
    /// Sources already known.
    pub known: HashSet<IpAddr>,
    /// When learning began, if it ever did.
    pub learning_started: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Volume {
    packets: u64,
    bytes: u64,
}

struct Trigger {
    observed: f64,
    threshold: f64,
    baseline: Option<f64>,
    detail: Option<String>,
    members: Option<Members>,
}

impl Trigger {
    fn new(observed: f64, threshold: f64, baseline: Option<f64>) -> Self {
        Self {
            observed,
            threshold,
            baseline,
            detail: None,
            members: None,
        }
    }
}

struct Open {
    id: String,
    started: Duration,
    peak: f64,
    packets: u64,
    bytes: u64,
    threshold: f64,
    baseline: Option<f64>,
    since_report: u32,
    quiet: u32,
    last_observed: f64,
    detail: Option<String>,
    members: Option<Members>,
    /// The traffic mix of the whole event, for flood alerts.
    mix: Mix,
    /// Started by the kernel's early event, before an interval's reading: the next reading
    /// confirms it (an update) or ends it.
    early: bool,
}

#[derive(Default)]
struct Series {
    ewma: Ewma,
    idle: u32,
    /// First seen after the interface's own baseline had warmed up: a newcomer, which the
    /// heavy-hitter rule watches until its own baseline has warmed up.
    new: bool,
}

/// Detection state across intervals.
pub struct Detector {
    config: DetectConfig,
    alpha: f64,
    series: HashMap<Subject, Series>,
    open: BTreeMap<(AlertKind, Subject), Open>,
    known: HashSet<IpAddr>,
    learning_started: Option<Duration>,
    pending: HashMap<IpAddr, u64>,
    /// Sources an event was about while netwatch learned: never learned as known.
    suspects: HashSet<IpAddr>,
    /// The sources (and their packets) of each unknown-source alert of the last interval,
    /// so that an alert the cap leaves out can be taken back.
    alerted_now: HashMap<Subject, Vec<(IpAddr, u64)>>,
    run: String,
    next_id: u64,
    /// The configured interval: a much shorter one is partial.
    nominal: Option<Duration>,
    /// Only the rules on the whole (the sum of several interfaces): per-source and
    /// per-prefix rules, scans and unknown sources are the interfaces' own detectors' work.
    global_only: bool,
}

impl Detector {
    /// A detector with the known sources from the store. `run` prefixes alert ids, so that
    /// ids of different runs never collide.
    pub fn new(config: DetectConfig, known: KnownState, run: String) -> Self {
        let alpha = alpha_for_window(config.spike.window);
        let mut series = HashMap::new();
        series.insert(Subject::Global, Series::default());
        Self {
            config,
            alpha,
            series,
            open: BTreeMap::new(),
            known: known.known,
            learning_started: known.learning_started,
            pending: HashMap::new(),
            suspects: HashSet::new(),
            alerted_now: HashMap::new(),
            run,
            next_id: 1,
            nominal: None,
            global_only: false,
        }
    }

    /// Runs only the rules on the whole subject: thresholds and spikes of the global rate,
    /// with their contributors. For the sum of several interfaces, whose sources and
    /// prefixes each interface's own detector watches.
    pub fn global_only(mut self) -> Self {
        self.global_only = true;
        self
    }

    /// Sets the configured interval: an interval shorter than half of it (the end of a
    /// capture, the last one at shutdown) is partial, and never starts an event on its rate.
    pub fn with_interval(mut self, nominal: Duration) -> Self {
        self.nominal = Some(nominal);
        self
    }

    /// Replaces the configuration (hot reload); learned state is kept.
    pub fn reconfigure(&mut self, config: DetectConfig) {
        self.alpha = alpha_for_window(config.spike.window);
        self.config = config;
    }

    /// Rate series tracked now (global included).
    pub fn tracked_series(&self) -> usize {
        self.series.len()
    }

    /// Feeds one interval that ended at `at`.
    pub fn observe(&mut self, interval: &Interval, at: Duration) -> Outcome {
        let mut outcome = Outcome::default();
        let seconds = interval.elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return outcome;
        }
        let rate = |count: u64| count as f64 / seconds;
        let partial = self
            .nominal
            .is_some_and(|nominal| interval.elapsed < nominal / 2);

        // Volumes per subject.
        let mut volumes: HashMap<Subject, Volume> = HashMap::new();
        volumes.insert(
            Subject::Global,
            Volume {
                packets: interval.delta.total_packets,
                bytes: interval.delta.total_bytes,
            },
        );
        for destination in interval.destinations.iter().filter(|_| !self.global_only) {
            volumes.insert(
                Subject::Destination(destination.addr),
                Volume {
                    packets: destination.stats.packets,
                    bytes: destination.stats.bytes,
                },
            );
        }
        for source in interval.sources.iter().filter(|_| !self.global_only) {
            let prefix = Subject::Prefix(self.prefix_of(source.addr));
            let entry = volumes.entry(prefix).or_default();
            entry.packets += source.stats.packets;
            entry.bytes += source.stats.bytes;
            volumes.insert(
                Subject::Source(source.addr),
                Volume {
                    packets: source.stats.packets,
                    bytes: source.stats.bytes,
                },
            );
        }

        let mut triggers: BTreeMap<(AlertKind, Subject), Trigger> = BTreeMap::new();
        self.thresholds(&volumes, &rate, &mut triggers);
        let capacity_short = self.spikes(&volumes, &rate, partial, &mut triggers);
        if !self.global_only {
            self.scans(interval, &rate, &mut triggers);
        }
        self.one_heavy_hitter_per_attack(&volumes, &mut triggers);
        if capacity_short > 0 {
            triggers.insert(
                (AlertKind::TrackingCapacity, Subject::Global),
                Trigger::new(
                    (self.series.len() + capacity_short) as f64,
                    self.config.max_series as f64,
                    None,
                ),
            );
        }
        if partial {
            // A sliver of an interval: its rates are noise. Running events go on; none starts.
            triggers.retain(|key, _| self.open.contains_key(key));
        }
        let mixes = self.mixes(interval, &triggers);
        self.advance(
            triggers,
            &volumes,
            &mixes,
            interval.elapsed,
            at,
            partial,
            &mut outcome,
        );
        self.explain(interval, &volumes, &rate, &mut outcome.alerts);
        if !self.global_only {
            self.unknown_sources(interval, at, &mut outcome);
        }
        outcome
    }

    /// Caps the alert lines of one interval at `max_alerts`: the end of an event already
    /// reported first, then starts and one-off alerts by severity, then updates. An event
    /// whose start is left out is forgotten (it starts again if it goes on); so is an unknown
    /// source left out: it stays unknown, and alerts with its next packet. What is left out is
    /// counted in one `suppressed` alert at the end.
    pub fn cap(&mut self, outcome: &mut Outcome, at: Duration, elapsed: Duration) {
        let max = self.config.max_alerts;
        let alerts = &mut outcome.alerts;
        if alerts.len() <= max {
            return;
        }
        let rank = |alert: &Alert| match alert.state {
            AlertState::End => (0, std::cmp::Reverse(Severity::Critical)),
            AlertState::Start | AlertState::Instant => (1, std::cmp::Reverse(alert.severity)),
            AlertState::Update => (2, std::cmp::Reverse(alert.severity)),
        };
        let mut order: Vec<usize> = (0..alerts.len()).collect();
        order.sort_by_key(|&i| rank(&alerts[i]));
        let mut keep = vec![false; alerts.len()];
        for &i in order.iter().take(max) {
            keep[i] = true;
        }
        let mut suppressed: BTreeMap<AlertKind, u64> = BTreeMap::new();
        let mut kept = Vec::with_capacity(max + 1);
        for (alert, keep) in alerts.drain(..).zip(keep) {
            if keep {
                kept.push(alert);
                continue;
            }
            *suppressed.entry(alert.kind).or_default() += 1;
            if alert.state == AlertState::Start {
                self.open.remove(&(alert.kind, alert.subject));
            }
            if alert.kind == AlertKind::UnknownSource
                && let Some(sources) = self.alerted_now.remove(&alert.subject)
            {
                for (addr, packets) in sources {
                    self.known.remove(&addr);
                    self.pending.insert(addr, packets);
                    outcome
                        .known
                        .retain(|change| *change != KnownChange::Alerted(addr));
                }
            }
        }
        let count: u64 = suppressed.values().sum();
        let detail = suppressed
            .iter()
            .map(|(kind, n)| format!("{} {n}", kind.name()))
            .collect::<Vec<_>>()
            .join(", ");
        kept.push(Alert {
            id: self.next_id(),
            kind: AlertKind::Suppressed,
            state: AlertState::Instant,
            severity: Severity::Warning,
            subject: Subject::Global,
            observed: count as f64,
            baseline: None,
            threshold: max as f64,
            at,
            interval: elapsed,
            started: at.saturating_sub(elapsed),
            peak: count as f64,
            packets: 0,
            bytes: 0,
            detail: Some(detail),
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
        });
        outcome.alerts = kept;
    }

    /// The rule and the packet rate of the interface past which the kernel says so at once
    /// (see [`crate::datapath::Datapath::set_early_limit`]): the global threshold if one is
    /// set, else the global spike threshold once its baseline is warm; `None` for neither,
    /// or for the sum of several interfaces (the kernel watches each).
    pub fn early_limit(&self) -> Option<(AlertKind, f64)> {
        if self.global_only {
            return None;
        }
        if let Some(pps) = self.config.global.pps {
            return Some((AlertKind::ThresholdPps, pps));
        }
        let spike = self.config.spike;
        let series = self.series.get(&Subject::Global)?;
        if !spike.enabled || series.ewma.samples() < spike.warmup {
            return None;
        }
        Some((AlertKind::SpikePps, spike.threshold(&series.ewma)))
    }

    /// The kernel saw the interface's packet rate over [`Detector::early_limit`]: `packets`
    /// frames in `elapsed`, at `at`. Starts the event at once, unless it runs already or the
    /// evidence is thin (fewer than `min_packets`, or under the limit); the next interval's
    /// reading confirms or ends it.
    pub fn early(&mut self, packets: u64, elapsed: Duration, at: Duration) -> Option<Alert> {
        let (kind, threshold) = self.early_limit()?;
        let key = (kind, Subject::Global);
        let seconds = elapsed.as_secs_f64();
        if self.open.contains_key(&key) || packets < self.config.min_packets || seconds <= 0.0 {
            return None;
        }
        let observed = packets as f64 / seconds;
        if observed <= threshold {
            return None;
        }
        let baseline = (kind == AlertKind::SpikePps)
            .then(|| self.series.get(&Subject::Global).map(|s| s.ewma.mean()))
            .flatten();
        let detail = format!(
            "early: {packets} packets in {:.1} ms, before the interval's end",
            seconds * 1e3
        );
        let id = self.next_id();
        self.open.insert(
            key,
            Open {
                id: id.clone(),
                started: at,
                peak: observed,
                packets: 0,
                bytes: 0,
                threshold,
                baseline,
                since_report: 0,
                quiet: 0,
                last_observed: observed,
                detail: Some(detail.clone()),
                members: None,
                mix: Mix::default(),
                early: true,
            },
        );
        Some(Alert {
            id,
            kind,
            state: AlertState::Start,
            severity: severity(kind, observed, threshold),
            subject: Subject::Global,
            observed,
            baseline,
            threshold,
            at,
            interval: elapsed,
            started: at,
            peak: observed,
            packets: 0,
            bytes: 0,
            detail: Some(detail),
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
        })
    }

    fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.run, self.next_id);
        self.next_id += 1;
        id
    }

    fn prefix_of(&self, addr: IpAddr) -> Cidr {
        let len = if addr.is_ipv4() {
            self.config.prefix_v4
        } else {
            self.config.prefix_v6
        };
        Cidr::of(addr, len)
    }

    fn thresholds(
        &self,
        volumes: &HashMap<Subject, Volume>,
        rate: &impl Fn(u64) -> f64,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        for (subject, volume) in volumes {
            if volume.packets < self.config.min_packets {
                continue;
            }
            let limits = match subject {
                Subject::Global => &self.config.global,
                Subject::Prefix(_) => &self.config.prefix,
                Subject::Source(_) => &self.config.source,
                Subject::Destination(_) => &self.config.destination,
            };
            let pps = rate(volume.packets);
            let bps = rate(volume.bytes) * 8.0;
            for (kind, value, limit) in [
                (AlertKind::ThresholdPps, pps, limits.pps),
                (AlertKind::ThresholdBps, bps, limits.bps),
            ] {
                if let Some(limit) = limit.filter(|limit| value > *limit) {
                    triggers.insert((kind, *subject), Trigger::new(value, limit, None));
                }
            }
        }
    }

    /// Updates every tracked series (absent subjects count as zero) and collects spikes and
    /// heavy hitters. Returns how many new series could not be tracked for the cap.
    fn spikes(
        &mut self,
        volumes: &HashMap<Subject, Volume>,
        rate: &impl Fn(u64) -> f64,
        partial: bool,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) -> usize {
        let spike = self.config.spike;
        let heavy = self.config.heavy;
        let min_packets = self.config.min_packets;
        // A series is new only against a link whose own baseline is warm: at start every
        // series is new to netwatch, and none is new to the link.
        let link_warm = self
            .series
            .get(&Subject::Global)
            .is_some_and(|global| global.ewma.samples() >= spike.warmup);
        let mut untracked = 0;
        for subject in volumes.keys() {
            if self.series.contains_key(subject) {
                continue;
            }
            if self.series.len() >= self.config.max_series {
                untracked += 1;
                continue;
            }
            self.series.insert(
                *subject,
                Series {
                    new: link_warm,
                    ..Series::default()
                },
            );
        }
        let global_pps = volumes
            .get(&Subject::Global)
            .map_or(0.0, |volume| rate(volume.packets));
        let alpha = self.alpha;
        let idle_expiry = self.config.idle_expiry;
        let open = &self.open;
        self.series.retain(|subject, series| {
            let volume = volumes.get(subject).copied().unwrap_or_default();
            let value = rate(volume.packets);
            series.idle = if volume.packets == 0 {
                series.idle.saturating_add(1)
            } else {
                0
            };
            let enough = volume.packets >= min_packets;
            let running = open.get(&(AlertKind::SpikePps, *subject));
            let trigger = match running {
                // A running event is judged against the baseline it started from.
                Some(event) => (value > event.threshold)
                    .then(|| Trigger::new(value, event.threshold, event.baseline)),
                None if spike.enabled && enough && series.ewma.samples() >= spike.warmup => {
                    let threshold = spike.threshold(&series.ewma);
                    (value > threshold)
                        .then(|| Trigger::new(value, threshold, Some(series.ewma.mean())))
                }
                None => None,
            };
            let heavy_running = open.contains_key(&(AlertKind::HeavyHitter, *subject));
            let watched = heavy.enabled && series.new && series.ewma.samples() < spike.warmup;
            // A heavy hitter sends: a destination that receives much is a victim, judged by
            // its thresholds and spikes.
            let sends = matches!(subject, Subject::Prefix(_) | Subject::Source(_));
            let heavy_trigger = (sends && (heavy_running || watched) && enough)
                .then(|| heavy.min_pps.max(heavy.share * global_pps))
                .filter(|threshold| value >= *threshold)
                .map(|threshold| Trigger {
                    detail: Some(format!("new {}: no baseline yet", subject.scope())),
                    ..Trigger::new(value, threshold, None)
                });
            // The baseline learns only from normal traffic: never from an event, nor from
            // the rate of a sliver of an interval.
            let learns = trigger.is_none()
                && running.is_none()
                && heavy_trigger.is_none()
                && !heavy_running
                && !partial;
            if let Some(trigger) = trigger {
                triggers.insert((AlertKind::SpikePps, *subject), trigger);
            }
            if let Some(trigger) = heavy_trigger {
                triggers.insert((AlertKind::HeavyHitter, *subject), trigger);
            }
            if learns {
                series.ewma.update(alpha, value);
            }
            *subject == Subject::Global
                || series.idle < idle_expiry
                || running.is_some()
                || heavy_running
        });
        untracked
    }

    /// A prefix whose traffic is nearly all one heavy-hitting source is the same attack as
    /// that source: only the source alerts.
    fn one_heavy_hitter_per_attack(
        &self,
        volumes: &HashMap<Subject, Volume>,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        let covered: Vec<Subject> = triggers
            .keys()
            .filter_map(|(kind, subject)| match (kind, subject) {
                (AlertKind::HeavyHitter, Subject::Source(addr)) => {
                    let prefix = Subject::Prefix(self.prefix_of(*addr));
                    let source = volumes.get(subject)?.packets as f64;
                    let whole = volumes.get(&prefix)?.packets as f64;
                    (source >= ONE_SOURCE_SHARE * whole).then_some(prefix)
                }
                _ => None,
            })
            .collect();
        for prefix in covered {
            if !self.open.contains_key(&(AlertKind::HeavyHitter, prefix)) {
                triggers.remove(&(AlertKind::HeavyHitter, prefix));
            }
        }
    }

    /// Per-source SYN floods and scans; sources of one prefix that meet the same rule in the
    /// same interval make one trigger for the prefix.
    fn scans(
        &self,
        interval: &Interval,
        rate: &impl Fn(u64) -> f64,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        let scan = self.config.scan;
        // By rule and prefix: each source that met the rule, its value and the limit.
        type Hits = Vec<(IpAddr, f64, f64)>;
        let mut hits: BTreeMap<(AlertKind, Cidr), Hits> = BTreeMap::new();
        for source in &interval.sources {
            let syn = rate(source.stats.tcp_syn_packets);
            let syn_limit = scan
                .syn_pps
                .filter(|_| source.stats.tcp_syn_packets >= scan.min_syn);
            let checks = [
                (AlertKind::SynFlood, syn, syn_limit),
                (
                    AlertKind::PortScan,
                    f64::from(source.spread.ports),
                    scan.ports.map(f64::from),
                ),
                (
                    AlertKind::HostSweep,
                    f64::from(source.spread.hosts),
                    scan.hosts.map(f64::from),
                ),
            ];
            for (kind, value, limit) in checks {
                if let Some(limit) = limit.filter(|limit| value >= *limit) {
                    hits.entry((kind, self.prefix_of(source.addr)))
                        .or_default()
                        .push((source.addr, value, limit));
                }
            }
        }
        for ((kind, prefix), mut sources) in hits {
            let grouped = sources.len() >= GROUP_MIN
                || self.open.contains_key(&(kind, Subject::Prefix(prefix)));
            if !grouped {
                for (addr, value, limit) in sources {
                    triggers.insert(
                        (kind, Subject::Source(addr)),
                        Trigger::new(value, limit, None),
                    );
                }
                continue;
            }
            sources.sort_by_key(|(addr, _, _)| *addr);
            let limit = sources[0].2;
            // Rates add up over the sources; distinct destinations do not: the widest.
            let observed = match kind {
                AlertKind::SynFlood => sources.iter().map(|(_, value, _)| value).sum(),
                _ => sources
                    .iter()
                    .map(|(_, value, _)| *value)
                    .fold(0.0, f64::max),
            };
            triggers.insert(
                (kind, Subject::Prefix(prefix)),
                Trigger {
                    detail: Some(format!("{} sources of {prefix}", sources.len())),
                    members: Some(members(sources.iter().map(|(addr, _, _)| *addr))),
                    ..Trigger::new(observed, limit, None)
                },
            );
        }
    }

    /// The traffic mix of every subject that has a trigger or a running flood event, in one
    /// pass over the sources.
    fn mixes(
        &self,
        interval: &Interval,
        triggers: &BTreeMap<(AlertKind, Subject), Trigger>,
    ) -> HashMap<Subject, Mix> {
        let mut mixes: HashMap<Subject, Mix> = triggers
            .keys()
            .chain(self.open.keys())
            .filter(|(kind, _)| kind.is_flood())
            .map(|(_, subject)| (*subject, Mix::default()))
            .collect();
        if mixes.is_empty() {
            return mixes;
        }
        if mixes.contains_key(&Subject::Global) {
            mixes.insert(Subject::Global, interval.mix());
        }
        for destination in &interval.destinations {
            if let Some(mix) = mixes.get_mut(&Subject::Destination(destination.addr)) {
                mix.add_source(&destination.stats);
            }
        }
        let prefixes = mixes
            .keys()
            .any(|subject| matches!(subject, Subject::Prefix(_)));
        for source in &interval.sources {
            if let Some(mix) = mixes.get_mut(&Subject::Source(source.addr)) {
                mix.add_source(&source.stats);
            }
            if prefixes
                && let Some(mix) = mixes.get_mut(&Subject::Prefix(self.prefix_of(source.addr)))
            {
                mix.add_source(&source.stats);
            }
        }
        mixes
    }

    /// The hysteresis state machine: start, update, end. In a partial interval running
    /// events take its traffic, but neither end, nor update, nor count it as quiet.
    #[expect(
        clippy::too_many_arguments,
        reason = "the interval's parts, each used once"
    )]
    fn advance(
        &mut self,
        mut triggers: BTreeMap<(AlertKind, Subject), Trigger>,
        volumes: &HashMap<Subject, Volume>,
        mixes: &HashMap<Subject, Mix>,
        elapsed: Duration,
        at: Duration,
        partial: bool,
        outcome: &mut Outcome,
    ) {
        let keys: Vec<(AlertKind, Subject)> = self
            .open
            .keys()
            .chain(triggers.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for key in keys {
            let (kind, subject) = key;
            let volume = volumes.get(&subject).copied().unwrap_or_default();
            let mix = mixes.get(&subject);
            let trigger = triggers.remove(&key);
            let state = match (self.open.contains_key(&key), trigger) {
                (false, None) => continue,
                (false, Some(trigger)) => {
                    let id = self.next_id();
                    self.open.insert(
                        key,
                        Open {
                            id,
                            started: at.saturating_sub(elapsed),
                            peak: trigger.observed,
                            packets: volume.packets,
                            bytes: volume.bytes,
                            threshold: trigger.threshold,
                            baseline: trigger.baseline,
                            since_report: 0,
                            quiet: 0,
                            last_observed: trigger.observed,
                            detail: trigger.detail,
                            members: trigger.members,
                            mix: mix.cloned().unwrap_or_default(),
                            early: false,
                        },
                    );
                    AlertState::Start
                }
                (true, trigger) => {
                    let Some(event) = self.open.get_mut(&key) else {
                        continue;
                    };
                    event.packets += volume.packets;
                    event.bytes += volume.bytes;
                    if let Some(mix) = mix {
                        event.mix.add(mix);
                    }
                    if partial {
                        continue;
                    }
                    if event.early
                        && trigger.is_none()
                        && at.saturating_sub(event.started) < elapsed / 2
                    {
                        // Said in the second half of this interval: its rate over the whole
                        // interval says little. The next reading decides.
                        continue;
                    }
                    if event.early {
                        // The first reading since the kernel said it (or the second, for one
                        // said late in an interval): it confirms the event, with what the
                        // traffic is, or ends it.
                        event.early = false;
                        event.since_report = 0;
                        match trigger {
                            Some(trigger) => {
                                event.peak = event.peak.max(trigger.observed);
                                event.last_observed = trigger.observed;
                                event.detail = Some(String::from("confirmed by the interval"));
                                AlertState::Update
                            }
                            None => {
                                event.last_observed = 0.0;
                                event.detail = Some(String::from("not confirmed by the interval"));
                                AlertState::End
                            }
                        }
                    } else {
                        event.since_report += 1;
                        match trigger {
                            Some(trigger) => {
                                event.quiet = 0;
                                event.peak = event.peak.max(trigger.observed);
                                event.last_observed = trigger.observed;
                                if trigger.members.is_some() {
                                    event.members = trigger.members;
                                }
                            }
                            None => {
                                event.quiet += 1;
                                event.last_observed = 0.0;
                            }
                        }
                        if event.quiet >= self.config.end_after {
                            AlertState::End
                        } else if event.since_report >= self.config.update_every {
                            event.since_report = 0;
                            AlertState::Update
                        } else {
                            continue;
                        }
                    }
                }
            };
            let Some(event) = self.open.get(&key) else {
                continue;
            };
            // The whole event's traffic so far: an update in a quiet interval still says
            // what the attack was.
            let attack = kind
                .is_flood()
                .then(|| Attack::classify(&event.mix))
                .flatten();
            outcome.alerts.push(Alert {
                id: event.id.clone(),
                kind,
                state,
                severity: severity(kind, event.peak, event.threshold),
                subject,
                observed: event.last_observed,
                baseline: event.baseline,
                threshold: event.threshold,
                at,
                interval: elapsed,
                started: event.started,
                peak: event.peak,
                packets: event.packets,
                bytes: event.bytes,
                detail: event.detail.clone(),
                contributors: Vec::new(),
                attack,
                members: event.members.clone(),
                slotless: None,
            });
            if state == AlertState::End {
                self.open.remove(&key);
            }
        }
    }

    /// Names the top contributors of the global and prefix rate alerts that start or update
    /// in this interval.
    fn explain(
        &self,
        interval: &Interval,
        volumes: &HashMap<Subject, Volume>,
        rate: &impl Fn(u64) -> f64,
        alerts: &mut [Alert],
    ) {
        let top = self.config.contributors;
        if top == 0 {
            return;
        }
        for alert in alerts.iter_mut() {
            let rate_rule = matches!(
                alert.kind,
                AlertKind::ThresholdPps
                    | AlertKind::ThresholdBps
                    | AlertKind::SpikePps
                    | AlertKind::HeavyHitter
            );
            if !rate_rule
                || matches!(alert.subject, Subject::Source(_))
                || !matches!(alert.state, AlertState::Start | AlertState::Update)
            {
                continue;
            }
            if alert.subject == Subject::Global {
                alert.slotless = slotless_evidence(interval, top);
            }
            if let Subject::Destination(addr) = alert.subject {
                explain_destination(interval, addr, rate, top, alert);
                continue;
            }
            let whole = volumes.get(&alert.subject).copied().unwrap_or_default();
            // The subject's excess, in the alert's unit: over its baseline, or over the
            // threshold crossed; all of a heavy hitter's rate, which has no baseline.
            let bits = alert.kind == AlertKind::ThresholdBps;
            let reference = match alert.kind {
                AlertKind::HeavyHitter => 0.0,
                _ => alert.baseline.unwrap_or(alert.threshold),
            };
            let excess = alert.observed - reference;
            let candidates: Vec<(Subject, Volume)> = match alert.subject {
                Subject::Prefix(cidr) => interval
                    .sources
                    .iter()
                    .filter(|source| cidr.contains(source.addr))
                    .map(|source| {
                        (
                            Subject::Source(source.addr),
                            Volume {
                                packets: source.stats.packets,
                                bytes: source.stats.bytes,
                            },
                        )
                    })
                    .collect(),
                // Senders only: a destination receives the traffic it is in.
                _ => volumes
                    .iter()
                    .filter(|(subject, _)| {
                        matches!(subject, Subject::Source(_) | Subject::Prefix(_))
                    })
                    .map(|(subject, volume)| (*subject, *volume))
                    .collect(),
            };
            let largest = |(a, va): &(Subject, Volume), (b, vb): &(Subject, Volume)| {
                vb.packets
                    .cmp(&va.packets)
                    .then(vb.bytes.cmp(&va.bytes))
                    .then(a.cmp(b))
            };
            // The top of each list without sorting a million sources.
            let (mut source_list, mut prefix_list): (Vec<_>, Vec<_>) = candidates
                .into_iter()
                .partition(|(subject, _)| !matches!(subject, Subject::Prefix(_)));
            for list in [&mut source_list, &mut prefix_list] {
                if list.len() > top {
                    list.select_nth_unstable_by(top - 1, largest);
                    list.truncate(top);
                }
                list.sort_by(largest);
            }
            source_list.append(&mut prefix_list);
            let candidates = source_list;
            // Sources first, then prefixes, each list largest first.
            let mut sources = Vec::new();
            let mut prefixes = Vec::new();
            for (subject, volume) in candidates {
                let list = match subject {
                    Subject::Prefix(_) => &mut prefixes,
                    _ => &mut sources,
                };
                if list.len() >= top || volume.packets == 0 {
                    continue;
                }
                let pps = rate(volume.packets);
                let bps = rate(volume.bytes) * 8.0;
                let baseline = self
                    .series
                    .get(&subject)
                    .filter(|series| series.ewma.samples() >= self.config.spike.warmup)
                    .map(|series| series.ewma.mean());
                // Baselines are of packet rates: a contributor's excess in bits is its rate.
                let own_excess = if bits {
                    bps
                } else {
                    pps - baseline.unwrap_or(0.0)
                };
                list.push(Contributor {
                    subject,
                    packets: volume.packets,
                    bytes: volume.bytes,
                    pps,
                    bps,
                    share: volume.packets as f64 / whole.packets.max(1) as f64,
                    excess_share: (excess > 0.0).then(|| (own_excess.max(0.0) / excess).min(1.0)),
                    new: baseline.is_none(),
                });
                if sources.len() >= top && prefixes.len() >= top {
                    break;
                }
            }
            sources.append(&mut prefixes);
            alert.contributors = sources;
        }
    }

    fn unknown_sources(&mut self, interval: &Interval, at: Duration, outcome: &mut Outcome) {
        let config = &self.config.unknown;
        if !config.enabled {
            return;
        }
        let started = match self.learning_started {
            Some(started) => started,
            None => {
                let started = at.saturating_sub(interval.elapsed);
                self.learning_started = Some(started);
                outcome.known.push(KnownChange::LearningStarted(started));
                started
            }
        };
        let learning = at <= started + config.learning;
        // Subjects of running events: a source that an event is about while netwatch learns
        // (itself, or its prefix) is never learned as known. After learning it is an unknown
        // source like any other, and alerts as one.
        let alerting_subjects: HashSet<Subject> = if learning {
            self.open
                .keys()
                .filter(|(kind, _)| *kind != AlertKind::TrackingCapacity)
                .map(|(_, subject)| *subject)
                .collect()
        } else {
            HashSet::new()
        };
        if !learning {
            self.suspects.clear();
        }
        self.alerted_now.clear();
        let mut alerting: BTreeMap<Cidr, Vec<(IpAddr, u64, u64)>> = BTreeMap::new();
        for source in &interval.sources {
            let addr = source.addr;
            if self.known.contains(&addr) || config.allowlist.iter().any(|net| net.contains(addr)) {
                continue;
            }
            if learning {
                let prefix = Subject::Prefix(self.prefix_of(addr));
                if alerting_subjects.contains(&Subject::Source(addr))
                    || alerting_subjects.contains(&prefix)
                {
                    if self.suspects.len() < self.config.max_series {
                        self.suspects.insert(addr);
                    }
                    continue;
                }
                if self.suspects.contains(&addr) {
                    continue;
                }
                self.known.insert(addr);
                outcome.known.push(KnownChange::Learned(addr));
                continue;
            }
            if !self.pending.contains_key(&addr) && self.pending.len() >= self.config.max_series {
                continue;
            }
            let seen = self.pending.entry(addr).or_default();
            *seen += source.stats.packets;
            if *seen < config.min_packets {
                continue;
            }
            let packets = *seen;
            self.pending.remove(&addr);
            self.known.insert(addr);
            outcome.known.push(KnownChange::Alerted(addr));
            alerting.entry(self.prefix_of(addr)).or_default().push((
                addr,
                packets,
                source.stats.bytes,
            ));
        }
        let min_packets = self.config.unknown.min_packets as f64;
        for (prefix, mut sources) in alerting {
            sources.sort_by_key(|(addr, _, _)| *addr);
            let packets = sources.iter().map(|(_, packets, _)| packets).sum::<u64>();
            let bytes = sources.iter().map(|(_, _, bytes)| bytes).sum::<u64>();
            let (subject, members, detail) = if sources.len() >= GROUP_MIN {
                (
                    Subject::Prefix(prefix),
                    Some(members(sources.iter().map(|(addr, _, _)| *addr))),
                    Some(format!("{} unknown sources of {prefix}", sources.len())),
                )
            } else {
                (Subject::Source(sources[0].0), None, None)
            };
            self.alerted_now.insert(
                subject,
                sources
                    .iter()
                    .map(|(addr, packets, _)| (*addr, *packets))
                    .collect(),
            );
            let id = self.next_id();
            outcome.alerts.push(Alert {
                id,
                kind: AlertKind::UnknownSource,
                state: AlertState::Instant,
                severity: Severity::Info,
                subject,
                observed: packets as f64,
                baseline: None,
                threshold: min_packets,
                at,
                interval: interval.elapsed,
                started: at.saturating_sub(interval.elapsed),
                peak: packets as f64,
                packets,
                bytes,
                detail,
                contributors: Vec::new(),
                attack: None,
                members,
                slotless: None,
            });
        }
    }
}

/// A victim's alert: how many sources hit it (in `detail`), and its top sender prefixes as
/// contributors, their counts upper bounds (see
/// [`crate::datapath::DestinationReading::senders`]).
fn explain_destination(
    interval: &Interval,
    addr: IpAddr,
    rate: &impl Fn(u64) -> f64,
    top: usize,
    alert: &mut Alert,
) {
    let Some(destination) = interval.destinations.iter().find(|d| d.addr == addr) else {
        return;
    };
    alert.detail = Some(format!("~{} sources", destination.sources));
    let whole = destination.stats.packets.max(1) as f64;
    alert.contributors = destination
        .senders
        .iter()
        .take(top)
        .map(|(prefix, traffic)| Contributor {
            subject: Subject::Prefix(Cidr::of(prefix.addr, prefix.len)),
            packets: traffic.packets,
            bytes: traffic.bytes,
            pps: rate(traffic.packets),
            bps: rate(traffic.bytes) * 8.0,
            share: (traffic.packets as f64 / whole).min(1.0),
            excess_share: None,
            new: false,
        })
        .collect();
}

/// Slot-less traffic that makes a tenth of the interface's packets or more in this
/// interval; the shares of its breakdown from the kernel's window (which may be a few frames
/// off the interval's overflow count, see [`Interval::slotless`]).
const SLOTLESS_MIN_SHARE: f64 = 0.1;

/// What the traffic without a slot of this interval was, when it matters.
fn slotless_evidence(interval: &Interval, top: usize) -> Option<SlotlessEvidence> {
    let packets = interval.delta.overflow_packets;
    let share = packets as f64 / interval.delta.total_packets.max(1) as f64;
    let breakdown = &interval.slotless;
    if packets == 0 || share < SLOTLESS_MIN_SHARE || breakdown.total.packets == 0 {
        return None;
    }
    let whole = breakdown.total.packets as f64;
    fn shares<T: Copy>(
        list: &[(T, crate::datapath::Traffic)],
        whole: f64,
        top: usize,
    ) -> Vec<SlotlessShare<T>> {
        list.iter()
            .take(top)
            .map(|(what, traffic)| SlotlessShare {
                what: *what,
                packets: traffic.packets,
                share: traffic.packets as f64 / whole,
            })
            .collect()
    }
    Some(SlotlessEvidence {
        packets,
        pps: interval.rate(packets),
        share,
        sources: breakdown.sources,
        prefixes: breakdown.prefixes,
        random_sources: breakdown.sources >= 1000
            && u64::from(breakdown.sources) * 4 >= breakdown.total.packets,
        targets: shares(&breakdown.targets, whole, top.min(3)),
        prefixes_top: shares(&breakdown.wide, whole, top.min(3)),
    })
}

/// The sources one alert stands for, from their addresses in order: how many, and the first
/// few.
fn members(addrs: impl ExactSizeIterator<Item = IpAddr>) -> Members {
    Members {
        count: addrs.len() as u64,
        first: addrs.take(MEMBERS_LISTED).collect(),
    }
}

fn severity(kind: AlertKind, peak: f64, threshold: f64) -> Severity {
    match kind {
        AlertKind::UnknownSource => Severity::Info,
        AlertKind::ThresholdPps
        | AlertKind::ThresholdBps
        | AlertKind::SpikePps
        | AlertKind::HeavyHitter
        | AlertKind::SynFlood
            if peak >= 10.0 * threshold =>
        {
            Severity::Critical
        }
        _ => Severity::Warning,
    }
}

#[cfg(test)]
mod tests;
