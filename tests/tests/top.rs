//! `netwatch top` in a real terminal: tmux runs it against a daemon watching a veth pair with
//! traffic, types its keys and reads its screen.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netwatch_tests::{
    ScratchDir,
    daemon::Daemon,
    frames::{FrameBuilder, SYN, Transport},
    netns::VethPair,
    netwatch_bin, privileged, unique_name,
};

/// A tmux server of the test's own with one session, killed on drop.
struct Tmux {
    server: String,
}

impl Tmux {
    /// Runs `command` in a `width` x `height` terminal.
    fn start(width: u16, height: u16, command: &str) -> Self {
        let tmux = Self {
            server: unique_name("nwtmux"),
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-s", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .status()
            .unwrap_or_else(|err| panic!("tmux: {err}"));
        assert!(status.success(), "tmux new-session");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.server]);
        command
    }

    fn screen(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap_or_else(|err| panic!("tmux: {err}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let status = self
            .command()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap_or_else(|err| panic!("tmux: {err}"));
        assert!(status.success());
    }

    fn resize(&self, width: u16, height: u16) {
        let status = self
            .command()
            .args(["resize-window", "-t", "top", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .status()
            .unwrap_or_else(|err| panic!("tmux: {err}"));
        assert!(status.success());
    }

    /// Waits (bounded) for a screen that `done` accepts; returns it.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{screen}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The rows of the table: the lines after its header, up to its bottom border.
fn table_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|line| !line.contains("1SOURCE") && !line.contains("1DESTINATION"))
        .skip(1)
        .take_while(|line| !line.contains('└'))
        .map(|line| line.trim_matches(|c| c == '│' || c == ' ').to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

fn first_row_is(screen: &str, source: &str) -> bool {
    table_rows(screen)
        .first()
        .is_some_and(|row| row.starts_with(source))
}

#[test]
fn top_shows_the_flood_and_answers_its_keys_in_a_real_terminal() {
    if !privileged("top_shows_the_flood_and_answers_its_keys_in_a_real_terminal") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwtop");
    let config = dir.join("netwatch.toml");
    std::fs::write(
        &config,
        "[detect]\nsource = { pps = 150.0 }\n[networks]\nlocal = [\"192.0.2.0/24\"]\n",
    )
    .unwrap_or_else(|err| panic!("{err}"));
    let (mut daemon, _) =
        Daemon::json_monitor_every(&pair, "500ms", &["--config", &config.to_string_lossy()]);
    let socket = pair.monitor.control_path();
    let tmux = Tmux::start(
        120,
        40,
        &format!(
            "{} top --control {}; echo \"top exited $?\"; sleep 60",
            netwatch_bin().display(),
            socket.display()
        ),
    );
    tmux.wait_for("top starts", |screen| screen.contains("netwatch top"));

    // For ten seconds: a UDP flood (400 pkt/s), a SYN sender (40 pkt/s) and a trickle.
    let over = Duration::from_secs(10);
    let paced = |count: u32, builder: &dyn Fn() -> FrameBuilder| {
        (0..count)
            .map(|i| (over * i / count, builder().build().bytes))
            .collect::<Vec<_>>()
    };
    let mut frames = paced(4_000, &|| FrameBuilder::ipv4([10, 60, 0, 66]).payload(100));
    frames.extend(paced(400, &|| {
        FrameBuilder::ipv4([10, 60, 1, 5]).transport(Transport::Tcp(SYN))
    }));
    frames.extend(paced(100, &|| {
        FrameBuilder::ipv4([10, 60, 2, 9]).payload(20)
    }));
    frames.sort_by_key(|(at, _)| *at);
    thread::scope(|scope| {
        scope.spawn(|| pair.send_paced(frames));

        // The flood is the first row.
        tmux.wait_for("the flood first", |screen| {
            first_row_is(screen, "10.60.0.66")
        });
        // d: the local hosts, what they receive (every frame goes to 192.0.2.254).
        tmux.keys(&["d"]);
        let screen = tmux.wait_for("the destinations", |screen| {
            first_row_is(screen, "192.0.2.254")
        });
        assert!(screen.contains("1DESTINATION"), "{screen}");
        assert!(screen.contains("6SRCS"), "{screen}");
        tmux.keys(&["d"]);
        tmux.wait_for("the sources again", |screen| {
            first_row_is(screen, "10.60.0.66")
        });
        // By SYN (key 4), the SYN sender is.
        tmux.keys(&["4"]);
        tmux.wait_for("sorted by SYN", |screen| first_row_is(screen, "10.60.1.5"));
        // The filter narrows the rows to one network.
        tmux.keys(&["/", "10.60.2.0/24", "Enter"]);
        let screen = tmux.wait_for("filtered", |screen| {
            let rows = table_rows(screen);
            !rows.is_empty() && rows.iter().all(|row| row.starts_with("10.60.2.9"))
        });
        assert!(screen.contains("filter 10.60.2.0/24"), "{screen}");
        // The flood's alert, in its pane.
        tmux.wait_for("the alert", |screen| {
            screen
                .lines()
                .any(|line| line.contains("threshold_pps") && line.contains("10.60.0.66"))
        });
        // 80x24: the header and the table are still there.
        tmux.keys(&["Escape"]);
        tmux.resize(80, 24);
        tmux.wait_for("80x24", |screen| {
            screen.lines().count() <= 24
                && screen.lines().all(|line| line.chars().count() <= 80)
                && screen.contains("netwatch top")
                && screen.contains("1SOURCE")
                && first_row_is(screen, "10.60.1.5")
        });
    });

    // The daemon stops: top says so and waits (without --exit-with-daemon).
    let (status, _, _) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "the daemon never noticed top");
    tmux.wait_for("the daemon's end said", |screen| {
        screen.contains("DAEMON STOPPED")
    });

    // q: top exits 0 and the terminal is the shell's again.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top exits", |screen| screen.contains("top exited"));
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(
        !screen.contains("1SOURCE"),
        "the alternate screen is gone: {screen}"
    );
}

/// With no daemon and no interface, one line that says what to do.
#[test]
fn top_without_a_daemon_says_what_to_do() {
    let dir = ScratchDir::new("nwtopno");
    let tmux = Tmux::start(
        100,
        10,
        &format!(
            "{} top --control {}; echo \"top exited $?\"; sleep 60",
            netwatch_bin().display(),
            dir.join("none.sock").display()
        ),
    );
    let screen = tmux.wait_for("top exits", |screen| screen.contains("top exited"));
    assert!(screen.contains("no netwatch daemon answers on"), "{screen}");
    assert!(screen.contains("--iface IFACE"), "{screen}");
    assert!(screen.contains("top exited 1"), "{screen}");
}

/// With no daemon and `--iface`, top watches the interface with a monitor of its own, and
/// takes it down when it quits: nothing stays attached.
#[test]
fn top_with_an_interface_and_no_daemon_watches_it_itself() {
    if !privileged("top_with_an_interface_and_no_daemon_watches_it_itself") {
        return;
    }
    let pair = VethPair::new(true);
    let dir = ScratchDir::new("nwtopown");
    let tmux = Tmux::start(
        120,
        40,
        &format!(
            "ip netns exec {} {} top --iface {} --control {}; echo \"top exited $?\"; sleep 60",
            pair.monitor.name,
            netwatch_bin().display(),
            pair.monitor_if,
            dir.join("none.sock").display()
        ),
    );
    tmux.wait_for("attached by top's own monitor", |screen| {
        screen.contains(&format!("{} (", pair.monitor_if))
    });
    assert!(pair.monitor.xdp_attachment(&pair.monitor_if).is_some());
    let over = Duration::from_secs(6);
    let frames: Vec<(Duration, Vec<u8>)> = (0..600u32)
        .map(|i| {
            (
                over * i / 600,
                FrameBuilder::ipv4([10, 61, 0, 7]).payload(60).build().bytes,
            )
        })
        .collect();
    thread::scope(|scope| {
        scope.spawn(|| pair.send_paced(frames));
        tmux.wait_for("its traffic", |screen| first_row_is(screen, "10.61.0.7"));
    });
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("top exits", |screen| screen.contains("top exited"));
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(
        pair.monitor.xdp_attachment(&pair.monitor_if).is_none(),
        "top's monitor is gone with it"
    );
}

/// `top --exit-with-daemon` stays while the daemon is paused (SIGSTOP for longer than a
/// status takes to fail) and goes on after it resumes, and exits when the daemon stops: a
/// paused or slow daemon is not a gone one (issue 30).
#[test]
fn top_exits_with_the_daemon_not_with_a_pause() {
    if !privileged("top_exits_with_the_daemon_not_with_a_pause") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut daemon, _) = Daemon::json_monitor_every(&pair, "500ms", &[]);
    let socket = pair.monitor.control_path();
    let tmux = Tmux::start(
        120,
        30,
        &format!(
            "{} top --exit-with-daemon --control {}; echo \"top exited $?\"; sleep 60",
            netwatch_bin().display(),
            socket.display()
        ),
    );
    tmux.wait_for("top starts", |screen| screen.contains("netwatch top"));
    thread::sleep(Duration::from_secs(1));
    daemon.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_secs(7));
    daemon.signal(libc::SIGCONT);
    // After the pause, top shows what the daemon counts next.
    pair.send(
        (0..50)
            .map(|_| FrameBuilder::ipv4([10, 61, 0, 7]).payload(20).build().bytes)
            .collect(),
    );
    let screen = tmux.wait_for("the source after the pause", |screen| {
        screen.contains("10.61.0.7") || screen.contains("top exited")
    });
    assert!(
        !screen.contains("top exited"),
        "top left with a paused daemon: {screen}"
    );
    let (status, _, _) = daemon.stop(libc::SIGTERM);
    assert!(status.success());
    tmux.wait_for("top exits with the daemon", |screen| {
        screen.contains("top exited")
    });
}
