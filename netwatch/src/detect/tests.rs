//! Detection rules against synthetic interval series.

use std::{net::IpAddr, time::Duration};

use netwatch_common::{GlobalStats, SourceStats};

use super::*;
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
}

fn traffic(addr: &str, packets: u64) -> Traffic {
    Traffic {
        addr: addr.parse().unwrap(),
        packets,
        syn: 0,
        ports: 0,
        hosts: 1,
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
                stats: SourceStats {
                    packets: t.packets,
                    bytes: t.packets * 100,
                    tcp_packets: t.packets,
                    tcp_syn_packets: t.syn,
                    ..SourceStats::default()
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
