//! Adding a frame to its source's counters: the per-CPU layout (plain adds) and the shared
//! one (atomic adds), and the counters every family bumps.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use netwatch_common::{Counter, SAMPLE_PORT_WORDS, SourceKey, SourceStats, SourceValue};

use crate::{
    frame::Contribution,
    parse::Class,
    sketches::{mark, mark_shared},
    slots::{Lookup, SLOT_CAPACITY, SOURCE_VALUES, cache_line, filter_has, owns, slot_of},
};

/// UDP source ports of amplification services (DNS, NTP, memcached ...): a datagram from one
/// of them counts as [`netwatch_common::SourceStats::reflected_packets`]. Global data, as [`SETTINGS`](crate::maps::SETTINGS); bit
/// `port % 64` of word `port / 64`.
#[unsafe(link_section = ".data.reflection")]
#[unsafe(no_mangle)]
pub(crate) static mut REFLECTION_PORTS: [u64; SAMPLE_PORT_WORDS as usize] =
    [0; SAMPLE_PORT_WORDS as usize];

#[inline(always)]
pub(crate) fn add_counter(counter: &mut Counter, len: u64) {
    counter.packets += 1;
    counter.bytes += len;
}

/// Sets the bit the top bits of `hash` name in `bitmap`.
#[inline(always)]
pub(crate) fn set_hashed_bit<const WORDS: usize>(bitmap: &mut [u64; WORDS], hash: u64) {
    let bits = (WORDS * 64).trailing_zeros();
    let bit = (hash >> (64 - bits)) as usize;
    if let Some(word) = bitmap.get_mut((bit >> 6) & (WORDS - 1)) {
        *word |= 1 << (bit & 63);
    }
}

/// Whether UDP from source port `port` is an amplification service's answer.
#[inline(always)]
pub(crate) fn reflection_port(port: u16) -> bool {
    let index = usize::from(port >> 6) & (SAMPLE_PORT_WORDS as usize - 1);
    // SAFETY: an element of the global, in bounds by the mask; userspace may rewrite it at any
    // time, hence the volatile read of one whole word.
    let word =
        unsafe { core::ptr::read_volatile((&raw const REFLECTION_PORTS).cast::<u64>().add(index)) };
    word & (1 << (port & 63)) != 0
}

/// How sources' values are laid out: a region per CPU, or one shared region.
pub(crate) trait SourceTable {
    /// The first element of the region of [`SOURCE_VALUES`] this program run writes, given
    /// this CPU's [`CpuState::region`].
    fn region(cpu_region: u32) -> u32;
    /// Adds the frame to a value of this run's region.
    ///
    /// # Safety
    /// `value` points into [`SOURCE_VALUES`], in [`SourceTable::region`].
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32);

    /// Adds the frame to its source, taking a free slot for a source not seen before; false
    /// when the source has no slot and none is free. `cache` is this CPU's source cache: a
    /// hit costs two array lookups, which the verifier inlines, instead of a hash-map lookup.
    /// `cpu_region` is this CPU's [`CpuState::region`].
    #[inline(always)]
    fn count(
        key: &SourceKey,
        cpu_region: u32,
        lookup: &mut Lookup<'_>,
        contribution: &Contribution,
        epoch: u32,
    ) -> bool {
        let region = Self::region(cpu_region);
        let Lookup {
            cache,
            free_generation,
            free_empty_at,
            filter_half,
        } = lookup;
        // A flood of new addresses once the slots are gone: most frames stop here.
        if **free_empty_at == free_generation.wrapping_add(1) && !filter_has(key, *filter_half) {
            return false;
        }
        let line = &mut cache[cache_line(key)];
        if owns(*line, key) {
            return Self::count_in(region, *line, contribution, epoch);
        }
        let Some(slot) = slot_of(key, *free_generation, free_empty_at) else {
            return false;
        };
        *line = slot;
        Self::count_in(region, slot, contribution, epoch)
    }

    /// Adds the frame to `slot` in the region that starts at element `region`.
    #[inline(always)]
    fn count_in(region: u32, slot: u32, contribution: &Contribution, epoch: u32) -> bool {
        // SAFETY: a read-only global set at load time.
        let capacity = unsafe { core::ptr::read_volatile(&SLOT_CAPACITY) };
        if slot >= capacity {
            return false;
        }
        match SOURCE_VALUES.get_ptr_mut(region + slot) {
            Some(value) => {
                // SAFETY: an element of the map, in this run's region.
                unsafe { Self::bump_found(value, contribution, epoch) };
                true
            }
            None => false,
        }
    }
}

/// A region per CPU: each CPU writes its own copy of a source's value, with plain adds.
pub(crate) struct PerCpu;

impl SourceTable for PerCpu {
    #[inline(always)]
    fn region(cpu_region: u32) -> u32 {
        // Userspace wrote CPU number × slots, which `bpf_get_smp_processor_id` and a multiply
        // would give, at the price of a helper call on every packet.
        cpu_region
    }

    #[inline(always)]
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
        // SAFETY: this CPU's region; XDP runs with preemption off, so no other program run
        // writes it meanwhile.
        bump(unsafe { &mut *value }, contribution, epoch);
    }
}

/// One region that every CPU updates with atomic instructions.
pub(crate) struct Shared;

impl SourceTable for Shared {
    #[inline(always)]
    fn region(_cpu_region: u32) -> u32 {
        0
    }

    #[inline(always)]
    unsafe fn bump_found(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
        // SAFETY: a live map value; every CPU updates it only through atomics.
        unsafe { bump_shared(value, contribution, epoch) };
    }
}

#[inline(always)]
pub(crate) fn bump(value: &mut SourceValue, contribution: &Contribution, epoch: u32) {
    bump_stats(&mut value.stats, contribution);
    if epoch != 0 {
        mark(&mut value.sketch, epoch, contribution);
    }
}

/// Adds a frame to counters kept by one CPU.
#[inline(always)]
pub(crate) fn bump_stats(stats: &mut SourceStats, contribution: &Contribution) {
    // Not `packets`: every frame is in exactly one protocol count, and userspace sums them.
    stats.bytes += contribution.len;
    match contribution.class {
        Class::TcpFirst | Class::TcpLater => stats.tcp_packets += 1,
        Class::Udp => stats.udp_packets += 1,
        Class::Icmp => stats.icmp_packets += 1,
        Class::Other => stats.other_packets += 1,
    }
    if contribution.syn {
        stats.tcp_syn_packets += 1;
    }
    if contribution.fragment {
        stats.fragment_packets += 1;
    }
    if contribution.reflected_port != 0 {
        stats.reflected_packets += 1;
        stats.reflected_port = u32::from(contribution.reflected_port);
    }
}

/// [`bump`] for a value other CPUs update at the same time: every counter with an atomic add.
///
/// # Safety
/// `value` points to a live, 8-aligned map value that is only ever updated atomically.
#[inline(always)]
pub(crate) unsafe fn bump_shared(value: *mut SourceValue, contribution: &Contribution, epoch: u32) {
    // SAFETY: the caller's guarantee; every field is an aligned u64 or u32.
    unsafe {
        let stats = &raw mut (*value).stats;
        // Not `packets`, as in `bump`: one atomic add fewer per frame.
        add(&raw mut (*stats).bytes, contribution.len);
        add(
            match contribution.class {
                Class::TcpFirst | Class::TcpLater => &raw mut (*stats).tcp_packets,
                Class::Udp => &raw mut (*stats).udp_packets,
                Class::Icmp => &raw mut (*stats).icmp_packets,
                Class::Other => &raw mut (*stats).other_packets,
            },
            1,
        );
        if contribution.syn {
            add(&raw mut (*stats).tcp_syn_packets, 1);
        }
        if contribution.fragment {
            add(&raw mut (*stats).fragment_packets, 1);
        }
        if contribution.reflected_port != 0 {
            add(&raw mut (*stats).reflected_packets, 1);
            // Any CPU's last port will do: a reflector answers from its service's port.
            (&raw mut (*stats).reflected_port)
                .write_volatile(u32::from(contribution.reflected_port));
        }
        if epoch != 0 {
            mark_shared(&raw mut (*value).sketch, epoch, contribution);
        }
    }
}

/// An atomic add whose result is not used (BPF `lock xadd`).
///
/// # Safety
/// `counter` points to a live, aligned u64.
#[inline(always)]
pub(crate) unsafe fn add(counter: *mut u64, n: u64) {
    // SAFETY: the caller's guarantee. The old value is not used: BPF's plain atomic add.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}
