//! Port scans, host sweeps and SYN floods per source, and the SYN floods of many sources of
//! one prefix as one alert.

use super::{Traffic, detector, quiet_config, run, summary, traffic};
use crate::detect::{
    alert::{AlertKind, AlertState, Severity},
    config::{DetectConfig, ScanConfig},
};

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
