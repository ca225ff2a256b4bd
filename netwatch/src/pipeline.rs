//! collect -> detect -> report, once per interval. Live monitoring and replay both drive this
//! same pipeline, with wall-clock or capture time, so a capture gives the alerts live traffic
//! would give.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Write},
    net::IpAddr,
    sync::Arc,
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
    report::{self, Context, Format, metrics::Metrics},
    store::Store,
};

/// Intervals between two updates of the known sources' `last_seen`.
const TOUCH_EVERY: u32 = 60;

/// Where reports and alerts go.
pub struct Outputs {
    /// Interval reports, and alerts in the same format.
    pub reports: Box<dyn Write>,
    /// Format of `reports`.
    pub format: Format,
    /// Alerts as JSON lines, if asked.
    pub alerts: Option<Box<dyn Write>>,
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
    /// Store writes that failed (each one also reported on stderr).
    pub store_failures: u64,
}

/// The per-interval stages and their state.
pub struct Pipeline {
    collector: Collector,
    detector: Detector,
    inspector: Inspector,
    store: Option<Store>,
    context: Context,
    outputs: Outputs,
    seen: HashSet<IpAddr>,
    since_touch: u32,
    tally: Tally,
    metrics: Option<Arc<Metrics>>,
}

impl Pipeline {
    /// Wires the stages; `store` keeps known sources across runs (none: in memory only).
    pub fn new(
        detector: Detector,
        inspector: Inspector,
        store: Option<Store>,
        context: Context,
        outputs: Outputs,
    ) -> Self {
        Self {
            collector: Collector::new(),
            detector,
            inspector,
            store,
            context,
            outputs,
            seen: HashSet::new(),
            since_touch: 0,
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
    pub fn tally(&self) -> &Tally {
        &self.tally
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
        self.flush()
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        *self.tally.events.entry(event.kind.name()).or_default() += 1;
        if let Some(metrics) = &self.metrics {
            metrics.event(event.kind.name());
        }
        let Outputs {
            reports,
            format,
            alerts,
        } = &mut self.outputs;
        let iface = &self.context.iface;
        match format {
            Format::Text => report::event::write_line(reports, iface, event)?,
            Format::Json => report::event::write_json(reports, iface, event)?,
        }
        if let Some(file) = alerts {
            report::event::write_json(file, iface, event)?;
        }
        Ok(())
    }

    fn write_alert(&mut self, alert: &Alert) -> io::Result<()> {
        *self.tally.alerts.entry(alert.kind).or_default() += 1;
        if let Some(metrics) = &self.metrics {
            metrics.alert(alert.kind.name(), alert.state.name());
        }
        let Outputs {
            reports,
            format,
            alerts,
        } = &mut self.outputs;
        let iface = &self.context.iface;
        match format {
            Format::Text => report::alert::write_line(reports, iface, alert)?,
            Format::Json => report::alert::write_json(reports, iface, alert)?,
        }
        if let Some(file) = alerts {
            report::alert::write_json(file, iface, alert)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.outputs.reports.flush()?;
        if let Some(file) = &mut self.outputs.alerts {
            file.flush()?;
        }
        Ok(())
    }

    /// One interval that ended at `at` (time since the Unix epoch) and lasted `elapsed`.
    /// `last` marks the final, partial interval.
    pub fn tick(
        &mut self,
        snapshot: Snapshot,
        at: Duration,
        elapsed: Duration,
        last: bool,
    ) -> io::Result<Interval> {
        let interval = self.collector.update(snapshot, elapsed);
        if let Some(metrics) = &self.metrics {
            metrics.observe_interval(&interval);
        }
        let mut outcome = self.detector.observe(&interval, at);
        outcome
            .alerts
            .extend(self.inspector.end_interval(at, elapsed));
        if let Some(store) = &mut self.store {
            if let Err(err) = store.apply(&outcome.known, at) {
                self.tally.store_failures += 1;
                eprintln!("netwatch: {err}");
            }
            self.seen
                .extend(interval.sources.iter().map(|source| source.addr));
            self.since_touch += 1;
            if self.since_touch >= TOUCH_EVERY || last {
                let seen: Vec<IpAddr> = self.seen.drain().collect();
                self.since_touch = 0;
                if let Err(err) = store.touch(&seen, at) {
                    self.tally.store_failures += 1;
                    eprintln!("netwatch: {err}");
                }
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
        for alert in &outcome.alerts {
            self.write_alert(alert)?;
        }
        self.flush()?;
        self.tally.intervals += 1;
        Ok(interval)
    }
}
