//! Types shared by the netwatch XDP program (`netwatch-ebpf`) and the userspace daemon
//! (`netwatch`): map names, map keys and values.
//!
//! Everything here is `#[repr(C)]` plain data with explicit, zeroed padding, so that the
//! kernel hashes keys byte for byte and both sides agree on every layout. This crate holds no
//! logic but the one hash both sides must compute alike ([`filter_probe`]): the kernel side
//! parses and counts, userspace interprets.
#![no_std]

/// Name of the XDP program (the function name in `netwatch-ebpf`).
pub const PROGRAM_NAME: &str = "netwatch";
/// Name of the XDP program that counts each source in one value for all CPUs instead, with
/// atomic instructions.
pub const SHARED_PROGRAM_NAME: &str = "netwatch_shared";
/// Name of [`PROGRAM_NAME`] built without the ban check: the benchmarks' comparison, never
/// attached.
pub const NO_BANS_PROGRAM_NAME: &str = "netwatch_nobans";
/// Name of the XDP program that queues free slots, never attached: userspace runs it with
/// BPF_PROG_TEST_RUN, once per slot, to do the work of a [`QueueJob`].
pub const QUEUE_PROGRAM_NAME: &str = "queue_free_slots";
/// Name of the array with the [`QueueJob`] at index 0.
pub const QUEUE_JOB_MAP: &str = "QUEUE_JOB";
/// Name of the memory-mappable array of slots (`u64`) a staged [`QueueJob`] queues.
pub const STAGED_SLOTS_MAP: &str = "STAGED_SLOTS";
/// Name of the sampling XDP program, reached from [`PROGRAM_NAME`] by a tail call.
pub const SAMPLER_PROGRAM_NAME: &str = "netwatch_sampler";
/// Name of the program array whose slot 0 holds the sampler.
pub const SAMPLER_MAP: &str = "SAMPLER";
/// Name of the program that checks a frame against the signature rules, tail-called while
/// rules exist: verified on its own, so that the rules' loop does not weigh on the counting
/// program's verification.
pub const RULES_PROGRAM_NAME: &str = "netwatch_rules";
/// Name of [`RULES_PROGRAM_NAME`]'s twin for frames to be sampled after the check.
pub const RULES_SAMPLED_PROGRAM_NAME: &str = "netwatch_rules_sampled";
/// Name of the program array the main program tail-calls the rules' check through.
pub const RULE_CHECK_MAP: &str = "RULE_CHECK";
/// Name of the program that samples the frames of the events being captured, tail-called
/// while a capture exists; it then does what the main program would have (the ban check, the
/// rules' and the sampler's tail calls).
pub const CAPTURE_PROGRAM_NAME: &str = "netwatch_capture";
/// Name of [`CAPTURE_PROGRAM_NAME`]'s twin for frames to be sampled for inspection after.
pub const CAPTURE_SAMPLED_PROGRAM_NAME: &str = "netwatch_capture_sampled";
/// Name of the program array the main program tail-calls the capture through.
pub const CAPTURE_CHECK_MAP: &str = "CAPTURE_CHECK";
/// Name of the second capture program, tail-called by the first for a frame some capture
/// may keep: it decides for each capture and copies the frame.
pub const CAPTURE_KEEP_PROGRAM_NAME: &str = "netwatch_capture_keep";
/// Name of the program array the first capture program tail-calls the second through.
pub const CAPTURE_KEEP_MAP: &str = "CAPTURE_KEEP";
/// Name of the no-op XDP program used as the cost baseline in benchmarks.
pub const NOOP_PROGRAM_NAME: &str = "noop";
/// Name of a baseline of the benchmarks, in the no-op's object: netwatch's parse alone.
pub const PARSE_FLOOR_PROGRAM_NAME: &str = "parse_floor";
/// Name of the benchmarks' second baseline, in the no-op's object: one hash lookup per frame.
pub const LOOKUP_FLOOR_PROGRAM_NAME: &str = "lookup_floor";
/// Name of the traffic generator's XDP program, in the no-op's object: run by
/// BPF_PROG_TEST_RUN in live-frame mode, it gives each frame a source and sends it out of the
/// interface it is run on (`netwatch-gen --method live`).
pub const GENERATE_PROGRAM_NAME: &str = "generate";
/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the generator's [`GeneratorState`].
pub const GENERATOR_MAP: &str = ".data.generator";
/// Name of the hash map from a source's [`SourceKey`] to its slot (a `u32`).
pub const SOURCE_SLOTS_MAP: &str = "SOURCE_SLOTS";
/// Name of the memory-mappable array of [`SourceValue`]s by slot: one region of
/// [`SLOT_CAPACITY_GLOBAL`] slots per possible CPU for [`PROGRAM_NAME`], a single region
/// updated with atomic instructions for [`SHARED_PROGRAM_NAME`].
pub const SOURCE_VALUES_MAP: &str = "SOURCE_VALUES";
/// Name of the memory-mappable array of each slot's [`SourceKey`].
pub const SLOT_KEYS_MAP: &str = "SLOT_KEYS";
/// Entries of each CPU's source cache, [`CpuState::source_cache`] (a power of two).
pub const SOURCE_CACHE_ENTRIES: u32 = 4096;
/// Name of the queue of free slots (`u32`).
pub const FREE_SLOTS_MAP: &str = "FREE_SLOTS";
/// Name of the memory-mappable array of [`OverflowWindow`]s: two per possible CPU, CPU `c`
/// writing window `2c + (Settings::overflow_window & 1)`.
pub const OVERFLOW_WINDOWS_MAP: &str = "OVERFLOW_WINDOWS";
/// Buckets of each table of an [`OverflowWindow`] (a power of two).
pub const OVERFLOW_BUCKETS: usize = 256;
/// Buckets a key may take, from the one its hash names on: a key that finds them all taken by
/// other keys is counted in the table's `other`.
pub const OVERFLOW_PROBES: usize = 4;
/// Bits of [`OverflowWindow::sources`], the distinct source addresses without a slot.
pub const OVERFLOW_SOURCE_BITS: usize = 65_536;
/// Bits of [`OverflowWindow::prefixes`], their distinct wide prefixes.
pub const OVERFLOW_PREFIX_BITS: usize = 16_384;
/// [`TargetKey::kind`]: TCP SYN without ACK.
pub const TARGET_SYN: u8 = 1;
/// [`TargetKey::kind`]: other TCP with its header in the frame.
pub const TARGET_TCP: u8 = 2;
/// [`TargetKey::kind`]: UDP, not from an amplification port.
pub const TARGET_UDP: u8 = 3;
/// [`TargetKey::kind`]: UDP from an amplification port; [`TargetKey::port`] is that port.
pub const TARGET_REFLECTED: u8 = 4;
/// [`TargetKey::kind`]: ICMP or ICMPv6.
pub const TARGET_ICMP: u8 = 5;
/// [`TargetKey::kind`]: a later fragment (no transport header).
pub const TARGET_FRAGMENT: u8 = 6;
/// [`TargetKey::kind`]: any other IP protocol.
pub const TARGET_OTHER: u8 = 7;
/// Destination ports from here on are counted as one class, this port in
/// [`TargetKey::port`]: the ephemeral ports a reflection's victim is hit on, or the random
/// ports of a flood.
pub const TARGET_HIGH_PORTS: u16 = 32_768;
/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the [`LocalNetworks`]: the first [`Settings::local_v4`] IPv4 ones and the first
/// `local_networks - local_v4` IPv6 ones are in use.
pub const LOCAL_NETWORKS_MAP: &str = ".data.networks";
/// Most local networks.
pub const MAX_LOCAL_NETWORKS: usize = 16;
/// Name of the memory-mappable array of [`DestinationBucket`]s: two windows of
/// [`DESTINATION_BUCKETS`] per possible CPU, CPU `c` writing window
/// `2c + (Settings::overflow_window & 1)`, as the overflow windows.
pub const DESTINATIONS_MAP: &str = "DESTINATIONS";
/// Name of the memory-mappable array of [`Counter`]s, one per destination window: the frames
/// to a local host that found no bucket.
pub const DESTINATION_OTHER_MAP: &str = "DESTINATION_OTHER";
/// Buckets of a destination window (a power of two): local hosts counted per CPU and
/// reading.
pub const DESTINATION_BUCKETS: usize = 2048;
/// Source prefixes each destination keeps as its top senders.
pub const DESTINATION_SENDERS: usize = 4;
/// Bits of [`DestinationBucket::sources`].
pub const DESTINATION_SOURCE_BITS: usize = 256;
/// Name of the memory-mappable array (`u64` words) of the filter of addresses with a slot:
/// two halves of `1 << word_bits` words each ([`filter_word_bits`]), lookups in half
/// [`Settings::filter_half`].
pub const SLOT_FILTER_MAP: &str = "SLOT_FILTER";
/// Name of the read-only global (`u64`) that seeds the filter's hash ([`filter_probe`]),
/// drawn at random at load time: senders cannot choose addresses whose bits others set.
pub const FILTER_SEED_GLOBAL: &str = "FILTER_SEED";
/// Name of the read-only global (`u32`) that holds the base-2 logarithm of the words of each
/// half of the filter ([`filter_word_bits`]).
pub const FILTER_WORD_BITS_GLOBAL: &str = "FILTER_WORD_BITS";
/// The base-2 logarithm of the words of each half of the filter for `max_sources` slots: 16
/// bits per slot rounded up to a power of two, at least 64 words. 65,536 slots: 16,384 words
/// (128 KiB) a half.
pub const fn filter_word_bits(max_sources: u32) -> u32 {
    let bits = (max_sources as u64).next_power_of_two() * 16;
    let words = bits / 64;
    if words < 64 {
        6
    } else {
        words.trailing_zeros()
    }
}

/// MurmurHash3's 64-bit finaliser: every bit of `value` reaches every bit of the result.
/// Hashes of runs of addresses must look random: a bare multiplicative hash spreads those too
/// evenly (linear counting's estimate comes out high) or onto shifted copies of each other.
#[inline(always)]
pub const fn mix64(value: u64) -> u64 {
    let mut h = value;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Where the filter of addresses with a slot keeps the key of `words` (see
/// [`SourceKey::words`]): its word in a half of `1 << word_bits` words, and the mask of its
/// three bits there, so that one load tells them all. With 16 bits per slot
/// ([`filter_word_bits`]) and every slot taken, about 1% of the addresses without a slot find
/// all three set (one bit alone: 6%). A seeded mix of the whole key: a multiplicative hash alone
/// maps a run of addresses onto a shifted copy of another run's bits, so that some /16s of a
/// sweep found half their bits set. The family scales the seed, so that no IPv6 address with a
/// zero second half shares an IPv4 address's bits whatever the seed.
#[inline(always)]
pub const fn filter_probe(words: [u64; 3], seed: u64, word_bits: u32) -> (u32, u64) {
    let [a, b, c] = words;
    let mut h = mix64(a ^ seed.wrapping_mul(c | 1));
    // The second half of an IPv6 address; always zero for IPv4, which skips the round.
    if b != 0 {
        h = mix64(h ^ b);
    }
    let word = h.wrapping_shr(64 - word_bits) as u32;
    let mask = (1 << (h & 63)) | (1 << ((h >> 6) & 63)) | (1 << ((h >> 12) & 63));
    (word, mask)
}

/// Name of the read-only global (`u32`) that holds the number of slots.
pub const SLOT_CAPACITY_GLOBAL: &str = "SLOT_CAPACITY";
/// Name of the per-CPU array with one [`CpuState`] at index 0.
pub const CPU_STATE_MAP: &str = "CPU_STATE";
/// Name of the global-data section (and of its one-entry array map) that holds the
/// [`Settings`], written by userspace at run time. A global, not an entry of a map of its own,
/// because the program reads a global at a fixed address, without a lookup.
pub const SETTINGS_MAP: &str = ".data.settings";

/// Name of the ring buffer of [`Sample`]s.
pub const SAMPLES_MAP: &str = "SAMPLES";
/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the port bitmaps that select packets to sample, `[u64; 2 * SAMPLE_PORT_WORDS]`: words
/// `0..SAMPLE_PORT_WORDS` for TCP ports, the next `SAMPLE_PORT_WORDS` for UDP; bit
/// `port % 64` of word `port / 64`.
pub const SAMPLE_PORTS_MAP: &str = ".data.ports";
/// Name of the per-CPU array with the sampling [`TokenBucket`] at index 0.
pub const SAMPLE_BUCKETS_MAP: &str = "SAMPLE_BUCKETS";
/// 64-bit words of one protocol's port bitmap.
pub const SAMPLE_PORT_WORDS: u32 = 65_536 / 64;
/// Most bytes of a sampled frame copied (from the Ethernet header on): the largest
/// [`Settings::sample_snap_len`]. A power of two, so that the program can bound a copy's length
/// with a mask the verifier follows.
pub const SAMPLE_MAX_SNAP_LEN: usize = 8192;
/// The default [`Settings::sample_snap_len`]: a whole 1,500-byte MTU frame behind an Ethernet
/// header and two VLAN tags.
pub const DEFAULT_SAMPLE_SNAP_LEN: u32 = 1500 + 14 + 8;
/// Name of the per-CPU array whose one [`Sample`] the sampler fills before copying the part
/// in use (header and captured bytes) to the ring: a ring record sized by what was captured,
/// not by the largest sample.
pub const SAMPLE_SCRATCH_MAP: &str = "SAMPLE_SCRATCH";
/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the bitmap of UDP source ports counted as [`SourceStats::reflected_packets`],
/// `[u64; SAMPLE_PORT_WORDS]`: bit `port % 64` of word `port / 64`.
pub const REFLECTION_PORTS_MAP: &str = ".data.reflection";
/// Ring buffer size compiled into the object; userspace may set its own at load time.
pub const DEFAULT_SAMPLE_RING_BYTES: u32 = 1 << 20;
/// [`SampleHeader::reason`]: a port of the packet is in the sampled set.
pub const SAMPLE_REASON_PORT: u32 = 1;
/// [`SampleHeader::reason`]: every TCP payload is sampled (keyword matching is on).
pub const SAMPLE_REASON_ALL_TCP: u32 = 2;
/// [`SampleHeader::reason`]: no frame, an [`EarlyEvent`]: the interface's packet rate went
/// over the early limit ([`Settings::early_packets`]).
pub const SAMPLE_REASON_EARLY: u32 = 3;
/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the [`EarlyCount`] every CPU adds to.
pub const EARLY_MAP: &str = ".data.early";
/// An [`EarlyEvent`] needs a run of slots that each filled within their time and that lasted
/// the time of this many slots: a rate held that long, not a burst (whose frames fill many
/// slots in a few milliseconds).
pub const EARLY_SLOTS: u64 = 2;
/// Least time between two [`EarlyEvent`]s: the first frame over the limit says it; one a
/// second at most follows while it lasts (userspace has the alert open by then).
pub const EARLY_REPOST_NS: u64 = 1_000_000_000;

/// Bits in a source's bitmap of destination ports, per window.
pub const PORT_BITMAP_BITS: usize = 256;
/// Bits in a source's bitmap of destination hosts, per window.
pub const HOST_BITMAP_BITS: usize = 128;
/// Slots compiled into the object; userspace sets its own capacity at load time.
pub const DEFAULT_MAX_SOURCES: u32 = 65_536;

/// Address family of a [`SourceKey`].
pub const FAMILY_IPV4: u8 = 4;
/// Address family of a [`SourceKey`].
pub const FAMILY_IPV6: u8 = 6;

/// A source IP address, one layout for IPv4 and IPv6.
///
/// An IPv4 address fills `addr[..4]` and leaves the other twelve bytes zero.
///
/// Aligned to 8 bytes: the BPF program is built to load and store whole words at any
/// alignment (packet headers sit at odd offsets), and LLVM then merges the stores of a key on
/// the stack into 8-byte ones, which the verifier accepts only at 8-aligned stack offsets.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceKey {
    /// The address in network byte order.
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Always zero: the kernel compares keys as raw bytes.
    pub _pad: [u8; 7],
}

impl SourceKey {
    /// The key of an IPv4 source.
    pub const fn ipv4(octets: [u8; 4]) -> Self {
        Self::from_words([
            u32::from_ne_bytes(octets),
            0,
            0,
            0,
            u32::from_ne_bytes([FAMILY_IPV4, 0, 0, 0]),
            0,
        ])
    }

    /// The key of an IPv6 source.
    pub const fn ipv6(addr: [u8; 16]) -> Self {
        let [
            a0,
            a1,
            a2,
            a3,
            b0,
            b1,
            b2,
            b3,
            c0,
            c1,
            c2,
            c3,
            d0,
            d1,
            d2,
            d3,
        ] = addr;
        Self::from_words([
            u32::from_ne_bytes([a0, a1, a2, a3]),
            u32::from_ne_bytes([b0, b1, b2, b3]),
            u32::from_ne_bytes([c0, c1, c2, c3]),
            u32::from_ne_bytes([d0, d1, d2, d3]),
            u32::from_ne_bytes([FAMILY_IPV6, 0, 0, 0]),
            0,
        ])
    }

    /// The key as three words, in memory order: what the BPF program hashes and compares.
    pub const fn words(&self) -> [u64; 3] {
        // SAFETY: as in `from_words`, and [u64; 3] has the size and alignment of the key.
        unsafe { core::mem::transmute::<Self, [u64; 3]>(*self) }
    }

    /// The key whose bytes are those of `words` in memory order (the inverse of
    /// [`SourceKey::words`]).
    pub const fn from_u64_words(words: [u64; 3]) -> Self {
        // SAFETY: as in `from_words`.
        unsafe { core::mem::transmute::<[u64; 3], Self>(words) }
    }

    /// The key whose bytes are those of `words` in memory order.
    ///
    /// Keys are built from whole words because of the BPF side: filled field by field, the
    /// zeroed bytes become a call to a byte-at-a-time `memset` or stores the verifier refuses
    /// (on the stack it wants every store aligned to its size), on every packet.
    const fn from_words(words: [u32; 6]) -> Self {
        // SAFETY: `SourceKey` is `repr(C)`, 24 bytes of integers without padding, and every
        // bit pattern is valid for it, as for `[u32; 6]`.
        unsafe { core::mem::transmute::<[u32; 6], Self>(words) }
    }
}

/// Three word writes rather than the derived field-by-field hashing (a length, the address
/// bytes, the family, a length, the padding): userspace hashes keys by the million per
/// interval. Equal keys have equal bytes, so they hash alike.
impl core::hash::Hash for SourceKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c] = self.words();
        state.write_u64(a);
        state.write_u64(b);
        state.write_u64(c);
    }
}

/// Counters of one source (on one CPU, in that CPU's region of [`SOURCE_VALUES_MAP`], where
/// userspace sums the regions).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames from this source: the sum of the four protocol counts below. The XDP program
    /// leaves it at zero in the kernel's copy (one add fewer per frame); userspace fills it in
    /// when it reads a slot.
    pub packets: u64,
    /// Their length as XDP sees it (Ethernet header included, no FCS).
    pub bytes: u64,
    /// Frames whose final IP protocol is TCP.
    pub tcp_packets: u64,
    /// Frames whose final IP protocol is UDP.
    pub udp_packets: u64,
    /// Frames whose final IP protocol is ICMP (IPv4) or ICMPv6.
    pub icmp_packets: u64,
    /// Every other frame, including IPv6 frames whose extension header chain could not be
    /// walked to its end.
    pub other_packets: u64,
    /// TCP segments with SYN set and ACK clear (connection attempts).
    pub tcp_syn_packets: u64,
    /// IP fragments: IPv4 frames with more-fragments set or a non-zero offset, IPv6 frames
    /// with a fragment header. A flood of them (a "fragment attack") costs the victim
    /// reassembly memory.
    pub fragment_packets: u64,
    /// UDP datagrams whose source port is one of the amplification services' in
    /// [`REFLECTION_PORTS_MAP`]: answers of a DNS, NTP, memcached ... server, which a
    /// reflection attack aims at its victim in their thousands.
    pub reflected_packets: u64,
    /// The source port of the last of [`SourceStats::reflected_packets`]; 0 for none. Not a
    /// counter: userspace takes it as it is.
    pub reflected_port: u32,
    /// Always zero.
    pub _pad: u32,
}

/// Distinct destination ports and hosts of one source, estimated by linear counting
/// (Whang et al., 1990): every destination sets one bit chosen by a hash; the share of bits
/// left clear gives the count.
///
/// Two windows alternate: packets write window `epoch & 1`, resetting it first when its tag
/// is an older epoch. Userspace closes a window by advancing [`Settings::epoch`] and then
/// reads the window just closed, which the kernel will not touch until the epoch after.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSketch {
    /// The epoch each window holds.
    pub epochs: [u32; 2],
    /// Destination port bitmaps (TCP and UDP first fragments).
    pub ports: [[u64; PORT_BITMAP_BITS / 64]; 2],
    /// Destination host bitmaps (every IP frame).
    pub hosts: [[u64; HOST_BITMAP_BITS / 64]; 2],
}

/// The value of a slot in [`SOURCE_VALUES_MAP`]: counters and the spread sketch of one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceValue {
    /// Cumulative counters.
    pub stats: SourceStats,
    /// Distinct destinations per window.
    pub sketch: SourceSketch,
    /// Always zero: pads the value to three cache lines (192 bytes), so that no value
    /// straddles a fourth.
    pub _pad: u64,
}

/// Slots for [`QUEUE_PROGRAM_NAME`] to queue: one per run, while `next < end`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueJob {
    /// The next to queue; the program advances it.
    pub next: u32,
    /// Where to stop.
    pub end: u32,
    /// Zero: the slots numbered `next..end` (every slot, at load time). Otherwise the slots
    /// in [`STAGED_SLOTS_MAP`] at indexes `next..end` (slots taken back).
    pub staged: u32,
    /// Non-zero once the program has said that the queue refused a slot: said once a job.
    /// Zero from userspace.
    pub warned: u32,
}

/// What [`WireLength::magic`] holds: "nwwl".
pub const WIRE_LENGTH_MAGIC: u32 = u32::from_be_bytes(*b"nwwl");

/// The length a frame had on the wire, in the XDP metadata in front of it (`data_meta`).
/// Only `netwatch replay` puts it there, through BPF_PROG_TEST_RUN: a captured frame may be
/// longer than the kernel runs (GRO/TSO captures hold frames of up to 64 KiB), cut by the
/// capture's snap length, or shorter than an Ethernet header, and the program counts the
/// frame by this length rather than by the bytes it sees. On a live link there is no such
/// metadata (or not with this magic), and the bytes seen are the frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireLength {
    /// [`WIRE_LENGTH_MAGIC`]; anything else is someone else's metadata, ignored.
    pub magic: u32,
    /// Bytes on the wire.
    pub len: u32,
}

/// Run-time settings of the XDP program, in [`SETTINGS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The current sketch window; 0 turns sketches off (and marks windows never written).
    pub epoch: u32,
    /// Samples per second per CPU (token bucket rate); 0 turns sampling off.
    pub sample_rate: u32,
    /// Token bucket depth: samples that may be taken at once after a quiet spell.
    pub sample_burst: u32,
    /// Non-zero: sample every TCP packet with a payload, whatever its ports.
    pub sample_all_tcp: u32,
    /// Non-zero (the default): count fragments and amplification answers per source, which
    /// type attacks. Zero skips both (a run-time switch, measured in the benchmarks).
    pub attack_types: u32,
    /// Most bytes of a sampled frame copied, 1 to [`SAMPLE_MAX_SNAP_LEN`]; a longer frame is
    /// cut there and counted in [`GlobalStats::sample_truncated_packets`].
    pub sample_snap_len: u32,
    /// Bumped by userspace each time it has queued free slots. A CPU that found the free queue
    /// empty remembers the generation it read ([`CpuState::free_empty_at`]) and does not take
    /// the queue's lock again for nothing until this changes.
    pub free_generation: u32,
    /// Which of its two [`OverflowWindow`]s (and destination windows) a CPU writes:
    /// `overflow_window & 1`. Userspace advances it at each reading, then reads and clears
    /// the windows just closed.
    pub overflow_window: u32,
    /// Local networks in use in [`LOCAL_NETWORKS_MAP`]; 0 (the default) counts no
    /// destination, at the cost of this one comparison per frame.
    pub local_networks: u32,
    /// The early limit of the interface's packet rate: this many frames, all CPUs together,
    /// within [`Settings::early_slot_ns`] post an [`EarlyEvent`]. 0 (the default) turns the
    /// check off.
    pub early_packets: u32,
    /// The time [`Settings::early_packets`] must arrive in.
    pub early_slot_ns: u32,
    /// Frames a CPU counts on its own ([`CpuState::early_pending`]) before it adds them to
    /// the shared [`EarlyCount`]: one atomic add per batch, not per frame.
    pub early_batch: u32,
    /// Of [`Settings::local_networks`], the IPv4 ones.
    pub local_v4: u32,
    /// The half of the filter of addresses with a slot that lookups read (0 or 1); userspace
    /// rebuilds the other after taking slots back, then switches.
    pub filter_half: u32,
    /// What a frame from a banned source meets: [`BAN_MODE_NONE`] (the default, and whenever
    /// no ban exists: the ban maps are not looked at), [`BAN_MODE_COUNT`] (dry run: counted
    /// per ban and passed) or [`BAN_MODE_DROP`] (counted per ban and dropped).
    pub ban_mode: u32,
    /// While no local network is set ([`Settings::local_networks`] 0): count about one frame
    /// in this many (a power of two, at most [`MAX_DESTINATION_SAMPLE`]) in the destination
    /// windows, whatever its destination, so that userspace can name the heavy receivers of
    /// a flood with no network configured. The gaps are random (see
    /// [`CpuState::destination_skip`]), so no periodic pattern of the traffic is followed.
    /// 0 turns it off; 1 counts every frame.
    pub destination_sample: u32,
    /// Signature rules in force ([`RULES_MAP`]); 0 (the default) and the rule tries are not
    /// looked at: one comparison per frame.
    pub rules: u32,
}

/// The sparsest [`Settings::destination_sample`]: the skip's two halves are drawn from
/// separate bits of one 32-bit number.
pub const MAX_DESTINATION_SAMPLE: u32 = 4096;

/// [`Settings::ban_mode`]: no ban exists, or mitigation is off. One comparison per frame.
pub const BAN_MODE_NONE: u32 = 0;
/// [`Settings::ban_mode`]: a frame from a banned source is counted in [`BAN_COUNTS_MAP`] and
/// passed (dry run).
pub const BAN_MODE_COUNT: u32 = 1;
/// [`Settings::ban_mode`]: a frame from a banned source is counted in [`BAN_COUNTS_MAP`] and
/// dropped (`XDP_DROP`), after it was counted as every frame is.
pub const BAN_MODE_DROP: u32 = 2;
/// Banned IPv4 networks: a longest-prefix-match trie of the address (network byte order) to
/// the ban's index in [`BAN_COUNTS_MAP`].
pub const BANS_V4_MAP: &str = "BANS_V4";
/// Banned IPv6 networks, as [`BANS_V4_MAP`].
pub const BANS_V6_MAP: &str = "BANS_V6";
/// Per-CPU [`Counter`]s of the frames each ban matched, by the ban's index. Userspace zeroes
/// an index before it hands it to a new ban.
pub const BAN_COUNTS_MAP: &str = "BAN_COUNTS";

/// Name of the LPM trie of IPv4 rule destinations: network to [`RuleSet`].
pub const RULES_V4_MAP: &str = "RULES_V4";
/// Name of the LPM trie of IPv6 rule destinations.
pub const RULES_V6_MAP: &str = "RULES_V6";
/// Name of the array of [`Rule`]s, by index.
pub const RULES_MAP: &str = "RULES";
/// Name of the per-CPU array of [`RuleCounts`], by rule index.
pub const RULE_COUNTS_MAP: &str = "RULE_COUNTS";
/// Name of the array of [`RuleBucket`]s, by rule index.
pub const RULE_BUCKETS_MAP: &str = "RULE_BUCKETS";
/// Most signature rules at once.
pub const MAX_RULES: usize = 64;
/// Most rules that may apply to one destination ([`RuleSet::rules`]): the kernel checks
/// these alone, so that the verifier walks a short loop.
pub const RULES_PER_DESTINATION: usize = 8;
/// Name of the LPM trie of IPv4 sources no rule applies to.
pub const RULE_EXEMPT_V4_MAP: &str = "RULE_EXEMPT_V4";
/// Name of the LPM trie of IPv6 sources no rule applies to.
pub const RULE_EXEMPT_V6_MAP: &str = "RULE_EXEMPT_V6";
/// Most networks of each family whose traffic no rule applies to.
pub const MAX_RULE_EXEMPTIONS: u32 = 256;
/// An empty place of [`RuleSet::rules`].
pub const RULE_NONE: u8 = u8::MAX;

/// [`Rule::matches`]: the rule exists (a slot without it never matches).
pub const RULE_MATCH_IN_USE: u32 = 1;
/// [`Rule::matches`]: the protocol class must be [`Rule::protocol`].
pub const RULE_MATCH_PROTOCOL: u32 = 1 << 1;
/// [`Rule::matches`]: the transport source port must be [`Rule::src_port`] (TCP and UDP
/// first fragments only).
pub const RULE_MATCH_SRC_PORT: u32 = 1 << 2;
/// [`Rule::matches`]: the transport destination port must be [`Rule::dst_port`].
pub const RULE_MATCH_DST_PORT: u32 = 1 << 3;
/// [`Rule::matches`]: a TCP segment with SYN set and ACK clear.
pub const RULE_MATCH_SYN: u32 = 1 << 4;
/// [`Rule::matches`]: an IP fragment, first or later.
pub const RULE_MATCH_FRAGMENT: u32 = 1 << 5;
/// [`Rule::matches`]: the IP packet's length within [`Rule::min_len`]..=[`Rule::max_len`].
pub const RULE_MATCH_LENGTH: u32 = 1 << 6;

/// [`Rule::protocol`]: TCP.
pub const RULE_PROTOCOL_TCP: u8 = 6;
/// [`Rule::protocol`]: UDP.
pub const RULE_PROTOCOL_UDP: u8 = 17;
/// [`Rule::protocol`]: ICMP, or ICMPv6 for IPv6.
pub const RULE_PROTOCOL_ICMP: u8 = 1;
/// [`Rule::protocol`]: any other protocol (the program does not keep its number).
pub const RULE_PROTOCOL_OTHER: u8 = 255;

/// [`Rule::action`]: count what matches, pass it (a dry run).
pub const RULE_ACTION_COUNT: u8 = 0;
/// [`Rule::action`]: count what matches and drop it.
pub const RULE_ACTION_DROP: u8 = 1;
/// [`Rule::action`]: count what matches, pass [`Rule::allowance`] frames a window, drop the
/// rest.
pub const RULE_ACTION_RATE_LIMIT: u8 = 2;

/// Name of the global-data section (a one-entry array map, as [`SETTINGS_MAP`]) that holds
/// the [`CaptureGlobals`]: apart from the settings, so that whoever runs the captures can
/// write it without the rest of the datapath.
pub const CAPTURE_GLOBALS_MAP: &str = ".data.captures";
/// Name of the LPM trie of IPv4 capture sources: a network to the [`CaptureSet`] of the
/// captures whose source network holds it.
pub const CAPTURE_SOURCES_V4_MAP: &str = "CAPTURE_SOURCES_V4";
/// Name of the LPM trie of IPv6 capture sources.
pub const CAPTURE_SOURCES_V6_MAP: &str = "CAPTURE_SOURCES_V6";
/// Name of the LPM trie of IPv4 capture destinations, as [`CAPTURE_SOURCES_V4_MAP`].
pub const CAPTURE_DESTINATIONS_V4_MAP: &str = "CAPTURE_DESTINATIONS_V4";
/// Name of the LPM trie of IPv6 capture destinations.
pub const CAPTURE_DESTINATIONS_V6_MAP: &str = "CAPTURE_DESTINATIONS_V6";
/// Name of the array of [`CaptureSlot`]s, by capture index.
pub const CAPTURE_SLOTS_MAP: &str = "CAPTURE_SLOTS";
/// Name of the per-CPU array of [`CaptureCounts`], by capture index.
pub const CAPTURE_COUNTS_MAP: &str = "CAPTURE_COUNTS";
/// Name of the ring buffer of [`CaptureRecord`]s.
pub const CAPTURE_RING_MAP: &str = "CAPTURE_RING";
/// Most captures at once: the bits of a [`CaptureSet`].
pub const MAX_CAPTURES: usize = 32;
/// The capture ring's size: its own, so that captures never take the room of the samples
/// inspection needs.
pub const DEFAULT_CAPTURE_RING_BYTES: u32 = 4 << 20;
/// Most bytes of a frame a capture copies ([`CaptureGlobals::snap_len`]).
pub const CAPTURE_MAX_SNAP_LEN: usize = SAMPLE_MAX_SNAP_LEN;
/// [`CaptureGlobals::active`]: some capture has a source network.
pub const CAPTURE_BY_SOURCE: u32 = 1;
/// [`CaptureGlobals::active`]: some capture has a destination network.
pub const CAPTURE_BY_DESTINATION: u32 = 2;

/// What the capture check needs, written by userspace as a whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureGlobals {
    /// [`CAPTURE_BY_SOURCE`] and [`CAPTURE_BY_DESTINATION`] bits; 0 (the default, and
    /// whenever no capture exists): the tries are not looked at, one comparison per frame.
    pub active: u32,
    /// Most bytes of a frame copied, 1 to [`CAPTURE_MAX_SNAP_LEN`].
    pub snap_len: u32,
}

/// The captures (bits by index) whose network holds a network of a capture trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSet {
    /// Bit `i`: capture `i`.
    pub captures: u32,
}

/// One capture: which of the frames its network gives it keeps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureSlot {
    /// What else a frame must be (protocol, ports, SYN, fragment: a [`Rule`]'s match, its
    /// action unused); `matches` 0: the capture is not in use.
    pub filter: Rule,
    /// One frame in `every_mask + 1` (a power of two) is kept on each CPU...
    pub every_mask: u32,
    /// ...after each CPU's first `first` frames, all kept.
    pub first: u32,
}

/// What one capture saw on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Frames of its subject (its network and filter).
    pub seen: u64,
    /// Of them, those copied to the ring.
    pub taken: u64,
    /// Of them, those the ring had no room for.
    pub lost: u64,
}

/// What precedes a captured frame in [`CAPTURE_RING_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureHeader {
    /// `bpf_ktime_get_ns` when the frame was seen (monotonic, since boot).
    pub time_ns: u64,
    /// The captures that keep it (bits by index).
    pub captures: u32,
    /// Interface the frame came in on (0 in BPF_PROG_TEST_RUN).
    pub ifindex: u32,
    /// Bytes of the frame in [`CaptureRecord::data`].
    pub captured_len: u32,
    /// The frame's length.
    pub original_len: u32,
}

/// A captured frame as the capture program builds it (per-CPU scratch); a ring record is its
/// first `size_of::<CaptureHeader>() + captured_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// About the frame.
    pub header: CaptureHeader,
    /// Its first [`CaptureHeader::captured_len`] bytes.
    pub data: [u8; CAPTURE_MAX_SNAP_LEN],
}

/// Name of the program tail-called for a frame whose source or destination an indicator
/// trie lists: it records the match, then does what the main program does after.
pub const INTEL_PROGRAM_NAME: &str = "netwatch_intel";
/// Name of [`INTEL_PROGRAM_NAME`]'s twin for frames to be sampled for inspection after.
pub const INTEL_SAMPLED_PROGRAM_NAME: &str = "netwatch_intel_sampled";
/// Name of the program array holding [`INTEL_PROGRAM_NAME`] (slot 0) and
/// [`INTEL_SAMPLED_PROGRAM_NAME`] (slot 1).
pub const INTEL_CHECK_MAP: &str = "INTEL_CHECK";
/// Name of the global-data section (a one-entry array map) of the [`IntelGlobals`].
pub const INTEL_GLOBALS_MAP: &str = ".data.intel";
/// Name of the LPM trie of the IPv4 networks the indicator feeds list: a network to its
/// prefix length.
pub const INTEL_V4_MAP: &str = "INTEL_NETS_V4";
/// Name of the LPM trie of the IPv6 networks the indicator feeds list.
pub const INTEL_V6_MAP: &str = "INTEL_NETS_V6";
/// Names of the two hash maps of [`IntelHitKey`] to [`IntelHitCount`]: the frames of listed
/// networks, in the window of [`Settings::overflow_window`]'s low bit, as the overflow's.
pub const INTEL_HITS_MAPS: [&str; 2] = ["INTEL_HITS_0", "INTEL_HITS_1"];
/// Name of the per-CPU array of [`IntelCounts`].
pub const INTEL_COUNTS_MAP: &str = "INTEL_COUNTS";
/// Most networks of each family in the indicator tries (they take memory only as filled).
pub const INTEL_MAX_NETWORKS: u32 = 1 << 21;
/// Most (listed network, local host, side) matches of one window.
pub const INTEL_MAX_HITS: u32 = 16_384;
/// [`IntelGlobals::active`]: the IPv4 trie holds a network.
pub const INTEL_V4: u32 = 1;
/// [`IntelGlobals::active`]: the IPv6 trie holds a network.
pub const INTEL_V6: u32 = 2;
/// [`IntelHitKey::side`]: the listed network holds the frame's source.
pub const INTEL_SIDE_SOURCE: u8 = 1;
/// [`IntelHitKey::side`]: the listed network holds the frame's destination.
pub const INTEL_SIDE_DESTINATION: u8 = 2;

/// What the indicator check needs, written by userspace as a whole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntelGlobals {
    /// [`INTEL_V4`] and [`INTEL_V6`] bits; 0 (the default, and whenever no feed lists an
    /// address): the tries are not looked at, one comparison per frame.
    pub active: u32,
}

/// The frames of one listed network with one peer: which network (the address masked to
/// the listed prefix), on which side of the frames, and the other address of the frames
/// (the local host, for a listed source).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntelHitKey {
    /// The listed network's address, in network byte order (IPv4 in the first four bytes).
    pub network: [u8; 16],
    /// The frames' other address.
    pub peer: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// The listed network's prefix length.
    pub prefix_len: u8,
    /// [`INTEL_SIDE_SOURCE`] or [`INTEL_SIDE_DESTINATION`].
    pub side: u8,
    /// Always zero: the kernel compares keys as raw bytes.
    pub _pad: [u8; 5],
}

/// What one [`IntelHitKey`] saw in a window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntelHitCount {
    /// Frames.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The listed address of the first frame (an address of the network).
    pub example: [u8; 16],
}

/// The indicator check's counters of one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntelCounts {
    /// Frames a listed network holds (one for each side it holds).
    pub listed: Counter,
    /// Of them, those whose match found no room in its window's map: counted here only.
    pub unrecorded: Counter,
}

/// The rules that may apply to the destinations of one network of a rule trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// Their indexes, lowest first, then [`RULE_NONE`].
    pub rules: [u8; RULES_PER_DESTINATION],
}

/// A signature rule: the fields a frame must match (its destination is the tries'), and the
/// action.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The fields that must match: `RULE_MATCH_*` bits, [`RULE_MATCH_IN_USE`] always.
    pub matches: u32,
    /// A `RULE_PROTOCOL_*` class.
    pub protocol: u8,
    /// A `RULE_ACTION_*`.
    pub action: u8,
    /// The transport source port (a reflected service's).
    pub src_port: u16,
    /// The transport destination port.
    pub dst_port: u16,
    /// The shortest IP packet length that matches.
    pub min_len: u16,
    /// The longest.
    pub max_len: u16,
    /// Always zero.
    pub _pad: u16,
    /// The frames a rate-limited rule passes per window, all CPUs together.
    pub allowance: u32,
    /// A rate-limit window's nanoseconds (not 0 for a rate-limited rule).
    pub window_ns: u32,
}

/// What one rule matched, and of that what it dropped, on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    /// Frames that matched the rule (every one it decided).
    pub matched: Counter,
    /// Of them, those dropped; the rest passed.
    pub dropped: Counter,
}

/// A rate-limited rule's current window, shared by every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleBucket {
    /// The window: the clock's nanoseconds divided by [`Rule::window_ns`].
    pub window: u64,
    /// Frames of the window counted so far (passed while within the allowance).
    pub passed: u64,
}

/// The frames of the current early slot, all CPUs together, in [`EARLY_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlyCount {
    /// Frames added since the slot started.
    pub packets: u64,
    /// `bpf_ktime_get_ns` when it started: when the last slot filled.
    pub slot_start_ns: u64,
    /// `bpf_ktime_get_ns` of the last [`EarlyEvent`].
    pub posted_ns: u64,
    /// Slots in a row that filled within their time, up to the current one.
    pub run_slots: u64,
    /// When the first of them started.
    pub run_start_ns: u64,
    /// Their frames.
    pub run_packets: u64,
}

/// What follows the [`SampleHeader`] of a record whose reason is [`SAMPLE_REASON_EARLY`]:
/// a run of slots that each filled within their time lasted `elapsed_ns` (at least
/// [`EARLY_SLOTS`] slots' time), with `packets` frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlyEvent {
    /// Frames of the run of slots.
    pub packets: u64,
    /// The time the run took, from its first slot's start.
    pub elapsed_ns: u64,
}

/// The local networks: frames to their hosts are counted per destination. Each family has
/// a list of its own, so that a frame is compared with its family's networks only, each in
/// one or two loads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalNetworks {
    /// IPv4: the network address as a u32 in memory order (masked) in the low half, its
    /// mask in the high half.
    pub v4: [u64; MAX_LOCAL_NETWORKS],
    /// IPv6: the address's first two words in memory order (as [`SourceKey::words`]),
    /// masked, then their masks.
    pub v6: [[u64; 4]; MAX_LOCAL_NETWORKS],
}

impl Default for LocalNetworks {
    fn default() -> Self {
        Self {
            v4: [0; MAX_LOCAL_NETWORKS],
            v6: [[0; 4]; MAX_LOCAL_NETWORKS],
        }
    }
}

/// A local host's traffic in one window of one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestinationBucket {
    /// The host; family 0 marks a free bucket.
    pub key: SourceKey,
    /// What it received, counted as a source's traffic (`packets` left 0).
    pub stats: SourceStats,
    /// Linear-counting bitmap of its source addresses.
    pub sources: [u64; DESTINATION_SOURCE_BITS / 64],
    /// Its top senders by IPv4 /24 and IPv6 /48 prefix (keys as [`PrefixCount::key`]'s wide
    /// or narrow ones: family in the top byte; a /24 in the low 24 bits, a /48 in the low 48),
    /// kept by the Space-Saving algorithm (Metwally et al., 2005): a prefix not among them
    /// takes the place of the smallest and starts from its count, so a count is an upper bound,
    /// exceeding the truth by at most the count it took over.
    pub senders: [PrefixCount; DESTINATION_SENDERS],
    /// The destination port of its TCP and UDP first fragments that holds the most of them,
    /// by the majority vote of Boyer and Moore (1981): a frame to this port adds a vote, a
    /// frame to another takes one away, and a port whose votes are gone gives its place to
    /// the next frame's. A port with more than half the frames ends here, and whatever ends
    /// here had at least [`DestinationBucket::port_votes`] of them.
    pub port: u32,
    /// The votes of [`DestinationBucket::port`]: a lower bound of its frames.
    pub port_votes: u32,
    /// The amplification service (source port) that holds the most of its reflected
    /// frames, by the same vote: several services may answer one host (its own DNS
    /// resolver's answers during an NTP reflection), and the one that floods it is the one
    /// a rule must name, not the last one heard.
    pub service: u32,
    /// The votes of [`DestinationBucket::service`].
    pub service_votes: u32,
}

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Frames.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A source prefix without a slot and its traffic, in a table of an [`OverflowWindow`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCount {
    /// The family in the top byte ([`FAMILY_IPV4`], [`FAMILY_IPV6`]), the prefix's bits right
    /// below it, right-aligned (a /16 in the low 16 bits, a /48 in the low 48): never zero. Zero
    /// marks a free bucket.
    pub key: u64,
    /// Its traffic in the window.
    pub traffic: Counter,
}

/// Where traffic without a slot goes: a destination address and a protocol and port class.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetKey {
    /// The destination address in network byte order, IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; 0 marks a free bucket.
    pub family: u8,
    /// `TARGET_SYN` ... `TARGET_OTHER`.
    pub kind: u8,
    /// The destination port, [`TARGET_HIGH_PORTS`] for it and every port above, 0 for kinds
    /// without ports; for [`TARGET_REFLECTED`] the amplification service's (source) port.
    pub port: u16,
    /// Always zero.
    pub _pad: u32,
}

impl TargetKey {
    /// The key as three words, in memory order: what the BPF program compares.
    pub const fn words(&self) -> [u64; 3] {
        // SAFETY: `TargetKey` is `repr(C)`, 24 bytes of integers without padding, as
        // [u64; 3], and every bit pattern is valid for both.
        unsafe { core::mem::transmute::<Self, [u64; 3]>(*self) }
    }

    /// The key whose bytes are those of `words` in memory order.
    pub const fn from_words(words: [u64; 3]) -> Self {
        // SAFETY: as in `words`.
        unsafe { core::mem::transmute::<[u64; 3], Self>(words) }
    }
}

/// A destination of traffic without a slot and that traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetCount {
    /// The destination and class.
    pub key: TargetKey,
    /// Its traffic in the window.
    pub traffic: Counter,
}

/// Traffic without a slot (the overflow) of one CPU during one window, broken down in
/// fixed-size tables: by wide source prefix (IPv4 /16, IPv6 /48), by narrow one (IPv4 /24,
/// IPv6 /56) and by destination and class, with estimates of the distinct sources and wide
/// prefixes. In every table the buckets and `other` add up to `total`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverflowWindow {
    /// Every overflow frame of the window.
    pub total: Counter,
    /// Of them, those whose wide prefix found no bucket.
    pub wide_other: Counter,
    /// Those whose narrow prefix found no bucket.
    pub narrow_other: Counter,
    /// Those whose destination and class found no bucket.
    pub target_other: Counter,
    /// Wide prefixes.
    pub wide: [PrefixCount; OVERFLOW_BUCKETS],
    /// Narrow prefixes.
    pub narrow: [PrefixCount; OVERFLOW_BUCKETS],
    /// Destinations.
    pub targets: [TargetCount; OVERFLOW_BUCKETS],
    /// Linear-counting bitmap of the source addresses.
    pub sources: [u64; OVERFLOW_SOURCE_BITS / 64],
    /// Linear-counting bitmap of the wide prefixes.
    pub prefixes: [u64; OVERFLOW_PREFIX_BITS / 64],
}

impl Default for OverflowWindow {
    fn default() -> Self {
        Self {
            total: Counter::default(),
            wide_other: Counter::default(),
            narrow_other: Counter::default(),
            target_other: Counter::default(),
            wide: [PrefixCount::default(); OVERFLOW_BUCKETS],
            narrow: [PrefixCount::default(); OVERFLOW_BUCKETS],
            targets: [TargetCount::default(); OVERFLOW_BUCKETS],
            sources: [0; OVERFLOW_SOURCE_BITS / 64],
            prefixes: [0; OVERFLOW_PREFIX_BITS / 64],
        }
    }
}

/// What the generator program does with each frame, in [`GENERATOR_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorState {
    /// Distinct sources to cycle through (at least 1): frame `n` gets source `n % sources` in
    /// the low 24 bits of its IPv4 source address, or the low 32 bits of its IPv6 one.
    pub sources: u32,
    /// Frames the program has handled: it takes the next number and adds one. Userspace
    /// reads it after a run to know how many frames the run handed to the interface.
    pub next: u32,
    /// Bytes of [`GeneratorState::header`] in use: the frame's first bytes, at most
    /// [`GENERATOR_HEADER_LEN`].
    pub header_len: u32,
    /// Always zero.
    pub _pad: u32,
    /// When the program handled frame 0 (`next` was 0), on the kernel's monotonic clock
    /// (CLOCK_MONOTONIC, ns); 0 before it has: the flood's first frame, which userspace cannot
    /// time itself (the kernel first sets a live-frame run up, for some 25 ms).
    pub first_ns: u64,
    /// The frame's first bytes, which the program writes into every frame before its source.
    /// The kernel recycles the pages of live frames without copying the frame into them
    /// again, and the receiving end's stack may have changed them in place (taking a VLAN tag
    /// out moves the Ethernet header, for one).
    pub header: [u8; GENERATOR_HEADER_LEN],
}

/// Bytes of a frame that [`GeneratorState`] keeps: every header the generator builds (two
/// VLAN tags, IPv6, UDP or TCP) fits.
pub const GENERATOR_HEADER_LEN: usize = 128;

impl Default for GeneratorState {
    fn default() -> Self {
        Self {
            sources: 1,
            next: 0,
            header_len: 0,
            _pad: 0,
            first_ns: 0,
            header: [0; GENERATOR_HEADER_LEN],
        }
    }
}

/// A per-CPU token bucket for sampling.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens, in billionths of a token.
    pub nano_tokens: u64,
    /// `bpf_ktime_get_ns` at the last refill.
    pub last_ns: u64,
}

/// What precedes a sampled frame in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    /// `bpf_ktime_get_ns` when the frame was seen (monotonic, since boot).
    pub time_ns: u64,
    /// Interface the frame came in on (0 in BPF_PROG_TEST_RUN).
    pub ifindex: u32,
    /// Bytes of the frame in [`Sample::data`].
    pub captured_len: u32,
    /// The frame's length.
    pub original_len: u32,
    /// Why it was sampled: [`SAMPLE_REASON_PORT`] or [`SAMPLE_REASON_ALL_TCP`].
    pub reason: u32,
}

/// A sample as the sampler builds it in [`SAMPLE_SCRATCH_MAP`]. A ring buffer record is its
/// first `size_of::<SampleHeader>() + captured_len` bytes: the header, then the captured bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// About the frame.
    pub header: SampleHeader,
    /// Its first [`SampleHeader::captured_len`] bytes; the rest is undefined.
    pub data: [u8; SAMPLE_MAX_SNAP_LEN],
}

/// Whole-interface counters of one CPU. Userspace sums the per-CPU copies.
///
/// Invariant, for packets and for bytes alike:
/// `sum over sources + overflow + non_ip + malformed == total`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    /// Every frame the program saw.
    pub total_packets: u64,
    /// Their bytes.
    pub total_bytes: u64,
    /// Frames whose EtherType (after at most two VLAN tags) is neither IPv4 nor IPv6.
    pub non_ip_packets: u64,
    /// Their bytes.
    pub non_ip_bytes: u64,
    /// IP frames cut short or invalid before the source address could be trusted (truncated
    /// Ethernet, VLAN or IP header; bad version, IHL or total length). Attributed to no source.
    pub malformed_packets: u64,
    /// Their bytes.
    pub malformed_bytes: u64,
    /// Frames of a source that has no slot and found none free.
    pub overflow_packets: u64,
    /// Their bytes.
    pub overflow_bytes: u64,
    /// Of the overflow frames: TCP ones (as [`SourceStats::tcp_packets`]). With the four
    /// below, the protocol mix of traffic that has no slot, so that a flood from spoofed
    /// sources is still typed.
    pub overflow_tcp_packets: u64,
    /// Of the overflow frames: UDP ones.
    pub overflow_udp_packets: u64,
    /// Of the overflow frames: ICMP and ICMPv6 ones.
    pub overflow_icmp_packets: u64,
    /// Of the overflow frames: TCP SYN without ACK.
    pub overflow_syn_packets: u64,
    /// Of the overflow frames: IP fragments (as [`SourceStats::fragment_packets`]).
    pub overflow_fragment_packets: u64,
    /// Of the overflow frames: UDP from an amplification port (as
    /// [`SourceStats::reflected_packets`]).
    pub overflow_reflected_packets: u64,
    /// Frames attributed to a source but shorter than their IP header says, or whose headers
    /// after the IP header are cut. They are counted for their source as well.
    pub truncated_packets: u64,
    /// Frames copied to the sample ring buffer.
    pub sampled_packets: u64,
    /// Frames to sample that the token bucket refused (over the configured rate).
    pub sample_capped_packets: u64,
    /// Frames to sample that found the ring buffer full (userspace reading too slowly).
    pub sample_ring_full_packets: u64,
    /// Of the sampled frames, those longer than [`Settings::sample_snap_len`]: cut there.
    pub sample_truncated_packets: u64,
}

/// What the XDP program keeps per CPU, in one value so that a packet finds all of it with one
/// lookup (each per-CPU lookup costs a few nanoseconds of the per-packet budget).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// This CPU's counters.
    pub globals: GlobalStats,
    /// Where this CPU's region starts in [`SOURCE_VALUES_MAP`]: CPU number × slots for the
    /// per-CPU layout, 0 for the shared one. Written by userspace at load time, so that a
    /// packet finds its region without a helper call (a call makes the compiler save and
    /// restore the registers live across it).
    pub region: u32,
    /// The source port of this CPU's last [`GlobalStats::overflow_reflected_packets`]; 0 for
    /// none. Written, not counted.
    pub overflow_reflected_port: u32,
    /// [`Settings::free_generation`] + 1 when this CPU last found the free-slot queue empty
    /// (0: never); while it is current, a new source overflows without trying the queue.
    pub free_empty_at: u32,
    /// This CPU's first [`OverflowWindow`]: twice its number, written by userspace at load
    /// time.
    pub windows: u32,
    /// Frames this CPU counted toward the early limit and has not added to the shared
    /// [`EarlyCount`] yet.
    pub early_pending: u32,
    /// Frames this CPU lets go by before it counts the next one per destination, while
    /// destinations are sampled ([`Settings::destination_sample`] `N`): drawn at each counted
    /// frame as the sum of two uniform numbers below `N`, `N - 1` on average, so one frame
    /// in `N` is counted.
    pub destination_skip: u32,
    /// The state of this CPU's random numbers for [`CpuState::destination_skip`] (a Weyl
    /// sequence, mixed).
    pub destination_random: u32,
    /// Always zero.
    pub _pad: u32,
    /// This CPU's cache of the slots of recent sources, direct-mapped by a hash of the address.
    /// A line holds a slot only: the program trusts it for a source only while the slot's key
    /// in [`SLOT_KEYS_MAP`] is that source, so lines never need clearing when a slot changes
    /// hands, and a line never written (slot 0) is as good as any other guess.
    pub source_cache: [u32; SOURCE_CACHE_ENTRIES as usize],
}

impl Default for CpuState {
    fn default() -> Self {
        Self {
            globals: GlobalStats::default(),
            region: 0,
            overflow_reflected_port: 0,
            free_empty_at: 0,
            windows: 0,
            early_pending: 0,
            destination_skip: 0,
            destination_random: 0,
            _pad: 0,
            source_cache: [0; SOURCE_CACHE_ENTRIES as usize],
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with no implicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above; u64 counters, then two u32.
    unsafe impl aya::Pod for super::SourceStats {}
    // SAFETY: as above; every field is a u64.
    unsafe impl aya::Pod for super::GlobalStats {}
    // SAFETY: as above; u64 counters, then u32 fields (an even number of them).
    unsafe impl aya::Pod for super::CpuState {}
    // SAFETY: as above; the stats (a multiple of 8 bytes), u32 and u64 arrays with the u32
    // pair first, a u64; no implicit padding.
    unsafe impl aya::Pod for super::SourceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: as above; two u64.
    unsafe impl aya::Pod for super::TokenBucket {}
    // SAFETY: as above; four u32.
    unsafe impl aya::Pod for super::QueueJob {}
    // SAFETY: as above; four u32, then bytes (a multiple of 8 of them).
    unsafe impl aya::Pod for super::GeneratorState {}
    // SAFETY: as above; u64 counters and arrays of 8-aligned plain data.
    unsafe impl aya::Pod for super::OverflowWindow {}
    // SAFETY: as above; u64 words.
    unsafe impl aya::Pod for super::LocalNetworks {}
    // SAFETY: as above; a key, counters and arrays of 8-aligned plain data.
    unsafe impl aya::Pod for super::DestinationBucket {}
    // SAFETY: as above; eight bytes.
    unsafe impl aya::Pod for super::RuleSet {}
    // SAFETY: as above; a u32, two u8, five u16 and two u32 in that order, 24 bytes without
    // implicit padding.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as above; two counters of two u64.
    unsafe impl aya::Pod for super::RuleCounts {}
    // SAFETY: as above; two u64.
    unsafe impl aya::Pod for super::RuleBucket {}
    // SAFETY: as above; two u64.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above; six u64.
    unsafe impl aya::Pod for super::EarlyCount {}
    // SAFETY: as above; two u32.
    unsafe impl aya::Pod for super::CaptureGlobals {}
    // SAFETY: as above; one u32.
    unsafe impl aya::Pod for super::CaptureSet {}
    // SAFETY: as above; a rule (24 bytes) and two u32.
    unsafe impl aya::Pod for super::CaptureSlot {}
    // SAFETY: as above; three u64.
    unsafe impl aya::Pod for super::CaptureCounts {}
    // SAFETY: as above; one u32.
    unsafe impl aya::Pod for super::IntelGlobals {}
    // SAFETY: as above; 40 bytes, the last five explicit padding.
    unsafe impl aya::Pod for super::IntelHitKey {}
    // SAFETY: as above; two u64 and 16 bytes.
    unsafe impl aya::Pod for super::IntelHitCount {}
    // SAFETY: as above; two counters of two u64.
    unsafe impl aya::Pod for super::IntelCounts {}
}
