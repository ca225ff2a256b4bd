//! The state every part of the program shares: each CPU's [`CpuState`] (global counters,
//! its source cache, its region of the source values) and the run-time [`Settings`] that
//! userspace writes into global data. Each family's own maps live in its module.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netwatch_common::{BAN_MODE_NONE, CpuState, Settings};

/// Each CPU's counters and source cache, at index 0.
#[map]
pub(crate) static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// Run-time settings, written by userspace. Global data in a section of its own, which the
/// loader makes a one-entry array map: the program reads it at a fixed address, without the
/// lookup (a few nanoseconds per packet) an entry of a map of its own would cost.
#[unsafe(link_section = ".data.settings")]
#[unsafe(no_mangle)]
pub(crate) static mut SETTINGS: Settings = Settings {
    epoch: 0,
    sample_rate: 0,
    sample_burst: 0,
    sample_all_tcp: 0,
    attack_types: 1,
    sample_snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
    free_generation: 0,
    overflow_window: 0,
    local_networks: 0,
    early_packets: 0,
    early_slot_ns: 0,
    early_batch: 0,
    local_v4: 0,
    filter_half: 0,
    ban_mode: BAN_MODE_NONE,
    destination_sample: 0,
    rules: 0,
};

/// The current [`SETTINGS`].
#[inline(always)]
pub(crate) fn settings() -> Settings {
    // SAFETY: a global the program never writes; userspace rewrites it as a whole at run
    // time, and a read that straddles a rewrite sees each field old or new, either of which
    // is a valid setting.
    unsafe { core::ptr::read_volatile(&raw const SETTINGS) }
}
