//! Spikes over the EWMA baseline: a step alerts once with its start and end, a slow ramp,
//! a periodic load or a quiet host's small change say nothing; a partial interval starts
//! nothing and teaches nothing; the series behind the baselines are capped and expire.

use std::time::Duration;

use super::{
    SECOND, Traffic, detector, heavy_config, interval, quiet_link, run, spike_config, starts,
    summary, traffic,
};
use crate::detect::{
    alert::{AlertKind, AlertState, Subject},
    config::DetectConfig,
};

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
