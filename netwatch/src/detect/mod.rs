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
//! Every rule except unknown sources has hysteresis: one event is one `start`, periodic
//! `update`s and one `end` carrying the peak and the totals.

pub mod alert;
pub mod cidr;
pub mod ewma;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use serde::Deserialize;

use self::{
    alert::{Alert, AlertKind, AlertState, Severity, Subject},
    cidr::Cidr,
    ewma::{Ewma, alpha_for_window},
};
use crate::collect::Interval;

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

/// Unknown-source detection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnknownConfig {
    /// Off switch.
    pub enabled: bool,
    /// How long sources are learned as known after the first start (kept across restarts).
    #[serde(with = "crate::config::duration")]
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
    /// Spikes.
    pub spike: SpikeConfig,
    /// Unknown sources.
    pub unknown: UnknownConfig,
    /// SYN floods and scans.
    pub scan: ScanConfig,
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
            spike: SpikeConfig::default(),
            unknown: UnknownConfig::default(),
            scan: ScanConfig::default(),
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
}

#[derive(Default)]
struct Series {
    ewma: Ewma,
    idle: u32,
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
    run: String,
    next_id: u64,
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
            run,
            next_id: 1,
        }
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

        // Volumes per subject.
        let mut volumes: HashMap<Subject, Volume> = HashMap::new();
        volumes.insert(
            Subject::Global,
            Volume {
                packets: interval.delta.total_packets,
                bytes: interval.delta.total_bytes,
            },
        );
        for source in &interval.sources {
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
        let capacity_short = self.spikes(&volumes, &rate, &mut triggers);
        self.scans(interval, &rate, &mut triggers);
        if capacity_short > 0 {
            triggers.insert(
                (AlertKind::TrackingCapacity, Subject::Global),
                Trigger {
                    observed: (self.series.len() + capacity_short) as f64,
                    threshold: self.config.max_series as f64,
                    baseline: None,
                },
            );
        }
        self.advance(triggers, &volumes, interval.elapsed, at, &mut outcome);
        self.unknown_sources(interval, at, &mut outcome);
        outcome
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
            let limits = match subject {
                Subject::Global => &self.config.global,
                Subject::Prefix(_) => &self.config.prefix,
                Subject::Source(_) => &self.config.source,
            };
            let pps = rate(volume.packets);
            let bps = rate(volume.bytes) * 8.0;
            for (kind, value, limit) in [
                (AlertKind::ThresholdPps, pps, limits.pps),
                (AlertKind::ThresholdBps, bps, limits.bps),
            ] {
                if let Some(limit) = limit.filter(|limit| value > *limit) {
                    triggers.insert(
                        (kind, *subject),
                        Trigger {
                            observed: value,
                            threshold: limit,
                            baseline: None,
                        },
                    );
                }
            }
        }
    }

    /// Updates every tracked series (absent subjects count as zero) and collects spikes.
    /// Returns how many new series could not be tracked for the cap.
    fn spikes(
        &mut self,
        volumes: &HashMap<Subject, Volume>,
        rate: &impl Fn(u64) -> f64,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) -> usize {
        let mut untracked = 0;
        for subject in volumes.keys() {
            if self.series.contains_key(subject) {
                continue;
            }
            if self.series.len() >= self.config.max_series {
                untracked += 1;
                continue;
            }
            self.series.insert(*subject, Series::default());
        }
        let spike = self.config.spike;
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
            let running = open.get(&(AlertKind::SpikePps, *subject));
            let trigger = match running {
                // A running event is judged against the baseline it started from.
                Some(event) => (value > event.threshold).then_some(Trigger {
                    observed: value,
                    threshold: event.threshold,
                    baseline: event.baseline,
                }),
                None if spike.enabled && series.ewma.samples() >= spike.warmup => {
                    let mean = series.ewma.mean();
                    let threshold = (mean + spike.k * series.ewma.sigma())
                        .max(mean * spike.min_ratio)
                        .max(spike.min_pps);
                    (value > threshold).then_some(Trigger {
                        observed: value,
                        threshold,
                        baseline: Some(mean),
                    })
                }
                None => None,
            };
            match trigger {
                Some(trigger) => {
                    triggers.insert((AlertKind::SpikePps, *subject), trigger);
                }
                // The baseline learns only from normal traffic, never from an event.
                None if running.is_none() => series.ewma.update(alpha, value),
                None => {}
            }
            *subject == Subject::Global || series.idle < idle_expiry || running.is_some()
        });
        untracked
    }

    fn scans(
        &self,
        interval: &Interval,
        rate: &impl Fn(u64) -> f64,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        let scan = self.config.scan;
        for source in &interval.sources {
            let subject = Subject::Source(source.addr);
            let syn = rate(source.stats.tcp_syn_packets);
            let checks = [
                (AlertKind::SynFlood, syn, scan.syn_pps),
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
                    triggers.insert(
                        (kind, subject),
                        Trigger {
                            observed: value,
                            threshold: limit,
                            baseline: None,
                        },
                    );
                }
            }
        }
    }

    /// The hysteresis state machine: start, update, end.
    fn advance(
        &mut self,
        mut triggers: BTreeMap<(AlertKind, Subject), Trigger>,
        volumes: &HashMap<Subject, Volume>,
        elapsed: Duration,
        at: Duration,
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
            let trigger = triggers.remove(&key);
            let state = match (self.open.get_mut(&key), trigger) {
                (None, None) => continue,
                (None, Some(trigger)) => {
                    let id = format!("{}-{}", self.run, self.next_id);
                    self.next_id += 1;
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
                        },
                    );
                    AlertState::Start
                }
                (Some(event), trigger) => {
                    event.packets += volume.packets;
                    event.bytes += volume.bytes;
                    event.since_report += 1;
                    match trigger {
                        Some(trigger) => {
                            event.quiet = 0;
                            event.peak = event.peak.max(trigger.observed);
                            event.last_observed = trigger.observed;
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
            };
            let Some(event) = self.open.get(&key) else {
                continue;
            };
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
                detail: None,
            });
            if state == AlertState::End {
                self.open.remove(&key);
            }
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
        for source in &interval.sources {
            let addr = source.addr;
            if self.known.contains(&addr) || config.allowlist.iter().any(|net| net.contains(addr)) {
                continue;
            }
            if learning {
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
            let id = format!("{}-{}", self.run, self.next_id);
            self.next_id += 1;
            outcome.alerts.push(Alert {
                id,
                kind: AlertKind::UnknownSource,
                state: AlertState::Instant,
                severity: Severity::Info,
                subject: Subject::Source(addr),
                observed: packets as f64,
                baseline: None,
                threshold: config.min_packets as f64,
                at,
                interval: interval.elapsed,
                started: at.saturating_sub(interval.elapsed),
                peak: packets as f64,
                packets,
                bytes: source.stats.bytes,
                detail: None,
            });
        }
    }
}

fn severity(kind: AlertKind, peak: f64, threshold: f64) -> Severity {
    match kind {
        AlertKind::UnknownSource => Severity::Info,
        AlertKind::ThresholdPps
        | AlertKind::ThresholdBps
        | AlertKind::SpikePps
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
