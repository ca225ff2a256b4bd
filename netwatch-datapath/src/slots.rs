//! Where sources are counted: one slot per source in memory-mappable BPF arrays.
//!
//! The XDP program finds a source's slot in a hash map (address -> slot), or in a per-CPU
//! cache of recent sources in front of it, and adds to the slot's value in an array: on a
//! source's first frame it takes a slot from a queue of free slots, inserts the address into
//! the hash map and then writes it into the array of slot keys. Userspace maps both arrays
//! into its memory, so a harvest is a read of memory, with no syscall and no walk of a kernel
//! hash table: this is what makes a million sources readable well within an interval
//! (BENCHMARKS.md, "Scale").
//!
//! The kernel never evicts: slots come back only when userspace takes them back
//! ([`Slots::retire_idlest`], [`Slots::stage_release`]). When free slots run low, userspace
//! takes back the slots of the sources idle longest (unchanged since the previous reading at
//! least): it deletes their addresses from the hash map, so that their next frame takes a new
//! slot, waits out a grace period during which a program run that found the old slot just
//! before the delete may still add to it, reads those last counts, then clears the slots and
//! has the kernel queue them again (a BPF queue takes no batches from userspace, so a small
//! program run with BPF_PROG_TEST_RUN pushes the staged slots). A source that finds no free
//! slot is counted in the global overflow counters, never dropped in silence.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::{
        LazyLock,
        atomic::{AtomicU64, Ordering, fence},
    },
    time::{Duration, Instant},
};

use netwatch_common::{
    HOST_BITMAP_BITS, PORT_BITMAP_BITS, SourceKey, SourceStats, SourceValue, filter_probe,
    filter_word_bits,
};

use super::sums::add_source;

/// One source as read from its slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceReading {
    /// Its slot. A slot changes hands when its source is reclaimed; an address may take a new
    /// slot after its old one was reclaimed.
    pub slot: u32,
    /// The source.
    pub key: SourceKey,
    /// Its cumulative counters, summed over CPUs.
    pub stats: SourceStats,
    /// Its distinct destinations since the previous snapshot, if it sent anything since then
    /// and sketches are on.
    pub spread: Option<Spread>,
}

/// Distinct destinations of one source during one window, estimated by linear counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spread {
    /// Distinct destination ports (TCP and UDP).
    pub ports: u32,
    /// Distinct destination addresses.
    pub hosts: u32,
}

/// Linear counting (Whang, Vander-Zanden, Taylor 1990): `n = -m ln(zeros / m)`. With every
/// bit set the estimate saturates at `m ln m` (1,420 for 256 bits, 621 for 128): "this many or
/// more".
pub fn linear_count(words: &[u64]) -> u32 {
    let zeros: u32 = words.iter().map(|word| word.count_zeros()).sum();
    linear_estimate(words.len() * 64, zeros)
}

/// [`linear_count`] of a bitmap of `bits` bits with `zeros` of them clear.
fn linear_estimate(bits: usize, zeros: u32) -> u32 {
    let bits = bits as f64;
    if zeros == 0 {
        return (bits * bits.ln()).round() as u32;
    }
    (-bits * (f64::from(zeros) / bits).ln()).round() as u32
}

/// How long reclaimed slots wait between the delete of their address and their reuse. A
/// program run takes microseconds (XDP runs to completion); a run that looked the address up
/// before the delete is long over by then.
const GRACE: Duration = Duration::from_millis(5);

/// The most addresses one reading deletes, unless a thirty-second of the slots is more: the
/// deletes, and the clearing and queueing of the slots a reading later, cost time in
/// proportion, and a reclaim must take a bounded share of an interval. Reclaim starts with an
/// eighth of the slots still free, so a few readings in a row can bring it back to a quarter.
const RECLAIM_BATCH: usize = 1024;

/// A BPF array map (`BPF_F_MMAPABLE`) mapped into this process, shared with the kernel: the
/// program writes it while userspace reads, so every access is volatile.
pub(super) struct Mapped<T> {
    base: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; nothing in it is tied to a
// thread.
unsafe impl<T: Send> Send for Mapped<T> {}
// SAFETY: shared references only read, with volatile loads, memory the kernel writes at any
// time anyway; writes take `&mut self`.
unsafe impl<T: Sync> Sync for Mapped<T> {}

impl<T: Copy> Mapped<T> {
    /// Maps the `len` elements of the array map `fd`.
    pub(super) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // The kernel lays array elements out in 8-byte steps.
        assert!(
            size_of::<T>().is_multiple_of(8),
            "array values round up to 8 bytes"
        );
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("no page size"))?;
        let bytes = (len * size_of::<T>()).div_ceil(page) * page;
        // SAFETY: a new shared mapping of a BPF map's memory; the kernel checks the size
        // against the map.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { base, len, bytes })
    }

    pub(super) fn at(&self, index: usize) -> *mut T {
        assert!(index < self.len, "slot {index} outside the map");
        // SAFETY: in bounds, checked above.
        unsafe { self.base.as_ptr().add(index) }
    }

    pub(super) fn write(&mut self, index: usize, value: T) {
        // SAFETY: an element of the live mapping, of a plain-data type.
        unsafe { self.at(index).write_volatile(value) }
    }
}

impl Mapped<SourceKey> {
    /// The key of `index`, read as three words: a volatile read of the struct itself goes
    /// byte by byte.
    fn key(&self, index: usize) -> SourceKey {
        // SAFETY: an element of the live mapping; the key is 24 bytes, 8-aligned.
        let words = unsafe { self.at(index).cast::<[u64; 3]>().read_volatile() };
        // SAFETY: [u64; 3] and SourceKey have the same size, and any bits make a key.
        unsafe { std::mem::transmute::<[u64; 3], SourceKey>(words) }
    }
}

impl Mapped<SourceValue> {
    /// The counters of element `index`, with `packets` filled in: the program leaves it at
    /// zero, one add fewer per frame, because every frame is in exactly one of the protocol
    /// counts.
    fn stats(&self, index: usize) -> SourceStats {
        // SAFETY: a field of an element of the live mapping; any bit pattern is valid for
        // these plain-data types.
        let mut stats = unsafe { (&raw const (*self.at(index)).stats).read_volatile() };
        stats.packets =
            stats.tcp_packets + stats.udp_packets + stats.icmp_packets + stats.other_packets;
        stats
    }

    /// The epoch that sketch window `window` (0 or 1) of element `index` holds.
    fn epoch(&self, index: usize, window: usize) -> u32 {
        // SAFETY: as in `stats`; the array index is checked.
        unsafe { (&raw const (*self.at(index)).sketch.epochs[window]).read_volatile() }
    }

    /// The destination port and host bitmaps of sketch window `window` of element `index`.
    fn bitmaps(&self, index: usize, window: usize) -> Bitmaps {
        let value = self.at(index);
        // SAFETY: as in `epoch`.
        unsafe {
            (
                (&raw const (*value).sketch.ports[window]).read_volatile(),
                (&raw const (*value).sketch.hosts[window]).read_volatile(),
            )
        }
    }
}

type Bitmaps = ([u64; PORT_BITMAP_BITS / 64], [u64; HOST_BITMAP_BITS / 64]);

/// Linear-counting estimates by number of clear bits, for the port and the host bitmaps: two
/// table lookups per source instead of two logarithms, a million times per interval.
static ESTIMATES: LazyLock<(Vec<u32>, Vec<u32>)> = LazyLock::new(|| {
    let table = |bits: usize| {
        (0..=bits as u32)
            .map(|zeros| linear_estimate(bits, zeros))
            .collect()
    };
    (table(PORT_BITMAP_BITS), table(HOST_BITMAP_BITS))
});

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// What userspace knows of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    /// Packets at the last reading; 0 for a free slot.
    packets: u64,
    /// The reading in which they last changed.
    changed: u64,
}

/// The mapped slot arrays and the bookkeeping of reclaim.
pub(super) struct Slots {
    values: Mapped<SourceValue>,
    keys: Mapped<SourceKey>,
    capacity: usize,
    /// Regions of `values`: the possible CPUs for a per-CPU layout, 1 for a shared one.
    regions: usize,
    seen: Vec<Seen>,
    /// Readings so far.
    reading: u64,
    /// Where slots taken back are staged for the kernel to queue (as u64: array elements take
    /// 8 bytes each whatever their size).
    staged: Mapped<u64>,
    /// Slots whose addresses were deleted, waiting out [`GRACE`].
    quarantine: Vec<u32>,
    quarantined_at: Instant,
    /// Slots whose keys are marked, their addresses about to be deleted.
    retiring: Vec<u32>,
    /// Slots in use at the last reading.
    in_use: usize,
    /// The filter of addresses with a slot, both halves.
    filter: Mapped<u64>,
    /// Its hash's seed and size, as the program has them.
    filter_shape: FilterShape,
    /// The half the program's lookups read.
    filter_half: u32,
}

/// The seed and size of the filter of addresses with a slot, fixed at load time: what the
/// program and the rebuild hash alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FilterShape {
    /// The hash's seed, drawn at random so that senders cannot choose addresses whose bits
    /// others set.
    pub(super) seed: u64,
    /// The base-2 logarithm of each half's words.
    pub(super) word_bits: u32,
}

impl FilterShape {
    /// The filter for `capacity` slots, with a seed from the kernel's random bytes.
    pub(super) fn random(capacity: u32) -> io::Result<Self> {
        let mut seed = [0u8; 8];
        // SAFETY: the buffer is 8 writable bytes.
        let read = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if read != seed.len() as isize {
            return Err(if read < 0 {
                io::Error::last_os_error()
            } else {
                io::Error::other(format!("{read} of 8 bytes"))
            });
        }
        Ok(Self {
            seed: u64::from_ne_bytes(seed),
            word_bits: filter_word_bits(capacity),
        })
    }

    /// Words in each half.
    pub(super) fn words(self) -> usize {
        1 << self.word_bits
    }

    /// The word of a half that holds `key`'s bits, and their mask.
    fn probe(self, key: &SourceKey) -> (usize, u64) {
        let (word, mask) = filter_probe(key.words(), self.seed, self.word_bits);
        (word as usize, mask)
    }
}

impl Slots {
    /// Maps the arrays of a program loaded with `capacity` slots in `regions` regions.
    pub(super) fn map(
        values: BorrowedFd<'_>,
        keys: BorrowedFd<'_>,
        staged: BorrowedFd<'_>,
        filter: BorrowedFd<'_>,
        capacity: u32,
        regions: usize,
        filter_shape: FilterShape,
    ) -> io::Result<Self> {
        let capacity = capacity as usize;
        Ok(Self {
            values: Mapped::new(values, capacity * regions)?,
            keys: Mapped::new(keys, capacity)?,
            staged: Mapped::new(staged, capacity)?,
            capacity,
            regions,
            seen: vec![Seen::default(); capacity],
            reading: 0,
            quarantine: Vec::new(),
            quarantined_at: Instant::now(),
            retiring: Vec::new(),
            in_use: 0,
            filter: Mapped::new(filter, 2 * filter_shape.words())?,
            filter_shape,
            filter_half: 0,
        })
    }

    /// Reads every slot in use, summing its regions, and calls `f` with each source. Spreads
    /// come from sketch window `closing` (0: none).
    pub(super) fn read(&mut self, closing: u32, mut f: impl FnMut(SourceReading)) {
        self.reading += 1;
        let window = (closing & 1) as usize;
        let mut in_use = 0;
        for (slot, seen) in self.seen.iter_mut().enumerate() {
            let mut sum = SourceStats::default();
            for region in 0..self.regions {
                add_source(&mut sum, &self.values.stats(region * self.capacity + slot));
            }
            if sum.packets != seen.packets {
                seen.packets = sum.packets;
                seen.changed = self.reading;
            }
            if sum.packets == 0 {
                // Free, or taken by a frame whose counts are not in yet.
                continue;
            }
            in_use += 1;
            let key = self.keys.key(slot);
            if key.family == 0 {
                // Taken a moment ago: another CPU counted in it before the taker wrote the
                // key (it writes it right after putting the address in the map). Its counts
                // are cumulative: the next reading reports them.
                continue;
            }
            let spread = if closing != 0 {
                spread(
                    &self.values,
                    self.capacity,
                    self.regions,
                    slot,
                    window,
                    closing,
                )
            } else {
                None
            };
            f(SourceReading {
                slot: slot as u32,
                key: live(key),
                stats: sum,
                spread,
            });
        }
        self.in_use = in_use;
    }

    /// Slots in use at the last reading.
    pub(super) fn in_use(&self) -> usize {
        self.in_use
    }

    /// After a [`Slots::read`], the first half of a reclaim: clears the slots quarantined at an
    /// earlier reading (their last counts were in that read) once their grace is over, and
    /// stages them for the kernel to queue. Returns how many are staged.
    pub(super) fn stage_release(&mut self) -> usize {
        if self.quarantine.is_empty() || self.quarantined_at.elapsed() < GRACE {
            return 0;
        }
        for (index, &slot) in self.quarantine.iter().enumerate() {
            let slot = slot as usize;
            for region in 0..self.regions {
                self.values
                    .write(region * self.capacity + slot, SourceValue::default());
            }
            self.keys.write(slot, SourceKey::default());
            self.seen[slot] = Seen::default();
            self.staged.write(index, slot as u64);
        }
        self.quarantine.len()
    }

    /// The kernel queued the first `queued` staged slots: they are free. Returns them; the
    /// others stay in quarantine, to be staged again at a later reading.
    pub(super) fn released(&mut self, queued: usize) -> Vec<u32> {
        let freed: Vec<u32> = self
            .quarantine
            .drain(..queued.min(self.quarantine.len()))
            .collect();
        self.in_use = self.in_use.saturating_sub(freed.len());
        freed
    }

    /// The second half: if fewer than an eighth of the slots are free and none is in
    /// quarantine, chooses the sources idle longest, towards a quarter of the slots free (at
    /// most [`RECLAIM_BATCH`] or a thirty-second of them per reading), and marks their keys,
    /// so that the CPUs' cached lines of those slots stop matching (see the program's
    /// `owns`). Returns their addresses, for the caller to delete and then call
    /// [`Slots::quarantine_retired`] (or [`Slots::unretire`] if the delete failed).
    pub(super) fn retire_idlest(&mut self) -> Vec<SourceKey> {
        let free_slots = self.capacity - self.in_use;
        let low = (self.capacity / 8).max(1);
        if free_slots >= low || !self.quarantine.is_empty() {
            return Vec::new();
        }
        let wanted =
            ((self.capacity / 4).max(1) - free_slots).min(RECLAIM_BATCH.max(self.capacity / 32));
        self.retiring = idlest(&self.seen, self.reading, wanted);
        let mut keys = Vec::with_capacity(self.retiring.len());
        for &slot in &self.retiring {
            let key = self.keys.key(slot as usize);
            self.keys.write(slot as usize, retired(key));
            keys.push(key);
        }
        keys
    }

    /// Rebuilds the half of the filter the program does not read from the keys of the slots
    /// in use, and returns it, for the program to read from now on: the bits of addresses
    /// taken back go. The program sets an address's bits in both halves before it inserts the
    /// address and again after it writes the slot's key; so a key written before the half
    /// was cleared is read here, and one written after sets its bits itself.
    pub(super) fn rebuild_filter(&mut self) -> u32 {
        let target = 1 - self.filter_half;
        let words = self.filter_shape.words();
        let first = target as usize * words;
        for index in first..first + words {
            // SAFETY: an aligned u64 of the live mapping, which the program only ever
            // updates with atomic ORs.
            unsafe { AtomicU64::from_ptr(self.filter.at(index)) }.store(0, Ordering::SeqCst);
        }
        fence(Ordering::SeqCst);
        for slot in 0..self.capacity {
            let key = self.keys.key(slot);
            if key.family == 0 || key != live(key) {
                // Free, taken a moment ago (its taker sets the bits), or being taken back.
                continue;
            }
            let (word, mask) = self.filter_shape.probe(&key);
            // SAFETY: as above.
            unsafe { AtomicU64::from_ptr(self.filter.at(first + word)) }
                .fetch_or(mask, Ordering::SeqCst);
        }
        self.filter_half = target;
        target
    }

    /// The addresses of the retiring slots are deleted: their slots wait out the grace.
    pub(super) fn quarantine_retired(&mut self) {
        self.quarantine = std::mem::take(&mut self.retiring);
        self.quarantined_at = Instant::now();
    }

    /// The delete failed: the sources keep their slots, and their cached lines match again.
    pub(super) fn unretire(&mut self) {
        for slot in std::mem::take(&mut self.retiring) {
            let key = live(self.keys.key(slot as usize));
            self.keys.write(slot as usize, key);
        }
    }
}

/// The key of a slot being taken back: the address with a mark in the padding, which no live
/// key has, so that the program's cached lines of the slot no longer match it.
fn retired(mut key: SourceKey) -> SourceKey {
    key._pad[0] = 0xff;
    key
}

/// The address of a slot's key, marked or not.
fn live(mut key: SourceKey) -> SourceKey {
    key._pad = [0; 7];
    key
}

/// Up to `wanted` slots in use whose counters did not change in reading `reading`, those
/// unchanged longest first.
fn idlest(seen: &[Seen], reading: u64, wanted: usize) -> Vec<u32> {
    let mut idle: Vec<(u64, u32)> = seen
        .iter()
        .enumerate()
        .filter(|(_, seen)| seen.packets != 0 && seen.changed < reading)
        .map(|(slot, seen)| (seen.changed, slot as u32))
        .collect();
    if idle.len() > wanted {
        idle.select_nth_unstable(wanted);
        idle.truncate(wanted);
    }
    idle.into_iter().map(|(_, slot)| slot).collect()
}

/// The spread of `slot` in sketch window `window`, if a region marked it in epoch `closing`.
fn spread(
    values: &Mapped<SourceValue>,
    capacity: usize,
    regions: usize,
    slot: usize,
    window: usize,
    closing: u32,
) -> Option<Spread> {
    let mut ports = [0u64; PORT_BITMAP_BITS / 64];
    let mut hosts = [0u64; HOST_BITMAP_BITS / 64];
    let mut marked = false;
    for region in 0..regions {
        let index = region * capacity + slot;
        if values.epoch(index, window) == closing {
            marked = true;
            let (region_ports, region_hosts) = values.bitmaps(index, window);
            or_into(&mut ports, &region_ports);
            or_into(&mut hosts, &region_hosts);
        }
    }
    let zeros = |words: &[u64]| words.iter().map(|word| word.count_zeros()).sum::<u32>() as usize;
    let (port_estimates, host_estimates) = &*ESTIMATES;
    marked.then(|| Spread {
        ports: port_estimates[zeros(&ports)],
        hosts: host_estimates[zeros(&hosts)],
    })
}

fn or_into(sum: &mut [u64], words: &[u64]) {
    for (sum, word) in sum.iter_mut().zip(words) {
        *sum |= word;
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs::File,
        os::{
            fd::{AsFd as _, FromRawFd as _},
            unix::fs::FileExt as _,
        },
    };

    use super::*;

    /// Shared memory standing in for the memory of a BPF array map, at least `bytes` long.
    fn memory(bytes: usize) -> File {
        // SAFETY: a name and no flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"netwatch-slots".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: a descriptor just created and owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(bytes.div_ceil(4096).max(1) as u64 * 4096)
            .expect("sizing the memory");
        file
    }

    /// Slots of `capacity` in `regions` regions over memory standing in for the maps: the
    /// values, the keys, the staged slots and the filter, then the slots.
    fn slots_in_memory(capacity: usize, regions: usize) -> (File, File, File, File, Slots) {
        let values = memory(capacity * regions * size_of::<SourceValue>());
        let keys = memory(capacity * size_of::<SourceKey>());
        let staged = memory(capacity * size_of::<u64>());
        let shape = FilterShape {
            seed: 0x5eed_0ff1_1e00,
            word_bits: filter_word_bits(capacity as u32),
        };
        let filter = memory(2 * shape.words() * size_of::<u64>());
        let slots = Slots::map(
            values.as_fd(),
            keys.as_fd(),
            staged.as_fd(),
            filter.as_fd(),
            capacity as u32,
            regions,
            shape,
        )
        .expect("mapping the memory");
        (values, keys, staged, filter, slots)
    }

    /// Writes `value` as element `index` of an array in `memory`.
    fn put<T: Copy>(memory: &File, index: usize, value: T) {
        // SAFETY: the bytes of a plain-data value, read while it lives.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const value).cast::<u8>(), size_of::<T>()) };
        memory
            .write_all_at(bytes, (index * size_of::<T>()) as u64)
            .expect("writing the memory");
    }

    /// A slot whose counters are in but whose key is not yet (another CPU counted in it
    /// between the taker's insert into the address map and its key write) is not reported;
    /// once the key is in, it is, with every count, `packets` summed from the protocols.
    #[test]
    fn a_slot_whose_key_is_not_in_yet_waits_for_the_next_reading() {
        const CAPACITY: usize = 8;
        const REGIONS: usize = 2;
        let (values, keys, _staged, _filter, mut slots) = slots_in_memory(CAPACITY, REGIONS);
        let mut value = SourceValue::default();
        value.stats.udp_packets = 3;
        value.stats.tcp_packets = 1;
        value.stats.bytes = 400;
        put(&values, 5, value);
        put(&values, CAPACITY + 5, value);
        let read = |slots: &mut Slots| {
            let mut readings = Vec::new();
            slots.read(0, |reading| readings.push(reading));
            readings
        };
        assert!(read(&mut slots).is_empty(), "counts without a key");
        let key = SourceKey::ipv4([192, 0, 2, 7]);
        put(&keys, 5, key);
        let readings = read(&mut slots);
        assert_eq!(readings.len(), 1, "{readings:?}");
        assert_eq!((readings[0].slot, readings[0].key), (5, key));
        assert_eq!(readings[0].stats.packets, 8);
        assert_eq!(readings[0].stats.bytes, 800);
    }

    /// The rebuilt half of the filter holds the bits of the live keys only, whatever it held
    /// before, and the halves take turns.
    #[test]
    fn the_filter_is_rebuilt_from_the_live_keys_in_the_other_half() {
        const CAPACITY: usize = 8;
        let (_values, keys, _staged, filter, mut slots) = slots_in_memory(CAPACITY, 1);
        let live_key = SourceKey::ipv4([192, 0, 2, 7]);
        let gone = SourceKey::ipv4([192, 0, 2, 8]);
        put(&keys, 1, live_key);
        put(&keys, 2, retired(gone));
        let words = slots.filter_shape.words();
        // Stale bits in the half to rebuild.
        for word in 0..words {
            put(&filter, words + word, u64::MAX);
        }
        assert_eq!(slots.rebuild_filter(), 1);
        // The words of a half that have bits set, and their bits.
        let set = |slots: &Slots, half: usize| -> Vec<(usize, u64)> {
            (0..words)
                .map(|word| {
                    // SAFETY: an element of the mapping, read as the kernel would.
                    let value = unsafe { slots.filter.at(half * words + word).read_volatile() };
                    (word, value)
                })
                .filter(|(_, value)| *value != 0)
                .collect()
        };
        let live_bits = slots.filter_shape.probe(&live_key);
        assert_eq!(set(&slots, 1), vec![live_bits]);
        assert!(set(&slots, 0).is_empty());
        assert_eq!(slots.rebuild_filter(), 0);
        assert_eq!(set(&slots, 0), vec![live_bits]);
    }

    /// With every slot of the default 65,536 taken by a /16 of sequential addresses, other
    /// runs of sequential addresses (a sweep of /16s) find all their bits set rarely, and no
    /// run more often than the others: with the multiplicative hash of before, runs mapped
    /// onto shifted copies of the filled run's bits, and some /16s found half their bits set.
    #[test]
    fn runs_of_addresses_do_not_land_on_the_bits_of_another_run() {
        let shape = FilterShape {
            seed: 0x0123_4567_89ab_cdef,
            word_bits: filter_word_bits(65_536),
        };
        let mut filter = vec![0u64; shape.words()];
        for n in 0..65_536u32 {
            let [_, _, hi, lo] = n.to_be_bytes();
            let (word, mask) = shape.probe(&SourceKey::ipv4([10, 90, hi, lo]));
            filter[word] |= mask;
        }
        let mut worst = 0.0f64;
        let mut all = 0;
        for second in 91..=255u8 {
            let found = (0..2_000u32)
                .filter(|n| {
                    let [_, _, hi, lo] = n.to_be_bytes();
                    let (word, mask) = shape.probe(&SourceKey::ipv4([10, second, hi, lo]));
                    filter[word] & mask == mask
                })
                .count();
            all += found;
            worst = worst.max(found as f64 / 2_000.0);
        }
        let overall = all as f64 / (165.0 * 2_000.0);
        // Expected: about 0.9% (three bits of a word that holds four addresses on average, and
        // more or fewer as they fall).
        assert!(
            overall < 0.015,
            "{:.2}% of the addresses found their bits set",
            overall * 100.0
        );
        assert!(
            worst < 0.03,
            "a /16 found {:.1}% of its bits set",
            worst * 100.0
        );
    }

    /// Another seed puts nearly every address, IPv4 or IPv6, somewhere else: what a sender
    /// learns of one run of netwatch does not carry over to the next.
    #[test]
    fn the_seed_decides_where_an_address_lands() {
        let word_bits = filter_word_bits(65_536);
        let keys: Vec<SourceKey> = (0..1_000u32)
            .flat_map(|n| {
                let [a, b, c, d] = n.to_be_bytes();
                [
                    SourceKey::ipv4([10, b, c, d]),
                    SourceKey::ipv6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
                    SourceKey::ipv6([0x20, 0x01, 0x0d, 0xb8, a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0]),
                ]
            })
            .collect();
        let moved = keys
            .iter()
            .filter(|key| {
                filter_probe(key.words(), 1, word_bits) != filter_probe(key.words(), 2, word_bits)
            })
            .count();
        assert!(
            moved > keys.len() * 99 / 100,
            "{moved} of {} moved",
            keys.len()
        );
    }

    fn seen(packets: u64, changed: u64) -> Seen {
        Seen { packets, changed }
    }

    #[test]
    fn the_idlest_slots_in_use_go_first() {
        let slots = [
            seen(5, 3), // idle since reading 3
            seen(0, 0), // free
            seen(9, 1), // idle since reading 1: the idlest
            seen(7, 4), // changed in this reading: busy
            seen(2, 2), // idle since reading 2
        ];
        let sorted = |mut slots: Vec<u32>| {
            slots.sort_unstable();
            slots
        };
        assert_eq!(sorted(idlest(&slots, 4, 2)), vec![2, 4]);
        assert_eq!(
            sorted(idlest(&slots, 4, 10)),
            vec![0, 2, 4],
            "never a free or a busy slot"
        );
        assert!(idlest(&slots, 4, 0).is_empty());
    }

    #[test]
    fn estimate_tables_agree_with_linear_counting() {
        let (ports, hosts) = &*ESTIMATES;
        assert_eq!(ports.len(), PORT_BITMAP_BITS + 1);
        assert_eq!(hosts.len(), HOST_BITMAP_BITS + 1);
        // One bit set of 256 (255 clear), half of them, all of them.
        assert_eq!(ports[255], linear_count(&[1, 0, 0, 0]));
        assert_eq!(ports[128], 177);
        assert_eq!(ports[0], 1420);
        assert_eq!(hosts[0], 621);
        assert_eq!(hosts[128], 0);
    }

    #[test]
    fn linear_counting_estimates() {
        assert_eq!(linear_count(&[0; 4]), 0);
        // One bit set of 256: -256 ln(255/256) = 1.0
        assert_eq!(linear_count(&[1, 0, 0, 0]), 1);
        // Half the bits set: 256 ln 2 = 177.4
        assert_eq!(linear_count(&[u64::MAX, u64::MAX, 0, 0]), 177);
        // Saturated: m ln m.
        assert_eq!(linear_count(&[u64::MAX; 4]), 1420);
        assert_eq!(linear_count(&[u64::MAX; 2]), 621);
    }
}
