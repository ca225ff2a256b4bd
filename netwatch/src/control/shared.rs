//! What the control socket shares with the daemon ([`Control`]): the status, the
//! subscribers' queues, the way to the daemon's ban requests ([`BanCall`]), and the report
//! output that keeps them current ([`ControlSink`]). The collection never waits on it.

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    time::{Duration, Instant, SystemTime},
};

use super::protocol::{
    BAN_ANSWER_TIMEOUT, BanAnswer, BanOp, Counts, InterfaceStatus, PROTOCOL_VERSION, Status,
    StoreStatus, WebhookStatus, error,
};
use crate::report::{
    self, rfc3339,
    sink::{Finding, FindingReport, IntervalReport, Sink},
    store::SinkCounts,
    webhook::WebhookState,
};

/// Records a subscriber may fall behind before it is dropped.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// Alerts kept for `status`.
pub(super) const LAST_ALERTS: usize = 10;

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

/// What the control socket shares with the daemon.
pub struct Control {
    status: Mutex<Status>,
    started: Instant,
    /// Each subscriber's queue, and whether it was counted as dropped (by the publisher or
    /// by its writer, whichever saw it first).
    subscribers: Mutex<Vec<Subscriber>>,
    dropped: AtomicU64,
    pub(super) clients: AtomicUsize,
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
    pub(super) fn ban(&self, op: BanOp) -> serde_json::Value {
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
    pub(super) fn count_dropped(&self, counted: &AtomicBool, why: &str) {
        if counted.swap(true, Ordering::Relaxed) {
            return;
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!("a control-socket subscriber {why} and was dropped ({dropped} so far)");
    }

    /// Ends every subscription: each subscriber is sent what is queued for it, then its
    /// connection closes.
    pub(super) fn close(&self) {
        lock(&self.subscribers).clear();
    }

    /// A new subscriber's queue and its dropped mark; `None` when `most` subscribe already
    /// (checked and added under one lock).
    pub(super) fn subscribe(&self, most: usize) -> Option<Subscription> {
        let mut subscribers = lock(&self.subscribers);
        if subscribers.len() >= most {
            return None;
        }
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        let counted = Arc::new(AtomicBool::new(false));
        subscribers.push((tx, Arc::clone(&counted)));
        Some((rx, counted))
    }
}

/// A subscriber's end of its queue, and whether it was counted as dropped.
pub(super) type Subscription = (Receiver<Arc<[u8]>>, Arc<AtomicBool>);

/// A subscriber's queue, and whether it was counted as dropped.
pub(super) type Subscriber = (SyncSender<Arc<[u8]>>, Arc<AtomicBool>);

/// A poisoned lock only means a thread panicked while holding it; the data is still usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
                report.places,
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
