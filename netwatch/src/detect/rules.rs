//! The rules that turn one interval into triggers: static thresholds, spikes over the EWMA
//! baseline of each rate series, heavy hitters without a baseline, and per-source SYN floods,
//! port scans and host sweeps (grouped by prefix).
//!
//! Owns the rate series and their baselines ([`Series`]), and what a [`Trigger`] says; it
//! must not start, update or end an event (the hysteresis does, from the triggers), nor
//! emit an alert itself, nor touch the known sources. A running event is only read here, so
//! that a spike is judged against the baseline it started from.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::{
    alert::{AlertKind, Members, Subject},
    cidr::Cidr,
    detector::Detector,
    state::{Series, Trigger, Volume},
};
use crate::collect::Interval;

/// Sources of one prefix that meet the same per-source rule in one interval and are reported
/// as one alert for the prefix.
pub(super) const GROUP_MIN: usize = 2;
/// Addresses an alert for many sources lists.
const MEMBERS_LISTED: usize = 5;
/// Hosts of one local prefix that meet the same rule in one interval and are reported as one
/// alert for the prefix: a carpet bombing hits many; two hosts hit at once are more often two
/// attacks, each named with its own type.
const VICTIMS_GROUP_MIN: usize = 3;
/// A prefix's heavy hitter is left out when one source of it that is a heavy hitter itself
/// sends this share of the prefix's packets: it is the same attack.
const ONE_SOURCE_SHARE: f64 = 0.8;

impl Detector {
    pub(super) fn thresholds(
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
                Subject::DestinationPrefix(_) => &self.config.destination_prefix,
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
    pub(super) fn spikes(
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
            // A sender with no baseline that sends much is a heavy hitter; a local host or
            // prefix with none that receives much is a new victim, which no spike can name.
            let heavy_trigger =
                (subject != &Subject::Global && (heavy_running || watched) && enough)
                    .then(|| heavy.min_pps.max(heavy.share * global_pps))
                    .filter(|threshold| value >= *threshold)
                    .map(|threshold| Trigger {
                        detail: Some(if subject.receives() {
                            String::from("new victim: no baseline yet")
                        } else {
                            format!("new {}: no baseline yet", subject.scope())
                        }),
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
    pub(super) fn one_heavy_hitter_per_attack(
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

    /// A victim (a local host or prefix) whose limit or spike already fires is named by that
    /// alert: not also by a second one saying it is new.
    pub(super) fn one_alert_per_victim(
        &self,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        let named: Vec<Subject> = triggers
            .keys()
            .filter(|(kind, subject)| {
                subject.receives()
                    && matches!(
                        kind,
                        AlertKind::ThresholdPps | AlertKind::ThresholdBps | AlertKind::SpikePps
                    )
            })
            .map(|(_, subject)| *subject)
            .collect();
        for subject in named {
            let key = (AlertKind::HeavyHitter, subject);
            if !self.open.contains_key(&key) {
                triggers.remove(&key);
            }
        }
    }

    /// Hosts of one local prefix that the same rule names in the same interval are one attack
    /// on the prefix (carpet bombing): one alert on the prefix, with how many hosts and the
    /// first few, in place of an alert per host (whose events already running go on). The
    /// prefix's own rules fire too when each host stays under every per-host rule. A prefix
    /// whose traffic is nearly all one host's that alerts is that host's attack: only the
    /// host alerts.
    pub(super) fn one_alert_per_victim_prefix(
        &self,
        volumes: &HashMap<Subject, Volume>,
        triggers: &mut BTreeMap<(AlertKind, Subject), Trigger>,
    ) {
        // The hosts each rule names, by prefix.
        let mut hosts: BTreeMap<(AlertKind, Cidr), Vec<IpAddr>> = BTreeMap::new();
        for (kind, subject) in triggers.keys() {
            if let Subject::Destination(addr) = subject {
                hosts
                    .entry((*kind, self.prefix_of(*addr)))
                    .or_default()
                    .push(*addr);
            }
        }
        for ((kind, cidr), mut addrs) in hosts {
            let key = (kind, Subject::DestinationPrefix(cidr));
            let open = self.open.contains_key(&key);
            if addrs.len() >= VICTIMS_GROUP_MIN || open {
                addrs.sort();
                let mut folded = Trigger::new(0.0, 0.0, Some(0.0));
                for addr in &addrs {
                    let host = (kind, Subject::Destination(*addr));
                    let Some(trigger) = triggers.get(&host) else {
                        continue;
                    };
                    folded.observed += trigger.observed;
                    folded.threshold += trigger.threshold;
                    folded.baseline = folded.baseline.zip(trigger.baseline).map(|(a, b)| a + b);
                    // A host's own running event goes on to its end; no new one starts.
                    if !self.open.contains_key(&host) {
                        triggers.remove(&host);
                    }
                }
                let trigger = triggers.entry(key).or_insert(folded);
                trigger.members = Some(members(addrs.into_iter()));
            } else if let [addr] = addrs[..]
                && !open
                && triggers.contains_key(&key)
            {
                let host = volumes
                    .get(&Subject::Destination(addr))
                    .map_or(0, |volume| volume.packets) as f64;
                let whole = volumes.get(&key.1).map_or(0, |volume| volume.packets) as f64;
                if host >= ONE_SOURCE_SHARE * whole {
                    triggers.remove(&key);
                }
            }
        }
    }

    /// Per-source SYN floods and scans; sources of one prefix that meet the same rule in the
    /// same interval make one trigger for the prefix.
    pub(super) fn scans(
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
}

/// The sources one alert stands for, from their addresses in order: how many, and the first
/// few.
pub(super) fn members(addrs: impl ExactSizeIterator<Item = IpAddr>) -> Members {
    Members {
        count: addrs.len() as u64,
        first: addrs.take(MEMBERS_LISTED).collect(),
    }
}
