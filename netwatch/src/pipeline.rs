//! collect -> detect -> report, once per interval, and inspect -> report for every sample;
//! and the ban events of mitigation, which acts on the alerts reported here.
//! Live monitoring and replay both drive this same pipeline, with wall-clock or capture time,
//! so a capture gives the alerts live traffic would give.

use std::{collections::BTreeMap, io, time::Duration};

use crate::{
    collect::{Collector, Interval},
    datapath::{SampledFrame, Snapshot},
    detect::{
        DetectConfig, Detector,
        alert::{Alert, AlertKind, Places},
    },
    inspect::{Event, InspectConfig, Inspector, http::StreamCounts},
    intel::{Feed, IntelWatch},
    mitigate::{BanEvent, RuleEvent},
    report::{
        self, Context,
        sink::{Finding, FindingReport, IntervalReport, Sink},
    },
};

/// Counts of what the pipeline has done, for the final summary (and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Intervals reported.
    pub intervals: u64,
    /// Alert lines by kind.
    pub alerts: BTreeMap<AlertKind, u64>,
    /// Event lines by event name.
    pub events: BTreeMap<&'static str, u64>,
    /// Samples inspected.
    pub samples: u64,
    /// Samples that held no TCP or UDP payload the inspector could decode.
    pub undecodable_samples: u64,
    /// Ban events by action.
    pub bans: BTreeMap<&'static str, u64>,
}

/// What each alert meets on its way to the sinks: the evidence of its event (a packet
/// capture, set up in the daemon's wiring), linked to it.
pub trait Evidence {
    /// Starts, follows or ends the capture of `alert`'s event, and links it
    /// ([`Alert::capture`]).
    fn alert(&mut self, alert: &mut Alert);
    /// Once a round of intervals, at `at` (the collection clock).
    fn tick(&mut self, at: Duration);
}

/// What one interface (or capture) goes through: collection, detection and inspection,
/// with the name its records carry.
pub struct Watch {
    collector: Collector,
    detector: Detector,
    inspector: Inspector,
    context: Context,
}

impl Watch {
    /// The stages for the interface of `context`.
    pub fn new(detector: Detector, inspector: Inspector, context: Context) -> Self {
        Self {
            collector: Collector::new(),
            detector,
            inspector,
            context,
        }
    }
}

/// The per-interval stages of every interface watched, their combined view, and the sinks
/// they report to.
pub struct Pipeline {
    watches: Vec<Watch>,
    /// The sum of every interface, when there are several: its records, and the global rules
    /// on the sum (see [`Detector::global_only`]).
    combined: Option<Watch>,
    /// The intervals of the current round, for the combined view.
    round: Vec<Interval>,
    sinks: Vec<Box<dyn Sink>>,
    tally: Tally,
    /// The JSON line of the finding being reported, reused.
    json: Vec<u8>,
    /// Alerts reported since they were last taken, with their interface, when someone acts
    /// on them (mitigation); `None`: not kept.
    alerts: Option<Vec<(String, Alert)>>,
    /// The evidence each alert is linked to, when captures run.
    evidence: Option<Box<dyn Evidence + Send>>,
    /// What the indicator feeds say of the traffic, when feeds are loaded.
    intel: Option<IntelWatch>,
    /// The AS and country of the addresses alerts name, when databases are configured.
    enrich: Option<crate::enrich::Enricher>,
    /// How many of each list of an interval report are looked up (see `set_enricher`).
    enrich_listed: usize,
}

impl Pipeline {
    /// Wires one watch per interface, and `combined` for their sum, to `sinks`, which get
    /// every interval and finding in this order.
    pub fn new(watches: Vec<Watch>, combined: Option<Watch>, sinks: Vec<Box<dyn Sink>>) -> Self {
        Self {
            watches,
            combined,
            round: Vec::new(),
            sinks,
            tally: Tally::default(),
            json: Vec::new(),
            alerts: None,
            evidence: None,
            intel: None,
            enrich: None,
            enrich_listed: 0,
        }
    }

    /// Puts the AS and country of the addresses each alert names into it from now on, and
    /// of the first `listed` of each list an interval report has (the most any sink lists).
    pub fn set_enricher(&mut self, enricher: crate::enrich::Enricher, listed: usize) {
        self.enrich = Some(enricher);
        self.enrich_listed = listed;
    }

    /// Matches the traffic against `feed` from now on (a new one replaces the old, what was
    /// said staying said); alert ids start with `run`.
    pub fn set_intel(&mut self, feed: Feed, repeat_after: Duration, run: &str) {
        match &mut self.intel {
            Some(intel) => intel.set_feed(feed, repeat_after),
            None => self.intel = Some(IntelWatch::new(feed, repeat_after, run.to_owned())),
        }
    }

    /// Links every alert from now on to its evidence.
    pub fn set_evidence(&mut self, evidence: Box<dyn Evidence + Send>) {
        self.evidence = Some(evidence);
    }

    /// Keeps every alert reported from now on until [`Pipeline::take_alerts`].
    pub fn keep_alerts(&mut self) {
        self.alerts.get_or_insert_with(Vec::new);
    }

    /// The alerts reported since the last call, with their interface (none unless
    /// [`Pipeline::keep_alerts`]).
    pub fn take_alerts(&mut self) -> Vec<(String, Alert)> {
        self.alerts.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Reports ban events to every sink, in order.
    pub fn report_bans(&mut self, events: &[BanEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            *self.tally.bans.entry(event.change.name()).or_default() += 1;
            self.json.clear();
            report::ban::write_json(&mut self.json, event)?;
            let iface = event.iface.clone();
            self.report(&iface, Finding::Ban(event))?;
        }
        self.flush()
    }

    /// Reports signature rule events to every sink, in order.
    pub fn report_rules(&mut self, events: &[RuleEvent]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            self.json.clear();
            report::rule::write_json(&mut self.json, event)?;
            let iface = event.rule.iface.clone();
            self.report(&iface, Finding::Rule(event))?;
        }
        self.flush()
    }

    /// Also reports to `sink`.
    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// What has been done so far.
    pub fn tally(&self) -> Tally {
        Tally {
            undecodable_samples: self.watches().map(|w| w.inspector.undecodable()).sum(),
            ..self.tally.clone()
        }
    }

    fn watches(&self) -> impl Iterator<Item = &Watch> {
        self.watches.iter().chain(&self.combined)
    }

    fn watches_mut(&mut self) -> impl Iterator<Item = &mut Watch> {
        self.watches.iter_mut().chain(&mut self.combined)
    }

    /// Reconfigures every detector (hot reload); learned state is kept.
    pub fn reconfigure_detectors(&mut self, config: &DetectConfig) {
        for watch in self.watches_mut() {
            watch.detector.reconfigure(config.clone());
        }
    }

    /// Reconfigures every inspector (hot reload).
    pub fn reconfigure_inspectors(&mut self, config: &InspectConfig) {
        for watch in self.watches_mut() {
            watch.inspector.reconfigure(config.clone());
        }
    }

    /// Sets how many sources each report lists.
    pub fn set_top(&mut self, top: usize) {
        for watch in self.watches_mut() {
            watch.context.top = top;
        }
    }

    /// Has every sink keep what waits (the store), and reports what could not be kept.
    pub fn finish(self) {
        let undecodable: u64 = self.watches().map(|w| w.inspector.undecodable()).sum();
        if undecodable > 0 {
            log::info!(
                "{undecodable} of {} samples held no TCP or UDP payload that could be decoded",
                self.tally.samples
            );
        }
        let mut streams = StreamCounts::default();
        for watch in self.watches() {
            let counts = watch.inspector.stream_counts();
            streams.dropped += counts.dropped;
            streams.cut += counts.cut;
            streams.timed_out += counts.timed_out;
        }
        if streams.dropped + streams.cut + streams.timed_out > 0 {
            log::info!(
                "HTTP requests gathered across segments and reported incomplete: {} pushed out for room (inspect.max_flows), {} cut at inspect.follow_bytes, {} whose rest never came (inspect.follow_timeout, or the end)",
                streams.dropped,
                streams.cut,
                streams.timed_out
            );
        }
        for sink in self.sinks {
            sink.finish();
        }
    }

    /// Inspects one frame sampled on interface `index` at `at`, and reports what it shows at
    /// once.
    pub fn sample(&mut self, index: usize, frame: &SampledFrame, at: Duration) -> io::Result<()> {
        let Some(watch) = self.watches.get_mut(index) else {
            return Ok(());
        };
        if let Some(early) = frame.early() {
            // Not a frame: the kernel saw the rate go over the early limit.
            let elapsed = Duration::from_nanos(early.elapsed_ns);
            let Some(mut alert) = watch.detector.early(early.packets, elapsed, at) else {
                return Ok(());
            };
            let iface = watch.context.iface.clone();
            self.report_alert(&iface, &mut alert)?;
            return self.flush();
        }
        self.tally.samples += 1;
        let mut findings = watch.inspector.inspect(&frame.data, at);
        let iface = watch.context.iface.clone();
        if let Some(intel) = &mut self.intel {
            for event in &findings.events {
                findings.alerts.extend(intel.event(event, at));
            }
        }
        for event in &findings.events {
            self.report_event(&iface, event)?;
        }
        for alert in &mut findings.alerts {
            self.report_alert(&iface, alert)?;
        }
        self.flush()
    }

    /// The early limit of interface `index`'s packet rate, from its detector (see
    /// [`Detector::early_limit`]).
    pub fn early_limit(&self, index: usize) -> Option<f64> {
        let watch = self.watches.get(index)?;
        watch.detector.early_limit().map(|(_, pps)| pps)
    }

    /// One interval of interface `index` that ended at `at` (time since the Unix epoch) and
    /// lasted `elapsed`. `last` marks the final, partial interval. With several interfaces,
    /// [`Pipeline::combine`] follows once each has had its tick.
    pub fn tick(
        &mut self,
        index: usize,
        snapshot: &Snapshot,
        at: Duration,
        elapsed: Duration,
        last: bool,
    ) -> io::Result<()> {
        let Some(watch) = self.watches.get_mut(index) else {
            return Ok(());
        };
        let interval = watch.collector.update(snapshot, elapsed);
        if self.combined.is_some() {
            self.round.push(interval.clone());
        }
        self.observe(Some(index), &interval, at, last)?;
        if let Some(watch) = self.watches.get_mut(index) {
            watch.collector.recycle(interval);
        }
        Ok(())
    }

    /// The combined view of the intervals ticked since the last call: one record named
    /// [`COMBINED`](crate::collect::COMBINED) and the global rules on the sum. Nothing with a single interface.
    pub fn combine(&mut self, at: Duration, last: bool) -> io::Result<()> {
        if self.combined.is_none() || self.round.is_empty() {
            return Ok(());
        }
        let interval = Interval::combine(&std::mem::take(&mut self.round));
        self.observe(None, &interval, at, last)
    }

    /// Detection, inspection's end of interval, and the sinks, for the interval of watch
    /// `index` (`None`: the combined view).
    fn observe(
        &mut self,
        index: Option<usize>,
        interval: &Interval,
        at: Duration,
        last: bool,
    ) -> io::Result<()> {
        let watch = match index {
            Some(index) => self.watches.get_mut(index),
            None => self.combined.as_mut(),
        };
        let Some(watch) = watch else {
            return Ok(());
        };
        let elapsed = interval.elapsed;
        let mut outcome = watch.detector.observe(interval, at);
        // Each interface's matches in the kernel (the sum of several would say the same
        // again).
        if index.is_some()
            && let Some(intel) = &mut self.intel
        {
            outcome.alerts.extend(intel.interval(interval, at));
        }
        let unrecorded = interval.intel.unrecorded;
        if index.is_some() && unrecorded.packets > 0 {
            log::warn!(
                "intel on {}: {} frames ({} bytes) of listed networks found the kernel's table \
                 of matches full ({} per interval): counted, not attributed to a host",
                watch.context.iface,
                unrecorded.packets,
                unrecorded.bytes,
                netwatch_common::INTEL_MAX_HITS
            );
        }
        outcome
            .alerts
            .extend(watch.inspector.end_interval(at, elapsed));
        watch.detector.cap(&mut outcome, at, elapsed);
        // HTTP requests whose rest never came (all of them at the end), as far as they got:
        // reported after the interval.
        let expired = watch.inspector.expire(at, last);
        // The AS and country of each address the report lists: a lookup per address listed,
        // never per packet.
        let places = match &mut self.enrich {
            Some(enricher) => {
                let top = watch.context.top.max(self.enrich_listed);
                let slotless = &interval.slotless;
                enricher.places(
                    interval
                        .sources
                        .iter()
                        .take(top)
                        .map(|source| source.addr)
                        .chain(interval.destinations.iter().take(top).map(|d| d.addr))
                        .chain(
                            slotless
                                .wide
                                .iter()
                                .take(top)
                                .chain(slotless.narrow.iter().take(top))
                                .map(|(prefix, _)| prefix.addr),
                        )
                        .chain(slotless.targets.iter().take(top).map(|(t, _)| t.addr)),
                )
            }
            None => Places::new(),
        };
        let report = IntervalReport {
            context: &watch.context,
            at,
            interval,
            last,
            known: &outcome.known,
            streams: watch.inspector.stream_counts(),
            combined: index.is_none(),
            places: &places,
        };
        for sink in &mut self.sinks {
            sink.interval(&report)?;
        }
        let iface = watch.context.iface.clone();
        for event in &expired {
            self.report_event(&iface, event)?;
        }
        for alert in &mut outcome.alerts {
            self.report_alert(&iface, alert)?;
        }
        // Once a round: after the first interface's interval (the only one, mostly).
        if index == Some(0)
            && let Some(evidence) = &mut self.evidence
        {
            evidence.tick(at);
        }
        self.flush()?;
        // An interface's interval; the sum of several is no interval of its own.
        if index.is_some() {
            self.tally.intervals += 1;
        }
        Ok(())
    }

    fn report_event(&mut self, iface: &str, event: &Event) -> io::Result<()> {
        *self.tally.events.entry(event.kind.name()).or_default() += 1;
        self.json.clear();
        report::event::write_json(&mut self.json, iface, event)?;
        self.report(iface, Finding::Event(event))
    }

    fn report_alert(&mut self, iface: &str, alert: &mut Alert) -> io::Result<()> {
        if let Some(evidence) = &mut self.evidence {
            evidence.alert(alert);
        }
        if let Some(enrich) = &mut self.enrich {
            enrich.annotate(alert);
        }
        *self.tally.alerts.entry(alert.kind).or_default() += 1;
        if let Some(alerts) = &mut self.alerts {
            alerts.push((iface.to_owned(), alert.clone()));
        }
        self.json.clear();
        report::alert::write_json(&mut self.json, iface, alert)?;
        self.report(iface, Finding::Alert(alert))
    }

    /// Hands the finding whose JSON line is in `self.json` to every sink.
    fn report(&mut self, iface: &str, finding: Finding<'_>) -> io::Result<()> {
        let report = FindingReport {
            iface,
            finding,
            json: &self.json,
        };
        for sink in &mut self.sinks {
            sink.finding(&report)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        for sink in &mut self.sinks {
            sink.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use netwatch_common::{GlobalStats, SourceKey, SourceStats};

    use std::sync::Arc;

    use super::*;
    use crate::{
        datapath::SourceReading,
        detect::{DetectConfig, KnownState, UnknownConfig},
        inspect::InspectConfig,
        report::{
            Format,
            metrics::{Metrics, MetricsSink},
            sink::Reports,
        },
    };

    /// Ten unknown sources, each in a network of its own, with a cap of three alert lines:
    /// three are written, and one line counts the seven left out, in the tally and in the
    /// metrics.
    #[test]
    fn alerts_over_the_cap_are_counted_once_and_in_the_metrics() {
        let config = DetectConfig {
            max_alerts: 3,
            unknown: UnknownConfig {
                learning: Duration::ZERO,
                ..UnknownConfig::default()
            },
            ..DetectConfig::default()
        };
        let known = KnownState {
            learning_started: Some(Duration::from_secs(1)),
            ..KnownState::default()
        };
        let detector =
            Detector::new(config, known, "t".into()).with_interval(Duration::from_secs(1));
        let inspector = Inspector::new(InspectConfig::default(), "t".into());
        let context = Context {
            iface: "eth0".into(),
            max_sources: 16,
            top: 0,
        };
        let metrics = Arc::new(Metrics::new(0).unwrap());
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(Reports::new(Box::new(io::sink()), Format::Json)),
            Box::new(MetricsSink::new(Arc::clone(&metrics), None)),
        ];
        let mut pipeline =
            Pipeline::new(vec![Watch::new(detector, inspector, context)], None, sinks);
        let sources: Vec<SourceReading> = (0..10u8)
            .map(|i| SourceReading {
                slot: u32::from(i),
                key: SourceKey::ipv4([100, i, 0, 1]),
                stats: SourceStats {
                    packets: 20,
                    bytes: 2_000,
                    udp_packets: 20,
                    ..SourceStats::default()
                },
                spread: None,
            })
            .collect();
        let snapshot = Snapshot {
            globals: GlobalStats {
                total_packets: 200,
                total_bytes: 20_000,
                ..GlobalStats::default()
            },
            sources,
            released: Vec::new(),
            overflow_reflected_port: 0,
            overflow: Default::default(),
            destination_count: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
            intel: Default::default(),
        };
        pipeline
            .tick(
                0,
                &snapshot,
                Duration::from_secs(100),
                Duration::from_secs(1),
                false,
            )
            .unwrap();
        let tally = pipeline.tally();
        assert_eq!(tally.alerts.get(&AlertKind::UnknownSource), Some(&3));
        assert_eq!(tally.alerts.get(&AlertKind::Suppressed), Some(&1));
        let text = metrics.render();
        assert!(
            text.contains("netwatch_alerts_suppressed_total{iface=\"eth0\"} 7\n"),
            "{text}"
        );
    }
}
