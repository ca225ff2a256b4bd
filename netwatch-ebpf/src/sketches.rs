//! Per-source sketches of the hosts and ports a source reaches (scan detection): bits set
//! in bitmaps by a hash of the destination.

use core::intrinsics::{AtomicOrdering, atomic_or};

use netwatch_common::{HOST_BITMAP_BITS, PORT_BITMAP_BITS, SourceSketch};

use crate::frame::Contribution;

/// [`mark`] for a shared value: bits are set with atomic ORs, and only when not set already
/// (the common case, a read).
///
/// Two CPUs may both find the window stale and both clear it: a bit set by one between the
/// other's check and its clearing is lost. The window then starts a bit or two short at worst,
/// which linear counting shrugs off. (A compare-and-swap on the tag would close that gap but
/// needs BPF v3 atomics, kernel 5.12.)
///
/// # Safety
/// `sketch` points to the sketch of a live map value only ever updated atomically.
#[inline(always)]
pub(crate) unsafe fn mark_shared(
    sketch: *mut SourceSketch,
    epoch: u32,
    contribution: &Contribution,
) {
    const HOST_BITS: u32 = HOST_BITMAP_BITS.trailing_zeros();
    const PORT_BITS: u32 = PORT_BITMAP_BITS.trailing_zeros();
    let slot = (epoch & 1) as usize;
    // SAFETY: the caller's guarantee; `slot` is 0 or 1 and the bit indexes are masked to
    // their bitmaps' sizes.
    unsafe {
        let tag = (&raw mut (*sketch).epochs).cast::<u32>().add(slot);
        let ports = (&raw mut (*sketch).ports)
            .cast::<[u64; PORT_BITMAP_BITS / 64]>()
            .add(slot)
            .cast::<u64>();
        let hosts = (&raw mut (*sketch).hosts)
            .cast::<[u64; HOST_BITMAP_BITS / 64]>()
            .add(slot)
            .cast::<u64>();
        if tag.read_volatile() != epoch {
            tag.write_volatile(epoch);
            for word in 0..PORT_BITMAP_BITS / 64 {
                ports.add(word).write_volatile(0);
            }
            for word in 0..HOST_BITMAP_BITS / 64 {
                hosts.add(word).write_volatile(0);
            }
        }
        let bit = hash_bits(contribution.dst_fold, HOST_BITS) & (HOST_BITMAP_BITS - 1);
        set_bit(hosts.add(bit >> 6), bit);
        if let Some(port) = contribution.dst_port {
            let bit = hash_bits(u32::from(port), PORT_BITS) & (PORT_BITMAP_BITS - 1);
            set_bit(ports.add(bit >> 6), bit);
        }
    }
}

/// Sets bit `bit % 64` of `*word` with an atomic OR, unless it is set already.
///
/// # Safety
/// `word` points to a live, aligned u64 only ever updated atomically.
#[inline(always)]
pub(crate) unsafe fn set_bit(word: *mut u64, bit: usize) {
    let mask = 1u64 << (bit & 63);
    // SAFETY: the caller's guarantee. The old value of the OR is not used.
    unsafe {
        if word.read_volatile() & mask == 0 {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(word, mask);
        }
    }
}

/// The top `bits` bits of MurmurHash3's 32-bit finaliser. Linear counting needs bits that
/// look random even for sequential inputs (a scan's ports); a bare multiplicative hash spreads
/// those too evenly and the estimate comes out high.
#[inline(always)]
pub(crate) fn hash_bits(value: u32, bits: u32) -> usize {
    let mut h = value;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> (32 - bits)) as usize
}

/// Sets this frame's bits in the current window, opening the window if it is stale.
#[inline(always)]
pub(crate) fn mark(sketch: &mut SourceSketch, epoch: u32, contribution: &Contribution) {
    const HOST_BITS: u32 = HOST_BITMAP_BITS.trailing_zeros();
    const PORT_BITS: u32 = PORT_BITMAP_BITS.trailing_zeros();
    let slot = (epoch & 1) as usize;
    let (Some(tag), Some(ports), Some(hosts)) = (
        sketch.epochs.get_mut(slot),
        sketch.ports.get_mut(slot),
        sketch.hosts.get_mut(slot),
    ) else {
        return;
    };
    if *tag != epoch {
        *tag = epoch;
        *ports = [0; PORT_BITMAP_BITS / 64];
        *hosts = [0; HOST_BITMAP_BITS / 64];
    }
    let bit = hash_bits(contribution.dst_fold, HOST_BITS);
    if let Some(word) = hosts.get_mut(bit >> 6) {
        *word |= 1 << (bit & 63);
    }
    if let Some(port) = contribution.dst_port {
        let bit = hash_bits(u32::from(port), PORT_BITS);
        if let Some(word) = ports.get_mut(bit >> 6) {
            *word |= 1 << (bit & 63);
        }
    }
}
