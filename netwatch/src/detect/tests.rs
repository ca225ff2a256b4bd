//! Detection rules against synthetic interval series.

use std::{net::IpAddr, time::Duration};

use netwatch_common::{GlobalStats, SourceStats};

use super::{
    alert::{Alert, AlertKind, AlertState, Severity, Subject},
    *,
};
use crate::{
    collect::{Interval, SourceDelta, Volume},
    datapath::Spread,
};

const SECOND: Duration = Duration::from_secs(1);

/// One source's traffic in one interval.
#[derive(Clone, Copy)]
struct Traffic {
    addr: IpAddr,
    packets: u64,
    syn: u64,
    ports: u32,
    hosts: u32,
    /// Non-zero: UDP answers from this amplification port, not TCP.
    reflected_port: u16,
}

fn traffic(addr: &str, packets: u64) -> Traffic {
    Traffic {
        addr: addr.parse().unwrap(),
        packets,
        syn: 0,
        ports: 0,
        hosts: 1,
        reflected_port: 0,
    }
}

fn interval(sources: &[Traffic]) -> Interval {
    let mut delta = GlobalStats::default();
    let sources: Vec<SourceDelta> = sources
        .iter()
        .filter(|t| t.packets > 0)
        .map(|t| {
            delta.total_packets += t.packets;
            delta.total_bytes += t.packets * 100;
            SourceDelta {
                addr: t.addr,
                stats: if t.reflected_port == 0 {
                    SourceStats {
                        packets: t.packets,
                        bytes: t.packets * 100,
                        tcp_packets: t.packets,
                        tcp_syn_packets: t.syn,
                        ..SourceStats::default()
                    }
                } else {
                    SourceStats {
                        packets: t.packets,
                        bytes: t.packets * 100,
                        udp_packets: t.packets,
                        reflected_packets: t.packets,
                        reflected_port: u32::from(t.reflected_port),
                        ..SourceStats::default()
                    }
                },
                spread: Spread {
                    ports: t.ports,
                    hosts: t.hosts,
                },
            }
        })
        .collect();
    Interval {
        elapsed: SECOND,
        delta,
        cumulative: GlobalStats::default(),
        tracked_sources: sources.len(),
        sources,
        evicted_sources: 0,
        unattributed: Volume::default(),
        unattributed_before: Volume::default(),
        overflow_reflected_port: 0,
        slotless: Default::default(),
        destinations: Vec::new(),
        destination_other: Default::default(),
    }
}

/// Detection with only the rule under test on.
fn quiet_config() -> DetectConfig {
    DetectConfig {
        spike: SpikeConfig {
            enabled: false,
            ..SpikeConfig::default()
        },
        unknown: UnknownConfig {
            enabled: false,
            ..UnknownConfig::default()
        },
        scan: ScanConfig {
            syn_pps: None,
            ports: None,
            hosts: None,
            ..ScanConfig::default()
        },
        heavy: HeavyConfig {
            enabled: false,
            ..HeavyConfig::default()
        },
        ..DetectConfig::default()
    }
}

fn spike_config() -> DetectConfig {
    DetectConfig {
        spike: SpikeConfig {
            enabled: true,
            warmup: 20,
            ..SpikeConfig::default()
        },
        ..quiet_config()
    }
}

/// Runs the series (one slice of traffic per interval) and returns every alert.
fn run(detector: &mut Detector, series: impl IntoIterator<Item = Vec<Traffic>>) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, sources) in series.into_iter().enumerate() {
        let at = Duration::from_secs(1_000 + i as u64 + 1);
        alerts.extend(detector.observe(&interval(&sources), at).alerts);
    }
    alerts
}

fn detector(config: DetectConfig) -> Detector {
    Detector::new(config, KnownState::default(), String::from("t"))
}

fn summary(alerts: &[Alert]) -> Vec<(AlertKind, AlertState, String)> {
    alerts
        .iter()
        .map(|a| (a.kind, a.state, a.subject.to_string()))
        .collect()
}

#[test]
fn a_step_spike_alerts_once_with_start_and_end() {
    let mut detector = detector(spike_config());
    let host = "192.0.2.10";
    let mut series: Vec<Vec<Traffic>> = (0..60)
        .map(|i| vec![traffic(host, 200 + (i % 5) * 10)])
        .collect();
    series.extend((0..15).map(|_| vec![traffic(host, 5_000)]));
    series.extend((0..20).map(|i| vec![traffic(host, 200 + (i % 5) * 10)]));
    let alerts = run(&mut detector, series);
    // The source and its /24 carry the same traffic as the whole link: three subjects.
    let kinds = summary(&alerts);
    for subject in ["global", "192.0.2.0/24", "192.0.2.10"] {
        let of_subject: Vec<_> = kinds
            .iter()
            .filter(|(_, _, s)| s == subject)
            .map(|(kind, state, _)| (*kind, *state))
            .collect();
        assert_eq!(
            of_subject,
            vec![
                (AlertKind::SpikePps, AlertState::Start),
                (AlertKind::SpikePps, AlertState::Update),
                (AlertKind::SpikePps, AlertState::End),
            ],
            "{subject}: {kinds:?}"
        );
    }
    let end = alerts
        .iter()
        .find(|a| a.state == AlertState::End && a.subject == Subject::Global)
        .unwrap();
    assert_eq!(end.peak, 5_000.0);
    // 15 intervals of the flood and 3 quiet ones before the end.
    assert_eq!(end.packets, 15 * 5_000 + 200 + 210 + 220);
    let baseline = end.baseline.unwrap();
    assert!((200.0..=240.0).contains(&baseline), "{baseline}");
    let start = alerts.iter().find(|a| a.id == end.id).unwrap();
    assert_eq!(start.state, AlertState::Start);
    assert_eq!(start.started, Duration::from_secs(1_060));
}

#[test]
fn a_slow_ramp_does_not_alert() {
    let mut detector = detector(spike_config());
    let alerts = run(
        &mut detector,
        (0..600).map(|i| vec![traffic("192.0.2.20", 200 + i * 3)]),
    );
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
}

#[test]
fn a_periodic_load_does_not_alert_after_warm_up() {
    let mut detector = detector(spike_config());
    // Bursts of 2000 pps for 3 intervals out of every 10, 300 pps otherwise.
    let alerts = run(
        &mut detector,
        (0..600).map(|i| {
            let packets = if i % 10 < 3 { 2_000 } else { 300 };
            vec![traffic("192.0.2.30", packets)]
        }),
    );
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
}

#[test]
fn a_quiet_host_going_from_1_to_5_pps_says_nothing() {
    let mut detector = detector(spike_config());
    let mut series: Vec<Vec<Traffic>> = (0..60).map(|_| vec![traffic("192.0.2.40", 1)]).collect();
    series.extend((0..10).map(|_| vec![traffic("192.0.2.40", 5)]));
    let alerts = run(&mut detector, series);
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
}

#[test]
fn a_spread_flood_alerts_on_its_prefix_only() {
    let config = DetectConfig {
        source: Limits {
            pps: Some(100.0),
            bps: None,
        },
        prefix: Limits {
            pps: Some(5_000.0),
            bps: None,
        },
        ..quiet_config()
    };
    let mut detector = detector(config);
    let flood: Vec<Traffic> = (1..=200)
        .map(|i| traffic(&format!("198.51.100.{i}"), 50))
        .collect();
    let alerts = run(
        &mut detector,
        [flood.clone(), flood, vec![], vec![], vec![]],
    );
    assert_eq!(
        summary(&alerts),
        vec![
            (
                AlertKind::ThresholdPps,
                AlertState::Start,
                "198.51.100.0/24".into()
            ),
            (
                AlertKind::ThresholdPps,
                AlertState::End,
                "198.51.100.0/24".into()
            ),
        ]
    );
    assert_eq!(alerts[0].observed, 10_000.0);
    assert_eq!(alerts[1].packets, 20_000);
}

#[test]
fn ipv6_sources_aggregate_by_64() {
    let config = DetectConfig {
        prefix: Limits {
            pps: Some(150.0),
            bps: None,
        },
        ..quiet_config()
    };
    let mut detector = detector(config);
    let alerts = run(
        &mut detector,
        [vec![
            traffic("2001:db8:0:1::a", 100),
            traffic("2001:db8:0:1::b", 100),
            traffic("2001:db8:0:2::a", 100),
        ]],
    );
    assert_eq!(
        summary(&alerts),
        vec![(
            AlertKind::ThresholdPps,
            AlertState::Start,
            "2001:db8:0:1::/64".into()
        )]
    );
}

fn unknown_config(allowlist: &[&str]) -> DetectConfig {
    DetectConfig {
        unknown: UnknownConfig {
            enabled: true,
            learning: Duration::from_secs(10),
            min_packets: 10,
            allowlist: allowlist.iter().map(|net| net.parse().unwrap()).collect(),
        },
        ..quiet_config()
    }
}

#[test]
fn learning_then_a_new_source_alerts_once() {
    let mut detector = detector(unknown_config(&[]));
    let known = traffic("192.0.2.1", 20);
    let stranger = traffic("203.0.113.9", 4);
    let mut series: Vec<Vec<Traffic>> = (0..15).map(|_| vec![known]).collect();
    series.extend((0..10).map(|_| vec![known, stranger]));
    let alerts = run(&mut detector, series);
    assert_eq!(
        summary(&alerts),
        vec![(
            AlertKind::UnknownSource,
            AlertState::Instant,
            "203.0.113.9".into()
        )]
    );
    // Three intervals of 4 packets reach the minimum of 10.
    assert_eq!(alerts[0].packets, 12);
    assert_eq!(alerts[0].at, Duration::from_secs(1_018));
}

#[test]
fn an_allowlisted_new_source_does_not_alert() {
    let mut detector = detector(unknown_config(&["203.0.113.0/24", "2001:db8::/32"]));
    let mut series: Vec<Vec<Traffic>> = (0..15).map(|_| vec![traffic("192.0.2.1", 20)]).collect();
    series.extend((0..10).map(|_| vec![traffic("203.0.113.9", 40), traffic("2001:db8:5::1", 40)]));
    let alerts = run(&mut detector, series);
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
}

#[test]
fn restart_keeps_the_known_set() {
    let dir = std::env::temp_dir().join(format!("netwatch-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("known.db");
    {
        let mut store = crate::store::Store::open(&path).unwrap();
        let mut detector = Detector::new(
            unknown_config(&[]),
            store.known_state().unwrap(),
            "a".into(),
        );
        for i in 0..5 {
            let at = Duration::from_secs(1_000 + i);
            let outcome = detector.observe(&interval(&[traffic("192.0.2.7", 30)]), at);
            store.apply(&outcome.known, at).unwrap();
        }
    }
    // Restarted well after the learning period: the learned source is still known, and
    // learning does not start again.
    let store = crate::store::Store::open(&path).unwrap();
    let mut detector = Detector::new(
        unknown_config(&[]),
        store.known_state().unwrap(),
        "b".into(),
    );
    let mut alerts = Vec::new();
    for i in 0..5 {
        let at = Duration::from_secs(5_000 + i);
        let outcome = detector.observe(
            &interval(&[traffic("192.0.2.7", 30), traffic("192.0.2.8", 30)]),
            at,
        );
        alerts.extend(outcome.alerts);
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        summary(&alerts),
        vec![(
            AlertKind::UnknownSource,
            AlertState::Instant,
            "192.0.2.8".into()
        )]
    );
}

#[test]
fn scans_and_syn_floods_alert_per_source() {
    let config = DetectConfig {
        scan: ScanConfig::default(),
        ..quiet_config()
    };
    let mut detector = detector(config);
    let scanner = Traffic {
        ports: 400,
        syn: 400,
        ..traffic("203.0.113.5", 400)
    };
    let sweeper = Traffic {
        hosts: 90,
        ..traffic("203.0.113.6", 90)
    };
    let syn_flood = Traffic {
        syn: 3_000,
        ports: 1,
        ..traffic("203.0.113.7", 3_000)
    };
    let normal = Traffic {
        ports: 20,
        hosts: 10,
        syn: 20,
        ..traffic("192.0.2.1", 500)
    };
    let busy = vec![scanner, sweeper, syn_flood, normal];
    let alerts = run(
        &mut detector,
        [busy.clone(), busy, vec![normal], vec![normal], vec![normal]],
    );
    let starts: Vec<_> = summary(&alerts)
        .into_iter()
        .filter(|(_, state, _)| *state == AlertState::Start)
        .collect();
    assert_eq!(
        starts,
        vec![
            (AlertKind::SynFlood, AlertState::Start, "203.0.113.7".into()),
            (AlertKind::PortScan, AlertState::Start, "203.0.113.5".into()),
            (
                AlertKind::HostSweep,
                AlertState::Start,
                "203.0.113.6".into()
            ),
        ]
    );
    assert_eq!(
        alerts.len(),
        6,
        "each event starts and ends: {:?}",
        summary(&alerts)
    );
    let flood = alerts
        .iter()
        .find(|a| a.kind == AlertKind::SynFlood)
        .unwrap();
    assert_eq!(flood.severity, Severity::Warning);
}

#[test]
fn severity_is_critical_at_ten_times_the_threshold() {
    let config = DetectConfig {
        global: Limits {
            pps: Some(100.0),
            bps: None,
        },
        ..quiet_config()
    };
    let mut detector = detector(config);
    let alerts = run(&mut detector, [vec![traffic("192.0.2.1", 1_500)]]);
    assert_eq!(alerts[0].severity, Severity::Critical);
}

#[test]
fn series_are_capped_and_the_cap_is_reported() {
    let config = DetectConfig {
        max_series: 10,
        ..spike_config()
    };
    let mut detector = detector(config);
    let many: Vec<Traffic> = (1..=20)
        .map(|i| traffic(&format!("10.{i}.0.1"), 5))
        .collect();
    let alerts = run(&mut detector, [many.clone(), many]);
    assert_eq!(detector.tracked_series(), 10);
    assert_eq!(
        summary(&alerts),
        vec![(
            AlertKind::TrackingCapacity,
            AlertState::Start,
            "global".into()
        )]
    );
}

#[test]
fn idle_series_expire() {
    let config = DetectConfig {
        idle_expiry: 5,
        ..spike_config()
    };
    let mut detector = detector(config);
    let mut series = vec![vec![traffic("192.0.2.1", 10)]];
    series.extend((0..6).map(|_| vec![]));
    run(&mut detector, series);
    assert_eq!(
        detector.tracked_series(),
        1,
        "only the global series is left"
    );
}

#[test]
fn validation_names_fields() {
    let mut config = DetectConfig::default();
    config.spike.min_ratio = 0.5;
    assert_eq!(config.validate().unwrap_err().0, "detect.spike.min_ratio");
    let mut config = DetectConfig::default();
    config.source.bps = Some(-3.0);
    assert_eq!(config.validate().unwrap_err().0, "detect.source.bps");
    assert!(DetectConfig::default().validate().is_ok());
}

/// Ten quiet hosts for `intervals` intervals.
fn quiet_link(intervals: usize) -> Vec<Vec<Traffic>> {
    (0..intervals)
        .map(|i| {
            (1..=10)
                .map(|host| traffic(&format!("10.0.0.{host}"), 8 + (i as u64 + host) % 5))
                .collect()
        })
        .collect()
}

/// [`quiet_link`] for `intervals` intervals, with `more` traffic in each.
fn quiet_link_and(intervals: usize, more: impl Fn() -> Vec<Traffic>) -> Vec<Vec<Traffic>> {
    quiet_link(intervals)
        .into_iter()
        .map(|mut interval| {
            interval.extend(more());
            interval
        })
        .collect()
}

/// Spikes and heavy hitters on, as by default, with a short warm-up.
fn heavy_config() -> DetectConfig {
    DetectConfig {
        heavy: HeavyConfig::default(),
        ..spike_config()
    }
}

/// [`heavy_config`] with unknown-source detection on, learning for `seconds`.
fn heavy_config_learning(seconds: u64) -> DetectConfig {
    DetectConfig {
        unknown: UnknownConfig {
            learning: Duration::from_secs(seconds),
            ..unknown_config(&[]).unknown
        },
        ..heavy_config()
    }
}

fn starts(alerts: &[Alert]) -> Vec<(AlertKind, String)> {
    alerts
        .iter()
        .filter(|a| matches!(a.state, AlertState::Start | AlertState::Instant))
        .map(|a| (a.kind, a.subject.to_string()))
        .collect()
}

#[test]
fn a_new_source_flooding_is_named_and_the_global_alert_says_who() {
    let mut detector = detector(heavy_config());
    let mut series = quiet_link(40);
    series.extend(quiet_link_and(10, || vec![traffic("198.51.100.66", 5_000)]));
    series.extend(quiet_link(10));
    let alerts = run(&mut detector, series);
    // The source is named by a rule of its own; its /24, all of it this one source, is not
    // a second alert.
    assert_eq!(
        starts(&alerts),
        vec![
            (AlertKind::SpikePps, "global".into()),
            (AlertKind::HeavyHitter, "198.51.100.66".into()),
        ]
    );
    let heavy = &alerts[1];
    assert_eq!(heavy.baseline, None);
    assert_eq!(heavy.observed, 5_000.0);
    assert_eq!(heavy.detail.as_deref(), Some("new source: no baseline yet"));
    let global = &alerts[0];
    let top = &global.contributors[0];
    assert_eq!(top.subject.to_string(), "198.51.100.66");
    assert!(top.new);
    assert!(top.share > 0.97, "{top:?}");
    assert!(
        top.excess_share.is_some_and(|share| share > 0.99),
        "{top:?}"
    );
    // Sources first, then prefixes, at most five of each.
    let prefixes: Vec<String> = global
        .contributors
        .iter()
        .filter(|c| matches!(c.subject, Subject::Prefix(_)))
        .map(|c| c.subject.to_string())
        .collect();
    assert_eq!(prefixes[0], "198.51.100.0/24");
    assert_eq!(global.contributors.len(), 5 + 2);
    let attack = global
        .attack
        .as_ref()
        .expect("a flood alert says what it is");
    assert_eq!(attack.kind, attack::AttackType::TcpFlood);
    // Both end, once.
    let ends = alerts.iter().filter(|a| a.state == AlertState::End).count();
    assert_eq!(ends, 2, "{:?}", summary(&alerts));
}

#[test]
fn a_prefix_of_new_sources_is_one_heavy_hitter_and_one_unknown_source_alert() {
    let mut detector = detector(heavy_config_learning(30));
    let mut series = quiet_link(40);
    series.extend(quiet_link_and(20, || {
        (1..=200)
            .map(|host| traffic(&format!("192.0.2.{host}"), 30))
            .collect()
    }));
    let alerts = run(&mut detector, series);
    assert_eq!(
        starts(&alerts),
        vec![
            (AlertKind::SpikePps, "global".into()),
            (AlertKind::HeavyHitter, "192.0.2.0/24".into()),
            (AlertKind::UnknownSource, "192.0.2.0/24".into()),
        ]
    );
    let unknown = alerts
        .iter()
        .find(|a| a.kind == AlertKind::UnknownSource)
        .unwrap();
    let members = unknown.members.as_ref().unwrap();
    assert_eq!(members.count, 200);
    assert_eq!(
        members.first,
        (1..=5)
            .map(|host| format!("192.0.2.{host}").parse().unwrap())
            .collect::<Vec<IpAddr>>()
    );
    assert_eq!(unknown.packets, 200 * 30);
    // The prefix alert names its sources.
    let heavy = alerts
        .iter()
        .find(|a| a.kind == AlertKind::HeavyHitter)
        .unwrap();
    assert_eq!(heavy.contributors.len(), 5);
    assert!(heavy.contributors.iter().all(|c| c.share == 0.005 && c.new));
}

#[test]
fn a_source_flooding_while_netwatch_learns_is_not_learned() {
    let mut detector = detector(heavy_config_learning(50));
    let mut series = quiet_link(40);
    series.extend(quiet_link_and(5, || vec![traffic("198.51.100.66", 5_000)]));
    // Quiet again while netwatch still learns: it is not learned then either. Learning ends
    // at 50 s; the flooder comes back quietly after it.
    series.extend(quiet_link_and(3, || vec![traffic("198.51.100.66", 5)]));
    series.extend(quiet_link(12));
    series.extend((0..3).map(|_| vec![traffic("198.51.100.66", 50)]));
    let mut known = Vec::new();
    let mut alerts = Vec::new();
    for (i, sources) in series.into_iter().enumerate() {
        let at = Duration::from_secs(1_000 + i as u64 + 1);
        let outcome = detector.observe(&interval(&sources), at);
        known.extend(outcome.known);
        alerts.extend(outcome.alerts);
    }
    let flooder: IpAddr = "198.51.100.66".parse().unwrap();
    assert!(!known.contains(&KnownChange::Learned(flooder)), "{known:?}");
    assert!(known.contains(&KnownChange::Alerted(flooder)), "{known:?}");
    assert!(
        starts(&alerts).contains(&(AlertKind::UnknownSource, "198.51.100.66".into())),
        "{:?}",
        summary(&alerts)
    );
}

#[test]
fn a_partial_interval_starts_nothing_and_teaches_nothing() {
    let mut detector = detector(heavy_config()).with_interval(SECOND);
    let mut alerts = run(&mut detector, quiet_link(40));
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
    // The last 8 ms of a run: 64 packets are 8,000 pkt/s.
    let mut sliver = interval(&[traffic("10.0.0.1", 64), traffic("198.51.100.9", 64)]);
    sliver.elapsed = Duration::from_millis(8);
    alerts.extend(detector.observe(&sliver, Duration::from_secs(1_041)).alerts);
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
    // A whole interval at that rate is a spike.
    let whole = interval(&[traffic("10.0.0.1", 8_000)]);
    let alerts = detector.observe(&whole, Duration::from_secs(1_042)).alerts;
    assert_eq!(
        starts(&alerts),
        vec![
            (AlertKind::SpikePps, "global".into()),
            (AlertKind::SpikePps, "10.0.0.0/24".into()),
            (AlertKind::SpikePps, "10.0.0.1".into()),
        ]
    );
}

#[test]
fn rate_rules_need_enough_packets() {
    let config = DetectConfig {
        global: Limits {
            pps: Some(100.0),
            bps: None,
        },
        scan: ScanConfig::default(),
        ..quiet_config()
    };
    let mut detector = detector(config);
    // Two SYNs in 2 ms are 1,000 syn/s; three packets in 10 ms are 300 pkt/s.
    let mut two_syns = interval(&[Traffic {
        syn: 2,
        ..traffic("192.0.2.1", 2)
    }]);
    two_syns.elapsed = Duration::from_millis(2);
    let mut three = interval(&[traffic("192.0.2.2", 3)]);
    three.elapsed = Duration::from_millis(10);
    // 150 SYNs in 100 ms are 1,500 syn/s, under the 200 SYNs a flood needs.
    let mut short_burst = interval(&[Traffic {
        syn: 150,
        ..traffic("192.0.2.3", 150)
    }]);
    short_burst.elapsed = Duration::from_millis(100);
    for (i, sample) in [two_syns, three, short_burst].iter().enumerate() {
        let alerts = detector
            .observe(sample, Duration::from_secs(1_000 + i as u64))
            .alerts;
        let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
        assert!(
            !kinds.contains(&AlertKind::SynFlood),
            "interval {i}: {kinds:?}"
        );
        if i < 2 {
            assert!(alerts.is_empty(), "interval {i}: {:?}", summary(&alerts));
        }
    }
    // 300 SYNs in one second are a flood of a source of 300 syn/s: under 500, still none;
    // 600 are.
    let flood = interval(&[Traffic {
        syn: 600,
        ..traffic("192.0.2.4", 600)
    }]);
    let alerts = detector.observe(&flood, Duration::from_secs(1_010)).alerts;
    assert!(
        starts(&alerts).contains(&(AlertKind::SynFlood, "192.0.2.4".into())),
        "{:?}",
        summary(&alerts)
    );
    let syn = alerts
        .iter()
        .find(|a| a.kind == AlertKind::SynFlood)
        .unwrap();
    assert_eq!(
        syn.attack.as_ref().map(|a| a.kind),
        Some(attack::AttackType::SynFlood)
    );
}

#[test]
fn syn_floods_from_many_sources_of_a_prefix_are_one_alert() {
    let config = DetectConfig {
        scan: ScanConfig::default(),
        ..quiet_config()
    };
    let mut detector = detector(config);
    let flood: Vec<Traffic> = (1..=40)
        .map(|host| Traffic {
            syn: 800,
            ..traffic(&format!("203.0.113.{host}"), 800)
        })
        .collect();
    let alerts = run(
        &mut detector,
        [flood.clone(), flood, vec![], vec![], vec![]],
    );
    assert_eq!(
        summary(&alerts),
        vec![
            (
                AlertKind::SynFlood,
                AlertState::Start,
                "203.0.113.0/24".into()
            ),
            (
                AlertKind::SynFlood,
                AlertState::End,
                "203.0.113.0/24".into()
            ),
        ]
    );
    let start = &alerts[0];
    assert_eq!(start.members.as_ref().map(|m| m.count), Some(40));
    assert_eq!(start.observed, 40.0 * 800.0);
    assert_eq!(start.packets, 40 * 800);
}

#[test]
fn a_reflection_flood_is_named_by_its_service() {
    let mut detector = detector(heavy_config());
    let mut series = quiet_link(40);
    // 300 NTP servers answer one host, then 300 memcached servers do.
    for port in [123, 11211] {
        series.extend(quiet_link_and(5, || {
            (0..300)
                .map(|i| Traffic {
                    reflected_port: port,
                    ..traffic(&format!("100.{}.{}.1", i / 100, i % 100), 20)
                })
                .collect()
        }));
        series.extend(quiet_link(10));
    }
    let alerts = run(&mut detector, series);
    let global: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.subject == Subject::Global && a.kind == AlertKind::SpikePps)
        .collect();
    let types: Vec<(AlertState, String)> = global
        .iter()
        .map(|a| {
            (
                a.state,
                a.attack
                    .as_ref()
                    .map(|a| a.kind.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            (
                AlertState::Start,
                "NTP reflection (UDP from port 123)".into()
            ),
            (AlertState::End, "NTP reflection (UDP from port 123)".into()),
            (
                AlertState::Start,
                "MEMCACHED reflection (UDP from port 11211)".into()
            ),
            (
                AlertState::End,
                "MEMCACHED reflection (UDP from port 11211)".into()
            ),
        ]
    );
    assert!(global[0].attack.as_ref().unwrap().share > 0.9);
    // No reflector alone is a heavy hitter.
    assert!(
        !alerts
            .iter()
            .any(|a| matches!(a.subject, Subject::Source(_))),
        "{:?}",
        summary(&alerts)
    );
}

#[test]
fn the_alert_lines_of_an_interval_are_capped_and_counted() {
    let config = DetectConfig {
        max_alerts: 20,
        ..unknown_config(&[])
    };
    let mut detector = detector(config);
    let mut alerts = run(
        &mut detector,
        (0..15).map(|_| vec![traffic("192.0.2.1", 20)]),
    );
    // 300 new sources, each in a network of its own: 300 unknown-source alerts.
    let strangers: Vec<Traffic> = (0..300)
        .map(|i| traffic(&format!("100.{}.{}.1", i / 200, i % 200), 20))
        .collect();
    let at = Duration::from_secs(2_000);
    let mut outcome = detector.observe(&interval(&strangers), at);
    assert_eq!(outcome.alerts.len(), 300);
    assert_eq!(outcome.known.len(), 300);
    detector.cap(&mut outcome, at, SECOND);
    // The 280 left out are not taken as known: they stay unknown, and alert again.
    assert_eq!(
        outcome.known.len(),
        20,
        "only the reported ones are known now"
    );
    let reported: Vec<Subject> = outcome.alerts.iter().map(|a| a.subject).collect();
    alerts.extend(outcome.alerts);
    assert_eq!(alerts.len(), 21);
    let last = alerts.last().unwrap();
    assert_eq!(last.kind, AlertKind::Suppressed);
    assert_eq!(last.observed, 280.0);
    assert_eq!(last.detail.as_deref(), Some("unknown_source 280"));
    // Their next packet alerts (capped again, twenty at a time, until all are told).
    let mut told = reported.len() - 1;
    for second in 1..=14 {
        let at = at + Duration::from_secs(second);
        let mut outcome = detector.observe(&interval(&strangers), at);
        detector.cap(&mut outcome, at, SECOND);
        told += outcome
            .alerts
            .iter()
            .filter(|a| a.kind == AlertKind::UnknownSource)
            .count();
    }
    assert_eq!(told, 300, "every unknown source is told once");
}

#[test]
fn a_capped_start_is_forgotten_so_no_end_follows_it() {
    let config = DetectConfig {
        max_alerts: 1,
        source: Limits {
            pps: Some(100.0),
            bps: None,
        },
        ..quiet_config()
    };
    let mut detector = detector(config);
    let busy = vec![traffic("192.0.2.1", 500), traffic("198.51.100.1", 900)];
    let mut lines = Vec::new();
    for (i, sources) in [busy.clone(), vec![], vec![], vec![], vec![]]
        .iter()
        .enumerate()
    {
        let at = Duration::from_secs(1_000 + i as u64);
        let mut outcome = detector.observe(&interval(sources), at);
        detector.cap(&mut outcome, at, SECOND);
        lines.extend(outcome.alerts);
    }
    assert_eq!(
        summary(&lines),
        vec![
            (
                AlertKind::ThresholdPps,
                AlertState::Start,
                "192.0.2.1".into()
            ),
            (AlertKind::Suppressed, AlertState::Instant, "global".into()),
            (AlertKind::ThresholdPps, AlertState::End, "192.0.2.1".into()),
        ]
    );
}

/// An interval of `legit` packets from one source with a slot and `spoofed` packets without
/// a slot from `sources` addresses, all to 10.4.0.6 UDP port 443.
fn spoofed_flood(legit: u64, spoofed: u64, sources: u32) -> Interval {
    use crate::datapath::{OverflowBreakdown, SlotlessPrefix, Target, TargetKind, Traffic};
    let mut interval = interval(&[traffic("192.0.2.1", legit)]);
    interval.delta.total_packets += spoofed;
    interval.delta.total_bytes += spoofed * 100;
    interval.delta.overflow_packets = spoofed;
    interval.delta.overflow_bytes = spoofed * 100;
    interval.delta.overflow_udp_packets = spoofed;
    let traffic = |packets| Traffic {
        packets,
        bytes: packets * 100,
    };
    interval.slotless = OverflowBreakdown {
        total: traffic(spoofed),
        wide: vec![(
            SlotlessPrefix {
                addr: "198.51.0.0".parse().unwrap(),
                len: 16,
            },
            traffic(spoofed / 10),
        )],
        wide_other: traffic(spoofed - spoofed / 10),
        narrow_other: traffic(spoofed),
        targets: vec![(
            Target {
                addr: "10.4.0.6".parse().unwrap(),
                kind: TargetKind::Udp,
                port: Some(443),
            },
            traffic(spoofed),
        )],
        sources,
        prefixes: 140,
        ..OverflowBreakdown::default()
    };
    interval
}

#[test]
fn a_global_alert_says_what_the_traffic_without_a_slot_was() {
    let mut detector = detector_with_threshold();
    let at = Duration::from_secs(1_001);
    let alerts = detector
        .observe(&spoofed_flood(100, 5_000, 4_900), at)
        .alerts;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let evidence = alerts[0].slotless.as_ref().expect("slot-less evidence");
    assert_eq!(evidence.packets, 5_000);
    assert!((evidence.share - 5_000.0 / 5_100.0).abs() < 1e-9);
    assert!(evidence.random_sources);
    assert_eq!(evidence.targets.len(), 1);
    assert_eq!(evidence.targets[0].what.to_string(), "10.4.0.6 udp:443");
    assert!((evidence.targets[0].share - 1.0).abs() < 1e-9);
    assert_eq!(evidence.prefixes_top[0].what.to_string(), "198.51.0.0/16");
    assert_eq!(
        alerts[0]
            .attack
            .as_ref()
            .map(|attack| attack.kind.to_string()),
        Some(String::from("UDP flood"))
    );

    // A few hundred sources sending many packets each are not random.
    let mut detector = detector_with_threshold();
    let alerts = detector.observe(&spoofed_flood(100, 5_000, 300), at).alerts;
    assert!(!alerts[0].slotless.as_ref().unwrap().random_sources);

    // Slot-less traffic under a tenth of the packets is not evidence enough to show.
    let mut detector = detector_with_threshold();
    let alerts = detector.observe(&spoofed_flood(5_000, 400, 400), at).alerts;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].slotless, None);
}

fn detector_with_threshold() -> Detector {
    detector(DetectConfig {
        global: Limits {
            pps: Some(1_000.0),
            bps: None,
        },
        ..quiet_config()
    })
}

/// An interval in which the local host 192.0.2.5 receives `packets` SYNs from `sources`
/// sources, most of them from 203.0.113.0/24.
fn victim(packets: u64, sources: u32) -> Interval {
    use crate::datapath::{DestinationReading, SlotlessPrefix, Traffic};
    let mut interval = interval(&[traffic("198.51.100.1", 50)]);
    interval.delta.total_packets += packets;
    interval.destinations = vec![DestinationReading {
        addr: "192.0.2.5".parse().unwrap(),
        stats: SourceStats {
            packets,
            bytes: packets * 60,
            tcp_packets: packets,
            tcp_syn_packets: packets,
            ..SourceStats::default()
        },
        sources,
        senders: vec![(
            SlotlessPrefix {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24,
            },
            Traffic {
                packets: packets * 9 / 10,
                bytes: packets * 54,
            },
        )],
    }];
    interval
}

#[test]
fn a_destination_over_its_limit_is_named_with_its_attack_and_senders() {
    let config = DetectConfig {
        destination: Limits {
            pps: Some(1_000.0),
            bps: None,
        },
        ..quiet_config()
    };
    let mut detector = detector(config.clone());
    let at = Duration::from_secs(1_001);
    let alerts = detector.observe(&victim(5_000, 2_000), at).alerts;
    assert_eq!(
        summary(&alerts),
        vec![(
            AlertKind::ThresholdPps,
            AlertState::Start,
            "192.0.2.5".into()
        )]
    );
    let alert = &alerts[0];
    assert_eq!(alert.subject.scope(), "destination");
    assert_eq!(alert.detail.as_deref(), Some("~2000 sources"));
    assert_eq!(
        alert.attack.as_ref().map(|attack| attack.kind.to_string()),
        Some(String::from("SYN flood"))
    );
    assert_eq!(alert.contributors.len(), 1);
    assert_eq!(alert.contributors[0].subject.to_string(), "203.0.113.0/24");
    assert!((alert.contributors[0].share - 0.9).abs() < 1e-9);
    // Under its limit: nothing. The interface's sum (`all`) judges no destination.
    let mut detector = Detector::new(config.clone(), KnownState::default(), "t".into());
    assert!(detector.observe(&victim(500, 200), at).alerts.is_empty());
    let mut combined = Detector::new(config, KnownState::default(), "t".into()).global_only();
    assert!(
        combined
            .observe(&victim(5_000, 2_000), at)
            .alerts
            .is_empty()
    );
}

#[test]
fn a_new_busy_destination_is_no_heavy_hitter() {
    let config = DetectConfig {
        heavy: HeavyConfig {
            enabled: true,
            ..HeavyConfig::default()
        },
        spike: SpikeConfig {
            enabled: false,
            warmup: 3,
            ..SpikeConfig::default()
        },
        ..quiet_config()
    };
    let mut detector = detector(config);
    for i in 0..5 {
        let at = Duration::from_secs(1_001 + i);
        detector.observe(&interval(&[traffic("198.51.100.1", 50)]), at);
    }
    let alerts = detector
        .observe(&victim(5_000, 2_000), Duration::from_secs(1_010))
        .alerts;
    assert!(
        alerts
            .iter()
            .all(|alert| alert.subject.scope() != "destination"),
        "{alerts:?}"
    );
}

#[test]
fn the_kernels_early_event_starts_the_alert_and_the_interval_confirms_or_ends_it() {
    let mut watch = detector_with_threshold();
    assert_eq!(
        watch.early_limit(),
        Some((AlertKind::ThresholdPps, 1_000.0))
    );
    let at = Duration::from_secs(1_000) + Duration::from_millis(430);
    // Thin evidence, or under the limit: nothing.
    assert!(watch.early(10, Duration::from_millis(5), at).is_none());
    assert!(watch.early(20, Duration::from_millis(40), at).is_none());
    let alert = watch
        .early(40, Duration::from_millis(20), at)
        .expect("an early start");
    assert_eq!(
        (alert.kind, alert.state, alert.subject),
        (AlertKind::ThresholdPps, AlertState::Start, Subject::Global)
    );
    assert!((alert.observed - 2_000.0).abs() < 1e-6);
    assert!(
        alert
            .detail
            .as_deref()
            .unwrap_or("")
            .starts_with("early: 40 packets in 20.0 ms")
    );
    // Once open, the kernel's next events add nothing.
    assert!(watch.early(400, Duration::from_millis(20), at).is_none());
    // The interval confirms it: an update of the same event, with what the traffic is, and
    // no second start.
    let confirmed = watch
        .observe(
            &interval(&[traffic("192.0.2.1", 3_000)]),
            Duration::from_secs(1_001),
        )
        .alerts;
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(confirmed[0].id, alert.id);
    assert_eq!(confirmed[0].state, AlertState::Update);
    assert_eq!(
        confirmed[0].detail.as_deref(),
        Some("confirmed by the interval")
    );
    assert!(confirmed[0].attack.is_some());

    // Not confirmed: it ends at the interval's reading.
    let mut watch = detector_with_threshold();
    let alert = watch
        .early(40, Duration::from_millis(20), at)
        .expect("an early start");
    let ended = watch
        .observe(
            &interval(&[traffic("192.0.2.1", 100)]),
            Duration::from_secs(1_001),
        )
        .alerts;
    assert_eq!(
        summary(&ended),
        vec![(AlertKind::ThresholdPps, AlertState::End, "global".into())]
    );
    assert_eq!(ended[0].id, alert.id);
    assert_eq!(
        ended[0].detail.as_deref(),
        Some("not confirmed by the interval")
    );

    // No limit without a threshold or a warm baseline; none on the sum of interfaces.
    assert_eq!(detector(quiet_config()).early_limit(), None);
    assert_eq!(detector_with_threshold().global_only().early_limit(), None);
}

#[test]
fn a_global_alert_names_senders_never_the_victim() {
    let mut interval = victim(5_000, 2_000);
    interval.sources[0].stats.packets = 400;
    let alerts = detector_with_threshold()
        .observe(&interval, Duration::from_secs(1_001))
        .alerts;
    let global = alerts
        .iter()
        .find(|alert| alert.subject == Subject::Global)
        .expect("a global alert");
    assert!(!global.contributors.is_empty());
    assert!(
        global
            .contributors
            .iter()
            .all(|c| matches!(c.subject, Subject::Source(_) | Subject::Prefix(_))),
        "{:?}",
        global.contributors
    );
}

#[test]
fn an_early_event_said_late_in_an_interval_is_decided_at_the_next_reading() {
    let mut watch = detector_with_threshold();
    // Said 0.2 s before the end of the interval that ends at 1,001 s.
    let late = Duration::from_millis(1_000_800);
    let alert = watch
        .early(40, Duration::from_millis(20), late)
        .expect("an early start");
    let quiet = watch
        .observe(
            &interval(&[traffic("192.0.2.1", 300)]),
            Duration::from_secs(1_001),
        )
        .alerts;
    assert!(quiet.is_empty(), "{quiet:?}");
    let confirmed = watch
        .observe(
            &interval(&[traffic("192.0.2.1", 3_000)]),
            Duration::from_secs(1_002),
        )
        .alerts;
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(
        (confirmed[0].id.as_str(), confirmed[0].state),
        (alert.id.as_str(), AlertState::Update)
    );
}
