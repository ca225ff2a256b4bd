//! Static thresholds: per prefix (IPv4 /24, IPv6 /64), per source, for the whole interface
//! and per destination; their severity, the evidence a rate rule needs, and the validation
//! of the settings.

use std::time::Duration;

use super::{Traffic, detector, interval, quiet_config, run, starts, summary, traffic, victim};
use crate::detect::{
    alert::{AlertKind, AlertState, Severity},
    attack,
    config::{DetectConfig, Limits, ScanConfig},
    detector::Detector,
    state::KnownState,
};

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
fn validation_names_fields() {
    let mut config = DetectConfig::default();
    config.spike.min_ratio = 0.5;
    assert_eq!(config.validate().unwrap_err().0, "detect.spike.min_ratio");
    let mut config = DetectConfig::default();
    config.source.bps = Some(-3.0);
    assert_eq!(config.validate().unwrap_err().0, "detect.source.bps");
    assert!(DetectConfig::default().validate().is_ok());
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
