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

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `at` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T02:50:01.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03.456Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_314_601);
        assert_eq!(rfc3339(later), "2026-11-22T02:30:01.000Z");
    }
}
