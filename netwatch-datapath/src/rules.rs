//! Signature rules in the kernel: what a frame must be (destination network, protocol, ports,
//! SYN, fragment, length) to be counted, dropped or rate-limited, and each rule's exact
//! counters. The rules are kept here as set, by index; the destination tries are rebuilt from
//! them at each change so that the longest match of a frame's destination gives every rule
//! that may apply ([`netwatch_common::RuleSet`]), at most
//! [`RULES_PER_DESTINATION`] of them. Which rules exist, for how long and why is
//! decided elsewhere.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use aya::maps::{
    Array, MapData, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use netwatch_common::{
    MAX_RULE_EXEMPTIONS, MAX_RULES, RULE_ACTION_COUNT, RULE_ACTION_DROP, RULE_ACTION_RATE_LIMIT,
    RULE_BUCKETS_MAP, RULE_COUNTS_MAP, RULE_EXEMPT_V4_MAP, RULE_EXEMPT_V6_MAP, RULE_MATCH_DST_PORT,
    RULE_MATCH_FRAGMENT, RULE_MATCH_IN_USE, RULE_MATCH_LENGTH, RULE_MATCH_PROTOCOL,
    RULE_MATCH_SRC_PORT, RULE_MATCH_SYN, RULE_NONE, RULE_PROTOCOL_ICMP, RULE_PROTOCOL_OTHER,
    RULE_PROTOCOL_TCP, RULE_PROTOCOL_UDP, RULES_MAP, RULES_PER_DESTINATION, RULES_V4_MAP,
    RULES_V6_MAP, Rule, RuleBucket, RuleCounts, RuleSet,
};

use super::{error::DatapathError, handle::Datapath, overflow::Traffic};

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
    rules: BTreeMap<u32, SignatureRule>,
    written: BTreeMap<(IpAddr, u8), Vec<u32>>,
    exempt: Vec<(IpAddr, u8)>,
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
    fn kernel(&self) -> Rule {
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
fn is_network(addr: IpAddr, len: u8) -> bool {
    let (bits, width) = match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let host = width - u32::from(len).min(width);
    host == 0 || bits & ((1u128 << host) - 1) == 0
}

/// Whether `a` and `b` agree in their first `bits` bits (false across families).
fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
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
fn networks(rules: &BTreeMap<u32, SignatureRule>) -> BTreeMap<(IpAddr, u8), Vec<u32>> {
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

impl Datapath {
    /// Sets rule `index` (below [`MAX_RULES`]; a lower index is checked first): its counters
    /// start from zero, then frames that match it meet its action. Replaces a rule of the
    /// same index.
    pub fn set_rule(&mut self, index: u32, rule: SignatureRule) -> Result<(), DatapathError> {
        if index as usize >= MAX_RULES {
            return Err(DatapathError::RuleIndex {
                index,
                most: MAX_RULES,
            });
        }
        if let Some((addr, len)) = rule.destination {
            let width = if addr.is_ipv4() { 32 } else { 128 };
            if len > width || !is_network(addr, len) {
                return Err(DatapathError::RuleDestination { addr, len });
            }
        }
        // The rule and its zeroed counters first: no frame finds it in the tries before.
        self.clear_rule(index)?;
        let zero = PerCpuValues::try_from(vec![RuleCounts::default(); self.cpus])
            .map_err(DatapathError::Cpus)?;
        self.typed_map_mut::<PerCpuArray<&mut MapData, RuleCounts>>(
            RULE_COUNTS_MAP,
            "rule counters map",
        )?
        .set(index, zero, 0)?;
        self.typed_map_mut::<Array<&mut MapData, RuleBucket>>(
            RULE_BUCKETS_MAP,
            "rule buckets map",
        )?
        .set(index, RuleBucket::default(), 0)?;
        self.typed_map_mut::<Array<&mut MapData, Rule>>(RULES_MAP, "rules map")?
            .set(index, rule.kernel(), 0)?;
        self.rules.rules.insert(index, rule);
        if let Some(((addr, len), _)) = networks(&self.rules.rules)
            .into_iter()
            .find(|(_, set)| set.len() > RULES_PER_DESTINATION)
        {
            self.rules.rules.remove(&index);
            self.typed_map_mut::<Array<&mut MapData, Rule>>(RULES_MAP, "rules map")?
                .set(index, Rule::default(), 0)?;
            return Err(DatapathError::RulesPerDestination {
                addr,
                len,
                most: RULES_PER_DESTINATION,
            });
        }
        self.write_rule_tries()
    }

    /// Removes rule `index`; nothing if there is none.
    pub fn clear_rule(&mut self, index: u32) -> Result<(), DatapathError> {
        if self.rules.rules.remove(&index).is_none() {
            return Ok(());
        }
        // Out of the tries first, then the rule: a frame that still found it in a set
        // finds a rule that never matches.
        self.write_rule_tries()?;
        self.typed_map_mut::<Array<&mut MapData, Rule>>(RULES_MAP, "rules map")?
            .set(index, Rule::default(), 0)?;
        Ok(())
    }

    /// Sets the sources no rule applies to (a victim's own NTP or DNS servers, say): a frame
    /// from one of them that a rule matches passes, and no rule counts it. At most
    /// [`MAX_RULE_EXEMPTIONS`] networks of each family; replaces the list.
    pub fn set_rule_exemptions(&mut self, networks: &[(IpAddr, u8)]) -> Result<(), DatapathError> {
        for family in [true, false] {
            let count = networks
                .iter()
                .filter(|(addr, _)| addr.is_ipv4() == family)
                .count();
            if count > MAX_RULE_EXEMPTIONS as usize {
                return Err(DatapathError::RuleExemptions {
                    given: count,
                    most: MAX_RULE_EXEMPTIONS,
                });
            }
        }
        for &(addr, len) in networks {
            if !is_network(addr, len) || len > if addr.is_ipv4() { 32 } else { 128 } {
                return Err(DatapathError::RuleDestination { addr, len });
            }
        }
        let gone: Vec<(IpAddr, u8)> = self
            .rules
            .exempt
            .iter()
            .filter(|network| !networks.contains(network))
            .copied()
            .collect();
        for (addr, len) in gone {
            let removed = match addr {
                IpAddr::V4(v4) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 4], u8>>(
                        RULE_EXEMPT_V4_MAP,
                        "IPv4 rule exemption map",
                    )?
                    .remove(&Key::new(u32::from(len), v4.octets())),
                IpAddr::V6(v6) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 16], u8>>(
                        RULE_EXEMPT_V6_MAP,
                        "IPv6 rule exemption map",
                    )?
                    .remove(&Key::new(u32::from(len), v6.octets())),
            };
            match removed {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }
        // The new ones after the gone ones: the tries never hold more than the larger list.
        for &(addr, len) in networks {
            match addr {
                IpAddr::V4(v4) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 4], u8>>(
                        RULE_EXEMPT_V4_MAP,
                        "IPv4 rule exemption map",
                    )?
                    .insert(&Key::new(u32::from(len), v4.octets()), 1, 0)?,
                IpAddr::V6(v6) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 16], u8>>(
                        RULE_EXEMPT_V6_MAP,
                        "IPv6 rule exemption map",
                    )?
                    .insert(&Key::new(u32::from(len), v6.octets()), 1, 0)?,
            }
        }
        self.rules.exempt = networks.to_vec();
        Ok(())
    }

    /// The rules set, by index.
    pub fn rules(&self) -> impl Iterator<Item = (u32, &SignatureRule)> {
        self.rules.rules.iter().map(|(index, rule)| (*index, rule))
    }

    /// What rule `index` matched and dropped since it was set, all CPUs together.
    pub fn rule_counts(&self, index: u32) -> Result<RuleTraffic, DatapathError> {
        let map = self
            .ebpf
            .map(RULE_COUNTS_MAP)
            .ok_or(DatapathError::Missing("rule counters map"))?;
        let counts: PerCpuArray<&MapData, RuleCounts> = PerCpuArray::try_from(map)?;
        let values = counts.get(&index, 0)?;
        Ok(values.iter().fold(RuleTraffic::default(), |sum, cpu| {
            let add = |a: Traffic, b: netwatch_common::Counter| Traffic {
                packets: a.packets + b.packets,
                bytes: a.bytes + b.bytes,
            };
            RuleTraffic {
                matched: add(sum.matched, cpu.matched),
                dropped: add(sum.dropped, cpu.dropped),
            }
        }))
    }

    /// Writes the tries for the rules set (new and changed networks, then the gone ones),
    /// and how many rules exist into the settings: 0 skips the check (one comparison per
    /// frame).
    fn write_rule_tries(&mut self) -> Result<(), DatapathError> {
        let wanted = networks(&self.rules.rules);
        for (&(addr, len), rules) in &wanted {
            if self.rules.written.get(&(addr, len)) == Some(rules) {
                continue;
            }
            let mut set = RuleSet {
                rules: [RULE_NONE; RULES_PER_DESTINATION],
            };
            for (place, index) in set.rules.iter_mut().zip(rules) {
                *place = *index as u8;
            }
            match addr {
                IpAddr::V4(v4) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 4], RuleSet>>(
                        RULES_V4_MAP,
                        "IPv4 rule map",
                    )?
                    .insert(&Key::new(u32::from(len), v4.octets()), set, 0)?,
                IpAddr::V6(v6) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 16], RuleSet>>(
                        RULES_V6_MAP,
                        "IPv6 rule map",
                    )?
                    .insert(&Key::new(u32::from(len), v6.octets()), set, 0)?,
            }
        }
        let gone: Vec<(IpAddr, u8)> = self
            .rules
            .written
            .keys()
            .filter(|network| !wanted.contains_key(network))
            .copied()
            .collect();
        for (addr, len) in gone {
            let removed = match addr {
                IpAddr::V4(v4) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 4], RuleSet>>(
                        RULES_V4_MAP,
                        "IPv4 rule map",
                    )?
                    .remove(&Key::new(u32::from(len), v4.octets())),
                IpAddr::V6(v6) => self
                    .typed_map_mut::<LpmTrie<&mut MapData, [u8; 16], RuleSet>>(
                        RULES_V6_MAP,
                        "IPv6 rule map",
                    )?
                    .remove(&Key::new(u32::from(len), v6.octets())),
            };
            match removed {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.rules.written = wanted;
        let count = self.rules.rules.len() as u32;
        if self.settings.rules != count {
            self.settings.rules = count;
            self.write_settings()?;
        }
        Ok(())
    }
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
