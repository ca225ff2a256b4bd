//! The settings of `[inspect]`: what is sampled and what is looked for ([`InspectConfig`]),
//! the keyword matcher ([`KeywordConfig`]) and the DNS tunnelling heuristics
//! ([`DnsTunnelConfig`]), with their defaults.
//!
//! Plain data: it inspects nothing and keeps no state (the inspector does); it imports nothing
//! else of this module.

use std::time::Duration;

use serde::Deserialize;

/// What is sampled and what is looked for. Every field has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    /// Off switch for sampling and inspection.
    pub enabled: bool,
    /// Samples per second per CPU (the kernel's token bucket).
    pub rate: u32,
    /// Samples that may be taken at once after a quiet spell.
    pub burst: u32,
    /// TCP ports sampled, either end of the packet.
    pub tcp_ports: Vec<u16>,
    /// UDP ports sampled.
    pub udp_ports: Vec<u16>,
    /// Print credentials' secrets instead of `<redacted>` (also `--show-secrets`).
    pub show_secrets: bool,
    /// The keyword matcher.
    pub keywords: KeywordConfig,
    /// DNS tunnelling heuristics.
    pub dns_tunnel: DnsTunnelConfig,
    /// Flows whose state (an FTP user waiting for its PASS, an HTTP request waiting for its
    /// body, ...) is remembered.
    pub max_flows: usize,
    /// Most bytes of a sampled frame the kernel copies (up to 8,192); a longer frame is cut
    /// there and counted as truncated.
    pub snap_len: u32,
    /// Most bytes of one HTTP request (head and body) gathered across segments.
    pub follow_bytes: usize,
    /// An HTTP request whose rest has not come within this long is reported as it is.
    #[serde(with = "crate::duration")]
    pub follow_timeout: Duration,
}

impl Default for InspectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate: 1_000,
            burst: 2_000,
            tcp_ports: vec![21, 23, 25, 53, 80, 110, 143, 587, 8080],
            udp_ports: vec![53],
            show_secrets: false,
            keywords: KeywordConfig::default(),
            dns_tunnel: DnsTunnelConfig::default(),
            max_flows: 10_000,
            snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
            follow_bytes: 65_536,
            follow_timeout: Duration::from_secs(10),
        }
    }
}

/// The rule some scripts use: a keyword anywhere in a TCP payload. Off by default; on, the
/// kernel samples every TCP payload (within the rate).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeywordConfig {
    /// Off switch.
    pub enabled: bool,
    /// Matched case-insensitively.
    pub words: Vec<String>,
}

impl Default for KeywordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            words: vec![String::from("user"), String::from("pass")],
        }
    }
}

/// DNS tunnelling: data smuggled in query names looks long, random, and spread over many
/// subdomains of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    /// Off switch.
    pub enabled: bool,
    /// A query name this long or longer is suspicious.
    pub max_name_len: usize,
    /// A label of at least `min_label_len` characters with at least this Shannon entropy
    /// (bits per character) is suspicious.
    pub entropy_bits: f64,
    /// See `entropy_bits`.
    pub min_label_len: usize,
    /// Distinct subdomains of one domain from one source in one interval that alert.
    pub subdomains: usize,
    /// Time before the same source and domain may alert again.
    #[serde(with = "crate::duration")]
    pub quiet: Duration,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_name_len: 100,
            entropy_bits: 4.0,
            min_label_len: 24,
            subdomains: 50,
            quiet: Duration::from_secs(600),
        }
    }
}
