//! Detection settings: the `[detect]` table of the configuration file, its sections, their
//! defaults and their validation.
//!
//! Owns the shape of the settings and what a value may be; it must not hold detection state
//! nor judge traffic (the one rule that lives here, [`SpikeConfig::threshold`], is the
//! arithmetic of a setting, used by the rules and the kernel's early limit alike). Serde
//! names and defaults are the file format: never renamed, only added.

use std::time::Duration;

use serde::Deserialize;

use super::{attack::DEFAULT_REFLECTION_PORTS, cidr::Cidr, ewma::Ewma};

/// Packet and bit rate limits of one scope; `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Packets per second.
    pub pps: Option<f64>,
    /// Bits per second.
    pub bps: Option<f64>,
}

/// Spike detection.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    /// Off switch.
    pub enabled: bool,
    /// How many standard deviations above the mean make a spike.
    pub k: f64,
    /// Samples the EWMA baseline spans (its smoothing is `2 / (window + 1)`).
    pub window: u32,
    /// Intervals a series must have been seen before it may alert.
    pub warmup: u32,
    /// A spike must also exceed this rate (packets per second), so that a quiet host going
    /// from 1 to 5 pps says nothing.
    pub min_pps: f64,
    /// ... and be at least this many times the mean.
    pub min_ratio: f64,
}

impl SpikeConfig {
    /// The rate a series with `baseline` must exceed to spike: `mean + k * sigma`, at least
    /// `min_ratio` times the mean and `min_pps`.
    pub(super) fn threshold(&self, baseline: &Ewma) -> f64 {
        let mean = baseline.mean();
        (mean + self.k * baseline.sigma())
            .max(mean * self.min_ratio)
            .max(self.min_pps)
    }
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            k: 4.0,
            window: 60,
            warmup: 30,
            min_pps: 100.0,
            min_ratio: 2.0,
        }
    }
}

/// Heavy hitters: sources and prefixes with no baseline yet that send a large share of the
/// traffic. Spike detection cannot see them (a new series has no baseline to exceed), and
/// unknown-source detection says "new", not "flooding". The same rule names new victims: local
/// hosts and prefixes with no baseline yet (quiet before) that receive such a share.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeavyConfig {
    /// Off switch.
    pub enabled: bool,
    /// Share of the interface's packets (0 to 1) that makes a new series a heavy hitter (or a
    /// new victim) ...
    pub share: f64,
    /// ... when it also sends (or receives) at least this many packets per second.
    pub min_pps: f64,
}

impl Default for HeavyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            share: 0.2,
            min_pps: 500.0,
        }
    }
}

/// Unknown-source detection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnknownConfig {
    /// Off switch.
    pub enabled: bool,
    /// How long sources are learned as known after the first start (kept across restarts).
    #[serde(with = "crate::duration")]
    pub learning: Duration,
    /// Packets an unknown source must send before it alerts.
    pub min_packets: u64,
    /// Networks never reported as unknown.
    pub allowlist: Vec<Cidr>,
}

impl Default for UnknownConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            learning: Duration::from_secs(3600),
            min_packets: 10,
            allowlist: Vec::new(),
        }
    }
}

/// SYN flood and scan detection, per source and interval. `None` turns a rule off.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// TCP SYN (without ACK) per second.
    pub syn_pps: Option<f64>,
    /// Distinct destination ports in one interval.
    pub ports: Option<u32>,
    /// Distinct destination hosts in one interval.
    pub hosts: Option<u32>,
    /// SYNs a source must send in one interval before `syn_pps` may fire: a rate taken over a
    /// handful of SYNs says nothing.
    pub min_syn: u64,
}

impl ScanConfig {
    /// True when a rule needs the kernel's distinct-destination sketches.
    pub fn needs_sketches(&self) -> bool {
        self.ports.is_some() || self.hosts.is_some()
    }

    /// A limit of 0 in the file turns its rule off (a field left out keeps its default).
    pub fn normalize(&mut self) {
        self.syn_pps = self.syn_pps.filter(|limit| *limit != 0.0);
        self.ports = self.ports.filter(|limit| *limit != 0);
        self.hosts = self.hosts.filter(|limit| *limit != 0);
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            syn_pps: Some(500.0),
            ports: Some(100),
            hosts: Some(64),
            min_syn: 200,
        }
    }
}

/// Detection settings. Every field has a default; see `netwatch.example.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Prefix length of IPv4 aggregates, of senders and of local hosts alike.
    pub prefix_v4: u8,
    /// Prefix length of IPv6 aggregates, of senders and of local hosts alike.
    pub prefix_v6: u8,
    /// Limits on the whole interface.
    pub global: Limits,
    /// Limits on each prefix aggregate.
    pub prefix: Limits,
    /// Limits on each source.
    pub source: Limits,
    /// Limits on each host of the local networks (`[networks] local`), on what it receives.
    pub destination: Limits,
    /// Limits on each prefix of the local networks (`prefix_v4`, `prefix_v6` long), on what
    /// its hosts receive together.
    pub destination_prefix: Limits,
    /// Spikes.
    pub spike: SpikeConfig,
    /// Unknown sources.
    pub unknown: UnknownConfig,
    /// SYN floods and scans.
    pub scan: ScanConfig,
    /// Heavy hitters without a baseline.
    pub heavy: HeavyConfig,
    /// Packets a subject must send in one interval before a rate rule (threshold, spike,
    /// heavy hitter) may fire on it.
    pub min_packets: u64,
    /// Top contributors listed in a global or prefix rate alert (sources, and prefixes for the
    /// global subject).
    pub contributors: usize,
    /// Most alert lines in one interval; the rest are counted in one `suppressed` line.
    pub max_alerts: usize,
    /// UDP source ports counted as reflection (amplification) traffic in the kernel.
    pub reflection_ports: Vec<u16>,
    /// Consecutive quiet intervals that end an event.
    pub end_after: u32,
    /// Intervals between two updates of a running event.
    pub update_every: u32,
    /// Most rate series (prefixes and sources) tracked at once; past it new ones are not
    /// tracked and a `tracking_capacity` alert says so.
    pub max_series: usize,
    /// Intervals without traffic after which a series is forgotten.
    pub idle_expiry: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            prefix_v4: 24,
            prefix_v6: 64,
            global: Limits::default(),
            prefix: Limits::default(),
            source: Limits::default(),
            destination: Limits::default(),
            destination_prefix: Limits::default(),
            spike: SpikeConfig::default(),
            unknown: UnknownConfig::default(),
            scan: ScanConfig::default(),
            heavy: HeavyConfig::default(),
            min_packets: 20,
            contributors: 5,
            max_alerts: 20,
            reflection_ports: DEFAULT_REFLECTION_PORTS
                .iter()
                .map(|(port, _)| *port)
                .collect(),
            end_after: 3,
            update_every: 10,
            max_series: 200_000,
            idle_expiry: 300,
        }
    }
}

impl DetectConfig {
    /// Checks values that parse but make no sense; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, reason: String| Err((format!("detect.{field}"), reason));
        if self.prefix_v4 > 32 {
            return fail("prefix_v4", format!("{} is more than 32", self.prefix_v4));
        }
        if self.prefix_v6 > 128 {
            return fail("prefix_v6", format!("{} is more than 128", self.prefix_v6));
        }
        for (scope, limits) in [
            ("global", &self.global),
            ("prefix", &self.prefix),
            ("source", &self.source),
            ("destination", &self.destination),
            ("destination_prefix", &self.destination_prefix),
        ] {
            for (name, value) in [("pps", limits.pps), ("bps", limits.bps)] {
                if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return fail(
                        &format!("{scope}.{name}"),
                        "must be a positive number".into(),
                    );
                }
            }
        }
        let spike = &self.spike;
        if !(spike.k.is_finite() && spike.k > 0.0) {
            return fail("spike.k", format!("{} is not a positive number", spike.k));
        }
        if spike.window == 0 {
            return fail("spike.window", "must be at least 1".into());
        }
        if !(spike.min_pps.is_finite() && spike.min_pps >= 0.0) {
            return fail("spike.min_pps", "must be zero or more".into());
        }
        if !(spike.min_ratio.is_finite() && spike.min_ratio >= 1.0) {
            return fail("spike.min_ratio", "must be 1 or more".into());
        }
        if self
            .scan
            .syn_pps
            .is_some_and(|v| !(v.is_finite() && v > 0.0))
        {
            return fail("scan.syn_pps", "must be a positive number".into());
        }
        if self.end_after == 0 || self.update_every == 0 {
            return fail(
                "end_after",
                "end_after and update_every must be at least 1".into(),
            );
        }
        if self.max_series == 0 {
            return fail("max_series", "must be at least 1".into());
        }
        let heavy = &self.heavy;
        if !(heavy.share.is_finite() && heavy.share > 0.0 && heavy.share <= 1.0) {
            return fail("heavy.share", format!("{} is not in (0, 1]", heavy.share));
        }
        if !(heavy.min_pps.is_finite() && heavy.min_pps >= 0.0) {
            return fail("heavy.min_pps", "must be zero or more".into());
        }
        if self.max_alerts == 0 {
            return fail("max_alerts", "must be at least 1".into());
        }
        if self.reflection_ports.contains(&0) {
            return fail("reflection_ports", "port 0 is no service's".into());
        }
        Ok(())
    }
}
