//! The control socket: how `netwatch status`, `netwatch top` and scripts ask a running daemon
//! what it sees.
//!
//! A Unix stream socket (default `/run/netwatch/control.sock`), mode 0600, owned by the
//! daemon's user. The protocol is versioned and line-based, one JSON object per line (the
//! README has it in full):
//!
//! - the client sends one request: `{"version":1,"request":"status"}` or
//!   `{"version":1,"request":"subscribe"}`;
//! - `status`: the daemon answers with one status object and closes;
//! - `subscribe`: the daemon answers with a `hello` object, then every interval record,
//!   alert, event and ban as the JSON output writes them, until either side closes;
//! - `ban_add` (with `subject`, and `ttl_s` and `reason` if wanted), `ban_remove` (with
//!   `subject`) and `ban_list`: one answer, the ban event, the list or an error, and close.
//!
//! The collection never waits on a client: each subscriber has a bounded queue, filled with
//! `try_send`; a subscriber that falls [`SUBSCRIBER_QUEUE`] records behind is dropped, and
//! that is counted and said.

use std::{
    collections::VecDeque,
    fs,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{
    detect::cidr::Cidr,
    mitigate::{Ban, BanEvent, BanRefusal, MitigateMode},
    report::{
        self, rfc3339,
        sink::{Finding, FindingReport, IntervalReport, Sink},
        store::SinkCounts,
        webhook::WebhookState,
    },
};

/// The protocol's version: the `version` of every request and answer.
pub const PROTOCOL_VERSION: u32 = 1;
/// Records a subscriber may fall behind before it is dropped.
pub const SUBSCRIBER_QUEUE: usize = 256;
/// Clients served at once; more are answered with an error and closed.
const MAX_CLIENTS: usize = 64;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write to a subscriber may block before it is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Alerts kept for `status`.
const LAST_ALERTS: usize = 10;
/// Longest request line read.
const MAX_REQUEST: u64 = 4096;

/// A request line.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `status`, `subscribe`, `ban_add`, `ban_remove` or `ban_list`.
    pub request: String,
    /// For `ban_add` and `ban_remove`: the network (`ADDR` or `ADDR/LEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For `ban_add`: how long, in seconds (`mitigate.manual_ttl` without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<f64>,
    /// For `ban_add`: why, in the user's words (at most [`MAX_REASON`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest reason of a ban asked for on the socket, in characters.
pub const MAX_REASON: usize = 200;
/// Longest a ban asked for on the socket may last: a year.
const MAX_BAN_TTL_S: f64 = 366.0 * 86_400.0;
/// How long a ban request waits for the daemon's answer.
const BAN_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a client of the control socket asks of the bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanOp {
    /// Ban a network (a host as /32 or /128) for a time, with a reason.
    Add {
        /// The network.
        net: Cidr,
        /// How long; `mitigate.manual_ttl` without.
        ttl: Option<Duration>,
        /// Why, in the user's words.
        reason: Option<String>,
    },
    /// Lift the ban of exactly this network.
    Remove {
        /// The network.
        net: Cidr,
    },
    /// The bans in force.
    List,
}

/// What the daemon made of a [`BanOp`], for its answer.
#[derive(Debug)]
pub enum BanAnswer {
    /// The ban or unban done.
    Event(BanEvent),
    /// The bans in force, under the mode.
    List {
        /// The mode of mitigation.
        mode: MitigateMode,
        /// The bans.
        bans: Vec<Ban>,
    },
    /// Refused, and why.
    Refused(BanRefusal),
}

impl BanAnswer {
    /// The answer's line: the ban event as the JSON output writes it, the list, or an error.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Event(event) => {
                let mut line = Vec::new();
                let mut answer = report::ban::write_json(&mut line, event)
                    .ok()
                    .and_then(|()| serde_json::from_slice::<serde_json::Value>(&line).ok())
                    .unwrap_or_else(|| serde_json::json!({}));
                answer["version"] = serde_json::json!(PROTOCOL_VERSION);
                answer
            }
            Self::List { mode, bans } => {
                let bans: Vec<serde_json::Value> = bans
                    .iter()
                    .map(|ban| {
                        serde_json::json!({
                            "subject": ban.terms.net.to_string(),
                            "origin": ban.terms.origin.name(),
                            "reason": ban.terms.reason,
                            "alert": ban.terms.alert,
                            "iface": ban.terms.iface,
                            "created": rfc3339(std::time::UNIX_EPOCH + ban.terms.created),
                            "expires": rfc3339(std::time::UNIX_EPOCH + ban.terms.expires),
                            "ttl_s": ban.terms.expires.saturating_sub(ban.terms.created).as_secs(),
                            "offence": ban.terms.offence,
                            "packets": ban.packets,
                            "bytes": ban.bytes,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "version": PROTOCOL_VERSION,
                    "type": "bans",
                    "mode": mode,
                    "bans": bans,
                })
            }
            Self::Refused(refusal) => error(&refusal.to_string()),
        }
    }
}

/// A ban request handed to the daemon's loop, with where its answer goes.
#[derive(Debug)]
pub struct BanCall {
    /// What is asked.
    pub op: BanOp,
    /// The answer: a ban event, the list, or an error object.
    pub reply: SyncSender<serde_json::Value>,
}

impl BanCall {
    /// Answers the client, if it still waits (it may have given up: nobody to tell).
    pub fn answer(self, answer: &BanAnswer) {
        let _ = self.reply.send(answer.to_json());
    }
}

/// One attached interface, as `status` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Its name.
    pub iface: String,
    /// Its index.
    pub ifindex: u32,
    /// `driver` or `skb`.
    pub mode: String,
    /// `per-cpu` or `shared`.
    pub source_map: String,
    /// Slots for sources.
    pub max_sources: u32,
    /// `attached`, or `gone` while the interface is away (deleted, unplugged).
    pub state: String,
}

/// What the daemon counted, as of the last interval.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Packets since the start.
    pub packets: u64,
    /// Bytes since the start.
    pub bytes: u64,
    /// Packets per second in the last interval.
    pub pps: f64,
    /// Bits per second in the last interval.
    pub bps: f64,
    /// Sources holding a slot.
    pub sources_tracked: u64,
    /// Frames counted in no source since the start: non-IP, malformed, without a slot
    /// (overflow), and IP frames shorter than their header says (truncated).
    pub non_ip: u64,
    /// See `non_ip`.
    pub malformed: u64,
    /// See `non_ip`.
    pub overflow: u64,
    /// See `non_ip`.
    pub truncated: u64,
}

/// The store's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// Records waiting in memory for the store (a full disk).
    pub waiting: u64,
    /// Records dropped because the writer was behind.
    pub dropped: u64,
    /// Records lost to refused writes.
    pub failed: u64,
}

/// The webhooks' state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookStatus {
    /// URLs configured.
    pub urls: usize,
    /// Records queued for them.
    pub queued: u64,
    /// URLs failing right now.
    pub down: u64,
}

/// The answer to `status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The daemon's process id.
    pub pid: u32,
    /// netwatch's version.
    pub netwatch: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// Seconds since.
    pub uptime_s: f64,
    /// The collection interval.
    pub interval_ms: u64,
    /// The interfaces it is attached to.
    pub interfaces: Vec<InterfaceStatus>,
    /// What it counted.
    pub counts: Counts,
    /// The last alert lines, oldest first, as JSON objects.
    pub last_alerts: VecDeque<serde_json::Value>,
    /// The store.
    pub store: StoreStatus,
    /// The webhooks.
    pub webhook: WebhookStatus,
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Subscribers dropped for falling behind, since the start.
    pub subscribers_dropped: u64,
}

/// What the control socket shares with the daemon.
pub struct Control {
    status: Mutex<Status>,
    started: Instant,
    /// Each subscriber's queue, and whether it was counted as dropped (by the publisher or
    /// by its writer, whichever saw it first).
    subscribers: Mutex<Vec<Subscriber>>,
    dropped: AtomicU64,
    clients: AtomicUsize,
    store: Mutex<Option<Arc<SinkCounts>>>,
    webhook: Mutex<Option<Arc<WebhookState>>>,
    /// Where ban requests go: the daemon's loop, which owns the bans.
    bans: Mutex<Option<tokio::sync::mpsc::Sender<BanCall>>>,
}

impl Control {
    /// The shared state of a daemon that collects every `interval`.
    pub fn new(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            status: Mutex::new(Status {
                version: PROTOCOL_VERSION,
                kind: String::from("status"),
                pid: std::process::id(),
                netwatch: String::from(env!("CARGO_PKG_VERSION")),
                started: rfc3339(SystemTime::now()),
                interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                ..Status::default()
            }),
            started: Instant::now(),
            subscribers: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            store: Mutex::new(None),
            webhook: Mutex::new(None),
            bans: Mutex::new(None),
        })
    }

    /// Hands ban requests to `bans` from now on.
    pub fn serve_bans(&self, bans: tokio::sync::mpsc::Sender<BanCall>) {
        *lock(&self.bans) = Some(bans);
    }

    /// Asks the daemon's loop about the bans and waits for its answer (bounded).
    fn ban(&self, op: BanOp) -> serde_json::Value {
        let Some(bans) = lock(&self.bans).clone() else {
            return error("this daemon takes no ban requests");
        };
        let (reply, answer) = sync_channel(1);
        match bans.try_send(BanCall { op, reply }) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                return error("the daemon is busy with other ban requests; try again");
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                return error("the daemon is stopping");
            }
        }
        answer
            .recv_timeout(BAN_ANSWER_TIMEOUT)
            .unwrap_or_else(|_| {
                error(
                    "the daemon did not answer within 5 s; the request may still be carried out (see netwatch ban list)",
                )
            })
    }

    /// Adds an attached interface.
    pub fn attached(&self, interface: InterfaceStatus) {
        lock(&self.status).interfaces.push(interface);
    }

    /// An interface went away (`gone`) or came back (`attached`, with its new index and mode).
    pub fn set_state(&self, iface: &str, state: &str, ifindex: u32, mode: &str) {
        let mut status = lock(&self.status);
        for interface in status.interfaces.iter_mut().filter(|i| i.iface == iface) {
            interface.state = state.to_owned();
            interface.ifindex = ifindex;
            if !mode.is_empty() {
                interface.mode = mode.to_owned();
            }
        }
    }

    /// Where the store's and the webhooks' counts are read.
    pub fn watch(&self, store: Option<Arc<SinkCounts>>, webhook: Option<Arc<WebhookState>>) {
        *lock(&self.store) = store;
        *lock(&self.webhook) = webhook;
    }

    /// The status now.
    pub fn status(&self) -> Status {
        let mut status = lock(&self.status).clone();
        status.uptime_s = self.started.elapsed().as_secs_f64();
        if let Some(store) = lock(&self.store).as_ref() {
            status.store = StoreStatus {
                waiting: store.waiting.load(Ordering::Relaxed),
                dropped: store.dropped.load(Ordering::Relaxed),
                failed: store.failed.load(Ordering::Relaxed),
            };
        }
        if let Some(webhook) = lock(&self.webhook).as_ref() {
            status.webhook = WebhookStatus {
                urls: webhook.urls,
                queued: webhook.queued.load(Ordering::Relaxed),
                down: webhook.down.load(Ordering::Relaxed),
            };
        }
        status.subscribers = lock(&self.subscribers).len();
        status.subscribers_dropped = self.dropped.load(Ordering::Relaxed);
        status
    }

    fn has_subscribers(&self) -> bool {
        !lock(&self.subscribers).is_empty()
    }

    /// Hands `line` to every subscriber without waiting; drops those that are full.
    fn broadcast(&self, line: &[u8]) {
        let mut subscribers = lock(&self.subscribers);
        if subscribers.is_empty() {
            return;
        }
        let line: Arc<[u8]> = Arc::from(line);
        subscribers.retain(|(tx, counted)| match tx.try_send(Arc::clone(&line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.count_dropped(counted, &format!("fell {SUBSCRIBER_QUEUE} records behind"));
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }

    /// Counts and says a subscriber dropped for `why`, unless it was already.
    fn count_dropped(&self, counted: &AtomicBool, why: &str) {
        if counted.swap(true, Ordering::Relaxed) {
            return;
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!("a control-socket subscriber {why} and was dropped ({dropped} so far)");
    }

    /// Ends every subscription: each subscriber is sent what is queued for it, then its
    /// connection closes.
    fn close(&self) {
        lock(&self.subscribers).clear();
    }

    fn subscribe(&self) -> (Receiver<Arc<[u8]>>, Arc<AtomicBool>) {
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        let counted = Arc::new(AtomicBool::new(false));
        lock(&self.subscribers).push((tx, Arc::clone(&counted)));
        (rx, counted)
    }
}

/// A subscriber's queue, and whether it was counted as dropped.
type Subscriber = (SyncSender<Arc<[u8]>>, Arc<AtomicBool>);

/// A poisoned lock only means a thread panicked while holding it; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The control socket as a report output: keeps the status current and feeds subscribers.
pub struct ControlSink {
    control: Arc<Control>,
    line: Vec<u8>,
}

impl ControlSink {
    /// Feeds `control`.
    pub fn new(control: Arc<Control>) -> Self {
        Self {
            control,
            line: Vec::new(),
        }
    }
}

impl Sink for ControlSink {
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()> {
        let interval = report.interval;
        let (delta, total) = (&interval.delta, &interval.cumulative);
        lock(&self.control.status).counts = Counts {
            packets: total.total_packets,
            bytes: total.total_bytes,
            pps: interval.rate(delta.total_packets),
            bps: interval.rate(delta.total_bytes) * 8.0,
            sources_tracked: interval.tracked_sources as u64,
            non_ip: total.non_ip_packets,
            malformed: total.malformed_packets,
            overflow: total.overflow_packets,
            truncated: total.truncated_packets,
        };
        // Rendered only for someone to read it.
        if self.control.has_subscribers() {
            self.line.clear();
            report::json::write_interval(
                &mut self.line,
                report.context,
                std::time::UNIX_EPOCH + report.at,
                interval,
                report.last,
            )?;
            self.control.broadcast(&self.line);
        }
        Ok(())
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        if let Finding::Alert(_) = report.finding
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(report.json)
        {
            let mut status = lock(&self.control.status);
            if status.last_alerts.len() == LAST_ALERTS {
                status.last_alerts.pop_front();
            }
            status.last_alerts.push_back(value);
        }
        self.control.broadcast(report.json);
        Ok(())
    }
}

/// The listening socket; removed when dropped.
pub struct ControlServer {
    /// The lock on `PATH.lock`, held for the daemon's life.
    _lock: fs::File,
    control: Arc<Control>,
    path: PathBuf,
    /// The socket file's inode, so that only our own file is removed.
    inode: u64,
    stop: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds `path` (mode 0600) and serves `control` on a thread of its own. Refuses a path
    /// that is a symbolic link, that another user owns, that is not a socket, or on which
    /// another daemon answers; a socket left by a daemon that died is replaced.
    pub fn bind(path: &Path, control: Arc<Control>) -> Result<Self, String> {
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .ok_or("has no folder")?;
        if !dir.exists() {
            crate::private_files::create_dir_all(dir)
                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        }
        // One daemon at a time past this point: two starting at once would both find the
        // path free, and the second's rename would take the first's socket.
        let lock = lock_beside(path)?;
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    return Err(String::from("is a symbolic link; refused"));
                }
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    return Err(format!(
                        "is owned by uid {}, not by this user (uid {me}); refused",
                        meta.uid()
                    ));
                }
                if !meta.file_type().is_socket() {
                    return Err(String::from("exists and is not a socket; refused"));
                }
                // A socket nobody answers on was left by a daemon that died: replaced below.
                if UnixStream::connect(path).is_ok() {
                    return Err(String::from(
                        "another netwatch is running on it (stop it, or give this one --control PATH)",
                    ));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.to_string()),
        }
        // Bound under a name of its own, made private, then renamed into place: the socket is
        // never reachable with the umask's mode.
        let file_name = path
            .file_name()
            .ok_or("has no file name")?
            .to_string_lossy()
            .into_owned();
        let staging = dir.join(format!(".{file_name}.{}", std::process::id()));
        let _ = fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(|err| err.to_string())?;
        let placed = fs::set_permissions(&staging, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&staging, path));
        if let Err(err) = placed {
            let _ = fs::remove_file(&staging);
            return Err(err.to_string());
        }
        let inode = fs::symlink_metadata(path)
            .map(|meta| meta.ino())
            .map_err(|err| err.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let shared = Arc::clone(&control);
        thread::Builder::new()
            .name(String::from("control"))
            .spawn(move || accept(&listener, &shared, &flag))
            .map_err(|err| err.to_string())?;
        Ok(Self {
            _lock: lock,
            control,
            path: path.to_owned(),
            inode,
            stop,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Subscribers get the records queued for them (the final interval too), a second at
        // most, and then their connections close.
        self.control.close();
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.control.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which sees the flag.
        let _ = UnixStream::connect(&self.path);
        if fs::symlink_metadata(&self.path).is_ok_and(|meta| meta.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
        // The lock file stays (removing it would race a daemon starting now); the lock goes
        // with the descriptor.
    }
}

/// Takes the lock file `PATH.lock` (mode 0600), or says that another daemon holds it.
fn lock_beside(path: &Path) -> Result<fs::File, String> {
    use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&name)
        .map_err(|err| format!("cannot open its lock file: {err}"))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(String::from(
            "another netwatch is running on it (stop it, or give this one --control PATH)",
        ));
    }
    Ok(file)
}

fn accept(listener: &UnixListener, control: &Arc<Control>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else {
            // Out of descriptors, say: a pause rather than a spin.
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        if control.clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            control.clients.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
            let _ = write_line(&mut stream, &error("too many clients"));
            continue;
        }
        let shared = Arc::clone(control);
        let spawned = thread::Builder::new()
            .name(String::from("control-client"))
            .spawn(move || {
                serve(stream, &shared);
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            control.clients.fetch_sub(1, Ordering::Relaxed);
            log::warn!("control socket: cannot start a thread for a client");
        }
    }
}

fn error(reason: &str) -> serde_json::Value {
    serde_json::json!({"version": PROTOCOL_VERSION, "type": "error", "error": reason})
}

fn write_line(stream: &mut UnixStream, value: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// One client: its request, then the answer.
fn serve(mut stream: UnixStream, control: &Control) {
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut line = String::new();
    let read = match stream.try_clone() {
        Ok(reader) => BufReader::new(reader.take(MAX_REQUEST)).read_line(&mut line),
        Err(err) => Err(err),
    };
    if read.is_err() || !line.ends_with('\n') {
        let _ = write_line(&mut stream, &error("no request line within 1 s"));
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(err) => {
            let _ = write_line(&mut stream, &error(&format!("bad request: {err}")));
            return;
        }
    };
    if request.version != PROTOCOL_VERSION {
        let _ = write_line(
            &mut stream,
            &error(&format!(
                "protocol version {} is not spoken here; this daemon speaks {PROTOCOL_VERSION}",
                request.version
            )),
        );
        return;
    }
    match request.request.as_str() {
        "status" => {
            let _ = write_line(&mut stream, &control.status());
        }
        "subscribe" => {
            let (records, counted) = control.subscribe();
            let hello = serde_json::json!({
                "version": PROTOCOL_VERSION,
                "type": "hello",
                "pid": std::process::id(),
                "queue": SUBSCRIBER_QUEUE,
            });
            if write_line(&mut stream, &hello).is_err() {
                return;
            }
            // Until the daemon drops this subscriber (it fell behind, or the daemon stops)
            // or the client goes away.
            for record in records {
                if let Err(err) = stream.write_all(&record) {
                    // A client that reads nothing for the write timeout is as far behind as
                    // one whose queue is full: dropped, and counted as such. One that went
                    // away (a closed connection) is not.
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        control.count_dropped(
                            &counted,
                            &format!("read nothing for {} s", WRITE_TIMEOUT.as_secs()),
                        );
                    }
                    break;
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        "ban_add" | "ban_remove" | "ban_list" => {
            let answer = match ban_op(&request) {
                Ok(op) => control.ban(op),
                Err(reason) => error(&reason),
            };
            let _ = write_line(&mut stream, &answer);
        }
        other => {
            let _ = write_line(
                &mut stream,
                &error(&format!(
                    "unknown request {:?}: status, subscribe, ban_add, ban_remove or ban_list",
                    report::escape(other)
                )),
            );
        }
    }
}

/// The ban operation a request asks for, checked.
fn ban_op(request: &Request) -> Result<BanOp, String> {
    if request.request == "ban_list" {
        return Ok(BanOp::List);
    }
    let subject = request
        .subject
        .as_deref()
        .ok_or_else(|| format!("{} needs a subject (ADDR or ADDR/LEN)", request.request))?;
    let net = subject
        .parse::<Cidr>()
        .map_err(|reason| report::escape(&reason).into_owned())?;
    if request.request == "ban_remove" {
        return Ok(BanOp::Remove { net });
    }
    let ttl = match request.ttl_s {
        None => None,
        Some(seconds) if seconds.is_finite() && (1.0..=MAX_BAN_TTL_S).contains(&seconds) => {
            Some(Duration::from_secs_f64(seconds))
        }
        Some(_) => return Err(String::from("ttl_s must be 1 s to a year")),
    };
    let reason = match &request.reason {
        Some(reason) if reason.chars().count() > MAX_REASON => {
            return Err(format!("reason is longer than {MAX_REASON} characters"));
        }
        reason => reason.clone(),
    };
    Ok(BanOp::Add { net, ttl, reason })
}

/// The daemon's socket for a client command: `--control` when given, else `monitor.control`
/// of the configuration file (or the default).
pub fn socket_path(
    control: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<PathBuf, crate::config::ConfigError> {
    match control {
        Some(path) => Ok(path),
        None => Ok(PathBuf::from(
            crate::config::Config::load_or_default(config)?
                .monitor
                .control,
        )),
    }
}

/// Sends `request` to the daemon at `path`; returns its connection, the request sent.
pub fn connect(path: &Path, request: &str) -> io::Result<BufReader<UnixStream>> {
    send(
        path,
        &Request {
            version: PROTOCOL_VERSION,
            request: request.to_owned(),
            ..Request::default()
        },
    )
}

/// Sends a whole `request` to the daemon at `path`; returns its connection.
pub fn send(path: &Path, request: &Request) -> io::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // A status comes at once, a ban's answer within the daemon's own bound; a
    // subscription's reader clears this.
    stream.set_read_timeout(Some(BAN_ANSWER_TIMEOUT + Duration::from_secs(1)))?;
    write_line(&mut stream, request)?;
    Ok(BufReader::new(stream))
}
