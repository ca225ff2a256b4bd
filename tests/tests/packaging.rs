//! Running netwatch as people do: the systemd unit passes `systemd-analyze verify` and grants
//! exactly the capabilities netwatch checks for; every metric the Grafana dashboard queries
//! is one netwatch exports; `netwatch check` says what this machine can do; an unprivileged
//! user runs the binary with file capabilities; `--version` names the build.

use std::{
    collections::BTreeSet, fs, os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command,
    time::Duration,
};

use netwatch::{
    collect::{Interval, SourceDelta, Volume},
    report::metrics::Metrics,
};
use netwatch_common::{GlobalStats, SourceStats};
use netwatch_datapath::Spread;
use netwatch_tests::{
    ScratchDir,
    daemon::{Daemon, counts_every_frame, expect_failure},
    frames::FrameBuilder,
    netns::VethPair,
    netwatch_bin, privileged,
    process::succeed,
    user::AS_NOBODY,
};

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

#[test]
fn the_systemd_unit_verifies_and_grants_only_what_netwatch_needs() {
    let unit =
        fs::read_to_string(packaging("netwatch.service")).unwrap_or_else(|err| panic!("{err}"));
    let caps = |key: &str| -> BTreeSet<String> {
        unit.lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let needed: BTreeSet<String> = ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(caps("CapabilityBoundingSet="), needed);
    assert_eq!(caps("AmbientCapabilities="), needed);
    // netwatch's own check asks for the same set.
    assert_eq!(
        netwatch::privilege::missing_capabilities_of(0)
            .into_iter()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        needed
    );

    // systemd checks the unit against the built binary.
    let dir = ScratchDir::new("nwunit");
    let unit_path = dir.join("netwatch.service");
    fs::write(
        &unit_path,
        unit.replace("/usr/local/bin/netwatch", &netwatch_bin().to_string_lossy()),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    systemd_verifies(&unit_path);
}

/// `systemd-analyze verify` passes `unit`, without a word of warning.
fn systemd_verifies(unit: &std::path::Path) {
    let verify = succeed(Command::new("systemd-analyze").arg("verify").arg(unit));
    assert!(
        verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(packaging("grafana-dashboard.json"))
            .unwrap_or_else(|err| panic!("{err}")),
    )
    .unwrap_or_else(|err| panic!("the dashboard is not JSON: {err}"));
    // A running netwatch: attached, one interval with one source seen.
    let metrics = Metrics::new(10).unwrap_or_else(|err| panic!("{err}"));
    metrics.set_attach("eth0", "driver", "per-cpu", 1024);
    metrics.observe_interval(
        "eth0",
        &Interval {
            elapsed: Duration::from_secs(1),
            delta: GlobalStats::default(),
            cumulative: GlobalStats::default(),
            sources: vec![SourceDelta {
                addr: "192.0.2.1".parse().unwrap_or_else(|err| panic!("{err}")),
                stats: SourceStats {
                    packets: 1,
                    bytes: 60,
                    ..SourceStats::default()
                },
                spread: Spread::default(),
            }],
            tracked_sources: 1,
            evicted_sources: 0,
            unattributed: Volume::default(),
            unattributed_before: Volume::default(),
            overflow_reflected_port: 0,
            slotless: Default::default(),
            destination_count: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
            intel: Default::default(),
        },
    );
    let exported = metrics.render();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("netwatch_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for metric in &queried {
        assert!(
            exported.contains(&format!("# TYPE {metric} ")),
            "the dashboard queries {metric}, which netwatch does not export"
        );
    }
}

/// `netwatch check` inside a namespace with a veth pair: every line `ok` or `warn` for the
/// veth end (native XDP), exit 0; an interface that is not there and a missing privilege are
/// `FAIL` lines with what to do, and exit 1.
#[test]
fn check_says_what_this_machine_can_do() {
    if !privileged("check_says_what_this_machine_can_do") {
        return;
    }
    let pair = VethPair::new(true);
    let bin = netwatch_bin().to_string_lossy().into_owned();
    let output = pair
        .monitor
        .command(&bin)
        .args(["check", "-i", &pair.monitor_if])
        .output();
    let output = output.unwrap_or_else(|err| panic!("{err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for needle in ["ok    kernel: Linux", "ok    privileges: root"] {
        assert!(stdout.contains(needle), "{needle:?} in {stdout}");
    }
    // The kernel says which drivers run XDP natively from Linux 6.3; before, check says it
    // cannot tell.
    let says = aya::util::KernelVersion::current()
        .is_ok_and(|kernel| kernel >= aya::util::KernelVersion::new(6, 3, 0));
    let native = if says {
        "runs XDP natively"
    } else {
        "this kernel cannot say"
    };
    assert!(stdout.contains(native), "{native:?} in {stdout}");
    assert!(stdout.contains("driver veth"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let output = pair
        .monitor
        .command(&bin)
        .args(["check", "-i", "nw-none0"])
        .output();
    let output = output.unwrap_or_else(|err| panic!("{err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("FAIL  interface nw-none0: no such interface"),
        "{stdout}"
    );

    let output = Command::new("setpriv")
        .args(AS_NOBODY)
        .arg(&bin)
        .args(["check", "-i", "lo"])
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("FAIL  privileges: missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN")
            && stdout.contains("setcap cap_bpf,cap_perfmon,cap_net_admin+ep"),
        "{stdout}"
    );
}

/// An unprivileged user (nobody) runs a copy of the binary that has the three capabilities
/// as file capabilities: it attaches and counts every frame; the same copy without them is
/// refused with one line.
#[test]
fn file_capabilities_let_an_unprivileged_user_monitor() {
    if !privileged("file_capabilities_let_an_unprivileged_user_monitor") {
        return;
    }
    // Under the build folder: /tmp may be mounted nosuid, which ignores file capabilities.
    let dir = ScratchDir(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(netwatch_tests::unique_name("nwcap")),
    );
    fs::create_dir_all(&dir.0).unwrap_or_else(|err| panic!("{err}"));
    // nobody must reach the binary and write its store and socket.
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|err| panic!("{err}"));
    let bin = dir.join("netwatch");
    fs::copy(netwatch_bin(), &bin).unwrap_or_else(|err| panic!("{err}"));
    let state = dir.join("state");
    fs::create_dir(&state).unwrap_or_else(|err| panic!("{err}"));
    succeed(Command::new("chown").arg("65534:65534").arg(&state));
    let pair = VethPair::new(true);
    let as_nobody = || {
        let mut command = pair.monitor.command("setpriv");
        command
            .args(AS_NOBODY)
            .arg(&bin)
            .args(["monitor", "-i", &pair.monitor_if, "--format", "json"])
            .args(["--interval", "200ms", "--metrics-addr", "off"])
            .arg("--db")
            .arg(state.join("netwatch.db"))
            .arg("--control")
            .arg(state.join("control.sock"));
        command
    };
    // One line (expect_failure checks it).
    expect_failure(Daemon::spawn(as_nobody()), "permission denied");

    succeed(
        Command::new("setcap")
            .arg("cap_bpf,cap_perfmon,cap_net_admin+ep")
            .arg(&bin),
    );
    let mut daemon = Daemon::spawn(as_nobody());
    daemon.wait_stderr("attached to");
    counts_every_frame(daemon, &pair, 200);
}

/// `--version`: the version, the commit it was built from and the XDP object's build id.
#[test]
fn version_names_the_commit_and_the_ebpf_object() {
    let output = succeed(Command::new(netwatch_bin()).arg("--version"));
    let line = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned();
    let rest = line
        .strip_prefix(&format!("netwatch {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, object) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", eBPF object "))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        object.len() == 16 && object.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    match head {
        Some(head) => assert_eq!(commit, head, "{line}"),
        None => assert_eq!(commit, "unknown", "{line}"),
    }
}

/// `cargo xtask package` builds a .deb that installs with dpkg on this machine: the binary,
/// the configuration as a conffile, the unit (which systemd verifies), the store's folder
/// 0700, man pages and completions; the installed binary says its version and replays a
/// capture; removal keeps the configuration and the state, purge removes them.
#[test]
fn the_debian_package_installs_runs_and_purges() {
    if !privileged("the_debian_package_installs_runs_and_purges") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let xtask = root.join("target/debug/xtask");
    assert!(
        xtask.is_file(),
        "{} not built: run the tests through `cargo xtask test`",
        xtask.display()
    );
    let dir = ScratchDir::new("nwdeb");
    succeed(
        Command::new(&xtask)
            .env("CARGO_MANIFEST_DIR", root.join("xtask"))
            .args(["package", "--debug", "--no-build", "--out"])
            .arg(&dir.0),
    );
    let deb = fs::read_dir(&dir.0)
        .unwrap_or_else(|err| panic!("{err}"))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}", dir.0.display()));
    let dpkg = |args: &[&str]| {
        String::from_utf8_lossy(&succeed(Command::new("dpkg").args(args)).stdout).into_owned()
    };
    // A package left by an earlier, interrupted run of this test goes first; one installed
    // for real is never touched (purging it would delete its configuration and store).
    let marker = std::path::Path::new("/var/lib/netwatch/.installed-by-the-package-test");
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "netwatch"])
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("ok installed"));
    assert!(
        !installed || marker.exists(),
        "netwatch is installed on this machine: this test installs and purges a package of its own; remove the real one first"
    );
    let _ = Command::new("dpkg").args(["--purge", "netwatch"]).output();
    dpkg(&["--install", &deb.to_string_lossy()]);
    fs::write(marker, b"").unwrap_or_else(|err| panic!("{err}"));
    let mode = |path: &str| {
        fs::metadata(path)
            .unwrap_or_else(|err| panic!("{path}: {err}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("/usr/bin/netwatch"), 0o755);
    assert_eq!(mode("/etc/netwatch/netwatch.toml"), 0o644);
    assert_eq!(mode("/var/lib/netwatch"), 0o700);
    assert!(
        fs::metadata("/var/lib/netwatch")
            .unwrap_or_else(|err| panic!("{err}"))
            .is_dir()
    );
    for file in [
        "/lib/systemd/system/netwatch.service",
        "/usr/share/man/man1/netwatch.1.gz",
        "/usr/share/man/man1/netwatch-monitor.1.gz",
        "/usr/share/man/man1/netwatch-ban.1.gz",
        "/usr/share/bash-completion/completions/netwatch",
        "/usr/share/zsh/vendor-completions/_netwatch",
        "/usr/share/fish/vendor_completions.d/netwatch.fish",
        "/usr/share/doc/netwatch/copyright",
    ] {
        assert_eq!(mode(file), 0o644, "{file}");
    }
    for script in [
        "/usr/share/netwatch/exabgp/netwatch-exabgp",
        "/usr/share/netwatch/exabgp/netwatch-exabgp-process",
    ] {
        assert_eq!(mode(script), 0o755, "{script}");
    }
    let conffiles = dpkg(&["--status", "netwatch"]);
    assert!(
        conffiles.contains("Conffiles:\n /etc/netwatch/netwatch.toml"),
        "{conffiles}"
    );
    systemd_verifies(std::path::Path::new("/lib/systemd/system/netwatch.service"));
    let version = |bin: &std::path::Path| {
        String::from_utf8_lossy(&succeed(Command::new(bin).arg("--version")).stdout).into_owned()
    };
    assert_eq!(
        version(std::path::Path::new("/usr/bin/netwatch")),
        version(&netwatch_bin())
    );
    let capture = dir.join("short.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..30u32)
        .map(|i| {
            (
                Duration::from_millis(u64::from(i) * 100),
                FrameBuilder::ipv4([10, 8, 0, (i % 3) as u8])
                    .payload(40)
                    .build()
                    .bytes,
            )
        })
        .collect();
    netwatch_tests::write_pcap(&capture, &frames);
    let replay = succeed(
        Command::new("/usr/bin/netwatch")
            .arg("replay")
            .arg(&capture)
            .arg("--db")
            .arg(dir.join("replay.db"))
            .args(["--format", "json"]),
    );
    let packets: u64 = String::from_utf8_lossy(&replay.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["type"] == "interval")
        .filter_map(|record| record["packets"].as_u64())
        .sum();
    assert_eq!(packets, 30);

    // Removed: the binary goes, the configuration and the state stay.
    dpkg(&["--remove", "netwatch"]);
    assert!(!std::path::Path::new("/usr/bin/netwatch").exists());
    assert!(std::path::Path::new("/etc/netwatch/netwatch.toml").exists());
    assert!(std::path::Path::new("/var/lib/netwatch").exists());
    // Purged: nothing is left.
    dpkg(&["--purge", "netwatch"]);
    assert!(!std::path::Path::new("/etc/netwatch").exists());
    assert!(!std::path::Path::new("/var/lib/netwatch").exists());
    assert!(!std::path::Path::new("/lib/systemd/system/netwatch.service").exists());
}
