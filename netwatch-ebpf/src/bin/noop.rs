//! The baselines that benchmarks compare the netwatch program's cost with: an XDP program that
//! only returns XDP_PASS, and one that only counts the frame for a fixed source the way
//! netwatch finds a source, a hash lookup then an array element (the least any per-source
//! counting through a BPF hash map can cost).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use netwatch_common::{SourceKey, SourceValue};

/// Passes every frame untouched.
#[xdp]
pub fn noop(_ctx: XdpContext) -> u32 {
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
