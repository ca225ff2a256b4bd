//! The netwatch XDP program.
//!
//! For every frame: parse Ethernet, at most two VLAN tags, IPv4 or IPv6 (with a bounded walk
//! over extension headers) and the TCP flags; then count the frame once in the global counters
//! and once for its source address, or in exactly one blind-spot counter (non-IP, malformed,
//! overflow). The program only reads the frame and returns `XDP_PASS`, except for a frame from
//! a source the opt-in ban list holds while userspace has set [`BAN_MODE_DROP`], and a frame
//! a signature rule drops or rate-limits: that one is counted as every frame, counted for its
//! ban or rule, and dropped. It must not log or loop without
//! bound: it runs for every packet of a busy link.
#![no_std]
#![no_main]
// Atomic add and OR on map values: the BPF target has no `Atomic*` read-modify-write methods,
// but LLVM's BPF backend implements these intrinsics.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bans;
mod capture;
mod counters;
mod destinations;
mod early;
mod frame;
mod intel;
mod maps;
mod overflow;
mod parse;
mod rules;
mod sampling;
mod sketches;
mod slots;

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::{debug, warn};
use netwatch_common::{
    BAN_MODE_DROP, BAN_MODE_NONE, CpuState, SAMPLE_PORT_WORDS, SAMPLE_REASON_ALL_TCP,
    SAMPLE_REASON_PORT, SourceKey,
};

use crate::{
    bans::count_ban,
    capture::{CAPTURE_CHECK, CAPTURE_KEEP, captures_in_force, find, keep, may_capture},
    counters::{PerCpu, Shared, SourceTable, reflection_port},
    destinations::{count_destination, sample_destination},
    early::early_check,
    frame::{Contribution, frame_len},
    intel::{INTEL_CHECK, intel_active, may_be_listed, record},
    maps::{CPU_STATE, settings},
    overflow::{break_down, count_overflow},
    parse::{Class, Verdict, is_connection_attempt, parse, transport_ports},
    rules::{RULE_CHECK, check_rules, rules_in_force},
    sampling::{JOB_TCP, JOB_UDP, SAMPLE_JOBS, SAMPLER, SampleJob, port_selected, sample},
    slots::{FREE_SLOTS, Lookup, QUEUE_JOB, STAGED_SLOTS},
};

/// Counts every frame, each source in its CPU's region of [`SOURCE_VALUES`](crate::slots::SOURCE_VALUES), and passes it
/// on; hands frames to sample over to the sampler.
#[xdp]
pub fn netwatch(ctx: XdpContext) -> u32 {
    run::<PerCpu, true>(&ctx)
}

/// [`netwatch`] with one value per source for all CPUs, updated with atomic adds.
#[xdp]
pub fn netwatch_shared(ctx: XdpContext) -> u32 {
    run::<Shared, true>(&ctx)
}

/// [`netwatch`] built without the mitigation checks (bans and signature rules), never
/// attached: the benchmarks time it beside [`netwatch`] to measure what the checks cost while
/// no ban and no rule exists.
#[xdp]
pub fn netwatch_nobans(ctx: XdpContext) -> u32 {
    run::<PerCpu, false>(&ctx)
}

#[inline(always)]
fn run<T: SourceTable, const CHECKS: bool>(ctx: &XdpContext) -> u32 {
    // Written only for a frame with a source while bans (rules) exist: nothing to do per
    // frame otherwise but the comparisons below.
    let mut banned = MaybeUninit::<Banned>::uninit();
    let mut mode = BAN_MODE_NONE;
    let sample = account::<T, CHECKS>(ctx, &mut banned, &mut mode);
    if CHECKS && mode & STAGED != 0 {
        // SAFETY: `account` writes `banned` whenever it sets STAGED.
        let staged = unsafe { banned.assume_init_ref() };
        let intel = intel_active();
        if intel != 0 && may_be_listed(ctx, &staged.key, staged.dst, staged.l3 as usize, intel) {
            // SAFETY: as the rules' tail call below. The indicator program (slot 1: one that
            // samples the frame after) parses the frame again, records the match, then does
            // what follows here: the capture, the ban check, the rules, the sampler. If the
            // slot is empty this returns, and the frame goes on unrecorded.
            unsafe { INTEL_CHECK.tail_call(ctx, u32::from(sample)) };
        }
    }
    if CHECKS && mode & STAGED != 0 && captures_in_force() {
        // SAFETY: `account` writes `banned` whenever it sets STAGED.
        let staged = unsafe { banned.assume_init_ref() };
        if may_capture(&staged.key, staged.dst) {
            // SAFETY: a tail call with this program's own context, as the rules' below. The
            // capture program (slot 1: one that samples the frame after) parses the frame
            // again, captures it, then does what follows here: the ban check, the rules, the
            // sampler. If the slot is empty this returns, and the frame goes on uncaptured.
            unsafe { CAPTURE_CHECK.tail_call(ctx, u32::from(sample)) };
        }
    }
    let mode = mode & !STAGED;
    // Counted above as every frame, so the monitor still sees a banned source's attack and
    // the blind-spot identity holds; only then is the frame dropped. Here, after every path
    // of the count has joined, the verifier walks the checks once rather than on each.
    if CHECKS && mode != BAN_MODE_NONE {
        // SAFETY: `account` writes `banned` whenever it sets a mode.
        let banned = unsafe { banned.assume_init_ref() };
        if count_ban(&banned.key, banned.len) && mode == BAN_MODE_DROP {
            return xdp_action::XDP_DROP;
        }
    }
    if CHECKS && rules_in_force() {
        // SAFETY: a tail call with this program's own context. The check is a program of its
        // own (slot 1: one that samples the frame after it), which parses the frame again:
        // the counting hands it nothing, so that the verifier's walk of the counting does
        // not grow. If the slot is empty this returns, and the frame goes on unchecked.
        unsafe { RULE_CHECK.tail_call(ctx, u32::from(sample)) };
    }
    if sample {
        // SAFETY: a tail call with this program's own context. On success it does not
        // return; if the slot is empty it returns and the frame simply passes unsampled.
        unsafe { SAMPLER.tail_call(ctx, 0) };
    }
    xdp_action::XDP_PASS
}

/// What the ban check (and the first looks of the captures and the indicators) needs of a
/// frame with a source: its address, its length, its destination (the address, for IPv4),
/// where its IP header starts.
struct Banned {
    key: SourceKey,
    len: u64,
    dst: u32,
    l3: u32,
}

/// Set in `account`'s mode beside the ban mode: [`Banned`] is written (bans, captures or
/// listed networks exist).
const STAGED: u32 = 1 << 8;

/// Queues one slot of the [`QueueJob`] into [`FREE_SLOTS`] and advances the job. Userspace
/// runs it with BPF_PROG_TEST_RUN, as many times as the job has slots (it is never attached):
/// a few dozen nanoseconds per slot in the kernel instead of a syscall each.
#[xdp]
pub fn queue_free_slots(ctx: XdpContext) -> u32 {
    let Some(job) = QUEUE_JOB.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: an array element; userspace runs this program alone, on one CPU.
    let job = unsafe { &mut *job };
    if job.next >= job.end {
        return xdp_action::XDP_PASS;
    }
    let slot = if job.staged == 0 {
        job.next
    } else {
        match STAGED_SLOTS.get(job.next) {
            Some(&slot) => slot as u32,
            None => return xdp_action::XDP_PASS,
        }
    };
    // The one diagnostic of the kernel side (aya-log), written while slots are queued at
    // load and at a reclaim: never on a packet's path.
    if FREE_SLOTS.push(slot, 0).is_ok() {
        job.next += 1;
        if job.next == job.end {
            debug!(&ctx, "the kernel queued free slots up to {}", job.end);
        }
    } else if job.warned == 0 {
        // The runs left of this job would say it again: once is enough.
        job.warned = 1;
        warn!(
            &ctx,
            "the free-slot queue refused slot {}: it waits for the next reclaim", slot
        );
    }
    xdp_action::XDP_PASS
}

/// The tail of [`netwatch`] while signature rules exist, for a frame not to be sampled:
/// checks it against them. Drops what a rule drops.
#[xdp]
pub fn netwatch_rules(ctx: XdpContext) -> u32 {
    if check_rules(&ctx) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// [`netwatch_rules`] for a frame to be sampled: samples it if no rule drops it.
#[xdp]
pub fn netwatch_rules_sampled(ctx: XdpContext) -> u32 {
    if check_rules(&ctx) {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: as in `run`.
    unsafe { SAMPLER.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

/// The tail of [`netwatch`] while captures exist, for a frame not to be sampled: captures it
/// for the events whose subject it is, then checks bans and rules as [`netwatch`] would.
#[xdp]
pub fn netwatch_capture(ctx: XdpContext) -> u32 {
    capture_then::<false>(&ctx)
}

/// [`netwatch_capture`] for a frame to be sampled after.
#[xdp]
pub fn netwatch_capture_sampled(ctx: XdpContext) -> u32 {
    capture_then::<true>(&ctx)
}

#[inline(always)]
fn capture_then<const SAMPLED: bool>(ctx: &XdpContext) -> u32 {
    if let Verdict::Source(parsed) = parse(ctx) {
        let len = frame_len(ctx);
        if find(ctx, &parsed, len, SAMPLED) {
            // SAFETY: as in `run`. If the slot is empty this returns, and the frame goes on
            // uncaptured.
            unsafe { CAPTURE_KEEP.tail_call(ctx, 0) };
        }
        if banned(&parsed.key, len) {
            return xdp_action::XDP_DROP;
        }
    }
    after_checks(ctx, SAMPLED)
}

/// The tail of [`netwatch`] for a frame a listed network holds, not to be sampled: records
/// the match, then captures it and checks bans and rules as [`netwatch`] would.
#[xdp]
pub fn netwatch_intel(ctx: XdpContext) -> u32 {
    intel_then::<false>(&ctx)
}

/// [`netwatch_intel`] for a frame to be sampled after.
#[xdp]
pub fn netwatch_intel_sampled(ctx: XdpContext) -> u32 {
    intel_then::<true>(&ctx)
}

#[inline(always)]
fn intel_then<const SAMPLED: bool>(ctx: &XdpContext) -> u32 {
    if let Verdict::Source(parsed) = parse(ctx) {
        let len = frame_len(ctx);
        record(ctx, &parsed, len);
        if captures_in_force() && may_capture(&parsed.key, parsed.dst_fold) {
            // SAFETY: as in `run`.
            unsafe { CAPTURE_CHECK.tail_call(ctx, u32::from(SAMPLED)) };
        }
        if banned(&parsed.key, len) {
            return xdp_action::XDP_DROP;
        }
    }
    after_checks(ctx, SAMPLED)
}

/// The second capture program: keeps the frame of this CPU's capture job for the captures
/// that take it, then checks bans and rules as [`netwatch`] would.
#[xdp]
pub fn netwatch_capture_keep(ctx: XdpContext) -> u32 {
    let Some(job) = keep(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    if banned(&job.key, job.len) {
        return xdp_action::XDP_DROP;
    }
    after_checks(&ctx, job.sampled != 0)
}

/// The ban check of a frame from `key`, as [`netwatch`] makes it: counted for its ban if it
/// has one; true when it is to be dropped.
#[inline(always)]
fn banned(key: &SourceKey, len: u64) -> bool {
    // SAFETY: a u32 of global data the program never writes; userspace rewrites it whole.
    let mode = unsafe { (&raw const maps::SETTINGS.ban_mode).read_volatile() };
    mode != BAN_MODE_NONE && count_ban(key, len) && mode == BAN_MODE_DROP
}

/// What [`netwatch`] does after its ban check: the rules' check, then the sampler.
#[inline(always)]
fn after_checks(ctx: &XdpContext, sampled: bool) -> u32 {
    if rules_in_force() {
        // SAFETY: as in `run`.
        unsafe { RULE_CHECK.tail_call(ctx, u32::from(sampled)) };
    }
    if sampled {
        // SAFETY: as in `run`.
        unsafe { SAMPLER.tail_call(ctx, 0) };
    }
    xdp_action::XDP_PASS
}

/// The tail of [`netwatch`] for frames that may be sampled. Always passes the frame.
#[xdp]
pub fn netwatch_sampler(ctx: XdpContext) -> u32 {
    let settings = settings();
    if let Some(state) = CPU_STATE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        sample(&ctx, &settings, unsafe { &mut (*state).globals });
    }
    xdp_action::XDP_PASS
}

/// Counts the frame; true when it is a candidate for sampling (its job is written). While
/// bans exist, a frame with a source leaves what the ban check needs in `banned` and what a
/// match meets in `mode` ([`Settings::ban_mode`]). (The rules' check, tail-called after,
/// parses the frame itself.)
#[inline(always)]
fn account<T: SourceTable, const CHECKS: bool>(
    ctx: &XdpContext,
    banned: &mut MaybeUninit<Banned>,
    mode: &mut u32,
) -> bool {
    let len = frame_len(ctx);
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return false;
    };
    let settings = settings();
    // SAFETY: a per-CPU array slot, only this CPU writes it while the program runs.
    let CpuState {
        globals,
        region,
        overflow_reflected_port,
        free_empty_at,
        windows,
        early_pending,
        destination_skip,
        destination_random,
        _pad,
        source_cache,
    } = unsafe { &mut *state };
    globals.total_packets += 1;
    globals.total_bytes += len;
    if settings.early_packets != 0 {
        *early_pending += 1;
        if *early_pending >= settings.early_batch {
            early_check(ctx, *early_pending, &settings);
            *early_pending = 0;
        }
    }
    match parse(ctx) {
        Verdict::NonIp => {
            globals.non_ip_packets += 1;
            globals.non_ip_bytes += len;
        }
        Verdict::Malformed => {
            globals.malformed_packets += 1;
            globals.malformed_bytes += len;
        }
        Verdict::Source(parsed) => {
            if parsed.truncated {
                globals.truncated_packets += 1;
            }
            let carries_ports =
                parsed.first_fragment && matches!(parsed.class, Class::TcpFirst | Class::Udp);
            let ports = if carries_ports {
                transport_ports(ctx, parsed.l4_offset)
            } else {
                None
            };
            let typed = settings.attack_types != 0;
            let reflected_port = match ports {
                Some((src, _)) if typed && parsed.class == Class::Udp && reflection_port(src) => {
                    src
                }
                _ => 0,
            };
            let contribution = Contribution {
                class: parsed.class,
                syn: parsed.class == Class::TcpFirst
                    && is_connection_attempt(ctx, parsed.l4_offset),
                fragment: typed && parsed.fragment,
                reflected_port,
                len,
                dst_fold: parsed.dst_fold,
                dst_port: ports.map(|(_, dst)| dst),
            };
            // The local networks' hosts, exactly; with none set, a sample of every
            // destination. Unset, both: two comparisons of settings already read.
            let counted = if settings.local_networks != 0 {
                true
            } else if settings.destination_sample != 0 {
                sample_destination(destination_skip, destination_random, &settings)
            } else {
                false
            };
            if counted {
                count_destination(
                    ctx,
                    &parsed,
                    &contribution,
                    &settings,
                    *windows + (settings.overflow_window & 1),
                );
            }
            if !T::count(
                &parsed.key,
                *region,
                &mut Lookup {
                    cache: source_cache,
                    free_generation: settings.free_generation,
                    free_empty_at,
                    filter_half: settings.filter_half,
                },
                &contribution,
                settings.epoch,
            ) {
                count_overflow(globals, overflow_reflected_port, &contribution);
                break_down(
                    ctx,
                    &parsed,
                    &contribution,
                    *windows + (settings.overflow_window & 1),
                );
            }
            if CHECKS
                && (settings.ban_mode != BAN_MODE_NONE
                    || captures_in_force()
                    || intel_active() != 0)
            {
                banned.write(Banned {
                    key: parsed.key,
                    len,
                    dst: parsed.dst_fold,
                    l3: parsed.l3_offset as u32,
                });
                *mode = settings.ban_mode | STAGED;
            }

            if let Some((src, dst)) = ports
                && settings.sample_rate != 0
            {
                // The port check is here rather than in the sampler so that the frames of
                // other ports, nearly all of them on most links, do not pay for a tail call.
                let tcp = parsed.class == Class::TcpFirst;
                let words = if tcp { 0 } else { SAMPLE_PORT_WORDS };
                let reason = if port_selected(words, src) || port_selected(words, dst) {
                    SAMPLE_REASON_PORT
                } else if tcp && settings.sample_all_tcp != 0 {
                    SAMPLE_REASON_ALL_TCP
                } else {
                    return false;
                };
                if let Some(job) = SAMPLE_JOBS.get_ptr_mut(0) {
                    // SAFETY: this CPU's scratch slot.
                    unsafe {
                        *job = SampleJob {
                            l4_offset: parsed.l4_offset as u32,
                            protocol: if tcp { JOB_TCP } else { JOB_UDP },
                            reason,
                        };
                    }
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
