//! The metrics endpoint against the real tools: `promtool check metrics` accepts it, and a
//! real Prometheus server, started by the test on loopback inside the test's network
//! namespace, scrapes netwatch and answers a PromQL query with the packet count the test sent.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    frames::FrameBuilder,
    http_get,
    netns::VethPair,
    netwatch_bin, privileged,
    process::{Guard, lines},
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9477";
const PROMETHEUS: &str = "127.0.0.1:9090";

#[test]
fn promtool_accepts_the_metrics_and_prometheus_scrapes_the_count_sent() {
    if !privileged("promtool_accepts_the_metrics_and_prometheus_scrapes_the_count_sent") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwprom");
    let mut netwatch = Guard(
        pair.monitor
            .command(&netwatch_bin().to_string_lossy())
            .args(["monitor", "-i", &pair.monitor_if, "--format", "json"])
            .args(["--interval", "200ms", "--metrics-addr", METRICS, "--db"])
            .arg(pair.monitor.db_path())
            .arg("--control")
            .arg(pair.monitor.control_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("netwatch: {err}")),
    );
    let stdout = lines(
        netwatch
            .0
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout")),
    );
    let err = netwatch
        .0
        .stderr
        .take()
        .unwrap_or_else(|| panic!("no stderr"));
    let mut err = BufReader::new(err);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("attached to") {
        line.clear();
        assert!(Instant::now() < deadline, "netwatch did not attach");
        assert!(
            err.read_line(&mut line).unwrap_or(0) > 0,
            "netwatch exited: {line}"
        );
    }
    thread::spawn(move || for _ in err.lines() {});

    // promtool on what netwatch serves.
    let (status, body) = pair
        .monitor
        .run(|| http_get(METRICS, "/metrics"))
        .unwrap_or_else(|err| panic!("GET /metrics: {err}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("netwatch_attach_info{iface="), "{body}");
    let metrics_file = dir.join("metrics.txt");
    fs::write(&metrics_file, &body).unwrap_or_else(|err| panic!("{err}"));
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(&metrics_file).unwrap_or_else(|err| panic!("{err}")))
        .output()
        .unwrap_or_else(|err| panic!("promtool: {err}"));
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // A real Prometheus, scraping every second.
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: netwatch\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let _prometheus = Guard(
        pair.monitor
            .command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("prometheus: {err}")),
    );

    let sent = 123;
    let frames = (0..sent)
        .map(|i| {
            FrameBuilder::ipv4([10, 8, 8, (i % 3) as u8])
                .payload(30)
                .build()
                .bytes
        })
        .collect();
    assert_eq!(pair.send(frames), sent);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stdout
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("netwatch never counted {sent}: {err}"));
        let record: Value = serde_json::from_str(&line).unwrap_or_default();
        if record["cumulative"]["packets"].as_u64() == Some(sent as u64) {
            break;
        }
    }
    // After readings: how long the last one took, and which map the kernel counts in.
    let (_, body) = pair
        .monitor
        .run(|| http_get(METRICS, "/metrics"))
        .unwrap_or_else(|err| panic!("GET /metrics: {err}"));
    let read_seconds = body
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!(
                "netwatch_map_read_seconds{{iface=\"{}\"}} ",
                pair.monitor_if
            ))
        })
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no netwatch_map_read_seconds: {body}"));
    assert!(read_seconds > 0.0, "the map read was not recorded");
    assert!(body.contains(r#"source_map="per-cpu""#), "{body}");

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus never reported {sent}; last answer: {last}"
        );
        thread::sleep(Duration::from_millis(500));
        let answer = pair.monitor.run(|| {
            http_get(
                PROMETHEUS,
                "/api/v1/query?query=netwatch_packets_total%7Bjob%3D%22netwatch%22%7D",
            )
        });
        let Ok((200, body)) = answer else {
            last = format!("{answer:?}");
            continue;
        };
        let value: Value = serde_json::from_str(&body).unwrap_or_default();
        let count = value["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|count| count.parse::<f64>().ok());
        if count == Some(sent as f64) {
            break;
        }
        last = body;
    }
}
