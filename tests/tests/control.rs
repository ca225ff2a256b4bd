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

/// Sends `bytes` on a new connection to the daemon and reads its one-line answer (bounded).
fn raw_request(path: &std::path::Path, bytes: &[u8]) -> Value {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).unwrap_or_else(|err| panic!("{err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|err| panic!("{err}"));
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer);
    serde_json::from_str(line.lines().next().unwrap_or_default())
        .unwrap_or_else(|err| panic!("{line:?}: {err}"))
}

/// Hostile local clients (issue 30): 64 clients dripping a byte every 0.3 s without a
/// newline, each allowed a second from its connection, hold no slot for longer, and
/// `netwatch status` answers while they drip; a line of 4 KiB or more, or not UTF-8, is told
/// so; an unknown request's control bytes come back escaped once.
#[test]
fn dripping_clients_long_lines_and_bad_bytes_lock_nothing_out() {
    if !privileged("dripping_clients_long_lines_and_bad_bytes_lock_nothing_out") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor(&pair, &[]);
    let socket = pair.monitor.control_path();

    let drips: Vec<_> = (0..64)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || {
                use std::io::{Read as _, Write as _};
                let mut stream = std::os::unix::net::UnixStream::connect(&socket)
                    .unwrap_or_else(|err| panic!("{err}"));
                let started = Instant::now();
                // Drips for 4 s at most, or until the daemon has had enough.
                while started.elapsed() < Duration::from_secs(4) {
                    if stream.write_all(b"{").is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(300));
                }
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap_or_else(|err| panic!("{err}"));
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    // While they drip (4 s), status answers: at most a second after they connected.
    thread::sleep(Duration::from_millis(1_500));
    let output = run_status(&socket, true);
    assert!(
        output.status.success(),
        "status while 64 clients drip: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for drip in drips {
        let answer = drip.join().unwrap_or_else(|_| panic!("a drip client"));
        assert!(
            answer.contains("no whole request line within 1 s"),
            "{answer:?}"
        );
    }

    let mut long = serde_json::to_vec(&serde_json::json!({
        "version": control::PROTOCOL_VERSION,
        "request": "status",
        "reason": "x".repeat(5_000),
    }))
    .unwrap_or_else(|err| panic!("{err}"));
    long.push(b'\n');
    let answer = raw_request(&socket, &long);
    assert_eq!(answer["type"], "error");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("longer than 4096 bytes"),
        "{answer}"
    );
    let answer = raw_request(&socket, b"{\"version\":1,\"request\":\"st\xffatus\"}\n");
    assert!(
        answer["error"].as_str().unwrap_or("").contains("not UTF-8"),
        "{answer}"
    );
    let answer = raw_request(&socket, b"{\"version\":1,\"request\":\"\\u001b[2J\"}\n");
    let error = answer["error"].as_str().unwrap_or("");
    assert!(error.contains("unknown request \"\\x1b[2J\""), "{error:?}");
    assert!(
        !error.contains('\u{1b}') && !error.contains("\\\\"),
        "{error:?}"
    );

    let (exit, _, _) = daemon.stop(libc::SIGTERM);
    assert!(exit.success());
}

/// At its limits the daemon says it is busy, and `netwatch status` says so (it said "no
/// netwatch daemon answers ...: Broken pipe"); subscribers cannot take the room `status` and
/// `ban` need; a subscriber's stream ends with a line that tells a daemon stopping from a
/// dropped subscriber.
#[test]
fn a_full_daemon_says_it_is_busy_and_a_stopping_one_says_so() {
    if !privileged("a_full_daemon_says_it_is_busy_and_a_stopping_one_says_so") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor(&pair, &[]);
    let socket = pair.monitor.control_path();
    let subscribe = || {
        let mut reader =
            control::connect(&socket, "subscribe").unwrap_or_else(|err| panic!("{err}"));
        let mut first = String::new();
        reader
            .read_line(&mut first)
            .unwrap_or_else(|err| panic!("{err}"));
        (reader, first)
    };
    // 56 subscribers; the 57th is told the daemon is busy, and status still answers.
    let mut subscribers: Vec<_> = (0..56)
        .map(|_| {
            let (reader, hello) = subscribe();
            assert!(hello.contains("\"hello\""), "{hello}");
            reader
        })
        .collect();
    let (_, refused) = subscribe();
    assert!(
        refused.contains("\"busy\"") && refused.contains("56 subscribers"),
        "{refused}"
    );
    assert!(run_status(&socket, true).status.success());
    // The last 8 slots taken by clients that have not sent their line yet (each may hold
    // its slot for a second): status is told the daemon is busy, in one line.
    let holders: Vec<_> = (0..8)
        .map(|_| {
            std::os::unix::net::UnixStream::connect(&socket).unwrap_or_else(|err| panic!("{err}"))
        })
        .collect();
    let output = run_status(&socket, false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is busy"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    drop(holders);

    let last = subscribers.pop().unwrap_or_else(|| panic!("no subscriber"));
    drop(subscribers);
    // Room again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !run_status(&socket, true).status.success() {
        assert!(Instant::now() < deadline, "still busy");
        thread::sleep(Duration::from_millis(50));
    }
    let (exit, _, _) = daemon.stop(libc::SIGTERM);
    assert!(exit.success());
    last.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|err| panic!("{err}"));
    let lines: Vec<String> = last.lines().map_while(Result::ok).collect();
    let end: Value = serde_json::from_str(lines.last().map_or("", String::as_str))
        .unwrap_or_else(|err| panic!("{lines:?}: {err}"));
    assert_eq!(end["type"], "stopping", "{lines:?}");
}
