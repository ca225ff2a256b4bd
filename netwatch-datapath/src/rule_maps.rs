//! The signature rules' maps in a loaded program: setting and clearing rules, the
//! destination tries rebuilt from the rules set ([`super::rules::networks`]), the exempt
//! sources and each rule's counters. What a rule is lives in [`super::rules`].

use std::net::IpAddr;

use aya::maps::{
    Array, MapData, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use netwatch_common::{
    MAX_RULE_EXEMPTIONS, MAX_RULES, RULE_BUCKETS_MAP, RULE_COUNTS_MAP, RULE_EXEMPT_V4_MAP,
    RULE_EXEMPT_V6_MAP, RULE_NONE, RULES_MAP, RULES_PER_DESTINATION, RULES_V4_MAP, RULES_V6_MAP,
    Rule, RuleBucket, RuleCounts, RuleSet,
};

use super::{
    error::{DatapathError, not_found},
    handle::Datapath,
    rules::{RuleTraffic, SignatureRule, is_network, networks},
};

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
                Ok(()) => {}
                Err(err) if not_found(&err) => {}
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
        let mut sum = RuleTraffic::default();
        for cpu in values.iter() {
            sum.add(cpu.matched, cpu.dropped);
        }
        Ok(sum)
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
                Ok(()) => {}
                Err(err) if not_found(&err) => {}
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
