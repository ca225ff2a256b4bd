//! Alerts, as a readable console line and as a JSON line. The JSON schema is documented in
//! the README.

use std::{
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use serde::Serialize;

use super::rfc3339;
use crate::detect::alert::{Alert, AlertKind, AlertState, Severity};

#[derive(Serialize)]
struct AlertRecord<'a> {
    #[serde(rename = "type")]
    kind_of_record: &'static str,
    time: String,
    unix_ms: u128,
    id: &'a str,
    kind: &'static str,
    state: AlertState,
    severity: Severity,
    scope: &'static str,
    subject: String,
    observed: f64,
    unit: &'static str,
    baseline: Option<f64>,
    threshold: f64,
    iface: &'a str,
    interval_ms: u128,
    started: String,
    duration_ms: u128,
    peak: f64,
    packets: u64,
    bytes: u64,
    detail: Option<&'a str>,
}

/// One JSON object on one line.
pub fn write_json(out: &mut impl Write, iface: &str, alert: &Alert) -> io::Result<()> {
    let record = AlertRecord {
        kind_of_record: "alert",
        time: rfc3339(UNIX_EPOCH + alert.at),
        unix_ms: alert.at.as_millis(),
        id: &alert.id,
        kind: alert.kind.name(),
        state: alert.state,
        severity: alert.severity,
        scope: alert.subject.scope(),
        subject: alert.subject.to_string(),
        observed: round(alert.observed),
        unit: alert.kind.unit(),
        baseline: alert.baseline.map(round),
        threshold: round(alert.threshold),
        iface,
        interval_ms: alert.interval.as_millis(),
        started: rfc3339(UNIX_EPOCH + alert.started),
        duration_ms: alert.at.saturating_sub(alert.started).as_millis(),
        peak: round(alert.peak),
        packets: alert.packets,
        bytes: alert.bytes,
        detail: alert.detail.as_deref(),
    };
    serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// One line for people.
pub fn write_line(out: &mut impl Write, iface: &str, alert: &Alert) -> io::Result<()> {
    let unit = alert.kind.unit();
    let state = match alert.state {
        AlertState::Start => "START",
        AlertState::Update => "UPDATE",
        AlertState::End => "END",
        AlertState::Instant => "NEW",
    };
    let severity = match alert.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "CRITICAL",
    };
    write!(
        out,
        "{} ALERT {state} {severity} {} {} on {iface}: ",
        rfc3339(UNIX_EPOCH + alert.at),
        alert.kind.name(),
        alert.subject,
    )?;
    match (alert.kind, alert.state) {
        (AlertKind::DnsTunnel, _) => write!(
            out,
            "DNS tunnelling suspected ({}): {:.1} over {:.1}",
            alert.detail.as_deref().unwrap_or("?"),
            alert.observed,
            alert.threshold
        )?,
        (AlertKind::UnknownSource, _) => write!(
            out,
            "unknown source sent {} packets (minimum {})",
            alert.packets, alert.threshold
        )?,
        (_, AlertState::End) => write!(
            out,
            "over after {}; peak {:.0} {unit} (threshold {:.0}), {} packets, {} bytes",
            human_duration(alert.at.saturating_sub(alert.started)),
            alert.peak,
            alert.threshold,
            alert.packets,
            alert.bytes
        )?,
        _ => {
            write!(
                out,
                "{:.0} {unit} over {:.0}",
                alert.observed, alert.threshold
            )?;
            if let Some(baseline) = alert.baseline {
                write!(out, " (baseline {baseline:.0})")?;
            }
            if alert.state == AlertState::Update {
                write!(
                    out,
                    "; peak {:.0}, {} packets so far",
                    alert.peak, alert.packets
                )?;
            }
        }
    }
    writeln!(out, " [{}]", alert.id)
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 120.0 {
        format!("{seconds:.1}s")
    } else {
        format!("{:.1}m", seconds / 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::Subject;

    fn alert(state: AlertState) -> Alert {
        Alert {
            id: String::from("r-1"),
            kind: AlertKind::SpikePps,
            state,
            severity: Severity::Warning,
            subject: Subject::Global,
            observed: 5000.0,
            baseline: Some(210.4),
            threshold: 840.25,
            at: Duration::from_secs(1_795_314_610),
            interval: Duration::from_secs(1),
            started: Duration::from_secs(1_795_314_600),
            peak: 6000.0,
            packets: 70_000,
            bytes: 7_000_000,
            detail: None,
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert(AlertState::End)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["type"], "alert");
        assert_eq!(value["kind"], "spike_pps");
        assert_eq!(value["state"], "end");
        assert_eq!(value["severity"], "warning");
        assert_eq!(value["scope"], "global");
        assert_eq!(value["subject"], "global");
        assert_eq!(value["baseline"], 210.4);
        assert_eq!(value["threshold"], 840.25);
        assert_eq!(value["duration_ms"], 10_000);
        assert_eq!(value["iface"], "eth0");
        assert_eq!(value["time"], "2026-11-22T02:30:10.000Z");
        assert_eq!(value["started"], "2026-11-22T02:30:00.000Z");
    }

    #[test]
    fn console_lines_read_well() {
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &alert(AlertState::Start)).unwrap();
        write_line(&mut out, "eth0", &alert(AlertState::End)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("ALERT START warning spike_pps global on eth0: 5000 pkt/s over 840 (baseline 210) [r-1]"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("over after 10.0s; peak 6000 pkt/s"),
            "{}",
            lines[1]
        );
    }
}
