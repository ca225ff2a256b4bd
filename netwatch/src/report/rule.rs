//! Signature rule events (a rule set, extended, removed or refused), as a console line and
//! as a JSON line: the record every sink and every notify command gets. The JSON names each
//! field of the signature apart, so that a script can turn it into a BGP Flowspec route
//! (`packaging/exabgp/`) without parsing words.

use std::{
    io::{self, Write},
    time::UNIX_EPOCH,
};

use serde::Serialize;

use super::{escape, rfc3339};
use crate::{
    datapath::RuleAction,
    mitigate::{
        AlertRef, MitigateMode, Origin, RuleChange, RuleEvent, RuleInForce, SignatureAttack,
    },
    time_text::ttl_text,
};

#[derive(Serialize)]
struct RuleRecord<'a> {
    #[serde(rename = "type")]
    kind_of_record: &'static str,
    change: RuleChange,
    time: String,
    unix_ms: u128,
    #[serde(flatten)]
    rule: RuleFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a str>,
}

/// A rule as its events and `netwatch mitigate list` show it.
#[derive(Serialize)]
struct RuleFields<'a> {
    iface: &'a str,
    /// The mode the rule was set in.
    mode: MitigateMode,
    index: u32,
    signature: String,
    destination: String,
    protocol: Option<String>,
    source_port: Option<u16>,
    destination_port: Option<u16>,
    tcp_syn: bool,
    fragments: bool,
    /// `drop` or `rate-limit`: what the rule does in `drop` mode (a dry run only counts).
    action: &'static str,
    rate_pps: Option<u32>,
    rtbh: bool,
    /// The attack type it answers; `null` for a rule added by hand.
    attack: Option<&'static str>,
    origin: Origin,
    alert: Option<&'a AlertRef>,
    offence: u32,
    created: String,
    expires: String,
    ttl_s: u64,
    matched_packets: u64,
    matched_bytes: u64,
    dropped_packets: u64,
    dropped_bytes: u64,
}

impl<'a> RuleFields<'a> {
    fn of(rule: &'a RuleInForce) -> Self {
        let signature = &rule.signature;
        let (action, rate_pps) = match rule.action {
            RuleAction::Drop | RuleAction::Count => ("drop", None),
            RuleAction::RateLimit { pps } => ("rate-limit", Some(pps)),
        };
        Self {
            iface: &rule.iface,
            mode: rule.mode,
            index: rule.index,
            signature: signature.to_string(),
            destination: signature.destination.to_string(),
            protocol: signature.protocol.map(|protocol| protocol.to_string()),
            source_port: signature.src_port,
            destination_port: signature.dst_port,
            tcp_syn: signature.syn,
            fragments: signature.fragment,
            action,
            rate_pps,
            rtbh: rule.rtbh,
            attack: rule.attack.map(SignatureAttack::name),
            origin: rule.origin,
            alert: rule.alert.as_ref(),
            offence: rule.offence,
            created: rfc3339(UNIX_EPOCH + rule.created),
            expires: rfc3339(UNIX_EPOCH + rule.expires),
            ttl_s: rule.expires.saturating_sub(rule.created).as_secs(),
            matched_packets: rule.traffic.matched.packets,
            matched_bytes: rule.traffic.matched.bytes,
            dropped_packets: rule.traffic.dropped.packets,
            dropped_bytes: rule.traffic.dropped.bytes,
        }
    }
}

/// One JSON object on one line.
pub fn write_json(out: &mut impl Write, event: &RuleEvent) -> io::Result<()> {
    let record = RuleRecord {
        kind_of_record: "rule",
        change: event.change,
        time: rfc3339(UNIX_EPOCH + event.at),
        unix_ms: event.at.as_millis(),
        rule: RuleFields::of(&event.rule),
        why: event.why.as_deref(),
    };
    serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// A rule in force as JSON, for `netwatch mitigate list`: the fields of its events.
pub fn rule_value(rule: &RuleInForce) -> serde_json::Value {
    serde_json::to_value(RuleFields::of(rule)).unwrap_or_default()
}

/// One line for people, e.g. `... RULE drop udp from port 123 to 192.0.2.5/32 for 10m
/// (drop, offence 1): reflection (alert r-1 on eth0)`.
pub fn write_line(out: &mut impl Write, event: &RuleEvent) -> io::Result<()> {
    let at = rfc3339(UNIX_EPOCH + event.at);
    let rule = &event.rule;
    let signature = rule.signature;
    let what = match rule.action {
        RuleAction::Drop | RuleAction::Count => String::from("drop"),
        RuleAction::RateLimit { pps } => format!("rate-limit to {pps} pkt/s"),
    };
    let cause = match &rule.alert {
        Some(alert) => format!(" (alert {} on {})", escape(&alert.id), escape(&rule.iface)),
        None => format!(" ({})", rule.origin.name()),
    };
    let rtbh = if rule.rtbh {
        ", and blackhole upstream"
    } else {
        ""
    };
    let attack = rule.attack.map_or("by hand", SignatureAttack::name);
    match event.change {
        RuleChange::Add => writeln!(
            out,
            "{at} RULE {what}{rtbh}: {signature} for {} ({}, offence {}): {attack}{cause}",
            ttl_text(rule.expires.saturating_sub(rule.created)),
            event.mode.name(),
            rule.offence
        ),
        RuleChange::Restore => writeln!(
            out,
            "{at} RULE RESTORED {what}{rtbh}: {signature} until {} ({}, offence {}): {attack}{cause}, kept across the restart",
            rfc3339(UNIX_EPOCH + rule.expires),
            event.mode.name(),
            rule.offence
        ),
        RuleChange::Extend => writeln!(
            out,
            "{at} RULE {signature} extended until {}: {attack} goes on{cause}",
            rfc3339(UNIX_EPOCH + rule.expires)
        ),
        RuleChange::Remove => {
            let done = if event.mode == MitigateMode::Drop {
                format!("{} dropped", rule.traffic.dropped.packets)
            } else {
                String::from("none dropped (dry run)")
            };
            writeln!(
                out,
                "{at} RULE REMOVED {signature} after {}: {}; {} packets matched, {done}",
                ttl_text(event.at.saturating_sub(rule.created)),
                escape(event.why.as_deref().unwrap_or("ended")),
                rule.traffic.matched.packets
            )
        }
        RuleChange::Refuse => writeln!(
            out,
            "{at} RULE REFUSED {what}: {signature}: {}; asked for: {attack}{cause}",
            escape(event.why.as_deref().unwrap_or("refused"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        datapath::{RuleProtocol, RuleTraffic, Traffic},
        detect::alert::AlertKind,
        mitigate::Signature,
    };

    fn event(change: RuleChange, action: RuleAction) -> RuleEvent {
        RuleEvent {
            at: Duration::from_secs(1_795_314_601),
            change,
            mode: MitigateMode::Drop,
            rule: RuleInForce {
                index: 3,
                signature: Signature {
                    destination: "192.0.2.5/32".parse().unwrap(),
                    protocol: Some(RuleProtocol::Udp),
                    src_port: Some(123),
                    dst_port: None,
                    syn: false,
                    fragment: false,
                },
                attack: Some(SignatureAttack::Reflection),
                action,
                mode: MitigateMode::Drop,
                rtbh: false,
                origin: Origin::Alert,
                alert: Some(AlertRef {
                    id: String::from("r-1\u{1b}[2J"),
                    kind: AlertKind::SpikePps,
                    capture: None,
                }),
                iface: String::from("eth0"),
                created: Duration::from_secs(1_795_314_601),
                expires: Duration::from_secs(1_795_315_201),
                offence: 1,
                traffic: RuleTraffic {
                    matched: Traffic {
                        packets: 10,
                        bytes: 4_000,
                    },
                    dropped: Traffic {
                        packets: 10,
                        bytes: 4_000,
                    },
                },
            },
            why: None,
        }
    }

    /// What a Flowspec script needs, field by field.
    #[test]
    fn json_names_each_field_of_the_signature() {
        let mut out = Vec::new();
        write_json(&mut out, &event(RuleChange::Add, RuleAction::Drop)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["type"], "rule");
        assert_eq!(value["change"], "add");
        assert_eq!(value["destination"], "192.0.2.5/32");
        assert_eq!(value["protocol"], "udp");
        assert_eq!(value["source_port"], 123);
        assert_eq!(value["destination_port"], serde_json::Value::Null);
        assert_eq!(value["action"], "drop");
        assert_eq!(value["rate_pps"], serde_json::Value::Null);
        assert_eq!(value["rtbh"], false);
        assert_eq!(value["ttl_s"], 600);
        assert_eq!(value["attack"], "reflection");
        assert_eq!(value["mode"], "drop");
        let mut out = Vec::new();
        write_json(
            &mut out,
            &event(RuleChange::Add, RuleAction::RateLimit { pps: 500 }),
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["action"], "rate-limit");
        assert_eq!(value["rate_pps"], 500);
    }

    /// The console line says what, to whom, for how long and why, escaped.
    #[test]
    fn lines_say_what_the_rule_does_and_why() {
        let mut out = Vec::new();
        write_line(&mut out, &event(RuleChange::Add, RuleAction::Drop)).unwrap();
        write_line(&mut out, &event(RuleChange::Remove, RuleAction::Drop)).unwrap();
        write_line(&mut out, &event(RuleChange::Restore, RuleAction::Drop)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "2026-11-22T02:30:01.000Z RULE drop: udp from port 123 to 192.0.2.5/32 for 10m (drop, offence 1): reflection (alert r-1\\x1b[2J on eth0)"
        );
        assert_eq!(
            lines[1],
            "2026-11-22T02:30:01.000Z RULE REMOVED udp from port 123 to 192.0.2.5/32 after 0s: ended; 10 packets matched, 10 dropped"
        );
        assert!(
            lines[2].starts_with(
                "2026-11-22T02:30:01.000Z RULE RESTORED drop: udp from port 123 to 192.0.2.5/32 until 2026-11-22T02:40:01"
            ) && lines[2].ends_with(", kept across the restart"),
            "{}",
            lines[2]
        );
    }
}
