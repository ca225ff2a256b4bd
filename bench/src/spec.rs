//! What the generator is asked to send ([`Spec`], by which [`Method`]) and what it sent
//! ([`Sent`]): the words every part of it shares.

use std::{
    fmt,
    time::{Duration, Instant},
};

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
    /// Percent of IPv6 frames: source `n` is IPv6 when `n % 100` is below it.
    pub ipv6_percent: u8,
    /// VLAN tags per frame: 0, 1 or 2.
    pub vlan_tags: u8,
    /// Distinct source addresses, cycled through: frame `i` comes from source `i % sources`
    /// (see [`source_of`]).
    pub sources: u32,
    /// How the frames are sent.
    pub method: Method,
    /// Threads sending at once, each pinned to a CPU of its own (modulo the CPUs), each with
    /// its share of the frames and of the rate, each cycling through all the sources. On a
    /// veth, XDP live frames from several CPUs need as many receive queues at the other end.
    pub threads: usize,
    /// Frames per `sendmmsg` call, per transmission in live-frame mode (at most 256), or per
    /// `send` of the TX ring; `sendto` sends one at a time whatever this says.
    pub batch: usize,
}

/// How the generator sends (see its module, `generator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Live frames where the kernel allows them, else the TX ring.
    Auto,
    /// BPF_PROG_TEST_RUN in live-frame mode with the generator's XDP program.
    Live,
    /// AF_PACKET with a PACKET_TX_RING and PACKET_QDISC_BYPASS, [`Spec::batch`] frames per
    /// `send`.
    TxRing,
    /// AF_PACKET, [`Spec::batch`] frames per `sendmmsg`.
    Sendmmsg,
    /// AF_PACKET, one frame per `sendto`.
    Sendto,
}

impl Method {
    /// Its name on `netwatch-gen`'s command line and in BENCHMARKS.md.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Live => "live",
            Self::TxRing => "tx-ring",
            Self::Sendmmsg => "sendmmsg",
            Self::Sendto => "sendto",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What was sent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sent {
    /// How.
    pub method: Method,
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
    pub(crate) fn new(method: Method) -> Self {
        Self {
            method,
            frames: 0,
            bytes: 0,
            elapsed: Duration::ZERO,
            first_frame: None,
        }
    }

    /// Frames per second.
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sleeps while `spec`'s rate says the sender is ahead (`sent` frames since `started`);
/// true when it slept, so that the caller looks again.
pub(crate) fn ahead_of_rate(spec: &Spec, started: Instant, sent: u64) -> bool {
    if spec.rate == 0 {
        return false;
    }
    let due = (started.elapsed().as_secs_f64() * spec.rate as f64) as u64;
    if sent >= due {
        std::thread::sleep(Duration::from_micros(50));
        return true;
    }
    false
}
