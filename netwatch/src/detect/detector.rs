//! The [`Detector`]: the state detection keeps across intervals, and its entry points. One
//! interval goes in ([`Detector::observe`]), its [`Outcome`] comes out, then is capped
//! ([`Detector::cap`]).
//!
//! Owns the order in which the rules, the events and the explanations run on one interval,
//! and the cap on the alert lines of one interval (which forgets the events whose start it
//! leaves out and takes back the unknown sources it leaves out). It must not hold a rule (the
//! rules do), nor update or end an event (the hysteresis does). Reads no clock.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use super::{
    alert::{Alert, AlertKind, AlertState, Severity, Subject},
    cidr::Cidr,
    config::DetectConfig,
    ewma::alpha_for_window,
    state::{KnownChange, KnownState, Open, Outcome, Series, Trigger, Volume},
};
use crate::{collect::Interval, datapath::DestinationCount};

/// Detection state across intervals.
pub struct Detector {
    pub(super) config: DetectConfig,
    pub(super) alpha: f64,
    pub(super) series: HashMap<Subject, Series>,
    pub(super) open: BTreeMap<(AlertKind, Subject), Open>,
    pub(super) known: HashSet<IpAddr>,
    pub(super) learning_started: Option<Duration>,
    pub(super) pending: HashMap<IpAddr, u64>,
    /// Sources an event was about while netwatch learned: never learned as known.
    pub(super) suspects: HashSet<IpAddr>,
    /// The sources (and their packets) of each unknown-source alert of the last interval,
    /// so that an alert the cap leaves out can be taken back.
    pub(super) alerted_now: HashMap<Subject, Vec<(IpAddr, u64)>>,
    run: String,
    next_id: u64,
    /// The configured interval: a much shorter one is partial.
    nominal: Option<Duration>,
    /// Only the rules on the whole (the sum of several interfaces): per-source and
    /// per-prefix rules, scans and unknown sources are the interfaces' own detectors' work.
    pub(super) global_only: bool,
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
    #[cfg(test)]
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
        // Destinations are subjects of their own only when they are the local networks'
        // hosts, counted exactly; a sample of every destination only names victims.
        let subjects = !self.global_only && interval.destination_count == DestinationCount::Local;
        for destination in interval.destinations.iter().filter(|_| subjects) {
            let prefix = Subject::DestinationPrefix(self.prefix_of(destination.addr));
            let entry = volumes.entry(prefix).or_default();
            entry.packets += destination.stats.packets;
            entry.bytes += destination.stats.bytes;
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
        self.one_alert_per_victim(&mut triggers);
        self.one_alert_per_victim_prefix(&volumes, &mut triggers);
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
            victims: Vec::new(),
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        });
        outcome.alerts = kept;
    }

    pub(super) fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.run, self.next_id);
        self.next_id += 1;
        id
    }

    pub(super) fn prefix_of(&self, addr: IpAddr) -> Cidr {
        let len = if addr.is_ipv4() {
            self.config.prefix_v4
        } else {
            self.config.prefix_v6
        };
        Cidr::of(addr, len)
    }
}
