//! The one shape of every report output. The pipeline hands each sink the same interval and
//! the same findings (alerts, events, bans), each already rendered once as a JSON line; a sink decides what it keeps
//! and how it writes it. The sinks: the console or `--output` ([`Reports`], text or JSON
//! lines), the alerts file ([`FindingsFile`]), the store and through its queue the webhooks
//! ([`StoreSink`](super::store::StoreSink)), the Prometheus metrics
//! ([`MetricsSink`](super::metrics::MetricsSink)) and the control socket's subscribers.

use std::{
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use super::{Context, Format};
use crate::{
    collect::Interval,
    detect::KnownChange,
    detect::alert::{Alert, Places},
    inspect::Event,
    inspect::http::StreamCounts,
    mitigate::{BanEvent, RuleEvent},
};

/// One interval, as every sink sees it.
pub struct IntervalReport<'a> {
    /// The interface (or capture) and what the reports list.
    pub context: &'a Context,
    /// End of the interval, since the Unix epoch (capture time in replay).
    pub at: Duration,
    /// The interval.
    pub interval: &'a Interval,
    /// The final, partial interval at shutdown.
    pub last: bool,
    /// Changes to the known sources that detection made in it.
    pub known: &'a [KnownChange],
    /// What the HTTP streams have dropped or cut so far.
    pub streams: StreamCounts,
    /// The sum of several interfaces (named [`COMBINED`](crate::collect::COMBINED)), whose
    /// every part was reported on its own: the store and the metrics keep the parts.
    pub combined: bool,
    /// The AS and country of the addresses the report lists (its top sources and
    /// destinations, the prefixes and destinations of the traffic without a slot), where
    /// `[enrich]` knows them.
    pub places: &'a Places,
}

/// What a finding is.
#[derive(Clone, Copy)]
pub enum Finding<'a> {
    /// An alert (start, update, end).
    Alert(&'a Alert),
    /// An event of the inspector (a credential, a DNS name, an HTTP request).
    Event(&'a Event),
    /// A ban, an unban, a refused ban or a ban restored at start.
    Ban(&'a BanEvent),
    /// A signature rule set, extended, removed or refused.
    Rule(&'a RuleEvent),
}

/// An alert or an event, as every sink sees it.
pub struct FindingReport<'a> {
    /// The interface (or capture) it was seen on.
    pub iface: &'a str,
    /// What it is.
    pub finding: Finding<'a>,
    /// Its JSON line, newline included (the schema in the README).
    pub json: &'a [u8],
}

impl FindingReport<'_> {
    /// When it happened, since the Unix epoch.
    pub fn at(&self) -> Duration {
        match self.finding {
            Finding::Alert(alert) => alert.at,
            Finding::Event(event) => event.at,
            Finding::Ban(event) => event.at,
            Finding::Rule(event) => event.at,
        }
    }
}

/// A report output.
pub trait Sink {
    /// An interval ended.
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()>;

    /// An alert or an event, in the order they are reported.
    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()>;

    /// Everything of the interval (or of the sample) has been handed over.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The run ends: keep what is waiting, and say what could not be kept.
    fn finish(self: Box<Self>) {}
}

/// Interval reports, alerts and events on the console or in `--output`: text for people or
/// JSON lines for programs.
pub struct Reports {
    out: Box<dyn Write>,
    format: Format,
}

impl Reports {
    /// Writes to `out` in `format`.
    pub fn new(out: Box<dyn Write>, format: Format) -> Self {
        Self { out, format }
    }
}

impl Sink for Reports {
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()> {
        let at = UNIX_EPOCH + report.at;
        match self.format {
            Format::Text => super::console::write_interval(
                &mut self.out,
                report.context,
                at,
                report.interval,
                report.last,
            ),
            Format::Json => super::json::write_interval(
                &mut self.out,
                report.context,
                at,
                report.interval,
                report.last,
                report.places,
            ),
        }
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        match (self.format, report.finding) {
            (Format::Json, _) => self.out.write_all(report.json),
            (Format::Text, Finding::Alert(alert)) => {
                super::alert::write_line(&mut self.out, report.iface, alert)
            }
            (Format::Text, Finding::Event(event)) => {
                super::event::write_line(&mut self.out, report.iface, event)
            }
            (Format::Text, Finding::Ban(event)) => super::ban::write_line(&mut self.out, event),
            (Format::Text, Finding::Rule(event)) => super::rule::write_line(&mut self.out, event),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The alerts file (`--alerts`): every alert and event as a JSON line, appended.
pub struct FindingsFile {
    out: Box<dyn Write>,
}

impl FindingsFile {
    /// Appends to `out`.
    pub fn new(out: Box<dyn Write>) -> Self {
        Self { out }
    }
}

impl Sink for FindingsFile {
    fn interval(&mut self, _: &IntervalReport<'_>) -> io::Result<()> {
        Ok(())
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        self.out.write_all(report.json)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
