//! [`Method::TxRing`](crate::spec::Method::TxRing): frames written in place into a
//! PACKET_TX_RING (TPACKET_V2) that the socket shares with the kernel, handed over with one
//! `send` per batch. The kernel marks each frame of the ring it has sent available again when
//! its skb is freed, and leaves one it could not send (the other end full: ENOBUFS) marked for
//! sending, to go with the next `send`; so what it marks available is exactly what was sent.
//! See packet_mmap.rst in the kernel's documentation and `tpacket_snd` in
//! net/packet/af_packet.c.

use std::{
    io,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    frames::Frames,
    socket::PacketSocket,
    spec::{Sent, Spec, ahead_of_rate},
};

/// Frames in the ring.
const RING_FRAMES: usize = 1024;
/// Where a frame's data starts in its slot: TPACKET_ALIGN(sizeof(struct tpacket2_hdr)), which
/// `tpacket_parse_header` takes when the socket sets no PACKET_TX_HAS_OFF.
const DATA_OFFSET: usize = 32;
/// Longest a `send` may wait for the kernel (SO_SNDTIMEO): a generator never hangs.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// `tp_status` values of a TX ring's frame (linux/if_packet.h).
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;

/// The ring's memory, unmapped on drop.
struct Ring {
    base: *mut u8,
    size: usize,
    frame_size: usize,
}

impl Ring {
    /// Sets a TX ring up on `socket` for frames of up to `frame_len` bytes, and maps it.
    fn new(socket: &PacketSocket, frame_len: usize) -> io::Result<Self> {
        socket.set_option(
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
        )?;
        // A power of two (and so a divisor of the block) holding the header and the frame.
        let frame_size = (DATA_OFFSET + frame_len).next_power_of_two().max(2048);
        let block_size = frame_size.max(1 << 16);
        let frames_per_block = block_size / frame_size;
        let blocks = RING_FRAMES.div_ceil(frames_per_block);
        let request = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (blocks * frames_per_block) as u32,
        };
        socket.set_option(libc::SOL_PACKET, libc::PACKET_TX_RING, &request)?;
        let timeout = libc::timeval {
            tv_sec: SEND_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        socket.set_option(libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
        let size = block_size * blocks;
        // SAFETY: maps the ring the kernel set up for this socket, of exactly its size.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                socket.0,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: base.cast(),
            size,
            frame_size,
        })
    }

    fn frames(&self) -> usize {
        self.size / self.frame_size
    }

    /// Slot `index`'s `tp_status`, the word the kernel and this process hand the slot over by.
    fn status(&self, index: usize) -> &AtomicU32 {
        // SAFETY: the slot lies within the mapping, which lives as long as `self`; tp_status
        // is the first field of struct tpacket2_hdr, a u32 at the slot's start (aligned: the
        // slots are 2 KiB apart from a page-aligned base), only ever accessed atomically here.
        unsafe { AtomicU32::from_ptr(self.base.add(index * self.frame_size).cast()) }
    }

    /// Slot `index`'s frame bytes and its `tp_len`, to be written while the slot is ours.
    fn slot(&mut self, index: usize, len: usize) -> &mut [u8] {
        // SAFETY: the slot is within the mapping; the caller owns it (status available); the
        // header's tp_len is its second u32; the data fits the slot (frame_size was sized
        // for the longest frame).
        unsafe {
            let header = self.base.add(index * self.frame_size);
            header.cast::<u32>().add(1).write(len as u32);
            std::slice::from_raw_parts_mut(header.add(DATA_OFFSET), len)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that size.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

/// Sends `spec`'s frames through a TX ring on `socket` (bound, with PACKET_QDISC_BYPASS).
pub(crate) fn send(socket: &PacketSocket, frames: &Frames, spec: &Spec) -> io::Result<Sent> {
    let mut ring = Ring::new(socket, frames.longest())?;
    let slots = ring.frames();
    let batch = spec.batch.clamp(1, slots);
    let sources = u64::from(spec.sources.max(1));
    let started = Instant::now();
    let mut sent = Sent::new(spec.method);
    // Slots from `oldest` on (ring order) hold frames handed to the kernel and not yet seen
    // back, `in_flight` of them, with their lengths; the next frame goes into slot `next`.
    let mut oldest = 0usize;
    let mut in_flight = 0usize;
    let mut lengths = vec![0usize; slots];
    let mut queued = 0u64;
    while queued < spec.count && started.elapsed() < spec.duration {
        if ahead_of_rate(spec, started, sent.frames) {
            continue;
        }
        let want = batch
            .min(slots - in_flight)
            .min((spec.count - queued) as usize);
        for _ in 0..want {
            let index = (oldest + in_flight) % slots;
            let n = (queued % sources) as u32;
            let len = frames.len(n);
            frames.write_into(n, ring.slot(index, len));
            lengths[index] = len;
            ring.status(index)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            in_flight += 1;
            queued += 1;
        }
        kick(socket)?;
        give_back(&ring, &lengths, &mut oldest, &mut in_flight, &mut sent);
    }
    // What is still in the ring goes out; bounded like every send.
    let deadline = Instant::now() + SEND_TIMEOUT * 5;
    while in_flight > 0 && Instant::now() < deadline {
        kick(socket)?;
        give_back(&ring, &lengths, &mut oldest, &mut in_flight, &mut sent);
    }
    if in_flight > 0 {
        return Err(io::Error::other(format!(
            "{in_flight} frames still in the TX ring after {:?}",
            SEND_TIMEOUT * 5
        )));
    }
    sent.elapsed = started.elapsed();
    sent.first_frame = Some(started);
    Ok(sent)
}

/// Counts as sent the frames the kernel has given back, oldest first (it sends them in ring
/// order), and frees their slots.
fn give_back(
    ring: &Ring,
    lengths: &[usize],
    oldest: &mut usize,
    in_flight: &mut usize,
    sent: &mut Sent,
) {
    while *in_flight > 0 && ring.status(*oldest).load(Ordering::Acquire) == TP_STATUS_AVAILABLE {
        sent.frames += 1;
        sent.bytes += lengths.get(*oldest).copied().unwrap_or(0) as u64;
        *oldest = (*oldest + 1) % lengths.len();
        *in_flight -= 1;
    }
}

/// Has the kernel send every frame marked for sending, waiting until their skbs are freed.
/// A full other end (ENOBUFS) or the timeout leaves frames marked: the next kick retries them.
fn kick(socket: &PacketSocket) -> io::Result<()> {
    // SAFETY: a send of nothing on our socket: the ring holds the frames.
    let rc = unsafe { libc::send(socket.0, std::ptr::null(), 0, 0) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        let retry = matches!(
            err.raw_os_error(),
            Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
        );
        if !retry {
            return Err(err);
        }
    }
    Ok(())
}
