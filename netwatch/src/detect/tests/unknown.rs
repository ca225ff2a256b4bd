//! Unknown sources: learning, then a new source alerts once; the allowlist; the known set
//! kept across a restart; a source that floods while netwatch learns is not learned.

use std::{net::IpAddr, time::Duration};

use super::{
    Traffic, detector, heavy_config_learning, interval, quiet_link, quiet_link_and, run, starts,
    summary, traffic, unknown_config,
};
use crate::detect::{
    alert::{AlertKind, AlertState},
    detector::Detector,
    state::KnownChange,
};

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
