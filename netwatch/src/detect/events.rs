//! Events and their hysteresis: one event is one `start`, periodic `update`s and one `end`
//! carrying the peak and the totals. Also the kernel's early start of a global event, which
//! the next interval's reading confirms or ends, and the traffic mix an event keeps for its
//! flood alerts.
//!
//! Owns the running events ([`Open`]) and their lifecycle; it must not decide what crosses a
//! rule (the rules hand it triggers), nor teach a baseline, nor touch the known sources.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use super::{
    alert::{Alert, AlertKind, AlertState, Severity, Subject},
    attack::Attack,
    detector::Detector,
    state::{Open, Outcome, Trigger, Volume},
};
use crate::collect::{Interval, Mix};

impl Detector {
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
            victims: Vec::new(),
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
        })
    }

    /// The traffic mix of every subject that has a trigger or a running flood event, in one
    /// pass over the sources.
    pub(super) fn mixes(
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
            let prefix = Subject::DestinationPrefix(self.prefix_of(destination.addr));
            if let Some(mix) = mixes.get_mut(&prefix) {
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
    pub(super) fn advance(
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
                victims: Vec::new(),
                capture: None,
                intel: None,
                context: Default::default(),
                by_as: Vec::new(),
            });
            if state == AlertState::End {
                self.open.remove(&key);
            }
        }
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
