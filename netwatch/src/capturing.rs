//! Captures in a running daemon or a replay: the [`CaptureKeeper`]'s decisions carried out
//! on the capture maps of every interface (each capture set alike on all of them) and on the
//! pcapng files ([`CaptureFiles`]). Daemon wiring beside [`mitigation`](crate::mitigation):
//! the pipeline hands it each alert on its way to the sinks ([`Evidence`]), which it links
//! to its capture; the session hands it the requests of `netwatch capture`.
//!
//! Live, a thread of its own reads the capture rings and writes the files, so that a slow
//! disk never holds an interval; a capture's end drains the rings and closes its file
//! before the alert's end is reported, so that its count is the file's. In a replay the
//! files are written as the frames are run, on the capture's clock.

use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd as _, RawFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{Receiver, Sender, SyncSender, channel, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    datapath::{CaptureMaps, CaptureSpec, CapturedFrame},
    detect::alert::Alert,
    evidence::{Capture, CaptureChange, CaptureConfig, CaptureKeeper, CaptureSubject, Written},
    pipeline::Evidence,
    report::{
        metrics::{CaptureTotals, Metrics},
        pcapng::{CaptureFiles, FileCounts, FileHeader, FileLimits},
    },
};

/// How long a capture's end waits for its file to be closed before the alert goes on
/// without the final count (said).
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How often the writer thread flushes its files and says what they hold.
const POLL: Duration = Duration::from_millis(100);

/// What the writer thread is asked.
enum Message {
    Open {
        index: u32,
        name: String,
        header: FileHeader,
        done: SyncSender<Result<(), String>>,
    },
    Every {
        index: u32,
        every: u32,
    },
    Close {
        index: u32,
        done: SyncSender<Option<Written>>,
    },
}

/// Where the files are written.
enum Writer {
    /// A thread of its own reads the rings and writes (live).
    Thread {
        tx: Sender<Message>,
        status: Arc<Mutex<Status>>,
        thread: Option<JoinHandle<()>>,
    },
    /// Here, as the frames are run (replay).
    Inline(CaptureFiles),
}

/// What the writer thread says of its files.
#[derive(Default)]
struct Status {
    written: BTreeMap<u32, Written>,
    counts: FileCounts,
}

/// The captures of one daemon or replay.
pub struct Captures {
    keeper: CaptureKeeper,
    dir: PathBuf,
    /// [`Captures::finish`] ran: nothing more starts.
    finished: bool,
    kernels: Arc<Mutex<Vec<CaptureMaps>>>,
    writer: Writer,
    /// The interfaces watched, by index and name, for the files' interface blocks.
    interfaces: Vec<(u32, String)>,
    metrics: Option<Arc<Metrics>>,
    /// Frames the kernels' rings had no room for, since the start.
    lost: u64,
    /// What each capture in progress had lost at the last tick, all interfaces together.
    lost_by_index: BTreeMap<u32, u64>,
}

impl std::fmt::Debug for Captures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Captures")
            .field("keeper", &self.keeper)
            .finish_non_exhaustive()
    }
}

impl Captures {
    /// Captures for `config` into `dir`, on `kernels` (one per interface, `names`), written
    /// by a thread of their own when `live`.
    pub fn start(
        config: CaptureConfig,
        dir: &Path,
        mut kernels: Vec<CaptureMaps>,
        names: &[String],
        live: bool,
        metrics: Option<Arc<Metrics>>,
    ) -> std::io::Result<Self> {
        let limits = FileLimits {
            budget: config.budget_bytes,
            max_frames: config.max_frames,
            max_bytes: config.max_bytes,
        };
        let files = CaptureFiles::new(dir, limits)?;
        for kernel in &mut kernels {
            kernel
                .set_snap_len(config.snap_len)
                .map_err(|err| std::io::Error::other(err.to_string()))?;
        }
        let kernels = Arc::new(Mutex::new(kernels));
        let interfaces = names
            .iter()
            .map(|name| (if live { ifindex_of(name) } else { 0 }, name.clone()))
            .collect();
        let writer = if live {
            let (tx, rx) = channel();
            let status = Arc::new(Mutex::new(Status::default()));
            let fds: Vec<RawFd> = lock(&kernels).iter().map(|maps| maps.as_raw_fd()).collect();
            let (shared, rings) = (Arc::clone(&status), Arc::clone(&kernels));
            let thread = std::thread::Builder::new()
                .name(String::from("captures"))
                .spawn(move || write_live(files, &rings, &fds, &rx, &shared))?;
            Writer::Thread {
                tx,
                status,
                thread: Some(thread),
            }
        } else {
            Writer::Inline(files)
        };
        Ok(Self {
            keeper: CaptureKeeper::new(config),
            dir: dir.to_owned(),
            finished: false,
            kernels,
            writer,
            interfaces,
            metrics,
            lost: 0,
            lost_by_index: BTreeMap::new(),
        })
    }

    /// A capture by hand: its file's name and its end, or why not.
    pub fn request(
        &mut self,
        subject: CaptureSubject,
        duration: Duration,
        now: Duration,
    ) -> Result<(String, Duration), String> {
        if self.finished {
            return Err(String::from("netwatch is stopping"));
        }
        let change = self.keeper.request(subject, duration, now)?;
        let CaptureChange::Start(capture) = &change else {
            return Err(String::from("not started"));
        };
        let (index, file, until) = (capture.index, capture.file.clone(), capture.until);
        self.apply(change);
        if self.keeper.captures().any(|capture| capture.index == index) {
            Ok((file, until.unwrap_or(now)))
        } else {
            Err(String::from(
                "the kernel or the disk refused it (the log says why)",
            ))
        }
    }

    /// In a replay, after each frame run at `at` (the capture's clock): writes what the
    /// kernels kept of it.
    pub fn pump(&mut self, at: Duration) {
        let Writer::Inline(files) = &mut self.writer else {
            return;
        };
        for frame in drain(&self.kernels) {
            files.write(&frame, at);
        }
    }

    /// The captures' folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ends every capture (the daemon stops, or the replay ends): each file is closed with
    /// what it holds, then the writer stops; the alerts after this get no capture.
    pub fn finish(&mut self) {
        let indexes: Vec<u32> = self
            .keeper
            .captures()
            .map(|capture| capture.index)
            .collect();
        for index in indexes {
            self.apply(CaptureChange::Stop {
                index,
                why: String::from("netwatch stopped"),
            });
        }
        if let Writer::Thread { tx, thread, .. } = &mut self.writer {
            // The thread ends when its channel closes.
            let (closed, _) = channel();
            drop(std::mem::replace(tx, closed));
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
        self.finished = true;
    }

    /// Carries out one decision: on every interface's kernel maps and on the files.
    fn apply(&mut self, change: CaptureChange) {
        match change {
            CaptureChange::Start(capture) => self.open(&capture),
            CaptureChange::Every { index, every } => {
                for kernel in lock(&self.kernels).iter_mut() {
                    if let Err(err) = kernel.set_every(index, every) {
                        log::warn!("changing the sampling of capture {index} failed: {err}");
                    }
                }
                match &mut self.writer {
                    Writer::Thread { tx, .. } => {
                        let _ = tx.send(Message::Every { index, every });
                    }
                    Writer::Inline(files) => files.every(index, every),
                }
            }
            CaptureChange::Stop { index, why } => {
                for kernel in lock(&self.kernels).iter_mut() {
                    if let Err(err) = kernel.clear(index) {
                        log::warn!("removing capture {index} from the kernel failed: {err}");
                    }
                }
                let written = self.close(index).unwrap_or_default();
                if let Some(capture) = self.keeper.stopped(index, &written, &why) {
                    log::info!(
                        "capture {} of {} closed: {} frames ({})",
                        crate::escape::escape(&capture.file),
                        crate::escape::escape(&capture.event),
                        capture.frames,
                        capture.cut.as_deref().unwrap_or(&why)
                    );
                }
                self.lost_by_index.remove(&index);
            }
        }
    }

    /// Opens a capture's file, then sets it in the kernels; a refusal of either drops it.
    fn open(&mut self, capture: &Capture) {
        let config = self.keeper.config();
        let header = FileHeader {
            event: capture.event.clone(),
            what: capture.what.clone(),
            subject: capture.subject.to_string(),
            every: capture.every,
            first: config.first_frames,
            snap_len: config.snap_len,
            interfaces: self.interfaces.clone(),
        };
        let opened = match &mut self.writer {
            Writer::Thread { tx, .. } => {
                let (done, answer) = sync_channel(1);
                let asked = tx.send(Message::Open {
                    index: capture.index,
                    name: capture.file.clone(),
                    header,
                    done,
                });
                match asked {
                    Ok(()) => answer.recv_timeout(CLOSE_WAIT).unwrap_or_else(|_| {
                        Err(String::from("the capture writer does not answer"))
                    }),
                    Err(_) => Err(String::from("the capture writer stopped")),
                }
            }
            Writer::Inline(files) => files.open(capture.index, &capture.file, &header),
        };
        if let Err(why) = opened {
            self.keeper.failed(capture.index, &why);
            return;
        }
        let (side, network, filter) = capture.subject.kernel();
        let spec = CaptureSpec {
            side,
            network: (network.addr(), network.prefix_len()),
            filter,
            every: capture.every,
            first: self.keeper.config().first_frames,
        };
        let set = lock(&self.kernels)
            .iter_mut()
            .try_for_each(|kernel| kernel.set(capture.index, spec));
        if let Err(err) = set {
            for kernel in lock(&self.kernels).iter_mut() {
                let _ = kernel.clear(capture.index);
            }
            let _ = self.close(capture.index);
            self.keeper
                .failed(capture.index, &format!("the kernel refused it: {err}"));
        }
    }

    /// Closes capture `index`'s file once the rings' frames are written: what it holds.
    fn close(&mut self, index: u32) -> Option<Written> {
        match &mut self.writer {
            Writer::Thread { tx, .. } => {
                let (done, answer) = sync_channel(1);
                tx.send(Message::Close { index, done }).ok()?;
                match answer.recv_timeout(CLOSE_WAIT) {
                    Ok(written) => written,
                    Err(_) => {
                        log::warn!(
                            "the capture writer has not closed capture {index} within {} s (a slow disk?): its count is left out",
                            CLOSE_WAIT.as_secs()
                        );
                        None
                    }
                }
            }
            Writer::Inline(files) => files.close(index),
        }
    }

    /// What the writer says of the files now, and its counts.
    fn status(&self) -> (BTreeMap<u32, Written>, FileCounts) {
        match &self.writer {
            Writer::Thread { status, .. } => {
                let status = lock(status);
                (status.written.clone(), status.counts)
            }
            Writer::Inline(files) => (files.written(), files.counts()),
        }
    }
}

/// The captures, shared by the pipeline (which links each alert to its capture) and the
/// session (which hands them the requests, and ends them).
#[derive(Clone, Debug)]
pub struct SharedCaptures(pub Arc<Mutex<Captures>>);

impl Evidence for SharedCaptures {
    fn alert(&mut self, alert: &mut Alert) {
        lock(&self.0).alert(alert);
    }

    fn tick(&mut self, at: Duration) {
        lock(&self.0).tick(at);
    }
}

impl Captures {
    /// Starts, follows or ends the capture of `alert`'s event, and links it.
    fn alert(&mut self, alert: &mut Alert) {
        if self.finished {
            return;
        }
        let (written, _) = self.status();
        for (index, written) in &written {
            self.keeper.written(*index, written);
        }
        for change in self.keeper.on_alert(alert, alert.at) {
            self.apply(change);
        }
        alert.capture = self.keeper.link(&alert.id);
    }

    /// Once a round of intervals: the sampling follows each subject's rate, cut captures
    /// and requests whose time is up stop, the metrics are set.
    fn tick(&mut self, at: Duration) {
        if self.finished {
            return;
        }
        let mut seen = BTreeMap::new();
        let mut lost = BTreeMap::new();
        for kernel in lock(&self.kernels).iter() {
            for (index, _) in kernel.specs() {
                if let Ok(counts) = kernel.counts(index) {
                    *seen.entry(index).or_insert(0) += counts.seen;
                    *lost.entry(index).or_insert(0) += counts.lost;
                }
            }
        }
        for (index, now) in lost {
            let before = self.lost_by_index.insert(index, now).unwrap_or(0);
            self.lost += now.saturating_sub(before);
        }
        let (written, counts) = self.status();
        for change in self.keeper.tick(&seen, &written, at) {
            self.apply(change);
        }
        if let Some(metrics) = &self.metrics {
            metrics.set_captures(
                self.keeper.captures().count(),
                CaptureTotals {
                    written: counts.frames,
                    lost: self.lost,
                    refused: counts.refused,
                    cut: counts.cut,
                    removed: counts.removed,
                    failures: counts.failures,
                },
            );
        }
    }
}

/// Every frame waiting in the kernels' rings.
fn drain(kernels: &Mutex<Vec<CaptureMaps>>) -> Vec<CapturedFrame> {
    let mut frames = Vec::new();
    for kernel in lock(kernels).iter_mut() {
        kernel.drain(|frame| frames.push(frame));
    }
    frames
}

/// The writer thread: messages in order, the rings' frames as they come (stamped with the
/// wall clock from the kernel's monotonic one), a flush and the status every [`POLL`].
fn write_live(
    mut files: CaptureFiles,
    kernels: &Mutex<Vec<CaptureMaps>>,
    fds: &[RawFd],
    rx: &Receiver<Message>,
    status: &Mutex<Status>,
) {
    let offset = clock_offset();
    let at = |frame: &CapturedFrame| Duration::from_nanos(frame.time_ns.saturating_add(offset));
    let mut last_flush = std::time::Instant::now();
    loop {
        // The rings first, so that what a message ends is written before it.
        for frame in drain(kernels) {
            files.write(&frame, at(&frame));
        }
        loop {
            match rx.try_recv() {
                Ok(Message::Open {
                    index,
                    name,
                    header,
                    done,
                }) => {
                    let _ = done.send(files.open(index, &name, &header));
                }
                Ok(Message::Every { index, every }) => files.every(index, every),
                Ok(Message::Close { index, done }) => {
                    for frame in drain(kernels) {
                        files.write(&frame, at(&frame));
                    }
                    let written = files.close(index);
                    lock(status).written.remove(&index);
                    let _ = done.send(written);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    files.flush();
                    return;
                }
            }
        }
        if last_flush.elapsed() >= POLL {
            files.flush();
            let mut shared = lock(status);
            shared.written = files.written();
            shared.counts = files.counts();
            last_flush = std::time::Instant::now();
        }
        wait_readable(fds);
    }
}

/// Waits until a ring has records, 10 ms at most: the messages (a capture's start and end,
/// which wait for their answer) are looked at that often.
fn wait_readable(fds: &[RawFd]) {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: *fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: an array of pollfd of the length given, valid for the call.
    unsafe {
        libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 10);
    }
}

/// Nanoseconds from the kernel's monotonic clock (`bpf_ktime_get_ns`) to the wall clock's
/// Unix time, now.
fn clock_offset() -> u64 {
    let mut mono = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut mono) };
    let mono = Duration::new(mono.tv_sec as u64, mono.tv_nsec as u32);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(wall.saturating_sub(mono).as_nanos()).unwrap_or(0)
}

fn ifindex_of(name: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: a NUL-terminated name; the call only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
