//! What an alert says of its traffic: a reflection flood named by its service, the traffic
//! without a slot behind a global alert, and the senders a global alert names.

use std::time::Duration;

use super::{
    Traffic, detector, detector_with_threshold, heavy_config, interval, quiet_link, quiet_link_and,
    run, summary, traffic, victim,
};
use crate::{
    collect::Interval,
    detect::alert::{Alert, AlertKind, AlertState, Subject},
};

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
