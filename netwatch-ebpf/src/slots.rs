//! Sources' slots: the address map, the slots' keys and values, the free-slot queue, the
//! filter of addresses with a slot, and finding (or taking) a source's slot.

use core::intrinsics::{AtomicOrdering, atomic_or};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, Queue},
};
use netwatch_common::{
    DEFAULT_MAX_SOURCES, QueueJob, SOURCE_CACHE_ENTRIES, SourceKey, SourceValue, filter_probe,
};

/// Source address -> its slot in [`SOURCE_VALUES`] and [`SLOT_KEYS`]. A plain hash map: an
/// entry leaves only when userspace reclaims the slot of a source gone idle, never behind its
/// back, so that every slot in use has exactly one key. Packets only read it, except the first
/// packet of a source, which inserts. Userspace sets the capacity at load time
/// (`--max-sources`).
#[map]
pub(crate) static SOURCE_SLOTS: HashMap<SourceKey, u32> =
    HashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

/// The value of each slot, in regions of [`SLOT_CAPACITY`] slots: for [`netwatch`](crate::netwatch) one region
/// per possible CPU (CPU `c` writes slot `s` at `c * SLOT_CAPACITY + s`, with plain adds), for
/// [`netwatch_shared`](crate::netwatch_shared) a single region updated with atomic adds. Memory-mappable: userspace
/// reads every counter in place, without the kernel walking a hash table, and clears the
/// slots it reclaims.
#[map]
pub(crate) static SOURCE_VALUES: Array<SourceValue> =
    Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// The source address of each slot, written once a packet that took the slot has put the
/// address in [`SOURCE_SLOTS`]; zero while the slot is free. Memory-mappable.
#[map]
pub(crate) static SLOT_KEYS: Array<SourceKey> =
    Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// The filter of addresses with a slot: three bits of one word per address
/// ([`filter_probe`]), in two halves of `1 << FILTER_WORD_BITS` words. The program sets an
/// address's bits in both before it inserts the address, and again once the slot's key is
/// written, so a clear bit means no slot; bits all set may be others'. While the free-slot
/// queue is known empty, a frame with a clear bit is overflow at once:
/// no look into the source cache, whose check reads a slot's key, nor into the address map.
/// Userspace rebuilds the half not in use from the slots' keys after a reclaim (addresses
/// taken back leave their bits behind) and switches to it. Memory-mappable.
#[map]
pub(crate) static SLOT_FILTER: Array<u64> = Array::with_max_entries(
    2 << netwatch_common::filter_word_bits(DEFAULT_MAX_SOURCES),
    BPF_F_MMAPABLE,
);

/// Slots not in use: every slot at load time, then the slots userspace takes back (both
/// queued by [`queue_free_slots`](crate::queue_free_slots)).
#[map]
pub(crate) static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(DEFAULT_MAX_SOURCES, 0);

/// What [`queue_free_slots`](crate::queue_free_slots) does, written by userspace before it runs the program.
#[map]
pub(crate) static QUEUE_JOB: Array<QueueJob> = Array::with_max_entries(1, 0);

/// Slots taken back, staged by userspace for [`queue_free_slots`](crate::queue_free_slots); u64 because userspace
/// writes them through memory, where array elements are 8 bytes apart. Memory-mappable.
#[map]
pub(crate) static STAGED_SLOTS: Array<u64> =
    Array::with_max_entries(DEFAULT_MAX_SOURCES, BPF_F_MMAPABLE);

/// Slots per region of [`SOURCE_VALUES`]: the capacity of [`SOURCE_SLOTS`]. Set by userspace at
/// load time; read-only, so the verifier knows it.
#[unsafe(no_mangle)]
pub(crate) static SLOT_CAPACITY: u32 = DEFAULT_MAX_SOURCES;

/// The seed of the filter's hash, drawn by userspace at load time; read-only.
#[unsafe(no_mangle)]
pub(crate) static FILTER_SEED: u64 = 0;

/// The base-2 logarithm of the words of each half of [`SLOT_FILTER`]: set by userspace at load
/// time from the slots ([`netwatch_common::filter_word_bits`]); read-only.
#[unsafe(no_mangle)]
pub(crate) static FILTER_WORD_BITS: u32 = netwatch_common::filter_word_bits(DEFAULT_MAX_SOURCES);

/// Where a CPU looks a source up: its cache of recent sources' slots, and what it knows of
/// the free-slot queue.
pub(crate) struct Lookup<'a> {
    pub(crate) cache: &'a mut [u32; SOURCE_CACHE_ENTRIES as usize],
    /// [`Settings::free_generation`] as this run read it.
    pub(crate) free_generation: u32,
    /// This CPU's [`CpuState::free_empty_at`].
    pub(crate) free_empty_at: &'a mut u32,
    /// [`Settings::filter_half`] as this run read it.
    pub(crate) filter_half: u32,
}

/// The slot of `key`: from the address map, or a free one taken for a source not seen before;
/// `None` when it has none and none is free. A CPU that found the free queue empty does not
/// try it again until userspace has queued slots (the generation changed): during a flood of
/// spoofed sources with every slot taken, such a frame no longer takes the queue's lock.
#[inline(always)]
pub(crate) fn slot_of(
    key: &SourceKey,
    free_generation: u32,
    free_empty_at: &mut u32,
) -> Option<u32> {
    if let Some(slot) = SOURCE_SLOTS.get_ptr(key) {
        // SAFETY: a live map value, a u32 nobody writes after insertion.
        return Some(unsafe { *slot });
    }
    // The generation read before the pop: slots queued after it bump it, and the next frame
    // tries again.
    let marker = free_generation.wrapping_add(1);
    if *free_empty_at == marker {
        return None;
    }
    let slot = match FREE_SLOTS.pop() {
        Ok(Some(slot)) => slot,
        _ => {
            *free_empty_at = marker;
            return None;
        }
    };
    let owner = SLOT_KEYS.get_ptr_mut(slot)?;
    // Before the insert: a frame of this address on another CPU that finds it in the map
    // also finds its bits.
    filter_add(key);
    if SOURCE_SLOTS
        .insert(key, slot, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        // The key only once the slot is the source's: a cache line that names this slot
        // trusts it for whatever source its key is (see `owns`). Another CPU that finds the
        // address in the map meanwhile counts in the slot before its key is in; userspace
        // leaves such a slot for its next reading.
        // SAFETY: an element of an array map; a slot just taken, which no one else writes.
        unsafe { *owner = *key };
        // Again after the key: a rebuild of the filter that cleared the bits before reading
        // the keys finds the key, one that cleared them after finds the bits.
        filter_add(key);
        return Some(slot);
    }
    // Another CPU gave the same source a slot between the lookup and the insert: that one
    // counts, and this one, never counted in and its key never written, is free again.
    let _ = FREE_SLOTS.push(slot, 0);
    // SAFETY: as above.
    SOURCE_SLOTS.get_ptr(key).map(|slot| unsafe { *slot })
}

/// Where `key`'s bits are in a half of [`SLOT_FILTER`]: the word's index and the bits' mask.
#[inline(always)]
pub(crate) fn filter_place(key: &SourceKey) -> (u32, u32, u64) {
    // SAFETY: read-only globals set at load time.
    let (seed, word_bits) = unsafe {
        (
            core::ptr::read_volatile(&FILTER_SEED),
            core::ptr::read_volatile(&FILTER_WORD_BITS),
        )
    };
    let (word, mask) = filter_probe(key.words(), seed, word_bits);
    (word, word_bits, mask)
}

/// Whether `key`'s bits are all set in half `half` of [`SLOT_FILTER`].
#[inline(always)]
pub(crate) fn filter_has(key: &SourceKey, half: u32) -> bool {
    let (word, word_bits, mask) = filter_place(key);
    match SLOT_FILTER.get(((half & 1) << word_bits) + word) {
        Some(value) => {
            // SAFETY: an element of an array map; other CPUs may set bits in it meanwhile,
            // and a volatile read sees the word before or after.
            let value = unsafe { core::ptr::read_volatile(value) };
            value & mask == mask
        }
        None => true,
    }
}

/// Sets `key`'s bits in both halves of [`SLOT_FILTER`], atomically (other CPUs set bits in
/// the same words). A function of its own, off the paths of known sources and of those with no
/// slot: inlined twice into the insert, its hash took registers from the whole program.
#[inline(never)]
pub(crate) fn filter_add(key: &SourceKey) {
    let (word, word_bits, mask) = filter_place(key);
    for half in 0..2 {
        if let Some(value) = SLOT_FILTER.get_ptr_mut((half << word_bits) + word) {
            // SAFETY: an element of an array map, only ever updated with atomic ORs by the
            // program (userspace clears a half only while lookups read the other). Always
            // the atomic OR, never a read first: a locked instruction (x86-64) orders the
            // key's store before it, against userspace's clearing and reading of the keys; a
            // read could see a bit about to be cleared and skip it.
            unsafe {
                atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(value, mask);
            }
        }
    }
}

/// The cache line of `key`: a multiplicative hash of its words. Addresses that collide only
/// take turns in the line; a sender choosing colliding addresses slows itself to the
/// address-map lookup, nothing worse.
#[inline(always)]
pub(crate) fn cache_line(key: &SourceKey) -> usize {
    const BITS: u32 = SOURCE_CACHE_ENTRIES.trailing_zeros();
    let [a, b, c] = key.words();
    let mixed = (a ^ b.rotate_left(23) ^ c.rotate_left(47)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - BITS)) as usize & (SOURCE_CACHE_ENTRIES as usize - 1)
}

/// Whether two keys are equal, word by word (a derived comparison may become a `memcmp` call,
/// which BPF does not have).
#[inline(always)]
pub(crate) fn same(a: &SourceKey, b: &SourceKey) -> bool {
    let [a0, a1, a2] = a.words();
    let [b0, b1, b2] = b.words();
    a0 == b0 && a1 == b1 && a2 == b2
}

/// Whether `slot` belongs to `key`: a slot's key is written once a packet has taken the slot
/// and put the address in the address map, and stays until the slot is free again. Userspace
/// marks the key of a slot it takes back before deleting the address, and clears it before the
/// slot is free. So a cache line whose slot changed hands, or that was written for another
/// source, fails here, and the frame goes the address-map way.
#[inline(always)]
pub(crate) fn owns(slot: u32, key: &SourceKey) -> bool {
    match SLOT_KEYS.get(slot) {
        Some(owner) => same(owner, key),
        None => false,
    }
}
