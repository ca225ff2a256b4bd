//! collect -> detect -> report, once per interval, and inspect -> report for every sample.
//! Live monitoring and replay both drive this same pipeline, with wall-clock or capture time,
//! so a capture gives the alerts live traffic would give.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Write},
    net::IpAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, UNIX_EPOCH},
};

use crate::{
    collect::{Collector, Interval},
    datapath::{SampledFrame, Snapshot},
    detect::{
        Detector,
        alert::{Alert, AlertKind},
    },
    inspect::{Event, Inspector},
    report::{
        self, Context, Format,
        history::{HistorySink, Record},
        metrics::Metrics,
    },
    store::{FindingRow, IntervalRow, SourceRow},
};

/// Intervals between two updates of the known sources' `last_seen`.
const TOUCH_EVERY: u32 = 60;
/// Intervals between two prunings of old history.
const PRUNE_EVERY: u64 = 3_600;

/// Where reports and alerts go.
pub struct Outputs {
    /// Interval reports, and alerts in the same format.
    pub reports: Box<dyn Write>,
    /// Format of `reports`.
    pub format: Format,
    /// Alerts as JSON lines, if asked.
    pub alerts: Option<Box<dyn Write>>,
}

/// What is kept in the store, and for how long.
#[derive(Debug)]
pub struct History {
    /// The writer.
    pub sink: HistorySink,
    /// Sources kept per interval (the top by bytes), so the file stays bounded.
    pub top: usize,
    /// History older than this is pruned.
    pub retention: Duration,
}

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

/// The per-interval stages and their state.
pub struct Pipeline {
    collector: Collector,
    detector: Detector,
    inspector: Inspector,
    history: Option<History>,
    context: Context,
    outputs: Outputs,
    seen: HashSet<IpAddr>,
    since_touch: u32,
    findings: Vec<FindingRow>,
    tally: Tally,
    metrics: Option<Arc<Metrics>>,
}

impl Pipeline {
    /// Wires the stages; `history` keeps known sources, history and the webhook queue (none:
    /// in memory only).
    pub fn new(
        detector: Detector,
        inspector: Inspector,
        history: Option<History>,
        context: Context,
        outputs: Outputs,
    ) -> Self {
        Self {
            collector: Collector::new(),
            detector,
            inspector,
            history,
            context,
            outputs,
            seen: HashSet::new(),
            since_touch: 0,
            findings: Vec::new(),
            tally: Tally::default(),
            metrics: None,
        }
    }

    /// Also feeds these Prometheus metrics.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
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

    /// Waits for the store to keep everything handed to it, and reports what it could not.
    pub fn finish(self) {
        let undecodable = self.inspector.undecodable();
        if undecodable > 0 {
            eprintln!(
                "netwatch: {undecodable} of {} samples held no TCP or UDP payload that could be decoded",
                self.tally.samples
            );
        }
        let streams = self.inspector.stream_counts();
        if streams.dropped + streams.cut + streams.timed_out > 0 {
            eprintln!(
                "netwatch: HTTP requests gathered across segments and reported incomplete: {} pushed out for room (inspect.max_flows), {} cut at inspect.follow_bytes, {} whose rest never came (inspect.follow_timeout, or the end)",
                streams.dropped, streams.cut, streams.timed_out
            );
        }
        if let Some(History { sink, .. }) = self.history {
            let dropped = sink.counts().dropped.load(Ordering::Relaxed);
            let failed = sink.counts().failed.load(Ordering::Relaxed);
            sink.close();
            if dropped + failed > 0 {
                eprintln!(
                    "netwatch: the store kept all but {dropped} records dropped while it was behind and {failed} refused writes"
                );
            }
        }
    }

    /// Inspects one sampled frame seen at `at`, and reports what it shows at once.
    pub fn sample(&mut self, frame: &SampledFrame, at: Duration) -> io::Result<()> {
        self.tally.samples += 1;
        let findings = self.inspector.inspect(&frame.data, at);
        for event in &findings.events {
            self.write_event(event)?;
        }
        for alert in &findings.alerts {
            self.write_alert(alert)?;
        }
        self.send_findings();
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
        if let Some(metrics) = &self.metrics {
            metrics.observe_interval(&interval);
        }
        let mut outcome = self.detector.observe(&interval, at);
        outcome
            .alerts
            .extend(self.inspector.end_interval(at, elapsed));
        self.detector.cap(&mut outcome, at, elapsed);
        if let Some(history) = &self.history {
            self.seen
                .extend(interval.sources.iter().map(|source| source.addr));
            self.since_touch += 1;
            if !outcome.known.is_empty() {
                history.sink.send(Record::Known(outcome.known.clone(), at));
            }
            if self.since_touch >= TOUCH_EVERY || last {
                self.since_touch = 0;
                history
                    .sink
                    .send(Record::Touch(self.seen.drain().collect(), at));
            }
            let (row, sources) = history_rows(&self.context.iface, &interval, at, history.top);
            history.sink.send(Record::Interval(row, sources));
            if self.tally.intervals.is_multiple_of(PRUNE_EVERY) {
                history
                    .sink
                    .send(Record::Prune(at.saturating_sub(history.retention)));
            }
        }
        report::write_interval(
            &mut self.outputs.reports,
            self.outputs.format,
            &self.context,
            UNIX_EPOCH + at,
            &interval,
            last,
        )?;
        // HTTP requests whose rest never came (all of them at the end), as far as they got.
        for event in self.inspector.expire(at, last) {
            self.write_event(&event)?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.set_streams(self.inspector.stream_counts());
            if let Some(history) = &self.history {
                metrics.set_store_waiting(history.sink.counts().waiting.load(Ordering::Relaxed));
            }
        }
        for alert in &outcome.alerts {
            self.write_alert(alert)?;
        }
        self.send_findings();
        self.flush()?;
        self.tally.intervals += 1;
        self.collector.recycle(interval);
        Ok(())
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        *self.tally.events.entry(event.kind.name()).or_default() += 1;
        if let Some(metrics) = &self.metrics {
            metrics.event(event.kind.name());
        }
        let iface = &self.context.iface;
        let mut json = Vec::new();
        report::event::write_json(&mut json, iface, event)?;
        if self.outputs.format == Format::Text {
            report::event::write_line(&mut self.outputs.reports, iface, event)?;
        }
        self.keep(
            "event",
            event.kind.name(),
            event.client.to_string(),
            event.at,
            json,
            (None, None),
        )
    }

    fn write_alert(&mut self, alert: &Alert) -> io::Result<()> {
        *self.tally.alerts.entry(alert.kind).or_default() += 1;
        if let Some(metrics) = &self.metrics {
            metrics.alert(alert.kind.name(), alert.state.name());
            if alert.kind == AlertKind::Suppressed {
                metrics.suppressed(alert.observed as u64);
            }
        }
        let iface = &self.context.iface;
        let mut json = Vec::new();
        report::alert::write_json(&mut json, iface, alert)?;
        if self.outputs.format == Format::Text {
            report::alert::write_line(&mut self.outputs.reports, iface, alert)?;
        }
        self.keep(
            "alert",
            alert.kind.name(),
            alert.subject.to_string(),
            alert.at,
            json,
            (
                alert
                    .attack
                    .as_ref()
                    .map(|attack| attack.kind.name().to_owned()),
                alert.members.as_ref().map(|members| members.count),
            ),
        )
    }

    /// Writes a finding's JSON line where JSON goes, and keeps it for the store, with an
    /// alert's attack type and count of sources.
    fn keep(
        &mut self,
        kind_of_record: &'static str,
        kind: &str,
        subject: String,
        at: Duration,
        json: Vec<u8>,
        (attack, sources): (Option<String>, Option<u64>),
    ) -> io::Result<()> {
        if self.outputs.format == Format::Json {
            self.outputs.reports.write_all(&json)?;
        }
        if let Some(file) = &mut self.outputs.alerts {
            file.write_all(&json)?;
        }
        if self.history.is_some() {
            let record = String::from_utf8_lossy(&json).trim_end().to_owned();
            self.findings.push(FindingRow {
                ts_ms: i64::try_from(at.as_millis()).unwrap_or(i64::MAX),
                kind_of_record,
                kind: kind.to_owned(),
                subject,
                record,
                attack,
                sources,
            });
        }
        Ok(())
    }

    fn send_findings(&mut self) {
        if let Some(history) = &self.history
            && !self.findings.is_empty()
        {
            history
                .sink
                .send(Record::Findings(std::mem::take(&mut self.findings)));
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.outputs.reports.flush()?;
        if let Some(file) = &mut self.outputs.alerts {
            file.flush()?;
        }
        Ok(())
    }
}

/// The rows an interval leaves in the store: its totals and its top `top` sources.
fn history_rows(
    iface: &str,
    interval: &Interval,
    at: Duration,
    top: usize,
) -> (IntervalRow, Vec<SourceRow>) {
    let ts_ms = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
    let interval_ms = i64::try_from(interval.elapsed.as_millis()).unwrap_or(i64::MAX);
    let delta = &interval.delta;
    let row = IntervalRow {
        ts_ms,
        iface: iface.to_owned(),
        interval_ms,
        packets: delta.total_packets,
        bytes: delta.total_bytes,
        non_ip: delta.non_ip_packets,
        malformed: delta.malformed_packets,
        overflow: delta.overflow_packets,
        truncated: delta.truncated_packets,
        sampled: delta.sampled_packets,
        sample_capped: delta.sample_capped_packets,
        sample_lost: delta.sample_ring_full_packets,
        sources_tracked: interval.tracked_sources as u64,
    };
    let sources = interval
        .sources
        .iter()
        .take(top)
        .map(|source| SourceRow {
            ts_ms,
            iface: iface.to_owned(),
            interval_ms,
            source: source.addr.to_string(),
            packets: source.stats.packets,
            bytes: source.stats.bytes,
            tcp: source.stats.tcp_packets,
            udp: source.stats.udp_packets,
            icmp: source.stats.icmp_packets,
            other: source.stats.other_packets,
            syn: source.stats.tcp_syn_packets,
            ports: source.spread.ports,
            hosts: source.spread.hosts,
            fragments: source.stats.fragment_packets,
            reflected: source.stats.reflected_packets,
        })
        .collect();
    (row, sources)
}

#[cfg(test)]
mod tests {
    use netwatch_common::{GlobalStats, SourceKey, SourceStats};

    use super::*;
    use crate::{
        datapath::SourceReading,
        detect::{DetectConfig, KnownState, UnknownConfig},
        inspect::InspectConfig,
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
        let outputs = Outputs {
            reports: Box::new(io::sink()),
            format: Format::Json,
            alerts: None,
        };
        let metrics = Arc::new(Metrics::new(0).unwrap());
        let mut pipeline = Pipeline::new(detector, inspector, None, context, outputs)
            .with_metrics(Arc::clone(&metrics));
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
