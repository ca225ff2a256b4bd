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
pub mod metrics;
pub mod sink;
pub mod store;
pub mod webhook;

#[cfg(test)]
mod escape_tests;

/// `text` safe to print on a terminal: control characters (C0, DEL, C1: ESC, BEL, CR, LF,
/// CSI, ...) and the invisible characters that reorder or hide text (bidirectional overrides
/// and isolates, zero-width marks) become `\xNN` or `\u{NNNN}`, and a backslash becomes two,
/// so that nothing a sender puts in a packet can move the cursor, retitle the terminal or
/// forge a line. Every wire-derived field of every text output goes through it; JSON has its
/// own escaping.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

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
