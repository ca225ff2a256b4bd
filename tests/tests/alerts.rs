//! Alerts that say who, what and how much, on captures written here and replayed through the
//! real binary and the real XDP program, with the default configuration (and a short learning
//! period where a test says so): each attack named by source, prefix and type, once, and the
//! benign hosts never; nothing from a handful of packets; nothing from a busy benign link.

use std::{fs, net::Ipv4Addr, path::PathBuf, process::Command, time::Duration};

use netwatch_tests::{
    ScratchDir,
    frames::{ACK, FrameBuilder, PSH, SYN, Transport},
    netwatch_bin, pcaps_dir, privileged,
    process::succeed,
    replay::{BASE, alerts_of, of_type, records_of, stream, write_case},
};
use serde_json::Value;

/// Ten benign hosts of 10.0.0.0/24 for seconds `0..seconds`: UDP, TCP data and ICMP.
fn benign(frames: &mut Vec<(Duration, Vec<u8>)>, seconds: u64) {
    for host in 1..=10u8 {
        stream(frames, 0..seconds, 10 + u64::from(host), move |i| {
            let builder = FrameBuilder::ipv4([10, 0, 0, host]);
            match (u64::from(host) + i) % 3 {
                0 => builder.payload(60),
                1 => builder.transport(Transport::Tcp(PSH | ACK)).payload(200),
                _ => builder.transport(Transport::Icmp).payload(32),
            }
        });
    }
}

/// (kind, state, subject, second of the capture) of each alert.
fn summary(alerts: &[Value]) -> Vec<(String, String, String, u64)> {
    alerts
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("?").to_owned(),
                a["state"].as_str().unwrap_or("?").to_owned(),
                a["subject"].as_str().unwrap_or("?").to_owned(),
                (a["unix_ms"].as_u64().unwrap_or(0) / 1000).saturating_sub(BASE),
            )
        })
        .collect()
}

/// The alerts that open something: starts and one-off alerts.
fn openings(alerts: &[Value]) -> Vec<(String, String)> {
    summary(alerts)
        .into_iter()
        .filter(|(_, state, _, _)| state == "start" || state == "instant")
        .map(|(kind, _, subject, _)| (kind, subject))
        .collect()
}

/// No alert is about a benign host or its prefix.
fn benign_never_named(alerts: &[Value]) {
    for (kind, _, subject, at) in summary(alerts) {
        assert!(
            !subject.starts_with("10.0.0."),
            "{kind} about benign {subject} at {at}s"
        );
    }
}

fn pair(kind: &str, subject: &str) -> (String, String) {
    (kind.to_owned(), subject.to_owned())
}

/// The default configuration with `learning` for the unknown-source rule.
fn learning(period: &str) -> String {
    format!("[detect.unknown]\nlearning = \"{period}\"\n")
}

#[test]
fn a_flood_from_a_new_source_is_named_inside_and_after_learning() {
    if !privileged("a_flood_from_a_new_source_is_named_inside_and_after_learning") {
        return;
    }
    let dir = ScratchDir::new("nwflood");
    let mut frames = Vec::new();
    benign(&mut frames, 100);
    stream(&mut frames, 60..70, 5_000, |_| {
        FrameBuilder::ipv4([198, 51, 100, 66]).payload(18)
    });
    // Inside the default hour of learning, then with learning over after 30 s.
    for (period, unknown) in [("1h", false), ("30s", true)] {
        let (capture, config) = write_case(&dir, frames.clone(), &learning(period));
        let db = dir.join(&format!("learning-{period}.db"));
        let alerts = alerts_of(
            &capture,
            &config,
            &["--db", db.to_str().unwrap_or_default()],
        );
        let mut expected = vec![
            pair("spike_pps", "global"),
            pair("heavy_hitter", "198.51.100.66"),
        ];
        if unknown {
            expected.push(pair("unknown_source", "198.51.100.66"));
        }
        assert_eq!(openings(&alerts), expected, "learning {period}");
        benign_never_named(&alerts);
        let (global, heavy) = (&alerts[0], &alerts[1]);
        assert_eq!(
            summary(&alerts)[1].3,
            61,
            "named at the end of its first second"
        );
        assert_eq!(heavy["observed"], 5000.0);
        assert_eq!(heavy["baseline"], Value::Null);
        assert_eq!(heavy["detail"], "new source: no baseline yet");
        assert_eq!(heavy["attack"]["type"], "udp_flood");
        let top = &global["contributors"][0];
        assert_eq!(top["subject"], "198.51.100.66");
        assert_eq!(top["new"], true);
        assert!(
            top["share"].as_f64().is_some_and(|share| share > 0.95),
            "{top}"
        );
        assert!(
            top["excess_share"]
                .as_f64()
                .is_some_and(|share| share > 0.95),
            "{top}"
        );
        // Learning did not take the flooder in as known.
        let known = succeed(Command::new(netwatch_bin()).args([
            "known",
            "--db",
            db.to_str().unwrap_or_default(),
            "list",
        ]));
        let known = String::from_utf8_lossy(&known.stdout);
        assert!(known.contains("10.0.0.1"), "{known}");
        assert!(
            !known
                .lines()
                .any(|line| line.contains("198.51.100.66") && line.contains("learned")),
            "learning {period}: {known}"
        );
    }
}

#[test]
fn new_sources_of_one_prefix_are_one_alert_per_rule() {
    if !privileged("new_sources_of_one_prefix_are_one_alert_per_rule") {
        return;
    }
    let dir = ScratchDir::new("nwprefix");
    let mut frames = Vec::new();
    benign(&mut frames, 100);
    for host in 1..=200u8 {
        stream(&mut frames, 60..80, 30, move |_| {
            FrameBuilder::ipv4([192, 0, 2, host]).payload(30)
        });
    }
    let (capture, config) = write_case(&dir, frames, &learning("30s"));
    let alerts = alerts_of(&capture, &config, &[]);
    assert_eq!(
        openings(&alerts),
        vec![
            pair("spike_pps", "global"),
            pair("heavy_hitter", "192.0.2.0/24"),
            pair("unknown_source", "192.0.2.0/24"),
        ]
    );
    benign_never_named(&alerts);
    let unknown = &alerts[2];
    assert_eq!(unknown["sources"]["count"], 200);
    assert_eq!(
        unknown["sources"]["first"],
        serde_json::json!([
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.5"
        ])
    );
    assert_eq!(unknown["packets"], 200 * 30);
    let heavy = &alerts[1];
    assert_eq!(heavy["observed"], 6000.0);
    assert_eq!(heavy["contributors"].as_array().map(Vec::len), Some(5));
    assert_eq!(heavy["contributors"][0]["share"], 0.005);
    // The global spike names the /24 as nearly all of it.
    let prefixes: Vec<&Value> = alerts[0]["contributors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["scope"] == "prefix")
        .collect();
    assert_eq!(prefixes[0]["subject"], "192.0.2.0/24");
    assert!(prefixes[0]["share"].as_f64().is_some_and(|s| s > 0.95));
}

/// The address of the `i`-th reflector: each in a /24 of its own, as reflectors are.
fn reflector(i: u64) -> [u8; 4] {
    Ipv4Addr::from(0x6440_0001u32 + (i as u32) * 256).octets()
}

#[test]
fn reflection_floods_are_named_by_service() {
    if !privileged("reflection_floods_are_named_by_service") {
        return;
    }
    let dir = ScratchDir::new("nwreflect");
    let mut frames = Vec::new();
    benign(&mut frames, 110);
    // 300 NTP servers answer one host at 20 pps each, then 300 memcached servers.
    for (port, seconds, first) in [(123u16, 50..60, 0u64), (11211, 75..85, 1_000)] {
        for server in first..first + 300 {
            stream(&mut frames, seconds.clone(), 20, move |_| {
                FrameBuilder::ipv4(reflector(server))
                    .transport(Transport::Udp)
                    .from_port(port)
                    .to_ipv4([10, 0, 0, 5])
                    .to_port(40_000)
                    .payload(400)
            });
        }
    }
    let (capture, config) = write_case(&dir, frames, "");
    let alerts = alerts_of(&capture, &config, &[]);
    let global: Vec<(String, String, String, Value)> = alerts
        .iter()
        .filter(|a| a["subject"] == "global" && a["state"] != "update")
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("?").to_owned(),
                a["state"].as_str().unwrap_or("?").to_owned(),
                a["attack"]["label"].as_str().unwrap_or("?").to_owned(),
                a["attack"]["service"].clone(),
            )
        })
        .collect();
    let ntp = "NTP reflection (UDP from port 123)";
    let memcached = "MEMCACHED reflection (UDP from port 11211)";
    assert_eq!(
        global,
        vec![
            ("spike_pps".into(), "start".into(), ntp.into(), "ntp".into()),
            ("spike_pps".into(), "end".into(), ntp.into(), "ntp".into()),
            (
                "spike_pps".into(),
                "start".into(),
                memcached.into(),
                "memcached".into()
            ),
            (
                "spike_pps".into(),
                "end".into(),
                memcached.into(),
                "memcached".into()
            ),
        ]
    );
    // An update of each event (after ten intervals, the flood just over) says the same.
    let updates: Vec<&Value> = alerts.iter().filter(|a| a["state"] == "update").collect();
    assert_eq!(updates.len(), 2, "{:?}", summary(&alerts));
    assert_eq!(updates[0]["attack"]["label"], ntp);
    assert_eq!(updates[1]["attack"]["label"], memcached);
    assert_eq!(
        alerts.len(),
        6,
        "no reflector alone is an alert: {:?}",
        summary(&alerts)
    );
    let start = &alerts[0];
    assert!(start["attack"]["share"].as_f64().is_some_and(|s| s > 0.9));
    assert_eq!(start["attack"]["mix"]["reflected"][0]["port"], 123);
    assert_eq!(start["attack"]["mix"]["reflected"][0]["packets"], 6000);
}

#[test]
fn a_syn_flood_from_random_sources_is_named() {
    if !privileged("a_syn_flood_from_random_sources_is_named") {
        return;
    }
    let dir = ScratchDir::new("nwsyn");
    let mut frames = Vec::new();
    benign(&mut frames, 90);
    // A new source every frame, scattered over 11.0.0.0/8 (a multiplicative hash of i).
    stream(&mut frames, 50..60, 5_000, |i| {
        let scattered = (i as u32).wrapping_mul(0x9e37_79b1) >> 8;
        FrameBuilder::ipv4(Ipv4Addr::from(0x0b00_0000 | scattered).octets())
            .transport(Transport::Tcp(SYN))
            .to_ipv4([10, 0, 0, 5])
            .to_port(443)
    });
    let (capture, config) = write_case(&dir, frames, &learning("30s"));
    let alerts = alerts_of(&capture, &config, &[]);
    assert_eq!(
        openings(&alerts),
        vec![pair("spike_pps", "global")],
        "one alert for the attack: {:?}",
        summary(&alerts)
    );
    let start = &alerts[0];
    assert_eq!(start["attack"]["type"], "syn_flood");
    assert_eq!(start["attack"]["label"], "SYN flood");
    assert_eq!(start["attack"]["mix"]["syn"], 5000);
    benign_never_named(&alerts);
}

/// The SYN flood above with far fewer slots than sources: most of it has no slot, and the
/// alert still names the victim, the type and the sources' prefixes from the kernel's
/// breakdown of the traffic without a slot, which adds up to the overflow in every interval.
#[test]
fn a_spoofed_syn_flood_past_the_slots_names_its_victim() {
    if !privileged("a_spoofed_syn_flood_past_the_slots_names_its_victim") {
        return;
    }
    let dir = ScratchDir::new("nwspoof");
    let mut frames = Vec::new();
    benign(&mut frames, 90);
    stream(&mut frames, 50..60, 5_000, |i| {
        let scattered = (i as u32).wrapping_mul(0x9e37_79b1) >> 8;
        FrameBuilder::ipv4(Ipv4Addr::from(0x0b00_0000 | scattered).octets())
            .transport(Transport::Tcp(SYN))
            .to_ipv4([10, 0, 0, 5])
            .to_port(443)
    });
    let (capture, config) = write_case(&dir, frames, &learning("30s"));
    let records = records_of(&capture, &config, &["--max-sources", "1024"]);
    let alerts: Vec<Value> = of_type(&records, "alert").into_iter().cloned().collect();
    assert_eq!(
        openings(&alerts),
        vec![pair("spike_pps", "global")],
        "one alert for the attack: {:?}",
        summary(&alerts)
    );
    benign_never_named(&alerts);
    let start = &alerts[0];
    assert_eq!(start["attack"]["type"], "syn_flood");
    let slotless = &start["slotless"];
    assert_eq!(slotless["random_sources"], true, "{slotless}");
    assert!(
        slotless["share"].as_f64().is_some_and(|share| share > 0.5),
        "{slotless}"
    );
    assert!(
        slotless["sources_estimate"]
            .as_u64()
            .is_some_and(|sources| sources > 3_000),
        "{slotless}"
    );
    let victim = &slotless["targets"][0];
    assert_eq!(victim["destination"], "10.0.0.5", "{slotless}");
    assert_eq!(victim["kind"], "syn", "{slotless}");
    assert_eq!(victim["port"], 443, "{slotless}");
    assert!(
        victim["share"].as_f64().is_some_and(|share| share > 0.99),
        "{slotless}"
    );
    for prefix in slotless["prefixes"].as_array().into_iter().flatten() {
        let prefix = prefix["prefix"].as_str().unwrap_or("");
        assert!(prefix.starts_with("11."), "{prefix}");
    }
    // Every interval's breakdown adds up to its overflow, and names no benign host.
    let mut overflow = 0;
    let mut slotless = 0;
    for record in of_type(&records, "interval") {
        overflow += record["blind_spots"]["overflow_packets"]
            .as_u64()
            .unwrap_or(0);
        slotless += record["slotless"]["packets"].as_u64().unwrap_or(0);
        for target in record["slotless"]["targets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(target["destination"], "10.0.0.5", "{record}");
        }
    }
    assert!(overflow > 40_000, "{overflow}");
    assert_eq!(slotless, overflow);
}

/// The victim view: with a local network and a limit per destination, a reflection flood and
/// a spoofed SYN flood against two of its hosts name each victim with the attack's type, the
/// number of sources and their prefixes; a flood to a host outside is no victim's.
#[test]
fn floods_against_local_hosts_name_the_victims() {
    if !privileged("floods_against_local_hosts_name_the_victims") {
        return;
    }
    let dir = ScratchDir::new("nwvictim");
    let mut frames = Vec::new();
    benign(&mut frames, 110);
    for server in 0..300 {
        stream(&mut frames, 50..60, 20, move |_| {
            FrameBuilder::ipv4(reflector(server))
                .transport(Transport::Udp)
                .from_port(123)
                .to_ipv4([10, 0, 0, 5])
                .to_port(40_000)
                .payload(400)
        });
    }
    stream(&mut frames, 70..80, 5_000, |i| {
        let scattered = (i as u32).wrapping_mul(0x9e37_79b1) >> 8;
        FrameBuilder::ipv4(Ipv4Addr::from(0x0b00_0000 | scattered).octets())
            .transport(Transport::Tcp(SYN))
            .to_ipv4([10, 0, 0, 6])
            .to_port(443)
    });
    stream(&mut frames, 90..100, 3_000, |i| {
        FrameBuilder::ipv4([198, 18, 0, (i % 200) as u8 + 1])
            .to_ipv4([192, 0, 2, 99])
            .to_port(9)
    });
    let config = "[networks]\nlocal = [\"10.0.0.0/24\", \"2001:db8:5::/48\"]\n\
                  [detect.destination]\npps = 1000.0\n";
    let (capture, config) = write_case(&dir, frames, config);
    let records = records_of(&capture, &config, &[]);
    let alerts: Vec<&Value> = of_type(&records, "alert")
        .into_iter()
        .filter(|alert| alert["scope"] == "destination")
        .collect();
    let starts: Vec<(String, String, u64)> = alerts
        .iter()
        .filter(|alert| alert["state"] == "start")
        .map(|alert| {
            (
                alert["subject"].as_str().unwrap_or("?").to_owned(),
                alert["attack"]["type"].as_str().unwrap_or("?").to_owned(),
                (alert["unix_ms"].as_u64().unwrap_or(0) / 1000).saturating_sub(BASE),
            )
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            ("10.0.0.5".into(), "reflection".into(), 51),
            ("10.0.0.6".into(), "syn_flood".into(), 71),
        ]
    );
    let reflection = alerts[0];
    assert_eq!(reflection["kind"], "threshold_pps");
    assert_eq!(reflection["attack"]["service"], "ntp");
    let sources = |alert: &Value| -> u64 {
        alert["detail"]
            .as_str()
            .and_then(|detail| {
                detail
                    .strip_prefix('~')?
                    .strip_suffix(" sources")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    assert!(
        (250..=350).contains(&sources(reflection)),
        "300 reflectors: {reflection}"
    );
    for contributor in reflection["contributors"].as_array().into_iter().flatten() {
        assert_eq!(contributor["scope"], "prefix");
        let prefix = contributor["subject"].as_str().unwrap_or("");
        assert!(prefix.starts_with("100.6"), "{prefix}");
    }
    let syn = alerts
        .iter()
        .find(|alert| alert["subject"] == "10.0.0.6" && alert["state"] == "start")
        .unwrap_or_else(|| panic!("no SYN flood start"));
    assert!(sources(syn) > 1_000, "{syn}");
    let contributors = syn["contributors"].as_array().cloned().unwrap_or_default();
    assert!(!contributors.is_empty(), "{syn}");
    for contributor in &contributors {
        let prefix = contributor["subject"].as_str().unwrap_or("");
        assert!(prefix.starts_with("11."), "{prefix}");
    }
    // Only hosts of the local networks are ever destinations.
    for record in of_type(&records, "interval") {
        for destination in record["destinations"].as_array().into_iter().flatten() {
            let host = destination["destination"].as_str().unwrap_or("");
            assert!(host.starts_with("10.0.0."), "{host} in {record}");
        }
    }
    assert!(
        alerts.iter().all(|alert| alert["subject"] != "192.0.2.99"),
        "{alerts:?}"
    );
}

#[test]
fn hundreds_of_unknown_sources_are_capped_with_a_counted_line() {
    if !privileged("hundreds_of_unknown_sources_are_capped_with_a_counted_line") {
        return;
    }
    let dir = ScratchDir::new("nwcap");
    let mut frames = Vec::new();
    benign(&mut frames, 60);
    // 500 new sources, each in a /24 of its own, 20 packets each in one second.
    for i in 0..500 {
        stream(&mut frames, 45..46, 20, move |_| {
            FrameBuilder::ipv4(reflector(i)).payload(20)
        });
    }
    let (capture, config) = write_case(&dir, frames, &learning("30s"));
    let alerts = alerts_of(&capture, &config, &[]);
    let at_46: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["unix_ms"].as_u64().map(|ms| ms / 1000 - BASE) == Some(46))
        .collect();
    assert_eq!(at_46.len(), 21, "{:?}", summary(&alerts));
    let last = at_46[20];
    assert_eq!(last["kind"], "suppressed");
    // 501 alerts: the global spike, kept first, and 500 unknown sources.
    assert_eq!(at_46[0]["kind"], "spike_pps");
    assert_eq!(last["observed"], 501.0 - 20.0);
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("unknown_source")),
        "{last}"
    );
}

#[test]
fn a_handful_of_packets_raises_nothing() {
    if !privileged("a_handful_of_packets_raises_nothing") {
        return;
    }
    let dir = ScratchDir::new("nwfew");
    let syn = |last| {
        FrameBuilder::ipv4([192, 0, 2, last])
            .transport(Transport::Tcp(SYN))
            .build()
            .bytes
    };
    let at = |ms| Duration::from_secs(BASE) + Duration::from_millis(ms);
    let cases = [
        ("two syns", vec![(at(0), syn(1)), (at(3), syn(1))]),
        (
            "three packets",
            vec![(at(0), syn(2)), (at(1), syn(3)), (at(2), syn(4))],
        ),
    ];
    for (name, frames) in cases {
        let (capture, config) = write_case(&dir, frames, "");
        let alerts = alerts_of(&capture, &config, &[]);
        assert!(alerts.is_empty(), "{name}: {:?}", summary(&alerts));
    }
    // Nor does any real capture of the shared set.
    let mut captures: Vec<PathBuf> = fs::read_dir(pcaps_dir())
        .unwrap_or_else(|err| panic!("{err}"))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "pcap" || ext == "pcapng")
        })
        .collect();
    captures.sort();
    assert!(captures.len() >= 10, "{captures:?}");
    let config = dir.join("netwatch.toml");
    for capture in captures {
        let alerts = alerts_of(&capture, &config, &[]);
        assert!(
            alerts.is_empty(),
            "{}: {:?}",
            capture.display(),
            summary(&alerts)
        );
    }
}

/// A small deterministic generator (xorshift64*), so that the busy link is the same on every
/// run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson with mean `lambda` (Knuth's method: small means only).
    fn poisson(&mut self, lambda: f64) -> u64 {
        let limit = (-lambda).exp();
        let mut product = self.unit();
        let mut count = 0;
        while product > limit {
            count += 1;
            product *= self.unit();
        }
        count
    }
}

#[test]
fn a_busy_benign_link_gives_no_alert_in_fifteen_minutes() {
    if !privileged("a_busy_benign_link_gives_no_alert_in_fifteen_minutes") {
        return;
    }
    let dir = ScratchDir::new("nwbusy");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    const SOURCES: u64 = 300;
    const SECONDS: u64 = 960;
    // Each source: its own mean rate (0.5 to 4.5 pps, a few at 10), drifting slowly (a period
    // of 5 to 15 minutes, up to 40% either way), Poisson within each second; in twelve /24s
    // and one IPv6 /64.
    let plans: Vec<(Vec<u8>, f64, f64, f64, f64)> = (0..SOURCES)
        .map(|i| {
            let builder = if i % 25 == 24 {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                addr[15] = i as u8;
                FrameBuilder::ipv6(addr).payload(80)
            } else {
                let builder = FrameBuilder::ipv4([172, 16, (i % 12) as u8, (i / 12) as u8 + 1]);
                match i % 4 {
                    0 => builder.transport(Transport::Tcp(PSH | ACK)).payload(100),
                    1 => builder.transport(Transport::Tcp(ACK)),
                    2 => builder.payload(120),
                    _ => builder.transport(Transport::Icmp).payload(56),
                }
            };
            let mean = if i % 50 == 0 {
                10.0
            } else {
                0.5 + 4.0 * rng.unit()
            };
            let period = 300.0 + 600.0 * rng.unit();
            let depth = 0.4 * rng.unit();
            let phase = std::f64::consts::TAU * rng.unit();
            (builder.build().bytes, mean, period, depth, phase)
        })
        .collect();
    let mut frames = Vec::new();
    for second in 0..SECONDS {
        for (bytes, mean, period, depth, phase) in &plans {
            let drift =
                1.0 + depth * (std::f64::consts::TAU * second as f64 / period + phase).sin();
            let count = rng.poisson(mean * drift);
            for _ in 0..count {
                let offset = Duration::from_micros(rng.next() % 1_000_000);
                frames.push((Duration::from_secs(BASE + second) + offset, bytes.clone()));
            }
        }
    }
    let total = frames.len();
    assert!(total > 500_000, "a busy link: {total} frames");
    let (capture, config) = write_case(&dir, frames, "");
    let alerts = alerts_of(&capture, &config, &[]);
    assert!(alerts.is_empty(), "{:?}", summary(&alerts));
}
