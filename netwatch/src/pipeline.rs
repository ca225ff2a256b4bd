//! collect -> detect -> report, once per interval, and inspect -> report for every sample.
//! Live monitoring and replay both drive this same pipeline, with wall-clock or capture time,
//! so a capture gives the alerts live traffic would give.

use std::{collections::BTreeMap, io, time::Duration};

use crate::{
    collect::Collector,
    datapath::{SampledFrame, Snapshot},
    detect::{
        Detector,
        alert::{Alert, AlertKind},
    },
    inspect::{Event, Inspector},
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
}

/// The per-interval stages, their state, and the sinks they report to.
pub struct Pipeline {
    collector: Collector,
    detector: Detector,
    inspector: Inspector,
    context: Context,
    sinks: Vec<Box<dyn Sink>>,
    tally: Tally,
    /// The JSON line of the finding being reported, reused.
    json: Vec<u8>,
}

impl Pipeline {
    /// Wires the stages to `sinks`, which get every interval and finding in this order.
    pub fn new(
        detector: Detector,
        inspector: Inspector,
        context: Context,
        sinks: Vec<Box<dyn Sink>>,
    ) -> Self {
        Self {
            collector: Collector::new(),
            detector,
            inspector,
            context,
            sinks,
            tally: Tally::default(),
            json: Vec::new(),
        }
    }

    /// Also reports to `sink`.
    pub fn add_sink(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// What has been done so far.
    pub fn tally(&self) -> Tally {
        Tally {
            undecodable_samples: self.inspector.undecodable(),
            ..self.tally.clone()
        }
    }

    /// The detector, to reconfigure it.
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// Sets how many sources each report lists.
    pub fn set_top(&mut self, top: usize) {
        self.context.top = top;
    }

    /// The inspector, to reconfigure it.
    pub fn inspector_mut(&mut self) -> &mut Inspector {
        &mut self.inspector
    }

    /// Has every sink keep what waits (the store), and reports what could not be kept.
    pub fn finish(self) {
        let undecodable = self.inspector.undecodable();
        if undecodable > 0 {
            log::info!(
                "{undecodable} of {} samples held no TCP or UDP payload that could be decoded",
                self.tally.samples
            );
        }
        let streams = self.inspector.stream_counts();
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

    /// Inspects one sampled frame seen at `at`, and reports what it shows at once.
    pub fn sample(&mut self, frame: &SampledFrame, at: Duration) -> io::Result<()> {
        self.tally.samples += 1;
        let findings = self.inspector.inspect(&frame.data, at);
        for event in &findings.events {
            self.report_event(event)?;
        }
        for alert in &findings.alerts {
            self.report_alert(alert)?;
        }
        self.flush()
    }

    /// One interval that ended at `at` (time since the Unix epoch) and lasted `elapsed`.
    /// `last` marks the final, partial interval.
    pub fn tick(
        &mut self,
        snapshot: &Snapshot,
        at: Duration,
        elapsed: Duration,
        last: bool,
    ) -> io::Result<()> {
        let interval = self.collector.update(snapshot, elapsed);
        let mut outcome = self.detector.observe(&interval, at);
        outcome
            .alerts
            .extend(self.inspector.end_interval(at, elapsed));
        self.detector.cap(&mut outcome, at, elapsed);
        // HTTP requests whose rest never came (all of them at the end), as far as they got:
        // reported after the interval.
        let expired = self.inspector.expire(at, last);
        let report = IntervalReport {
            context: &self.context,
            at,
            interval: &interval,
            last,
            known: &outcome.known,
            streams: self.inspector.stream_counts(),
        };
        for sink in &mut self.sinks {
            sink.interval(&report)?;
        }
        for event in &expired {
            self.report_event(event)?;
        }
        for alert in &outcome.alerts {
            self.report_alert(alert)?;
        }
        self.flush()?;
        self.tally.intervals += 1;
        self.collector.recycle(interval);
        Ok(())
    }

    fn report_event(&mut self, event: &Event) -> io::Result<()> {
        *self.tally.events.entry(event.kind.name()).or_default() += 1;
        self.json.clear();
        report::event::write_json(&mut self.json, &self.context.iface, event)?;
        self.report(Finding::Event(event))
    }

    fn report_alert(&mut self, alert: &Alert) -> io::Result<()> {
        *self.tally.alerts.entry(alert.kind).or_default() += 1;
        self.json.clear();
        report::alert::write_json(&mut self.json, &self.context.iface, alert)?;
        self.report(Finding::Alert(alert))
    }

    /// Hands the finding whose JSON line is in `self.json` to every sink.
    fn report(&mut self, finding: Finding<'_>) -> io::Result<()> {
        let report = FindingReport {
            iface: &self.context.iface,
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
        let mut pipeline = Pipeline::new(detector, inspector, context, sinks);
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
        };
        pipeline
            .tick(
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
            text.contains("netwatch_alerts_suppressed_total 7\n"),
            "{text}"
        );
    }
}
