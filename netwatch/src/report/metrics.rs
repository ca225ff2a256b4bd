//! Prometheus metrics: counters fed by the pipeline once per interval, served in the text
//! exposition format by a small HTTP server on its own thread, so that a scrape never waits
//! on collection and collection never waits on a scrape.
//!
//! Cardinality is bounded: per-source series exist only for the current top N sources and
//! are replaced every interval.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use prometheus::{
    Encoder as _, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::{
    sink::{Finding, FindingReport, IntervalReport, Sink},
    store::SinkCounts,
};
use crate::{
    collect::Interval,
    detect::alert::{AlertKind, AlertState},
};

/// Every metric netwatch exports.
pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    protocol_packets: IntCounterVec,
    blind_spots: IntCounterVec,
    unattributed: IntGaugeVec,
    samples: IntCounterVec,
    evicted: IntCounterVec,
    sources_tracked: IntGaugeVec,
    sources_capacity: IntGaugeVec,
    map_read: GaugeVec,
    alerts: IntCounterVec,
    suppressed: IntCounterVec,
    streams: IntGaugeVec,
    store_waiting: IntGauge,
    events: IntCounterVec,
    attach: IntGaugeVec,
    source_pps: GaugeVec,
    source_bps: GaugeVec,
    slotless_sources: IntGaugeVec,
    slotless_prefixes: IntGaugeVec,
    slotless_target_pps: GaugeVec,
    slotless_prefix_pps: GaugeVec,
    destination_pps: GaugeVec,
    destination_bps: GaugeVec,
    bans_active: IntGauge,
    ban_events: IntCounterVec,
    ban_packets: IntGaugeVec,
    ban_bytes: IntGaugeVec,
    ban_matched_packets: IntCounterVec,
    ban_matched_bytes: IntCounterVec,
    /// Each ban in force in the per-ban series: what it had matched when last shown (the
    /// totals grow by the difference).
    shown_bans: Mutex<std::collections::HashMap<String, (u64, u64)>>,
    /// The sources of each interface in the per-source series now, removed at its next
    /// interval.
    shown: Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// Likewise the slot-less destinations (destination, kind, port) and prefixes.
    shown_slotless: Mutex<std::collections::HashMap<String, ShownSlotless>>,
    top: usize,
}

/// The label values of the slot-less series of one interface now.
#[derive(Default)]
struct ShownSlotless {
    targets: Vec<[String; 3]>,
    prefixes: Vec<String>,
    destinations: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    /// Registers everything; `top` bounds the per-source series.
    pub fn new(top: usize) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let build = register(
            r,
            IntGaugeVec::new(
                Opts::new("netwatch_build_info", "netwatch version; always 1"),
                &["version"],
            )?,
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let metrics = Self {
            packets: register(
                r,
                IntCounterVec::new(
                    Opts::new("netwatch_packets_total", "Frames seen by the XDP program"),
                    &["iface"],
                )?,
            )?,
            bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new("netwatch_bytes_total", "Bytes of the frames seen"),
                    &["iface"],
                )?,
            )?,
            protocol_packets: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_protocol_packets_total",
                        "Frames attributed to a source, by protocol",
                    ),
                    &["iface", "protocol"],
                )?,
            )?,
            blind_spots: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_blind_spot_packets_total",
                        "Frames in a blind spot: non_ip, malformed, overflow (no source); truncated (counted for their source too)",
                    ),
                    &["iface", "kind"],
                )?,
            )?,
            unattributed: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_unattributed_packets",
                        "Frames in the total that no source reading accounts for yet (in flight while read)",
                    ),
                    &["iface"],
                )?,
            )?,
            samples: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_samples_total",
                        "Payload samples: taken, capped by the rate, lost to a full ring",
                    ),
                    &["iface", "outcome"],
                )?,
            )?,
            evicted: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_evicted_sources_total",
                        "Idle sources whose kernel slot was taken back after their last reading",
                    ),
                    &["iface"],
                )?,
            )?,
            sources_tracked: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_sources_tracked",
                        "Sources holding a slot in the kernel",
                    ),
                    &["iface"],
                )?,
            )?,
            sources_capacity: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_sources_capacity",
                        "Slots for sources in the kernel (--max-sources)",
                    ),
                    &["iface"],
                )?,
            )?,
            alerts: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_alerts_total",
                        "Alert lines, by kind and state (iface \"all\": the sum of several)",
                    ),
                    &["iface", "kind", "state"],
                )?,
            )?,
            suppressed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_alerts_suppressed_total",
                        "Alert lines left out over the per-interval cap (detect.max_alerts)",
                    ),
                    &["iface"],
                )?,
            )?,
            store_waiting: register(
                r,
                IntGauge::new(
                    "netwatch_store_waiting_records",
                    "Records kept in memory while the store refuses writes (a full disk); 0 when all is written",
                )?,
            )?,
            streams: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_http_requests_incomplete",
                        "HTTP requests gathered across segments and reported incomplete since start: dropped for room, cut at the byte bound, timed out",
                    ),
                    &["iface", "outcome"],
                )?,
            )?,
            events: register(
                r,
                IntCounterVec::new(
                    Opts::new("netwatch_events_total", "Inspection events, by event"),
                    &["iface", "event"],
                )?,
            )?,
            bans_active: register(r, IntGauge::new("netwatch_bans_active", "Bans in force")?)?,
            ban_events: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_ban_events_total",
                        "Ban events, by action: ban, unban, refused, restore",
                    ),
                    &["action"],
                )?,
            )?,
            ban_packets: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_ban_packets",
                        "Packets each ban in force matched since it began (dropped; in dry-run mode passed)",
                    ),
                    &["subject"],
                )?,
            )?,
            ban_bytes: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_ban_bytes",
                        "Bytes each ban in force matched since it began",
                    ),
                    &["subject"],
                )?,
            )?,
            ban_matched_packets: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_ban_matched_packets_total",
                        "Packets all bans matched, by mode (drop: dropped; dry-run: passed)",
                    ),
                    &["mode"],
                )?,
            )?,
            ban_matched_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_ban_matched_bytes_total",
                        "Bytes all bans matched, by mode",
                    ),
                    &["mode"],
                )?,
            )?,
            shown_bans: Mutex::new(std::collections::HashMap::new()),
            attach: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_attach_info",
                        "Interface, XDP mode and kind of source map; always 1",
                    ),
                    &["iface", "mode", "source_map"],
                )?,
            )?,
            map_read: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_map_read_seconds",
                        "Time the last reading of the kernel's maps took (the slots read, per-CPU \
                         values summed, idle slots reclaimed); the interval minus this is the slack",
                    ),
                    &["iface"],
                )?,
            )?,
            source_pps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_source_packets_per_second",
                        "Packet rate of the top sources in the last interval",
                    ),
                    &["iface", "source"],
                )?,
            )?,
            source_bps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_source_bits_per_second",
                        "Bit rate of the top sources in the last interval",
                    ),
                    &["iface", "source"],
                )?,
            )?,
            slotless_sources: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_slotless_sources",
                        "Distinct source addresses of the traffic without a slot in the last \
                         interval, estimated",
                    ),
                    &["iface"],
                )?,
            )?,
            slotless_prefixes: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_slotless_prefixes",
                        "Distinct IPv4 /16 and IPv6 /48 prefixes of the traffic without a slot \
                         in the last interval, estimated",
                    ),
                    &["iface"],
                )?,
            )?,
            slotless_target_pps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_slotless_destination_packets_per_second",
                        "Packet rate of traffic without a slot to the top destinations in the \
                         last interval, by kind (syn, tcp, udp, reflected, icmp, fragment, \
                         other) and port (high: ports from 32768 on; empty for kinds \
                         without ports)",
                    ),
                    &["iface", "destination", "kind", "port"],
                )?,
            )?,
            slotless_prefix_pps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_slotless_prefix_packets_per_second",
                        "Packet rate of traffic without a slot from the top IPv4 /16 and IPv6 \
                         /48 prefixes in the last interval",
                    ),
                    &["iface", "prefix"],
                )?,
            )?,
            destination_pps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_destination_packets_per_second",
                        "Packet rate received by the top hosts of the local networks in the \
                         last interval",
                    ),
                    &["iface", "destination"],
                )?,
            )?,
            destination_bps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_destination_bits_per_second",
                        "Bit rate received by the top hosts of the local networks in the last \
                         interval",
                    ),
                    &["iface", "destination"],
                )?,
            )?,
            registry,
            shown: Mutex::new(std::collections::HashMap::new()),
            shown_slotless: Mutex::new(std::collections::HashMap::new()),
            top,
        };
        Ok(metrics)
    }

    /// Creates every series of `iface` that can be known in advance at 0, so that dashboards
    /// and alert rules see zero rather than no data.
    fn zero_known_series(&self, iface: &str) {
        self.packets.with_label_values(&[iface]);
        self.bytes.with_label_values(&[iface]);
        self.evicted.with_label_values(&[iface]);
        self.suppressed.with_label_values(&[iface]);
        self.slotless_sources.with_label_values(&[iface]);
        self.slotless_prefixes.with_label_values(&[iface]);
        for protocol in ["tcp", "udp", "icmp", "other"] {
            self.protocol_packets.with_label_values(&[iface, protocol]);
        }
        for kind in ["non_ip", "malformed", "overflow", "truncated"] {
            self.blind_spots.with_label_values(&[iface, kind]);
        }
        for outcome in ["sampled", "capped", "ring_full", "truncated"] {
            self.samples.with_label_values(&[iface, outcome]);
        }
        for outcome in ["dropped", "cut", "timed_out"] {
            self.streams.with_label_values(&[iface, outcome]);
        }
        for kind in AlertKind::ALL {
            for state in AlertState::ALL {
                self.alerts
                    .with_label_values(&[iface, kind.name(), state.name()]);
            }
        }
        for event in ["credential", "http", "dns", "keyword"] {
            self.events.with_label_values(&[iface, event]);
        }
    }

    /// Records where and how the program is attached, the kind of source map and its
    /// capacity; every series of the interface starts at 0.
    pub fn set_attach(&self, iface: &str, mode: &str, source_map: &str, capacity: u32) {
        self.attach
            .with_label_values(&[iface, mode, source_map])
            .set(1);
        self.sources_capacity
            .with_label_values(&[iface])
            .set(i64::from(capacity));
        self.zero_known_series(iface);
    }

    /// Records how long the last reading of `iface`'s maps took.
    pub fn set_map_read(&self, iface: &str, took: Duration) {
        self.map_read
            .with_label_values(&[iface])
            .set(took.as_secs_f64());
    }

    /// Folds one interval of `iface` in.
    pub fn observe_interval(&self, iface: &str, interval: &Interval) {
        let delta = &interval.delta;
        self.packets
            .with_label_values(&[iface])
            .inc_by(delta.total_packets);
        self.bytes
            .with_label_values(&[iface])
            .inc_by(delta.total_bytes);
        let mut protocols = [0u64; 4];
        for source in &interval.sources {
            protocols[0] += source.stats.tcp_packets;
            protocols[1] += source.stats.udp_packets;
            protocols[2] += source.stats.icmp_packets;
            protocols[3] += source.stats.other_packets;
        }
        for (name, count) in ["tcp", "udp", "icmp", "other"].iter().zip(protocols) {
            self.protocol_packets
                .with_label_values(&[iface, name])
                .inc_by(count);
        }
        for (kind, count) in [
            ("non_ip", delta.non_ip_packets),
            ("malformed", delta.malformed_packets),
            ("overflow", delta.overflow_packets),
            ("truncated", delta.truncated_packets),
        ] {
            self.blind_spots
                .with_label_values(&[iface, kind])
                .inc_by(count);
        }
        for (outcome, count) in [
            ("sampled", delta.sampled_packets),
            ("capped", delta.sample_capped_packets),
            ("ring_full", delta.sample_ring_full_packets),
            ("truncated", delta.sample_truncated_packets),
        ] {
            self.samples
                .with_label_values(&[iface, outcome])
                .inc_by(count);
        }
        self.unattributed
            .with_label_values(&[iface])
            .set(i64::try_from(interval.unattributed.packets).unwrap_or(i64::MAX));
        self.evicted
            .with_label_values(&[iface])
            .inc_by(interval.evicted_sources);
        self.sources_tracked
            .with_label_values(&[iface])
            .set(i64::try_from(interval.tracked_sources).unwrap_or(i64::MAX));
        self.observe_slotless(iface, interval);
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sources = shown.entry(iface.to_owned()).or_default();
        for name in sources.drain(..) {
            let _ = self.source_pps.remove_label_values(&[iface, &name]);
            let _ = self.source_bps.remove_label_values(&[iface, &name]);
        }
        for source in interval.sources.iter().take(self.top) {
            let name = source.addr.to_string();
            self.source_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(source.stats.packets));
            self.source_bps
                .with_label_values(&[iface, &name])
                .set(interval.rate(source.stats.bytes) * 8.0);
            sources.push(name);
        }
    }

    /// The traffic without a slot of an interval (the estimates, the top destinations and
    /// prefixes) and the top local hosts, in series replaced every interval.
    fn observe_slotless(&self, iface: &str, interval: &Interval) {
        let breakdown = &interval.slotless;
        self.slotless_sources
            .with_label_values(&[iface])
            .set(i64::from(breakdown.sources));
        self.slotless_prefixes
            .with_label_values(&[iface])
            .set(i64::from(breakdown.prefixes));
        let mut shown = self
            .shown_slotless
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shown = shown.entry(iface.to_owned()).or_default();
        for [destination, kind, port] in shown.targets.drain(..) {
            let _ =
                self.slotless_target_pps
                    .remove_label_values(&[iface, &destination, &kind, &port]);
        }
        for prefix in shown.prefixes.drain(..) {
            let _ = self
                .slotless_prefix_pps
                .remove_label_values(&[iface, &prefix]);
        }
        for (target, traffic) in breakdown.targets.iter().take(self.top) {
            let labels = [
                target.addr.to_string(),
                target.kind.name().to_owned(),
                target.port_name().unwrap_or_default(),
            ];
            self.slotless_target_pps
                .with_label_values(&[iface, &labels[0], &labels[1], &labels[2]])
                .set(interval.rate(traffic.packets));
            shown.targets.push(labels);
        }
        for (prefix, traffic) in breakdown.wide.iter().take(self.top) {
            let name = prefix.to_string();
            self.slotless_prefix_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(traffic.packets));
            shown.prefixes.push(name);
        }
        for name in shown.destinations.drain(..) {
            let _ = self.destination_pps.remove_label_values(&[iface, &name]);
            let _ = self.destination_bps.remove_label_values(&[iface, &name]);
        }
        for destination in interval.destinations.iter().take(self.top) {
            let name = destination.addr.to_string();
            self.destination_pps
                .with_label_values(&[iface, &name])
                .set(interval.rate(destination.stats.packets));
            self.destination_bps
                .with_label_values(&[iface, &name])
                .set(interval.rate(destination.stats.bytes) * 8.0);
            shown.destinations.push(name);
        }
    }

    /// Counts an alert line.
    pub fn alert(&self, iface: &str, kind: &str, state: &str) {
        self.alerts.with_label_values(&[iface, kind, state]).inc();
    }

    /// Records what the HTTP streams of `iface` dropped, cut or timed out so far.
    pub fn set_streams(&self, iface: &str, counts: crate::inspect::http::StreamCounts) {
        for (outcome, count) in [
            ("dropped", counts.dropped),
            ("cut", counts.cut),
            ("timed_out", counts.timed_out),
        ] {
            self.streams
                .with_label_values(&[iface, outcome])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records how many records wait in memory for the store.
    pub fn set_store_waiting(&self, records: u64) {
        self.store_waiting
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// Counts alert lines left out over the cap.
    pub fn suppressed(&self, iface: &str, count: u64) {
        self.suppressed.with_label_values(&[iface]).inc_by(count);
    }

    /// Counts an event.
    pub fn event(&self, iface: &str, name: &str) {
        self.events.with_label_values(&[iface, name]).inc();
    }

    /// Counts a ban event by its action.
    pub fn ban_event(&self, action: &str) {
        self.ban_events.with_label_values(&[action]).inc();
    }

    /// The bans in force now in `mode`, each `(subject, packets, bytes)`, and those that ended
    /// since the last call with their final counts in `ended`: the per-ban series follow the
    /// bans in force, and the totals (by mode) grow by what each matched since it was last
    /// shown.
    pub fn set_bans(&self, mode: &str, bans: &[(String, u64, u64)], ended: &[(String, u64, u64)]) {
        let mut shown = self
            .shown_bans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (subject, packets, bytes) in bans.iter().chain(ended) {
            let (was_packets, was_bytes) = shown.get(subject).copied().unwrap_or((0, 0));
            self.ban_matched_packets
                .with_label_values(&[mode])
                .inc_by(packets.saturating_sub(was_packets));
            self.ban_matched_bytes
                .with_label_values(&[mode])
                .inc_by(bytes.saturating_sub(was_bytes));
            shown.insert(subject.clone(), (*packets, *bytes));
        }
        for (subject, _, _) in ended {
            if shown.remove(subject).is_some() {
                let _ = self.ban_packets.remove_label_values(&[subject.as_str()]);
                let _ = self.ban_bytes.remove_label_values(&[subject.as_str()]);
            }
        }
        for (subject, packets, bytes) in bans {
            self.ban_packets
                .with_label_values(&[subject.as_str()])
                .set(i64::try_from(*packets).unwrap_or(i64::MAX));
            self.ban_bytes
                .with_label_values(&[subject.as_str()])
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
        self.bans_active.set(bans.len() as i64);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# encoding failed: {err}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The metrics as a report output: each interval folded in, alerts and events counted, and
/// the state of the HTTP streams and of the store.
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    store: Option<Arc<SinkCounts>>,
}

impl MetricsSink {
    /// Feeds `metrics`; `store` gives the records waiting for the store, if there is one.
    pub fn new(metrics: Arc<Metrics>, store: Option<Arc<SinkCounts>>) -> Self {
        Self { metrics, store }
    }
}

impl Sink for MetricsSink {
    fn interval(&mut self, report: &IntervalReport<'_>) -> io::Result<()> {
        if report.combined {
            // Prometheus sums the interfaces itself.
            return Ok(());
        }
        let iface = &report.context.iface;
        self.metrics.observe_interval(iface, report.interval);
        self.metrics.set_streams(iface, report.streams);
        if let Some(store) = &self.store {
            self.metrics
                .set_store_waiting(store.waiting.load(Ordering::Relaxed));
        }
        Ok(())
    }

    fn finding(&mut self, report: &FindingReport<'_>) -> io::Result<()> {
        match report.finding {
            Finding::Alert(alert) => {
                self.metrics
                    .alert(report.iface, alert.kind.name(), alert.state.name());
                if alert.kind == AlertKind::Suppressed {
                    self.metrics.suppressed(report.iface, alert.observed as u64);
                }
            }
            Finding::Event(event) => self.metrics.event(report.iface, event.kind.name()),
            Finding::Ban(event) => self.metrics.ban_event(event.change.name()),
        }
        Ok(())
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own; returns the bound address.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    thread::Builder::new()
        .name(String::from("metrics"))
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            let log = Arc::new(Mutex::new(RateLimitedLog::default()));
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(stream) => stream,
                    Err(err) => {
                        // A connection aborted before it was accepted, say.
                        note(&log, &format!("accept: {err}"));
                        continue;
                    }
                };
                // Each connection on its own thread, so that an idle or slow one delays no
                // scrape; at most MAX_CONNECTIONS at once, the rest closed at once.
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    note(&log, "too many connections at once; one closed unanswered");
                    continue;
                }
                let (metrics, open, conn_log) =
                    (Arc::clone(&metrics), Arc::clone(&open), Arc::clone(&log));
                let spawned = thread::Builder::new()
                    .name(String::from("metrics-conn"))
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        if let Err(err) = answer(stream, &metrics) {
                            note(&conn_log, &format!("request failed: {err}"));
                        }
                        open.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(err) = spawned {
                    note(&log, &format!("cannot start a connection thread: {err}"));
                }
            }
        })?;
    Ok(bound)
}

/// Connections served at once, at most.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of request line and headers read, at most.
const MAX_HEAD_BYTES: u64 = 8192;
/// At most one line about failed metrics requests per this long; the rest are counted in it.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Failed requests, logged at most once a [`LOG_EVERY`] with the count since the last line:
/// a flood of aborted connections is not a flood of lines.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

fn note(log: &Mutex<RateLimitedLog>, what: &str) {
    let Ok(mut log) = log.lock() else {
        return;
    };
    let now = std::time::Instant::now();
    if log
        .last
        .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
    {
        log.unlogged += 1;
        return;
    }
    let more = std::mem::take(&mut log.unlogged);
    if more > 0 {
        log::warn!("metrics: {what} (and {more} more since the last line)");
    } else {
        log::warn!("metrics: {what}");
    }
    log.last = Some(now);
}

fn answer(stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(HEADER_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let deadline = std::time::Instant::now() + HEADER_TIMEOUT;
    let mut reader = BufReader::new(stream.try_clone()?.take(MAX_HEAD_BYTES));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers: bounded in count, bytes and time (a client that trickles a byte a
    // second is cut off with the rest).
    for _ in 0..100 {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "headers too slow"));
        }
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next()) {
        ("GET", Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", Some("/")) => (
            "200 OK",
            "text/plain; charset=utf-8",
            String::from("netwatch: metrics at /metrics\n"),
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            String::from("not found\n"),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use netwatch_common::{GlobalStats, SourceStats};

    use super::*;
    use crate::{
        collect::{SourceDelta, Volume},
        datapath::{Spread, Target, TargetKind},
    };

    /// The high ports' class is labelled `high`, port 0 is `0`, and kinds without ports have
    /// an empty label.
    #[test]
    fn target_ports_are_labelled_apart() {
        let target = |kind, port| Target {
            addr: "192.0.2.9".parse().unwrap(),
            kind,
            port,
        };
        let label = |target: Target| target.port_name().unwrap_or_default();
        assert_eq!(label(target(TargetKind::Syn, None)), "high");
        assert_eq!(label(target(TargetKind::Udp, Some(0))), "0");
        assert_eq!(label(target(TargetKind::Reflected, Some(53))), "53");
        assert_eq!(label(target(TargetKind::Fragment, None)), "");
    }

    /// Each ban in force has its series; an ended ban's series go, and the totals grow by
    /// exactly what each ban matched, its last packets included.
    #[test]
    fn ban_series_follow_the_bans_in_force() {
        let metrics = Metrics::new(5).unwrap();
        metrics.ban_event("ban");
        metrics.set_bans("drop", &[(String::from("10.9.0.2/32"), 100, 6_400)], &[]);
        metrics.set_bans("drop", &[(String::from("10.9.0.2/32"), 250, 16_000)], &[]);
        let text = metrics.render();
        assert!(text.contains("netwatch_bans_active 1\n"), "{text}");
        assert!(
            text.contains("netwatch_ban_packets{subject=\"10.9.0.2/32\"} 250\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_ban_events_total{action=\"ban\"} 1\n"),
            "{text}"
        );
        metrics.set_bans("drop", &[], &[(String::from("10.9.0.2/32"), 260, 16_640)]);
        let text = metrics.render();
        assert!(text.contains("netwatch_bans_active 0\n"), "{text}");
        assert!(!text.contains("netwatch_ban_packets{"), "{text}");
        assert!(
            text.contains("netwatch_ban_matched_packets_total{mode=\"drop\"} 260\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_ban_matched_bytes_total{mode=\"drop\"} 16640\n"),
            "{text}"
        );
    }

    fn interval() -> Interval {
        Interval {
            elapsed: Duration::from_secs(1),
            delta: GlobalStats {
                total_packets: 12,
                total_bytes: 1200,
                non_ip_packets: 2,
                sampled_packets: 1,
                ..GlobalStats::default()
            },
            cumulative: GlobalStats::default(),
            sources: vec![SourceDelta {
                addr: "192.0.2.1".parse().unwrap(),
                stats: SourceStats {
                    packets: 10,
                    bytes: 1000,
                    udp_packets: 10,
                    ..SourceStats::default()
                },
                spread: Spread::default(),
            }],
            tracked_sources: 1,
            evicted_sources: 0,
            unattributed: Volume::default(),
            unattributed_before: Volume::default(),
            overflow_reflected_port: 0,
            slotless: Default::default(),
            destinations: Vec::new(),
            destination_other: Default::default(),
        }
    }

    #[test]
    fn counters_accumulate_per_interface_and_per_source_series_are_bounded() {
        let metrics = Metrics::new(0).unwrap();
        metrics.observe_interval("eth0", &interval());
        metrics.observe_interval("eth0", &interval());
        metrics.observe_interval("eth1", &interval());
        metrics.alert("eth0", "spike_pps", "start");
        let text = metrics.render();
        assert!(
            text.contains("netwatch_packets_total{iface=\"eth0\"} 24\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_packets_total{iface=\"eth1\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_protocol_packets_total{iface=\"eth0\",protocol=\"udp\"} 20\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_blind_spot_packets_total{iface=\"eth0\",kind=\"non_ip\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_samples_total{iface=\"eth0\",outcome=\"sampled\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "netwatch_alerts_total{iface=\"eth0\",kind=\"spike_pps\",state=\"start\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("netwatch_source_packets_per_second{"),
            "top 0: {text}"
        );
        let metrics = Metrics::new(5).unwrap();
        metrics.observe_interval("eth0", &interval());
        metrics.observe_interval("eth1", &interval());
        let text = metrics.render();
        for iface in ["eth0", "eth1"] {
            assert!(
                text.contains(&format!(
                    "netwatch_source_packets_per_second{{iface=\"{iface}\",source=\"192.0.2.1\"}} 10\n"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("netwatch_slotless_sources{iface=\"eth0\"} 0\n"),
            "{text}"
        );
        // Traffic without a slot: its top destinations and prefixes, for one interval.
        let traffic = |packets| crate::datapath::Traffic {
            packets,
            bytes: packets * 60,
        };
        metrics.observe_interval(
            "eth0",
            &Interval {
                slotless: crate::datapath::OverflowBreakdown {
                    total: traffic(300),
                    targets: vec![(
                        Target {
                            addr: std::net::IpAddr::from([10, 4, 0, 6]),
                            kind: TargetKind::Syn,
                            port: Some(80),
                        },
                        traffic(300),
                    )],
                    wide: vec![(
                        crate::datapath::SlotlessPrefix {
                            addr: std::net::IpAddr::from([198, 51, 0, 0]),
                            len: 16,
                        },
                        traffic(300),
                    )],
                    sources: 290,
                    prefixes: 1,
                    ..Default::default()
                },
                destinations: vec![crate::datapath::DestinationReading {
                    addr: std::net::IpAddr::from([10, 0, 0, 6]),
                    stats: SourceStats {
                        packets: 300,
                        bytes: 18_000,
                        ..Default::default()
                    },
                    sources: 290,
                    senders: Vec::new(),
                }],
                ..interval()
            },
        );
        let text = metrics.render();
        for line in [
            "netwatch_slotless_sources{iface=\"eth0\"} 290\n",
            "netwatch_slotless_destination_packets_per_second{destination=\"10.4.0.6\",iface=\"eth0\",kind=\"syn\",port=\"80\"} 300\n",
            "netwatch_slotless_prefix_packets_per_second{iface=\"eth0\",prefix=\"198.51.0.0/16\"} 300\n",
            "netwatch_destination_packets_per_second{destination=\"10.0.0.6\",iface=\"eth0\"} 300\n",
            "netwatch_destination_bits_per_second{destination=\"10.0.0.6\",iface=\"eth0\"} 144000\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // The next interval of eth0 has no source: its series go, eth1's stay.
        metrics.observe_interval(
            "eth0",
            &Interval {
                sources: Vec::new(),
                ..interval()
            },
        );
        let text = metrics.render();
        assert!(
            !text.contains("netwatch_source_packets_per_second{iface=\"eth0\""),
            "{text}"
        );
        assert!(
            !text.contains("netwatch_slotless_destination_packets_per_second{"),
            "{text}"
        );
        assert!(
            !text.contains("netwatch_destination_packets_per_second{"),
            "{text}"
        );
        assert!(
            text.contains("netwatch_source_packets_per_second{iface=\"eth1\""),
            "{text}"
        );
    }

    #[test]
    fn the_server_answers_metrics_and_404() {
        let metrics = Arc::new(Metrics::new(5).unwrap());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics)).unwrap();
        let get = |path: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        };
        let response = get("/metrics");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("netwatch_build_info{version="),
            "{response}"
        );
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
    }

    /// Idle connections (a scanner, a stuck client) hold no scrape back: each connection is
    /// served on its own, and an idle one is closed after the header timeout.
    #[test]
    fn idle_connections_do_not_delay_a_scrape() {
        let metrics = Arc::new(Metrics::new(5).unwrap());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics)).unwrap();
        let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut stream = TcpStream::connect(addr).unwrap();
        // The scrape must answer within Prometheus's patience and well within the old 5 s
        // per idle connection: a read that waits longer fails the test.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        // The idle ones are closed by the server after its header timeout.
        for mut idle in idle {
            idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            assert!(
                idle.read_to_end(&mut rest).is_ok(),
                "closed by the server, not left open"
            );
        }
    }
}
