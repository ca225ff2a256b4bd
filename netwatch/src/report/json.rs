//! Interval reports as JSON lines. The schema is documented in the README; fields are only
//! ever added, never renamed.

use std::{
    io::{self, Write},
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use netwatch_common::GlobalStats;
use serde::Serialize;

use super::{Context, rfc3339};
use crate::{
    collect::Interval,
    datapath::{DestinationCount, OverflowBreakdown, SlotlessPrefix, Traffic},
    detect::alert::{Place, Places},
};

#[derive(Serialize)]
struct IntervalRecord<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    unix_ms: u128,
    iface: &'a str,
    interval_ms: u128,
    #[serde(rename = "final")]
    last: bool,
    packets: u64,
    bytes: u64,
    pps: f64,
    bps: f64,
    blind_spots: BlindSpots,
    cumulative: Cumulative,
    sources_tracked: usize,
    sources_active: usize,
    max_sources: u32,
    top: Vec<SourceRecord>,
    /// Traffic without a source slot by prefix and destination; null when there was none.
    slotless: Option<SlotlessRecord>,
    /// How the destinations were counted: `local` (exactly), `sampled` or `off`.
    destinations_counted: &'static str,
    /// While sampled: one frame in this many was counted, and the destinations' numbers are
    /// estimates.
    destinations_sampled: Option<u32>,
    /// The top hosts of the local networks (sampled: any hosts) by packets received.
    destinations: Vec<DestinationRecord>,
    /// Frames to local hosts that could not be counted per host.
    destinations_other_packets: u64,
    /// The frames from or to networks an indicator feed lists, matched in the kernel.
    intel: IntelRecord,
}

#[derive(Serialize)]
struct IntelRecord {
    /// Frames a listed network held (once for each side it held).
    listed_packets: u64,
    listed_bytes: u64,
    /// Of them, those the kernel's table of matches had no room for.
    unrecorded_packets: u64,
    unrecorded_bytes: u64,
}

/// The AS and country of an address, when `[enrich]` knows them; left out otherwise.
#[derive(Serialize, Default)]
struct PlaceFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    asn: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<String>,
}

impl PlaceFields {
    fn of(place: Option<&Place>) -> Self {
        place.map_or_else(Self::default, |place| Self {
            asn: place.asn,
            as_org: place.as_org.clone(),
            country: place.country.clone(),
        })
    }
}

#[derive(Serialize)]
struct DestinationRecord {
    destination: String,
    #[serde(flatten)]
    place: PlaceFields,
    packets: u64,
    bytes: u64,
    pps: f64,
    bps: f64,
    port: Option<u16>,
    tcp: u64,
    udp: u64,
    icmp: u64,
    other: u64,
    syn: u64,
    fragments: u64,
    reflected: u64,
    reflected_port: Option<u32>,
    sources_estimate: u32,
    senders: Vec<SenderRecord>,
}

#[derive(Serialize)]
struct SenderRecord {
    prefix: String,
    packets: u64,
}

/// [`OverflowBreakdown`] in JSON: the top entries of each list, and the rest as `other`.
#[derive(Serialize)]
struct SlotlessRecord {
    packets: u64,
    bytes: u64,
    sources_estimate: u32,
    prefixes_estimate: u32,
    wide_prefixes: Vec<PrefixRecord>,
    wide_other_packets: u64,
    narrow_prefixes: Vec<PrefixRecord>,
    narrow_other_packets: u64,
    targets: Vec<TargetRecord>,
    targets_other_packets: u64,
}

#[derive(Serialize)]
struct PrefixRecord {
    prefix: String,
    /// Of the prefix's first address.
    #[serde(flatten)]
    place: PlaceFields,
    packets: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TargetRecord {
    destination: String,
    #[serde(flatten)]
    place: PlaceFields,
    kind: &'static str,
    port: Option<u16>,
    packets: u64,
    bytes: u64,
}

impl SlotlessRecord {
    /// The record of `breakdown`, each list cut at `top`: what is cut goes to its `other`.
    fn of(
        breakdown: &OverflowBreakdown,
        top: usize,
        place: impl Fn(IpAddr) -> PlaceFields,
    ) -> Option<Self> {
        if breakdown.total.packets == 0 {
            return None;
        }
        let prefixes = |list: &[(SlotlessPrefix, Traffic)], other: Traffic| {
            let rest: u64 = list.iter().skip(top).map(|(_, t)| t.packets).sum();
            let listed = list
                .iter()
                .take(top)
                .map(|(prefix, traffic)| PrefixRecord {
                    prefix: prefix.to_string(),
                    place: place(prefix.addr),
                    packets: traffic.packets,
                    bytes: traffic.bytes,
                })
                .collect();
            (listed, other.packets + rest)
        };
        let (wide_prefixes, wide_other_packets) = prefixes(&breakdown.wide, breakdown.wide_other);
        let (narrow_prefixes, narrow_other_packets) =
            prefixes(&breakdown.narrow, breakdown.narrow_other);
        Some(Self {
            packets: breakdown.total.packets,
            bytes: breakdown.total.bytes,
            sources_estimate: breakdown.sources,
            prefixes_estimate: breakdown.prefixes,
            wide_prefixes,
            wide_other_packets,
            narrow_prefixes,
            narrow_other_packets,
            targets: breakdown
                .targets
                .iter()
                .take(top)
                .map(|(target, traffic)| TargetRecord {
                    destination: target.addr.to_string(),
                    place: place(target.addr),
                    kind: target.kind.name(),
                    port: target.port,
                    packets: traffic.packets,
                    bytes: traffic.bytes,
                })
                .collect(),
            targets_other_packets: breakdown.target_other.packets
                + breakdown
                    .targets
                    .iter()
                    .skip(top)
                    .map(|(_, t)| t.packets)
                    .sum::<u64>(),
        })
    }
}

/// This interval's blind spots, and the unattributed gauge.
#[derive(Serialize)]
struct BlindSpots {
    non_ip_packets: u64,
    non_ip_bytes: u64,
    malformed_packets: u64,
    malformed_bytes: u64,
    overflow_packets: u64,
    overflow_bytes: u64,
    /// What the overflow frames were: the protocol mix of traffic without a slot.
    overflow_mix: OverflowMix,
    truncated_packets: u64,
    sampled_packets: u64,
    sample_capped_packets: u64,
    sample_ring_full_packets: u64,
    sample_truncated_packets: u64,
    evicted_sources: u64,
    unattributed_packets: u64,
    unattributed_bytes: u64,
    unattributed_before_packets: u64,
    unattributed_before_bytes: u64,
}

#[derive(Serialize)]
struct OverflowMix {
    tcp: u64,
    udp: u64,
    icmp: u64,
    syn: u64,
    fragments: u64,
    reflected: u64,
    reflected_port: Option<u16>,
}

#[derive(Serialize)]
struct Cumulative {
    sampled_packets: u64,
    sample_capped_packets: u64,
    sample_ring_full_packets: u64,
    sample_truncated_packets: u64,
    packets: u64,
    bytes: u64,
    non_ip_packets: u64,
    non_ip_bytes: u64,
    malformed_packets: u64,
    malformed_bytes: u64,
    overflow_packets: u64,
    overflow_bytes: u64,
    truncated_packets: u64,
}

#[derive(Serialize)]
struct SourceRecord {
    source: String,
    #[serde(flatten)]
    place: PlaceFields,
    packets: u64,
    bytes: u64,
    pps: f64,
    bps: f64,
    tcp: u64,
    udp: u64,
    icmp: u64,
    other: u64,
    syn: u64,
    fragments: u64,
    reflected: u64,
    reflected_port: Option<u32>,
    ports: u32,
    hosts: u32,
}

/// One line: one JSON object: `interval` of `context`, ending at `at`, `last` if it is the
/// final one; the AS and country of the addresses it lists from `places`.
pub fn write_interval(
    out: &mut impl Write,
    context: &Context,
    at: SystemTime,
    interval: &Interval,
    last: bool,
    places: &Places,
) -> io::Result<()> {
    let place = |addr: IpAddr| PlaceFields::of(places.get(&addr));
    let GlobalStats {
        total_packets,
        total_bytes,
        non_ip_packets,
        non_ip_bytes,
        malformed_packets,
        malformed_bytes,
        overflow_packets,
        overflow_bytes,
        overflow_tcp_packets,
        overflow_udp_packets,
        overflow_icmp_packets,
        overflow_syn_packets,
        overflow_fragment_packets,
        overflow_reflected_packets,
        truncated_packets,
        sampled_packets,
        sample_capped_packets,
        sample_ring_full_packets,
        sample_truncated_packets,
    } = interval.delta;
    let cumulative = &interval.cumulative;
    let record = IntervalRecord {
        kind: "interval",
        time: rfc3339(at),
        unix_ms: at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
        iface: &context.iface,
        interval_ms: interval.elapsed.as_millis(),
        last,
        packets: total_packets,
        bytes: total_bytes,
        pps: interval.rate(total_packets),
        bps: interval.rate(total_bytes) * 8.0,
        blind_spots: BlindSpots {
            non_ip_packets,
            non_ip_bytes,
            malformed_packets,
            malformed_bytes,
            overflow_packets,
            overflow_bytes,
            overflow_mix: OverflowMix {
                tcp: overflow_tcp_packets,
                udp: overflow_udp_packets,
                icmp: overflow_icmp_packets,
                syn: overflow_syn_packets,
                fragments: overflow_fragment_packets,
                reflected: overflow_reflected_packets,
                reflected_port: (overflow_reflected_packets > 0)
                    .then_some(interval.overflow_reflected_port),
            },
            truncated_packets,
            sampled_packets,
            sample_capped_packets,
            sample_ring_full_packets,
            sample_truncated_packets,
            evicted_sources: interval.evicted_sources,
            unattributed_packets: interval.unattributed.packets,
            unattributed_bytes: interval.unattributed.bytes,
            unattributed_before_packets: interval.unattributed_before.packets,
            unattributed_before_bytes: interval.unattributed_before.bytes,
        },
        cumulative: Cumulative {
            sampled_packets: cumulative.sampled_packets,
            sample_capped_packets: cumulative.sample_capped_packets,
            sample_ring_full_packets: cumulative.sample_ring_full_packets,
            sample_truncated_packets: cumulative.sample_truncated_packets,
            packets: cumulative.total_packets,
            bytes: cumulative.total_bytes,
            non_ip_packets: cumulative.non_ip_packets,
            non_ip_bytes: cumulative.non_ip_bytes,
            malformed_packets: cumulative.malformed_packets,
            malformed_bytes: cumulative.malformed_bytes,
            overflow_packets: cumulative.overflow_packets,
            overflow_bytes: cumulative.overflow_bytes,
            truncated_packets: cumulative.truncated_packets,
        },
        sources_tracked: interval.tracked_sources,
        sources_active: interval.sources.len(),
        max_sources: context.max_sources,
        top: interval
            .sources
            .iter()
            .take(context.top)
            .map(|source| SourceRecord {
                source: source.addr.to_string(),
                place: place(source.addr),
                packets: source.stats.packets,
                bytes: source.stats.bytes,
                pps: interval.rate(source.stats.packets),
                bps: interval.rate(source.stats.bytes) * 8.0,
                tcp: source.stats.tcp_packets,
                udp: source.stats.udp_packets,
                icmp: source.stats.icmp_packets,
                other: source.stats.other_packets,
                syn: source.stats.tcp_syn_packets,
                fragments: source.stats.fragment_packets,
                reflected: source.stats.reflected_packets,
                reflected_port: (source.stats.reflected_packets > 0)
                    .then_some(source.stats.reflected_port),
                ports: source.spread.ports,
                hosts: source.spread.hosts,
            })
            .collect(),
        slotless: SlotlessRecord::of(&interval.slotless, context.top, place),
        destinations_counted: match interval.destination_count {
            DestinationCount::Off => "off",
            DestinationCount::Local => "local",
            DestinationCount::Sampled(_) => "sampled",
        },
        destinations_sampled: match interval.destination_count {
            DestinationCount::Sampled(one_in) => Some(one_in),
            DestinationCount::Off | DestinationCount::Local => None,
        },
        destinations: interval
            .destinations
            .iter()
            .take(context.top)
            .map(|destination| {
                let stats = &destination.stats;
                DestinationRecord {
                    destination: destination.addr.to_string(),
                    place: place(destination.addr),
                    packets: stats.packets,
                    bytes: stats.bytes,
                    pps: interval.rate(stats.packets),
                    bps: interval.rate(stats.bytes) * 8.0,
                    port: destination.port,
                    tcp: stats.tcp_packets,
                    udp: stats.udp_packets,
                    icmp: stats.icmp_packets,
                    other: stats.other_packets,
                    syn: stats.tcp_syn_packets,
                    fragments: stats.fragment_packets,
                    reflected: stats.reflected_packets,
                    reflected_port: (stats.reflected_packets > 0).then_some(stats.reflected_port),
                    sources_estimate: destination.sources,
                    senders: destination
                        .senders
                        .iter()
                        .map(|(prefix, traffic)| SenderRecord {
                            prefix: prefix.to_string(),
                            packets: traffic.packets,
                        })
                        .collect(),
                }
            })
            .collect(),
        destinations_other_packets: interval.destination_other.packets
            + interval
                .destinations
                .iter()
                .skip(context.top)
                .map(|destination| destination.stats.packets)
                .sum::<u64>(),
        intel: IntelRecord {
            listed_packets: interval.intel.listed.packets,
            listed_bytes: interval.intel.listed.bytes,
            unrecorded_packets: interval.intel.unrecorded.packets,
            unrecorded_bytes: interval.intel.unrecorded.bytes,
        },
    };
    serde_json::to_writer(&mut *out, &record).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use netwatch_common::SourceStats;

    use super::*;
    use crate::collect::{SourceDelta, Volume};

    /// The JSON line of `interval`, with `places` known.
    fn written(context: &Context, interval: &Interval, last: bool, places: &Places) -> Vec<u8> {
        let mut out = Vec::new();
        write_interval(&mut out, context, UNIX_EPOCH, interval, last, places)
            .unwrap_or_else(|err| panic!("{err}"));
        out
    }

    #[test]
    fn record_has_the_documented_fields() {
        let interval = Interval {
            elapsed: Duration::from_millis(500),
            delta: GlobalStats {
                total_packets: 12,
                total_bytes: 1200,
                non_ip_packets: 2,
                non_ip_bytes: 120,
                ..GlobalStats::default()
            },
            cumulative: GlobalStats {
                total_packets: 40,
                ..GlobalStats::default()
            },
            sources: vec![SourceDelta {
                addr: "2001:db8::7".parse().unwrap_or_else(|err| panic!("{err}")),
                stats: SourceStats {
                    packets: 10,
                    bytes: 1080,
                    tcp_packets: 10,
                    tcp_syn_packets: 3,
                    ..SourceStats::default()
                },
                spread: crate::datapath::Spread { ports: 4, hosts: 1 },
            }],
            tracked_sources: 1,
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
            iface: String::from("veth1"),
            max_sources: 64,
            top: 10,
        };
        let places = Places::from([(
            "2001:db8::7".parse().unwrap_or_else(|err| panic!("{err}")),
            Place {
                asn: Some(64500),
                as_org: Some(String::from("EXAMPLE-NET")),
                country: Some(String::from("NL")),
            },
        )]);
        let out = written(&context, &interval, true, &places);
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value =
            serde_json::from_slice(&out).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(value["type"], "interval");
        assert_eq!(value["final"], true);
        assert_eq!(value["interval_ms"], 500);
        assert_eq!(value["pps"], 24.0);
        assert_eq!(value["blind_spots"]["non_ip_packets"], 2);
        assert_eq!(value["cumulative"]["packets"], 40);
        assert_eq!(value["top"][0]["source"], "2001:db8::7");
        // Its AS and country, as `[enrich]` said; an address it does not know has none.
        assert_eq!(value["top"][0]["asn"], 64500);
        assert_eq!(value["top"][0]["as_org"], "EXAMPLE-NET");
        assert_eq!(value["top"][0]["country"], "NL");
        assert_eq!(value["top"][0]["syn"], 3);
        assert_eq!(value["top"][0]["ports"], 4);
        assert_eq!(value["top"][0]["bps"], 17280.0);
        assert_eq!(value["slotless"], serde_json::Value::Null);
        assert_eq!(value["destinations"], serde_json::json!([]));
        assert_eq!(value["destinations_other_packets"], 0);
        assert_eq!(value["destinations_counted"], "off");
        assert_eq!(value["destinations_sampled"], serde_json::Value::Null);
    }

    #[test]
    fn local_hosts_are_listed_to_the_top_and_the_rest_is_other() {
        use crate::datapath::DestinationReading;
        let host = |last, packets| DestinationReading {
            addr: IpAddr::from([10, 0, 0, last]),
            stats: SourceStats {
                packets,
                bytes: packets * 100,
                udp_packets: packets,
                reflected_packets: packets,
                reflected_port: 123,
                ..SourceStats::default()
            },
            sources: 300,
            senders: vec![(
                SlotlessPrefix {
                    addr: IpAddr::from([100, 64, 1, 0]),
                    len: 24,
                },
                Traffic {
                    packets: 40,
                    bytes: 4000,
                },
            )],
            port: Some(40_000),
        };
        let interval = Interval {
            elapsed: Duration::from_secs(1),
            destination_count: DestinationCount::Sampled(16),
            destinations: vec![host(5, 6000), host(7, 30)],
            destination_other: Traffic {
                packets: 2,
                bytes: 200,
            },
            ..Interval::default()
        };
        let context = Context {
            iface: String::from("veth1"),
            max_sources: 64,
            top: 1,
        };
        let out = written(&context, &interval, false, &Places::new());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let destinations = value["destinations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(destinations.len(), 1);
        assert_eq!(destinations[0]["destination"], "10.0.0.5");
        assert_eq!(destinations[0]["pps"], 6000.0);
        assert_eq!(destinations[0]["port"], 40_000);
        assert_eq!(value["destinations_counted"], "sampled");
        assert_eq!(value["destinations_sampled"], 16);
        assert_eq!(destinations[0]["reflected_port"], 123);
        assert_eq!(destinations[0]["sources_estimate"], 300);
        assert_eq!(destinations[0]["senders"][0]["prefix"], "100.64.1.0/24");
        assert_eq!(
            value["destinations_other_packets"], 32,
            "the cut host and other"
        );
    }

    #[test]
    fn traffic_without_a_slot_is_listed_to_the_top_and_the_rest_is_other() {
        use crate::datapath::{Target, TargetKind};
        let traffic = |packets| Traffic {
            packets,
            bytes: packets * 60,
        };
        let prefix = |b: u8, len| SlotlessPrefix {
            addr: IpAddr::from([198, 51, b, 0]),
            len,
        };
        let breakdown = OverflowBreakdown {
            total: traffic(100),
            wide: vec![(prefix(0, 16), traffic(60)), (prefix(0, 16), traffic(30))],
            wide_other: traffic(10),
            narrow: vec![(prefix(7, 24), traffic(100))],
            targets: vec![(
                Target {
                    addr: IpAddr::from([10, 4, 0, 6]),
                    kind: TargetKind::Syn,
                    port: Some(80),
                },
                traffic(99),
            )],
            target_other: traffic(1),
            sources: 97,
            prefixes: 3,
            ..OverflowBreakdown::default()
        };
        let record = serde_json::to_value(SlotlessRecord::of(&breakdown, 1, |_| {
            PlaceFields::default()
        }))
        .unwrap();
        assert_eq!(record["packets"], 100);
        assert_eq!(record["sources_estimate"], 97);
        assert_eq!(record["wide_prefixes"][0]["prefix"], "198.51.0.0/16");
        assert_eq!(record["wide_prefixes"].as_array().map(Vec::len), Some(1));
        assert_eq!(record["wide_other_packets"], 40, "the cut entry and other");
        assert_eq!(record["narrow_prefixes"][0]["prefix"], "198.51.7.0/24");
        assert_eq!(record["narrow_other_packets"], 0);
        assert_eq!(record["targets"][0]["destination"], "10.4.0.6");
        assert_eq!(record["targets"][0]["kind"], "syn");
        assert_eq!(record["targets"][0]["port"], 80);
        assert_eq!(record["targets_other_packets"], 1);
    }
}
