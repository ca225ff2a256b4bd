//! Report outputs, each a [`Sink`](sink::Sink): what the user sees of each interval and of
//! each finding.
//!
//! A sink only formats and writes what collection, detection and inspection produced; it
//! never reaches back into the datapath. Text goes to a terminal, JSON lines to anything that
//! reads them (a log shipper, a SIEM, the end-to-end tests), rows to the store, numbers to
//! Prometheus.

pub mod alert;
pub mod ban;
pub mod console;
pub mod event;
pub mod json;
pub mod kafka;
pub mod metrics;
pub mod pcapng;
mod queue_reader;
pub mod rule;
pub mod sink;
pub mod store;
pub mod webhook;

#[cfg(test)]
mod escape_tests;

pub use crate::escape::escape;

/// What every report line knows besides the interval itself.
#[derive(Clone, Debug)]
pub struct Context {
    /// Interface (or capture) being watched.
    pub iface: String,
    /// Slots for sources in the kernel.
    pub max_sources: u32,
    /// How many sources to list.
    pub top: usize,
}

/// Output format of interval reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A summary line and a table of the top sources, for people.
    #[default]
    Text,
    /// One JSON object per interval (schema in the README), for programs.
    Json,
}

pub use crate::time_text::rfc3339;
