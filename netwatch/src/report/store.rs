//! The store's sink: known-source changes, interval history, alerts, events and bans, and the
//! webhook queue, written by a thread of its own ([`StoreWriter`]). The pipeline hands records
//! over a bounded channel and never waits on the disk; a record that finds the channel full is
//! counted and reported, never dropped in silence.

use std::{
    collections::{HashSet, VecDeque},
    io,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use super::sink::{Finding, FindingReport, IntervalReport, Sink};
use crate::{
    collect::Interval,
    datapath::{OverflowBreakdown, SlotlessPrefix, Target, Traffic, add_traffic},
    detect::KnownChange,
    mitigate::{BanChange, BanEvent, RuleChange, RuleEvent},
    store::{
        BanRecord, BanRow, FindingRow, IntervalRow, RuleRecord, SlotlessRow, SourceRow, Store,
    },
};

/// Intervals between two updates of the known sources' `last_seen`.
const TOUCH_EVERY: u32 = 60;
/// Intervals between two prunings of old history.
const PRUNE_EVERY: u64 = 3_600;

/// Records waiting for the writer at most; past that the pipeline counts them as dropped.
const QUEUE: usize = 4_096;
/// How long a ban or rule event waits to be kept before the daemon goes on (and says so).
const BAN_KEPT_WAIT: Duration = Duration::from_secs(2);

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
    /// A ban event (also queued for the webhooks), and who waits for it to be kept.
    Ban(BanRecord, SyncSender<()>),
    /// A signature rule event: its change to the rules table and its finding (also queued
    /// for the webhooks), and who waits for it to be kept.
    Rule(RuleRecord, FindingRow, SyncSender<()>),
    /// Delete history older than this.
    Prune(Duration),
    /// A record (a JSON line) for one exporter's queue alone: `(queue, line)`.
    Export(&'static str, String),
    /// Nothing to write: wakes the writer for what [`StoreWriter::send_kept`] left aside.
    Nudge,
}

/// Records [`StoreWriter::send_kept`] keeps aside at most for a writer that is behind; past
/// it one is lost, counted and said (bans are far fewer: it is never reached but by a store
/// stuck for a long time under a ban storm).
const KEPT_MAX: usize = 65_536;

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
pub struct StoreWriter {
    /// Each record with its turn, so that the writer keeps the order the records were
    /// handed over in, kept ones included.
    tx: Option<SyncSender<(u64, Record)>>,
    /// Records that may not be dropped, beside the queue so that handing one over never
    /// waits: the writer takes each in its turn.
    kept: Arc<Mutex<VecDeque<(u64, Record)>>>,
    /// The next turn.
    turn: AtomicU64,
    writer: Option<JoinHandle<()>>,
    counts: Arc<SinkCounts>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Record {
    /// Whoever waits for this record to be kept, if it is one of those (bans and rules: a
    /// restart must know every one).
    fn kept(&self) -> Option<&SyncSender<()>> {
        match self {
            Self::Ban(_, kept) | Self::Rule(_, _, kept) => Some(kept),
            _ => None,
        }
    }
}

impl StoreWriter {
    /// Starts the writer, which owns `store`; findings are also queued for `webhooks`.
    pub fn start(mut store: Store, webhooks: Vec<String>) -> io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let counts = Arc::new(SinkCounts::default());
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let (shared, aside) = (Arc::clone(&counts), Arc::clone(&kept));
        let writer = thread::Builder::new()
            .name(String::from("store"))
            .spawn(move || write_all(&mut store, &rx, &aside, &webhooks, &shared))?;
        Ok(Self {
            tx: Some(tx),
            kept,
            turn: AtomicU64::new(0),
            writer: Some(writer),
            counts,
        })
    }

    /// Hands a record to the writer without waiting and without dropping it for a full
    /// queue: for the few records that may not be dropped (bans and rules). It waits aside (at most
    /// [`KEPT_MAX`]) and the writer takes it before what it reads next.
    pub fn send_kept(&self, record: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        {
            let mut kept = self
                .kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if kept.len() >= KEPT_MAX {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "the store is {KEPT_MAX} ban and rule records behind; one was not kept (a restart would not know of it)"
                );
                return;
            }
            kept.push_back((self.turn.fetch_add(1, Ordering::Relaxed), record));
        }
        // A writer waiting for records wakes; one that is busy (a full queue) takes the
        // kept record at its turn anyway: at the first record read after it, or when the
        // queue is empty.
        let _ = tx.try_send((self.turn.fetch_add(1, Ordering::Relaxed), Record::Nudge));
    }

    /// Hands a record to the writer without waiting.
    pub fn send(&self, record: Record) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send((self.turn.fetch_add(1, Ordering::Relaxed), record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    log::warn!(
                        "the store is behind; {dropped} records not kept so far (slow disk?)"
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

    /// The shared counts, to be read by another sink (the metrics).
    pub fn shared_counts(&self) -> Arc<SinkCounts> {
        Arc::clone(&self.counts)
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

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The store as a report output: each interval's totals and top sources, the known sources
/// (learned, alerted, last seen), pruning, and the alerts and events, which the store also
/// queues for the webhooks in the same transaction.
pub struct StoreSink {
    writer: StoreWriter,
    /// Sources kept per interval (the top by bytes), so the file stays bounded.
    top: usize,
    /// History older than this is pruned.
    retention: Duration,
    seen: HashSet<IpAddr>,
    since_touch: u32,
    intervals: u64,
    findings: Vec<FindingRow>,
    /// Each interval's JSON line is also queued for the Kafka export.
    export_intervals: bool,
    /// The line being made, reused.
    line: Vec<u8>,
}

impl StoreSink {
    /// Keeps `top` sources per interval for `retention`.
    pub fn new(writer: StoreWriter, top: usize, retention: Duration) -> Self {
        Self {
            writer,
            top,
            retention,
            seen: HashSet::new(),
            since_touch: 0,
            intervals: 0,
            findings: Vec::new(),
            export_intervals: false,
            line: Vec::new(),
        }
    }

    /// Also queues each interface's interval, as `--format json` writes it, for the Kafka
    /// export.
    pub fn exporting_intervals(mut self) -> Self {
        self.export_intervals = true;
        self
    }
}

impl StoreSink {
    /// Hands over a ban or rule record and waits (at most [`BAN_KEPT_WAIT`]) until it is
    /// kept. The findings before it are written first, so the webhooks get everything in
    /// order. It is never dropped for a full queue, and is kept before anyone else hears of
    /// it: after a crash, the store's bans and rules are the ones to apply again.
    fn keep(
        &mut self,
        record: impl FnOnce(SyncSender<()>) -> Record,
        what: &str,
    ) -> io::Result<()> {
        self.flush()?;
        let (kept, acknowledged) = sync_channel(1);
        self.writer.send_kept(record(kept));
        match acknowledged.recv_timeout(BAN_KEPT_WAIT) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => log::warn!(
                "the store has not kept the {what} within {} s (a slow or full disk): it waits in memory until the store takes writes again",
                BAN_KEPT_WAIT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                log::error!("the store lost the {what}: a restart would not know of it");
            }
        }
        Ok(())
    }
}

impl Sink for StoreSink {
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()> {
        if report.combined {
            // Its parts are kept, each under its interface.
            return Ok(());
        }
        let (interval, at) = (report.interval, report.at);
        self.seen
            .extend(interval.sources.iter().map(|source| source.addr));
        self.since_touch += 1;
        if !report.known.is_empty() {
            self.writer.send(Record::Known(report.known.to_vec(), at));
        }
        if self.since_touch >= TOUCH_EVERY || report.last {
            self.since_touch = 0;
            self.writer
                .send(Record::Touch(self.seen.drain().collect(), at));
        }
        let (row, sources) =
            history_rows(&report.context.iface, interval, at, self.top, report.places);
        self.writer.send(Record::Interval(row, sources));
        if self.export_intervals {
            self.line.clear();
            super::json::write_interval(
                &mut self.line,
                report.context,
                std::time::UNIX_EPOCH + at,
                interval,
                report.last,
                report.places,
            )?;
            let line = String::from_utf8_lossy(&self.line).trim_end().to_owned();
            self.writer
                .send(Record::Export(crate::store::KAFKA_QUEUE, line));
        }
        if self.intervals.is_multiple_of(PRUNE_EVERY) {
            self.writer
                .send(Record::Prune(at.saturating_sub(self.retention)));
        }
        self.intervals += 1;
        Ok(())
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        let (kind_of_record, kind, subject, attack, sources) = match report.finding {
            Finding::Alert(alert) => (
                "alert",
                alert.kind.name(),
                alert.subject.to_string(),
                alert
                    .attack
                    .as_ref()
                    .map(|attack| attack.kind.name().to_owned()),
                alert.members.as_ref().map(|members| members.count),
            ),
            Finding::Event(event) => (
                "event",
                event.kind.name(),
                event.client.to_string(),
                None,
                None,
            ),
            Finding::Rule(event) => {
                // A rule has a row of its own from start to end, beside its finding (history
                // and the webhooks), kept as a ban is.
                let finding = FindingRow {
                    ts_ms: i64::try_from(report.at().as_millis()).unwrap_or(i64::MAX),
                    kind_of_record: "rule",
                    kind: event.change.name().to_owned(),
                    subject: event.rule.signature.to_string(),
                    record: String::from_utf8_lossy(report.json).trim_end().to_owned(),
                    attack: event.rule.attack.map(|attack| attack.name().to_owned()),
                    sources: None,
                    iface: report.iface.to_owned(),
                };
                let what = format!("rule {} of {}", event.change.name(), event.rule.signature);
                return self.keep(
                    |kept| Record::Rule(rule_record(event), finding, kept),
                    &what,
                );
            }
            Finding::Ban(event) => {
                let what = format!("{} of {}", event.change.name(), event.net);
                return self.keep(
                    |kept| Record::Ban(ban_record(event, report.json), kept),
                    &what,
                );
            }
        };
        self.findings.push(FindingRow {
            ts_ms: i64::try_from(report.at().as_millis()).unwrap_or(i64::MAX),
            kind_of_record,
            kind: kind.to_owned(),
            subject,
            record: String::from_utf8_lossy(report.json).trim_end().to_owned(),
            attack,
            sources,
            iface: report.iface.to_owned(),
        });
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.findings.is_empty() {
            self.writer
                .send(Record::Findings(std::mem::take(&mut self.findings)));
        }
        Ok(())
    }

    fn finish(self: Box<Self>) {
        let writer = self.writer;
        let dropped = writer.counts().dropped.load(Ordering::Relaxed);
        let failed = writer.counts().failed.load(Ordering::Relaxed);
        writer.close();
        if dropped + failed > 0 {
            log::warn!(
                "the store kept all but {dropped} records dropped while it was behind and {failed} refused writes"
            );
        }
    }
}

/// What a ban event changes in the store, with its JSON line for the webhooks.
fn ban_record(event: &BanEvent, json: &[u8]) -> BanRecord {
    let json = String::from_utf8_lossy(json).trim_end().to_owned();
    let ms = |at: Duration| i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
    match event.change {
        BanChange::Ban => BanRecord::Start(
            BanRow {
                subject: event.net.to_string(),
                mode: event.mode.name(),
                origin: event.origin.name(),
                reason: event.reason.clone(),
                alert_id: event.alert.as_ref().map(|alert| alert.id.clone()),
                alert_kind: event.alert.as_ref().map(|alert| alert.kind.name()),
                iface: event.iface.clone(),
                offence: event.offence,
                created_ms: ms(event.created.unwrap_or(event.at)),
                expires_ms: ms(event.expires.unwrap_or(event.at)),
            },
            json,
        ),
        BanChange::Unban => BanRecord::End {
            subject: event.net.to_string(),
            ended_ms: ms(event.at),
            why: event.why.clone().unwrap_or_default(),
            packets: event.packets,
            bytes: event.bytes,
            json,
        },
        BanChange::Refused | BanChange::Restore => BanRecord::Note(json),
    }
}

/// What a rule event changes in the rules table.
fn rule_record(event: &RuleEvent) -> RuleRecord {
    let rule = &event.rule;
    match event.change {
        RuleChange::Add => RuleRecord::Start(Box::new(rule.clone())),
        RuleChange::Extend => RuleRecord::Extend {
            signature: rule.signature.to_string(),
            expires: rule.expires,
        },
        RuleChange::Remove => RuleRecord::End {
            signature: rule.signature.to_string(),
            ended: event.at,
            why: event.why.clone().unwrap_or_default(),
            traffic: rule.traffic,
        },
        RuleChange::Refuse | RuleChange::Restore => RuleRecord::Note,
    }
}

/// The rows an interval leaves in the store: its totals and its top `top` sources.
fn history_rows(
    iface: &str,
    interval: &Interval,
    at: Duration,
    top: usize,
    places: &crate::detect::alert::Places,
) -> (IntervalRow, Vec<SourceRow>) {
    let ts_ms = i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
    let interval_ms = i64::try_from(interval.elapsed.as_millis()).unwrap_or(i64::MAX);
    let delta = &interval.delta;
    let row = IntervalRow {
        ts_ms,
        iface: iface.to_owned(),
        interval_ms,
        packets: delta.total_packets,
        bytes: delta.total_bytes,
        non_ip: delta.non_ip_packets,
        malformed: delta.malformed_packets,
        overflow: delta.overflow_packets,
        truncated: delta.truncated_packets,
        sampled: delta.sampled_packets,
        sample_capped: delta.sample_capped_packets,
        sample_lost: delta.sample_ring_full_packets,
        sources_tracked: interval.tracked_sources as u64,
        slotless: slotless_rows(&interval.slotless, top, places),
    };
    let sources = interval
        .sources
        .iter()
        .take(top)
        .map(|source| {
            let place = places.get(&source.addr);
            SourceRow {
                asn: place.and_then(|place| place.asn),
                as_org: place.and_then(|place| place.as_org.clone()),
                country: place.and_then(|place| place.country.clone()),
                ts_ms,
                iface: iface.to_owned(),
                interval_ms,
                source: source.addr.to_string(),
                packets: source.stats.packets,
                bytes: source.stats.bytes,
                tcp: source.stats.tcp_packets,
                udp: source.stats.udp_packets,
                icmp: source.stats.icmp_packets,
                other: source.stats.other_packets,
                syn: source.stats.tcp_syn_packets,
                ports: source.spread.ports,
                hosts: source.spread.hosts,
                fragments: source.stats.fragment_packets,
                reflected: source.stats.reflected_packets,
            }
        })
        .collect();
    (row, sources)
}

/// The breakdown of the traffic without a slot as rows: the total, then each list's top
/// `top` and the rest as `other`, so that every list adds up to the total.
fn slotless_rows(
    breakdown: &OverflowBreakdown,
    top: usize,
    places: &crate::detect::alert::Places,
) -> Vec<SlotlessRow> {
    let placed = |addr: IpAddr, row: SlotlessRow| match places.get(&addr) {
        Some(place) => SlotlessRow {
            asn: place.asn,
            as_org: place.as_org.clone(),
            country: place.country.clone(),
            ..row
        },
        None => row,
    };
    if breakdown.total.packets == 0 {
        return Vec::new();
    }
    let mut rows = vec![SlotlessRow {
        breakdown: "total",
        packets: breakdown.total.packets,
        bytes: breakdown.total.bytes,
        sources_estimate: Some(breakdown.sources),
        prefixes_estimate: Some(breakdown.prefixes),
        ..SlotlessRow::default()
    }];
    let prefix = |prefix: &SlotlessPrefix| {
        placed(
            prefix.addr,
            SlotlessRow {
                subject: prefix.to_string(),
                ..SlotlessRow::default()
            },
        )
    };
    list_rows(
        &mut rows,
        "wide",
        &breakdown.wide,
        breakdown.wide_other,
        top,
        prefix,
    );
    list_rows(
        &mut rows,
        "narrow",
        &breakdown.narrow,
        breakdown.narrow_other,
        top,
        prefix,
    );
    list_rows(
        &mut rows,
        "target",
        &breakdown.targets,
        breakdown.target_other,
        top,
        |target: &Target| {
            placed(
                target.addr,
                SlotlessRow {
                    subject: target.addr.to_string(),
                    kind: Some(target.kind.name()),
                    port: target.port,
                    ..SlotlessRow::default()
                },
            )
        },
    );
    rows
}

/// The rows of one list of a breakdown: its first `top` entries (each `row` of its key), then
/// the rest and `other` in one row whose subject is `other`.
fn list_rows<K>(
    rows: &mut Vec<SlotlessRow>,
    breakdown: &'static str,
    list: &[(K, Traffic)],
    other: Traffic,
    top: usize,
    row: impl Fn(&K) -> SlotlessRow,
) {
    let mut rest = other;
    for (i, (key, traffic)) in list.iter().enumerate() {
        if i >= top {
            add_traffic(&mut rest, *traffic);
            continue;
        }
        rows.push(SlotlessRow {
            breakdown,
            packets: traffic.packets,
            bytes: traffic.bytes,
            ..row(key)
        });
    }
    if rest.packets > 0 {
        rows.push(SlotlessRow {
            breakdown,
            subject: String::from("other"),
            packets: rest.packets,
            bytes: rest.bytes,
            ..SlotlessRow::default()
        });
    }
}

fn write_all(
    store: &mut Store,
    rx: &Receiver<(u64, Record)>,
    kept: &Mutex<VecDeque<(u64, Record)>>,
    webhooks: &[String],
    counts: &SinkCounts,
) {
    let mut waiting: VecDeque<Record> = VecDeque::new();
    let mut outage: Option<(std::time::Instant, u64)> = None;
    loop {
        // While records wait, the store is tried again every second, new records or not.
        // A kept record whose wake-up found the queue full is taken within a second too.
        let idle = waiting.is_empty()
            && kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty();
        let next = if idle {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(Duration::from_secs(1))
        };
        // The kept records whose turn came before the record read go first (all of them when
        // nothing was read: whatever came before them was read already, records being handed
        // over from one thread); oldest first, what waits goes before the new record.
        let before = match &next {
            Ok((turn, _)) => *turn,
            Err(_) => u64::MAX,
        };
        {
            let mut kept = kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            while kept.front().is_some_and(|(turn, _)| *turn < before) {
                if let Some((_, record)) = kept.pop_front() {
                    waiting.push_back(record);
                }
            }
        }
        match next {
            Ok((_, Record::Nudge)) | Err(RecvTimeoutError::Timeout) => {}
            Ok((_, record)) => waiting.push_back(record),
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
                    if let Some(kept) = waiting.pop_front().as_ref().and_then(Record::kept) {
                        // Whoever waited may have given up: nothing to tell then.
                        let _ = kept.send(());
                    }
                }
                Err(err) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    if outage.is_none() {
                        log::warn!(
                            "the store refuses writes ({err}); up to {RETRY} records wait in memory until it takes them again"
                        );
                        outage = Some((std::time::Instant::now(), 0));
                    }
                    break;
                }
            }
        }
        if let Some((since, lost)) = outage.as_mut() {
            if waiting.is_empty() {
                log::info!(
                    "the store takes writes again after {:.0}s; every record kept in memory meanwhile is written, {lost} lost to the {RETRY}-record bound",
                    since.elapsed().as_secs_f64()
                );
                outage = None;
            } else {
                // The oldest go, but never a ban or rule record: those are bounded on their
                // own (KEPT_MAX), and a restart must know every one.
                while waiting.len() > RETRY {
                    let Some(oldest) = waiting.iter().position(|record| record.kept().is_none())
                    else {
                        break;
                    };
                    waiting.remove(oldest);
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
    waiting.extend(
        kept.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .map(|(_, record)| record),
    );
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
        Record::Ban(record, _) => store.record_ban(record, webhooks),
        Record::Rule(record, finding, _) => store.record_rule(record, finding, webhooks),
        Record::Prune(cutoff) => store.prune_history(*cutoff).map(drop),
        Record::Export(queue, line) => store.enqueue_one(queue, line),
        Record::Nudge => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::{SlotlessPrefix, Target, TargetKind};

    #[test]
    fn slotless_rows_keep_the_top_and_put_the_rest_in_other() {
        let traffic = |packets| Traffic {
            packets,
            bytes: packets * 10,
        };
        let prefix = |c| SlotlessPrefix {
            addr: IpAddr::from([198, 51, c, 0]),
            len: 24,
        };
        let breakdown = OverflowBreakdown {
            total: traffic(100),
            wide_other: traffic(100),
            narrow: vec![
                (prefix(1), traffic(50)),
                (prefix(2), traffic(30)),
                (prefix(3), traffic(15)),
            ],
            narrow_other: traffic(5),
            targets: vec![(
                Target {
                    addr: IpAddr::from([10, 4, 0, 6]),
                    kind: TargetKind::Reflected,
                    port: Some(53),
                },
                traffic(100),
            )],
            sources: 90,
            prefixes: 1,
            ..OverflowBreakdown::default()
        };
        // The AS of one prefix known: its row carries it, the others none.
        let places = crate::detect::alert::Places::from([(
            IpAddr::from([198, 51, 2, 0]),
            crate::detect::alert::Place {
                asn: Some(64500),
                as_org: Some(String::from("EXAMPLE-NET")),
                country: Some(String::from("NL")),
            },
        )]);
        let rows = slotless_rows(&breakdown, 2, &places);
        assert_eq!(
            rows.iter()
                .map(|row| (row.asn, row.country.as_deref()))
                .collect::<Vec<_>>(),
            [
                (None, None),
                (None, None),
                (None, None),
                (Some(64500), Some("NL")),
                (None, None),
                (None, None),
            ]
        );
        let summary: Vec<String> = rows
            .iter()
            .map(|row| {
                format!(
                    "{}:{}:{}:{}",
                    row.breakdown,
                    row.subject,
                    row.port.unwrap_or(0),
                    row.packets
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "total::0:100",
                "wide:other:0:100",
                "narrow:198.51.1.0/24:0:50",
                "narrow:198.51.2.0/24:0:30",
                "narrow:other:0:20",
                "target:10.4.0.6:53:100",
            ]
        );
        assert_eq!(rows[0].sources_estimate, Some(90));
        assert_eq!(rows[5].kind, Some("reflected"));
        assert!(slotless_rows(&OverflowBreakdown::default(), 2, &places).is_empty());
    }

    /// A ban record handed over while the writer is stuck (another process holds the
    /// database's write lock) and its queue is full: the hand-over returns at once, and the
    /// record is kept once the store takes writes again (the hand-over blocked until then).
    #[test]
    fn a_kept_record_never_waits_for_a_stuck_writer() {
        let dir = std::env::temp_dir().join(format!("netwatch-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kept.db");
        let writer = StoreWriter::start(Store::open(&path).unwrap(), Vec::new()).unwrap();
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        // More than the queue holds: the writer is stuck on the first.
        for _ in 0..QUEUE + 8 {
            writer.send(Record::Prune(Duration::ZERO));
        }
        let writer = Arc::new(writer);
        let (kept, acknowledged) = sync_channel(1);
        let handing = {
            let writer = Arc::clone(&writer);
            thread::spawn(move || {
                writer.send_kept(Record::Ban(BanRecord::Note(String::from("{}")), kept));
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !handing.is_finished() && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            handing.is_finished(),
            "send_kept waited for a writer stuck behind a lock"
        );
        assert!(
            acknowledged.try_recv().is_err(),
            "kept while the lock is held?"
        );
        holder.execute_batch("ROLLBACK").unwrap();
        drop(holder);
        acknowledged
            .recv_timeout(Duration::from_secs(60))
            .expect("the kept record was written once the lock went");
        assert_eq!(writer.counts.failed.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A ban handed over aside is kept after the alert handed over before it (the webhooks
    /// get them in that order), however the writer was doing.
    #[test]
    fn a_kept_record_keeps_its_turn() {
        let dir = std::env::temp_dir().join(format!("netwatch-turn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("turn.db");
        let writer =
            StoreWriter::start(Store::open(&path).unwrap(), vec![String::from("http://a/")])
                .unwrap();
        for round in 0..50 {
            writer.send(Record::Findings(vec![FindingRow {
                ts_ms: round,
                kind_of_record: "alert",
                kind: String::from("threshold_pps"),
                subject: String::from("10.0.0.1"),
                record: format!("{{\"alert\":{round}}}"),
                attack: None,
                sources: None,
                iface: String::from("eth0"),
            }]));
            let (kept, acknowledged) = sync_channel(1);
            writer.send_kept(Record::Ban(
                BanRecord::Note(format!("{{\"ban\":{round}}}")),
                kept,
            ));
            acknowledged
                .recv_timeout(Duration::from_secs(30))
                .expect("the ban was kept");
        }
        drop(writer);
        let store = Store::open(&path).unwrap();
        let queued: Vec<String> = store
            .queued("http://a/", 1_000)
            .unwrap()
            .into_iter()
            .map(|(_, record)| record)
            .collect();
        let expected: Vec<String> = (0..50)
            .flat_map(|round| {
                [
                    format!("{{\"alert\":{round}}}"),
                    format!("{{\"ban\":{round}}}"),
                ]
            })
            .collect();
        assert_eq!(queued, expected);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
