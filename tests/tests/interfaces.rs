//! Several interfaces in one daemon, end to end: two veth pairs whose monitored ends share a
//! namespace, watched by one `netwatch monitor -i A -i B`.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    daemon::{Daemon, SETTLE},
    frames::FrameBuilder,
    netns::{VethPair, ip},
    netwatch_bin, privileged,
};
use serde_json::Value;

/// Moves the monitored end of `pair` into the namespace of `host`'s monitored end.
fn move_monitored_end(pair: &VethPair, host: &VethPair) {
    ip(&[
        "-n",
        &pair.monitor.name,
        "link",
        "set",
        &pair.monitor_if,
        "netns",
        &host.monitor.name,
    ]);
    host.monitor
        .exec(&["ip", "link", "set", &pair.monitor_if, "up"]);
}

/// Reads the daemon's records until `done` says so; returns them all.
fn read_until(daemon: &mut Daemon, seen: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = daemon
            .stdout
            .recv_timeout(left)
            .unwrap_or_else(|err| panic!("{err}; last records: {:?}", seen.last()));
        if let Ok(record) = serde_json::from_str::<Value>(&line) {
            seen.push(record);
        }
    }
}

/// The last interval record of `iface`, if any.
fn last_interval<'a>(records: &'a [Value], iface: &str) -> Option<&'a Value> {
    records
        .iter()
        .rev()
        .find(|r| r["type"] == "interval" && r["iface"] == iface)
}

fn cumulative(records: &[Value], iface: &str) -> u64 {
    last_interval(records, iface)
        .and_then(|r| r["cumulative"]["packets"].as_u64())
        .unwrap_or(0)
}

/// What `source` sent on `iface`, summed over its interval records.
fn source_packets(records: &[Value], iface: &str, source: &str) -> u64 {
    records
        .iter()
        .filter(|r| r["type"] == "interval" && r["iface"] == iface)
        .flat_map(|r| r["top"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["source"] == source)
        .filter_map(|s| s["packets"].as_u64())
        .sum()
}

fn paced(src: [u8; 4], count: usize, over: Duration) -> Vec<(Duration, Vec<u8>)> {
    (0..count)
        .map(|i| {
            (
                over * i as u32 / count as u32,
                FrameBuilder::ipv4(src).payload(40).build().bytes,
            )
        })
        .collect()
}

#[test]
fn one_daemon_watches_two_interfaces_and_their_sum() {
    if !privileged("one_daemon_watches_two_interfaces_and_their_sum") {
        return;
    }
    let a = VethPair::new(true);
    let b = VethPair::new(true);
    move_monitored_end(&b, &a);
    let dir = ScratchDir::new("nwifs");
    let config = dir.join("netwatch.toml");
    // Each interface alone stays under the global limit (about 300 pkt/s each); their sum
    // does not. Every source over 5 pkt/s alerts, on its own interface.
    std::fs::write(
        &config,
        "[detect]\nglobal = { pps = 450.0 }\nsource = { pps = 5.0 }\n[detect.spike]\nenabled = false\n[detect.unknown]\nenabled = false\n",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let mut command = a.monitor.command(&netwatch_bin().to_string_lossy());
    command
        .args(["monitor", "-i", &a.monitor_if, "-i", &b.monitor_if])
        .args(["--format", "json", "--interval", "200ms", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(a.monitor.db_path())
        .arg("--control")
        .arg(a.monitor.control_path());
    let mut daemon = Daemon::spawn(command);
    daemon.wait_stderr(&format!("attached to {}", a.monitor_if));
    daemon.wait_stderr(&format!("attached to {}", b.monitor_if));

    let status = Command::new(netwatch_bin())
        .args(["status", "--json", "--control"])
        .arg(a.monitor.control_path())
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    let status: Value =
        serde_json::from_slice(&status.stdout).unwrap_or_else(|err| panic!("{err}"));
    let names: Vec<&str> = status["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["iface"].as_str())
        .collect();
    assert_eq!(names, [a.monitor_if.as_str(), b.monitor_if.as_str()]);

    // Both at once, 300 frames each over a second.
    let over = Duration::from_secs(1);
    thread::scope(|scope| {
        scope.spawn(|| a.send_paced(paced([10, 20, 0, 1], 300, over)));
        scope.spawn(|| b.send_paced(paced([10, 30, 0, 1], 300, over)));
    });
    let mut records = Vec::new();
    read_until(&mut daemon, &mut records, |seen| {
        cumulative(seen, &a.monitor_if) >= 300
            && cumulative(seen, &b.monitor_if) >= 300
            && cumulative(seen, "all") >= 600
    });
    // One more round, for the alerts of the last interval.
    let rounds = records.len();
    read_until(&mut daemon, &mut records, |seen| {
        seen[rounds..]
            .iter()
            .filter(|r| r["type"] == "interval" && r["iface"] == "all")
            .count()
            >= 2
    });
    assert_eq!(cumulative(&records, &a.monitor_if), 300);
    assert_eq!(cumulative(&records, &b.monitor_if), 300);
    assert_eq!(cumulative(&records, "all"), 600);
    assert_eq!(source_packets(&records, &a.monitor_if, "10.20.0.1"), 300);
    assert_eq!(source_packets(&records, &b.monitor_if, "10.30.0.1"), 300);
    assert_eq!(source_packets(&records, &a.monitor_if, "10.30.0.1"), 0);
    assert_eq!(source_packets(&records, "all", "10.20.0.1"), 300);
    assert_eq!(source_packets(&records, "all", "10.30.0.1"), 300);

    let alerts: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "alert" && r["state"] == "start")
        .collect();
    let started = |iface: &str, subject: &str| {
        alerts
            .iter()
            .any(|r| r["iface"] == iface && r["subject"] == subject && r["kind"] == "threshold_pps")
    };
    assert!(started(&a.monitor_if, "10.20.0.1"), "{alerts:?}");
    assert!(started(&b.monitor_if, "10.30.0.1"), "{alerts:?}");
    assert!(
        started("all", "global"),
        "the sum crosses the global limit: {alerts:?}"
    );
    assert!(
        !started(&a.monitor_if, "global") && !started(&b.monitor_if, "global"),
        "neither interface alone does: {alerts:?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|r| r["iface"] == "all" && r["subject"] != "global"),
        "the sum runs the global rules only: {alerts:?}"
    );

    // B is deleted: reported, A still counted.
    a.monitor.exec(&["ip", "link", "del", &b.monitor_if]);
    daemon.wait_stderr(&format!("{} went away", b.monitor_if));
    a.send(
        (0..20)
            .map(|_| FrameBuilder::ipv4([10, 20, 0, 2]).build().bytes)
            .collect(),
    );
    read_until(&mut daemon, &mut records, |seen| {
        cumulative(seen, &a.monitor_if) >= 320
    });
    assert_eq!(cumulative(&records, &a.monitor_if), 320);

    // B comes back under the same name: attached again, and counted again.
    ip(&[
        "link",
        "add",
        &b.monitor_if,
        "netns",
        &a.monitor.name,
        "type",
        "veth",
        "peer",
        "name",
        &b.sender_if,
        "netns",
        &b.sender.name,
    ]);
    b.sender.exec(&["ip", "link", "set", &b.sender_if, "up"]);
    a.monitor.exec(&["ip", "link", "set", &b.monitor_if, "up"]);
    daemon.wait_stderr(&format!("{} is back", b.monitor_if));
    b.send(
        (0..10)
            .map(|_| FrameBuilder::ipv4([10, 30, 0, 2]).build().bytes)
            .collect(),
    );
    read_until(&mut daemon, &mut records, |seen| {
        cumulative(seen, &b.monitor_if) >= 310
    });
    assert_eq!(cumulative(&records, &b.monitor_if), 310);
    assert_eq!(source_packets(&records, &b.monitor_if, "10.30.0.2"), 10);

    let (exit, _, stderr) = daemon.stop(libc::SIGTERM);
    assert!(exit.success(), "{stderr:?}");
}
