//! A traffic generator: crafted Ethernet frames out of an interface through AF_PACKET with
//! `sendmmsg`, in batches, as fast as the machine allows or at a set rate; bounded by a frame
//! count and a time, and exact about what it sent.
//!
//! Why `sendmmsg`: it amortises the syscall over a batch (64 frames), which on veth moved the
//! bottleneck from syscall entry to the frame's trip through the stack. The alternatives were
//! weighed: a PACKET_TX_RING saves the copy but not the per-frame `dev_queue_xmit` on veth,
//! which dominates here; XDP live frames (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)
//! would need a redirecting program of its own. `cargo xtask bench` measures `sendto`
//! against `sendmmsg` and reports both.

use std::{
    ffi::CString,
    io,
    time::{Duration, Instant},
};

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
    /// Frames per `sendmmsg` (1: one `sendto` each).
    pub batch: usize,
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
}

impl Sent {
    /// Frames per second.
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The frame of source number `n`.
pub fn frame(spec: &Spec, n: u32) -> Vec<u8> {
    let ipv6 = (n % 100) < u32::from(spec.ipv6_percent);
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
    let name = CString::new(iface).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::other(format!("no interface {iface}")));
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

fn send_loop(fd: i32, templates: &[Vec<u8>], spec: &Spec) -> io::Result<Sent> {
    let batch = spec.batch.clamp(1, 1024);
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
