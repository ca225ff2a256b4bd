//! Payload sampling: the sampled ports, each CPU's token bucket, and the copy of a frame
//! into the ring buffer, in the tail-called sampler program.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    macros::map,
    maps::{PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use netwatch_common::{
    DEFAULT_SAMPLE_RING_BYTES, GlobalStats, SAMPLE_MAX_SNAP_LEN, SAMPLE_PORT_WORDS, Sample,
    SampleHeader, Settings, TokenBucket,
};

use crate::parse::{MAX_L4_OFFSET, bytes};

/// Sampled frames for userspace to inspect.
#[map]
pub(crate) static SAMPLES: RingBuf = RingBuf::with_byte_size(DEFAULT_SAMPLE_RING_BYTES, 0);

/// Where the sampler builds a sample: header and frame, copied to [`SAMPLES`] as long as they
/// are (a reservation in the ring must have a size known when the program is verified, which
/// would make every record as large as the largest sample).
#[map]
pub(crate) static SAMPLE_SCRATCH: PerCpuArray<Sample> = PerCpuArray::with_max_entries(1, 0);

/// Ports whose packets are sampled: TCP words first, then UDP. Global data, as [`SETTINGS`](crate::maps::SETTINGS).
#[unsafe(link_section = ".data.ports")]
#[unsafe(no_mangle)]
pub(crate) static mut SAMPLE_PORTS: [u64; 2 * SAMPLE_PORT_WORDS as usize] =
    [0; 2 * SAMPLE_PORT_WORDS as usize];

/// The sampling token bucket of each CPU.
#[map]
pub(crate) static SAMPLE_BUCKETS: PerCpuArray<TokenBucket> = PerCpuArray::with_max_entries(1, 0);

/// What the sampler needs to know of a frame, passed through a per-CPU slot.
///
/// Sampling runs in a second XDP program reached by a tail call, so that the verifier checks
/// it once, on its own: inlined after the parser, it was verified again for every parse path
/// (each IPv6 extension-header walk ends with a different, exactly known L4 offset) and the
/// whole exceeded the verifier's budget.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct SampleJob {
    pub(crate) l4_offset: u32,
    /// 1 for TCP, 2 for UDP.
    pub(crate) protocol: u32,
    /// [`SAMPLE_REASON_PORT`] or [`SAMPLE_REASON_ALL_TCP`].
    pub(crate) reason: u32,
}

/// Scratch slot for [`SampleJob`].
#[map]
pub(crate) static SAMPLE_JOBS: PerCpuArray<SampleJob> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: the sampler program, installed by userspace after loading.
#[map]
pub(crate) static SAMPLER: ProgramArray = ProgramArray::with_max_entries(1, 0);

pub(crate) const JOB_TCP: u32 = 1;

pub(crate) const JOB_UDP: u32 = 2;

pub(crate) const NANOS_PER_TOKEN: u64 = 1_000_000_000;

/// Refill at most ten seconds' worth at once, so that `elapsed * rate` cannot overflow.
pub(crate) const MAX_REFILL_NS: u64 = 10_000_000_000;

/// Copies the frame (whose ports the main program found in the sampled set) to the ring
/// buffer if it has an L4 payload, within the token bucket's rate. Every frame that should
/// have been sampled is counted: sampled, capped, or ring full.
#[inline(always)]
pub(crate) fn sample(ctx: &XdpContext, settings: &Settings, globals: &mut GlobalStats) {
    let Some(job) = SAMPLE_JOBS.get(0) else {
        return;
    };
    let len = (ctx.data_end() - ctx.data()) as u64;
    let l4 = (job.l4_offset as usize) & (MAX_L4_OFFSET * 2 - 1);
    let payload_offset = match job.protocol {
        JOB_TCP => {
            let Some(tcp) = bytes::<20>(ctx, l4) else {
                return;
            };
            l4 + usize::from(tcp[12] >> 4) * 4
        }
        JOB_UDP => l4 + 8,
        _ => return,
    };
    if ctx.data() + payload_offset >= ctx.data_end() {
        return;
    }
    let reason = job.reason;
    if !take_token(settings) {
        globals.sample_capped_packets += 1;
        return;
    }
    let Some(scratch) = SAMPLE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let snap_len = u64::from(settings.sample_snap_len.max(1));
    // The copy length, written so that the verifier sees its range, 1..=SAMPLE_MAX_SNAP_LEN:
    // (n - 1) & (MAX - 1) is 0..MAX whatever it knows of n. Frames are at least 14 bytes.
    let wanted = len.min(snap_len).min(SAMPLE_MAX_SNAP_LEN as u64) as u32;
    let captured = (wanted.wrapping_sub(1) & (SAMPLE_MAX_SNAP_LEN as u32 - 1)) + 1;
    // SAFETY: `scratch` is this CPU's Sample; `data` holds SAMPLE_MAX_SNAP_LEN bytes and
    // `captured` is at most that. The record handed to the ring is the header and the
    // `captured` bytes after it, all inside the Sample.
    let sent = unsafe {
        (*scratch).header = SampleHeader {
            time_ns: bpf_ktime_get_ns(),
            ifindex: ctx.ingress_ifindex() as u32,
            captured_len: captured,
            original_len: len as u32,
            reason,
        };
        if bpf_xdp_load_bytes(
            ctx.ctx,
            0,
            core::ptr::addr_of_mut!((*scratch).data).cast(),
            captured,
        ) != 0
        {
            globals.sample_ring_full_packets += 1;
            return;
        }
        let record = core::slice::from_raw_parts(
            scratch.cast::<u8>(),
            size_of::<SampleHeader>() + captured as usize,
        );
        SAMPLES.output::<[u8]>(record, 0)
    };
    if sent.is_err() {
        globals.sample_ring_full_packets += 1;
        return;
    }
    globals.sampled_packets += 1;
    if len > u64::from(captured) {
        globals.sample_truncated_packets += 1;
    }
}

#[inline(always)]
pub(crate) fn port_selected(first_word: u32, port: u16) -> bool {
    let index = (first_word + u32::from(port >> 6)) as usize & (2 * SAMPLE_PORT_WORDS as usize - 1);
    // SAFETY: an element of the global, in bounds by the mask; userspace may rewrite it at any
    // time, hence the volatile read of one whole word.
    let word =
        unsafe { core::ptr::read_volatile((&raw const SAMPLE_PORTS).cast::<u64>().add(index)) };
    word & (1 << (port & 63)) != 0
}

/// Takes one token from this CPU's bucket, refilling it first.
#[inline(always)]
pub(crate) fn take_token(settings: &Settings) -> bool {
    let Some(bucket) = SAMPLE_BUCKETS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let elapsed = now.wrapping_sub(bucket.last_ns).min(MAX_REFILL_NS);
    let capacity = u64::from(settings.sample_burst.max(1)) * NANOS_PER_TOKEN;
    bucket.nano_tokens =
        (bucket.nano_tokens + elapsed * u64::from(settings.sample_rate)).min(capacity);
    bucket.last_ns = now;
    if bucket.nano_tokens >= NANOS_PER_TOKEN {
        bucket.nano_tokens -= NANOS_PER_TOKEN;
        true
    } else {
        false
    }
}
