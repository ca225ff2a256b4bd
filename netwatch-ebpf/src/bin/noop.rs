//! The baselines that benchmarks compare the netwatch program's cost with: an XDP program that
//! only returns XDP_PASS; one that only parses the frame as netwatch does (the least
//! netwatch's per-frame work can cost before it counts anything); and one that only counts
//! the frame for a fixed source the way netwatch finds a source outside its cache, a hash
//! lookup then an array element (the least any per-source counting through a BPF hash map
//! can cost).
#![no_std]
#![no_main]

#[path = "../parse.rs"]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use netwatch_common::{SourceKey, SourceValue};

use self::parse::{Class, Verdict, is_connection_attempt, parse, transport_ports};

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
                ^ u64::from(parsed.truncated) << 48
                ^ u64::from(syn) << 49
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
