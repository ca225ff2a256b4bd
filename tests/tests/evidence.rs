//! A packet capture of every attack, taken by the kernel program while it lasts, through the
//! real binary: replays of captures written here (the replay writes the captures of what it
//! alerts on), read back by tshark; each capture holds its subject's frames only, within its
//! budget; a capture replays to an alert of the same attack type; a disk that fills cuts the
//! capture, says so once, and the alerts go on.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use netwatch_tests::{
    ScratchDir,
    frames::{FrameBuilder, Transport},
    privileged,
    process::succeed,
    replay::{of_type, records, replay, stream, write_case},
};
use serde_json::Value;

/// tshark's fields of each packet of `file`, tab-separated; panics unless tshark reads the
/// whole file without complaint.
fn tshark(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r".to_owned(),
        file.display().to_string(),
        "-T".to_owned(),
        "fields".to_owned(),
    ];
    for field in fields {
        args.push("-e".to_owned());
        args.push((*field).to_owned());
    }
    let output = succeed(Command::new("tshark").args(&args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("appears to have been cut short") && !stderr.contains("isn't a capture"),
        "{stderr}"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Ten benign hosts of 10.0.0.0/24, 11 to 20 frames a second each, for `seconds`.
fn benign(frames: &mut Vec<(Duration, Vec<u8>)>, seconds: u64) {
    for host in 1..=10u8 {
        stream(frames, 0..seconds, 10 + u64::from(host), move |_| {
            FrameBuilder::ipv4([10, 0, 0, host])
                .to_ipv4([10, 0, 1, 1])
                .payload(60)
        });
    }
}

/// Replays `capture` with `config` and `extra`, JSON out; the records, and stderr.
fn replayed(capture: &Path, config: &Path, extra: &[&str]) -> (Vec<Value>, String) {
    let mut args = vec![
        capture.to_str().unwrap_or_default(),
        "--config",
        config.to_str().unwrap_or_default(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let output = replay(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (records(&output), stderr)
}

/// The end line of the alert of `kind` on `subject`.
fn end_of<'a>(alerts: &[&'a Value], kind: &str, subject: &str) -> &'a Value {
    alerts
        .iter()
        .find(|a| a["kind"] == kind && a["subject"] == subject && a["state"] == "end")
        .copied()
        .unwrap_or_else(|| panic!("no end of {kind} on {subject}"))
}

/// A flood from one source among benign hosts: its alerts' captures. The source's holds its
/// frames only, the first 50 in full then about 100 a second, as many as its end line says,
/// and tshark reads it; its start line names the file with no frame yet. Replayed, the
/// capture gives an alert of the same attack type.
#[test]
fn a_flood_from_one_source_gives_one_capture_of_its_frames() {
    if !privileged("a_flood_from_one_source_gives_one_capture_of_its_frames") {
        return;
    }
    let dir = ScratchDir::new("nwevid");
    let mut frames = Vec::new();
    benign(&mut frames, 100);
    // 5,000 pkt/s of UDP to one port for 10 s.
    stream(&mut frames, 60..70, 5_000, |_| {
        FrameBuilder::ipv4([198, 51, 100, 66])
            .to_ipv4([10, 0, 1, 9])
            .to_port(53)
            .payload(100)
    });
    let (capture, config) = write_case(&dir, frames, "[networks]\nlocal = [\"10.0.1.0/24\"]\n");
    let captures = dir.join("captures");
    let (records, _) = replayed(
        &capture,
        &config,
        &["--capture-dir", captures.to_str().unwrap_or_default()],
    );
    let alerts = of_type(&records, "alert");
    let start = alerts
        .iter()
        .find(|a| a["kind"] == "heavy_hitter" && a["subject"] == "198.51.100.66")
        .unwrap_or_else(|| panic!("no heavy hitter: {alerts:?}"));
    let id = start["id"].as_str().unwrap_or("?");
    let file = format!("{id}.pcapng");
    assert_eq!(start["capture"]["file"], file.as_str());
    assert_eq!(start["capture"]["frames"], 0);
    let end = end_of(&alerts, "heavy_hitter", "198.51.100.66");
    let frames = end["capture"]["frames"].as_u64().unwrap_or(0);
    assert_eq!(end["capture"]["cut"], Value::Null);
    // From the end of its first second to its end: about 9 s at about 100 a second (one in
    // 64 of 5,000 is 78), after 50 in full.
    assert!((500..=1_000).contains(&frames), "{frames} frames");
    let packets = tshark(&captures.join(&file), &["ip.src", "ip.dst", "udp.dstport"]);
    assert_eq!(packets.len() as u64, frames, "tshark reads every frame");
    assert!(
        packets
            .iter()
            .all(|p| p == &["198.51.100.66", "10.0.1.9", "53"]),
        "only the source's frames: {:?}",
        packets.iter().find(|p| p[0] != "198.51.100.66")
    );
    // The file says what it is: tshark's capinfos view of the section's comment.
    let info = succeed(Command::new("capinfos").arg(captures.join(&file)));
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(&format!(
            "netwatch event {id}: heavy_hitter from 198.51.100.66/32"
        )),
        "{info}"
    );
    // Files for the owner alone.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&captures)
            .map(|m| m.permissions().mode() & 0o777)
            .ok(),
        Some(0o700)
    );
    assert_eq!(
        fs::metadata(captures.join(&file))
            .map(|m| m.permissions().mode() & 0o777)
            .ok(),
        Some(0o600)
    );

    // The capture replays to an alert of the same attack type (its rate is the sample's:
    // a low threshold says so).
    let again = dir.join("again.toml");
    fs::write(&again, "[detect]\nsource = { pps = 20.0 }\n").unwrap_or_else(|err| panic!("{err}"));
    let (records, _) = replayed(&captures.join(&file), &again, &[]);
    let alerts = of_type(&records, "alert");
    let same = alerts
        .iter()
        .find(|a| a["subject"] == "198.51.100.66" && a["state"] == "start")
        .unwrap_or_else(|| panic!("no alert from the capture: {alerts:?}"));
    assert_eq!(same["attack"]["type"], start["attack"]["type"]);
    assert_eq!(same["attack"]["type"], "udp_flood");
}

fn reflector(i: u64) -> [u8; 4] {
    std::net::Ipv4Addr::from(0x6440_0001u32 + (i as u32) * 256).octets()
}

/// An NTP reflection against a local host: the flood alert's capture holds the frames to
/// that host from port 123, not its own DNS answers nor the other hosts' traffic.
#[test]
fn a_reflection_flood_is_captured_by_its_signature() {
    if !privileged("a_reflection_flood_is_captured_by_its_signature") {
        return;
    }
    let dir = ScratchDir::new("nwevidr");
    let mut frames = Vec::new();
    benign(&mut frames, 100);
    for server in 0..300u64 {
        stream(&mut frames, 60..70, 20, move |_| {
            FrameBuilder::ipv4(reflector(server))
                .transport(Transport::Udp)
                .from_port(123)
                .to_ipv4([10, 0, 1, 5])
                .to_port(40_000)
                .payload(400)
        });
    }
    // The host's own DNS answers meanwhile.
    stream(&mut frames, 55..75, 50, |_| {
        FrameBuilder::ipv4([198, 51, 100, 53])
            .from_port(53)
            .to_ipv4([10, 0, 1, 5])
            .to_port(40_001)
            .payload(80)
    });
    let (capture, config) = write_case(&dir, frames, "[networks]\nlocal = [\"10.0.1.0/24\"]\n");
    let captures = dir.join("captures");
    let (records, _) = replayed(
        &capture,
        &config,
        &["--capture-dir", captures.to_str().unwrap_or_default()],
    );
    let alerts = of_type(&records, "alert");
    let with_capture: Vec<&&Value> = alerts
        .iter()
        .filter(|a| a["state"] == "end" && a["capture"]["frames"].as_u64().unwrap_or(0) > 0)
        .collect();
    let flood = with_capture
        .iter()
        .find(|a| a["attack"]["service"] == "ntp")
        .unwrap_or_else(|| panic!("no NTP flood with a capture: {alerts:?}"));
    let file = captures.join(flood["capture"]["file"].as_str().unwrap_or("?"));
    let packets = tshark(&file, &["ip.dst", "udp.srcport"]);
    assert!(packets.len() > 50, "{} frames", packets.len());
    assert!(
        packets.iter().all(|p| p == &["10.0.1.5", "123"]),
        "{:?}",
        packets.iter().find(|p| p != &&["10.0.1.5", "123"])
    );
}

/// A mounted tmpfs of `size`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Self {
        fs::create_dir_all(&at).unwrap_or_else(|err| panic!("{err}"));
        succeed(Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            at.to_str().unwrap_or_default(),
        ]));
        Self(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A disk that fills while capturing: the capture is cut (said once on stderr, and on the
/// alert's end), and the alerts are those of a replay with room.
#[test]
fn a_full_disk_cuts_the_capture_and_nothing_else() {
    if !privileged("a_full_disk_cuts_the_capture_and_nothing_else") {
        return;
    }
    let dir = ScratchDir::new("nwevidf");
    let mut frames = Vec::new();
    benign(&mut frames, 100);
    stream(&mut frames, 60..70, 5_000, |i| {
        FrameBuilder::ipv4([198, 51, 100, 66])
            .to_ipv4([10, 0, 1, 9])
            .to_port(u16::try_from(i % 1_000).unwrap_or(0) + 1_000)
            .payload(1_200)
    });
    let (capture, config) = write_case(&dir, frames, "[capture]\nfirst_frames = 1000\n");
    let roomy = dir.join("roomy");
    let (with_room, _) = replayed(
        &capture,
        &config,
        &["--capture-dir", roomy.to_str().unwrap_or_default()],
    );
    // 64 KiB: a few dozen of these frames.
    let small = Tmpfs::mount(dir.join("small"), "64k");
    let (full, stderr) = replayed(
        &capture,
        &config,
        &["--capture-dir", small.0.to_str().unwrap_or_default()],
    );
    let kinds = |records: &[Value]| -> Vec<(String, String, String)> {
        of_type(records, "alert")
            .iter()
            .map(|a| {
                let text = |key: &str| a[key].as_str().unwrap_or("?").to_owned();
                (text("kind"), text("state"), text("subject"))
            })
            .collect()
    };
    assert_eq!(kinds(&full), kinds(&with_room), "the same alerts");
    assert_eq!(
        of_type(&full, "interval").len(),
        of_type(&with_room, "interval").len()
    );
    let refusals = stderr.matches("writing to").count();
    assert_eq!(refusals, 1, "said once: {stderr}");
    let alerts = of_type(&full, "alert");
    let end = end_of(&alerts, "heavy_hitter", "198.51.100.66");
    assert!(
        end["capture"]["cut"]
            .as_str()
            .is_some_and(|cut| cut.contains("disk refused")),
        "{end}"
    );
    let file = small.0.join(end["capture"]["file"].as_str().unwrap_or("?"));
    // What it holds up to the cut reads back.
    let packets = tshark(&file, &["ip.src"]);
    assert_eq!(
        packets.len() as u64,
        end["capture"]["frames"].as_u64().unwrap_or(0)
    );
}

/// Live on a veth pair: a flood from one source among normal traffic gives one capture of
/// its frames only, within its budget, read by tshark, named by the alert's lines and by
/// `netwatch history`; it replays to an alert of the same attack type. `netwatch capture`
/// takes the frames of another source by hand, for its time.
#[test]
fn a_live_flood_is_captured_and_a_capture_is_taken_by_hand() {
    if !privileged("a_live_flood_is_captured_and_a_capture_is_taken_by_hand") {
        return;
    }
    let pair = netwatch_tests::netns::VethPair::new(true);
    let dir = ScratchDir::new("nwevidl");
    let config = dir.join("netwatch.toml");
    fs::write(&config, "[detect.source]\npps = 500.0\n").unwrap_or_else(|err| panic!("{err}"));
    let (mut daemon, _) = netwatch_tests::daemon::Daemon::json_monitor(
        &pair,
        &["--config", config.to_str().unwrap_or_default()],
    );
    // By hand first: 2 s of the normal source's frames.
    let asked = succeed(
        Command::new(netwatch_tests::netwatch_bin())
            .arg("capture")
            .arg("--control")
            .arg(pair.monitor.control_path())
            .args(["--source", "10.9.0.3", "--duration", "2s"]),
    );
    let asked = String::from_utf8_lossy(&asked.stdout).into_owned();
    assert!(asked.starts_with("capturing into "), "{asked}");
    let by_hand = PathBuf::from(
        asked
            .trim_start_matches("capturing into ")
            .split(" until ")
            .next()
            .unwrap_or_default(),
    );
    let frame = |src: [u8; 4], i: u32| {
        FrameBuilder::ipv4(src)
            .to_ipv4([10, 9, 0, 1])
            .to_port(5_000 + u16::try_from(i % 100).unwrap_or(0))
            .payload(200)
            .build()
            .bytes
    };
    // 2,000 pkt/s from the flooder for 1.5 s, 100 pkt/s from the normal source for 3 s.
    let mut frames: Vec<(Duration, Vec<u8>)> = (0..3_000u32)
        .map(|i| {
            (
                Duration::from_micros(u64::from(i) * 500),
                frame([10, 9, 0, 2], i),
            )
        })
        .collect();
    frames.extend((0..300u32).map(|i| {
        (
            Duration::from_millis(u64::from(i) * 10),
            frame([10, 9, 0, 3], i),
        )
    }));
    frames.sort_by_key(|(at, _)| *at);
    assert_eq!(pair.send_paced(frames), 3_300);
    // The flood's end, then the stop.
    let records = daemon.records_until(|r| {
        r["type"] == "alert" && r["kind"] == "threshold_pps" && r["state"] == "end"
    });
    let (status, _, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
    let alerts = of_type(&records, "alert");
    let start = alerts
        .iter()
        .find(|a| a["kind"] == "threshold_pps" && a["state"] == "start")
        .unwrap_or_else(|| panic!("no flood alert: {alerts:?}"));
    assert_eq!(start["subject"], "10.9.0.2");
    let end = end_of(&alerts, "threshold_pps", "10.9.0.2");
    let file = pair
        .monitor
        .capture_dir()
        .join(end["capture"]["file"].as_str().unwrap_or("?"));
    let frames = end["capture"]["frames"].as_u64().unwrap_or(0);
    let packets = tshark(&file, &["ip.src"]);
    assert_eq!(
        packets.len() as u64,
        frames,
        "the end line's count is the file's"
    );
    assert!(
        packets.iter().all(|p| p == &["10.9.0.2"]),
        "only the flooder's frames: {:?}",
        packets.iter().find(|p| p != &&["10.9.0.2"])
    );
    // At most the first 50 of each CPU and about 100 a second for the 1.5 s it lasts (one
    // in 32 of 2,000: 63 a second); some at least.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    assert!(frames >= 50, "{frames} frames");
    assert!(frames <= 50 * cpus + 200, "{frames} frames on {cpus} CPUs");

    // Named in the history, with its folder.
    let history = succeed(
        Command::new(netwatch_tests::netwatch_bin())
            .args(["history", "--db"])
            .arg(pair.monitor.db_path())
            .arg("alerts"),
    );
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains(&format!("capture {} ({frames} frames)", file.display())),
        "{history}"
    );

    // The capture by hand: the normal source's frames only, and some of them.
    let packets = tshark(&by_hand, &["ip.src"]);
    assert!(packets.len() >= 50, "{} frames", packets.len());
    assert!(packets.iter().all(|p| p == &["10.9.0.3"]), "{packets:?}");

    // The flood's capture replays to the same attack type.
    let again = dir.join("again.toml");
    fs::write(&again, "[detect]\nsource = { pps = 20.0 }\n").unwrap_or_else(|err| panic!("{err}"));
    let (records, _) = replayed(&file, &again, &[]);
    let replayed_alerts = of_type(&records, "alert");
    let same = replayed_alerts
        .iter()
        .find(|a| a["subject"] == "10.9.0.2" && a["state"] == "start")
        .unwrap_or_else(|| panic!("no alert from the capture: {replayed_alerts:?}"));
    assert_eq!(same["attack"]["type"], start["attack"]["type"]);
}
