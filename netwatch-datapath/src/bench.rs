//! The benchmarks' own XDP programs, loaded beside netwatch's: the baselines its cost is
//! measured against, and the traffic generator. Used by `cargo xtask bench` and by the tests
//! (a stand-in for another tool's program); never by `monitor` or `replay`.

use std::time::Duration;

use aya::{
    Ebpf, TestRunAttrs, TestRunOptions,
    maps::{Array, MapData},
    programs::{ProgramError, TestRun as _, Xdp, XdpMode},
    sys::SyscallError,
};
use netwatch_common::{
    GENERATE_PROGRAM_NAME, GENERATOR_HEADER_LEN, GENERATOR_MAP, GeneratorState,
    LOOKUP_FLOOR_PROGRAM_NAME, NOOP_PROGRAM_NAME, PARSE_FLOOR_PROGRAM_NAME,
};

use super::{
    error::DatapathError,
    load::{NOOP_OBJECT, check_kernel, load_object},
    test_run::run_frame,
};

/// The benchmarks' own XDP programs, from `netwatch-ebpf/src/bin/noop.rs`: the baselines of
/// the cost benchmarks (the XDP_PASS no-op, the parse floor, netwatch's parse alone, and the
/// lookup floor, one hash lookup of a fixed source per frame) and the traffic generator's
/// program.
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads it.
    pub fn load() -> Result<Self, DatapathError> {
        check_kernel()?;
        Ok(Self {
            ebpf: load_object(
                NOOP_OBJECT,
                &[
                    NOOP_PROGRAM_NAME,
                    PARSE_FLOOR_PROGRAM_NAME,
                    LOOKUP_FLOOR_PROGRAM_NAME,
                    GENERATE_PROGRAM_NAME,
                ],
                |_| {},
            )?,
        })
    }

    /// Attaches it to `ifindex` (a stand-in for another tool's program, in tests).
    pub fn attach(&mut self, ifindex: u32) -> Result<(), DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(NOOP_PROGRAM_NAME)
            .ok_or(DatapathError::Missing("noop program"))?
            .try_into()?;
        program.attach_to_if_index(ifindex, XdpMode::Skb)?;
        Ok(())
    }

    /// As [`Datapath::bench`](super::Datapath::bench), for one of the baselines.
    pub fn bench(
        &self,
        baseline: Baseline,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let name = baseline.program();
        let program: &Xdp = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()?;
        run_frame(program, frame, repeat)
    }

    /// Has the generator program cycle through `sources` sources (at least 1), starting over
    /// from the first.
    pub fn start_generator(&mut self, sources: u32) -> Result<(), DatapathError> {
        let state = GeneratorState {
            sources: sources.max(1),
            ..GeneratorState::default()
        };
        self.generator_state()?.set(0, state, 0)?;
        Ok(())
    }

    /// The generator program's [`GeneratorState`], in its one-entry array.
    fn generator_state(&mut self) -> Result<Array<&mut MapData, GeneratorState>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(GENERATOR_MAP)
            .ok_or(DatapathError::Missing("generator state"))?;
        Ok(Array::try_from(map)?)
    }

    /// Sends `frames` copies of `frame`, each given the next source of the cycle, out of the
    /// interface `ifindex` of the calling thread's network namespace: BPF_PROG_TEST_RUN in
    /// live-frame mode, the kernel transmitting `batch` frames at a time (at most 256).
    /// Returns how many frames the program handed to the interface; the interface may still
    /// drop some (a veth whose peer's ring is full counts them in its `tx_dropped`). On veth,
    /// the peer must have an XDP program attached in driver mode.
    pub fn generate(
        &mut self,
        ifindex: u32,
        frame: &[u8],
        frames: u32,
        batch: u32,
    ) -> Result<u32, DatapathError> {
        let mut state = self.generator_state()?.get(&0, 0)?;
        let header = frame.len().min(GENERATOR_HEADER_LEN);
        state.header[..header].copy_from_slice(&frame[..header]);
        state.header_len = header as u32;
        self.generator_state()?.set(0, state, 0)?;
        let program: &Xdp = self
            .ebpf
            .program(GENERATE_PROGRAM_NAME)
            .ok_or(DatapathError::Missing(GENERATE_PROGRAM_NAME))?
            .try_into()?;
        // The frame arrives on `ifindex`, so XDP_TX sends it out there.
        let context = xdp_context(frame.len(), ifindex);
        program.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&context),
            repeat: frames,
            attrs: TestRunAttrs::new().xdp_live_frames(batch.clamp(1, 256)),
            ..TestRunOptions::default()
        })?;
        let after = self.generator_state()?.get(&0, 0)?.next;
        Ok(after.wrapping_sub(state.next))
    }

    /// Whether this kernel sends XDP live frames (BPF_PROG_TEST_RUN with
    /// `BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18): one live run of the no-op program with one
    /// frame, arriving on loopback (`lo` is ifindex 1 in every network namespace), which
    /// passes it to the stack where it is dropped as a protocol nobody speaks. Some kernels'
    /// security policy (a BPF LSM, say) refuses live frames to root while it allows plain
    /// test runs: no privilege changes that, so the refusal is an answer, not an error.
    pub fn probe_live_frames(&self) -> Result<LiveFrames, DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(NOOP_PROGRAM_NAME)
            .ok_or(DatapathError::Missing(NOOP_PROGRAM_NAME))?
            .try_into()?;
        // A 60-byte frame to and from no one, of the IEEE's local experimental EtherType.
        let mut frame = [0u8; 60];
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        let context = xdp_context(frame.len(), 1);
        match program.test_run(TestRunOptions {
            data_in: Some(&frame),
            ctx_in: Some(&context),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::default()
        }) {
            Ok(_) => Ok(LiveFrames::Allowed),
            Err(ProgramError::SyscallError(SyscallError { io_error, .. })) => {
                Ok(LiveFrames::Refused(io_error))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// When the generator handled its first frame since [`BenchPrograms::start_generator`],
    /// on CLOCK_MONOTONIC in nanoseconds; `None` before it has.
    pub fn generator_first_ns(&mut self) -> Result<Option<u64>, DatapathError> {
        let first = self.generator_state()?.get(&0, 0)?.first_ns;
        Ok((first != 0).then_some(first))
    }
}

/// A test run's `struct xdp_md` (data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex) for a frame of `length` bytes arriving on `ifindex`.
fn xdp_context(length: usize, ifindex: u32) -> [u8; 24] {
    let length = u32::try_from(length).unwrap_or(u32::MAX);
    let mut context = [0u8; 24];
    for (field, value) in context
        .chunks_exact_mut(4)
        .zip([0, length, 0, ifindex, 0, 0])
    {
        field.copy_from_slice(&value.to_ne_bytes());
    }
    context
}

/// What [`BenchPrograms::probe_live_frames`] found.
#[derive(Debug)]
pub enum LiveFrames {
    /// The kernel runs XDP programs on live frames.
    Allowed,
    /// The kernel refused the run, with this error (EPERM where a security policy forbids it,
    /// EINVAL before Linux 5.18).
    Refused(std::io::Error),
}

/// The programs of [`BenchPrograms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Returns XDP_PASS, nothing else.
    Noop,
    /// netwatch's parse of the frame, counting nothing.
    ParseFloor,
    /// One hash lookup of a fixed source, then its value in an array.
    LookupFloor,
}

impl Baseline {
    fn program(self) -> &'static str {
        match self {
            Self::Noop => NOOP_PROGRAM_NAME,
            Self::ParseFloor => PARSE_FLOOR_PROGRAM_NAME,
            Self::LookupFloor => LOOKUP_FLOOR_PROGRAM_NAME,
        }
    }
}
