//! The AF_PACKET methods of the generator: [`Method::Sendmmsg`] and [`Method::Sendto`]
//! here, [`Method::TxRing`] in [`tx_ring`](crate::tx_ring) on the same socket.

use std::{io, time::Instant};

use crate::{
    frames::Frames,
    spec::{Method, Sent, Spec, ahead_of_rate},
};

/// An AF_PACKET socket bound to an interface, for sending only (protocol 0); closed on drop.
pub(crate) struct PacketSocket(pub(crate) i32);

impl PacketSocket {
    /// Bound to `ifindex`; with `bypass`, frames skip the interface's qdisc
    /// (PACKET_QDISC_BYPASS) and go straight to the driver.
    pub(crate) fn bound(ifindex: u32, bypass: bool) -> io::Result<Self> {
        // SAFETY: plain syscall, checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = Self(fd);
        if bypass {
            socket.set_option(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
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
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// `setsockopt(level, option, value)`.
    pub(crate) fn set_option<T>(&self, level: i32, option: i32, value: &T) -> io::Result<()> {
        // SAFETY: `value` is a valid T of that size for the call.
        let rc = unsafe {
            libc::setsockopt(
                self.0,
                level,
                option,
                (value as *const T).cast(),
                size_of::<T>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.0) };
    }
}

/// Sends `spec`'s frames on `socket`, [`Spec::batch`] per `sendmmsg` (or one per `send`
/// for [`Method::Sendto`]); a frame the other end refuses (ENOBUFS) goes again.
pub(crate) fn send_batches(
    socket: &PacketSocket,
    frames: &Frames,
    spec: &Spec,
) -> io::Result<Sent> {
    let batch = match spec.method {
        Method::Sendto => 1,
        _ => spec.batch.clamp(1, 1024),
    };
    let started = Instant::now();
    let mut sent = Sent::new(spec.method);
    let sources = u64::from(spec.sources.max(1));
    // The index of the next frame to send: it comes from source `next % sources`.
    let mut next = 0u64;
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); batch];
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(batch);
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(batch);
    while sent.frames < spec.count && started.elapsed() < spec.duration {
        if ahead_of_rate(spec, started, sent.frames) {
            continue;
        }
        let want = batch.min((spec.count - sent.frames) as usize);
        iovecs.clear();
        headers.clear();
        for (i, buffer) in buffers.iter_mut().take(want).enumerate() {
            frames.write(((next + i as u64) % sources) as u32, buffer);
            iovecs.push(libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: buffer.len(),
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
            let rc = unsafe { libc::send(socket.0, iovecs[0].iov_base, iovecs[0].iov_len, 0) };
            if rc < 0 { -1 } else { 1 }
        } else {
            // SAFETY: `headers` holds `want` valid messages whose buffers outlive the call.
            unsafe { libc::sendmmsg(socket.0, headers.as_mut_ptr(), want as u32, 0) }
        };
        if accepted < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == io::ErrorKind::WouldBlock
            {
                // The other end is full: what was refused was not sent; the same frames go
                // again next round.
                continue;
            }
            return Err(err);
        }
        // Frames not accepted are sent again next round.
        let accepted = accepted as usize;
        next += accepted as u64;
        sent.frames += accepted as u64;
        sent.bytes += buffers
            .iter()
            .take(accepted)
            .map(|f| f.len() as u64)
            .sum::<u64>();
    }
    sent.elapsed = started.elapsed();
    sent.first_frame = Some(started);
    Ok(sent)
}
