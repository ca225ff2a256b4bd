//! `netwatch top`: a live terminal view of a running daemon, through its control socket (the
//! status, then the subscription's stream). With no daemon answering, `--iface` starts one of
//! its own for that interface, a `monitor` with the default configuration whose only output is
//! its socket, stopped with `top` however `top` ends.
//! `top` never writes to the daemon beyond its two requests, and the daemon never waits for
//! it (the socket's queues are bounded).

use std::{
    io::{self, BufRead as _, IsTerminal as _, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, TryRecvError},
    },
    thread,
    time::{Duration, Instant},
};

use ratatui::{
    DefaultTerminal,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
};
use serde_json::Value;

use crate::{
    cli::TopArgs,
    config::ConfigError,
    control,
    report::escape,
    top::{
        Action, Key, Model,
        view::{self, Palette},
    },
};

/// How long a daemon `top` starts itself may take to answer.
const OWN_START: Duration = Duration::from_secs(20);
/// How often the status (uptime, interfaces) is asked again.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// Why `top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Nothing to watch.
    #[error(
        "no netwatch daemon answers on {path}: start one (`netwatch monitor -i IFACE`), point top at its socket (--control PATH), or give top --iface IFACE to watch an interface itself"
    )]
    NoDaemon {
        /// The socket.
        path: PathBuf,
    },
    /// The daemon `top` started did not come up.
    #[error("the monitor top started for {iface} stopped: {reason}")]
    OwnDaemon {
        /// The interface.
        iface: String,
        /// Its last words.
        reason: String,
    },
    /// Not on a terminal.
    #[error(
        "top draws on a terminal; standard output is not one (use `netwatch status` or a subscription in scripts)"
    )]
    NotATerminal,
    /// The terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[from] io::Error),
}

/// A daemon `top` started itself: stopped, and its folder removed, on drop.
struct OwnDaemon {
    child: Child,
    dir: PathBuf,
}

impl OwnDaemon {
    /// Its last words, from its log, if it has stopped.
    fn stopped(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            _ => {
                let mut said = String::new();
                let _ = std::fs::File::open(self.dir.join("monitor.log"))
                    .and_then(|mut file| file.read_to_string(&mut said));
                let last = said.lines().last().unwrap_or("it exited").to_owned();
                Some(escape(last.trim_start_matches("netwatch: ")).into_owned())
            }
        }
    }
}

impl Drop for OwnDaemon {
    fn drop(&mut self) {
        // Signalled only while it runs: once reaped, its pid may be another process's.
        if let Ok(None) = self.child.try_wait()
            && let Ok(pid) = i32::try_from(self.child.id())
        {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A folder of `top`'s own that did not exist before: made with mode 0700 under a fresh name,
/// so that nobody can have put a file or a link there beforehand.
fn fresh_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = base.join(format!(
            "netwatch-top-{}-{nanos:08x}{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::other("no fresh folder name found"))
}

/// Starts `netwatch monitor` on `iface` with its socket in a fresh private folder, and the
/// defaults for everything else (no alerts file, no webhook: its only output is the
/// socket); returns it once it is attached.
fn start_own(iface: &str) -> Result<(OwnDaemon, PathBuf), TopError> {
    let own = |reason: String| TopError::OwnDaemon {
        iface: iface.to_owned(),
        reason,
    };
    let dir = fresh_dir().map_err(|err| own(err.to_string()))?;
    let socket = dir.join("control.sock");
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("monitor.log"))
        .map_err(|err| own(err.to_string()))?;
    let exe = std::env::current_exe().map_err(|err| own(err.to_string()))?;
    let mut command = Command::new(exe);
    command
        .args(["monitor", "--iface", iface, "--format", "json"])
        .arg("--output")
        .arg("/dev/null")
        .args(["--metrics-addr", "off", "--log-level", "warn", "--db"])
        .arg(dir.join("store.db"))
        .arg("--control")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl only, between fork and exec. The monitor goes with top however top
    // ends (a closed terminal, a lost SSH session, a kill): nothing stays attached.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|err| own(err.to_string()))?;
    let mut daemon = OwnDaemon { child, dir };
    let deadline = Instant::now() + OWN_START;
    loop {
        // Attached, not only listening: the socket is up before the program is loaded.
        let attached = status(&socket).is_ok_and(|status| {
            status["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["iface"] == iface && i["state"] == "attached")
        });
        if attached {
            return Ok((daemon, socket));
        }
        if let Some(reason) = daemon.stopped() {
            return Err(own(reason));
        }
        if Instant::now() > deadline {
            return Err(own(format!("not attached within {OWN_START:?}")));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's status, or why not.
fn status(path: &Path) -> io::Result<Value> {
    let mut reader = control::connect(path, "status")?;
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let value: Value = serde_json::from_str(&line).map_err(io::Error::other)?;
    if value["type"] != "status" {
        return Err(io::Error::other(escape(line.trim_end()).into_owned()));
    }
    Ok(value)
}

/// What the reading thread says.
enum Message {
    Record(Value),
    /// The records ended without the daemon saying it stops: it dropped this subscriber
    /// (it fell behind, or was paused past the write timeout) and may well go on.
    Dropped,
    /// The daemon said it stops.
    Ended,
}

/// Subscribes; the records arrive on the receiver, then [`Message::Ended`].
fn subscribe(path: &Path) -> io::Result<Receiver<Message>> {
    let mut reader = control::connect(path, "subscribe")?;
    // The hello, or why not (a daemon at its client limit says it is busy): taken as no
    // subscription, tried again at the next status rather than at once.
    let mut hello = String::new();
    reader.read_line(&mut hello)?;
    if let Some(busy) = control::busy(&hello) {
        return Err(io::Error::other(busy));
    }
    // Records come once an interval, however long that is.
    reader.get_ref().set_read_timeout(None)?;
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(String::from("subscription"))
        .spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // The daemon's last line says why the records end.
                let message = match value["type"].as_str() {
                    Some("dropped") => break,
                    Some("stopping") => {
                        let _ = tx.send(Message::Ended);
                        return;
                    }
                    _ => Message::Record(value),
                };
                if tx.send(message).is_err() {
                    return;
                }
            }
            let _ = tx.send(Message::Dropped);
        })?;
    Ok(rx)
}

/// The terminal in raw mode on the alternate screen, restored on drop (and on a panic).
struct Screen(DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn key_of(code: KeyCode, modifiers: KeyModifiers) -> Option<Key> {
    Some(match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Tab => Key::Tab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        _ => return None,
    })
}

/// Runs until `q`, Ctrl-C, or (with `--exit-with-daemon`) the daemon's end.
pub fn run(args: TopArgs) -> Result<(), TopError> {
    let TopArgs {
        config,
        control,
        iface,
        exit_with_daemon,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    if !io::stdout().is_terminal() {
        return Err(TopError::NotATerminal);
    }
    let (mut own, path) = match status(&path) {
        Ok(_) => (None, path),
        Err(_) => match &iface {
            Some(iface) => {
                let (own, socket) = start_own(iface)?;
                (Some(own), socket)
            }
            None => return Err(TopError::NoDaemon { path }),
        },
    };
    let mut model = Model::default();
    if let Ok(status) = status(&path) {
        model.set_status(status);
    }
    let mut records = subscribe(&path).ok();
    let palette = Palette {
        plain: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    };
    // A closed terminal or a kill ends top as `q` does: the terminal restored, its own
    // monitor stopped.
    for signal in [libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(signal, on_hangup as *const () as libc::sighandler_t) };
    }
    let mut screen = Screen(ratatui::init());
    let mut last_status = Instant::now();
    let mut dirty = true;
    let outcome = loop {
        if dirty {
            screen.0.draw(|frame| view::draw(frame, &model, palette))?;
            dirty = false;
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    if let Some(key) = key_of(key.code, key.modifiers) {
                        match model.key(key) {
                            Action::Quit => break Ok(()),
                            Action::Redraw => dirty = true,
                            Action::None => {}
                        }
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if let Some(rx) = &records {
            loop {
                match rx.try_recv() {
                    Ok(Message::Record(record)) => {
                        model.apply(record);
                        dirty = true;
                    }
                    Ok(Message::Dropped) => {
                        // Dropped (a terminal too slow, or the daemon paused), or the daemon
                        // died without a word: a daemon that still answers goes on, and so
                        // does top, from the next record.
                        // A daemon that answers but takes no subscriber now (busy) is tried
                        // again at the next status, not gone.
                        let answers = status(&path).is_ok();
                        records = answers.then(|| subscribe(&path).ok()).flatten();
                        if !answers {
                            model.gone = true;
                        }
                        dirty = true;
                        break;
                    }
                    Ok(Message::Ended) | Err(TryRecvError::Disconnected) => {
                        records = None;
                        model.gone = true;
                        dirty = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
        }
        if model.gone && exit_with_daemon {
            break Err(format!("the daemon on {} stopped", path.display()));
        }
        if let Some(reason) = own.as_mut().and_then(OwnDaemon::stopped) {
            break Err(format!("top's own monitor stopped: {reason}"));
        }
        if HANGUP.load(Ordering::Relaxed) {
            break Ok(());
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            match status(&path) {
                Ok(status) => {
                    model.set_status(status);
                    if records.is_none() {
                        // The daemon is back (or another took its socket): follow it.
                        records = subscribe(&path).ok();
                    }
                    dirty = true;
                }
                // A daemon whose subscription is still open is there, only slow to
                // answer (paused, or busy): gone is what the subscription says.
                Err(_) if records.is_some() => {}
                Err(_) => {
                    if !model.gone {
                        model.gone = true;
                        dirty = true;
                    }
                }
            }
        }
    };
    drop(screen);
    drop(own);
    if let Err(reason) = outcome {
        log::info!("{reason}");
    }
    Ok(())
}

/// Set by SIGHUP or SIGTERM.
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}
