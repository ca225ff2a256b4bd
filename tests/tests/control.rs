//! The control socket of a running daemon, end to end: `netwatch status`, subscriptions,
//! the socket's permissions, and the daemons and paths it refuses.

use std::{
    io::BufRead as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    process::{Command, Output},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use netwatch::control;
use netwatch_tests::{
    ScratchDir,
    daemon::{Daemon, expect_failure},
    frames::FrameBuilder,
    netns::VethPair,
    netwatch_bin, privileged,
};
use serde_json::Value;

fn run_status(path: &std::path::Path, json: bool) -> Output {
    let mut command = Command::new(netwatch_bin());
    command.arg("status").arg("--control").arg(path);
    if json {
        command.arg("--json");
    }
    command.output().unwrap_or_else(|err| panic!("{err}"))
}

fn status_json(path: &std::path::Path) -> Value {
    let output = run_status(path, true);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}"))
}

/// `netwatch status` asks the daemon on its socket: the interface and its mode, what it
/// counted, as JSON and as a summary; the socket is the daemon user's alone.
#[test]
fn status_names_the_interface_and_what_was_counted() {
    if !privileged("status_names_the_interface_and_what_was_counted") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwstat");
    let config = dir.join("netwatch.toml");
    std::fs::write(&config, "[detect]\nsource = { pps = 5.0 }\n")
        .unwrap_or_else(|err| panic!("{err}"));
    let (mut daemon, _) = Daemon::json_monitor(&pair, &["--config", &config.to_string_lossy()]);
    let socket = pair.monitor.control_path();
    let meta = std::fs::symlink_metadata(&socket).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });

    let frames: Vec<Vec<u8>> = (0..30)
        .map(|_| FrameBuilder::ipv4([10, 9, 0, 1]).payload(40).build().bytes)
        .collect();
    pair.send(frames);
    let mut reports = Vec::new();
    daemon.wait_cumulative(30, &mut reports);

    let status = status_json(&socket);
    assert_eq!(status["version"], control::PROTOCOL_VERSION);
    assert_eq!(status["type"], "status");
    let interfaces = status["interfaces"].as_array().cloned().unwrap_or_default();
    assert_eq!(interfaces.len(), 1, "{status}");
    assert_eq!(interfaces[0]["iface"], pair.monitor_if.as_str());
    assert_eq!(interfaces[0]["mode"], "driver");
    assert_eq!(status["counts"]["packets"], 30, "{status}");
    assert!(status["uptime_s"].as_f64().unwrap_or(0.0) > 0.0);
    // The alert of the threshold, once its interval has been reported.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = status_json(&socket);
        if !status["last_alerts"].as_array().is_none_or(Vec::is_empty) {
            break status;
        }
        assert!(Instant::now() < deadline, "no alert: {status}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        status["last_alerts"][0]["kind"], "threshold_pps",
        "{status}"
    );
    assert_eq!(status["last_alerts"][0]["subject"], "10.9.0.1", "{status}");

    let output = run_status(&socket, false);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains(&pair.monitor_if), "{text}");
    assert!(text.contains("30 packets"), "{text}");
    assert!(text.contains("threshold_pps"), "{text}");

    let (exit, _, _) = daemon.stop(libc::SIGTERM);
    assert!(exit.success());
    assert!(!socket.exists(), "the socket goes with the daemon");
    let output = run_status(&socket, true);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no netwatch daemon answers"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A second daemon on the same socket is refused with one line, before it attaches, and the
/// first goes on; so is a socket path that is a symbolic link or another user's file.
#[test]
fn a_second_daemon_and_unsafe_paths_are_refused() {
    if !privileged("a_second_daemon_and_unsafe_paths_are_refused") {
        return;
    }
    let pair = VethPair::new(true);
    let other = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor(&pair, &[]);
    let socket = pair.monitor.control_path();
    let dir = ScratchDir::new("nwctl");
    let monitor_on = |control: &std::path::Path| {
        let mut command = other.monitor.command(&netwatch_bin().to_string_lossy());
        command
            .args(["monitor", "-i", &other.monitor_if, "--db"])
            .arg(other.monitor.db_path())
            .arg("--control")
            .arg(control);
        Daemon::spawn(command)
    };
    let line = expect_failure(monitor_on(&socket), "another netwatch is running on it");
    assert!(
        line.contains(&socket.to_string_lossy().into_owned()),
        "{line}"
    );
    assert!(
        other.monitor.xdp_attachment(&other.monitor_if).is_none(),
        "refused before attaching"
    );

    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&socket, &link).unwrap_or_else(|err| panic!("{err}"));
    expect_failure(monitor_on(&link), "is a symbolic link");

    let foreign = dir.join("foreign.sock");
    std::fs::write(&foreign, b"").unwrap_or_else(|err| panic!("{err}"));
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534))
        .unwrap_or_else(|err| panic!("{err}"));
    expect_failure(monitor_on(&foreign), "is owned by uid 65534");

    // The first daemon never noticed.
    assert_eq!(
        status_json(&socket)["interfaces"][0]["iface"],
        pair.monitor_if.as_str()
    );
    let (exit, _, _) = daemon.stop(libc::SIGTERM);
    assert!(exit.success());
}

/// A subscriber gets the hello and then the same interval records as the JSON output; one that
/// never reads is dropped once it is a queue behind, counted in the status, while the
/// intervals go on at their pace.
#[test]
fn a_subscriber_that_never_reads_is_dropped_and_delays_nothing() {
    if !privileged("a_subscriber_that_never_reads_is_dropped_and_delays_nothing") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor_every(&pair, "10ms", &["--top", "200"]);
    let socket = pair.monitor.control_path();

    let mut reader = control::connect(&socket, "subscribe").unwrap_or_else(|err| panic!("{err}"));
    reader
        .get_ref()
        .set_read_timeout(None)
        .unwrap_or_else(|err| panic!("{err}"));
    let mut hello = String::new();
    reader
        .read_line(&mut hello)
        .unwrap_or_else(|err| panic!("{err}"));
    let hello: Value = serde_json::from_str(&hello).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["version"], control::PROTOCOL_VERSION);
    let (tx, read) = mpsc::channel();
    thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Subscribes and never reads.
    let stuck = control::connect(&socket, "subscribe").unwrap_or_else(|err| panic!("{err}"));

    // Big records: 200 sources in the first intervals.
    let frames: Vec<Vec<u8>> = (0..2_000u32)
        .map(|i| {
            FrameBuilder::ipv4([10, 8, 0, (i % 200) as u8 + 1])
                .payload(40)
                .build()
                .bytes
        })
        .collect();
    pair.send(frames);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut times = Vec::new();
    let mut stdout_intervals = Vec::new();
    loop {
        let status = status_json(&socket);
        if status["subscribers_dropped"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(
                status["subscribers"], 1,
                "the reader is still there: {status}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never dropped: {status}");
        while let Ok(line) = daemon.stdout.try_recv() {
            let record: Value = serde_json::from_str(&line).unwrap_or_default();
            if record["type"] == "interval" {
                times.push(record["unix_ms"].as_u64().unwrap_or(0));
                stdout_intervals.push(record);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    // Dropped once 256 records are queued for it or its socket took nothing for 5 s,
    // whichever comes first: by then the intervals went on (a hundred at least at 10 ms, even
    // from a slow debug build), and none of them waited for it: a stalled collection would
    // leave a hole in the times.
    assert!(times.len() >= 100, "{} intervals", times.len());
    let widest = times.windows(2).map(|w| w[1].saturating_sub(w[0])).max();
    assert!(
        widest.unwrap_or(0) < 2_000,
        "an interval waited {widest:?} ms"
    );
    drop(stuck);

    let (exit, rest, _) = daemon.stop(libc::SIGTERM);
    assert!(exit.success());
    stdout_intervals.extend(
        rest.iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|record| record["type"] == "interval"),
    );
    // The reader's stream ends with the daemon, holding what stdout held.
    let subscribed: Vec<Value> = read
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|record| record["type"] == "interval")
        .collect();
    let last = |records: &[Value]| records.last().map(|r| r["cumulative"]["packets"].clone());
    assert_eq!(last(&subscribed), last(&stdout_intervals));
    assert_eq!(last(&subscribed), Some(Value::from(2_000)));
    assert_eq!(
        subscribed.len(),
        stdout_intervals.len(),
        "every interval record"
    );
}
