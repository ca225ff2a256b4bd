//! A running `netwatch` for the end-to-end tests: started in a namespace with a store and a
//! control socket of its own, its stdout and stderr read line by line, stopped by a signal
//! and killed on drop if the test did not stop it.

use std::{
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    frames::FrameBuilder,
    netns::{Netns, VethPair},
    netwatch_bin,
};

/// How long a daemon may take to start (attach) or exit.
pub const STARTUP: Duration = Duration::from_secs(20);
/// How long the reports may take to show what was sent.
pub const SETTLE: Duration = Duration::from_secs(15);

/// A running netwatch, killed on drop if the test did not stop it.
pub struct Daemon {
    child: Option<Child>,
    /// Its stdout, line by line.
    pub stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Its stderr lines read so far by the waits.
    pub stderr_seen: Vec<String>,
}

impl Daemon {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        let stdout = lines(child.stdout.take());
        let stderr = lines(child.stderr.take());
        Self {
            child: Some(child),
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// netwatch in `netns`, with a store of its own (the default store is the system's).
    pub fn in_netns(netns: &Netns, args: &[&str]) -> Self {
        let mut command = netns.command(&netwatch_bin().to_string_lossy());
        command.args(args);
        if args.first() == Some(&"monitor") {
            command.arg("--db").arg(netns.db_path());
            command.arg("--control").arg(netns.control_path());
        }
        Self::spawn(command)
    }

    /// `netwatch monitor` on the pair's monitored end with JSON reports every 200 ms, then
    /// `extra`; returns once it has attached, with its "attached to" line.
    pub fn json_monitor(pair: &VethPair, extra: &[&str]) -> (Self, String) {
        Self::json_monitor_every(pair, "200ms", extra)
    }

    /// [`Daemon::json_monitor`] with reports every `interval`.
    pub fn json_monitor_every(pair: &VethPair, interval: &str, extra: &[&str]) -> (Self, String) {
        let mut args = vec![
            "monitor",
            "-i",
            &pair.monitor_if,
            "--format",
            "json",
            "--interval",
            interval,
        ];
        args.extend_from_slice(extra);
        let mut daemon = Self::in_netns(&pair.monitor, &args);
        let attached = daemon.wait_stderr("attached to");
        (daemon, attached)
    }

    /// Waits for a stderr line containing `needle`; panics with all stderr seen on time-out
    /// or exit.
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        self.wait_stderr_within(needle, STARTUP)
    }

    /// [`Daemon::wait_stderr`] for at most `timeout`.
    pub fn wait_stderr_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {needle:?} on stderr in {timeout:?}: {:?}",
                        self.stderr_seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("netwatch exited before {needle:?}: {:?}", self.stderr_seen)
                }
            }
        }
    }

    /// Reads JSON reports until one says the cumulative packet count reached `packets`.
    pub fn wait_cumulative(&mut self, packets: u64, reports: &mut Vec<Value>) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|err| {
                panic!(
                    "no report with {packets} packets ({err}); last: {:?}",
                    reports.last()
                )
            });
            let report: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not JSON: {line:?}: {err}"));
            if report["type"] != "interval" {
                continue;
            }
            let seen = report["cumulative"]["packets"].as_u64().unwrap_or(0);
            reports.push(report);
            if seen >= packets {
                return;
            }
        }
    }

    /// Reads JSON lines (of any type) until one meets `done`; returns every line read, that
    /// one last. Panics with what it read after [`SETTLE`].
    pub fn records_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + SETTLE;
        let mut records = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|err| panic!("no such record ({err}); read: {records:?}"));
            let record: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not JSON: {line:?}: {err}"));
            let found = done(&record);
            records.push(record);
            if found {
                return records;
            }
        }
    }

    /// Sends `signal`, waits for the exit (bounded) and returns the status with the rest of
    /// stdout and stderr.
    pub fn stop(&mut self, signal: i32) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.signal(signal);
        let status = self.exit_within(Duration::from_secs(10), &format!("signal {signal}"));
        let stdout = self.stdout.iter().collect();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        stderr.extend(self.stderr.iter());
        (status, stdout, stderr)
    }

    /// Sends a signal without waiting.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("not running"));
        let pid = i32::try_from(child.id()).unwrap_or_else(|err| panic!("{err}"));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits for the process to exit by itself (bounded) and returns status and stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let status = self.exit_within(STARTUP, "start");
        let stderr: Vec<String> = self.stderr.iter().collect();
        (status, stderr.join("\n"))
    }

    /// Waits up to `bound` for the process to exit, after `what`; kills it and panics past it.
    fn exit_within(&mut self, bound: Duration, what: &str) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("already stopped"));
        let deadline = Instant::now() + bound;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                other => {
                    let _ = child.kill();
                    panic!("netwatch did not exit within {bound:?} of its {what}: {other:?}");
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lines(stream: Option<impl std::io::Read + Send + 'static>) -> Receiver<String> {
    match stream {
        Some(stream) => crate::process::lines(stream),
        None => mpsc::channel().1,
    }
}

/// Waits for `daemon` to fail with exit status 1 and one stderr line holding `needle`;
/// returns that line.
pub fn expect_failure(mut daemon: Daemon, needle: &str) -> String {
    let (status, stderr) = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "wanted {needle:?} in: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one clear line, not more: {stderr}"
    );
    stderr
}

/// Sends `count` frames from a few sources to the daemon's interface; the daemon counts them
/// all, then stops cleanly at SIGTERM.
pub fn counts_every_frame(mut daemon: Daemon, pair: &VethPair, count: u8) {
    let frames: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            FrameBuilder::ipv4([10, 7, 0, i % 4])
                .payload(20)
                .build()
                .bytes
        })
        .collect();
    assert_eq!(pair.send(frames), usize::from(count));
    let mut reports = Vec::new();
    daemon.wait_cumulative(u64::from(count), &mut reports);
    let (status, _, stderr) = daemon.stop(libc::SIGTERM);
    assert!(status.success(), "{stderr:?}");
    let last = reports.last().unwrap_or_else(|| panic!("no report"));
    assert_eq!(last["cumulative"]["packets"], u64::from(count));
}
