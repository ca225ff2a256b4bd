//! Running the program on frames with `BPF_PROG_TEST_RUN`: the tests' crafted frames,
//! replayed captures (counted by their length on the wire, handed over in XDP metadata) and
//! timed runs. [`run_frame`] also runs the program that queues free slots and the
//! benchmarks' programs.

use std::time::Duration;

use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp};
use netwatch_common::{WIRE_LENGTH_MAGIC, WireLength};

use super::{error::DatapathError, handle::Datapath};

impl Datapath {
    fn program(&self) -> Result<&Xdp, DatapathError> {
        self.ebpf
            .program(self.program)
            .ok_or(DatapathError::Missing("netwatch program"))?
            .try_into()
            .map_err(DatapathError::from)
    }

    /// The instructions the kernel's verifier processed to accept the counting program, its
    /// rules' check, its sampler, its capture's two programs and its indicators' check (Linux 5.16
    /// and later; `None`
    /// before): the verifier's load, whose budget is a million per program.
    pub fn verified_instructions(&self) -> Result<[Option<u32>; 6], DatapathError> {
        let tail = |name: &'static str| -> Result<Option<u32>, DatapathError> {
            let program: &Xdp = self
                .ebpf
                .program(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()?;
            Ok(program.info()?.verified_instruction_count())
        };
        Ok([
            self.program()?.info()?.verified_instruction_count(),
            tail(netwatch_common::RULES_PROGRAM_NAME)?,
            tail(netwatch_common::SAMPLER_PROGRAM_NAME)?,
            tail(netwatch_common::CAPTURE_PROGRAM_NAME)?,
            tail(netwatch_common::CAPTURE_KEEP_PROGRAM_NAME)?,
            tail(netwatch_common::INTEL_PROGRAM_NAME)?,
        ])
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` and returns its verdict.
    ///
    /// The maps are updated as for a received frame, which is how captures are replayed and
    /// how the tests check the parser. Frames shorter than an Ethernet header are refused by
    /// the kernel (`EINVAL`).
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, DatapathError> {
        run_frame(self.program()?, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program once on a captured frame that was `wire_len` bytes on the wire, as
    /// [`Datapath::test_run`] does, and has it counted by that length (a [`WireLength`] in
    /// the frame's XDP metadata).
    ///
    /// What the kernel runs is cut to [`REPLAY_MAX_RUN`] bytes (it takes about 3.5 KiB in
    /// the frame and the rest in fragments, up to about 70 KiB); what a capture cut by its
    /// snap length lacks, it never had. Either way the counts carry the wire length. A frame
    /// shorter than an Ethernet header, which the kernel refuses to run, is run as an IPv4
    /// Ethernet header with nothing behind it: the program counts it as malformed, by its own
    /// length.
    pub fn replay_frame(&mut self, frame: &[u8], wire_len: u32) -> Result<u32, DatapathError> {
        const META: usize = size_of::<WireLength>();
        const ETH_HLEN: usize = 14;
        let wire_len = wire_len.max(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        let frame = &frame[..frame.len().min(REPLAY_MAX_RUN)];
        let mut data = Vec::with_capacity(META + frame.len().max(ETH_HLEN));
        data.extend_from_slice(&WIRE_LENGTH_MAGIC.to_ne_bytes());
        data.extend_from_slice(&wire_len.to_ne_bytes());
        if frame.len() < ETH_HLEN {
            data.extend_from_slice(&[0; 12]);
            data.extend_from_slice(&0x0800u16.to_be_bytes());
        } else {
            data.extend_from_slice(frame);
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. `data` is the length of the metadata at the start of data_in.
        let mut context = [0u8; 24];
        context[..4].copy_from_slice(&(META as u32).to_ne_bytes());
        context[4..8].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        if !self.no_replay_metadata {
            match self.program()?.test_run(TestRunOptions {
                data_in: Some(&data),
                ctx_in: Some(&context),
                ..TestRunOptions::default()
            }) {
                Ok(result) => return Ok(result.return_value),
                // Before Linux 5.15 an XDP test run takes no context: the frame is run as it
                // was captured, counted by the bytes the kernel sees. Said once.
                Err(err) if matches!(&err, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EINVAL)) =>
                {
                    log::warn!(
                        "this kernel runs no XDP metadata in a test run (Linux 5.15 does): replayed frames are counted by their captured bytes, runts are not counted, and frames over 3.5 KiB are cut"
                    );
                    self.no_replay_metadata = true;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let frame = &data[META..];
        run_frame(self.program()?, frame, 1).map(|(verdict, _)| verdict)
    }

    /// Runs the program `repeat` times on `frame`; returns the verdict and the mean time per
    /// run as the kernel measured it.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), DatapathError> {
        run_frame(self.program()?, frame, repeat)
    }
}

/// Most bytes of a captured frame [`Datapath::replay_frame`] hands to the kernel: the largest
/// IP packet behind an Ethernet header and two VLAN tags, well within what BPF_PROG_TEST_RUN
/// takes with 4 KiB pages (about 3.5 KiB in the frame and 17 pages of fragments).
pub const REPLAY_MAX_RUN: usize = 65_535 + 14 + 8;

pub(super) fn run_frame(
    program: &Xdp,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, Duration), DatapathError> {
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::default()
    })?;
    Ok((result.return_value, result.duration))
}
