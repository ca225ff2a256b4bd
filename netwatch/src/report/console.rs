//! Human-readable interval reports.

use std::{
    io::{self, Write},
    time::SystemTime,
};

use super::{Context, rfc3339};
use crate::{collect::Interval, datapath::DestinationCount};

/// A summary line, the blind spots, and the top sources as a table.
pub fn write_interval(
    out: &mut impl Write,
    context: &Context,
    at: SystemTime,
    interval: &Interval,
    last: bool,
) -> io::Result<()> {
    let delta = &interval.delta;
    let cumulative = &interval.cumulative;
    writeln!(
        out,
        "{} {}{}  {:.0} pkt/s  {}  | {} pkts {} in {:.2}s | total {} pkts {}",
        rfc3339(at),
        context.iface,
        if last { " (final)" } else { "" },
        interval.rate(delta.total_packets),
        bits_per_second(interval.rate(delta.total_bytes)),
        delta.total_packets,
        bytes(delta.total_bytes),
        interval.elapsed.as_secs_f64(),
        cumulative.total_packets,
        bytes(cumulative.total_bytes),
    )?;
    writeln!(
        out,
        "  blind spots (total): non-ip {}  malformed {}  overflow {}  unattributed {}  truncated {}  evicted sources {} | samples {} capped {} ring-full {} | sources {}/{}",
        cumulative.non_ip_packets,
        cumulative.malformed_packets,
        cumulative.overflow_packets,
        interval.unattributed.packets,
        cumulative.truncated_packets,
        interval.evicted_sources,
        cumulative.sampled_packets,
        cumulative.sample_capped_packets,
        cumulative.sample_ring_full_packets,
        interval.tracked_sources,
        context.max_sources,
    )?;
    write_slotless(out, interval)?;
    write_destinations(out, context, interval)?;
    if interval.sources.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:<39} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
        "SOURCE", "PKT/S", "BIT/S", "TCP", "UDP", "ICMP", "OTHER", "SYN", "PORTS", "HOSTS"
    )?;
    for source in interval.sources.iter().take(context.top) {
        let stats = &source.stats;
        writeln!(
            out,
            "  {:<39} {:>10.0} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            source.addr.to_string(),
            interval.rate(stats.packets),
            bits_per_second(interval.rate(stats.bytes)),
            stats.tcp_packets,
            stats.udp_packets,
            stats.icmp_packets,
            stats.other_packets,
            stats.tcp_syn_packets,
            source.spread.ports,
            source.spread.hosts,
        )?;
    }
    let hidden = interval.sources.len().saturating_sub(context.top);
    if hidden > 0 {
        writeln!(out, "  ... and {hidden} more active sources")?;
    }
    Ok(())
}

/// `  without a slot: 5000 pkts from ~4800 sources in ~140 /16s | to 10.4.0.6 udp:443 4600,
/// ... | from 198.51.0.0/16 500, ...`: the overflow of the interval, when there was any.
fn write_slotless(out: &mut impl Write, interval: &Interval) -> io::Result<()> {
    const LISTED: usize = 3;
    let breakdown = &interval.slotless;
    if breakdown.total.packets == 0 {
        return Ok(());
    }
    write!(
        out,
        "  without a slot: {} pkts from ~{} sources in ~{} /16s",
        breakdown.total.packets, breakdown.sources, breakdown.prefixes
    )?;
    let targets: Vec<String> = breakdown
        .targets
        .iter()
        .take(LISTED)
        .map(|(target, traffic)| format!("{target} {}", traffic.packets))
        .collect();
    if !targets.is_empty() {
        write!(out, " | to {}", targets.join(", "))?;
    }
    let prefixes: Vec<String> = breakdown
        .wide
        .iter()
        .take(LISTED)
        .map(|(prefix, traffic)| format!("{prefix} {}", traffic.packets))
        .collect();
    if !prefixes.is_empty() {
        write!(out, " | from {}", prefixes.join(", "))?;
    }
    writeln!(out)
}

/// The top hosts of the local networks (or, sampled, of any destination) by packets
/// received, as a table.
fn write_destinations(
    out: &mut impl Write,
    context: &Context,
    interval: &Interval,
) -> io::Result<()> {
    if interval.destinations.is_empty() {
        return Ok(());
    }
    if let DestinationCount::Sampled(one_in) = interval.destination_count {
        writeln!(
            out,
            "  destinations estimated from 1 frame in {one_in} (no [networks] local set):"
        )?;
    }
    writeln!(
        out,
        "  {:<39} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}  TOP SENDERS",
        "DESTINATION", "PKT/S", "BIT/S", "TCP", "UDP", "ICMP", "SYN", "SOURCES"
    )?;
    for destination in interval.destinations.iter().take(context.top) {
        let stats = &destination.stats;
        let senders: Vec<String> = destination
            .senders
            .iter()
            .take(2)
            .map(|(prefix, traffic)| format!("{prefix} {}", traffic.packets))
            .collect();
        writeln!(
            out,
            "  {:<39} {:>10.0} {:>12} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
            destination.addr.to_string(),
            interval.rate(stats.packets),
            bits_per_second(interval.rate(stats.bytes)),
            stats.tcp_packets,
            stats.udp_packets,
            stats.icmp_packets,
            stats.tcp_syn_packets,
            format!("~{}", destination.sources),
            senders.join(", "),
        )?;
    }
    let hidden = interval.destinations.len().saturating_sub(context.top);
    if hidden > 0 {
        let which = match interval.destination_count {
            DestinationCount::Sampled(_) => "destinations",
            DestinationCount::Off | DestinationCount::Local => "local hosts",
        };
        writeln!(out, "  ... and {hidden} more {which}")?;
    }
    Ok(())
}

fn bits_per_second(bytes_per_second: f64) -> String {
    scaled(bytes_per_second * 8.0, "bit/s", 1000.0)
}

fn bytes(bytes: u64) -> String {
    scaled(bytes as f64, "B", 1024.0)
}

fn scaled(value: f64, unit: &str, step: f64) -> String {
    const PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut value = value;
    let mut prefix = 0;
    while value >= step && prefix + 1 < PREFIXES.len() {
        value /= step;
        prefix += 1;
    }
    if prefix == 0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {}{unit}", PREFIXES[prefix])
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use netwatch_common::{GlobalStats, SourceStats};

    use super::*;
    use crate::collect::{SourceDelta, Volume};

    #[test]
    fn units_scale() {
        assert_eq!(bits_per_second(125.0), "1.0 kbit/s");
        assert_eq!(bits_per_second(10.0), "80 bit/s");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MB");
    }

    #[test]
    fn table_lists_top_sources_and_counts_the_rest() {
        let source = |last: u8, packets| SourceDelta {
            addr: std::net::IpAddr::from([192, 0, 2, last]),
            stats: SourceStats {
                packets,
                bytes: packets * 100,
                udp_packets: packets,
                ..SourceStats::default()
            },
            spread: crate::datapath::Spread::default(),
        };
        let interval = Interval {
            elapsed: Duration::from_secs(2),
            delta: GlobalStats {
                total_packets: 30,
                total_bytes: 3000,
                ..GlobalStats::default()
            },
            cumulative: GlobalStats::default(),
            sources: vec![source(1, 20), source(2, 6), source(3, 4)],
            tracked_sources: 3,
            evicted_sources: 0,
            unattributed: Volume::default(),
            unattributed_before: Volume::default(),
            overflow_reflected_port: 0,
            slotless: Default::default(),
            destination_count: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
            intel: Default::default(),
        };
        let context = Context {
            iface: String::from("eth9"),
            max_sources: 100,
            top: 2,
        };
        let mut out = Vec::new();
        write_interval(&mut out, &context, UNIX_EPOCH, &interval, false)
            .unwrap_or_else(|err| panic!("{err}"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("15 pkt/s"), "{text}");
        assert!(text.contains("192.0.2.1 "), "{text}");
        assert!(text.contains("192.0.2.2 "), "{text}");
        assert!(!text.contains("192.0.2.3 "), "{text}");
        assert!(text.contains("and 1 more active sources"), "{text}");
        assert!(!text.contains("without a slot"), "{text}");
    }

    #[test]
    fn local_hosts_are_listed_with_their_senders() {
        use crate::datapath::{DestinationReading, SlotlessPrefix, Traffic};
        let host = |last, packets| DestinationReading {
            addr: std::net::IpAddr::from([10, 0, 0, last]),
            stats: SourceStats {
                packets,
                bytes: packets * 60,
                tcp_packets: packets,
                tcp_syn_packets: packets,
                ..SourceStats::default()
            },
            sources: 1_400,
            senders: vec![(
                SlotlessPrefix {
                    addr: std::net::IpAddr::from([11, 0, 7, 0]),
                    len: 24,
                },
                Traffic {
                    packets: 9,
                    bytes: 540,
                },
            )],
            port: None,
        };
        let interval = Interval {
            elapsed: Duration::from_secs(1),
            destinations: vec![host(6, 5000), host(7, 10), host(8, 1)],
            ..Interval::default()
        };
        let context = Context {
            iface: String::from("eth9"),
            max_sources: 100,
            top: 2,
        };
        let mut out = Vec::new();
        write_interval(&mut out, &context, UNIX_EPOCH, &interval, false)
            .unwrap_or_else(|err| panic!("{err}"));
        let text = String::from_utf8_lossy(&out);
        let row = text
            .lines()
            .find(|line| line.trim_start().starts_with("10.0.0.6"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains(" 5000 "), "{row}");
        assert!(row.contains("~1400"), "{row}");
        assert!(row.ends_with("11.0.7.0/24 9"), "{row}");
        assert!(text.contains("DESTINATION"), "{text}");
        assert!(!text.contains("10.0.0.8"), "{text}");
        assert!(text.contains("and 1 more local hosts"), "{text}");
    }

    #[test]
    fn traffic_without_a_slot_gets_a_line_of_its_own() {
        use crate::datapath::{OverflowBreakdown, SlotlessPrefix, Target, TargetKind, Traffic};
        let traffic = |packets| Traffic {
            packets,
            bytes: packets * 60,
        };
        let interval = Interval {
            elapsed: Duration::from_secs(1),
            slotless: OverflowBreakdown {
                total: traffic(5000),
                targets: vec![(
                    Target {
                        addr: std::net::IpAddr::from([10, 4, 0, 6]),
                        kind: TargetKind::Udp,
                        port: Some(443),
                    },
                    traffic(4600),
                )],
                target_other: traffic(400),
                wide: vec![(
                    SlotlessPrefix {
                        addr: std::net::IpAddr::from([198, 51, 0, 0]),
                        len: 16,
                    },
                    traffic(500),
                )],
                wide_other: traffic(4500),
                sources: 4800,
                prefixes: 140,
                ..OverflowBreakdown::default()
            },
            ..Interval::default()
        };
        let context = Context {
            iface: String::from("eth9"),
            max_sources: 100,
            top: 2,
        };
        let mut out = Vec::new();
        write_interval(&mut out, &context, UNIX_EPOCH, &interval, false)
            .unwrap_or_else(|err| panic!("{err}"));
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(
                "  without a slot: 5000 pkts from ~4800 sources in ~140 /16s | to 10.4.0.6 \
                 udp:443 4600 | from 198.51.0.0/16 500\n"
            ),
            "{text}"
        );
    }
}
