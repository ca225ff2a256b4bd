//! Scale: a million distinct sources in the slots, per-CPU and shared. The cost of the insert
//! path, the time to read the slots and compute deltas each interval, the reclaim, netwatch's
//! memory, and the kernel memory of the maps per source and per CPU.

use std::{
    fmt::Write as _,
    fs,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::loaded_maps;
use netwatch::collect::Collector;
use netwatch_common::{SourceKey, SourceValue};
use netwatch_datapath::{Datapath, LoadOptions, Reclaim, Snapshot, SourceMap};
use netwatch_tests::frames::FrameBuilder;

const SOURCES: u32 = 1_000_000;
/// netwatch's default map size.
const DEFAULT_SIZE: u32 = netwatch_common::DEFAULT_MAX_SOURCES;

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn memory_mib() -> (f64, f64) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The kernel's memlock figure for the newest map called `name`, from its fdinfo, and its
/// capacity.
fn map_memlock(name: &str) -> Option<(u64, u32)> {
    let info = loaded_maps()
        .filter_map(Result::ok)
        .filter(|map| map.name_as_str() == Some(name))
        .max_by_key(|map| map.id())?;
    let fd = info.fd().ok()?;
    let fdinfo = fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsFd::as_fd(&fd).as_raw_fd()
    ))
    .ok()?;
    let memlock = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())?;
    Some((memlock, info.max_entries()))
}

/// The interval readings of one layout.
#[derive(Debug)]
struct Filled {
    source_map: SourceMap,
    /// Loading the program with 2^20 slots (the free queue is filled then).
    load: Duration,
    insert_ns: f64,
    fill: Duration,
    /// Every source sent a frame since the last reading.
    busy: Interval,
    /// Nothing was sent since the last reading.
    idle: Interval,
    /// The reclaim of the idle reading (deletes) and of the next one (frees).
    forget: Reclaim,
    free: Reclaim,
    /// Read and deltas at the default map size, on the way.
    default_size: Duration,
    /// Kernel memory of the four maps together, and the capacity.
    memlock: Option<u64>,
    /// This process's resident memory while the collector holds a reading of a million.
    rss: f64,
}

/// One reading.
#[derive(Debug, Default)]
struct Interval {
    entries: usize,
    changed: usize,
    /// The read of the slots ([`Datapath::snapshot`] less its reclaim).
    read: Duration,
    deltas: Duration,
}

impl Interval {
    fn total(&self) -> Duration {
        self.read + self.deltas
    }
}

/// The reader's side of the intervals, as the monitor keeps it: a collector, and the last
/// snapshot whose lists the next one reuses.
#[derive(Default)]
struct Reader {
    collector: Collector,
    snapshot: Snapshot,
}

/// A reading: snapshot, then collector, as the monitor does them.
fn interval(datapath: &mut Datapath, reader: &mut Reader) -> Result<(Interval, Reclaim)> {
    let started = Instant::now();
    datapath.snapshot_into(&mut reader.snapshot)?;
    let reclaim = datapath.last_reclaim();
    let read = started.elapsed().saturating_sub(reclaim.took);
    let entries = reader.snapshot.sources.len();
    let started = Instant::now();
    let interval = reader
        .collector
        .update(&reader.snapshot, Duration::from_secs(1));
    let deltas = started.elapsed();
    let changed = interval.sources.len();
    reader.collector.recycle(interval);
    Ok((
        Interval {
            entries,
            changed,
            read,
            deltas,
        },
        reclaim,
    ))
}

/// Sends one frame from each of the first `sources` sources; the kernel's time for them.
fn send_all(datapath: &Datapath, sources: u32) -> Result<Duration> {
    let mut frame = FrameBuilder::ipv4([10, 0, 0, 0]).payload(22).build().bytes;
    let mut kernel = Duration::ZERO;
    for n in 0..sources {
        let b = n.to_be_bytes();
        frame[26..30].copy_from_slice(&[10 + b[0], b[1], b[2], b[3]]);
        let (_, took) = datapath.bench(&frame, 1)?;
        kernel += took;
    }
    Ok(kernel)
}

/// A busy interval (every source sent since the last reading) at the default size.
fn busy_at_default_size(source_map: SourceMap) -> Result<Duration> {
    let mut datapath = Datapath::load(LoadOptions {
        max_sources: DEFAULT_SIZE,
        source_map,
        ..LoadOptions::default()
    })?;
    datapath.set_sketches(true)?;
    // A few less than the size, so that no reclaim comes into it.
    let sources = DEFAULT_SIZE - DEFAULT_SIZE / 4;
    let mut reader = Reader::default();
    send_all(&datapath, sources)?;
    interval(&mut datapath, &mut reader)?;
    send_all(&datapath, sources)?;
    Ok(interval(&mut datapath, &mut reader)?.0.total())
}

/// Fills 2^20 slots of `source_map` with a million sources and reads them as intervals do.
fn fill_and_read(source_map: SourceMap) -> Result<Filled> {
    let started = Instant::now();
    let mut datapath = Datapath::load(LoadOptions {
        max_sources: 1 << 20,
        source_map,
        ..LoadOptions::default()
    })
    .with_context(|| format!("loading a {source_map} layout of 2^20 slots"))?;
    let load = started.elapsed();
    datapath.set_sketches(true)?;
    let started = Instant::now();
    let kernel = send_all(&datapath, SOURCES)?;
    let fill = started.elapsed();
    let default_size = busy_at_default_size(source_map)?;
    let mut reader = Reader::default();
    // The first reading fills the collector.
    interval(&mut datapath, &mut reader)?;
    send_all(&datapath, SOURCES)?;
    let (busy, _) = interval(&mut datapath, &mut reader)?;
    let rss = memory_mib().0;
    let (idle, forget) = interval(&mut datapath, &mut reader)?;
    std::thread::sleep(Duration::from_millis(20));
    let (_, free) = interval(&mut datapath, &mut reader)?;
    let memlock = [
        netwatch_common::SOURCE_SLOTS_MAP,
        netwatch_common::SOURCE_VALUES_MAP,
        netwatch_common::SLOT_KEYS_MAP,
        netwatch_common::FREE_SLOTS_MAP,
    ]
    .into_iter()
    .map(|name| map_memlock(name).map(|(bytes, _)| bytes))
    .sum();
    Ok(Filled {
        source_map,
        load,
        insert_ns: kernel.as_nanos() as f64 / f64::from(SOURCES),
        fill,
        busy,
        idle,
        forget,
        free,
        default_size,
        memlock,
        rss,
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs the scale benchmark and appends its section to `report`.
pub fn scale(report: &mut String) -> Result<()> {
    let (rss_before, _) = memory_mib();
    let per_cpu = fill_and_read(SourceMap::PerCpu)?;
    let shared = fill_and_read(SourceMap::Shared)?;
    // The kernel updates the high-water mark lazily: never report it under a reading taken.
    let hwm = memory_mib().1.max(per_cpu.rss).max(shared.rss);
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let layouts = [&per_cpu, &shared];

    writeln!(report, "\n## Scale: one million sources\n")?;
    writeln!(
        report,
        "Sources are counted in slots (`netwatch-datapath/src/slots.rs`): a hash map from \
         address to slot, which packets only read, and the slots' values in a \
         memory-mappable BPF array (`BPF_F_MMAPABLE`), one region per CPU (per-CPU layout, \
         plain adds) or one region for all (shared layout, atomic adds). Userspace maps the \
         array and reads it as memory: no syscall, no walk of a kernel hash table. A source's \
         first frame takes a slot from a BPF queue of free slots; userspace takes back the \
         slots of the sources idle longest when fewer than an eighth are free.\n"
    )?;
    writeln!(
        report,
        "2^20 slots filled with {SOURCES} distinct IPv4 sources by BPF_PROG_TEST_RUN, one \
         frame each, once per layout. Then intervals as netwatch runs them: a busy one (every \
         source sent a frame since the last reading, so the collector computes, lists and sorts \
         a million deltas) and an idle one (nothing sent). \"Read\" is the snapshot (the \
         {cpus} regions of every slot summed, the sketches of the closing window counted); \
         \"deltas\" is the collection stage.\n"
    )?;
    writeln!(
        report,
        "| layout | interval | sources read | sources that sent | read | deltas | total | share of a 1 s interval |"
    )?;
    writeln!(report, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for filled in layouts {
        for (name, reading) in [("busy", &filled.busy), ("idle", &filled.idle)] {
            writeln!(
                report,
                "| {} | {name} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0}% |",
                filled.source_map,
                reading.entries,
                reading.changed,
                ms(reading.read),
                ms(reading.deltas),
                ms(reading.total()),
                reading.total().as_secs_f64() * 100.0,
            )?;
        }
    }
    let worst = layouts
        .iter()
        .flat_map(|filled| [filled.busy.total(), filled.idle.total()])
        .max()
        .unwrap_or_default();
    writeln!(
        report,
        "\nThe goal, reading and computing the deltas in under a quarter of the interval (250 \
         ms at 1 s), is {} at a million sources: {:.0} ms at worst. (The previous layout, LRU \
         hash maps read with `BPF_MAP_LOOKUP_BATCH`, took 920 ms per-CPU and 697 ms shared \
         on the machine of the session that replaced it, of which the kernel's walk of the hash table alone took 558 and 347 ms; \
         entry by entry through aya, 4.2 s.) What it took, found with `perf`: values read in \
         place from the mapped array instead of copied out by a kernel walk; the collector's \
         last readings in a list indexed by slot instead of a hash map; the snapshot's and \
         the deltas' lists reused from one interval to the next (written fresh, their pages \
         faulted in every interval, which cost as much as all the rest); keys read as words; \
         spread estimates from a table instead of two logarithms per source. With the default \
         {DEFAULT_SIZE} slots (three quarters in use, every source busy), an interval takes \
         {:.0} ms per-CPU and {:.0} ms shared.\n",
        if worst < Duration::from_millis(250) {
            "met"
        } else {
            "missed"
        },
        ms(worst),
        ms(per_cpu.default_size),
        ms(shared.default_size),
    )?;
    writeln!(
        report,
        "Reclaim: at the idle reading {} slots of 2^20 were free (fewer than an eighth), so \
         the sources idle longest lost theirs, at most a thirty-second of the slots per \
         reading: {} addresses deleted in {:.0} ms per-CPU ({} in {:.0} ms shared; \
         `BPF_MAP_DELETE_BATCH`, thousands per syscall). At the next reading their {} slots \
         were cleared, staged in a mapped array and queued again by a program in one \
         BPF_PROG_TEST_RUN call (a BPF queue takes no batches from userspace) and, free slots \
         being still under a quarter, {} more addresses deleted: {:.0} ms in all ({} and {} \
         in {:.0} ms shared). This is paid only when slots run low, in proportion to \
         the sources that come and go, and bounded per reading; the read and the deltas of \
         the table above come on top.\n",
        (1u32 << 20) - SOURCES,
        per_cpu.forget.forgotten,
        ms(per_cpu.forget.took),
        shared.forget.forgotten,
        ms(shared.forget.took),
        per_cpu.free.freed,
        per_cpu.free.forgotten,
        ms(per_cpu.free.took),
        shared.free.freed,
        shared.free.forgotten,
        ms(shared.free.took),
    )?;
    writeln!(
        report,
        "Insert path: {:.0} ns per packet per-CPU, {:.0} ns shared, as the kernel times the \
         program (a new source each packet: a queue pop, the key written, a hash insert; \
         compare the known-source figures above). Filling took {:.1} s and {:.1} s of wall \
         time, syscalls included. Loading with 2^20 slots (verifying the programs, creating \
         the maps, and queueing every slot as free, which a filler program does in the kernel \
         in one BPF_PROG_TEST_RUN call) took {:.2} s and {:.2} s.\n",
        per_cpu.insert_ns,
        shared.insert_ns,
        per_cpu.fill.as_secs_f64(),
        shared.fill.as_secs_f64(),
        per_cpu.load.as_secs_f64(),
        shared.load.as_secs_f64(),
    )?;
    writeln!(
        report,
        "Memory of the process doing this (netwatch's own code, in the benchmark's process): \
         {rss_before:.0} MiB at the start of this section, {:.0} MiB while the collector holds \
         its reading of a million sources (per-CPU; the mapped slots count in it as they are \
         touched), {hwm:.0} MiB at the peak.\n",
        per_cpu.rss,
    )?;
    let value = size_of::<SourceValue>();
    let key = size_of::<SourceKey>();
    if let (Some(per_cpu_bytes), Some(shared_bytes)) = (per_cpu.memlock, shared.memlock) {
        let slots = f64::from(1u32 << 20);
        let per_source = per_cpu_bytes as f64 / slots;
        let fixed = per_source - (value * cpus) as f64;
        let at = |cpus: usize| fixed + (value * cpus) as f64;
        let shared_per_source = shared_bytes as f64 / slots;
        let gib = |bytes_per_source: f64| bytes_per_source * 1e6 / f64::from(1u32 << 30);
        writeln!(
            report,
            "Kernel memory of the four maps (their `memlock` in fdinfo), for 2^20 slots on \
             {cpus} possible CPUs: per-CPU {:.0} MiB, {per_source:.0} bytes per source \
             ({fixed:.0} fixed: the {key}-byte key in the hash map with its element, the slot's \
             key in the array, its place in the free queue; plus {value} bytes of value per \
             CPU); shared {:.0} MiB, {shared_per_source:.0} bytes per source whatever the CPU \
             count. (The source cache adds {} KiB per CPU whatever the number of sources.) The \
             per-CPU layout multiplies the value by the CPU count:\n",
            per_cpu_bytes as f64 / f64::from(1u32 << 20),
            shared_bytes as f64 / f64::from(1u32 << 20),
            netwatch_common::SOURCE_CACHE_ENTRIES as usize * size_of::<u32>() / 1024,
        )?;
        writeln!(
            report,
            "| CPUs | per-CPU bytes per source | per-CPU, 1M sources | shared, 1M sources |\n|---:|---:|---:|---:|"
        )?;
        for n in [cpus, 8, 16, 64] {
            writeln!(
                report,
                "| {n} | {:.0} | {:.2} GiB | {:.2} GiB |",
                at(n),
                gib(at(n)),
                gib(shared_per_source),
            )?;
        }
        writeln!(
            report,
            "\nThe choice, made by `--source-map auto` (the default): per-CPU while the \
             per-CPU values fit in {} MiB, shared beyond. Per-CPU is the faster layout (see the \
             cost table) and the only one that stays fast when one source floods every receive \
             queue (see \"every CPU at once\": there the shared layout's atomic adds on one \
             cache line cost far more per packet), so it is kept wherever its memory is \
             affordable: on these 2-CPU machines up to {:.1} million sources, on 64 CPUs up \
             to about {},000. Beyond that, at a million sources on 64 CPUs say, the per-CPU \
             layout would take {:.1} GiB against {:.2} GiB shared, and the shared one is the \
             only sensible choice. Either can be forced with `--source-map`.",
            SourceMap::PER_CPU_BUDGET >> 20,
            SourceMap::PER_CPU_BUDGET as f64 / value as f64 / 2.0 / 1e6,
            SourceMap::PER_CPU_BUDGET / value as u64 / 64 / 1000,
            gib(at(64)),
            gib(shared_per_source),
        )?;
    }
    eprintln!("scale: per-cpu {per_cpu:?}\nscale: shared {shared:?}");
    Ok(())
}
