//! `cargo xtask` as people run it: a user without privileges, whom sudo allows, builds
//! netwatch in a checkout of their own with their own cargo; only the netwatch binary (`run`)
//! or the privileged tests' binaries (`test`) run as root, through sudo. Without sudo rights,
//! one line says why.
//!
//! A file of its own so that the user's build (two minutes on two cores) never runs beside
//! another test's daemons.

use std::{os::unix::fs::MetadataExt as _, time::Duration};

use netwatch_tests::{
    daemon::{Daemon, counts_every_frame},
    netns::VethPair,
    privileged,
    user::{TestUser, UserCheckout},
};

/// How long the user's first build may take: the workspace from nothing, the XDP program
/// with it, in debug.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn cargo_xtask_run_and_test_as_a_user_take_sudo_only_for_the_binaries() {
    if !privileged("cargo_xtask_run_and_test_as_a_user_take_sudo_only_for_the_binaries") {
        return;
    }
    let user = TestUser::create();
    let checkout = UserCheckout::new(&user);
    let built = checkout.src.join("target/debug");
    let netwatch = built.join("netwatch");
    // netwatch itself, and the test binaries with the environment that `sudo -E` keeps.
    user.allow(&format!(
        "{}, SETENV: {}",
        netwatch.display(),
        built.join("deps/*").display()
    ));

    // `cargo xtask run`: the build is the user's, the monitor root's.
    let pair = VethPair::new(true);
    let mut run = checkout.cargo(Some(&pair.monitor));
    run.args(["xtask", "run", "--debug", "--", "monitor", "-i"])
        .arg(&pair.monitor_if)
        .args(["--format", "json", "--interval", "200ms"])
        .args(["--metrics-addr", "off", "--db"])
        .arg(pair.monitor.db_path())
        .arg("--control")
        .arg(pair.monitor.control_path());
    let mut daemon = Daemon::spawn(run);
    let said = daemon.wait_stderr_within("through sudo", BUILD_TIMEOUT);
    assert!(said.contains(&netwatch.display().to_string()), "{said}");
    daemon.wait_stderr("attached to");
    counts_every_frame(daemon, &pair, 100);
    let owner = std::fs::metadata(&netwatch)
        .unwrap_or_else(|err| panic!("{}: {err}", netwatch.display()))
        .uid();
    assert_eq!(owner, user.uid, "the binary is the user's build");

    // `cargo xtask test`: the user's cargo builds the test and runs it through sudo -E. The
    // test loads the XDP program, and fails under CI=true (the user's) unless it is root.
    let test = "frames_shorter_than_ethernet_are_refused_by_the_kernel";
    let output = checkout
        .cargo(None)
        .args(["xtask", "test", "--", "--test", "datapath", test])
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("through sudo -E"), "{stderr}");
    assert!(stdout.contains(&format!("test {test} ... ok")), "{stdout}");
    assert!(stdout.contains("test result: ok. 1 passed;"), "{stdout}");

    // Refused by sudo: after cargo's own lines, one line, xtask's, the last; nothing from
    // sudo, no password asked.
    user.disallow();
    let output = checkout
        .cargo(None)
        .args(["xtask", "run", "--debug", "--", "check"])
        .output()
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("xtask:"))
        .collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(last, ours[0], "{stderr}");
    assert!(last.starts_with("xtask: error: "), "{stderr}");
    assert!(last.contains("sudo does not let"), "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|line| line.starts_with("sudo:") || line.contains("password for")),
        "{stderr}"
    );
}
