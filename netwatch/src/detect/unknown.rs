//! Unknown sources: during a learning period the sources seen are learned as known (kept in
//! the store across restarts); after it, a source neither known nor allowlisted that sends at
//! least `unknown.min_packets` alerts once, and is known from then on. Many of one prefix in
//! one interval make one alert for the prefix.
//!
//! Owns the known set and its changes ([`KnownChange`], [`KnownState`]); it must not start or
//! end an event (an unknown source is a one-off alert, without hysteresis), nor teach a
//! baseline. A source an event is about while netwatch learns is never learned.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use super::{
    alert::{Alert, AlertKind, AlertState, Severity, Subject},
    cidr::Cidr,
    detector::Detector,
    rules::{GROUP_MIN, members},
    state::{KnownChange, Outcome},
};
use crate::collect::Interval;

impl Detector {
    pub(super) fn unknown_sources(
        &mut self,
        interval: &Interval,
        at: Duration,
        outcome: &mut Outcome,
    ) {
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
                victims: Vec::new(),
                capture: None,
                intel: None,
                context: Default::default(),
                by_as: Vec::new(),
            });
        }
    }
}
