//! Alerts, as a readable console line and as a JSON line. The JSON schema is documented in
//! the README.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    time::{Duration, UNIX_EPOCH},
};

use serde::Serialize;

use super::{escape, rfc3339};
use crate::detect::{
    alert::{
        Alert, AlertKind, AlertState, Contributor, Members, Severity, SlotlessEvidence, Subject,
        Victim,
    },
    attack::{Attack, AttackType},
};

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
    attack: Option<&'a Attack>,
    contributors: Vec<ContributorRecord>,
    sources: Option<SourcesRecord>,
    hosts: Option<SourcesRecord>,
    victims: Vec<VictimRecord>,
    slotless: Option<SlotlessRecord>,
    capture: Option<CaptureRecord<'a>>,
    intel: Option<IntelRecord<'a>>,
    /// What the AS and country databases say of the addresses named, by address.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    context: BTreeMap<String, PlaceRecord<'a>>,
    /// The contributors by AS, largest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    by_as: Vec<AsShareRecord<'a>>,
}

#[derive(Serialize)]
struct PlaceRecord<'a> {
    asn: Option<u32>,
    as_org: Option<&'a str>,
    country: Option<&'a str>,
}

#[derive(Serialize)]
struct AsShareRecord<'a> {
    asn: u32,
    as_org: Option<&'a str>,
    share: f64,
}

/// [`IntelMatch`](crate::detect::alert::IntelMatch) in JSON.
#[derive(Serialize)]
struct IntelRecord<'a> {
    indicator: &'a str,
    indicator_type: &'static str,
    seen: &'static str,
    value: &'a str,
    feed: &'a str,
    desc: &'a str,
    host: Option<String>,
    matches: u64,
}

/// [`CaptureLink`] in JSON: the pcapng file (a name in the captures' folder) and what it
/// holds so far.
#[derive(Serialize)]
struct CaptureRecord<'a> {
    file: &'a str,
    frames: u64,
    sampling: u32,
    cut: Option<&'a str>,
}

/// [`Victim`] in JSON.
#[derive(Serialize)]
struct VictimRecord {
    destination: String,
    packets: u64,
    pps: f64,
    share: f64,
    attack: Option<&'static str>,
    port: Option<u16>,
    sampled: Option<u32>,
}

impl VictimRecord {
    fn of(victim: &Victim) -> Self {
        Self {
            destination: victim.addr.to_string(),
            packets: victim.packets,
            pps: round(victim.pps),
            share: round(victim.share),
            attack: victim.attack.map(AttackType::name),
            port: victim_port(victim),
            sampled: victim.sampled,
        }
    }
}

/// The port a flood on a victim is about: a reflection's service (its source port), else
/// the host's main destination port.
pub(super) fn victim_port(victim: &Victim) -> Option<u16> {
    match victim.attack {
        Some(AttackType::Reflection(port)) => Some(port),
        _ => victim.port,
    }
}

/// [`SlotlessEvidence`] in JSON.
#[derive(Serialize)]
struct SlotlessRecord {
    packets: u64,
    pps: f64,
    share: f64,
    sources_estimate: u32,
    prefixes_estimate: u32,
    random_sources: bool,
    targets: Vec<TargetRecord>,
    prefixes: Vec<PrefixRecord>,
}

#[derive(Serialize)]
struct TargetRecord {
    destination: String,
    kind: &'static str,
    port: Option<u16>,
    packets: u64,
    share: f64,
}

#[derive(Serialize)]
struct PrefixRecord {
    prefix: String,
    packets: u64,
    share: f64,
}

impl SlotlessRecord {
    fn of(evidence: &SlotlessEvidence) -> Self {
        Self {
            packets: evidence.packets,
            pps: round(evidence.pps),
            share: round(evidence.share),
            sources_estimate: evidence.sources,
            prefixes_estimate: evidence.prefixes,
            random_sources: evidence.random_sources,
            targets: evidence
                .targets
                .iter()
                .map(|target| TargetRecord {
                    destination: target.what.addr.to_string(),
                    kind: target.what.kind.name(),
                    port: target.what.port,
                    packets: target.packets,
                    share: round(target.share),
                })
                .collect(),
            prefixes: evidence
                .prefixes_top
                .iter()
                .map(|prefix| PrefixRecord {
                    prefix: prefix.what.to_string(),
                    packets: prefix.packets,
                    share: round(prefix.share),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct ContributorRecord {
    scope: &'static str,
    subject: String,
    packets: u64,
    bytes: u64,
    pps: f64,
    bps: f64,
    share: f64,
    excess_share: Option<f64>,
    new: bool,
}

#[derive(Serialize)]
struct SourcesRecord {
    count: u64,
    first: Vec<String>,
}

/// One JSON object on one line.
pub fn write_json(out: &mut impl Write, iface: &str, alert: &Alert) -> io::Result<()> {
    let members = alert.members.as_ref().map(|members| SourcesRecord {
        count: members.count,
        first: members.first.iter().map(ToString::to_string).collect(),
    });
    // A local prefix's alert stands for hosts; a sender's, for sources.
    let (sources, hosts) = if alert.subject.receives() {
        (None, members)
    } else {
        (members, None)
    };
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
        attack: alert.attack.as_ref(),
        contributors: alert
            .contributors
            .iter()
            .map(|contributor| ContributorRecord {
                scope: contributor.subject.scope(),
                subject: contributor.subject.to_string(),
                packets: contributor.packets,
                bytes: contributor.bytes,
                pps: round(contributor.pps),
                bps: round(contributor.bps),
                share: round(contributor.share),
                excess_share: contributor.excess_share.map(round),
                new: contributor.new,
            })
            .collect(),
        sources,
        hosts,
        victims: alert.victims.iter().map(VictimRecord::of).collect(),
        slotless: alert.slotless.as_ref().map(SlotlessRecord::of),
        capture: alert.capture.as_ref().map(|capture| CaptureRecord {
            file: &capture.file,
            frames: capture.frames,
            sampling: capture.every,
            cut: capture.cut.as_deref(),
        }),
        intel: alert.intel.as_ref().map(|intel| IntelRecord {
            indicator: &intel.indicator,
            indicator_type: intel.indicator_type,
            seen: intel.seen,
            value: &intel.value,
            feed: &intel.feed,
            desc: &intel.desc,
            host: intel.host.map(|host| host.to_string()),
            matches: intel.matches,
        }),
        context: alert
            .context
            .iter()
            .map(|(addr, place)| {
                (
                    addr.to_string(),
                    PlaceRecord {
                        asn: place.asn,
                        as_org: place.as_org.as_deref(),
                        country: place.country.as_deref(),
                    },
                )
            })
            .collect(),
        by_as: alert
            .by_as
            .iter()
            .map(|share| AsShareRecord {
                asn: share.asn,
                as_org: share.as_org.as_deref(),
                share: round(share.share),
            })
            .collect(),
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
    let to = if alert.subject.receives() { "to " } else { "" };
    write!(
        out,
        "{} ALERT {state} {severity} {} {to}{} on {iface}: ",
        rfc3339(UNIX_EPOCH + alert.at),
        alert.kind.name(),
        alert.subject,
    )?;
    match (alert.kind, alert.state) {
        (AlertKind::DnsTunnel, _) => write!(
            out,
            "DNS tunnelling suspected ({}): {:.1} over {:.1}",
            escape(alert.detail.as_deref().unwrap_or("?")),
            alert.observed,
            alert.threshold
        )?,
        (AlertKind::UnknownSource, _) => match &alert.members {
            Some(members) => write!(
                out,
                "{} unknown sources sent {} packets ({})",
                members.count,
                alert.packets,
                addresses(members)
            )?,
            None => write!(
                out,
                "unknown source sent {} packets (minimum {})",
                alert.packets, alert.threshold
            )?,
        },
        (AlertKind::Intel, _) => write!(
            out,
            "threat intelligence: {}",
            escape(alert.detail.as_deref().unwrap_or("?"))
        )?,
        (AlertKind::Suppressed, _) => write!(
            out,
            "{:.0} more alerts this interval over the cap of {:.0}, not shown: {}",
            alert.observed,
            alert.threshold,
            escape(alert.detail.as_deref().unwrap_or(""))
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
            if (alert.kind == AlertKind::HeavyHitter || alert.subject.receives())
                && let Some(detail) = &alert.detail
            {
                write!(out, "; {}", escape(detail))?;
            }
        }
    }
    if let Some(attack) = &alert.attack {
        write!(out, "; {} {:.0}%", attack.kind, attack.share * 100.0)?;
    }
    if alert.kind != AlertKind::UnknownSource
        && let Some(members) = &alert.members
    {
        let who = if alert.subject.receives() {
            "hosts"
        } else {
            "sources"
        };
        write!(out, "; {} {who}: {}", members.count, addresses(members))?;
    }
    if let Some(slotless) = &alert.slotless {
        write_slotless(out, slotless)?;
    }
    if let Some(top) = alert.by_as.first() {
        write!(
            out,
            "; from AS{} ({}) {:.0}%",
            top.asn,
            escape(top.as_org.as_deref().unwrap_or("?")),
            top.share * 100.0
        )?;
    }
    if let Some(capture) = &alert.capture {
        write!(
            out,
            "; capture {} ({} frames",
            escape(&capture.file),
            capture.frames
        )?;
        if let Some(cut) = &capture.cut {
            write!(out, ", cut: {}", escape(cut))?;
        }
        write!(out, ")")?;
    }
    writeln!(out, " [{}]", alert.id)?;
    if !alert.contributors.is_empty() {
        write!(out, "  top:")?;
        for (i, contributor) in alert.contributors.iter().enumerate() {
            let separator = match (i, contributor.subject) {
                (0, _) => " ",
                (_, Subject::Prefix(_))
                    if !matches!(alert.contributors[i - 1].subject, Subject::Prefix(_)) =>
                {
                    " | "
                }
                _ => ", ",
            };
            write!(out, "{separator}")?;
            write_contributor(out, contributor)?;
        }
    }
    // A victim's own alert names it as its subject already.
    let victims = !alert.victims.is_empty() && !alert.subject.receives();
    if victims {
        let lead = if alert.contributors.is_empty() {
            "  to:"
        } else {
            "; to:"
        };
        write!(out, "{lead}")?;
        for (i, victim) in alert.victims.iter().enumerate() {
            write!(out, "{}", if i == 0 { " " } else { ", " })?;
            write_victim(out, victim)?;
        }
    }
    if !alert.contributors.is_empty() || victims {
        writeln!(out)?;
    }
    Ok(())
}

/// `10.1.0.5 4800 pkt/s 96% NTP reflection (UDP from port 123)` or `10.1.0.6:443 ~9000
/// pkt/s 97% SYN flood`: whom (and the port hit, unless a reflection's service says it), how
/// much of the subject's traffic (`~`: estimated from a sample), and what the host received.
fn write_victim(out: &mut impl Write, victim: &Victim) -> io::Result<()> {
    match (victim.port, victim.attack) {
        (_, Some(AttackType::Reflection(_))) | (None, _) => write!(out, "{}", victim.addr)?,
        (Some(port), _) => write!(out, "{}", std::net::SocketAddr::new(victim.addr, port))?,
    }
    write!(
        out,
        " {}{:.0} pkt/s {:.0}%",
        if victim.sampled.is_some() { "~" } else { "" },
        victim.pps,
        victim.share * 100.0
    )?;
    if let Some(attack) = victim.attack {
        write!(out, " {attack}")?;
    }
    Ok(())
}

/// `198.51.100.66 5000 pkt/s 97% (new)`: who, how fast, and its share.
fn write_contributor(out: &mut impl Write, contributor: &Contributor) -> io::Result<()> {
    write!(
        out,
        "{} {:.0} pkt/s {:.0}%",
        contributor.subject,
        contributor.pps,
        contributor.share * 100.0
    )?;
    if contributor.new {
        write!(out, " (new)")?;
    }
    Ok(())
}

/// `; without a slot 5000 pkt/s 99%: ~50000 random sources in ~140 /16s, to 10.4.0.6
/// udp:443 92%`: how much traffic had no source slot, from how many sources and where, and
/// whom it hit. The prefixes are named only when the sources are not random.
fn write_slotless(out: &mut impl Write, slotless: &SlotlessEvidence) -> io::Result<()> {
    write!(
        out,
        "; without a slot {:.0} pkt/s {:.0}%: ~{} {}sources in ~{} /16s",
        slotless.pps,
        slotless.share * 100.0,
        slotless.sources,
        if slotless.random_sources {
            "random "
        } else {
            ""
        },
        slotless.prefixes,
    )?;
    if !slotless.random_sources && !slotless.prefixes_top.is_empty() {
        let list: Vec<String> = slotless
            .prefixes_top
            .iter()
            .map(|prefix| format!("{} {:.0}%", prefix.what, prefix.share * 100.0))
            .collect();
        write!(out, " ({})", list.join(", "))?;
    }
    if !slotless.targets.is_empty() {
        let list: Vec<String> = slotless
            .targets
            .iter()
            .map(|target| format!("{} {:.0}%", target.what, target.share * 100.0))
            .collect();
        write!(out, ", to {}", list.join(", "))?;
    }
    Ok(())
}

/// The first addresses of the sources an alert stands for, and `...` when there are more.
fn addresses(members: &Members) -> String {
    let mut list: Vec<String> = members.first.iter().map(ToString::to_string).collect();
    if members.count > members.first.len() as u64 {
        list.push(String::from("..."));
    }
    list.join(", ")
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
            contributors: Vec::new(),
            attack: None,
            members: None,
            slotless: None,
            victims: Vec::new(),
            capture: None,
            intel: None,
            context: Default::default(),
            by_as: Vec::new(),
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

    /// A global spike explained: a new source and its prefix, an NTP reflection.
    fn explained() -> Alert {
        let source: std::net::IpAddr = "198.51.100.66".parse().unwrap();
        let contributor = |subject, pps: f64, share, new| Contributor {
            subject,
            packets: pps as u64,
            bytes: pps as u64 * 100,
            pps,
            bps: pps * 800.0,
            share,
            excess_share: Some(share),
            new,
        };
        let mut mix = crate::collect::Mix {
            packets: 5_100,
            udp: 5_000,
            tcp: 100,
            ..Default::default()
        };
        mix.reflected.insert(123, 4_900);
        Alert {
            contributors: vec![
                contributor(Subject::Source(source), 4_900.0, 0.96, true),
                contributor(
                    Subject::Source("10.0.0.1".parse().unwrap()),
                    100.0,
                    0.02,
                    false,
                ),
                contributor(
                    Subject::Prefix(crate::detect::cidr::Cidr::of(source, 24)),
                    4_900.0,
                    0.96,
                    true,
                ),
            ],
            attack: Attack::classify(&mix),
            ..alert(AlertState::Start)
        }
    }

    #[test]
    fn json_says_who_and_what() {
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &explained()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let top = &value["contributors"];
        assert_eq!(top[0]["scope"], "source");
        assert_eq!(top[0]["subject"], "198.51.100.66");
        assert_eq!(top[0]["pps"], 4900.0);
        assert_eq!(top[0]["share"], 0.96);
        assert_eq!(top[0]["new"], true);
        assert_eq!(top[2]["scope"], "prefix");
        assert_eq!(top[2]["subject"], "198.51.100.0/24");
        assert_eq!(value["attack"]["type"], "reflection");
        assert_eq!(value["attack"]["service"], "ntp");
        assert_eq!(value["attack"]["port"], 123);
        assert_eq!(value["attack"]["mix"]["udp"], 5000);
        assert_eq!(value["sources"], serde_json::Value::Null);
        // An alert without them says so plainly.
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert(AlertState::Start)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["contributors"], serde_json::json!([]));
        assert_eq!(value["attack"], serde_json::Value::Null);
    }

    #[test]
    fn console_names_the_type_and_the_top_senders_in_one_more_line() {
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &explained()).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(
                "5000 pkt/s over 840 (baseline 210); NTP reflection (UDP from port 123) 96% [r-1]"
            ),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1],
            "  top: 198.51.100.66 4900 pkt/s 96% (new), 10.0.0.1 100 pkt/s 2% | 198.51.100.0/24 4900 pkt/s 96% (new)"
        );
    }

    fn flooded(random: bool) -> Alert {
        use crate::{
            datapath::{SlotlessPrefix, Target, TargetKind},
            detect::alert::SlotlessShare,
        };
        let target = |last, kind, port, share: f64| SlotlessShare {
            what: Target {
                addr: std::net::IpAddr::from([10, 4, 0, last]),
                kind,
                port,
            },
            packets: (share * 5000.0) as u64,
            share,
        };
        Alert {
            slotless: Some(SlotlessEvidence {
                packets: 5_000,
                pps: 5_000.0,
                share: 0.99,
                sources: if random { 4_800 } else { 300 },
                prefixes: if random { 140 } else { 2 },
                random_sources: random,
                targets: vec![
                    target(6, TargetKind::Udp, Some(443), 0.92),
                    target(7, TargetKind::Syn, Some(80), 0.05),
                ],
                prefixes_top: vec![SlotlessShare {
                    what: SlotlessPrefix {
                        addr: std::net::IpAddr::from([198, 51, 0, 0]),
                        len: 16,
                    },
                    packets: 4_000,
                    share: 0.8,
                }],
            }),
            ..alert(AlertState::Start)
        }
    }

    #[test]
    fn a_victims_alert_says_to_whom() {
        let alert = Alert {
            subject: Subject::Destination(std::net::IpAddr::from([10, 0, 0, 6])),
            detail: Some(String::from("~1400 sources")),
            ..alert(AlertState::Start)
        };
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &alert).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(" to 10.0.0.6 on eth0: "), "{text}");
        assert!(text.contains("; ~1400 sources"), "{text}");
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["scope"], "destination");
        assert_eq!(value["subject"], "10.0.0.6");
    }

    #[test]
    fn a_flood_names_whom_it_hit_on_its_second_line_and_in_json() {
        let alert = Alert {
            victims: vec![
                Victim {
                    addr: std::net::IpAddr::from([172, 16, 2, 7]),
                    packets: 5_000,
                    pps: 5_000.0,
                    share: 0.98,
                    attack: Some(AttackType::Reflection(123)),
                    port: Some(40_000),
                    sampled: None,
                },
                Victim {
                    addr: std::net::IpAddr::from([172, 16, 4, 9]),
                    packets: 60,
                    pps: 60.0,
                    share: 0.012,
                    attack: None,
                    port: None,
                    sampled: None,
                },
                Victim {
                    addr: std::net::IpAddr::from([172, 16, 4, 10]),
                    packets: 48,
                    pps: 48.0,
                    share: 0.011,
                    attack: Some(AttackType::SynFlood),
                    port: Some(443),
                    sampled: Some(16),
                },
            ],
            ..alert(AlertState::Start)
        };
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &alert).unwrap();
        let text = String::from_utf8(out).unwrap();
        let second = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            second,
            "  to: 172.16.2.7 5000 pkt/s 98% NTP reflection (UDP from port 123), \
             172.16.4.9 60 pkt/s 1%, 172.16.4.10:443 ~48 pkt/s 1% SYN flood"
        );
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["victims"][0]["destination"], "172.16.2.7");
        assert_eq!(value["victims"][0]["attack"], "reflection");
        assert_eq!(value["victims"][0]["port"], 123);
        assert_eq!(value["victims"][0]["share"], 0.98);
        assert_eq!(value["victims"][0]["sampled"], serde_json::Value::Null);
        assert_eq!(value["victims"][1]["attack"], serde_json::Value::Null);
        assert_eq!(value["victims"][1]["port"], serde_json::Value::Null);
        assert_eq!(value["victims"][2]["port"], 443);
        assert_eq!(value["victims"][2]["sampled"], 16);
    }

    #[test]
    fn a_local_prefix_alert_counts_hosts_not_sources() {
        let alert = Alert {
            subject: Subject::DestinationPrefix("172.16.1.0/24".parse().unwrap()),
            members: Some(Members {
                count: 20,
                first: vec![std::net::IpAddr::from([172, 16, 1, 1])],
            }),
            ..alert(AlertState::Start)
        };
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &alert).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(" spike_pps to 172.16.1.0/24 on eth0: "),
            "{text}"
        );
        assert!(text.contains("; 20 hosts: 172.16.1.1"), "{text}");
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["scope"], "destination_prefix");
        assert_eq!(value["hosts"]["count"], 20);
        assert_eq!(value["sources"], serde_json::Value::Null);
    }

    #[test]
    fn a_flood_without_slots_names_its_victims_and_how_many_sent_it() {
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &flooded(true)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "; without a slot 5000 pkt/s 99%: ~4800 random sources in ~140 /16s, \
                 to 10.4.0.6 udp:443 92%, 10.4.0.7 syn:80 5% [r-1]"
            ),
            "{text}"
        );
        let mut out = Vec::new();
        write_line(&mut out, "eth0", &flooded(false)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("~300 sources in ~2 /16s (198.51.0.0/16 80%), to 10.4.0.6 udp:443"),
            "{text}"
        );
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &flooded(true)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let slotless = &value["slotless"];
        assert_eq!(slotless["sources_estimate"], 4800);
        assert_eq!(slotless["random_sources"], true);
        assert_eq!(slotless["targets"][0]["destination"], "10.4.0.6");
        assert_eq!(slotless["targets"][0]["kind"], "udp");
        assert_eq!(slotless["targets"][0]["port"], 443);
        assert_eq!(slotless["prefixes"][0]["prefix"], "198.51.0.0/16");
        let mut out = Vec::new();
        write_json(&mut out, "eth0", &alert(AlertState::Start)).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["slotless"], serde_json::Value::Null);
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
