//! A traffic generator: crafted Ethernet frames out of an interface, as fast as the machine
//! allows or at a set rate; bounded by a frame count and a time, and exact about what it sent.
//! Two ways to send, both measured by `cargo xtask bench` (BENCHMARKS.md, "Capture at rate"):
//!
//! - [`Method::LiveFrames`], the fastest here: the generator's XDP program run by
//!   BPF_PROG_TEST_RUN in live-frame mode. The kernel copies the frame into pages of its own,
//!   the program gives each its source, and the frames go out of the interface in batches
//!   through the driver's XDP transmit: no socket, no skb and no qdisc on the sending side, one
//!   syscall per thousand frames. On veth the receiving end must have an XDP program in driver
//!   mode (netwatch's, when it watches that end in driver mode).
//! - AF_PACKET, [`Method::Sendmmsg`] (a batch of frames per syscall) or [`Method::Sendto`] (one
//!   per syscall): works whatever is attached at the other end, and is how most traffic reaches
//!   a veth. Each frame is an skb through the qdisc and `dev_queue_xmit`, which bounds the
//!   rate well below live frames. A PACKET_TX_RING would save the copy into the skb but not
//!   that trip, so it was not built.

use std::{
    ffi::CString,
    io,
    time::{Duration, Instant},
};

use netwatch::datapath::BenchPrograms;
use netwatch_tests::frames::{FrameBuilder, TPID_8021AD, TPID_8021Q, Transport};

/// What to send.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Frames to send at most.
    pub count: u64,
    /// Time to send for at most.
    pub duration: Duration,
    /// Frames per second; 0 is as fast as possible.
    pub rate: u64,
    /// Frame length in bytes (at least the headers).
    pub size: usize,
    /// Percent of IPv6 frames.
    pub ipv6_percent: u8,
    /// VLAN tags per frame: 0, 1 or 2.
    pub vlan_tags: u8,
    /// Distinct source addresses, cycled through.
    pub sources: u32,
    /// How the frames are sent.
    pub method: Method,
    /// Threads sending at once, each pinned to a CPU of its own (modulo the CPUs), each with
    /// its share of the frames and of the rate, each cycling through all the sources. On a
    /// veth, XDP live frames from several CPUs need as many receive queues at the other end.
    pub threads: usize,
    /// Frames per `sendmmsg` call, or per transmission in live-frame mode (at most 256);
    /// `sendto` sends one at a time whatever this says.
    pub batch: usize,
}

/// How [`send`] sends (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// AF_PACKET, one frame per `sendto`.
    Sendto,
    /// AF_PACKET, [`Spec::batch`] frames per `sendmmsg`.
    Sendmmsg,
    /// BPF_PROG_TEST_RUN in live-frame mode with the generator's XDP program.
    LiveFrames,
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Time spent sending.
    pub elapsed: Duration,
    /// When the first frame went out: for live frames, as the generator's program stamped
    /// it on the kernel's clock (the kernel first spends some 25 ms setting the run up); for
    /// sockets, just before the first send.
    pub first_frame: Option<Instant>,
}

impl Sent {
    /// Frames per second.
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The frame of source number `n`.
pub fn frame(spec: &Spec, n: u32) -> Vec<u8> {
    frame_of(spec, n, (n % 100) < u32::from(spec.ipv6_percent))
}

/// The frame of source number `n`, IPv6 or IPv4: source `n` is 10.0.0.0 + `n` (below 2^24),
/// or 2001:db8:beef:: + `n`.
fn frame_of(spec: &Spec, n: u32, ipv6: bool) -> Vec<u8> {
    let mut builder = if ipv6 {
        let mut addr = [
            0x20, 0x01, 0x0d, 0xb8, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        addr[12..16].copy_from_slice(&n.to_be_bytes());
        FrameBuilder::ipv6(addr)
    } else {
        let host = n.to_be_bytes();
        FrameBuilder::ipv4([10 + host[0] % 100, host[1], host[2], host[3]])
    };
    if spec.vlan_tags >= 2 {
        builder = builder.vlan(TPID_8021AD, 100);
    }
    if spec.vlan_tags >= 1 {
        builder = builder.vlan(TPID_8021Q, 200);
    }
    // UDP to the discard port: counted, not sampled.
    let builder = builder.transport(Transport::Udp).to_port(9);
    let headers = builder.clone().build().bytes.len();
    builder
        .payload(spec.size.saturating_sub(headers))
        .build()
        .bytes
}

/// Sends `spec` out of `iface` (in this thread's network namespace).
pub fn send(iface: &str, spec: &Spec) -> io::Result<Sent> {
    if spec.threads > 1 {
        return send_parallel(iface, spec);
    }
    let name = CString::new(iface).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface {iface}")));
    }
    if spec.method == Method::LiveFrames {
        return send_live(ifindex, spec);
    }
    // Protocol 0: send only.
    // SAFETY: plain syscall, checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed sockaddr_ll is valid; the fields that matter are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    // SAFETY: addr is a valid sockaddr_ll of that size.
    let bound = unsafe {
        libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if bound != 0 {
        let err = io::Error::last_os_error();
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        return Err(err);
    }
    let templates: Vec<Vec<u8>> = (0..spec.sources.clamp(1, 65_536))
        .map(|n| frame(spec, n))
        .collect();
    let result = send_loop(fd, &templates, spec);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
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
    let mut total = Sent::default();
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
    let ipv4 = frame_of(spec, 0, false);
    let ipv6 = frame_of(spec, 0, true);
    let batch = spec.batch.clamp(1, 256) as u32;
    let started = Instant::now();
    let mut sent = Sent::default();
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

fn send_loop(fd: i32, templates: &[Vec<u8>], spec: &Spec) -> io::Result<Sent> {
    let batch = match spec.method {
        Method::Sendto => 1,
        _ => spec.batch.clamp(1, 1024),
    };
    let started = Instant::now();
    let mut sent = Sent::default();
    let mut next = 0usize;
    let mut frames: Vec<Vec<u8>> = vec![Vec::new(); batch];
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(batch);
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(batch);
    while sent.frames < spec.count && started.elapsed() < spec.duration {
        if spec.rate > 0 {
            // Pace: do not get ahead of rate * elapsed.
            let due = (started.elapsed().as_secs_f64() * spec.rate as f64) as u64;
            if sent.frames >= due {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
        }
        let want = batch.min((spec.count - sent.frames) as usize);
        iovecs.clear();
        headers.clear();
        for slot in frames.iter_mut().take(want) {
            let template = &templates[next % templates.len()];
            slot.clear();
            slot.extend_from_slice(template);
            if spec.sources as usize > templates.len() {
                patch_source(slot, next as u32);
            }
            next += 1;
        }
        for slot in frames.iter_mut().take(want) {
            iovecs.push(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            });
        }
        for iov in iovecs.iter_mut() {
            // SAFETY: a zeroed msghdr is valid; the iovec lives as long as the call.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            headers.push(header);
        }
        let accepted = if want == 1 {
            // SAFETY: one valid buffer.
            let rc = unsafe { libc::send(fd, iovecs[0].iov_base, iovecs[0].iov_len, 0) };
            if rc < 0 { -1 } else { 1 }
        } else {
            // SAFETY: `headers` holds `want` valid messages whose buffers outlive the call.
            unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), want as u32, 0) }
        };
        if accepted < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == io::ErrorKind::WouldBlock
            {
                // The qdisc is full: what was refused was not sent; try again.
                next -= want;
                continue;
            }
            return Err(err);
        }
        let accepted = accepted as usize;
        // Frames not accepted are sent again next round.
        next -= want - accepted;
        sent.frames += accepted as u64;
        sent.bytes += frames
            .iter()
            .take(accepted)
            .map(|f| f.len() as u64)
            .sum::<u64>();
    }
    sent.elapsed = started.elapsed();
    sent.first_frame = Some(started);
    Ok(sent)
}

/// Makes the frame's source unique past the templates: rewrites the low bytes of the IPv4 or
/// IPv6 source address (the IPv4 checksum is left stale; netwatch does not check it).
fn patch_source(frame: &mut [u8], n: u32) {
    let mut offset = 12;
    while matches!(
        frame.get(offset..offset + 2),
        Some([0x81, 0x00] | [0x88, 0xa8])
    ) {
        offset += 4;
    }
    let l3 = offset + 2;
    let bytes = n.to_be_bytes();
    match frame.get(offset..offset + 2) {
        Some([0x08, 0x00]) => {
            if let Some(src) = frame.get_mut(l3 + 13..l3 + 16) {
                src.copy_from_slice(&bytes[1..4]);
            }
        }
        Some([0x86, 0xdd]) => {
            if let Some(src) = frame.get_mut(l3 + 20..l3 + 24) {
                src.copy_from_slice(&bytes);
            }
        }
        _ => {}
    }
}
