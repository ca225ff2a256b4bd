//! What one frame brings: its length on the wire and what it adds to its source.

use aya_ebpf::programs::XdpContext;
use netwatch_common::{WIRE_LENGTH_MAGIC, WireLength};

use crate::parse::Class;

/// What a frame adds to its source.
pub(crate) struct Contribution {
    pub(crate) class: Class,
    pub(crate) syn: bool,
    pub(crate) fragment: bool,
    /// The UDP source port when it is an amplification service's, else 0.
    pub(crate) reflected_port: u16,
    pub(crate) len: u64,
    pub(crate) dst_fold: u32,
    pub(crate) dst_port: Option<u16>,
}

/// The frame's length on the wire: the bytes the program sees, unless a replay put the
/// [`WireLength`] of a longer, snapped or runt captured frame in the metadata in front of it.
#[inline(always)]
pub(crate) fn frame_len(ctx: &XdpContext) -> u64 {
    let meta = ctx.metadata();
    let data = ctx.data();
    if meta + size_of::<WireLength>() <= data {
        // SAFETY: the metadata holds a whole WireLength, checked just above.
        let wire = unsafe { &*(meta as *const WireLength) };
        if wire.magic == WIRE_LENGTH_MAGIC {
            return u64::from(wire.len);
        }
    }
    (ctx.data_end() - data) as u64
}
