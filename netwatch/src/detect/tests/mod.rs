//! Detection rules against synthetic interval series.
//!
//! This file owns the synthetic traffic and the helpers every family of tests shares (an
//! interval of sources, the configurations with only the rules under test on, a run over a
//! series, a quiet link, a victim's interval); the tests are in one file per family:
//! `spikes` (and the series behind them), `thresholds`, `heavy_hitters`, `unknown` (sources),
//! `scans` (and SYN floods), `victims` (whom floods hit), `events` (the cap on an interval's lines, the kernel's early
//! events) and `explain` (what an alert says of its traffic). A test must not reach into the
//! detector's state: it drives the detector through its entry points and reads what comes out.

mod events;
mod explain;
mod heavy_hitters;
mod scans;
mod spikes;
mod thresholds;
mod unknown;
mod victims;

use std::{net::IpAddr, time::Duration};

use netwatch_common::{GlobalStats, SourceStats};

use super::{
    alert::{Alert, AlertKind, AlertState},
    config::{DetectConfig, HeavyConfig, Limits, ScanConfig, SpikeConfig, UnknownConfig},
    detector::Detector,
    state::KnownState,
};
use crate::{
    collect::{Interval, SourceDelta, Volume},
    datapath::Spread,
};

const SECOND: Duration = Duration::from_secs(1);

/// One source's traffic in one interval.
#[derive(Clone, Copy)]
struct Traffic {
    addr: IpAddr,
    packets: u64,
    syn: u64,
    ports: u32,
    hosts: u32,
    /// Non-zero: UDP answers from this amplification port, not TCP.
    reflected_port: u16,
}

fn traffic(addr: &str, packets: u64) -> Traffic {
    Traffic {
        addr: addr.parse().unwrap(),
        packets,
        syn: 0,
        ports: 0,
        hosts: 1,
        reflected_port: 0,
    }
}

fn interval(sources: &[Traffic]) -> Interval {
    let mut delta = GlobalStats::default();
    let sources: Vec<SourceDelta> = sources
        .iter()
        .filter(|t| t.packets > 0)
        .map(|t| {
            delta.total_packets += t.packets;
            delta.total_bytes += t.packets * 100;
            SourceDelta {
                addr: t.addr,
                stats: if t.reflected_port == 0 {
                    SourceStats {
                        packets: t.packets,
                        bytes: t.packets * 100,
                        tcp_packets: t.packets,
                        tcp_syn_packets: t.syn,
                        ..SourceStats::default()
                    }
                } else {
                    SourceStats {
                        packets: t.packets,
                        bytes: t.packets * 100,
                        udp_packets: t.packets,
                        reflected_packets: t.packets,
                        reflected_port: u32::from(t.reflected_port),
                        ..SourceStats::default()
                    }
                },
                spread: Spread {
                    ports: t.ports,
                    hosts: t.hosts,
                },
            }
        })
        .collect();
    Interval {
        elapsed: SECOND,
        delta,
        cumulative: GlobalStats::default(),
        tracked_sources: sources.len(),
        sources,
        evicted_sources: 0,
        unattributed: Volume::default(),
        unattributed_before: Volume::default(),
        overflow_reflected_port: 0,
        slotless: Default::default(),
        destination_count: crate::datapath::DestinationCount::Local,
        destinations: Vec::new(),
        destination_other: Default::default(),
        intel: Default::default(),
    }
}

/// Detection with only the rule under test on.
fn quiet_config() -> DetectConfig {
    DetectConfig {
        spike: SpikeConfig {
            enabled: false,
            ..SpikeConfig::default()
        },
        unknown: UnknownConfig {
            enabled: false,
            ..UnknownConfig::default()
        },
        scan: ScanConfig {
            syn_pps: None,
            ports: None,
            hosts: None,
            ..ScanConfig::default()
        },
        heavy: HeavyConfig {
            enabled: false,
            ..HeavyConfig::default()
        },
        ..DetectConfig::default()
    }
}

fn spike_config() -> DetectConfig {
    DetectConfig {
        spike: SpikeConfig {
            enabled: true,
            warmup: 20,
            ..SpikeConfig::default()
        },
        ..quiet_config()
    }
}

/// Runs the series (one slice of traffic per interval) and returns every alert.
fn run(detector: &mut Detector, series: impl IntoIterator<Item = Vec<Traffic>>) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, sources) in series.into_iter().enumerate() {
        let at = Duration::from_secs(1_000 + i as u64 + 1);
        alerts.extend(detector.observe(&interval(&sources), at).alerts);
    }
    alerts
}

fn detector(config: DetectConfig) -> Detector {
    Detector::new(config, KnownState::default(), String::from("t"))
}

fn summary(alerts: &[Alert]) -> Vec<(AlertKind, AlertState, String)> {
    alerts
        .iter()
        .map(|a| (a.kind, a.state, a.subject.to_string()))
        .collect()
}

fn unknown_config(allowlist: &[&str]) -> DetectConfig {
    DetectConfig {
        unknown: UnknownConfig {
            enabled: true,
            learning: Duration::from_secs(10),
            min_packets: 10,
            allowlist: allowlist.iter().map(|net| net.parse().unwrap()).collect(),
        },
        ..quiet_config()
    }
}

/// Ten quiet hosts for `intervals` intervals.
fn quiet_link(intervals: usize) -> Vec<Vec<Traffic>> {
    (0..intervals)
        .map(|i| {
            (1..=10)
                .map(|host| traffic(&format!("10.0.0.{host}"), 8 + (i as u64 + host) % 5))
                .collect()
        })
        .collect()
}

/// [`quiet_link`] for `intervals` intervals, with `more` traffic in each.
fn quiet_link_and(intervals: usize, more: impl Fn() -> Vec<Traffic>) -> Vec<Vec<Traffic>> {
    quiet_link(intervals)
        .into_iter()
        .map(|mut interval| {
            interval.extend(more());
            interval
        })
        .collect()
}

/// Spikes and heavy hitters on, as by default, with a short warm-up.
fn heavy_config() -> DetectConfig {
    DetectConfig {
        heavy: HeavyConfig::default(),
        ..spike_config()
    }
}

/// [`heavy_config`] with unknown-source detection on, learning for `seconds`.
fn heavy_config_learning(seconds: u64) -> DetectConfig {
    DetectConfig {
        unknown: UnknownConfig {
            learning: Duration::from_secs(seconds),
            ..unknown_config(&[]).unknown
        },
        ..heavy_config()
    }
}

fn starts(alerts: &[Alert]) -> Vec<(AlertKind, String)> {
    alerts
        .iter()
        .filter(|a| matches!(a.state, AlertState::Start | AlertState::Instant))
        .map(|a| (a.kind, a.subject.to_string()))
        .collect()
}

fn detector_with_threshold() -> Detector {
    detector(DetectConfig {
        global: Limits {
            pps: Some(1_000.0),
            bps: None,
        },
        ..quiet_config()
    })
}

/// An interval in which the local host 192.0.2.5 receives `packets` SYNs from `sources`
/// sources, most of them from 203.0.113.0/24.
fn victim(packets: u64, sources: u32) -> Interval {
    use crate::datapath::{DestinationReading, SlotlessPrefix, Traffic};
    let mut interval = interval(&[traffic("198.51.100.1", 50)]);
    interval.delta.total_packets += packets;
    interval.destinations = vec![DestinationReading {
        addr: "192.0.2.5".parse().unwrap(),
        stats: SourceStats {
            packets,
            bytes: packets * 60,
            tcp_packets: packets,
            tcp_syn_packets: packets,
            ..SourceStats::default()
        },
        sources,
        senders: vec![(
            SlotlessPrefix {
                addr: "203.0.113.0".parse().unwrap(),
                len: 24,
            },
            Traffic {
                packets: packets * 9 / 10,
                bytes: packets * 54,
            },
        )],
        port: Some(443),
    }];
    interval
}
