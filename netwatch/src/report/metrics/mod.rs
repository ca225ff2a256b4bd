//! Prometheus metrics: counters fed by the pipeline once per interval, served in the text
//! exposition format by a small HTTP server on its own thread, so that a scrape never waits
//! on collection and collection never waits on a scrape.
//!
//! Cardinality is bounded: per-source series exist only for the current top N sources and
//! are replaced every interval; victims' series only for the top N victims of the open flood
//! alerts, removed when those end.
//!
//! This module holds [`Metrics`], its update methods and the report output that feeds it
//! ([`MetricsSink`]); `register` creates and registers every metric ([`Metrics::new`]), and
//! `server` serves them over HTTP ([`serve`]).

mod register;
mod server;
#[cfg(test)]
mod tests;

use std::{
    io,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use prometheus::{
    Encoder as _, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};

pub use self::server::serve;
use super::{
    sink::{Finding, FindingReport, IntervalReport, Sink},
    store::SinkCounts,
};
use crate::{
    collect::Interval,
    detect::alert::{Alert, AlertKind, AlertState},
    report::alert::victim_port,
};

/// Every metric netwatch exports.
pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    protocol_packets: IntCounterVec,
    blind_spots: IntCounterVec,
    unattributed: IntGaugeVec,
    samples: IntCounterVec,
    evicted: IntCounterVec,
    sources_tracked: IntGaugeVec,
    sources_capacity: IntGaugeVec,
    map_read: GaugeVec,
    alerts: IntCounterVec,
    suppressed: IntCounterVec,
    streams: IntGaugeVec,
    store_waiting: IntGauge,
    events: IntCounterVec,
    attach: IntGaugeVec,
    source_pps: GaugeVec,
    source_bps: GaugeVec,
    slotless_sources: IntGaugeVec,
    slotless_prefixes: IntGaugeVec,
    intel_packets: IntCounterVec,
    slotless_target_pps: GaugeVec,
    slotless_prefix_pps: GaugeVec,
    destination_pps: GaugeVec,
    destination_bps: GaugeVec,
    victim_pps: GaugeVec,
    rule_events: IntCounterVec,
    rules_active: IntGauge,
    rule_packets: IntGaugeVec,
    export_waiting: IntGaugeVec,
    export_sent: IntCounterVec,
    export_dropped: IntCounterVec,
    export_up: IntGaugeVec,
    /// What each exporter's totals were when last shown: sent, dropped.
    shown_export: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    captures_active: IntGauge,
    capture_frames: IntCounterVec,
    capture_events: IntCounterVec,
    /// What the capture totals were when last shown (the counters grow by the difference).
    shown_captures: Mutex<CaptureTotals>,
    bans_active: IntGauge,
    ban_events: IntCounterVec,
    ban_packets: IntGaugeVec,
    ban_bytes: IntGaugeVec,
    ban_matched_packets: IntCounterVec,
    ban_matched_bytes: IntCounterVec,
    /// Each ban in force in the per-ban series: what it had matched when last shown (the
    /// totals grow by the difference).
    shown_bans: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// The sources of each interface in the per-source series now, removed at its next
    /// interval.
    shown: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// Likewise the slot-less destinations (destination, kind, port) and prefixes.
    shown_slotless: Mutex<std::collections::HashMap<String, ShownSlotless>>,
    /// Per interface, the victims of each open alert (by its id) and the victims' label
    /// values in the series now.
    victims: Mutex<std::collections::HashMap<String, OpenVictims>>,
    top: usize,
}

/// What the captures did since the start, as the metrics count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureTotals {
    /// Frames written to the files.
    pub written: u64,
    /// Frames the kernel's capture ring had no room for.
    pub lost: u64,
    /// Frames a capture no longer took (its budget, the folder's, the disk).
    pub refused: u64,
    /// Captures cut before their end.
    pub cut: u64,
    /// Files removed for the folder's budget.
    pub removed: u64,
    /// Writes the disk refused.
    pub failures: u64,
}

/// The victims of the open alerts of one interface, and what the series show of them.
#[derive(Default)]
struct OpenVictims {
    /// By alert id: each victim's labels (destination, attack, port) and packet rate.
    alerts: std::collections::HashMap<String, Vec<([String; 3], f64)>>,
    shown: Vec<[String; 3]>,
}

/// The label values of the slot-less series of one interface now.
#[derive(Default)]
struct ShownSlotless {
    targets: Vec<[String; 3]>,
    prefixes: Vec<String>,
    destinations: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates every series of `iface` that can be known in advance at 0, so that dashboards
    /// and alert rules see zero rather than no data.
    fn zero_known_series(&self, iface: &str) {
        self.packets.with_label_values(&[iface]);
        self.bytes.with_label_values(&[iface]);
        self.evicted.with_label_values(&[iface]);
        self.suppressed.with_label_values(&[iface]);
        self.slotless_sources.with_label_values(&[iface]);
        self.slotless_prefixes.with_label_values(&[iface]);
        for protocol in ["tcp", "udp", "icmp", "other"] {
            self.protocol_packets.with_label_values(&[iface, protocol]);
        }
        for kind in ["non_ip", "malformed", "overflow", "truncated"] {
            self.blind_spots.with_label_values(&[iface, kind]);
        }
        for outcome in ["sampled", "capped", "ring_full", "truncated"] {
            self.samples.with_label_values(&[iface, outcome]);
        }
        for outcome in ["listed", "unrecorded"] {
            self.intel_packets.with_label_values(&[iface, outcome]);
        }
        for outcome in ["dropped", "cut", "timed_out"] {
            self.streams.with_label_values(&[iface, outcome]);
        }
        for kind in AlertKind::ALL {
            for state in AlertState::ALL {
                self.alerts
                    .with_label_values(&[iface, kind.name(), state.name()]);
            }
        }
        for event in ["credential", "http", "dns", "keyword"] {
            self.events.with_label_values(&[iface, event]);
        }
    }

    /// Records where and how the program is attached, the kind of source map and its
    /// capacity; every series of the interface starts at 0.
    pub fn set_attach(&self, iface: &str, mode: &str, source_map: &str, capacity: u32) {
        self.attach
            .with_label_values(&[iface, mode, source_map])
            .set(1);
        self.sources_capacity
            .with_label_values(&[iface])
            .set(i64::from(capacity));
        self.zero_known_series(iface);
    }

    /// Records how long the last reading of `iface`'s maps took.
    pub fn set_map_read(&self, iface: &str, took: Duration) {
        self.map_read
            .with_label_values(&[iface])
            .set(took.as_secs_f64());
    }

    /// Folds one interval of `iface` in.
    pub fn observe_interval(&self, iface: &str, interval: &Interval) {
        let delta = &interval.delta;
        self.packets
            .with_label_values(&[iface])
            .inc_by(delta.total_packets);
        self.bytes
            .with_label_values(&[iface])
            .inc_by(delta.total_bytes);
        let mut protocols = [0u64; 4];
        for source in &interval.sources {
            protocols[0] += source.stats.tcp_packets;
            protocols[1] += source.stats.udp_packets;
            protocols[2] += source.stats.icmp_packets;
            protocols[3] += source.stats.other_packets;
        }
        for (name, count) in ["tcp", "udp", "icmp", "other"].iter().zip(protocols) {
            self.protocol_packets
                .with_label_values(&[iface, name])
                .inc_by(count);
        }
        for (kind, count) in [
            ("non_ip", delta.non_ip_packets),
            ("malformed", delta.malformed_packets),
            ("overflow", delta.overflow_packets),
            ("truncated", delta.truncated_packets),
        ] {
            self.blind_spots
                .with_label_values(&[iface, kind])
                .inc_by(count);
        }
        for (outcome, count) in [
            ("sampled", delta.sampled_packets),
            ("capped", delta.sample_capped_packets),
            ("ring_full", delta.sample_ring_full_packets),
            ("truncated", delta.sample_truncated_packets),
        ] {
            self.samples
                .with_label_values(&[iface, outcome])
                .inc_by(count);
        }
        for (outcome, count) in [
            ("listed", interval.intel.listed.packets),
            ("unrecorded", interval.intel.unrecorded.packets),
        ] {
            self.intel_packets
                .with_label_values(&[iface, outcome])
                .inc_by(count);
        }
        self.unattributed
            .with_label_values(&[iface])
            .set(i64::try_from(interval.unattributed.packets).unwrap_or(i64::MAX));
        self.evicted
            .with_label_values(&[iface])
            .inc_by(interval.evicted_sources);
        self.sources_tracked
            .with_label_values(&[iface])
            .set(i64::try_from(interval.tracked_sources).unwrap_or(i64::MAX));
        self.observe_slotless(iface, interval);
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sources = shown.entry(iface.to_owned()).or_default();
        for name in sources.drain(..) {
            let _ = self.source_pps.remove_label_values(&[iface, &name]);
            let _ = self.source_bps.remove_label_values(&[iface, &name]);
        }
        for source in interval.sources.iter().take(self.top) {
            let name = source.addr.to_string();
            self.source_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(source.stats.packets));
            self.source_bps
                .with_label_values(&[iface, &name])
                .set(interval.rate(source.stats.bytes) * 8.0);
            sources.push(name);
        }
    }

    /// The traffic without a slot of an interval (the estimates, the top destinations and
    /// prefixes) and the top local hosts, in series replaced every interval.
    fn observe_slotless(&self, iface: &str, interval: &Interval) {
        let breakdown = &interval.slotless;
        self.slotless_sources
            .with_label_values(&[iface])
            .set(i64::from(breakdown.sources));
        self.slotless_prefixes
            .with_label_values(&[iface])
            .set(i64::from(breakdown.prefixes));
        let mut shown = self
            .shown_slotless
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shown = shown.entry(iface.to_owned()).or_default();
        for [destination, kind, port] in shown.targets.drain(..) {
            let _ =
                self.slotless_target_pps
                    .remove_label_values(&[iface, &destination, &kind, &port]);
        }
        for prefix in shown.prefixes.drain(..) {
            let _ = self
                .slotless_prefix_pps
                .remove_label_values(&[iface, &prefix]);
        }
        for (target, traffic) in breakdown.targets.iter().take(self.top) {
            let labels = [
                target.addr.to_string(),
                target.kind.name().to_owned(),
                target.port_name().unwrap_or_default(),
            ];
            self.slotless_target_pps
                .with_label_values(&[iface, &labels[0], &labels[1], &labels[2]])
                .set(interval.rate(traffic.packets));
            shown.targets.push(labels);
        }
        for (prefix, traffic) in breakdown.wide.iter().take(self.top) {
            let name = prefix.to_string();
            self.slotless_prefix_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(traffic.packets));
            shown.prefixes.push(name);
        }
        for name in shown.destinations.drain(..) {
            let _ = self.destination_pps.remove_label_values(&[iface, &name]);
            let _ = self.destination_bps.remove_label_values(&[iface, &name]);
        }
        for destination in interval.destinations.iter().take(self.top) {
            let name = destination.addr.to_string();
            self.destination_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(destination.stats.packets));
            self.destination_bps
                .with_label_values(&[iface, &name])
                .set(interval.rate(destination.stats.bytes) * 8.0);
            shown.destinations.push(name);
        }
    }

    /// Counts an alert line.
    pub fn alert(&self, iface: &str, kind: &str, state: &str) {
        self.alerts.with_label_values(&[iface, kind, state]).inc();
    }

    /// Folds an alert's victims into the victims' series: a start or an update that names
    /// victims replaces what the alert named before, its end removes them; the series then
    /// show the top N victims of the interface's open alerts (a victim of several, at its
    /// highest rate).
    pub fn victims(&self, iface: &str, alert: &Alert) {
        let ended = alert.state == AlertState::End;
        if !ended && alert.victims.is_empty() {
            return;
        }
        let mut open = self
            .victims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = open.entry(iface.to_owned()).or_default();
        if ended {
            if open.alerts.remove(&alert.id).is_none() {
                return;
            }
        } else {
            let named = alert
                .victims
                .iter()
                .map(|victim| {
                    let labels = [
                        victim.addr.to_string(),
                        victim
                            .attack
                            .map_or(String::new(), |attack| attack.name().to_owned()),
                        victim_port(victim).map_or(String::new(), |port| port.to_string()),
                    ];
                    (labels, victim.pps)
                })
                .collect();
            open.alerts.insert(alert.id.clone(), named);
        }
        for labels in open.shown.drain(..) {
            let _ = self
                .victim_pps
                .remove_label_values(&[iface, &labels[0], &labels[1], &labels[2]]);
        }
        let mut highest: std::collections::HashMap<&[String; 3], f64> =
            std::collections::HashMap::new();
        for (labels, pps) in open.alerts.values().flatten() {
            let rate = highest.entry(labels).or_default();
            *rate = rate.max(*pps);
        }
        let mut top: Vec<(&[String; 3], f64)> = highest.into_iter().collect();
        top.sort_by(|(a, x), (b, y)| y.total_cmp(x).then(a.cmp(b)));
        top.truncate(self.top);
        let mut shown = Vec::with_capacity(top.len());
        for (labels, pps) in top {
            self.victim_pps
                .with_label_values(&[iface, &labels[0], &labels[1], &labels[2]])
                .set(pps);
            shown.push(labels.clone());
        }
        open.shown = shown;
    }

    /// Records what the HTTP streams of `iface` dropped, cut or timed out so far.
    pub fn set_streams(&self, iface: &str, counts: crate::inspect::http::StreamCounts) {
        for (outcome, count) in [
            ("dropped", counts.dropped),
            ("cut", counts.cut),
            ("timed_out", counts.timed_out),
        ] {
            self.streams
                .with_label_values(&[iface, outcome])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records how many records wait in memory for the store.
    pub fn set_store_waiting(&self, records: u64) {
        self.store_waiting
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// Counts a signature rule's event by what happened.
    pub fn rule_event(&self, change: &str) {
        self.rule_events.with_label_values(&[change]).inc();
    }

    /// Sets the rules in force: how many, and each one's matched and dropped packets (the
    /// series of a rule go when it ends).
    pub fn set_rules(&self, rules: &[(String, u64, u64)]) {
        self.rules_active
            .set(i64::try_from(rules.len()).unwrap_or(i64::MAX));
        self.rule_packets.reset();
        for (signature, matched, dropped) in rules {
            for (outcome, count) in [("matched", matched), ("dropped", dropped)] {
                self.rule_packets
                    .with_label_values(&[signature, outcome])
                    .set(i64::try_from(*count).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets what exporter `name` stands at: records waiting, whether its destination takes
    /// them, and adds what it sent and dropped since the last call (`sent` and `dropped` are
    /// since the start).
    pub fn set_export(&self, name: &str, waiting: u64, sent: u64, dropped: u64, up: bool) {
        self.export_waiting
            .with_label_values(&[name])
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.export_up.with_label_values(&[name]).set(i64::from(up));
        let mut shown = self
            .shown_export
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = shown.entry(name.to_owned()).or_default();
        self.export_sent
            .with_label_values(&[name])
            .inc_by(sent.saturating_sub(before.0));
        self.export_dropped
            .with_label_values(&[name])
            .inc_by(dropped.saturating_sub(before.1));
        *before = (sent, dropped);
    }

    /// Sets the captures in progress and adds what the captures did since the last call to
    /// the totals (`totals` are since the start).
    pub fn set_captures(&self, active: usize, totals: CaptureTotals) {
        self.captures_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        let mut shown = self
            .shown_captures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (vec, label, now, before) in [
            (
                &self.capture_frames,
                "written",
                totals.written,
                shown.written,
            ),
            (&self.capture_frames, "lost", totals.lost, shown.lost),
            (
                &self.capture_frames,
                "refused",
                totals.refused,
                shown.refused,
            ),
            (&self.capture_events, "cut", totals.cut, shown.cut),
            (
                &self.capture_events,
                "removed",
                totals.removed,
                shown.removed,
            ),
            (
                &self.capture_events,
                "write_failed",
                totals.failures,
                shown.failures,
            ),
        ] {
            vec.with_label_values(&[label])
                .inc_by(now.saturating_sub(before));
        }
        *shown = totals;
    }

    /// Counts alert lines left out over the cap.
    pub fn suppressed(&self, iface: &str, count: u64) {
        self.suppressed.with_label_values(&[iface]).inc_by(count);
    }

    /// Counts an event.
    pub fn event(&self, iface: &str, name: &str) {
        self.events.with_label_values(&[iface, name]).inc();
    }

    /// Counts a ban event by its action.
    pub fn ban_event(&self, action: &str) {
        self.ban_events.with_label_values(&[action]).inc();
    }

    /// The bans in force now in `mode`, each `(subject, packets, bytes)`, and those that ended
    /// since the last call with their final counts in `ended`: the per-ban series follow the
    /// bans in force, and the totals (by mode) grow by what each matched since it was last
    /// shown.
    pub fn set_bans(&self, mode: &str, bans: &[(String, u64, u64)], ended: &[(String, u64, u64)]) {
        let mut shown = self
            .shown_bans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (subject, packets, bytes) in bans.iter().chain(ended) {
            let (was_packets, was_bytes) = shown.get(subject).copied().unwrap_or((0, 0));
            self.ban_matched_packets
                .with_label_values(&[mode])
                .inc_by(packets.saturating_sub(was_packets));
            self.ban_matched_bytes
                .with_label_values(&[mode])
                .inc_by(bytes.saturating_sub(was_bytes));
            shown.insert(subject.clone(), (*packets, *bytes));
        }
        for (subject, _, _) in ended {
            if shown.remove(subject).is_some() {
                let _ = self.ban_packets.remove_label_values(&[subject.as_str()]);
                let _ = self.ban_bytes.remove_label_values(&[subject.as_str()]);
            }
        }
        for (subject, packets, bytes) in bans {
            self.ban_packets
                .with_label_values(&[subject.as_str()])
                .set(i64::try_from(*packets).unwrap_or(i64::MAX));
            self.ban_bytes
                .with_label_values(&[subject.as_str()])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
        self.bans_active.set(bans.len() as i64);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {err}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The metrics as a report output: each interval folded in, alerts and events counted, and
/// the state of the HTTP streams and of the store.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    store: Option<Arc<SinkCounts>>,
}

impl MetricsSink {
    /// Feeds `metrics`; `store` gives the records waiting for the store, if there is one.
    pub fn new(metrics: Arc<Metrics>, store: Option<Arc<SinkCounts>>) -> Self {
        Self { metrics, store }
    }
}

impl Sink for MetricsSink {
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()> {
        if report.combined {
            // Prometheus sums the interfaces itself.
            return Ok(());
        }
        let iface = &report.context.iface;
        self.metrics.observe_interval(iface, report.interval);
        self.metrics.set_streams(iface, report.streams);
        if let Some(store) = &self.store {
            self.metrics
                .set_store_waiting(store.waiting.load(Ordering::Relaxed));
        }
        Ok(())
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        match report.finding {
            Finding::Alert(alert) => {
                self.metrics
                    .alert(report.iface, alert.kind.name(), alert.state.name());
                self.metrics.victims(report.iface, alert);
                if alert.kind == AlertKind::Suppressed {
                    self.metrics.suppressed(report.iface, alert.observed as u64);
                }
            }
            Finding::Event(event) => self.metrics.event(report.iface, event.kind.name()),
            Finding::Ban(event) => self.metrics.ban_event(event.change.name()),
            Finding::Rule(event) => self.metrics.rule_event(event.change.name()),
        }
        Ok(())
    }
}
