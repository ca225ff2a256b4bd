//! The baselines that benchmarks compare the netwatch program's cost with: an XDP program that
//! only returns XDP_PASS; one that only parses the frame as netwatch does (the least
//! netwatch's per-frame work can cost before it counts anything); and one that only counts
//! the frame for a fixed source the way netwatch finds a source outside its cache, a hash
//! lookup then an array element (the least any per-source counting through a BPF hash map
//! can cost). And the traffic generator's program, which sends frames out of an interface
//! when the benchmarks run it in live-frame mode.
#![no_std]
#![no_main]

#[path = "../parse.rs"]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use netwatch_common::{GENERATOR_HEADER_LEN, GeneratorState, SourceKey, SourceValue};

use self::parse::{
    Class, ETH_P_IPV4, ETH_P_IPV6, Verdict, is_connection_attempt, is_vlan, parse, transport_ports,
};

/// Passes every frame untouched.
#[xdp]
pub fn noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// What the parse floor derives from each frame, folded into one word so that none of the
/// parse can be optimised away. A global, read and written at a fixed address: a map lookup
/// would add its own cost to the floor. (CPUs running the floor at once may lose each other's
/// folds; nothing reads the word.)
#[unsafe(no_mangle)]
static mut PARSE_SINK: u64 = 0;

/// Parses the frame as netwatch does (headers, source address, protocol class, ports, SYN)
/// and counts nothing.
#[xdp]
pub fn parse_floor(ctx: XdpContext) -> u32 {
    let folded = match parse(&ctx) {
        Verdict::NonIp => 1,
        Verdict::Malformed => 2,
        Verdict::Source(parsed) => {
            let [a, b, c] = parsed.key.words();
            let carries_ports =
                parsed.first_fragment && matches!(parsed.class, Class::TcpFirst | Class::Udp);
            let ports = if carries_ports {
                transport_ports(&ctx, parsed.l4_offset)
            } else {
                None
            };
            let syn =
                parsed.class == Class::TcpFirst && is_connection_attempt(&ctx, parsed.l4_offset);
            a ^ b.rotate_left(1)
                ^ c.rotate_left(2)
                ^ u64::from(parsed.dst_fold)
                ^ (parsed.l4_offset as u64) << 32
                ^ (parsed.l3_offset as u64) << 56
                ^ u64::from(parsed.truncated) << 48
                ^ u64::from(syn) << 49
                ^ u64::from(parsed.fragment) << 47
                ^ (parsed.class as u64) << 50
                ^ ports.map_or(0, |(src, dst)| u64::from(src) << 16 | u64::from(dst))
        }
    };
    // SAFETY: a global only this program touches; volatile so that the fold is kept.
    unsafe {
        let sink = &raw mut PARSE_SINK;
        sink.write_volatile(sink.read_volatile() ^ folded);
    }
    xdp_action::XDP_PASS
}

/// One entry in use: address -> slot, of the same key as netwatch's.
#[map]
static FLOOR_SLOTS: HashMap<SourceKey, u32> = HashMap::with_max_entries(16, 0);

/// This CPU's value of each slot, of the same type as netwatch's.
#[map]
static FLOOR_VALUES: PerCpuArray<SourceValue> = PerCpuArray::with_max_entries(16, 0);

/// Adds the frame to one fixed source's packets and bytes, as netwatch finds a source: the
/// slot from a hash lookup, then the value in an array. Inserts the source the first time.
#[xdp]
pub fn lookup_floor(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let key = SourceKey::ipv4([192, 0, 2, 1]);
    match FLOOR_SLOTS.get_ptr(key) {
        Some(slot) => {
            // SAFETY: a live map value.
            let slot = unsafe { *slot };
            if let Some(value) = FLOOR_VALUES.get_ptr_mut(slot) {
                // SAFETY: this CPU's copy of an array element.
                let value = unsafe { &mut *value };
                value.stats.packets += 1;
                value.stats.bytes += len;
            }
        }
        None => {
            let _ = FLOOR_SLOTS.insert(key, 0, 0);
        }
    }
    xdp_action::XDP_PASS
}

/// What [`generate`] does, written by userspace between runs. Global data in a section of
/// its own, as netwatch's settings.
#[unsafe(link_section = ".data.generator")]
#[unsafe(no_mangle)]
static mut GENERATOR: GeneratorState = GeneratorState {
    sources: 1,
    next: 0,
    header_len: 0,
    _pad: 0,
    first_ns: 0,
    header: [0; GENERATOR_HEADER_LEN],
};

/// The traffic generator. Userspace runs it with BPF_PROG_TEST_RUN in live-frame mode on a
/// frame it built, naming an interface of its network namespace in the run's context: the
/// program gives each frame the next source of the cycle and returns XDP_TX, which the kernel
/// turns into a transmission out of that interface (to the other end of a veth pair, in
/// batches, without a socket or an skb on the sending side). A frame that is neither IPv4 nor
/// IPv6 goes out as it is.
#[xdp]
pub fn generate(mut ctx: XdpContext) -> u32 {
    let state = &raw mut GENERATOR;
    // SAFETY: a global that userspace writes only between runs; the runs of one
    // BPF_PROG_TEST_RUN call follow one another on one CPU, and one thread makes the calls.
    // bpf_ktime_get_ns has no preconditions.
    let (source, header_len) = unsafe {
        let n = (*state).next;
        (*state).next = n.wrapping_add(1);
        if n == 0 {
            (*state).first_ns = bpf_ktime_get_ns();
        }
        (n % (*state).sources.max(1), (*state).header_len as usize)
    };
    // The frame's headers as userspace built them, a word at a time.
    for word in 0..GENERATOR_HEADER_LEN / 8 {
        let at = word * 8;
        if at + 8 > header_len {
            break;
        }
        let Some(bytes) = bytes_mut::<8>(&mut ctx, at) else {
            break;
        };
        // SAFETY: as above; `at + 8` is within the header by the loop's bound.
        *bytes = unsafe {
            *(&raw const (*state).header)
                .cast::<u8>()
                .add(at)
                .cast::<[u8; 8]>()
        };
    }
    set_source(&mut ctx, source);
    xdp_action::XDP_TX
}

/// `N` writable bytes of the frame at `offset`, or `None` when the frame ends before them.
#[inline(always)]
fn bytes_mut<const N: usize>(ctx: &mut XdpContext, offset: usize) -> Option<&mut [u8; N]> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return None;
    }
    // SAFETY: the N bytes lie inside the frame, checked just above; an XDP program may write
    // its frame.
    Some(unsafe { &mut *((start + offset) as *mut [u8; N]) })
}

/// Writes source number `n` into the low 24 bits of an IPv4 source address (updating the
/// header checksum, RFC 1624) or the low 32 bits of an IPv6 one, after at most two VLAN tags.
#[inline(always)]
fn set_source(ctx: &mut XdpContext, n: u32) {
    let mut offset = 12;
    for _ in 0..2 {
        let Some(tpid) = bytes_mut::<2>(ctx, offset) else {
            return;
        };
        if !is_vlan(u16::from_be_bytes(*tpid)) {
            break;
        }
        offset += 4;
    }
    let Some(ether_type) = bytes_mut::<2>(ctx, offset) else {
        return;
    };
    let l3 = offset + 2;
    match u16::from_be_bytes(*ether_type) {
        ETH_P_IPV4 => {
            let Some(header) = bytes_mut::<20>(ctx, l3) else {
                return;
            };
            let word = |h: &[u8; 20], at: usize| u32::from(u16::from_ne_bytes([h[at], h[at + 1]]));
            let (old_high, old_low) = (word(header, 12), word(header, 14));
            let [_, a, b, c] = n.to_be_bytes();
            header[13] = a;
            header[14] = b;
            header[15] = c;
            let (new_high, new_low) = (word(header, 12), word(header, 14));
            // HC' = ~(~HC + ~m + m') over the two changed 16-bit words; the one's complement
            // sum is the same in either byte order, so the words are read as they lie.
            let mut sum = (!word(header, 10) & 0xffff)
                + (!old_high & 0xffff)
                + new_high
                + (!old_low & 0xffff)
                + new_low;
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            let checksum = (!sum as u16).to_ne_bytes();
            header[10] = checksum[0];
            header[11] = checksum[1];
        }
        ETH_P_IPV6 => {
            if let Some(low) = bytes_mut::<4>(ctx, l3 + 20) {
                *low = n.to_be_bytes();
            }
        }
        _ => {}
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
