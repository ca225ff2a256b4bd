//! Per-CPU against shared source map when every CPU counts at once: the same source on every
//! CPU (one flooding source spread over every receive queue) and a different source on each.

use std::{fmt::Write as _, thread};

use anyhow::{Context as _, Result, ensure};
use netwatch_datapath::{Datapath, LoadOptions, SourceMap};
use netwatch_tests::frames::{FrameBuilder, SYN, Transport};

/// Runs per CPU and trial.
const RUNS: u32 = 1_000_000;
const TRIALS: usize = 5;

/// The mean time per run over every CPU, each running `frames[cpu]` at the same time.
fn every_cpu_at_once(datapath: &Datapath, frames: &[Vec<u8>]) -> Result<f64> {
    let mut total = 0.0;
    for result in netwatch_tests::run_on_every_cpu(datapath, frames, RUNS) {
        let (verdict, per_run) = result.map_err(anyhow::Error::msg)?;
        ensure!(verdict == 2, "program returned {verdict}, not XDP_PASS");
        total += per_run.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// Appends the section to `report`.
pub fn contention(report: &mut String) -> Result<()> {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let frame = |last: u8| {
        FrameBuilder::ipv4([10, 5, 0, last])
            .transport(Transport::Tcp(SYN))
            .to_port(443)
            .build()
            .bytes
    };
    let same: Vec<Vec<u8>> = (0..cpus).map(|_| frame(1)).collect();
    let own: Vec<Vec<u8>> = (0..cpus).map(|cpu| frame(2 + cpu as u8)).collect();
    writeln!(report, "\n## Per-CPU or shared map, every CPU at once\n")?;
    writeln!(
        report,
        "One thread pinned to each of the {cpus} CPUs runs the program {RUNS} times with \
         BPF_PROG_TEST_RUN, all at once (BPF_PROG_TEST_RUN runs on the caller's CPU): a \
         64-byte TCP SYN from the same source on every CPU (one source flooding every receive \
         queue), then from a different source on each CPU. Mean time per run over the CPUs, \
         lowest of {TRIALS} trials; the counts are checked exact by the test suite \
         (`one_source_counted_on_every_cpu_at_once_is_exact`).\n"
    )?;
    writeln!(
        report,
        "| map | same source on every CPU | own source on each CPU |\n|---|---:|---:|"
    )?;
    for source_map in [SourceMap::PerCpu, SourceMap::Shared] {
        let mut datapath = Datapath::load(LoadOptions {
            source_map,
            ..LoadOptions::default()
        })
        .with_context(|| format!("loading netwatch with the {source_map} map"))?;
        datapath.set_sketches(true)?;
        let mut lowest = [f64::INFINITY; 2];
        for _ in 0..TRIALS {
            for (slot, frames) in [&same, &own].into_iter().enumerate() {
                lowest[slot] = lowest[slot].min(every_cpu_at_once(&datapath, frames)?);
            }
        }
        let line = format!(
            "| {source_map} | {:.0} ns/pkt | {:.0} ns/pkt |",
            lowest[0], lowest[1]
        );
        eprintln!("{line}");
        writeln!(report, "{line}")?;
    }
    Ok(())
}
