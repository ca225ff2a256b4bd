//! Bans (opt-in mitigation): the tries of banned networks and each ban's counters, looked
//! up only while a ban exists.

use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, PerCpuArray, lpm_trie::Key},
};
use netwatch_common::{Counter, FAMILY_IPV4, SourceKey};

use crate::counters::add_counter;

/// Banned IPv4 networks: the address (network byte order) to the ban's index in
/// [`BAN_COUNTS`]. Written by userspace only; looked at only while [`Settings::ban_mode`] is
/// not [`BAN_MODE_NONE`]. Userspace sets the capacity at load time (`mitigate.max_bans`).
#[map]
pub(crate) static BANS_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(1, 0);

/// Banned IPv6 networks, as [`BANS_V4`].
#[map]
pub(crate) static BANS_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(1, 0);

/// The frames each ban matched, per CPU, by the ban's index: exact, as every other counter.
#[map]
pub(crate) static BAN_COUNTS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(1, 0);

/// A trie key placed so that its address starts 8-aligned on the stack: LLVM merges the
/// address's bytes into 8-byte stores, which the verifier takes only at aligned offsets, and
/// the key's 4-byte prefix length comes first.
#[repr(C, align(8))]
pub(crate) struct AlignedKey<K> {
    pub(crate) _pad: u32,
    pub(crate) key: Key<K>,
}

/// Counts a frame from `key` for the ban whose network holds it, if one does; true then.
/// A function of its own: the verifier walks it once per state it is called in rather than
/// as part of every path through the frame's parse.
#[inline(never)]
pub(crate) fn count_ban(key: &SourceKey, len: u64) -> bool {
    let index = if key.family == FAMILY_IPV4 {
        let [a, b, c, d, ..] = key.addr;
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(32, [a, b, c, d]),
        };
        BANS_V4.get(&lookup.key)
    } else {
        let lookup = AlignedKey {
            _pad: 0,
            key: Key::new(128, key.addr),
        };
        BANS_V6.get(&lookup.key)
    };
    let Some(&index) = index else {
        return false;
    };
    if let Some(counter) = BAN_COUNTS.get_ptr_mut(index) {
        // SAFETY: this CPU's counter of a per-CPU array.
        add_counter(unsafe { &mut *counter }, len);
    }
    true
}
