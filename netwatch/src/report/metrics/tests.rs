//! The series against synthetic intervals: what each update adds, which series go when
//! their source or ban does, and the labels of the slot-less destinations.

use netwatch_common::{GlobalStats, SourceStats};

use super::*;
use crate::{
    collect::{SourceDelta, Volume},
    datapath::{Spread, Target, TargetKind},
};

/// The high ports' class is labelled `high`, port 0 is `0`, and kinds without ports have
/// an empty label.
#[test]
fn target_ports_are_labelled_apart() {
    let target = |kind, port| Target {
        addr: "192.0.2.9".parse().unwrap(),
        kind,
        port,
    };
    let label = |target: Target| target.port_name().unwrap_or_default();
    assert_eq!(label(target(TargetKind::Syn, None)), "high");
    assert_eq!(label(target(TargetKind::Udp, Some(0))), "0");
    assert_eq!(label(target(TargetKind::Reflected, Some(53))), "53");
    assert_eq!(label(target(TargetKind::Fragment, None)), "");
}

/// Each ban in force has its series; an ended ban's series go, and the totals grow by
/// exactly what each ban matched, its last packets included.
#[test]
fn ban_series_follow_the_bans_in_force() {
    let metrics = Metrics::new(5).unwrap();
    metrics.ban_event("ban");
    metrics.set_bans("drop", &[(String::from("10.9.0.2/32"), 100, 6_400)], &[]);
    metrics.set_bans("drop", &[(String::from("10.9.0.2/32"), 250, 16_000)], &[]);
    let text = metrics.render();
    assert!(text.contains("netwatch_bans_active 1\n"), "{text}");
    assert!(
        text.contains("netwatch_ban_packets{subject=\"10.9.0.2/32\"} 250\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_ban_events_total{action=\"ban\"} 1\n"),
        "{text}"
    );
    metrics.set_bans("drop", &[], &[(String::from("10.9.0.2/32"), 260, 16_640)]);
    let text = metrics.render();
    assert!(text.contains("netwatch_bans_active 0\n"), "{text}");
    assert!(!text.contains("netwatch_ban_packets{"), "{text}");
    assert!(
        text.contains("netwatch_ban_matched_packets_total{mode=\"drop\"} 260\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_ban_matched_bytes_total{mode=\"drop\"} 16640\n"),
        "{text}"
    );
}

fn interval() -> Interval {
    Interval {
        elapsed: Duration::from_secs(1),
        delta: GlobalStats {
            total_packets: 12,
            total_bytes: 1200,
            non_ip_packets: 2,
            sampled_packets: 1,
            ..GlobalStats::default()
        },
        cumulative: GlobalStats::default(),
        sources: vec![SourceDelta {
            addr: "192.0.2.1".parse().unwrap(),
            stats: SourceStats {
                packets: 10,
                bytes: 1000,
                udp_packets: 10,
                ..SourceStats::default()
            },
            spread: Spread::default(),
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
    }
}

#[test]
fn counters_accumulate_per_interface_and_per_source_series_are_bounded() {
    let metrics = Metrics::new(0).unwrap();
    metrics.observe_interval("eth0", &interval());
    metrics.observe_interval("eth0", &interval());
    metrics.observe_interval("eth1", &interval());
    metrics.alert("eth0", "spike_pps", "start");
    let text = metrics.render();
    assert!(
        text.contains("netwatch_packets_total{iface=\"eth0\"} 24\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_packets_total{iface=\"eth1\"} 12\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_protocol_packets_total{iface=\"eth0\",protocol=\"udp\"} 20\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_blind_spot_packets_total{iface=\"eth0\",kind=\"non_ip\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_samples_total{iface=\"eth0\",outcome=\"sampled\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "netwatch_alerts_total{iface=\"eth0\",kind=\"spike_pps\",state=\"start\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("netwatch_source_packets_per_second{"),
        "top 0: {text}"
    );
    let metrics = Metrics::new(5).unwrap();
    metrics.observe_interval("eth0", &interval());
    metrics.observe_interval("eth1", &interval());
    let text = metrics.render();
    for iface in ["eth0", "eth1"] {
        assert!(
            text.contains(&format!(
                "netwatch_source_packets_per_second{{iface=\"{iface}\",source=\"192.0.2.1\"}} 10\n"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("netwatch_slotless_sources{iface=\"eth0\"} 0\n"),
        "{text}"
    );
    // Traffic without a slot: its top destinations and prefixes, for one interval.
    let traffic = |packets| crate::datapath::Traffic {
        packets,
        bytes: packets * 60,
    };
    metrics.observe_interval(
        "eth0",
        &Interval {
            slotless: crate::datapath::OverflowBreakdown {
                total: traffic(300),
                targets: vec![(
                    Target {
                        addr: std::net::IpAddr::from([10, 4, 0, 6]),
                        kind: TargetKind::Syn,
                        port: Some(80),
                    },
                    traffic(300),
                )],
                wide: vec![(
                    crate::datapath::SlotlessPrefix {
                        addr: std::net::IpAddr::from([198, 51, 0, 0]),
                        len: 16,
                    },
                    traffic(300),
                )],
                sources: 290,
                prefixes: 1,
                ..Default::default()
            },
            destinations: vec![crate::datapath::DestinationReading {
                addr: std::net::IpAddr::from([10, 0, 0, 6]),
                stats: SourceStats {
                    packets: 300,
                    bytes: 18_000,
                    ..Default::default()
                },
                sources: 290,
                senders: Vec::new(),
                port: None,
            }],
            ..interval()
        },
    );
    let text = metrics.render();
    for line in [
        "netwatch_slotless_sources{iface=\"eth0\"} 290\n",
        "netwatch_slotless_destination_packets_per_second{destination=\"10.4.0.6\",iface=\"eth0\",kind=\"syn\",port=\"80\"} 300\n",
        "netwatch_slotless_prefix_packets_per_second{iface=\"eth0\",prefix=\"198.51.0.0/16\"} 300\n",
        "netwatch_destination_packets_per_second{destination=\"10.0.0.6\",iface=\"eth0\"} 300\n",
        "netwatch_destination_bits_per_second{destination=\"10.0.0.6\",iface=\"eth0\"} 144000\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // The next interval of eth0 has no source: its series go, eth1's stay.
    metrics.observe_interval(
        "eth0",
        &Interval {
            sources: Vec::new(),
            ..interval()
        },
    );
    let text = metrics.render();
    assert!(
        !text.contains("netwatch_source_packets_per_second{iface=\"eth0\""),
        "{text}"
    );
    assert!(
        !text.contains("netwatch_slotless_destination_packets_per_second{"),
        "{text}"
    );
    assert!(
        !text.contains("netwatch_destination_packets_per_second{"),
        "{text}"
    );
    assert!(
        text.contains("netwatch_source_packets_per_second{iface=\"eth1\""),
        "{text}"
    );
}

/// The victims of open flood alerts have series of their own: the top N of the interface,
/// a victim of two alerts once (at its highest rate), gone when their alerts end.
#[test]
fn victims_of_open_alerts_are_shown_to_the_top_and_go_with_their_alerts() {
    use crate::detect::{
        alert::{Alert, AlertKind, AlertState, Severity, Subject, Victim},
        attack::AttackType,
    };
    let victim = |last: u8, pps: f64, attack, port| Victim {
        addr: std::net::IpAddr::from([172, 16, 0, last]),
        packets: pps as u64,
        pps,
        share: 0.5,
        attack,
        port,
        sampled: None,
    };
    let alert = |id: &str, state, victims| Alert {
        id: id.to_owned(),
        kind: AlertKind::SpikePps,
        state,
        severity: Severity::Warning,
        subject: Subject::Global,
        observed: 5000.0,
        baseline: Some(200.0),
        threshold: 800.0,
        at: Duration::from_secs(1_795_314_610),
        interval: Duration::from_secs(1),
        started: Duration::from_secs(1_795_314_600),
        peak: 5000.0,
        packets: 5000,
        bytes: 500_000,
        detail: None,
        contributors: Vec::new(),
        attack: None,
        members: None,
        slotless: None,
        victims,
        capture: None,
        intel: None,
        context: Default::default(),
        by_as: Vec::new(),
    };
    let metrics = Metrics::new(2).unwrap();
    let series = |metrics: &Metrics| -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|line| line.starts_with("netwatch_victim_packets_per_second{"))
            .map(str::to_owned)
            .collect()
    };
    metrics.victims(
        "eth0",
        &alert(
            "r-1",
            AlertState::Start,
            vec![
                victim(7, 4000.0, Some(AttackType::Reflection(123)), Some(40_000)),
                victim(8, 900.0, Some(AttackType::SynFlood), Some(443)),
                victim(9, 100.0, None, None),
            ],
        ),
    );
    metrics.victims(
        "eth0",
        &alert(
            "r-2",
            AlertState::Start,
            vec![victim(8, 1500.0, Some(AttackType::SynFlood), Some(443))],
        ),
    );
    assert_eq!(
        series(&metrics),
        [
            "netwatch_victim_packets_per_second{attack=\"reflection\",destination=\"172.16.0.7\",iface=\"eth0\",port=\"123\"} 4000",
            "netwatch_victim_packets_per_second{attack=\"syn_flood\",destination=\"172.16.0.8\",iface=\"eth0\",port=\"443\"} 1500",
        ]
    );
    metrics.victims("eth0", &alert("r-1", AlertState::End, Vec::new()));
    assert_eq!(
        series(&metrics),
        [
            "netwatch_victim_packets_per_second{attack=\"syn_flood\",destination=\"172.16.0.8\",iface=\"eth0\",port=\"443\"} 1500"
        ]
    );
    metrics.victims("eth0", &alert("r-2", AlertState::End, Vec::new()));
    assert!(series(&metrics).is_empty());
}
