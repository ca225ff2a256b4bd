//! Victims named with no tuning: captures of an office network written here (local hosts in
//! 172.16.0.0/16 that hear from the internet, then attacks), replayed through the real binary
//! and the real XDP program with the default configuration plus `[networks] local`. Floods
//! against quiet hosts name each host and its attack; a carpet bomb over a /24 is one alert
//! on the /24, whether its hosts each spike or each stay under every per-host rule; busy
//! benign traffic to many hosts names nobody. On a live link, a flood against one host among
//! several that receive as usual names that host in the interval that counted it.

use std::{fs, net::Ipv4Addr, time::Duration};

use netwatch_tests::{
    ScratchDir,
    daemon::Daemon,
    frames::{ACK, FrameBuilder, PSH, SYN, Transport},
    netns::VethPair,
    privileged,
    replay::{BASE, alerts_of, stream, write_case},
};
use serde_json::Value;

const CONFIG: &str = "[networks]\nlocal = [\"172.16.0.0/16\"]\n";

/// The office's normal traffic for seconds `0..seconds`: each host of `hosts` hears from
/// one server of its own at `pps` frames a second (TCP data and ICMP).
fn office(frames: &mut Vec<(Duration, Vec<u8>)>, hosts: &[[u8; 4]], pps: u64, seconds: u64) {
    for host in hosts.iter().copied() {
        let server = [10, host[1], host[2], host[3]];
        stream(frames, 0..seconds, pps, move |i| {
            let builder = FrameBuilder::ipv4(server).to_ipv4(host);
            if i % 4 == 0 {
                builder.transport(Transport::Icmp).payload(32)
            } else {
                builder.transport(Transport::Tcp(PSH | ACK)).payload(300)
            }
        });
    }
}

/// Twenty office hosts, four in each of 172.16.1.0/24 to 172.16.5.0/24.
fn twenty_hosts() -> Vec<[u8; 4]> {
    (0..20u8).map(|n| [172, 16, 1 + n / 4, 10 + n]).collect()
}

/// Reflector `i` of an amplification service: one per /24, none of them a heavy hitter.
fn reflector(i: u64) -> [u8; 4] {
    Ipv4Addr::from(0x6440_0001u32 + (i as u32) * 256).octets()
}

/// A spoofed source: scattered over the whole address space.
fn spoofed(i: u64) -> [u8; 4] {
    Ipv4Addr::from(0x0b00_0000 | ((i as u32).wrapping_mul(0x9e37_79b1) >> 8)).octets()
}

/// Replays `frames` with [`CONFIG`]; returns every alert record.
fn office_alerts(dir: &ScratchDir, frames: Vec<(Duration, Vec<u8>)>) -> Vec<Value> {
    let (capture, config) = write_case(dir, frames, CONFIG);
    alerts_of(&capture, &config, &[])
}

/// (kind, state, scope, subject, second of the capture) of each alert.
fn summary(alerts: &[Value]) -> Vec<(String, String, String, String, u64)> {
    let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
    alerts
        .iter()
        .map(|a| {
            (
                text(&a["kind"]),
                text(&a["state"]),
                text(&a["scope"]),
                text(&a["subject"]),
                (a["unix_ms"].as_u64().unwrap_or(0) / 1000).saturating_sub(BASE),
            )
        })
        .collect()
}

#[test]
fn floods_against_three_quiet_hosts_name_each_with_its_attack() {
    if !privileged("floods_against_three_quiet_hosts_name_each_with_its_attack") {
        return;
    }
    let dir = ScratchDir::new("nwvictims");
    let mut frames = Vec::new();
    office(&mut frames, &twenty_hosts(), 20, 120);
    // Three hosts that were quiet (they received nothing before), each in a /24 of its own.
    for (service, port, victim) in [(0, 123, [172, 16, 7, 7]), (1, 11211, [172, 16, 8, 8])] {
        for server in 0..250 {
            stream(&mut frames, 80..90, 20, move |_| {
                FrameBuilder::ipv4(reflector(service * 1_000 + server))
                    .transport(Transport::Udp)
                    .from_port(port)
                    .to_ipv4(victim)
                    .to_port(40_000)
                    .payload(400)
            });
        }
    }
    stream(&mut frames, 80..90, 5_000, |i| {
        FrameBuilder::ipv4(spoofed(i))
            .transport(Transport::Tcp(SYN))
            .to_ipv4([172, 16, 9, 9])
            .to_port(443)
    });
    let alerts = office_alerts(&dir, frames);
    if let Some(keep) = std::env::var_os("NW_KEEP") {
        let _ = fs::copy(dir.join("three.pcap"), keep);
    }
    let victims: Vec<(String, String, String, String)> = alerts
        .iter()
        .filter(|a| a["scope"] == "destination" && a["state"] == "start")
        .map(|a| {
            let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
            (
                text(&a["subject"]),
                text(&a["attack"]["type"]),
                a["attack"]["port"].to_string(),
                text(&a["detail"]),
            )
        })
        .collect();
    let named: Vec<(&str, &str, &str)> = victims
        .iter()
        .map(|(subject, attack, port, _)| (subject.as_str(), attack.as_str(), port.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            ("172.16.7.7", "reflection", "123"),
            ("172.16.8.8", "reflection", "11211"),
            ("172.16.9.9", "syn_flood", "null"),
        ],
        "{:#?}",
        summary(&alerts)
    );
    for (subject, _, _, detail) in &victims {
        assert!(
            detail.starts_with("new victim: no baseline yet; ~"),
            "{subject}: {detail}"
        );
    }
    // The link's own alert says whom the floods hit.
    let global = alerts
        .iter()
        .find(|a| a["scope"] == "global" && a["state"] == "start")
        .unwrap_or_else(|| panic!("no global alert: {:#?}", summary(&alerts)));
    let hit: Vec<&str> = global["victims"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|victim| victim["destination"].as_str())
        .collect();
    for victim in ["172.16.7.7", "172.16.8.8", "172.16.9.9"] {
        assert!(hit.contains(&victim), "{victim} not in {global}");
    }
    // None of the office's hosts, which only talked as usual, is anyone's victim.
    for (_, _, scope, subject, at) in summary(&alerts) {
        assert!(
            !(scope.starts_with("destination") && subject.starts_with("172.16.1")),
            "{scope} {subject} at {at}s"
        );
    }
}

/// A UDP flood from spoofed sources over the thirty servers of 172.16.20.0/24, at `pps` each,
/// after a minute of their normal traffic.
fn carpet_bomb(pps: u64) -> Vec<(Duration, Vec<u8>)> {
    let servers: Vec<[u8; 4]> = (1..=30u8).map(|n| [172, 16, 20, n]).collect();
    let mut frames = Vec::new();
    office(&mut frames, &twenty_hosts(), 20, 110);
    office(&mut frames, &servers, 10, 110);
    for server in servers {
        stream(&mut frames, 70..80, pps, move |i| {
            FrameBuilder::ipv4(spoofed(i * 31 + u64::from(server[3])))
                .transport(Transport::Udp)
                .from_port(50_000)
                .to_ipv4(server)
                .to_port(9_999)
                .payload(100)
        });
    }
    frames
}

#[test]
fn a_carpet_bomb_over_a_slash_24_is_one_alert_on_it() {
    if !privileged("a_carpet_bomb_over_a_slash_24_is_one_alert_on_it") {
        return;
    }
    let dir = ScratchDir::new("nwcarpet");
    // 300 pkt/s a server: each spikes over its baseline of 10; 60 pkt/s: none does (under
    // the spike's floor of 100 pkt/s), and the /24 still takes six times its usual traffic.
    for (pps, name) in [(300, "spiking"), (60, "under")] {
        let alerts = office_alerts(&dir, carpet_bomb(pps));
        let on_hosts: Vec<_> = summary(&alerts)
            .into_iter()
            .filter(|(_, _, scope, _, _)| scope == "destination")
            .collect();
        assert!(on_hosts.is_empty(), "{name}: {on_hosts:#?}");
        let prefix: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["scope"] == "destination_prefix")
            .collect();
        let lines: Vec<(String, String, String)> = prefix
            .iter()
            .map(|a| {
                let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
                (text(&a["subject"]), text(&a["state"]), text(&a["id"]))
            })
            .collect();
        assert!(
            lines.len() >= 2
                && lines
                    .iter()
                    .all(|(subject, _, id)| subject == "172.16.20.0/24" && *id == lines[0].2)
                && lines[0].1 == "start"
                && lines.last().is_some_and(|(_, state, _)| state == "end"),
            "{name}: {:#?}",
            summary(&alerts)
        );
        let start = prefix[0];
        assert_eq!(start["attack"]["type"], "udp_flood", "{name}: {start}");
        let detail = start["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with("30 hosts hit"), "{name}: {detail}");
        // Far from the hundreds of lines a host each would take.
        assert!(alerts.len() <= 8, "{name}: {:#?}", summary(&alerts));
    }
}

/// With the default configuration (no `[networks]` at all), the kernel's sample of every
/// destination still names whom a flood hits: the interface's alert lists the victim with its
/// port and attack, marked as an estimate, and no host raises an alert of its own.
#[test]
fn with_no_local_network_a_flood_still_names_its_victim() {
    if !privileged("with_no_local_network_a_flood_still_names_its_victim") {
        return;
    }
    let dir = ScratchDir::new("nwsampled");
    let mut frames = Vec::new();
    office(&mut frames, &twenty_hosts(), 20, 120);
    stream(&mut frames, 80..90, 5_000, |i| {
        FrameBuilder::ipv4(spoofed(i))
            .transport(Transport::Tcp(SYN))
            .to_ipv4([172, 16, 9, 9])
            .to_port(443)
    });
    let (capture, config) = write_case(&dir, frames, "");
    let alerts = alerts_of(&capture, &config, &[]);
    assert!(
        alerts
            .iter()
            .all(|a| a["scope"] != "destination" && a["scope"] != "destination_prefix"),
        "{:#?}",
        summary(&alerts)
    );
    let global = alerts
        .iter()
        .find(|a| a["scope"] == "global" && a["state"] == "start")
        .unwrap_or_else(|| panic!("no global alert: {:#?}", summary(&alerts)));
    let victim = &global["victims"][0];
    assert_eq!(
        (
            victim["destination"].as_str(),
            victim["attack"].as_str(),
            victim["port"].as_u64(),
            victim["sampled"].as_u64(),
        ),
        (Some("172.16.9.9"), Some("syn_flood"), Some(443), Some(16)),
        "{global:#}"
    );
    // About 5,000 of the interval's frames, estimated from about 300 counted.
    let share = victim["share"].as_f64().unwrap_or_default();
    assert!((0.8..=1.0).contains(&share), "{global:#}");
}

#[test]
fn busy_benign_traffic_to_many_hosts_raises_no_alert() {
    if !privileged("busy_benign_traffic_to_many_hosts_raises_no_alert") {
        return;
    }
    let dir = ScratchDir::new("nwbenign");
    // 120 hosts over six /24s, each hearing a steady 5 to 40 frames a second.
    let hosts: Vec<[u8; 4]> = (0..120u8).map(|n| [172, 16, 30 + n / 20, 1 + n]).collect();
    let mut frames = Vec::new();
    for (n, host) in hosts.iter().copied().enumerate() {
        office(&mut frames, &[host], 5 + (n as u64 * 7) % 36, 100);
    }
    let alerts = office_alerts(&dir, frames);
    assert!(alerts.is_empty(), "{:#?}", summary(&alerts));
}

#[test]
fn a_live_flood_against_one_host_names_it_in_the_interval_that_counted_it() {
    if !privileged("a_live_flood_against_one_host_names_it_in_the_interval_that_counted_it") {
        return;
    }
    let dir = ScratchDir::new("nwlivev");
    let config = dir.join("netwatch.toml");
    fs::write(&config, "[networks]\nlocal = [\"10.6.1.0/24\"]\n")
        .unwrap_or_else(|err| panic!("{err}"));
    let pair = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor_every(
        &pair,
        "200ms",
        &["--config", config.to_str().unwrap_or_default()],
    );
    // Five hosts hear 100 frames a second each from a server of their own, for 9 s: the
    // link's and the hosts' baselines warm up (30 intervals); then host .3 takes 6,000 UDP
    // frames at once, from spoofed sources, while the others go on as usual for 2 s.
    let usual = |at: Duration, host: u8| {
        (
            at,
            FrameBuilder::ipv4([10, 6, 0, host])
                .transport(Transport::Tcp(PSH | ACK))
                .to_ipv4([10, 6, 1, host])
                .payload(200)
                .build()
                .bytes,
        )
    };
    let mut frames: Vec<(Duration, Vec<u8>)> = (0..1_100u64)
        .flat_map(|tick| (1..=5u8).map(move |host| usual(Duration::from_millis(tick * 10), host)))
        .collect();
    let flood_at = Duration::from_secs(9);
    frames.extend((0..6_000u64).map(|i| {
        (
            flood_at,
            FrameBuilder::ipv4(spoofed(i))
                .transport(Transport::Udp)
                .to_ipv4([10, 6, 1, 3])
                .to_port(27_015)
                .payload(60)
                .build()
                .bytes,
        )
    }));
    frames.sort_by_key(|(at, _)| *at);
    let total = frames.len();
    assert_eq!(pair.send_paced(frames), total);
    let records = daemon
        .records_until(|record| record["type"] == "alert" && record["scope"] == "destination");
    let (status, _, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
    let alert = records.last().unwrap_or_else(|| panic!("no record"));
    assert_eq!(alert["subject"], "10.6.1.3", "{alert}");
    assert_eq!(alert["state"], "start", "{alert}");
    assert_eq!(alert["attack"]["type"], "udp_flood", "{alert}");
    // Named with the reading that counted the flood: the last interval record before the
    // alert is the first with the flood in it, and has the alert's time.
    let intervals: Vec<&Value> = records.iter().filter(|r| r["type"] == "interval").collect();
    let counted = intervals
        .iter()
        .position(|r| r["packets"].as_u64().unwrap_or(0) > 1_000)
        .unwrap_or_else(|| panic!("no interval counted the flood: {intervals:?}"));
    assert_eq!(counted, intervals.len() - 1, "{:?}", &intervals[counted..]);
    assert_eq!(intervals[counted]["unix_ms"], alert["unix_ms"], "{alert}");
    // Nobody else is a victim.
    for other in records.iter().filter(|r| r["type"] == "alert") {
        assert!(
            other["scope"] != "destination" || other["subject"] == "10.6.1.3",
            "{other}"
        );
    }
}
