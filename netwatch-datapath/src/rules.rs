//! Signature rules as userspace holds them: what a frame must be (destination network,
//! protocol, ports, SYN, fragment, length) to be counted, dropped or rate-limited, its
//! kernel form, the rules set by index, and the networks of the destination tries, each with
//! every rule that may apply to it ([`netwatch_common::RuleSet`], at most
//! [`netwatch_common::RULES_PER_DESTINATION`]). Plain data and pure functions: the maps are
//! written in [`super::rule_maps`]; which rules exist, for how long and why is decided
//! elsewhere.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use netwatch_common::{
    RULE_ACTION_COUNT, RULE_ACTION_DROP, RULE_ACTION_RATE_LIMIT, RULE_MATCH_DST_PORT,
    RULE_MATCH_FRAGMENT, RULE_MATCH_IN_USE, RULE_MATCH_LENGTH, RULE_MATCH_PROTOCOL,
    RULE_MATCH_SRC_PORT, RULE_MATCH_SYN, RULE_PROTOCOL_ICMP, RULE_PROTOCOL_OTHER,
    RULE_PROTOCOL_TCP, RULE_PROTOCOL_UDP, Rule,
};

use super::overflow::{Traffic, add_traffic};

/// The protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP, and ICMPv6 for IPv6.
    Icmp,
    /// Any other.
    Other,
}

impl RuleProtocol {
    fn code(self) -> u8 {
        match self {
            Self::Tcp => RULE_PROTOCOL_TCP,
            Self::Udp => RULE_PROTOCOL_UDP,
            Self::Icmp => RULE_PROTOCOL_ICMP,
            Self::Other => RULE_PROTOCOL_OTHER,
        }
    }
}

impl fmt::Display for RuleProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Other => "other",
        })
    }
}

impl std::str::FromStr for RuleProtocol {
    type Err = ();

    /// A protocol by the name [`fmt::Display`] gives it: `tcp`, `udp`, `icmp` or `other`.
    fn from_str(name: &str) -> Result<Self, ()> {
        match name {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "icmp" => Ok(Self::Icmp),
            "other" => Ok(Self::Other),
            _ => Err(()),
        }
    }
}

/// What a rule does to the frames it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Counts and passes them: a dry run.
    Count,
    /// Counts and drops them.
    Drop,
    /// Counts them, passes this many a second (all CPUs together, in windows of 64 frames'
    /// time, at least a millisecond and at most a second), drops the rest.
    RateLimit {
        /// Frames per second passed.
        pps: u32,
    },
}

/// A signature rule: every field set must match; unset fields match anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignatureRule {
    /// The destination network (address and prefix length); `None`: any destination.
    pub destination: Option<(IpAddr, u8)>,
    /// The protocol.
    pub protocol: Option<RuleProtocol>,
    /// The transport source port (a reflected service's); TCP and UDP first fragments only.
    pub src_port: Option<u16>,
    /// The transport destination port; TCP and UDP first fragments only.
    pub dst_port: Option<u16>,
    /// Only TCP segments with SYN set and ACK clear.
    pub syn: bool,
    /// Only IP fragments, first or later.
    pub fragment: bool,
    /// The IP packet's length, inclusive bounds.
    pub length: Option<(u16, u16)>,
    /// What matching frames meet.
    pub action: RuleAction,
}

/// What a rule matched so far, all CPUs together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleTraffic {
    /// Every frame the rule decided.
    pub matched: Traffic,
    /// Of them, the dropped.
    pub dropped: Traffic,
}

impl RuleTraffic {
    /// Adds what `other` counted (another CPU's, or another interface's).
    pub fn add(&mut self, matched: Traffic, dropped: Traffic) {
        add_traffic(&mut self.matched, matched);
        add_traffic(&mut self.dropped, dropped);
    }

    /// The passed: matched less dropped.
    pub fn passed(&self) -> Traffic {
        // Saturating: the counters are read CPU by CPU while the kernel adds to them, matched
        // before dropped, so a reading may hold a drop whose match it missed.
        Traffic {
            packets: self.matched.packets.saturating_sub(self.dropped.packets),
            bytes: self.matched.bytes.saturating_sub(self.dropped.bytes),
        }
    }
}

/// The rules set, by index, and the destination networks written in the tries.
#[derive(Debug, Default)]
pub(super) struct RuleTable {
    pub(super) rules: BTreeMap<u32, SignatureRule>,
    pub(super) written: BTreeMap<(IpAddr, u8), Vec<u32>>,
    pub(super) exempt: Vec<(IpAddr, u8)>,
}

/// The rate-limit window of `pps`: its nanoseconds, and the frames it passes. The time of 64
/// frames, within a millisecond and a second: long enough for the rounding of its allowance
/// to stay under 1% of the rate, short enough that a window's burst is small.
pub fn rate_window(pps: u32) -> (u32, u32) {
    let pps = f64::from(pps.max(1));
    let window_ns = (64e9 / pps).clamp(1e6, 1e9).round();
    let allowance = (pps * window_ns / 1e9).round().max(1.0);
    (window_ns as u32, allowance.min(f64::from(u32::MAX)) as u32)
}

impl SignatureRule {
    /// The kernel's form of the rule's fields and action.
    pub(super) fn kernel(&self) -> Rule {
        let mut rule = Rule {
            matches: RULE_MATCH_IN_USE,
            max_len: u16::MAX,
            ..Rule::default()
        };
        if let Some(protocol) = self.protocol {
            rule.matches |= RULE_MATCH_PROTOCOL;
            rule.protocol = protocol.code();
        }
        if let Some(port) = self.src_port {
            rule.matches |= RULE_MATCH_SRC_PORT;
            rule.src_port = port;
        }
        if let Some(port) = self.dst_port {
            rule.matches |= RULE_MATCH_DST_PORT;
            rule.dst_port = port;
        }
        if self.syn {
            rule.matches |= RULE_MATCH_SYN;
        }
        if self.fragment {
            rule.matches |= RULE_MATCH_FRAGMENT;
        }
        if let Some((min, max)) = self.length {
            rule.matches |= RULE_MATCH_LENGTH;
            rule.min_len = min;
            rule.max_len = max;
        }
        match self.action {
            RuleAction::Count => rule.action = RULE_ACTION_COUNT,
            RuleAction::Drop => rule.action = RULE_ACTION_DROP,
            RuleAction::RateLimit { pps } => {
                rule.action = RULE_ACTION_RATE_LIMIT;
                (rule.window_ns, rule.allowance) = rate_window(pps);
            }
        }
        rule
    }

    /// Whether its destination holds the network `addr/len` (any destination holds every
    /// network of both families).
    fn holds(&self, addr: IpAddr, len: u8) -> bool {
        let Some((network, bits)) = self.destination else {
            return true;
        };
        bits <= len && same_prefix(network, addr, bits)
    }
}

/// Whether `addr` has no bit set past its first `len`.
pub(super) fn is_network(addr: IpAddr, len: u8) -> bool {
    let (bits, width) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let host = width - u32::from(len).min(width);
    host == 0 || bits & ((1u128 << host) - 1) == 0
}

/// Whether `a` and `b` agree in their first `bits` bits (false across families).
pub(super) fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            32,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let bits = u32::from(bits).min(width);
    bits == 0 || (a ^ b) >> (128 - bits) == 0
}

/// The networks a set of rules needs in the tries, each with every rule that holds it, lowest
/// index first.
pub(super) fn networks(rules: &BTreeMap<u32, SignatureRule>) -> BTreeMap<(IpAddr, u8), Vec<u32>> {
    let mut networks: Vec<(IpAddr, u8)> = Vec::new();
    for rule in rules.values() {
        match rule.destination {
            Some(network) => networks.push(network),
            None => {
                networks.push((IpAddr::from([0u8; 4]), 0));
                networks.push((IpAddr::from([0u8; 16]), 0));
            }
        }
    }
    networks
        .into_iter()
        .map(|(addr, len)| {
            let set = rules
                .iter()
                .filter(|(_, rule)| rule.holds(addr, len))
                .map(|(index, _)| *index)
                .collect();
            ((addr, len), set)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(destination: Option<(&str, u8)>) -> SignatureRule {
        SignatureRule {
            destination: destination.map(|(addr, len)| (addr.parse().unwrap(), len)),
            protocol: None,
            src_port: None,
            dst_port: None,
            syn: false,
            fragment: false,
            length: None,
            action: RuleAction::Drop,
        }
    }

    /// Each network in the tries carries the rules of every network that holds it, so that
    /// the longest match is enough; a rule for any destination is in both families' /0.
    #[test]
    fn a_network_carries_the_rules_of_the_networks_that_hold_it() {
        let rules = BTreeMap::from([
            (0, rule(Some(("192.0.2.5", 32)))),
            (1, rule(Some(("192.0.2.0", 24)))),
            (2, rule(None)),
            (3, rule(Some(("198.51.100.0", 24)))),
            (5, rule(Some(("2001:db8::", 32)))),
        ]);
        let written: Vec<String> = networks(&rules)
            .into_iter()
            .map(|((addr, len), set)| format!("{addr}/{len}={set:?}"))
            .collect();
        assert_eq!(
            written,
            [
                "0.0.0.0/0=[2]",
                "192.0.2.0/24=[1, 2]",
                "192.0.2.5/32=[0, 1, 2]",
                "198.51.100.0/24=[2, 3]",
                "::/0=[2]",
                "2001:db8::/32=[2, 5]",
            ]
        );
    }

    /// A window holds 64 frames of the rate (more above 64,000 pkt/s, whose windows are a
    /// millisecond; fewer below 64 pkt/s, whose windows are a second), and the rate it gives
    /// is within 1% of the one asked.
    #[test]
    fn rate_windows_hold_64_frames_within_a_millisecond_and_a_second() {
        for (pps, window_ns, allowance) in [
            (1, 1_000_000_000, 1),
            (10, 1_000_000_000, 10),
            (64, 1_000_000_000, 64),
            (1_000, 64_000_000, 64),
            (12_345, 5_184_285, 64),
            (64_000, 1_000_000, 64),
            (10_000_000, 1_000_000, 10_000),
        ] {
            assert_eq!(rate_window(pps), (window_ns, allowance), "{pps}");
            let rate = f64::from(allowance) * 1e9 / f64::from(window_ns);
            assert!((rate / f64::from(pps) - 1.0).abs() < 0.01, "{pps}: {rate}");
        }
    }
}
