//! The early check: the interface's rate against the early limit as frames come, and the
//! event it posts in the sample ring when the limit's rate is held.

use aya_ebpf::{bindings::BPF_RB_FORCE_WAKEUP, helpers::bpf_ktime_get_ns, programs::XdpContext};
use netwatch_common::{
    EARLY_REPOST_NS, EARLY_SLOTS, EarlyCount, EarlyEvent, SAMPLE_REASON_EARLY, SampleHeader,
    Settings,
};

use crate::{counters::add, sampling::SAMPLES};

/// The frames of the current early slot, all CPUs together. Global data, as [`SETTINGS`](crate::maps::SETTINGS).
#[unsafe(link_section = ".data.early")]
#[unsafe(no_mangle)]
pub(crate) static mut EARLY: EarlyCount = EarlyCount {
    packets: 0,
    slot_start_ns: 0,
    posted_ns: 0,
    run_slots: 0,
    run_start_ns: 0,
    run_packets: 0,
};

/// Adds a CPU's batch of frames to the shared early count; when the count reaches the limit,
/// starts a new slot, and once slots in a row have each filled within their time for the
/// time of [`EARLY_SLOTS`] slots, says so in the sample ring (at most once per [`EARLY_REPOST_NS`]). A helper call once per limit's worth of frames,
/// an atomic add once per batch: nothing per frame but an add and a comparison.
#[inline(never)]
pub(crate) fn early_check(ctx: &XdpContext, batch: u32, settings: &Settings) {
    let early = &raw mut EARLY;
    // SAFETY: global data every CPU updates: the count with atomic adds; the slot's start and
    // the last post with plain stores, which may race (two CPUs starting a slot at once, a
    // batch lost to a reset), at the cost of a slot measured a little long or short.
    unsafe {
        add(&raw mut (*early).packets, u64::from(batch));
        let packets = (&raw const (*early).packets).read_volatile();
        if packets < u64::from(settings.early_packets) {
            return;
        }
        let now = bpf_ktime_get_ns();
        let start = (&raw const (*early).slot_start_ns).read_volatile();
        (&raw mut (*early).packets).write_volatile(0);
        (&raw mut (*early).slot_start_ns).write_volatile(now);
        let run_slots = &raw mut (*early).run_slots;
        let run_start = &raw mut (*early).run_start_ns;
        let run_packets = &raw mut (*early).run_packets;
        if now.wrapping_sub(start) > u64::from(settings.early_slot_ns) {
            // Too slow: a run starts again with the next slot.
            run_slots.write_volatile(0);
            return;
        }
        if run_slots.read_volatile() == 0 {
            run_start.write_volatile(start);
            run_packets.write_volatile(0);
        }
        let slots = run_slots.read_volatile() + 1;
        run_slots.write_volatile(slots);
        let packets = run_packets.read_volatile() + packets;
        run_packets.write_volatile(packets);
        let elapsed = now.wrapping_sub(run_start.read_volatile());
        // Held for the time of EARLY_SLOTS slots, every slot full in its time: a rate, not a
        // burst (which fills many slots in a few milliseconds).
        if slots < EARLY_SLOTS
            || elapsed < EARLY_SLOTS * u64::from(settings.early_slot_ns)
            || now.wrapping_sub((&raw const (*early).posted_ns).read_volatile()) < EARLY_REPOST_NS
        {
            return;
        }
        // Field by field, each store whole: merged, the compiler's stores of the zeros would
        // straddle 8-byte boundaries of the stack, which the verifier refuses.
        let mut record = core::mem::MaybeUninit::<EarlyRecord>::uninit();
        let at = record.as_mut_ptr();
        (&raw mut (*at).header.time_ns).write_volatile(now);
        (&raw mut (*at).header.ifindex).write_volatile(ctx.ingress_ifindex() as u32);
        (&raw mut (*at).header.captured_len).write_volatile(0);
        (&raw mut (*at).header.original_len).write_volatile(0);
        (&raw mut (*at).header.reason).write_volatile(SAMPLE_REASON_EARLY);
        (&raw mut (*at).event.packets).write_volatile(packets);
        (&raw mut (*at).event.elapsed_ns).write_volatile(elapsed);
        // Handed over in place: a copy would merge the stores again. Said only once it is in
        // the ring: a full ring has the next slot try again. Userspace is woken for this one
        // whatever it has left unread: it is the alert the interval would otherwise wait for.
        if SAMPLES
            .output::<EarlyRecord>(&*at, u64::from(BPF_RB_FORCE_WAKEUP))
            .is_ok()
        {
            (&raw mut (*early).posted_ns).write_volatile(now);
        }
    }
}

/// A record of the sample ring that says the early limit was crossed.
#[repr(C)]
pub(crate) struct EarlyRecord {
    pub(crate) header: SampleHeader,
    pub(crate) event: EarlyEvent,
}
