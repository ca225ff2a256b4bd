//! Victims: every flood says whom it hits. New victims (local hosts with no baseline that
//! receive a large share), floods spread over the hosts of one local prefix (carpet bombing:
//! one alert on the prefix, whether its hosts each spike or each stay under every per-host
//! rule), the victims a sender's flood alert names, and busy benign traffic to many hosts
//! that names nobody.

use netwatch_common::SourceStats;

use super::*;
use crate::{
    collect::Interval,
    datapath::{DestinationReading, SlotlessPrefix, Traffic as Counted},
    detect::{alert::Subject, attack::AttackType, cidr::Cidr},
};

/// What a local host receives in one interval, and from which /24.
#[derive(Clone, Copy)]
enum Hit {
    /// UDP answers from this amplification port.
    Reflected(u16),
    /// UDP to high ports, not from an amplification port.
    Udp,
    /// TCP SYNs.
    Syn,
}

/// `addr` received `packets` of `hit` from senders in `from` (a /24).
fn received(addr: &str, packets: u64, hit: Hit, from: &str) -> DestinationReading {
    let mut stats = SourceStats {
        packets,
        bytes: packets * 100,
        ..SourceStats::default()
    };
    match hit {
        Hit::Reflected(port) => {
            stats.udp_packets = packets;
            stats.reflected_packets = packets;
            stats.reflected_port = u32::from(port);
        }
        Hit::Udp => stats.udp_packets = packets,
        Hit::Syn => {
            stats.tcp_packets = packets;
            stats.tcp_syn_packets = packets;
        }
    }
    DestinationReading {
        addr: addr.parse().unwrap(),
        stats,
        sources: 1,
        senders: vec![(
            SlotlessPrefix {
                addr: from.parse().unwrap(),
                len: 24,
            },
            Counted {
                packets,
                bytes: packets * 100,
            },
        )],
        port: None,
    }
}

/// One interval of the office: the quiet link's ten sources, its twenty local hosts
/// (172.16.1.1 to .20, TCP from 10.0.0.0/24), and `more` hosts hit, whose packets come from
/// sources without a slot (spoofed: only the interval's total has them).
fn office(i: usize, more: Vec<DestinationReading>) -> Interval {
    let sources: Vec<Traffic> = (1..=10)
        .map(|host| traffic(&format!("10.0.0.{host}"), 8 + (i as u64 + host) % 5))
        .collect();
    let mut interval = interval(&sources);
    interval.destinations = (1..=20)
        .map(|host| {
            received(
                &format!("172.16.1.{host}"),
                4 + (i as u64 + host) % 3,
                Hit::Syn,
                "10.0.0.0",
            )
        })
        .collect();
    for hit in more {
        interval.delta.total_packets += hit.stats.packets;
        interval.delta.total_bytes += hit.stats.bytes;
        match interval
            .destinations
            .iter_mut()
            .find(|d| d.addr == hit.addr)
        {
            Some(host) => *host = hit,
            None => interval.destinations.push(hit),
        }
    }
    interval
}

/// Runs `intervals` of the office, with `hits(i)` more in interval `i`; every alert.
fn run_office(
    detector: &mut Detector,
    intervals: usize,
    hits: impl Fn(usize) -> Vec<DestinationReading>,
) -> Vec<Alert> {
    (0..intervals)
        .flat_map(|i| {
            let at = Duration::from_secs(1_000 + i as u64 + 1);
            detector.observe(&office(i, hits(i)), at).alerts
        })
        .collect()
}

fn cidr(text: &str) -> Cidr {
    text.parse().unwrap()
}

#[test]
fn three_quiet_hosts_hit_at_once_are_each_named_with_their_attack() {
    let mut detector = detector(heavy_config());
    let alerts = run_office(&mut detector, 40, |i| {
        if i < 30 {
            return Vec::new();
        }
        vec![
            received("172.16.2.7", 5_000, Hit::Reflected(123), "198.51.100.0"),
            received("172.16.3.8", 4_000, Hit::Reflected(11211), "203.0.113.0"),
            received("172.16.4.9", 3_000, Hit::Syn, "192.0.2.0"),
        ]
    });
    let named: Vec<(String, Option<AttackType>, Option<String>)> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Start && a.subject.receives())
        .map(|a| {
            (
                a.subject.to_string(),
                a.attack.as_ref().map(|attack| attack.kind),
                a.detail.clone(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            (
                String::from("172.16.2.7"),
                Some(AttackType::Reflection(123)),
                Some(String::from("new victim: no baseline yet; ~1 sources"))
            ),
            (
                String::from("172.16.3.8"),
                Some(AttackType::Reflection(11211)),
                Some(String::from("new victim: no baseline yet; ~1 sources"))
            ),
            (
                String::from("172.16.4.9"),
                Some(AttackType::SynFlood),
                Some(String::from("new victim: no baseline yet; ~1 sources"))
            ),
        ],
        "{:#?}",
        summary(&alerts)
    );
    assert!(
        alerts
            .iter()
            .filter(|a| a.subject.receives())
            .all(|a| a.kind == AlertKind::HeavyHitter),
        "{:#?}",
        summary(&alerts)
    );
    // The interface's spike says whom it hit, largest first, with what each received.
    let global = alerts
        .iter()
        .find(|a| a.subject == Subject::Global && a.state == AlertState::Start)
        .expect("the link spikes");
    let victims: Vec<(String, Option<AttackType>)> = global
        .victims
        .iter()
        .map(|victim| (victim.addr.to_string(), victim.attack))
        .collect();
    assert_eq!(
        victims[..3],
        [
            (
                String::from("172.16.2.7"),
                Some(AttackType::Reflection(123))
            ),
            (
                String::from("172.16.3.8"),
                Some(AttackType::Reflection(11211))
            ),
            (String::from("172.16.4.9"), Some(AttackType::SynFlood)),
        ]
    );
    let share = global.victims[0].share;
    assert!((0.4..0.42).contains(&share), "{share}");
    // The victims' own alerts name their senders' prefixes.
    let first = alerts
        .iter()
        .find(|a| a.subject.to_string() == "172.16.2.7")
        .unwrap();
    assert_eq!(
        first.contributors[0].subject,
        Subject::Prefix(cidr("198.51.100.0/24"))
    );
}

#[test]
fn a_carpet_bomb_whose_hosts_each_spike_is_one_alert_on_their_prefix() {
    let mut detector = detector(heavy_config());
    let alerts = run_office(&mut detector, 50, |i| {
        if !(30..36).contains(&i) {
            return Vec::new();
        }
        (1..=20)
            .map(|host| received(&format!("172.16.1.{host}"), 400, Hit::Udp, "198.18.0.0"))
            .collect()
    });
    let on_hosts: Vec<_> = alerts
        .iter()
        .filter(|a| matches!(a.subject, Subject::Destination(_)))
        .collect();
    assert!(on_hosts.is_empty(), "{:#?}", summary(&alerts));
    let prefix: Vec<_> = alerts
        .iter()
        .filter(|a| a.subject == Subject::DestinationPrefix(cidr("172.16.1.0/24")))
        .collect();
    let states: Vec<AlertState> = prefix.iter().map(|a| a.state).collect();
    assert_eq!(
        states,
        [AlertState::Start, AlertState::End],
        "{:#?}",
        summary(&alerts)
    );
    let start = prefix[0];
    assert_eq!(start.kind, AlertKind::SpikePps);
    assert_eq!(start.members.as_ref().map(|m| m.count), Some(20));
    assert_eq!(
        start.attack.as_ref().map(|attack| attack.kind),
        Some(AttackType::UdpFlood)
    );
    assert!(
        start
            .detail
            .as_deref()
            .is_some_and(|detail| detail.starts_with("20 hosts hit")),
        "{:?}",
        start.detail
    );
    // Its top hosts, then the senders of them all.
    assert!(matches!(
        start.contributors[0].subject,
        Subject::Destination(_)
    ));
    assert!(
        start
            .contributors
            .iter()
            .any(|c| c.subject == Subject::Prefix(cidr("198.18.0.0/24")))
    );
    // No more lines than the event needs: the link's and the prefix's.
    assert!(alerts.len() <= 4, "{:#?}", summary(&alerts));
}

#[test]
fn a_carpet_bomb_under_every_per_host_rule_still_alerts_on_its_prefix() {
    let mut detector = detector(heavy_config());
    // 80 pkt/s a host: under the spike's 100 pkt/s floor, 20 times the prefix's baseline.
    let alerts = run_office(&mut detector, 50, |i| {
        if !(30..36).contains(&i) {
            return Vec::new();
        }
        (1..=20)
            .map(|host| received(&format!("172.16.1.{host}"), 80, Hit::Udp, "198.18.0.0"))
            .collect()
    });
    assert!(
        alerts
            .iter()
            .all(|a| !matches!(a.subject, Subject::Destination(_))),
        "{:#?}",
        summary(&alerts)
    );
    let prefix: Vec<(AlertKind, AlertState)> = alerts
        .iter()
        .filter(|a| a.subject == Subject::DestinationPrefix(cidr("172.16.1.0/24")))
        .map(|a| (a.kind, a.state))
        .collect();
    assert_eq!(
        prefix,
        [
            (AlertKind::SpikePps, AlertState::Start),
            (AlertKind::SpikePps, AlertState::End)
        ],
        "{:#?}",
        summary(&alerts)
    );
}

#[test]
fn busy_benign_traffic_to_many_hosts_names_nobody() {
    let mut detector = detector(heavy_config());
    // 200 hosts over ten /24s, each a few dozen packets an interval, some coming and going.
    let alerts = run_office(&mut detector, 90, |i| {
        (0..200u64)
            .filter(|host| !(host + i as u64).is_multiple_of(7))
            .map(|host| {
                received(
                    &format!("172.16.{}.{}", 10 + host / 20, 1 + host % 20),
                    30 + (host * 7 + i as u64 * 3) % 25,
                    Hit::Syn,
                    "10.0.0.0",
                )
            })
            .collect()
    });
    assert!(alerts.is_empty(), "{:#?}", summary(&alerts));
}

#[test]
fn a_source_flood_names_the_hosts_its_prefix_sent_to() {
    let mut detector = detector(DetectConfig {
        source: Limits {
            pps: Some(1_000.0),
            bps: None,
        },
        ..quiet_config()
    });
    let mut interval = office(0, vec![received("172.16.1.3", 4_000, Hit::Udp, "10.0.0.0")]);
    interval.sources[0].stats.packets = 4_000;
    let alerts = detector
        .observe(&interval, Duration::from_secs(1_001))
        .alerts;
    let source = alerts
        .iter()
        .find(|a| a.subject.to_string() == "10.0.0.1")
        .expect("the source floods");
    // The office's other hosts hear from 10.0.0.0/24 too, a few packets each: after it.
    assert_eq!(source.victims[0].addr.to_string(), "172.16.1.3");
    assert!(source.victims[1..].iter().all(|victim| victim.packets < 10));
    assert_eq!(source.victims[0].attack, Some(AttackType::UdpFlood));
    assert_eq!(source.victims[0].share, 1.0);
}

#[test]
fn a_new_victim_over_its_limit_is_named_once() {
    let mut detector = detector(DetectConfig {
        destination: Limits {
            pps: Some(1_000.0),
            bps: None,
        },
        ..heavy_config()
    });
    let alerts = run_office(&mut detector, 32, |i| {
        if i < 30 {
            return Vec::new();
        }
        vec![received(
            "172.16.2.7",
            5_000,
            Hit::Reflected(123),
            "198.51.100.0",
        )]
    });
    let named: Vec<(AlertKind, AlertState)> = alerts
        .iter()
        .filter(|a| a.subject.to_string() == "172.16.2.7")
        .map(|a| (a.kind, a.state))
        .collect();
    assert_eq!(
        named,
        [(AlertKind::ThresholdPps, AlertState::Start)],
        "{:#?}",
        summary(&alerts)
    );
}

/// With no local network, the kernel's sample of every destination names a flood's victims
/// (their numbers marked as estimates), but no destination is a subject of its own: a
/// sampled host never raises an alert, new victim or otherwise.
#[test]
fn sampled_destinations_name_victims_and_raise_no_alert_of_their_own() {
    let mut detector = detector(heavy_config());
    let alerts: Vec<Alert> = (0..40)
        .flat_map(|i| {
            let hits = if i < 30 {
                Vec::new()
            } else {
                vec![received("172.16.4.9", 3_000, Hit::Syn, "192.0.2.0")]
            };
            let mut interval = office(i, hits);
            interval.destination_count = crate::datapath::DestinationCount::Sampled(16);
            for host in &mut interval.destinations {
                host.port = Some(443);
            }
            let at = Duration::from_secs(1_000 + i as u64 + 1);
            detector.observe(&interval, at).alerts
        })
        .collect();
    assert!(
        alerts.iter().all(|a| !a.subject.receives()),
        "{:#?}",
        summary(&alerts)
    );
    let global = alerts
        .iter()
        .find(|a| a.subject == Subject::Global && a.state == AlertState::Start)
        .expect("the link spikes");
    let victim = &global.victims[0];
    assert_eq!(
        (
            victim.addr.to_string(),
            victim.attack,
            victim.port,
            victim.sampled
        ),
        (
            String::from("172.16.4.9"),
            Some(AttackType::SynFlood),
            Some(443),
            Some(16)
        )
    );
}
