//! Fleets: sensors stream every record to Kafka, and ClickHouse keeps the network's history.
//! With a real Kafka-protocol broker (librdkafka's mock cluster, in a process and a network
//! namespace of its own: `src/bin/kafka-broker.rs`), a real consumer (kcat) and ClickHouse's
//! own engine (chdb) running the shipped schema and queries (`packaging/clickhouse/`).
//!
//! Each sensor runs in its namespace; the broker listens on its namespace's loopback, where
//! it also advertises itself, so each sensor's namespace has a relay on the same loopback
//! port (socat) into the broker's: traffic stays on loopback and in the tests' namespaces.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    daemon::Daemon,
    frames::{ACK, FrameBuilder, PSH, Transport, udp_flood},
    mmdb::write_mmdb,
    netns::{Netns, VethPair},
    privileged,
    process::{Guard, succeed},
};
use serde_json::Value;

/// The topics netwatch writes.
const TOPICS: [&str; 4] = [
    "netwatch.intervals.v1",
    "netwatch.alerts.v1",
    "netwatch.events.v1",
    "netwatch.mitigation.v1",
];

/// The broker in its namespace, and how to talk to it.
struct Broker {
    netns: Netns,
    child: Child,
    stdin: ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
    port: u16,
}

impl Broker {
    fn start() -> Self {
        let netns = Netns::new("nwkafka");
        let mut child = netns
            .command(env!("CARGO_BIN_EXE_kafka-broker"))
            .args(TOPICS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("kafka-broker: {err}"));
        let stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, answers) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = answers
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|err| panic!("the broker did not start: {err}"));
        let port = first
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{first:?}"));
        Self {
            netns,
            child,
            stdin,
            answers,
            port,
        }
    }

    fn tell(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap_or_else(|err| panic!("{err}"));
        let answer = self
            .answers
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|err| panic!("{command}: {err}"));
        assert_eq!(answer, "ok", "{command}");
    }

    /// A relay in `netns` from its loopback port to the broker's.
    fn relay(&self, netns: &Netns) -> Guard {
        let relay = Guard(
            netns
                .command("socat")
                .arg(format!(
                    "TCP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr",
                    self.port
                ))
                .arg(format!(
                    "EXEC:ip netns exec {} socat STDIO TCP\\:127.0.0.1\\:{}",
                    self.netns.name, self.port
                ))
                .spawn()
                .unwrap_or_else(|err| panic!("socat: {err}")),
        );
        // Listening before anyone connects.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let listening = netns.exec(&["ss", "-ltn"]);
            if String::from_utf8_lossy(&listening.stdout).contains(&format!(":{}", self.port)) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        relay
    }

    /// Every message of `topic` from its beginning, each as kcat's `format` says, in order.
    fn kcat(&self, topic: &str, format: &str) -> String {
        let output = succeed(self.netns.command("kcat").args([
            "-b",
            &format!("127.0.0.1:{}", self.port),
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            format,
        ]));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every message of `topic` from its beginning: key and JSON payload, in order.
    fn consume(&self, topic: &str) -> Vec<(String, Value)> {
        self.kcat(topic, "%k\t%s\n")
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (key, payload) = line.split_once('\t').unwrap_or(("", line));
                let value = serde_json::from_str(payload)
                    .unwrap_or_else(|err| panic!("{topic}: {payload:?}: {err}"));
                (key.to_owned(), value)
            })
            .collect()
    }

    /// Every message of `topic` as a consumer that must see each once reads it: the first
    /// of each `netwatch-queue-id` (a record whose acknowledgement a crash lost is produced
    /// again at the next start, as the README says); with how many repeats were dropped.
    fn consume_once(&self, topic: &str) -> (Vec<Value>, usize) {
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        let mut repeats = 0;
        for line in self.kcat(topic, "%h\t%s\n").lines() {
            let Some((headers, payload)) = line.split_once('\t') else {
                continue;
            };
            let id = headers
                .split(',')
                .find_map(|header| header.strip_prefix("netwatch-queue-id="))
                .unwrap_or_else(|| panic!("{topic}: no queue id in {headers:?}"))
                .to_owned();
            if !seen.insert(id) {
                repeats += 1;
                continue;
            }
            records.push(
                serde_json::from_str(payload)
                    .unwrap_or_else(|err| panic!("{topic}: {payload:?}: {err}")),
            );
        }
        (records, repeats)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sensor's configuration: a source over 500 pkt/s alerts; every record to the broker;
/// the AS and country databases of `enrich`, if given.
fn sensor_config(
    dir: &ScratchDir,
    name: &str,
    port: u16,
    enrich: Option<(&Path, &Path)>,
) -> String {
    let path = dir.join(&format!("{name}.toml"));
    let enrich = enrich.map_or(String::new(), |(asn, country)| {
        format!(
            "\n[enrich]\nasn_db = \"{}\"\ncountry_db = \"{}\"\n",
            asn.display(),
            country.display()
        )
    });
    fs::write(
        &path,
        format!(
            "[detect.source]\npps = 500.0\n\n[export.kafka]\nbrokers = [\"127.0.0.1:{port}\"]\n\
             sensor = \"{name}\"\n{enrich}"
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    path.display().to_string()
}

/// The JSON records a daemon wrote to stdout until it stopped.
fn stop(mut daemon: Daemon) -> (Vec<Value>, Vec<String>) {
    let (status, stdout, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{status}: {stderr:?}");
    let records = stdout
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{line:?}: {err}")))
        .collect();
    (records, stderr)
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Packets of each (sensor, source) over the interval records.
fn counted(intervals: &[(String, Value)]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (_, record) in intervals {
        for top in record["top"].as_array().into_iter().flatten() {
            *counts
                .entry((
                    record["sensor"].as_str().unwrap_or("?").to_owned(),
                    top["source"].as_str().unwrap_or("?").to_owned(),
                ))
                .or_default() += top["packets"].as_u64().unwrap_or(0);
        }
    }
    counts
}

/// Two sensors feed one broker: a consumer reads back every record, each with its sensor,
/// under its key, in order: the interval counts exact per sensor and source, the alerts with
/// their ids, the credential redacted (its secret nowhere). ClickHouse's engine runs the
/// shipped schema and the three queries over them, and their answers are the sensors'.
#[test]
fn two_sensors_feed_one_broker_and_clickhouse_answers() {
    if !privileged("two_sensors_feed_one_broker_and_clickhouse_answers") {
        return;
    }
    let broker = Broker::start();
    let dir = ScratchDir::new("nwfleet");
    let pairs = [VethPair::new(true), VethPair::new(true)];
    let _relays: Vec<Guard> = pairs
        .iter()
        .map(|pair| broker.relay(&pair.monitor))
        .collect();
    let (asn, country) = (dir.join("asn.mmdb"), dir.join("country.mmdb"));
    write_mmdb("asn", &asn, &["10.9.0.0/24=64500:EXAMPLE-NET"]);
    write_mmdb("country", &country, &["10.9.0.0/24=NL"]);
    let daemons: Vec<Daemon> = pairs
        .iter()
        .zip(["sensor-1", "sensor-2"])
        .map(|(pair, name)| {
            let config = sensor_config(&dir, name, broker.port, Some((&asn, &country)));
            Daemon::json_monitor(pair, &["--config", &config]).0
        })
        .collect();
    // Sensor 1: a flood from 10.9.0.2 (1,000 in 1 s) and an FTP login; sensor 2: 400 from
    // 10.9.0.2 and 300 from 10.8.0.5 over 1.5 s.
    let mut first = udp_flood([10, 9, 0, 2], 1_000, Duration::from_secs(1));
    first.push((
        Duration::from_millis(500),
        FrameBuilder::ipv4([10, 5, 5, 1])
            .transport(Transport::Tcp(PSH | ACK))
            .to_port(21)
            .raw_payload(b"USER admin\r\nPASS s3cret-pw\r\n")
            .build()
            .bytes,
    ));
    first.sort_by_key(|(at, _)| *at);
    let mut second = udp_flood([10, 9, 0, 2], 400, Duration::from_millis(1_500));
    second.extend(udp_flood([10, 8, 0, 5], 300, Duration::from_millis(1_500)));
    second.sort_by_key(|(at, _)| *at);
    let sending = [first, second]
        .into_iter()
        .zip(&pairs)
        .map(|(frames, pair)| pair.send_paced(frames))
        .collect::<Vec<_>>();
    assert_eq!(sending, [1_001, 700]);
    // The flood's end on sensor 1, a few intervals on both.
    thread::sleep(Duration::from_secs(3));
    let mut outputs = Vec::new();
    for daemon in daemons {
        outputs.push(stop(daemon));
    }

    let intervals = broker.consume(TOPICS[0]);
    let alerts = broker.consume(TOPICS[1]);
    let events = broker.consume(TOPICS[2]);
    // Each sensor's intervals: as many as it reported, each under its interface, in order.
    for (index, name) in ["sensor-1", "sensor-2"].into_iter().enumerate() {
        let mine: Vec<&(String, Value)> = intervals
            .iter()
            .filter(|(_, record)| record["sensor"] == name)
            .collect();
        let reported = of_type(&outputs[index].0, "interval");
        assert_eq!(mine.len(), reported.len(), "{name}'s intervals");
        assert!(
            mine.iter()
                .all(|(key, record)| *key == pairs[index].monitor_if && record["iface"] == *key),
            "{name}: keys"
        );
        let times: Vec<u64> = mine
            .iter()
            .map(|(_, record)| record["unix_ms"].as_u64().unwrap_or(0))
            .collect();
        assert!(
            times.windows(2).all(|pair| pair[0] < pair[1]),
            "{name}: in order, once each: {times:?}"
        );
    }
    let counts = counted(&intervals);
    let count = |sensor: &str, source: &str| {
        counts
            .get(&(sensor.to_owned(), source.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("sensor-1", "10.9.0.2"), 1_000, "{counts:?}");
    assert_eq!(count("sensor-1", "10.5.5.1"), 1, "{counts:?}");
    assert_eq!(count("sensor-2", "10.9.0.2"), 400, "{counts:?}");
    assert_eq!(count("sensor-2", "10.8.0.5"), 300, "{counts:?}");
    // The alerts with their ids, keyed by them.
    let reported: Vec<String> = of_type(&outputs[0].0, "alert")
        .iter()
        .map(|alert| alert["id"].as_str().unwrap_or("?").to_owned())
        .collect();
    let exported: Vec<String> = alerts
        .iter()
        .map(|(key, record)| {
            assert_eq!(record["id"], key.as_str());
            assert_eq!(record["sensor"], "sensor-1");
            key.clone()
        })
        .collect();
    assert_eq!(exported, reported);
    assert!(
        alerts
            .iter()
            .any(|(_, a)| a["kind"] == "threshold_pps" && a["subject"] == "10.9.0.2"),
        "{alerts:?}"
    );
    // The credential, redacted; its secret in no record at all.
    let credential = events
        .iter()
        .find(|(_, e)| e["event"] == "credential")
        .unwrap_or_else(|| panic!("no credential: {events:?}"));
    assert_eq!(credential.1["secret"], "<redacted>");
    assert_eq!(credential.1["user"], "admin");
    for topic in TOPICS {
        for (_, record) in broker.consume(topic) {
            assert!(!record.to_string().contains("s3cret"), "{record}");
        }
    }

    // ClickHouse: the shipped schema and queries, on the records consumed.
    let records = dir.join("records");
    fs::create_dir_all(&records).unwrap_or_else(|err| panic!("{err}"));
    for (file, messages) in [
        ("intervals", &intervals),
        ("alerts", &alerts),
        ("events", &events),
    ] {
        let lines: Vec<String> = messages.iter().map(|(_, v)| v.to_string()).collect();
        fs::write(records.join(format!("{file}.jsonl")), lines.join("\n"))
            .unwrap_or_else(|err| panic!("{err}"));
    }
    let answers = clickhouse(&records, "10.9.0.2");
    let top = &answers["top_sources"][0];
    assert_eq!(top["source"], "10.9.0.2", "{answers}");
    assert_eq!(top["packets"].as_u64(), Some(1_400), "{answers}");
    assert_eq!(top["sensors"].as_u64(), Some(2), "{answers}");
    // Its AS and country, as the sensors' databases said them.
    assert_eq!(top["asn"].as_u64(), Some(64500), "{answers}");
    assert_eq!(top["country"], "NL", "{answers}");
    let attacks = answers["attacks"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<&str> = attacks.iter().filter_map(|a| a["id"].as_str()).collect();
    let reported: BTreeSet<&str> = reported.iter().map(String::as_str).collect();
    assert_eq!(ids, reported, "{answers}");
    let history = answers["history"].as_array().cloned().unwrap_or_default();
    let total: u64 = history.iter().filter_map(|h| h["packets"].as_u64()).sum();
    assert_eq!(total, 1_400, "{answers}");
    assert_eq!(
        answers["counts"]["netwatch_intervals"].as_u64(),
        Some(intervals.len() as u64)
    );
}

/// Runs tests/clickhouse/check.py over the records: the queries' answers.
fn clickhouse(records: &Path, source: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let day = succeed(Command::new("date").args(["-u", "+%Y-%m-%d"]));
    let day = String::from_utf8_lossy(&day.stdout).trim().to_owned();
    let output = succeed(
        Command::new("python3")
            .arg(root.join("tests/clickhouse/check.py"))
            .arg(root.join("packaging/clickhouse/schema.sql"))
            .arg(root.join("packaging/clickhouse/queries.sql"))
            .arg(records)
            .arg(format!("{day} 00:00:00"))
            .arg("2100-01-01 00:00:00")
            .arg(source),
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}"))
}

/// The records queued for Kafka in the store at `db`, as JSON.
fn queued(db: &Path) -> Vec<Value> {
    let output = succeed(Command::new("python3").args([
        "-c",
        "import sqlite3, sys, json\n\
         c = sqlite3.connect(sys.argv[1])\n\
         print(json.dumps([r[0] for r in c.execute(\"SELECT record FROM webhook_queue WHERE url = 'kafka' ORDER BY id\")]))",
        db.to_str().unwrap_or_default(),
    ]));
    let lines: Vec<String> =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}"));
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}")))
        .collect()
}

/// The broker stops for 30 s under traffic, and the sensor is killed with -9 meanwhile and
/// started again: every record queued arrives, once, in order; the outage is said when it
/// starts and when it ends.
#[test]
fn a_broker_away_for_30s_and_a_crash_lose_nothing() {
    if !privileged("a_broker_away_for_30s_and_a_crash_lose_nothing") {
        return;
    }
    let mut broker = Broker::start();
    let dir = ScratchDir::new("nwfleet2");
    let pair = VethPair::new(true);
    let _relay = broker.relay(&pair.monitor);
    let config = sensor_config(&dir, "sensor-1", broker.port, None);
    let (daemon, _) = Daemon::json_monitor(&pair, &["--config", &config]);
    // Traffic all along: 20 frames every 100 ms for 40 s.
    let frames = udp_flood([10, 7, 0, 1], 8_000, Duration::from_secs(40));
    let sending = thread::scope(|scope| {
        let pair = &pair;
        let sender = scope.spawn(move || pair.send_paced(frames));
        thread::sleep(Duration::from_secs(2));
        broker.tell("down");
        let down_at = Instant::now();
        thread::sleep(Duration::from_secs(10));
        // A crash while the broker is away: what the store queued waits for the next start.
        let mut daemon = daemon;
        daemon.signal(libc::SIGKILL);
        let _ = daemon.wait_exit();
        let waiting = queued(&pair.monitor.db_path());
        assert!(
            !waiting.is_empty(),
            "nothing queued while the broker was away"
        );
        let (second, _) = Daemon::json_monitor(pair, &["--config", &config]);
        thread::sleep(Duration::from_secs(30).saturating_sub(down_at.elapsed()));
        broker.tell("up");
        let sent = sender.join().unwrap_or_else(|_| panic!("sender"));
        (sent, waiting, second)
    });
    let (sent, waiting, second) = sending;
    assert_eq!(sent, 8_000);
    thread::sleep(Duration::from_secs(2));
    let (records, stderr) = stop(second);
    // Each record once and in order, as a consumer that drops a queue id it has seen reads
    // them: a crash may have lost an acknowledgement, and the record went out again.
    let (intervals, repeats) = broker.consume_once(TOPICS[0]);
    eprintln!("{repeats} intervals produced again after the crash");
    let times: Vec<u64> = intervals
        .iter()
        .map(|record| record["unix_ms"].as_u64().unwrap_or(0))
        .collect();
    let disorder: Vec<(usize, u64, u64)> = times
        .windows(2)
        .enumerate()
        .filter(|(_, pair)| pair[0] >= pair[1])
        .map(|(at, pair)| (at, pair[0], pair[1]))
        .collect();
    assert!(
        disorder.is_empty(),
        "in order, once each: {} of {} out of order or twice, the first: {:?}",
        disorder.len(),
        times.len(),
        &disorder[..disorder.len().min(5)]
    );
    let exported: BTreeSet<u64> = times.iter().copied().collect();
    // Everything queued at the crash, and everything the second run reported, arrived.
    for record in waiting.iter().filter(|r| r["type"] == "interval") {
        let at = record["unix_ms"].as_u64().unwrap_or(0);
        assert!(exported.contains(&at), "queued at the crash, lost: {at}");
    }
    for record in of_type(&records, "interval") {
        let at = record["unix_ms"].as_u64().unwrap_or(0);
        assert!(
            exported.contains(&at),
            "reported after the restart, lost: {at}"
        );
    }
    // The second run found the broker away, and said so once, then its return.
    let joined = stderr.join("\n");
    assert_eq!(joined.matches("do not take records").count(), 1, "{joined}");
    assert!(joined.contains("take records again"), "{joined}");
}
