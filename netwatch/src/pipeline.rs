//! collect -> detect -> report, once per interval. Live monitoring and replay both drive this
//! same pipeline, with wall-clock or capture time, so a capture gives the alerts live traffic
//! would give.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, Write},
    net::IpAddr,
    time::{Duration, UNIX_EPOCH},
};

use crate::{
    collect::{Collector, Interval},
    datapath::Snapshot,
    detect::{Detector, alert::AlertKind},
    report::{self, Context, Format},
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
    /// Store writes that failed (each one also reported on stderr).
    pub store_failures: u64,
}

/// The per-interval stages and their state.
pub struct Pipeline {
    collector: Collector,
    detector: Detector,
    store: Option<Store>,
    context: Context,
    outputs: Outputs,
    seen: HashSet<IpAddr>,
    since_touch: u32,
    tally: Tally,
}

impl Pipeline {
    /// Wires the stages; `store` keeps known sources across runs (none: in memory only).
    pub fn new(
        detector: Detector,
        store: Option<Store>,
        context: Context,
        outputs: Outputs,
    ) -> Self {
        Self {
            collector: Collector::new(),
            detector,
            store,
            context,
            outputs,
            seen: HashSet::new(),
            since_touch: 0,
            tally: Tally::default(),
        }
    }

    /// What has been done so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The detector, to reconfigure it.
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
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
        let outcome = self.detector.observe(&interval, at);
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
        let Outputs {
            reports,
            format,
            alerts,
        } = &mut self.outputs;
        report::write_interval(
            reports,
            *format,
            &self.context,
            UNIX_EPOCH + at,
            &interval,
            last,
        )?;
        for alert in &outcome.alerts {
            *self.tally.alerts.entry(alert.kind).or_default() += 1;
            match format {
                Format::Text => report::alert::write_line(reports, &self.context.iface, alert)?,
                Format::Json => report::alert::write_json(reports, &self.context.iface, alert)?,
            }
            if let Some(file) = alerts {
                report::alert::write_json(file, &self.context.iface, alert)?;
            }
        }
        reports.flush()?;
        if let Some(file) = alerts {
            file.flush()?;
        }
        self.tally.intervals += 1;
        Ok(interval)
    }
}
