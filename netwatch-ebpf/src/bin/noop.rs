//! The baselines that benchmarks compare the netwatch program's cost with: an XDP program that
//! only returns XDP_PASS, and one that only counts the frame for a fixed source in a map of
//! the sources map's kind (the least any per-source counting in a BPF hash map can cost).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::LruPerCpuHashMap,
    programs::XdpContext,
};
use netwatch_common::{SourceKey, SourceValue};

/// Passes every frame untouched.
#[xdp]
pub fn noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// One entry in use, of the same key and value as netwatch's sources map.
#[map]
static FLOOR_SOURCES: LruPerCpuHashMap<SourceKey, SourceValue> =
    LruPerCpuHashMap::with_max_entries(16, 0);

/// Adds the frame to one fixed source's packets and bytes, inserting it the first time: one
/// hash lookup per frame and nothing else.
#[xdp]
pub fn lookup_floor(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let key = SourceKey::ipv4([192, 0, 2, 1]);
    match FLOOR_SOURCES.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's slot of a per-CPU map value.
            let value = unsafe { &mut *value };
            value.stats.packets += 1;
            value.stats.bytes += len;
        }
        None => {
            let _ = FLOOR_SOURCES.insert(key, SourceValue::default(), 0);
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
