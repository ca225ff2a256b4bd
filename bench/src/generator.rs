//! A traffic generator: crafted Ethernet frames out of an interface, as fast as the machine
//! allows or at a set rate; bounded by a frame count and a time, and exact about what it sent.
//! Four ways to send, each measured by `cargo xtask bench` (BENCHMARKS.md, "Capture at rate"):
//!
//! - [`Method::Live`], the fastest where the kernel allows it: the generator's XDP program run
//!   by BPF_PROG_TEST_RUN in live-frame mode. The kernel copies the frame into pages of its
//!   own, the program gives each its source, and the frames go out of the interface in batches
//!   through the driver's XDP transmit: no socket, no skb and no qdisc on the sending side, one
//!   syscall per thousand frames. On veth the receiving end must have an XDP program in driver
//!   mode (netwatch's, when it watches that end in driver mode). Some kernels refuse live
//!   frames by policy (EPERM to root from a BPF LSM): [`live_frames`] asks once.
//! - AF_PACKET, [`Method::Sendmmsg`] (a batch of frames per syscall) or [`Method::Sendto`] (one
//!   per syscall): each frame an skb through `dev_queue_xmit` (a veth has no qdisc).
//! - [`Method::TxRing`]: AF_PACKET with a PACKET_TX_RING shared with the kernel and
//!   PACKET_QDISC_BYPASS. Frames are written into the ring in place and handed over a batch at
//!   a time with one `send`; each is still an skb, but no copy from a user buffer, no qdisc.
//!   Measured on this repository's 2-CPU VMs on veth with netwatch attached at the other end:
//!   from a thread per CPU into as many queues, 2.2-2.35 million frames a second against
//!   1.42-1.48 for `sendmmsg`; from one thread, 1.17-1.22 against 1.24-1.30 (its `send` waits
//!   for the skbs to be freed, which one thread cannot overlap).
//!
//! Every socket method works whatever is attached at the other end. [`Method::Auto`] takes live

use std::{
    ffi::CString,
    io,
    sync::OnceLock,
    time::{Duration, Instant},
};

use netwatch_datapath::{BenchPrograms, LiveFrames};

pub use crate::{
    frames::source_of,
    spec::{Method, Sent, Spec},
};
use crate::{
    frames::{Frames, template},
    socket::{PacketSocket, send_batches},
};

/// Whether this kernel sends XDP live frames, asked once per process (one live run of the
/// no-op program with one frame, on loopback): `Err` says why not, in one line that names
/// the kernel's refusal.
pub fn live_frames() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let programs = BenchPrograms::load().map_err(|err| {
            format!("live frames cannot be tried: loading the generator's programs: {err}")
        })?;
        match programs.probe_live_frames() {
            Ok(LiveFrames::Allowed) => Ok(()),
            Ok(LiveFrames::Refused(err)) => Err(format!(
                "the kernel refuses XDP live frames: BPF_PROG_TEST_RUN with \
                 BPF_F_TEST_XDP_LIVE_FRAMES answered {} ({err}){}",
                errno_name(&err),
                if err.raw_os_error() == Some(libc::EPERM) {
                    ", a policy of this kernel (a BPF LSM, say) that no privilege changes"
                } else {
                    ""
                }
            )),
            Err(err) => Err(format!("live frames cannot be tried: {err}")),
        }
    })
}

fn errno_name(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOTSUP) => "ENOTSUP",
        _ => "an error",
    }
}

/// The method [`Method::Auto`] stands for on this machine, with why when live frames were
/// passed over; any other method is itself. [`Method::Live`] where the kernel refuses live
/// frames is an error naming the refusal.
pub fn resolve(method: Method) -> Result<(Method, Option<String>), String> {
    // Only these two ask the kernel: a socket method needs no BPF program loaded.
    match (
        method,
        matches!(method, Method::Auto | Method::Live).then(live_frames),
    ) {
        (Method::Auto, Some(Ok(()))) => Ok((Method::Live, None)),
        (Method::Auto, Some(Err(why))) => Ok((Method::TxRing, Some(why.clone()))),
        (Method::Live, Some(Err(why))) => Err(why.clone()),
        (other, _) => Ok((other, None)),
    }
}

/// Sends `spec` out of `iface` (in this thread's network namespace), by the method
/// [`resolve`] gives for `spec.method`.
pub fn send(iface: &str, spec: &Spec) -> io::Result<Sent> {
    let (method, _) = resolve(spec.method).map_err(io::Error::other)?;
    let spec = Spec {
        method,
        ..spec.clone()
    };
    if spec.threads > 1 {
        return send_parallel(iface, &spec);
    }
    let name = CString::new(iface).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface {iface}")));
    }
    match method {
        Method::Live => send_live(ifindex, &spec),
        Method::TxRing => {
            let socket = PacketSocket::bound(ifindex, true)?;
            crate::tx_ring::send(&socket, &Frames::new(&spec), &spec)
        }
        // Auto was resolved above.
        Method::Sendmmsg | Method::Sendto | Method::Auto => {
            let socket = PacketSocket::bound(ifindex, false)?;
            send_batches(&socket, &Frames::new(&spec), &spec)
        }
    }
}

/// [`send`] split over `spec.threads` threads (which share this thread's network namespace),
/// thread `i` pinned to CPU `i` modulo the CPUs.
fn send_parallel(iface: &str, spec: &Spec) -> io::Result<Sent> {
    let threads = spec.threads as u64;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let share = |total: u64| total / threads + u64::from(i < total % threads);
            let mut part = spec.clone();
            part.threads = 1;
            part.count = share(spec.count);
            part.rate = share(spec.rate);
            let iface = iface.to_owned();
            let cpu = i as usize % cpus;
            std::thread::spawn(move || {
                pin_to(cpu)?;
                send(&iface, &part)
            })
        })
        .collect();
    let mut total = Sent::new(spec.method);
    let mut first_frame = None::<Instant>;
    for handle in handles {
        let sent = handle
            .join()
            .map_err(|_| io::Error::other("a sending thread panicked"))??;
        total.frames += sent.frames;
        total.bytes += sent.bytes;
        total.elapsed = total.elapsed.max(sent.elapsed);
        // The first frame of all: the thread that started soonest.
        first_frame = first_frame.into_iter().chain(sent.first_frame).min();
    }
    total.first_frame = first_frame;
    Ok(total)
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it for any cpu below
    // its size, which `available_parallelism` is.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of that size; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Time one BPF_PROG_TEST_RUN call in live-frame mode should take when sending as fast as
/// possible. The kernel spends some 25 ms setting up and tearing down each such run (its page
/// pool and receive queue info), so calls must be long for that to vanish; short enough that
/// the time bound is kept to within this. The first call, sized before any rate is seen, may
/// take longer (see `send_live`).
const LIVE_CALL_TIME: Duration = Duration::from_millis(200);

fn send_live(ifindex: u32, spec: &Spec) -> io::Result<Sent> {
    let mut program = BenchPrograms::load().map_err(io::Error::other)?;
    program
        .start_generator(spec.sources)
        .map_err(io::Error::other)?;
    // One template per family; the program writes each frame's source.
    let ipv4 = template(spec, false);
    let ipv6 = template(spec, true);
    let batch = spec.batch.clamp(1, 256) as u32;
    let started = Instant::now();
    let mut sent = Sent::new(Method::Live);
    let mut sent_ipv6 = 0u64;
    // Frames per call, sized from the rate seen so that a call takes about LIVE_CALL_TIME.
    // The first call is long too (100-300 ms at the rates seen here): between calls the flood
    // stops for the kernel's teardown and setup, and a flood that stops in its first tens of
    // milliseconds is not the one a detection latency is measured on. With a first call of
    // 2^16 frames, both threads' first pauses fell within the flood's first 40 ms often
    // enough to put 110-150 ms in the slowest trials (BENCHMARKS.md of commit aa88c48: 122).
    let mut per_call: u32 = 1 << 18;
    while sent.frames < spec.count && started.elapsed() < spec.duration {
        let mut want = per_call.min((spec.count - sent.frames).min(u64::from(u32::MAX)) as u32);
        if spec.rate > 0 {
            let due = (started.elapsed().as_secs_f64() * spec.rate as f64) as u64;
            if sent.frames >= due {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            // At a set rate: a tenth of a second's worth at a time, in one burst.
            want = want.min((spec.rate / 10).max(u64::from(batch)) as u32);
        }
        // The family mix is kept call by call: IPv6 while its share is behind.
        let ipv6_due = sent_ipv6 * 100 < u64::from(spec.ipv6_percent) * (sent.frames + 1);
        let template = if ipv6_due { &ipv6 } else { &ipv4 };
        let call = Instant::now();
        let handed = program
            .generate(ifindex, template, want, batch)
            .map_err(io::Error::other)?;
        let seen = f64::from(handed) / call.elapsed().as_secs_f64().max(1e-6);
        let left = spec.duration.saturating_sub(started.elapsed());
        per_call =
            (seen * LIVE_CALL_TIME.min(left).as_secs_f64()).clamp(4096.0, 1_048_576.0) as u32;
        sent.frames += u64::from(handed);
        sent.bytes += u64::from(handed) * template.len() as u64;
        if ipv6_due {
            sent_ipv6 += u64::from(handed);
        }
    }
    sent.elapsed = started.elapsed();
    sent.first_frame = program
        .generator_first_ns()
        .map_err(io::Error::other)?
        .map(instant_of_monotonic);
    Ok(sent)
}

/// The [`Instant`] of a CLOCK_MONOTONIC reading in nanoseconds (the clock `Instant` reads on
/// Linux, and the kernel's `bpf_ktime_get_ns`).
fn instant_of_monotonic(ns: u64) -> Instant {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let instant = Instant::now();
    // SAFETY: a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    instant - Duration::from_nanos(now.saturating_sub(ns))
}
