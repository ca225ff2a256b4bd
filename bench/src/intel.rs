//! Threat intelligence: what the kernel's tries of listed networks cost a frame (none loaded;
//! a million loaded, the frame not listed; its source listed; its destination listed), what
//! writing a million networks into them takes in time and kernel memory, and what a feed of a
//! million addresses and networks and a hundred thousand domains costs `netwatch` to load
//! (the release binary replaying a small capture with and without it: wall time and peak
//! resident memory).

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use netwatch_datapath::{Baseline, BenchPrograms, Datapath};
use netwatch_tests::{ScratchDir, frames::FrameBuilder};

use crate::{known_frame_to_a_host, lowest, ns_of};

/// Addresses (/32) and networks (/24) of the million loaded.
const ADDRESSES: u32 = 900_000;
const NETWORKS: u32 = 100_000;
/// Domains of the feed.
const DOMAINS: u32 = 100_000;

/// `n` with a comma every three digits.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A million listed networks, none of them the benchmark frame's addresses (10.0.0.1 and
/// 192.0.2.10), sorted.
fn a_million() -> Vec<(IpAddr, u8)> {
    let mut networks: Vec<(IpAddr, u8)> = (0..ADDRESSES)
        .map(|i| (IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i)), 32))
        .chain((0..NETWORKS).map(|i| (IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (i << 8))), 24)))
        .collect();
    networks.sort_unstable();
    networks
}

/// The cost rows, the trie's load time and memory.
pub fn intel_cost(
    datapath: &mut Datapath,
    noop: &BenchPrograms,
    repeat: u32,
    trials: usize,
    report: &mut String,
) -> Result<()> {
    let frame = known_frame_to_a_host();
    let mut tries = datapath
        .take_intel()
        .context("the indicator tries are not there")?;
    let million = a_million();
    let started = Instant::now();
    let sync = tries.set(&million)?;
    let load = started.elapsed();
    ensure!(
        sync.held == million.len() && sync.refused == 0,
        "the tries hold {} of {} networks ({} refused)",
        sync.held,
        million.len(),
        sync.refused
    );
    let memory = tries.kernel_memory();
    let with = |extra: (IpAddr, u8)| {
        let mut networks = million.clone();
        networks.push(extra);
        networks.sort_unstable();
        networks
    };
    let source_listed = with((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 32));
    let destination_listed = with((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 32));
    let mut samples: [Vec<f64>; 5] = Default::default();
    for _ in 0..trials {
        // No feed, as far as the program can tell: the tries skipped.
        tries.set_matching(false)?;
        samples[0].push(ns_of(datapath.bench(&frame, repeat)?)?);
        tries.set_matching(true)?;
        samples[1].push(ns_of(datapath.bench(&frame, repeat)?)?);
        tries.set(&source_listed)?;
        samples[2].push(ns_of(datapath.bench(&frame, repeat)?)?);
        tries.set(&destination_listed)?;
        samples[3].push(ns_of(datapath.bench(&frame, repeat)?)?);
        tries.set(&million)?;
        samples[4].push(ns_of(noop.bench(Baseline::Noop, &frame, repeat)?)?);
        // The matches of the listed frames, read and emptied as a reading does.
        datapath.clear_overflow()?;
    }
    tries.set(&[])?;
    let [plain, unlisted, source, destination, baseline] = samples.map(lowest);
    writeln!(
        report,
        "\n### Threat intelligence: listed networks\n\n\
         The same frame (UDP from 10.0.0.1 to 192.0.2.10), timed as above: netwatch as loaded \
         (no feed lists an address: one comparison of a global, after the frame is counted); \
         with {} networks in the tries ({} addresses and {} /24s), none the frame's (two \
         lookups in the IPv4 trie, source and destination, that find nothing); with the \
         frame's source listed among them (the lookup finds it, a tail call into the \
         indicators' program, which parses the frame again, looks both addresses up again and \
         adds the frame to its match's count, an atomic add in a hash map shared by every \
         CPU, then does the main program's remaining checks); and with its destination listed \
         instead.\n",
        grouped(million.len() as u64),
        grouped(u64::from(ADDRESSES)),
        grouped(u64::from(NETWORKS)),
    )?;
    writeln!(
        report,
        "| netwatch as loaded ns/pkt | {} networks, frame not listed ns/pkt | source listed ns/pkt | destination listed ns/pkt | no-op ns/pkt |\n|---:|---:|---:|---:|---:|\n\
         | {plain:.1} | {unlisted:.1} | {source:.1} | {destination:.1} | {baseline:.1} |",
        grouped(million.len() as u64),
    )?;
    writeln!(
        report,
        "\nAgainst netwatch as loaded, a million listed networks change the cost of a frame \
         that is not listed by {:+.1} ns, of one from a listed address by {:+.1} ns and of one \
         to a listed address by {:+.1} ns (differences of lowest figures; a nanosecond or two \
         either way is noise). With no feed, the check's cost is part of the table of bans' \
         first figure, against the program without the checks. Writing the {} networks into \
         the empty tries took {:.2} s (one syscall each; a feed read again writes only what \
         changed); the kernel accounts {} for them.",
        unlisted - plain,
        source - plain,
        destination - plain,
        grouped(million.len() as u64),
        load.as_secs_f64(),
        memory.map_or(String::from("an unknown amount of memory"), |bytes| {
            format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
        }),
    )?;
    Ok(())
}

/// Wall time and peak resident memory of `netwatch replay` of a small capture, with the
/// configuration `config`; the lowest time and highest memory of `trials`.
fn replay_with(
    netwatch: &Path,
    capture: &Path,
    config: &Path,
    trials: usize,
) -> Result<(Duration, u64)> {
    let mut best = Duration::MAX;
    let mut peak = 0u64;
    for _ in 0..trials {
        let started = Instant::now();
        let child = Command::new(netwatch)
            .arg("replay")
            .arg(capture)
            .arg("--config")
            .arg(config)
            .args(["--format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting netwatch replay")?;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with pointers to live locals.
        let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        ensure!(waited > 0, "wait4: {}", std::io::Error::last_os_error());
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "netwatch replay failed ({status})"
        );
        best = best.min(started.elapsed());
        // ru_maxrss is in KiB.
        peak = peak.max(u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024);
    }
    Ok((best, peak))
}

/// Load time and memory of a feed of a million addresses and networks and a hundred thousand
/// domains, through the release binary.
pub fn feed_load(netwatch: &Path, report: &mut String) -> Result<()> {
    let dir = ScratchDir::new("nwfeed");
    let mut feed = String::from("#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\n");
    for i in 0..ADDRESSES {
        writeln!(
            feed,
            "{}\tIntel::ADDR\tbench-feed\tC2 server",
            Ipv4Addr::from(0x6440_0000 + i)
        )?;
    }
    for i in 0..NETWORKS {
        writeln!(
            feed,
            "{}/24\tIntel::SUBNET\tbench-feed\tbotnet range",
            Ipv4Addr::from(0x0b00_0000 + (i << 8))
        )?;
    }
    for i in 0..DOMAINS {
        writeln!(feed, "d{i}.bad.example\tIntel::DOMAIN\tbench-feed\tloader")?;
    }
    let feed_path = dir.join("million.intel");
    fs::write(&feed_path, &feed)?;
    let capture = dir.join("small.pcap");
    let frames: Vec<(Duration, Vec<u8>)> = (0..1_000u64)
        .map(|i| {
            (
                Duration::from_secs(1_700_000_000) + Duration::from_millis(i),
                FrameBuilder::ipv4([10, 1, 0, (i % 200) as u8])
                    .payload(22)
                    .build()
                    .bytes,
            )
        })
        .collect();
    netwatch_tests::write_pcap(&capture, &frames);
    let plain = dir.join("plain.toml");
    fs::write(&plain, "")?;
    let with_feed = dir.join("feed.toml");
    fs::write(
        &with_feed,
        format!("[intel]\nfiles = [\"{}\"]\n", feed_path.display()),
    )?;
    let (plain_time, plain_memory) = replay_with(netwatch, &capture, &plain, 3)?;
    let (feed_time, feed_memory) = replay_with(netwatch, &capture, &with_feed, 3)?;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    writeln!(
        report,
        "\n### Threat intelligence: loading a large feed\n\n\
         `netwatch replay` (the release binary) of a 1,000-frame capture, without a feed and \
         with one of {} addresses, {} /24 networks and {} domains ({:.0} MiB of Zeek Intel \
         text): the lowest wall time and the highest peak resident memory (`ru_maxrss`) of 3 \
         runs each. The difference is what the feed costs: reading and parsing it, its \
         lookups in userspace, and writing its million networks into the kernel's tries \
         (whose kernel memory is counted in the row above, not here).\n",
        grouped(u64::from(ADDRESSES)),
        grouped(u64::from(NETWORKS)),
        grouped(u64::from(DOMAINS)),
        mib(feed.len() as u64),
    )?;
    writeln!(
        report,
        "| | wall time | peak resident memory |\n|---|---:|---:|\n\
         | no feed | {:.2} s | {:.0} MiB |\n| the feed | {:.2} s | {:.0} MiB |",
        plain_time.as_secs_f64(),
        mib(plain_memory),
        feed_time.as_secs_f64(),
        mib(feed_memory),
    )?;
    writeln!(
        report,
        "\nThe feed takes {:.2} s and {:.0} MiB more ({:.0} bytes per indicator).",
        feed_time.saturating_sub(plain_time).as_secs_f64(),
        mib(feed_memory.saturating_sub(plain_memory)),
        feed_memory.saturating_sub(plain_memory) as f64 / f64::from(ADDRESSES + NETWORKS + DOMAINS),
    )?;
    Ok(())
}
