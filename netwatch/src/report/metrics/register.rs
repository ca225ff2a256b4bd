//! Creating every metric netwatch exports, with its name, help and labels, and registering
//! it: [`Metrics::new`].

use std::sync::Mutex;

use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::Metrics;

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
            intel_packets: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_intel_packets_total",
                        "Frames from or to a network an indicator feed lists, matched in the \
                         kernel (listed: once per side a listed network holds; unrecorded: \
                         of them, those the kernel's table of matches had no room for)",
                    ),
                    &["iface", "outcome"],
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
            victim_pps: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "netwatch_victim_packets_per_second",
                        "Packet rate of the open flood alerts' traffic to each of their \
                         victims, the top N of the interface (an estimate when destinations \
                         are sampled)",
                    ),
                    &["iface", "destination", "attack", "port"],
                )?,
            )?,
            rule_events: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_rule_events_total",
                        "Signature rule events, by what happened (add, extend, remove, refuse)",
                    ),
                    &["change"],
                )?,
            )?,
            rules_active: register(
                r,
                IntGauge::new(
                    "netwatch_rules_active",
                    "Signature rules in force in the kernel",
                )?,
            )?,
            rule_packets: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_rule_packets",
                        "Packets each signature rule in force matched and dropped since it was \
                         set (at most 64 rules)",
                    ),
                    &["signature", "outcome"],
                )?,
            )?,
            export_waiting: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_export_waiting_records",
                        "Records waiting in the store's queue for an exporter (kafka)",
                    ),
                    &["exporter"],
                )?,
            )?,
            export_sent: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_export_sent_records_total",
                        "Records an exporter's destination acknowledged",
                    ),
                    &["exporter"],
                )?,
            )?,
            export_dropped: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_export_dropped_records_total",
                        "Records dropped, the oldest, for the bound of an exporter's queue",
                    ),
                    &["exporter"],
                )?,
            )?,
            export_up: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "netwatch_export_up",
                        "1 while an exporter's destination takes records, 0 while it refuses",
                    ),
                    &["exporter"],
                )?,
            )?,
            shown_export: Mutex::new(std::collections::HashMap::new()),
            captures_active: register(
                r,
                IntGauge::new(
                    "netwatch_captures_active",
                    "Packet captures of events in progress",
                )?,
            )?,
            capture_frames: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_capture_frames_total",
                        "Frames of the events' captures: written to their files, lost for                          room in the kernel's capture ring, refused by a budget or the disk",
                    ),
                    &["outcome"],
                )?,
            )?,
            capture_events: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "netwatch_capture_events_total",
                        "Captures cut before their end, files removed for the folder's budget,                          writes the disk refused",
                    ),
                    &["event"],
                )?,
            )?,
            shown_captures: Mutex::new(super::CaptureTotals::default()),
            registry,
            shown: Mutex::new(std::collections::HashMap::new()),
            victims: Mutex::new(std::collections::HashMap::new()),
            shown_slotless: Mutex::new(std::collections::HashMap::new()),
            top,
        };
        Ok(metrics)
    }
}
