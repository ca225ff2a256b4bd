//! The notify commands of `[mitigate]`: each ban and unban, as one JSON line on standard input,
//! to every command in turn, on a thread of their own so that a slow script never delays
//! collection. A command runs without a shell, in a process group of its own, with a timeout
//! after which the group is killed; how it ended is logged. Its standard error is read by
//! netwatch, not inherited: at most [`STDERR_LINES`] lines of [`STDERR_LINE_BYTES`] bytes a
//! run reach the log, escaped, one prefixed line each, and the rest is counted. Events wait in
//! a bounded queue; past it they are counted and said. When netwatch stops, every process
//! group it started that still has a process is killed: nothing it ran outlives it.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{ChildStderr, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::escape::escape;

/// Events that may wait for the commands.
const QUEUE: usize = 1_024;
/// How long the daemon, stopping, waits for the commands to run what is queued.
const DRAIN: Duration = Duration::from_secs(20);
/// Lines of a run's standard error that reach the log.
pub const STDERR_LINES: usize = 5;
/// Bytes of one such line that reach the log; the rest of the line is counted.
pub const STDERR_LINE_BYTES: usize = 512;

/// The commands' thread and its queue.
pub struct Notifier {
    tx: Option<SyncSender<Arc<[u8]>>>,
    worker: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    /// Events queued and not yet run by every command.
    pending: Arc<AtomicU64>,
    /// The process groups started, killed at stop if anything of them is left.
    groups: Arc<Groups>,
    /// Set at stop, past the drain: the events still queued are not run.
    stopping: Arc<AtomicBool>,
    /// How long a stop waits for the commands to run what is queued ([`DRAIN`]).
    drain: Duration,
}

/// The process groups of the commands run, each led by the command it started; once
/// [`Groups::kill_all`] has run, no command starts any more.
#[derive(Debug, Default)]
struct Groups(Mutex<GroupList>);

#[derive(Debug, Default)]
struct GroupList {
    groups: Vec<i32>,
    stopped: bool,
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, GroupList> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts `command` in a process group of its own and keeps the group, forgetting those
    /// with no process left; under the lock, so that a stop cannot fall between the start
    /// and the keeping. Refused once the groups were killed.
    fn spawn(&self, command: &mut Command) -> io::Result<std::process::Child> {
        let mut list = self.lock();
        if list.stopped {
            return Err(io::Error::other("netwatch is stopping"));
        }
        let child = command.process_group(0).spawn()?;
        list.groups.retain(|&group| alive(group));
        if let Ok(group) = i32::try_from(child.id()) {
            list.groups.push(group);
        }
        Ok(child)
    }

    /// Kills every group that still has a process, and lets no command start after;
    /// returns how many groups it killed.
    fn kill_all(&self) -> usize {
        let mut list = self.lock();
        list.stopped = true;
        list.groups
            .iter()
            .filter(|&&group| alive(group) && ours(group))
            // SAFETY: a signal to a process group this process started, whose number no
            // other process has taken (see `ours`).
            .filter(|&&group| unsafe { libc::kill(-group, libc::SIGKILL) } == 0)
            .count()
    }
}

/// Whether process group `group` has a process (signal 0 only checks).
fn alive(group: i32) -> bool {
    // SAFETY: signal 0 sends nothing.
    unsafe { libc::kill(-group, 0) == 0 }
}

/// Whether `group` is still the group a command of ours leads or led: its leader is our
/// child, or gone (its children live on in the group). A process of that number whose
/// parent is someone else took the number after our leader was reaped: not ours to kill.
fn ours(group: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{group}/stat")) else {
        return true;
    };
    // Fields after the command name's closing parenthesis: state, then the parent's pid.
    let parent = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse::<u32>().ok());
    parent == Some(std::process::id())
}

/// Why a notify command cannot be run, checked at start and at reload; `None` when it can.
pub fn check_command(command: &Path) -> Option<String> {
    let shown = escape(&command.to_string_lossy()).into_owned();
    if !command.is_absolute() {
        return Some(format!(
            "notify command {shown} is not an absolute path (netwatch runs it without a shell and without PATH)"
        ));
    }
    match std::fs::metadata(command) {
        Err(err) => Some(format!("notify command {shown}: {err}")),
        Ok(meta) if !meta.is_file() => Some(format!("notify command {shown} is not a file")),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Some(format!("notify command {shown} is not executable"))
        }
        Ok(_) => None,
    }
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
        for command in &commands {
            if let Some(problem) = check_command(command) {
                log::warn!(
                    "{problem}: it will fail at every ban until fixed (netwatch check -c tells)"
                );
            }
        }
        let (tx, rx) = sync_channel(QUEUE);
        let pending = Arc::new(AtomicU64::new(0));
        let groups = Arc::new(Groups::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = {
            let (pending, groups, stopping) = (
                Arc::clone(&pending),
                Arc::clone(&groups),
                Arc::clone(&stopping),
            );
            thread::Builder::new()
                .name(String::from("notify"))
                .spawn(move || work(&rx, &commands, timeout, &pending, &groups, &stopping))?
        };
        Ok(Some(Self {
            tx: Some(tx),
            worker: Some(worker),
            dropped: Arc::new(AtomicU64::new(0)),
            pending,
            groups,
            stopping,
            drain: DRAIN,
        }))
    }

    /// Queues one event's JSON line (newline included) without waiting.
    pub fn send(&self, line: &[u8]) {
        let Some(tx) = &self.tx else {
            return;
        };
        // Counted before the worker can take it, so that its count never goes below zero.
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = tx.try_send(Arc::from(line));
        if sent.is_err() {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {}
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
        let deadline = Instant::now() + self.drain;
        while !worker.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if !worker.is_finished() {
            log::warn!(
                "stopping: {} ban events not handed to the notify commands within {:.0} s",
                self.pending.load(Ordering::Relaxed),
                self.drain.as_secs_f64()
            );
            self.stopping.store(true, Ordering::Relaxed);
        }
        // Whatever a command left running (a hung one, or a child it put in the background)
        // goes with netwatch.
        let killed = self.groups.kill_all();
        if killed > 0 {
            log::warn!("stopping: killed {killed} notify command process groups still running");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !worker.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if worker.is_finished() {
            let _ = worker.join();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(
    rx: &Receiver<Arc<[u8]>>,
    commands: &[PathBuf],
    timeout: Duration,
    pending: &AtomicU64,
    groups: &Groups,
    stopping: &AtomicBool,
) {
    let mut failing = vec![false; commands.len()];
    for line in rx {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let what = summary(&line);
        for (command, failing) in commands.iter().zip(failing.iter_mut()) {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            let ran = run(command, &line, timeout, groups);
            match &ran {
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
                // Said once (and at start), not at every event, until it runs again.
                Err(err) if !*failing => log::warn!(
                    "notify {}: {what}: cannot run it: {err}; said once until it runs again",
                    command.display()
                ),
                Err(_) => {}
            }
            *failing = ran.is_err();
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a command ended.
enum Ended {
    Exited(ExitStatus),
    Killed,
}

fn run(command: &Path, line: &[u8], timeout: Duration, groups: &Groups) -> io::Result<Ended> {
    // A group of its own, so that a timeout kills what it started too.
    let mut child = groups.spawn(
        Command::new(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    if let Some(stderr) = child.stderr.take() {
        let name = escape(&command.to_string_lossy()).into_owned();
        // Read to its end whatever happens, so that the command never blocks on a full pipe;
        // the thread ends when the last process holding the pipe does.
        let _ = thread::Builder::new()
            .name(String::from("notify-stderr"))
            .spawn(move || log_stderr(&name, stderr));
    }
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

/// Logs a command's standard error as it comes: its first [`STDERR_LINES`] lines, each cut
/// at [`STDERR_LINE_BYTES`] bytes and escaped, as `notify COMMAND: stderr: LINE`; at its end,
/// how much more there was.
fn log_stderr(command: &str, stderr: ChildStderr) {
    stderr_lines(BufReader::new(stderr), |line| {
        log::warn!("notify {command}: stderr: {line}");
    });
}

/// Hands `log` the lines of a standard error that reach the log, escaped, as they are read,
/// then, at the end, a line saying what was left out.
fn stderr_lines(mut reader: impl io::BufRead, mut log: impl FnMut(&str)) {
    let (mut logged, mut more_lines, mut more_bytes) = (0usize, 0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most a line's worth in memory: a longer line is cut, its rest counted.
        let read = match (&mut reader)
            .take(STDERR_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let ended = line.ends_with(b"\n");
        let mut cut = 0u64;
        if !ended && read > STDERR_LINE_BYTES {
            // Skip the rest of the long line.
            line.truncate(STDERR_LINE_BYTES);
            cut += 1;
            loop {
                let buffer = match reader.fill_buf() {
                    Ok([]) | Err(_) => break,
                    Ok(buffer) => buffer,
                };
                let (consumed, found) = match buffer.iter().position(|&b| b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (buffer.len(), false),
                };
                // The line's bytes, not its newline.
                cut += (consumed - usize::from(found)) as u64;
                reader.consume(consumed);
                if found {
                    break;
                }
            }
        }
        if logged < STDERR_LINES {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            let mut shown = escape(text).into_owned();
            if cut > 0 {
                shown.push_str(&format!(" ... ({cut} more bytes of this line)"));
            }
            log(&shown);
            logged += 1;
        } else {
            more_lines += 1;
            more_bytes += line.len() as u64 + cut;
        }
    }
    if more_lines > 0 {
        log(&format!(
            "... and {more_lines} more lines ({more_bytes} bytes) not logged"
        ));
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

    /// A script's standard error reaches the log bounded: its first lines, each cut and
    /// escaped, then how much more there was; nothing of it is written raw anywhere.
    #[test]
    fn a_flood_of_stderr_is_bounded_and_escaped() {
        let mut input = Vec::new();
        input.extend_from_slice(b"first \x1b[2J line\n");
        input.extend_from_slice(&vec![b'x'; 10_000]);
        input.push(b'\n');
        for n in 0..100_000 {
            input.extend_from_slice(format!("FLOOD-STDERR-LINE-{n:07}\n").as_bytes());
        }
        input.extend_from_slice(b"a last partial line without newline");
        let mut lines = Vec::new();
        stderr_lines(io::Cursor::new(&input), |line| lines.push(line.to_owned()));
        assert_eq!(lines.len(), STDERR_LINES + 1, "{lines:?}");
        assert_eq!(lines[0], "first \\x1b[2J line");
        assert!(
            lines[1].starts_with(&"x".repeat(STDERR_LINE_BYTES)),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("(9488 more bytes of this line)"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "FLOOD-STDERR-LINE-0000000");
        // 100,000 flood lines of 26 bytes and the partial one of 35, less the three logged.
        assert_eq!(
            lines[STDERR_LINES],
            format!(
                "... and 99998 more lines ({} bytes) not logged",
                99_997 * 26 + 35
            )
        );
        assert!(lines.iter().all(|line| !line.contains('\u{1b}')));
    }

    /// What a notify command leaves running (a hang past the drain, or a child put in the
    /// background by a command that exited) is killed when netwatch stops: no process
    /// outlives it.
    #[test]
    fn nothing_a_command_started_outlives_the_notifier() {
        let dir = std::env::temp_dir().join(format!("netwatch-notify-bg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        // Exits at once, leaving a child behind in its group.
        let background = script(
            &dir,
            "background",
            &format!("sleep 100000 &\necho $! >> {}\nexit 0", pids.display()),
        );
        let notifier = Notifier::start(vec![background], Duration::from_secs(5))
            .unwrap()
            .unwrap();
        notifier.send(b"{\"action\":\"ban\",\"subject\":\"10.0.0.2/32\"}\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&pids).map_or(true, |p| p.is_empty())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
        let pid = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
        assert!(running(&pid), "sleep {pid} should run until the stop");
        notifier.stop();
        let deadline = Instant::now() + Duration::from_secs(2);
        while running(&pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(&pid), "sleep {pid} outlived the notifier");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A command that hangs past the stop's drain (its timeout far away): killed, group and
    /// all, when netwatch stops, and the stop does not wait for its timeout.
    #[test]
    fn a_hanging_command_is_killed_at_stop() {
        let dir = std::env::temp_dir().join(format!("netwatch-notify-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        let hang = script(
            &dir,
            "hang",
            &format!("echo $$ >> {}\nexec sleep 100000", pids.display()),
        );
        let mut notifier = Notifier::start(vec![hang], Duration::from_secs(600))
            .unwrap()
            .unwrap();
        notifier.drain = Duration::from_millis(300);
        notifier.send(b"{\"action\":\"ban\",\"subject\":\"10.0.0.3/32\"}\n");
        notifier.send(b"{\"action\":\"unban\",\"subject\":\"10.0.0.3/32\"}\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&pids).map_or(true, |p| p.is_empty())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
        let pid = std::fs::read_to_string(&pids).unwrap().trim().to_owned();
        let stopped = Instant::now();
        notifier.stop();
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "the stop waited for the command's timeout"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        while running(&pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !running(&pid),
            "the hanging command {pid} outlived the notifier"
        );
        // The second event was not run after the stop.
        assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Running, not a zombie nobody reaped.
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z'))
        })
    }

    #[test]
    fn a_command_that_cannot_run_is_named_at_the_check() {
        let dir =
            std::env::temp_dir().join(format!("netwatch-notify-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_command(&plain).unwrap().contains("not executable"));
        assert!(
            check_command(&dir.join("missing"))
                .unwrap()
                .contains("No such file")
        );
        assert!(
            check_command(Path::new("relative"))
                .unwrap()
                .contains("absolute")
        );
        assert!(check_command(&dir).unwrap().contains("not a file"));
        let good = script(&dir, "good", "exit 0");
        assert_eq!(check_command(&good), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
