//! Heavy hitters: a new source or prefix with no baseline that sends a large share of the
//! traffic is named, and the global alert says who; a new busy destination is none.

use std::{net::IpAddr, time::Duration};

use super::{
    detector, heavy_config, heavy_config_learning, interval, quiet_config, quiet_link,
    quiet_link_and, run, starts, summary, traffic, victim,
};
use crate::detect::{
    alert::{AlertKind, AlertState, Subject},
    attack,
    config::{DetectConfig, HeavyConfig, SpikeConfig},
};

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
fn a_new_busy_destination_is_a_new_victim_not_a_sender() {
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
    let receivers: Vec<(AlertKind, String, Option<String>)> = alerts
        .iter()
        .filter(|alert| alert.subject.receives())
        .map(|alert| (alert.kind, alert.subject.to_string(), alert.detail.clone()))
        .collect();
    assert_eq!(
        receivers,
        [(
            AlertKind::HeavyHitter,
            String::from("192.0.2.5"),
            Some(String::from("new victim: no baseline yet; ~2000 sources"))
        )],
        "{alerts:?}"
    );
}
