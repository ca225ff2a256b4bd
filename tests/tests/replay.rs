//! `netwatch replay`, the real binary: every shared capture counts like its ground truth, a
//! capture written here gives exactly the alerts it was built to give, and broken files fail
//! with the file and frame named while what came before is still reported.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use netwatch_tests::{
    ScratchDir,
    frames::{ACK, FrameBuilder, PSH, SYN, Transport},
    netwatch_bin, pcaps_dir, privileged,
    process::succeed,
    replay::{BASE, of_type, records, replay, stream},
    write_pcap,
};
use serde_json::Value;

/// Per-source packets and bytes summed over every interval report.
fn per_source(records: &[Value]) -> BTreeMap<String, (u64, u64)> {
    let mut sums = BTreeMap::new();
    for interval in of_type(records, "interval") {
        for source in interval["top"].as_array().into_iter().flatten() {
            let entry: &mut (u64, u64) = sums
                .entry(source["source"].as_str().unwrap_or("?").to_owned())
                .or_default();
            entry.0 += source["packets"].as_u64().unwrap_or(0);
            entry.1 += source["bytes"].as_u64().unwrap_or(0);
        }
    }
    sums
}

#[test]
fn every_shared_capture_replays_like_ground_truth() {
    if !privileged("every_shared_capture_replays_like_ground_truth") {
        return;
    }
    let truth = fs::read_to_string(pcaps_dir().join("ground-truth.tsv"))
        .unwrap_or_else(|err| panic!("ground truth: {err}"));
    let mut expected: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for line in truth.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, source, packets, bytes] = fields[..] else {
            panic!("bad ground truth line {line:?}");
        };
        let number = |text: &str| text.parse::<u64>().unwrap_or_else(|err| panic!("{err}"));
        expected
            .entry(file.to_owned())
            .or_default()
            .insert(source.to_owned(), (number(packets), number(bytes)));
    }
    for (file, mut sources) in expected {
        let path = pcaps_dir().join(&file);
        let output = replay(&[
            &path.to_string_lossy(),
            "--format",
            "json",
            "--top",
            "100000",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{file}: {stderr}");
        let records = records(&output);
        let intervals = of_type(&records, "interval");
        let last = intervals
            .last()
            .unwrap_or_else(|| panic!("{file}: no report"));
        assert_eq!(last["final"], true, "{file}");
        let non_ip = sources.remove("non-ip").unwrap_or_default();
        assert_eq!(
            (
                last["cumulative"]["non_ip_packets"].as_u64().unwrap_or(0),
                last["cumulative"]["non_ip_bytes"].as_u64().unwrap_or(0)
            ),
            non_ip,
            "{file}: non-IP"
        );
        // Ground truth writes addresses as tshark does; compare them as parsed addresses.
        let normalise =
            |map: BTreeMap<String, (u64, u64)>| -> BTreeMap<std::net::IpAddr, (u64, u64)> {
                map.into_iter()
                    .map(|(addr, counts)| {
                        (
                            addr.parse().unwrap_or_else(|err| panic!("{addr}: {err}")),
                            counts,
                        )
                    })
                    .collect()
            };
        assert_eq!(
            normalise(per_source(&records)),
            normalise(sources),
            "{file}: per-source totals"
        );
    }
}

/// Writes the attack capture and its config into `dir`: a benign baseline, a flood from a
/// new source, then a port scan from another. Returns (capture, config, frames).
fn write_attack(dir: &ScratchDir) -> (std::path::PathBuf, std::path::PathBuf, usize) {
    let mut frames = Vec::new();
    // A benign baseline for the whole capture: two IPv4 hosts and one IPv6 host.
    stream(&mut frames, 0..120, 20, |_| {
        FrameBuilder::ipv4([10, 0, 0, 1]).payload(60)
    });
    stream(&mut frames, 0..120, 30, |_| {
        FrameBuilder::ipv4([10, 0, 0, 2])
            .transport(Transport::Tcp(PSH | ACK))
            .payload(200)
    });
    stream(&mut frames, 0..120, 10, |_| {
        FrameBuilder::ipv6([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c,
        ])
        .transport(Transport::Icmp)
    });
    // A flood from a new source, 2000 pps for ten seconds.
    stream(&mut frames, 90..100, 2_000, |_| {
        FrameBuilder::ipv4([198, 51, 100, 66]).payload(18)
    });
    // A port scan from another new source: 150 ports a second for two seconds.
    stream(&mut frames, 110..112, 150, |i| {
        FrameBuilder::ipv4([203, 0, 113, 7])
            .transport(Transport::Tcp(SYN))
            .to_port(1 + i as u16)
    });
    frames.sort_by_key(|(time, _)| *time);
    let capture = dir.join("attack.pcap");
    write_pcap(&capture, &frames);
    let config = dir.join("netwatch.toml");
    fs::write(
        &config,
        r#"
        [monitor]
        interval = "1s"
        [detect]
        update_every = 60
        [detect.spike]
        warmup = 20
        min_pps = 500.0
        [detect.unknown]
        learning = "30s"
        "#,
    )
    .unwrap_or_else(|err| panic!("{err}"));
    (capture, config, frames.len())
}

#[test]
fn a_written_capture_gives_exactly_the_expected_alerts() {
    if !privileged("a_written_capture_gives_exactly_the_expected_alerts") {
        return;
    }
    let dir = ScratchDir::new("nwreplay");
    let (capture, config, frame_count) = write_attack(&dir);
    let alerts_file = dir.join("alerts.jsonl");
    let output = replay(&[
        &capture.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "--format",
        "json",
        "--alerts",
        &alerts_file.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let records = records(&output);
    let alerts = of_type(&records, "alert");
    let summary: Vec<(String, String, String, u64)> = alerts
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("?").to_owned(),
                a["state"].as_str().unwrap_or("?").to_owned(),
                a["subject"].as_str().unwrap_or("?").to_owned(),
                a["unix_ms"].as_u64().unwrap_or(0) / 1000 - BASE,
            )
        })
        .collect();
    let expected: Vec<(String, String, String, u64)> = [
        ("spike_pps", "start", "global", 91),
        ("heavy_hitter", "start", "198.51.100.66", 91),
        ("unknown_source", "instant", "198.51.100.66", 91),
        ("spike_pps", "end", "global", 103),
        ("heavy_hitter", "end", "198.51.100.66", 103),
        ("port_scan", "start", "203.0.113.7", 111),
        ("unknown_source", "instant", "203.0.113.7", 111),
        ("port_scan", "end", "203.0.113.7", 115),
    ]
    .into_iter()
    .map(|(kind, state, subject, at)| (kind.into(), state.into(), subject.into(), at))
    .collect();
    assert_eq!(summary, expected, "{stderr}");

    let end = alerts[3];
    assert_eq!(
        end["id"], alerts[0]["id"],
        "start and end share the event id"
    );
    assert_eq!(end["peak"], 2060.0);
    assert_eq!(end["baseline"], 60.0);
    assert_eq!(end["packets"], 20_000 + 13 * 60);
    // The global spike names the new source as nearly all of it, and says what it is.
    let top = &alerts[0]["contributors"][0];
    assert_eq!(top["subject"], "198.51.100.66");
    assert_eq!(top["new"], true);
    assert_eq!(top["pps"], 2000.0);
    assert_eq!(alerts[0]["attack"]["type"], "udp_flood");
    assert_eq!(alerts[1]["observed"], 2000.0);
    assert_eq!(alerts[1]["baseline"], Value::Null);
    assert_eq!(
        alerts[5]["observed"].as_f64().map(|ports| ports >= 100.0),
        Some(true)
    );

    // The alerts file holds the same alerts, as JSON lines.
    let file: Vec<Value> = fs::read_to_string(&alerts_file)
        .unwrap_or_else(|err| panic!("{err}"))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}")))
        .collect();
    assert_eq!(file.iter().collect::<Vec<_>>(), alerts);

    // And the capture's traffic is all there.
    let last = of_type(&records, "interval")
        .last()
        .copied()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["cumulative"]["packets"], frame_count as u64);
}

#[test]
fn a_truncated_capture_names_file_and_frame_and_keeps_what_came_before() {
    if !privileged("a_truncated_capture_names_file_and_frame_and_keeps_what_came_before") {
        return;
    }
    let dir = ScratchDir::new("nwcut");
    let mut frames = Vec::new();
    stream(&mut frames, 0..3, 10, |_| {
        FrameBuilder::ipv4([10, 0, 0, 9]).payload(10)
    });
    let capture = dir.join("cut.pcap");
    write_pcap(&capture, &frames);
    // Cut the file in the middle of the 26th record.
    let bytes = fs::read(&capture).unwrap_or_else(|err| panic!("{err}"));
    let record = 16 + frames[0].1.len();
    fs::write(&capture, &bytes[..24 + 25 * record + 20]).unwrap_or_else(|err| panic!("{err}"));
    let output = replay(&[&capture.to_string_lossy(), "--format", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cut.pcap: frame 26"), "{stderr}");
    assert!(
        stderr.contains("the 25 frames before it were replayed"),
        "{stderr}"
    );
    let records = records(&output);
    let last = of_type(&records, "interval")
        .last()
        .copied()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["final"], true);
    assert_eq!(last["cumulative"]["packets"], 25);
}

fn expect_failure(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "wanted {needle:?} in {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_non_ethernet_capture_is_refused_clearly() {
    if !privileged("a_non_ethernet_capture_is_refused_clearly") {
        return;
    }
    let dir = ScratchDir::new("nwlink");
    let capture = dir.join("raw-ip.pcap");
    write_pcap(&capture, &[]);
    // Link type 101 (raw IP) in the global header, big-endian as written.
    let mut bytes = fs::read(&capture).unwrap_or_else(|err| panic!("{err}"));
    bytes[20..24].copy_from_slice(&101u32.to_be_bytes());
    fs::write(&capture, bytes).unwrap_or_else(|err| panic!("{err}"));
    expect_failure(
        &replay(&[&capture.to_string_lossy()]),
        "raw-ip.pcap: frame 1: link type",
    );
}

#[test]
fn a_file_that_is_no_capture_is_refused_clearly() {
    if !privileged("a_file_that_is_no_capture_is_refused_clearly") {
        return;
    }
    let dir = ScratchDir::new("nwtext");
    let path = dir.join("notes.txt");
    fs::write(&path, "not a capture\n").unwrap_or_else(|err| panic!("{err}"));
    expect_failure(
        &replay(&[&path.to_string_lossy()]),
        "notes.txt: not a pcap or pcapng file",
    );
    expect_failure(
        &replay(&[&dir.join("missing.pcap").to_string_lossy()]),
        "missing.pcap: No such file",
    );
}

#[test]
fn a_bad_config_is_refused_with_the_field() {
    let dir = ScratchDir::new("nwcfg");
    let config = dir.join("bad.toml");
    fs::write(&config, "[detect.spike]\nk = 0.0\n").unwrap_or_else(|err| panic!("{err}"));
    let capture = pcaps_dir().join("dns.pcap");
    let output = replay(&[
        &capture.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
    ]);
    expect_failure(&output, "bad.toml: detect.spike.k");
    assert!(Path::new(&capture).exists());
}

/// `(event, name-or-request)` for each event line of a replay.
fn events_of(records: &[Value]) -> Vec<(String, String)> {
    of_type(records, "event")
        .into_iter()
        .map(|event| {
            let kind = event["event"].as_str().unwrap_or("?").to_owned();
            let what = match kind.as_str() {
                "dns" => format!(
                    "{} {} {}",
                    event["name"].as_str().unwrap_or("?"),
                    event["qtype"].as_str().unwrap_or("?"),
                    if event["response"] == true {
                        event["rcode"].as_str().unwrap_or("?")
                    } else {
                        "query"
                    }
                ),
                "http" => format!(
                    "{} {}{}",
                    event["method"].as_str().unwrap_or("?"),
                    event["host"].as_str().unwrap_or("?"),
                    event["path"].as_str().unwrap_or("?")
                ),
                "credential" => format!(
                    "{} {} {} {}",
                    event["protocol"].as_str().unwrap_or("?"),
                    event["mechanism"].as_str().unwrap_or("?"),
                    event["user"].as_str().unwrap_or("?"),
                    event["secret"].as_str().unwrap_or("?")
                ),
                _ => event.to_string(),
            };
            (kind, what)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(kind, what)| ((*kind).to_owned(), (*what).to_owned()))
        .collect()
}

#[test]
fn shared_captures_give_their_dns_names_and_http_requests_and_no_credentials() {
    if !privileged("shared_captures_give_their_dns_names_and_http_requests_and_no_credentials") {
        return;
    }
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "dns.pcap",
            vec![
                ("dns", "www.espn.com A NOERROR"),
                ("dns", "espn.go.com A NOERROR"),
                ("dns", "cdn.optimizely.com A NOERROR"),
                ("dns", "a1.espncdn.com A NOERROR"),
                ("dns", "assets.espn.go.com A NOERROR"),
                ("dns", "a2.espncdn.com A NOERROR"),
                ("dns", "a4.espncdn.com A NOERROR"),
            ],
        ),
        (
            "dns_query_response.pcapng",
            vec![
                ("dns", "wireshark.org A query"),
                ("dns", "wireshark.org A NOERROR"),
            ],
        ),
        (
            "dns_reverse_lookup.pcapng",
            vec![
                ("dns", "25.206.119.75.in-addr.arpa PTR query"),
                ("dns", "25.206.119.75.in-addr.arpa PTR NOERROR"),
            ],
        ),
        (
            "dns_tcp.pcapng",
            vec![
                ("dns", "ripe.net ANY query"),
                ("dns", "ripe.net ANY NOERROR"),
                ("dns", "ripe.net ANY query"),
                ("dns", "ripe.net ANY NOERROR"),
            ],
        ),
        (
            "udp_dnsrequest.pcapng",
            vec![("dns", "wireshark.org A query")],
        ),
        ("http_google.pcapng", vec![("http", "GET www.google.com/")]),
        (
            "http_post.pcapng",
            vec![
                ("http", "POST www.chrissanders.org/wp-comments-post.php"),
                ("http", "GET www.chrissanders.org/?p=310&cpage=1"),
            ],
        ),
        (
            "http_ip4and6.pcapng",
            vec![
                ("http", "GET 172.16.16.139/"),
                ("http", "GET [2001:db8:1:2::1000]/"),
            ],
        ),
        ("mail_sender_client_1.pcapng", vec![]),
    ];
    for (file, expected) in cases {
        let path = pcaps_dir().join(file);
        let output = replay(&[
            &path.to_string_lossy(),
            "--format",
            "json",
            "--show-secrets",
        ]);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(events_of(&records(&output)), pairs(&expected), "{file}");
    }
}

/// Every inspected protocol, over IPv4, IPv6 and VLAN, through the kernel's sampler and the
/// ring buffer: exactly the expected events.
#[test]
fn crafted_sessions_give_exactly_the_expected_events() {
    if !privileged("crafted_sessions_give_exactly_the_expected_events") {
        return;
    }
    let dir = ScratchDir::new("nwevents");
    let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let tcp_to = |builder: FrameBuilder, port: u16, text: &[u8]| {
        builder
            .transport(Transport::Tcp(PSH | ACK))
            .to_port(port)
            .raw_payload(text)
            .build()
            .bytes
    };
    let dns_query = |name: &str| {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.extend_from_slice(&[0, 0, 28, 0, 1]);
        message
    };
    let sessions: Vec<Vec<u8>> = vec![
        tcp_to(FrameBuilder::ipv4([10, 9, 0, 1]), 21, b"USER alice\r\n"),
        tcp_to(FrameBuilder::ipv4([10, 9, 0, 1]), 21, b"PASS wonderland\r\n"),
        tcp_to(FrameBuilder::ipv6(v6), 110, b"USER bob\r\nPASS builder\r\n"),
        tcp_to(
            FrameBuilder::ipv4([10, 9, 0, 2]).vlan(0x8100, 30),
            143,
            b"a1 LOGIN carol \"c4r0l pw\"\r\n",
        ),
        tcp_to(FrameBuilder::ipv4([10, 9, 0, 3]), 587, b"AUTH PLAIN AGRhdmUAZDR2Mw==\r\n"),
        tcp_to(FrameBuilder::ipv6(v6).vlan(0x88a8, 4).vlan(0x8100, 5), 25, b"AUTH LOGIN ZXZl\r\n"),
        tcp_to(FrameBuilder::ipv6(v6).vlan(0x88a8, 4).vlan(0x8100, 5), 25, b"ZXZlcHc=\r\n"),
        tcp_to(
            FrameBuilder::ipv4([10, 9, 0, 4]),
            80,
            b"GET /private HTTP/1.1\r\nHost: intranet\r\nUser-Agent: test/1\r\nAuthorization: Basic ZnJhbms6ZnJhbmtwdw==\r\n\r\n",
        ),
        tcp_to(
            FrameBuilder::ipv6(v6),
            8080,
            b"POST /signin HTTP/1.1\r\nHost: shop\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nemail=gina%40example.com&pwd=g1na",
        ),
        FrameBuilder::ipv4([10, 9, 0, 5]).to_port(53).raw_payload(&dns_query("updates.example.org")).build().bytes,
        FrameBuilder::ipv6(v6).vlan(0x8100, 6).to_port(53).raw_payload(&dns_query("v6.example.net")).build().bytes,
    ];
    let frames: Vec<(Duration, Vec<u8>)> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, frame)| {
            (
                Duration::from_secs(BASE) + Duration::from_millis(10 * i as u64),
                frame,
            )
        })
        .collect();
    let capture = dir.join("sessions.pcap");
    write_pcap(&capture, &frames);
    let output = replay(&[
        &capture.to_string_lossy(),
        "--format",
        "json",
        "--show-secrets",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = pairs(&[
        ("credential", "ftp USER/PASS alice wonderland"),
        ("credential", "pop3 USER/PASS bob builder"),
        ("credential", "imap LOGIN carol c4r0l pw"),
        ("credential", "smtp AUTH PLAIN dave d4v3"),
        ("credential", "smtp AUTH LOGIN eve evepw"),
        ("http", "GET intranet/private"),
        ("credential", "http Basic frank frankpw"),
        ("http", "POST shop/signin"),
        ("credential", "http form gina@example.com g1na"),
        ("dns", "updates.example.org AAAA query"),
        ("dns", "v6.example.net AAAA query"),
    ]);
    let records = records(&output);
    assert_eq!(events_of(&records), expected);
    let last = of_type(&records, "interval")
        .last()
        .copied()
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["cumulative"]["sampled_packets"], 11);

    // Without --show-secrets nothing secret is printed.
    let output = replay(&[&capture.to_string_lossy(), "--format", "json"]);
    let text = String::from_utf8_lossy(&output.stdout);
    for secret in [
        "wonderland",
        "builder",
        "c4r0l",
        "d4v3",
        "evepw",
        "frankpw",
        "g1na",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert_eq!(text.matches("<redacted>").count(), 7);
}

/// The history a replay leaves in the store answers `netwatch history`.
#[test]
fn history_answers_from_what_a_replay_kept() {
    if !privileged("history_answers_from_what_a_replay_kept") {
        return;
    }
    let dir = ScratchDir::new("nwhist");
    let (capture, config, _) = write_attack(&dir);
    let db = dir.join("history.db");
    let output = replay(&[
        &capture.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "--format",
        "json",
        "--db",
        &db.to_string_lossy(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reported: Vec<Value> = of_type(&records(&output), "alert")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(reported.len(), 8);
    let history = |args: &[&str]| -> Vec<Value> {
        let output = succeed(
            Command::new(netwatch_bin())
                .args([
                    "history",
                    "--db",
                    &db.to_string_lossy(),
                    "--since",
                    "87600h",
                    "--json",
                ])
                .args(args),
        );
        records(&output)
    };
    assert_eq!(
        history(&["alerts"]),
        reported,
        "the alerts of the period, as reported"
    );
    let top = history(&["top", "--limit", "2"]);
    assert_eq!(top[0]["source"], "198.51.100.66");
    assert_eq!(top[0]["packets"], 20_000);
    assert_eq!(top.len(), 2);
    let flood = history(&["source", "198.51.100.66"]);
    assert_eq!(flood.len(), 10, "ten intervals of flood");
    assert!(flood.iter().all(|row| row["packets"] == 2_000), "{flood:?}");
    // A period before the capture has nothing.
    let output = Command::new(netwatch_bin())
        .args(["history", "--db", &db.to_string_lossy(), "--json", "alerts"])
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(records(&output).is_empty());
}

/// Writes a classic pcap with snap length `snap_len`, each frame cut to it, with its original
/// length kept (as `tcpdump -s` writes).
fn write_snapped_pcap(path: &Path, snap_len: u32, frames: &[(Duration, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&snap_len.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (time, data) in frames {
        let captured = &data[..data.len().min(snap_len as usize)];
        out.extend_from_slice(&(time.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&time.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(captured.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(captured);
    }
    fs::write(path, out).unwrap_or_else(|err| panic!("{err}"));
}

/// A `tcpdump -s 64` capture replays, and its frames count by their length on the wire; so do
/// frames longer than the kernel runs (4 to 64 KiB, as GRO/TSO captures hold them). Frames too
/// short for an Ethernet header count as malformed, by their own length, in one summary line.
#[test]
fn snapped_long_and_runt_frames_count_by_wire_length() {
    if !privileged("snapped_long_and_runt_frames_count_by_wire_length") {
        return;
    }
    let dir = ScratchDir::new("nwsnap");
    let last_interval = |output: &Output| {
        let records = records(output);
        of_type(&records, "interval")
            .last()
            .copied()
            .cloned()
            .unwrap_or_default()
    };
    let frames: Vec<(Duration, Vec<u8>)> = (0..10u64)
        .map(|i| {
            let frame = FrameBuilder::ipv4([10, 0, 0, 1]).payload(400).build().bytes;
            (Duration::from_secs(BASE) + Duration::from_millis(i), frame)
        })
        .collect();
    let wire: u64 = frames.iter().map(|(_, frame)| frame.len() as u64).sum();
    let capture = dir.join("snapped.pcap");
    write_snapped_pcap(&capture, 64, &frames);
    let output = replay(&[&capture.to_string_lossy(), "--format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let last = last_interval(&output);
    assert_eq!(last["cumulative"]["packets"], 10, "{stderr}");
    assert_eq!(last["cumulative"]["bytes"], wire, "{stderr}");

    // GRO/TSO-sized frames, captured whole: 4 KiB to 64 KiB, and one past what the kernel
    // takes at all (the largest IP packet behind two VLAN tags is the most it is handed).
    let sizes = [4_000usize, 9_000, 16_384, 32_768, 65_000, 65_535];
    let long: Vec<(Duration, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let frame = FrameBuilder::ipv4([10, 0, 0, 2])
                .payload(size - 42)
                .build()
                .bytes;
            (
                Duration::from_secs(BASE) + Duration::from_millis(i as u64),
                frame,
            )
        })
        .collect();
    let wire: u64 = long.iter().map(|(_, frame)| frame.len() as u64).sum();
    assert_eq!(wire, sizes.iter().sum::<usize>() as u64);
    let capture = dir.join("long.pcap");
    write_pcap(&capture, &long);
    let output = replay(&[&capture.to_string_lossy(), "--format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let last = last_interval(&output);
    assert_eq!(last["cumulative"]["packets"], sizes.len(), "{stderr}");
    assert_eq!(last["cumulative"]["bytes"], wire, "{stderr}");
    let records = records(&output);
    let source_bytes: u64 = of_type(&records, "interval")
        .iter()
        .flat_map(|record| record["top"].as_array().cloned().unwrap_or_default())
        .filter(|source| source["source"] == "10.0.0.2")
        .filter_map(|source| source["bytes"].as_u64())
        .sum();
    assert_eq!(
        source_bytes, wire,
        "the source is counted by wire length too"
    );

    let runts: Vec<(Duration, Vec<u8>)> = (0..1000u64)
        .map(|i| {
            (
                Duration::from_secs(BASE) + Duration::from_millis(i),
                vec![0u8; (i % 14) as usize],
            )
        })
        .collect();
    let runt_bytes: u64 = runts.iter().map(|(_, frame)| frame.len() as u64).sum();
    let capture = dir.join("runts.pcap");
    write_pcap(&capture, &runts);
    let output = replay(&[&capture.to_string_lossy(), "--format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.lines().count() < 5, "{stderr}");
    assert!(
        stderr.contains("1000 frames shorter than an Ethernet header, counted as malformed"),
        "{stderr}"
    );
    let last = last_interval(&output);
    assert_eq!(last["cumulative"]["packets"], 1000, "{stderr}");
    assert_eq!(last["cumulative"]["malformed_packets"], 1000, "{stderr}");
    assert_eq!(
        last["cumulative"]["malformed_bytes"], runt_bytes,
        "{stderr}"
    );
    assert_eq!(last["cumulative"]["bytes"], runt_bytes, "{stderr}");
}

/// The interval clock of a capture: a trickle whose last frame falls half a millisecond into a
/// new interval, and a clock that leaps 80 years, raise nothing; the leap is said once and
/// crossed in one quiet interval.
#[test]
fn a_sliver_of_an_interval_and_a_time_jump_raise_nothing() {
    if !privileged("a_sliver_of_an_interval_and_a_time_jump_raise_nothing") {
        return;
    }
    let dir = ScratchDir::new("nwclock");
    let mut frames = Vec::new();
    // 10 pps for a minute, well past the warm-up of the spike baselines.
    stream(&mut frames, 0..60, 10, |_| {
        FrameBuilder::ipv4([10, 0, 0, 1]).payload(20)
    });
    // The last frame 0.5 ms into a new interval: one frame is 2,000 pkt/s over 0.5 ms.
    frames.push((
        Duration::from_secs(BASE + 60) + Duration::from_micros(500),
        FrameBuilder::ipv4([10, 0, 0, 1]).payload(20).build().bytes,
    ));
    let sliver = dir.join("sliver.pcap");
    write_pcap(&sliver, &frames);
    let leap = 80 * 365 * 24 * 3600;
    let mut leaping = frames.clone();
    for i in 0..5u64 {
        leaping.push((
            Duration::from_secs(BASE + 61 + leap) + Duration::from_millis(100 * i),
            FrameBuilder::ipv4([10, 0, 0, 1]).payload(20).build().bytes,
        ));
    }
    let jump = dir.join("jump.pcap");
    write_pcap(&jump, &leaping);
    let config = dir.join("netwatch.toml");
    fs::write(&config, "[detect.spike]\nwarmup = 10\nmin_pps = 5.0\n")
        .unwrap_or_else(|err| panic!("{err}"));
    for (capture, intervals) in [(&sliver, 61), (&jump, 63)] {
        let output = replay(&[
            &capture.to_string_lossy(),
            "--config",
            &config.to_string_lossy(),
            "--format",
            "json",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let records = records(&output);
        assert!(
            of_type(&records, "alert").is_empty(),
            "{}: {:?}",
            capture.display(),
            of_type(&records, "alert")
        );
        assert_eq!(of_type(&records, "interval").len(), intervals, "{stderr}");
        if capture == &jump {
            assert!(stderr.contains("a time jump"), "{stderr}");
        }
    }
}

/// The log: one line a message, `netwatch: ` first; `--log-level debug` adds the kernel side's
/// own diagnostic (aya-log, written while the free slots are queued at load), and not the
/// libraries' debug output; `RUST_LOG` does the same; the default leaves it out.
#[test]
fn the_log_level_brings_in_the_kernel_sides_diagnostics() {
    if !privileged("the_log_level_brings_in_the_kernel_sides_diagnostics") {
        return;
    }
    let capture = pcaps_dir().join("dns.pcap");
    let capture = capture.to_string_lossy();
    let kernel_line = "debug: the kernel queued free slots up to 65536";
    let stderr_of = |output: Output| {
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let debug = stderr_of(replay(&[&capture, "--log-level", "debug"]));
    assert!(debug.contains(kernel_line), "{debug}");
    assert!(
        debug.lines().all(|line| line.starts_with("netwatch: ")),
        "{debug}"
    );
    assert!(!debug.contains("BPF Feature Detection"), "{debug}");
    let env = Command::new(netwatch_bin())
        .args(["replay", &capture])
        .env("RUST_LOG", "warn,netwatch=debug")
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(stderr_of(env).contains(kernel_line));
    let default = stderr_of(replay(&[&capture]));
    assert!(!default.contains("debug:"), "{default}");
    let quiet = stderr_of(replay(&[&capture, "--log-level", "error"]));
    assert!(quiet.is_empty(), "{quiet}");
}
