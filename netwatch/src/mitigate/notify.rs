//! The notify commands of `[mitigate]`: each ban and unban, as one JSON line on standard input,
//! to every command in turn, on a thread of their own so that a slow script never delays
//! collection. A command runs without a shell, with a timeout after which it is killed; how
//! it ended is logged. Events wait in a bounded queue; past it they are counted and said.

use std::{
    io::{self, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// Events that may wait for the commands.
const QUEUE: usize = 1_024;
/// How long the daemon, stopping, waits for the commands to run what is queued.
const DRAIN: Duration = Duration::from_secs(20);

/// The commands' thread and its queue.
pub struct Notifier {
    tx: Option<SyncSender<Arc<[u8]>>>,
    worker: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    /// Events queued and not yet run by every command.
    pending: Arc<AtomicU64>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the thread for `commands`; `None` when there are none.
    pub fn start(commands: Vec<PathBuf>, timeout: Duration) -> io::Result<Option<Self>> {
        if commands.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = sync_channel(QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let left = Arc::clone(&pending);
        let worker = thread::Builder::new()
            .name(String::from("notify"))
            .spawn(move || work(&rx, &commands, timeout, &left))?;
        Ok(Some(Self {
            tx: Some(tx),
            worker: Some(worker),
            dropped: Arc::new(AtomicU64::new(0)),
            pending,
        }))
    }

    /// Queues one event's JSON line (newline included) without waiting.
    pub fn send(&self, line: &[u8]) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(Arc::from(line)) {
            Ok(()) => {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    log::warn!(
                        "the notify commands are {QUEUE} events behind; {dropped} events not handed to them so far"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                log::warn!("the notify thread stopped; an event was not handed to the commands");
            }
        }
    }

    /// Runs what is queued, for [`DRAIN`] at most, then stops the thread; what is left is
    /// said.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        let Some(worker) = self.worker.take() else {
            return;
        };
        let deadline = Instant::now() + DRAIN;
        while !worker.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if worker.is_finished() {
            let _ = worker.join();
        } else {
            log::warn!(
                "stopping: {} ban events not handed to the notify commands within {} s",
                self.pending.load(Ordering::Relaxed),
                DRAIN.as_secs()
            );
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(rx: &Receiver<Arc<[u8]>>, commands: &[PathBuf], timeout: Duration, pending: &AtomicU64) {
    for line in rx {
        let what = summary(&line);
        for command in commands {
            match run(command, &line, timeout) {
                Ok(Ended::Exited(status)) if status.success() => {
                    log::info!("notify {}: {what}: exit 0", command.display());
                }
                Ok(Ended::Exited(status)) => {
                    log::warn!("notify {}: {what}: {status}", command.display());
                }
                Ok(Ended::Killed) => log::warn!(
                    "notify {}: {what}: still running after {:.1}s (mitigate.notify_timeout), killed",
                    command.display(),
                    timeout.as_secs_f64()
                ),
                Err(err) => {
                    log::warn!("notify {}: {what}: cannot run it: {err}", command.display())
                }
            }
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a command ended.
enum Ended {
    Exited(ExitStatus),
    Killed,
}

fn run(command: &Path, line: &[u8], timeout: Duration) -> io::Result<Ended> {
    // A group of its own, so that a timeout kills what it started too.
    let mut child = Command::new(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is its own business: a broken pipe is no
        // failure of the notification.
        let _ = stdin.write_all(line);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Ended::Exited(status));
        }
        if Instant::now() >= deadline {
            if let Ok(group) = i32::try_from(child.id()) {
                // SAFETY: a signal to the process group the child leads.
                unsafe { libc::kill(-group, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Ended::Killed);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `ban 10.0.0.2/32`, from an event's JSON line, for the log.
fn summary(line: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
    format!(
        "{} {}",
        value["action"].as_str().unwrap_or("?"),
        value["subject"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Every event reaches every command once, in order, on standard input; a command that
    /// hangs is killed at the timeout and the next event still runs.
    #[test]
    fn each_event_reaches_each_command_once_in_order() {
        let dir = std::env::temp_dir().join(format!("netwatch-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("seen");
        let append = script(&dir, "append", &format!("cat >> {}", out.display()));
        // A shell that starts a child: the timeout must kill both.
        let sleeps = dir.join("sleeps");
        let hang = script(
            &dir,
            "hang",
            &format!("sleep 30 &\necho $! >> {}\nwait", sleeps.display()),
        );
        let notifier = Notifier::start(vec![append, hang], Duration::from_millis(200))
            .unwrap()
            .unwrap();
        let started = Instant::now();
        notifier.send(b"{\"action\":\"ban\",\"subject\":\"10.0.0.2/32\"}\n");
        notifier.send(b"{\"action\":\"unban\",\"subject\":\"10.0.0.2/32\"}\n");
        notifier.stop();
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            seen,
            "{\"action\":\"ban\",\"subject\":\"10.0.0.2/32\"}\n{\"action\":\"unban\",\"subject\":\"10.0.0.2/32\"}\n"
        );
        // Both hangs were cut at the timeout, far short of their 30 s.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // The shells' children too: the whole process group went.
        let pids = std::fs::read_to_string(&sleeps).unwrap();
        assert_eq!(pids.lines().count(), 2, "{pids}");
        for pid in pids.lines() {
            let gone = || {
                // Gone, or a zombie no one has reaped yet.
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                    stat.rsplit(") ")
                        .next()
                        .is_some_and(|rest| rest.starts_with('Z'))
                })
            };
            let deadline = Instant::now() + Duration::from_secs(2);
            while !gone() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            assert!(gone(), "sleep {pid} outlived its killed command");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
