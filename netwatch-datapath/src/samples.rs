//! The sample ring: the frames the program copies to a BPF ring buffer (see
//! [`Datapath::set_sampling`]) and the early events it posts there, parsed into
//! [`SampledFrame`]s and read through the datapath or, taken out as a [`SampleRing`], by a
//! reader of its own.

use aya::maps::{MapData, RingBuf};
use netwatch_common::{EarlyEvent, SAMPLE_MAX_SNAP_LEN, SAMPLE_REASON_EARLY, SampleHeader};

/// A sampled frame as read from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampledFrame {
    /// The kernel's header.
    pub header: SampleHeader,
    /// The captured bytes, from the Ethernet header on.
    pub data: Vec<u8>,
}

impl SampledFrame {
    /// Parses one ring buffer record, a [`SampleHeader`] and the captured bytes; `None` if it
    /// is shorter than its header says.
    pub fn parse(record: &[u8]) -> Option<Self> {
        let header_len = size_of::<SampleHeader>();
        if record.len() < header_len {
            return None;
        }
        // SAFETY: the record starts with a SampleHeader written by the kernel; read_unaligned
        // copes with any alignment and every bit pattern is a valid SampleHeader.
        let header = unsafe { record.as_ptr().cast::<SampleHeader>().read_unaligned() };
        if header.reason == SAMPLE_REASON_EARLY {
            let data = record.get(header_len..header_len + size_of::<EarlyEvent>())?;
            return Some(Self {
                header,
                data: data.to_vec(),
            });
        }
        let captured = (header.captured_len as usize).min(SAMPLE_MAX_SNAP_LEN);
        let data = record.get(header_len..header_len + captured)?;
        Some(Self {
            header,
            data: data.to_vec(),
        })
    }
}

impl SampledFrame {
    /// The early event this record is instead of a frame, if it is one: the interface's
    /// packet rate crossed the early limit (see [`Datapath::set_early_limit`]).
    pub fn early(&self) -> Option<EarlyEvent> {
        if self.header.reason != SAMPLE_REASON_EARLY || self.data.len() < size_of::<EarlyEvent>() {
            return None;
        }
        // SAFETY: the length is checked above; read_unaligned copes with any alignment and
        // every bit pattern is a valid EarlyEvent.
        Some(unsafe { self.data.as_ptr().cast::<EarlyEvent>().read_unaligned() })
    }
}

/// The sample ring buffer, readable on its own (for example from an async task).
pub struct SampleRing(pub(super) RingBuf<MapData>);

impl SampleRing {
    /// Hands every record waiting in the ring to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(SampledFrame)) -> usize {
        let mut records = 0;
        while let Some(record) = self.0.next() {
            records += 1;
            if let Some(frame) = SampledFrame::parse(&record) {
                f(frame);
            }
        }
        records
    }
}

impl std::os::fd::AsRawFd for SampleRing {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}
