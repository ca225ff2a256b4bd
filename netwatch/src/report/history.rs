//! The SQLite sink: known-source changes, interval history, alerts and events, and the
//! webhook queue, written by a thread of its own. The pipeline hands records over a bounded
//! channel and never waits on the disk; a record that finds the channel full is counted and
//! reported, never dropped in silence.

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::{
    detect::KnownChange,
    store::{FindingRow, IntervalRow, SourceRow, Store},
};

/// Records waiting for the writer at most; past that the pipeline counts them as dropped.
const QUEUE: usize = 4_096;

/// What the writer thread is asked to keep.
#[derive(Debug)]
pub enum Record {
    /// Known-source changes at a time.
    Known(Vec<KnownChange>, Duration),
    /// Known sources seen at a time.
    Touch(Vec<IpAddr>, Duration),
    /// An interval and its top sources.
    Interval(IntervalRow, Vec<SourceRow>),
    /// Alerts and events (also queued for the webhooks).
    Findings(Vec<FindingRow>),
    /// Delete history older than this.
    Prune(Duration),
}

/// Records kept in memory at most while the store refuses writes (a full disk, say); past it
/// the oldest go, counted.
const RETRY: usize = 4_096;

/// Counts shared with the writer.
#[derive(Debug, Default)]
pub struct SinkCounts {
    /// Records refused because the writer was behind.
    pub dropped: AtomicU64,
    /// Records lost after the store refused them and the retry buffer overflowed.
    pub failed: AtomicU64,
    /// Records waiting in memory for the store to take them again (a gauge).
    pub waiting: AtomicU64,
    /// Writes refused by the store so far, retried or not.
    pub refused: AtomicU64,
}

/// The handle the pipeline keeps.
pub struct HistorySink {
    tx: Option<SyncSender<Record>>,
    writer: Option<JoinHandle<()>>,
    counts: Arc<SinkCounts>,
}

impl std::fmt::Debug for HistorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySink")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl HistorySink {
    /// Starts the writer, which owns `store`; findings are also queued for `webhooks`.
    pub fn start(mut store: Store, webhooks: Vec<String>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let counts = Arc::new(SinkCounts::default());
        let shared = Arc::clone(&counts);
        let writer = thread::Builder::new()
            .name(String::from("store"))
            .spawn(move || write_all(&mut store, &rx, &webhooks, &shared))?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            counts,
        })
    }

    /// Hands a record to the writer without waiting.
    pub fn send(&self, record: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    eprintln!(
                        "netwatch: the store is behind; {dropped} records not kept so far (slow disk?)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Shared counts.
    pub fn counts(&self) -> &SinkCounts {
        &self.counts
    }

    /// Waits for the writer to keep everything sent so far, then stops it.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for HistorySink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_all(store: &mut Store, rx: &Receiver<Record>, webhooks: &[String], counts: &SinkCounts) {
    let mut waiting: VecDeque<Record> = VecDeque::new();
    let mut outage: Option<(std::time::Instant, u64)> = None;
    loop {
        // While records wait, the store is tried again every second, new records or not.
        let next = if waiting.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        match next {
            // Oldest first: what waits goes before the new record.
            Ok(record) => waiting.push_back(record),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while let Some(next) = waiting.front() {
            // On a refusal, give back the disk the write-ahead log holds (on a full disk it
            // is often most of what netwatch has there), and try once more.
            let written = write_one(store, next, webhooks).or_else(|_| {
                store.shrink_journal();
                write_one(store, next, webhooks)
            });
            match written {
                Ok(()) => {
                    waiting.pop_front();
                }
                Err(err) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    if outage.is_none() {
                        eprintln!(
                            "netwatch: the store refuses writes ({err}); up to {RETRY} records wait in memory until it takes them again"
                        );
                        outage = Some((std::time::Instant::now(), 0));
                    }
                    break;
                }
            }
        }
        if let Some((since, lost)) = outage.as_mut() {
            if waiting.is_empty() {
                eprintln!(
                    "netwatch: the store takes writes again after {:.0}s; every record kept in memory meanwhile is written, {lost} lost to the {RETRY}-record bound",
                    since.elapsed().as_secs_f64()
                );
                outage = None;
            } else {
                while waiting.len() > RETRY {
                    waiting.pop_front();
                    *lost += 1;
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        counts
            .waiting
            .store(waiting.len() as u64, Ordering::Relaxed);
    }
    // Closing: one more try for what waits, then it is counted as lost.
    while let Some(next) = waiting.pop_front() {
        if write_one(store, &next, webhooks).is_err() {
            counts
                .failed
                .fetch_add(1 + waiting.len() as u64, Ordering::Relaxed);
            break;
        }
    }
    counts.waiting.store(0, Ordering::Relaxed);
}

fn write_one(
    store: &mut Store,
    record: &Record,
    webhooks: &[String],
) -> Result<(), crate::store::StoreError> {
    match record {
        Record::Known(changes, at) => store.apply(changes, *at),
        Record::Touch(addrs, at) => store.touch(addrs, *at),
        Record::Interval(row, sources) => store.record_interval(row, sources),
        Record::Findings(findings) => store.record_findings(findings, webhooks),
        Record::Prune(cutoff) => store.prune_history(*cutoff).map(drop),
    }
}
