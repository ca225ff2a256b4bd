//! Interfaces: what each interface added to one daemon costs. Every interface has a program
//! and maps of its own, at the default size; the harvest of a round reads each in turn and
//! adds their sum.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::maps::loaded_maps;
use netwatch::collect::{Collector, Interval};
use netwatch_datapath::{Datapath, LoadOptions, Snapshot};
use netwatch_tests::frames::FrameBuilder;

/// Sources that send in every interval, on each interface.
const ACTIVE: u32 = 10_000;
/// Rounds timed; the median is reported.
const ROUNDS: usize = 15;
/// Interface counts measured.
const COUNTS: [usize; 3] = [1, 2, 4];

/// Ids of the maps loaded now.
fn map_ids() -> BTreeSet<u32> {
    loaded_maps()
        .filter_map(Result::ok)
        .map(|map| map.id())
        .collect()
}

/// The kernel's memlock figure of the maps whose ids are in `ids`.
fn memlock_of(ids: &BTreeSet<u32>) -> u64 {
    loaded_maps()
        .filter_map(Result::ok)
        .filter(|map| ids.contains(&map.id()))
        .filter_map(|map| {
            let fd = map.fd().ok()?;
            let fdinfo =
                fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
            fdinfo
                .lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|value| value.trim().parse::<u64>().ok())
        })
        .sum()
}

/// `VmRSS` of this process in MiB.
fn rss_mib() -> f64 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One interface as the monitor keeps it.
struct Link {
    datapath: Datapath,
    collector: Collector,
    snapshot: Snapshot,
}

/// One frame from each of [`ACTIVE`] sources.
fn send(datapath: &Datapath) -> Result<()> {
    let mut frame = FrameBuilder::ipv4([10, 0, 0, 0]).payload(22).build().bytes;
    for n in 0..ACTIVE {
        let b = n.to_be_bytes();
        frame[26..30].copy_from_slice(&[10, b[1], b[2], b[3]]);
        datapath.test_run(&frame)?;
    }
    Ok(())
}

/// A round of harvest: each interface read and its deltas computed, then their sum.
fn round(links: &mut [Link]) -> Result<Duration> {
    let started = Instant::now();
    let mut parts = Vec::with_capacity(links.len());
    for link in links.iter_mut() {
        link.datapath.snapshot_into(&mut link.snapshot)?;
        parts.push(
            link.collector
                .update(&link.snapshot, Duration::from_secs(1)),
        );
    }
    if parts.len() > 1 {
        let sum = Interval::combine(&parts);
        std::hint::black_box(sum.sources.len());
    }
    let took = started.elapsed();
    for (link, part) in links.iter_mut().zip(parts) {
        link.collector.recycle(part);
    }
    Ok(took)
}

struct Row {
    count: usize,
    memlock: u64,
    rss: f64,
    harvest: Duration,
}

fn measure(count: usize) -> Result<Row> {
    let before = map_ids();
    let rss_before = rss_mib();
    let mut links = Vec::with_capacity(count);
    for _ in 0..count {
        let datapath = Datapath::load(LoadOptions::default())?;
        links.push(Link {
            datapath,
            collector: Collector::new(),
            snapshot: Snapshot::default(),
        });
    }
    let new: BTreeSet<u32> = map_ids().difference(&before).copied().collect();
    let memlock = memlock_of(&new);
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..=ROUNDS {
        for link in &links {
            send(&link.datapath)?;
        }
        times.push(round(&mut links)?);
    }
    // The first round fills the collectors.
    times.remove(0);
    times.sort();
    let rss = rss_mib() - rss_before;
    Ok(Row {
        count,
        memlock,
        rss,
        harvest: times[times.len() / 2],
    })
}

/// Runs the benchmark and appends its section to `report`.
pub fn interfaces(report: &mut String) -> Result<()> {
    let rows = COUNTS
        .iter()
        .map(|&count| measure(count))
        .collect::<Result<Vec<_>>>()?;
    writeln!(
        report,
        "## Interfaces\n\n\
         Each interface watched has a program and maps of its own, at the default size \
         ({} sources), and each round of the harvest reads every interface in turn, computes \
         its deltas and then their sum (`Interval::combine`, the `all` record). Here every \
         interface has {ACTIVE} sources sending in every interval; the harvest is the median \
         of {ROUNDS} rounds; kernel memory is the `memlock` of the maps the interfaces added; \
         resident memory is this process's growth while they are held.\n",
        netwatch_common::DEFAULT_MAX_SOURCES
    )?;
    writeln!(
        report,
        "| interfaces | kernel memory of the maps (MiB) | resident memory (MiB) | harvest of a round (ms) |\n|---:|---:|---:|---:|"
    )?;
    for row in &rows {
        writeln!(
            report,
            "| {} | {:.1} | {:.1} | {:.2} |",
            row.count,
            row.memlock as f64 / (1024.0 * 1024.0),
            row.rss,
            row.harvest.as_secs_f64() * 1000.0
        )?;
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    let added = (last.count - first.count) as f64;
    let memlock_each = (last.memlock as f64 - first.memlock as f64) / added / (1024.0 * 1024.0);
    let harvest_each = (last.harvest.as_secs_f64() - first.harvest.as_secs_f64()) * 1000.0 / added;
    writeln!(
        report,
        "\nFrom {} to {} interfaces, each added interface cost {memlock_each:.1} MiB of kernel \
         memory and {harvest_each:.2} ms of harvest per round (one interface alone: {:.2} ms), \
         measured on this machine.\n",
        first.count,
        last.count,
        first.harvest.as_secs_f64() * 1000.0
    )?;
    Ok(())
}
