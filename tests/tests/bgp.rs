//! Signature rules announced upstream, with the real daemons: ExaBGP in one network namespace
//! runs the shipped API process (`packaging/exabgp/netwatch-exabgp-process`), BIRD 2 in
//! another is its BGP peer with a Flowspec table, and the shipped notify command
//! (`packaging/exabgp/netwatch-exabgp`) gets netwatch's rule events. BIRD must hold each
//! rule's Flowspec route (and, for a rule with `rtbh`, the victim's route with the BLACKHOLE
//! community) while the rule lives, and lose it at the rule's removal; a dry run announces
//! nothing.

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{ScratchDir, netns::VethPair, privileged};

/// A process stopped when the test ends, however it ends: asked first (ExaBGP then stops the
/// API process it started), killed if it lingers.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a signal to a child of this process, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/exabgp")
        .join(name)
}

/// The peers, up and established: ExaBGP at 10.99.0.1 (AS 65000) in the pair's monitor
/// namespace, BIRD at 10.99.0.2 (AS 65001) in its sender namespace.
struct Peers {
    bird_socket: PathBuf,
    fifo: PathBuf,
    _bird: Running,
    _exabgp: Running,
}

fn peers(pair: &VethPair, dir: &ScratchDir) -> Peers {
    pair.monitor
        .exec(&["ip", "addr", "add", "10.99.0.1/30", "dev", &pair.monitor_if]);
    pair.monitor
        .exec(&["ip", "link", "set", &pair.monitor_if, "up"]);
    pair.sender
        .exec(&["ip", "addr", "add", "10.99.0.2/30", "dev", &pair.sender_if]);
    let bird_conf = dir.join("bird.conf");
    fs::write(
        &bird_conf,
        "router id 10.99.0.2;\n\
         protocol device {}\n\
         flow4 table flowtab4;\n\
         protocol bgp upstream {\n\
           local 10.99.0.2 as 65001;\n\
           neighbor 10.99.0.1 as 65000;\n\
           ipv4 { import all; export none; };\n\
           flow4 { table flowtab4; import all; export none; };\n\
         }\n",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let bird_socket = dir.join("bird.ctl");
    let bird = Running(
        pair.sender
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&bird_conf)
            .arg("-s")
            .arg(&bird_socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("bird (Debian's bird2): {err}")),
    );
    let fifo = dir.join("exabgp.in");
    let exabgp_conf = dir.join("exabgp.conf");
    fs::write(
        &exabgp_conf,
        format!(
            "process netwatch {{\n  run /usr/bin/python3 {} {};\n  encoder text;\n}}\n\
             neighbor 10.99.0.2 {{\n  router-id 10.99.0.1;\n  local-address 10.99.0.1;\n  \
             local-as 65000;\n  peer-as 65001;\n  family {{ ipv4 unicast; ipv4 flow; }}\n  \
             api {{ processes [ netwatch ]; }}\n}}\n",
            shipped("netwatch-exabgp-process").display(),
            fifo.display()
        ),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let exabgp = Running(
        pair.monitor
            .command("env")
            .args([
                "exabgp.daemon.daemonize=false",
                "exabgp.daemon.user=root",
                "exabgp.api.cli=false",
                "exabgp.log.destination=stderr",
                "exabgp",
            ])
            .arg(&exabgp_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("exabgp (Debian's exabgp): {err}")),
    );
    let peers = Peers {
        bird_socket,
        fifo,
        _bird: bird,
        _exabgp: exabgp,
    };
    wait_for(&peers, "the session", &["show", "protocols"], |text| {
        text.contains("Established")
    });
    peers
}

fn birdc(peers: &Peers, args: &[&str]) -> String {
    let output = Command::new("birdc")
        .arg("-s")
        .arg(&peers.bird_socket)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("birdc: {err}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls BIRD with `args` until `done` holds of its answer, for 30 s at most.
fn wait_for(peers: &Peers, what: &str, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let text = birdc(peers, args);
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < end, "{what}: BIRD says {text}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the shipped notify command on one event, as netwatch does (the event on stdin).
fn notify(peers: &Peers, event: &serde_json::Value) {
    let mut child = Command::new("python3")
        .arg(shipped("netwatch-exabgp"))
        .env("NETWATCH_EXABGP_FIFO", &peers.fifo)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("netwatch-exabgp: {err}"));
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{event}").unwrap_or_else(|err| panic!("{err}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        output.status.success(),
        "netwatch-exabgp: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A rule event as netwatch writes it (see `report::rule`).
fn rule(change: &str, mode: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut event = serde_json::json!({
        "type": "rule",
        "change": change,
        "mode": mode,
        "index": 0,
        "protocol": null,
        "source_port": null,
        "destination_port": null,
        "tcp_syn": false,
        "fragments": false,
        "action": "drop",
        "rate_pps": null,
        "rtbh": false,
        "attack": "reflection",
    });
    if let (Some(event), Some(fields)) = (event.as_object_mut(), fields.as_object()) {
        for (key, value) in fields {
            event.insert(key.clone(), value.clone());
        }
    }
    event
}

#[test]
fn rules_become_flowspec_and_blackhole_routes_in_bird_while_they_live() {
    if !privileged("rules_become_flowspec_and_blackhole_routes_in_bird_while_they_live") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwbgp");
    let peers = peers(&pair, &dir);
    let flows = ["show", "route", "table", "flowtab4", "all"];

    // A reflection rule with a blackhole of the victim, and a rate-limited SYN rule.
    let ntp = rule(
        "add",
        "drop",
        serde_json::json!({
            "destination": "192.0.2.5/32", "protocol": "udp", "source_port": 123, "rtbh": true,
        }),
    );
    let syn = rule(
        "add",
        "drop",
        serde_json::json!({
            "destination": "192.0.2.6/32", "protocol": "tcp", "destination_port": 443,
            "tcp_syn": true, "action": "rate-limit", "rate_pps": 1000, "attack": "syn_flood",
        }),
    );
    notify(&peers, &ntp);
    notify(&peers, &syn);
    let table = wait_for(&peers, "both Flowspec routes", &flows, |text| {
        text.contains("flow4 { dst 192.0.2.5/32; proto 17; sport 123; }")
            && text.contains("flow4 { dst 192.0.2.6/32; proto 6; dport 443;")
    });
    // SYN without ACK, and the rate: 1,000 packets of 64 bytes a second (64000 as an IEEE
    // float, 0x477a0000, in the traffic-rate community).
    assert!(table.contains("tcp flags !0x0/0x2 && 0x0/0x10"), "{table}");
    assert!(table.contains("0x477a0000"), "{table}");
    let blackhole = wait_for(
        &peers,
        "the blackhole route",
        &["show", "route", "192.0.2.5/32", "all"],
        |text| text.contains("BGP.community: (65535,666)"),
    );
    assert!(blackhole.contains("via 10.99.0.1"), "{blackhole}");

    // In a dry run nothing is announced.
    notify(
        &peers,
        &rule(
            "add",
            "dry-run",
            serde_json::json!({"destination": "192.0.2.7/32", "fragments": true}),
        ),
    );

    // A rule restored at netwatch's start (kept in its store) is announced again: ExaBGP may
    // have restarted meanwhile.
    let restored = rule(
        "restore",
        "drop",
        serde_json::json!({"destination": "192.0.2.8/32", "fragments": true, "attack": "ip_fragments"}),
    );
    notify(&peers, &restored);
    wait_for(&peers, "the restored rule's route", &flows, |text| {
        text.contains("flow4 { dst 192.0.2.8/32;")
    });
    let mut removed = restored.clone();
    removed["change"] = "remove".into();
    notify(&peers, &removed);

    // The rules end: their routes go, the others stay until theirs do.
    let mut removed = ntp.clone();
    removed["change"] = "remove".into();
    notify(&peers, &removed);
    let table = wait_for(
        &peers,
        "the reflection route's withdrawal",
        &flows,
        |text| {
            text.contains("192.0.2.6/32")
                && !text.contains("192.0.2.5/32")
                && !text.contains("192.0.2.8/32")
        },
    );
    assert!(table.contains("192.0.2.6/32"), "{table}");
    assert!(
        !table.contains("192.0.2.7"),
        "a dry run was announced: {table}"
    );
    wait_for(
        &peers,
        "the blackhole's withdrawal",
        &["show", "route", "192.0.2.5/32"],
        |text| text.contains("Network not found"),
    );
    let mut removed = syn.clone();
    removed["change"] = "remove".into();
    notify(&peers, &removed);
    wait_for(&peers, "no route left", &flows, |text| {
        !text.contains("flow4 {")
    });
    // Gone because withdrawn, not because the session or BIRD went away.
    let protocols = birdc(&peers, &["show", "protocols"]);
    assert!(protocols.contains("Established"), "{protocols}");
}
