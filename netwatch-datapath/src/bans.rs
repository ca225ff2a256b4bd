//! The ban list in the kernel: two longest-prefix-match tries (IPv4, IPv6) of banned networks
//! to a ban's index, and per-CPU counters of what each ban matched. Which networks are banned,
//! for how long and why is decided elsewhere; this module only writes the entries, reads the
//! counters and sets what a match meets ([`Settings::ban_mode`]).
//!
//! [`Settings::ban_mode`]: netwatch_common::Settings::ban_mode

use std::net::IpAddr;

use aya::maps::{
    MapData, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use netwatch_common::{
    BAN_COUNTS_MAP, BAN_MODE_COUNT, BAN_MODE_DROP, BAN_MODE_NONE, BANS_V4_MAP, BANS_V6_MAP, Counter,
};

use super::{
    error::{DatapathError, not_found},
    handle::Datapath,
};

/// What a frame from a banned network meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanAction {
    /// Counted for its ban and passed: a dry run.
    Count,
    /// Counted for its ban and dropped.
    Drop,
}

/// Counters the kernel holds for `max_bans` bans: twice as many, so that the counter of a
/// ban that just ended can cool down for a whole interval (a frame that found the old entry
/// may still count) while a new ban takes another.
pub fn ban_counters(max_bans: u32) -> u32 {
    max_bans.saturating_mul(2)
}

impl Datapath {
    /// Room for bans, as loaded ([`super::LoadOptions::max_bans`]).
    pub fn max_bans(&self) -> u32 {
        self.max_bans
    }

    /// Bans the network `addr/len` under counter `index` (below [`ban_counters`] of
    /// [`Datapath::max_bans`]): its counters start from zero, then frames from the network
    /// match it. Replaces the index of a ban of the same network.
    pub fn set_ban(&mut self, index: u32, addr: IpAddr, len: u8) -> Result<(), DatapathError> {
        if index >= ban_counters(self.max_bans) {
            return Err(DatapathError::BanIndex {
                index,
                max_bans: self.max_bans,
            });
        }
        // Zero first: a frame that matches the entry finds counters of this ban alone.
        let zero = PerCpuValues::try_from(vec![Counter::default(); self.cpus])
            .map_err(DatapathError::Cpus)?;
        self.ban_counts_mut()?.set(index, zero, 0)?;
        match addr {
            IpAddr::V4(v4) => {
                let mut trie = self.trie_v4()?;
                trie.insert(&Key::new(u32::from(len.min(32)), v4.octets()), index, 0)?;
            }
            IpAddr::V6(v6) => {
                let mut trie = self.trie_v6()?;
                trie.insert(&Key::new(u32::from(len.min(128)), v6.octets()), index, 0)?;
            }
        }
        Ok(())
    }

    /// Lifts the ban of the network `addr/len`; nothing if there is none.
    pub fn clear_ban(&mut self, addr: IpAddr, len: u8) -> Result<(), DatapathError> {
        let removed = match addr {
            IpAddr::V4(v4) => self
                .trie_v4()?
                .remove(&Key::new(u32::from(len.min(32)), v4.octets())),
            IpAddr::V6(v6) => self
                .trie_v6()?
                .remove(&Key::new(u32::from(len.min(128)), v6.octets())),
        };
        match removed {
            Ok(()) => Ok(()),
            Err(err) if not_found(&err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The frames ban `index` matched so far, all CPUs together.
    pub fn ban_counts(&self, index: u32) -> Result<Counter, DatapathError> {
        let map = self
            .ebpf
            .map(BAN_COUNTS_MAP)
            .ok_or(DatapathError::Missing("ban counters map"))?;
        let counts: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        let values = counts.get(&index, 0)?;
        Ok(values.iter().fold(Counter::default(), |sum, cpu| Counter {
            packets: sum.packets + cpu.packets,
            bytes: sum.bytes + cpu.bytes,
        }))
    }

    /// What frames from banned networks meet; `None` skips the tries altogether (one
    /// comparison per frame), for when no ban exists or mitigation is off.
    pub fn set_ban_action(&mut self, action: Option<BanAction>) -> Result<(), DatapathError> {
        let mode = match action {
            None => BAN_MODE_NONE,
            Some(BanAction::Count) => BAN_MODE_COUNT,
            Some(BanAction::Drop) => BAN_MODE_DROP,
        };
        if self.settings.ban_mode == mode {
            return Ok(());
        }
        self.settings.ban_mode = mode;
        self.write_settings()
    }

    fn ban_counts_mut(&mut self) -> Result<PerCpuArray<&mut MapData, Counter>, DatapathError> {
        self.typed_map_mut(BAN_COUNTS_MAP, "ban counters map")
    }

    fn trie_v4(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 4], u32>, DatapathError> {
        self.typed_map_mut(BANS_V4_MAP, "IPv4 ban map")
    }

    fn trie_v6(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 16], u32>, DatapathError> {
        self.typed_map_mut(BANS_V6_MAP, "IPv6 ban map")
    }

    /// The map `name` as `M`; `what` names it in the error when it is missing.
    pub(super) fn typed_map_mut<'a, M>(
        &'a mut self,
        name: &str,
        what: &'static str,
    ) -> Result<M, DatapathError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing(what))?;
        Ok(M::try_from(map)?)
    }
}
