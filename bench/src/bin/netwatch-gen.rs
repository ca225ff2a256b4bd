//! `netwatch-gen`: sends crafted frames out of an interface, bounded in frames and time, and
//! prints exactly how many it sent (one JSON line). Run it inside the network namespace of the
//! sending end of a veth pair (`ip netns exec NS netwatch-gen ...`): never at a real network.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use netwatch_bench::generator::{Method, Spec, send};

#[derive(Parser)]
#[command(name = "netwatch-gen")]
struct Args {
    /// Interface to send out of.
    #[arg(long)]
    iface: String,
    /// Frames to send at most.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Seconds to send for at most.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frames per second; 0 is as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Frame length in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Percent of IPv6 frames.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    ipv6_percent: u8,
    /// VLAN tags per frame (0 to 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    vlan_tags: u8,
    /// Distinct source addresses.
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// How to send: live-frames (the generator's XDP program through BPF_PROG_TEST_RUN; the
    /// fastest, and on veth it needs an XDP program in driver mode at the other end),
    /// sendmmsg or sendto (AF_PACKET).
    #[arg(long, value_enum, default_value_t = MethodArg::Sendmmsg)]
    method: MethodArg,
    /// Threads sending at once, each pinned to a CPU of its own, each with its share of the
    /// frames and the rate (with live frames on veth, give the other end as many queues).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Frames per sendmmsg call, or per transmission in live-frame mode (at most 256).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Sendto,
    Sendmmsg,
    LiveFrames,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let spec = Spec {
        count: args.count,
        duration: Duration::from_secs_f64(args.seconds),
        rate: args.rate,
        size: args.size,
        ipv6_percent: args.ipv6_percent,
        vlan_tags: args.vlan_tags,
        sources: args.sources.max(1),
        method: match args.method {
            MethodArg::Sendto => Method::Sendto,
            MethodArg::Sendmmsg => Method::Sendmmsg,
            MethodArg::LiveFrames => Method::LiveFrames,
        },
        threads: args.threads.max(1),
        batch: args.batch,
    };
    let sent = send(&args.iface, &spec).with_context(|| format!("sending on {}", args.iface))?;
    println!(
        "{{\"sent\":{},\"bytes\":{},\"seconds\":{:.6},\"rate_pps\":{:.0}}}",
        sent.frames,
        sent.bytes,
        sent.elapsed.as_secs_f64(),
        sent.rate()
    );
    Ok(())
}
