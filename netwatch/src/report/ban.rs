//! Ban events (a ban, an unban, a refusal, a restore at start), as a console line and as a
//! JSON line: the record every sink and every notify command gets.

use std::{
    io::{self, Write},
    time::UNIX_EPOCH,
};

use serde::Serialize;

use super::{escape, rfc3339};
use crate::{
    mitigate::{AlertRef, BanChange, BanEvent, MitigateMode, Origin},
    time_text::ttl_text,
};

#[derive(Serialize)]
struct BanRecord<'a> {
    #[serde(rename = "type")]
    kind_of_record: &'static str,
    action: BanChange,
    time: String,
    unix_ms: u128,
    iface: &'a str,
    subject: String,
    mode: MitigateMode,
    origin: Origin,
    reason: &'a str,
    alert: Option<&'a AlertRef>,
    offence: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_s: Option<u64>,
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a str>,
}

/// One JSON object on one line.
pub fn write_json(out: &mut impl Write, event: &BanEvent) -> io::Result<()> {
    let record = BanRecord {
        kind_of_record: "ban",
        action: event.change,
        time: rfc3339(UNIX_EPOCH + event.at),
        unix_ms: event.at.as_millis(),
        iface: &event.iface,
        subject: event.net.to_string(),
        mode: event.mode,
        origin: event.origin,
        reason: &event.reason,
        alert: event.alert.as_ref(),
        offence: event.offence,
        created: event.created.map(|at| rfc3339(UNIX_EPOCH + at)),
        expires: event.expires.map(|at| rfc3339(UNIX_EPOCH + at)),
        ttl_s: event
            .expires
            .zip(event.created)
            .map(|(expires, created)| expires.saturating_sub(created).as_secs()),
        packets: event.packets,
        bytes: event.bytes,
        why: event.why.as_deref(),
    };
    serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// One line for people, e.g. `... BAN 10.9.0.2/32 for 10m (drop, offence 1): threshold_pps
/// 10.9.0.2 5000 pkt/s over 1000 (alert r-1 on eth0)`.
pub fn write_line(out: &mut impl Write, event: &BanEvent) -> io::Result<()> {
    let at = rfc3339(UNIX_EPOCH + event.at);
    let net = event.net;
    let reason = escape(&event.reason);
    let cause = match &event.alert {
        Some(alert) => format!(" (alert {} on {})", escape(&alert.id), event.iface),
        None => format!(" ({})", event.origin.name()),
    };
    let ttl = event
        .expires
        .zip(event.created)
        .map(|(expires, created)| ttl_text(expires.saturating_sub(created)))
        .unwrap_or_default();
    let matched = if event.mode == MitigateMode::Drop {
        "dropped"
    } else {
        "matched (dry run, passed)"
    };
    match event.change {
        BanChange::Ban => writeln!(
            out,
            "{at} BAN {net} for {ttl} ({}, offence {}): {reason}{cause}",
            event.mode.name(),
            event.offence
        ),
        BanChange::Restore => writeln!(
            out,
            "{at} BAN {net} restored from the store, until {} ({}): {reason}{cause}",
            event
                .expires
                .map(|at| rfc3339(UNIX_EPOCH + at))
                .unwrap_or_default(),
            event.mode.name()
        ),
        BanChange::Unban => writeln!(
            out,
            "{at} UNBAN {net} after {}: {}; {} packets, {} bytes {matched}",
            ttl_text(event.at.saturating_sub(event.created.unwrap_or(event.at))),
            escape(event.why.as_deref().unwrap_or("ended")),
            event.packets,
            event.bytes
        ),
        BanChange::Refused => writeln!(
            out,
            "{at} BAN REFUSED {net}: {}; asked for: {reason}{cause}",
            escape(event.why.as_deref().unwrap_or("refused"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::detect::{alert::AlertKind, cidr::Cidr};

    fn event(change: BanChange) -> BanEvent {
        BanEvent {
            at: Duration::from_secs(1_795_314_601),
            change,
            net: "10.9.0.2/32".parse::<Cidr>().unwrap(),
            mode: MitigateMode::Drop,
            origin: Origin::Alert,
            reason: String::from("threshold_pps 10.9.0.2 5000 pkt/s over 1000\u{1b}[2J"),
            alert: Some(AlertRef {
                id: String::from("r-1"),
                kind: AlertKind::ThresholdPps,
                capture: None,
            }),
            iface: String::from("eth0"),
            created: Some(Duration::from_secs(1_795_314_601)),
            expires: Some(Duration::from_secs(1_795_315_201)),
            offence: 1,
            packets: 0,
            bytes: 0,
            why: None,
        }
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut out = Vec::new();
        write_json(&mut out, &event(BanChange::Ban)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["type"], "ban");
        assert_eq!(value["action"], "ban");
        assert_eq!(value["subject"], "10.9.0.2/32");
        assert_eq!(value["mode"], "drop");
        assert_eq!(value["origin"], "alert");
        assert_eq!(value["alert"]["id"], "r-1");
        assert_eq!(value["alert"]["kind"], "threshold_pps");
        assert_eq!(value["ttl_s"], 600);
        assert_eq!(value["expires"], "2026-11-22T02:40:01.000Z");
        assert_eq!(value["offence"], 1);
        assert!(value.get("why").is_none());
    }

    /// What a sender put in a reason (a manual ban's text) never reaches the terminal raw.
    #[test]
    fn lines_escape_and_say_what_happened() {
        let mut line = Vec::new();
        write_line(&mut line, &event(BanChange::Ban)).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            "2026-11-22T02:30:01.000Z BAN 10.9.0.2/32 for 10m (drop, offence 1): threshold_pps 10.9.0.2 5000 pkt/s over 1000\\x1b[2J (alert r-1 on eth0)\n"
        );
        let mut unban = event(BanChange::Unban);
        unban.at = Duration::from_secs(1_795_315_201);
        unban.why = Some(String::from("expired"));
        unban.packets = 12;
        unban.bytes = 1200;
        let mut line = Vec::new();
        write_line(&mut line, &unban).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.ends_with(
                "UNBAN 10.9.0.2/32 after 10m: expired; 12 packets, 1200 bytes dropped\n"
            ),
            "{line}"
        );
    }
}
