//! Events and their lines: the cap on an interval's alert lines (and what it leaves out), and
//! the kernel's early events, started at once and confirmed or ended by the interval.

use std::time::Duration;

use super::{
    SECOND, Traffic, detector, detector_with_threshold, interval, quiet_config, run, summary,
    traffic, unknown_config,
};
use crate::detect::{
    alert::{AlertKind, AlertState, Subject},
    config::{DetectConfig, Limits},
};

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
