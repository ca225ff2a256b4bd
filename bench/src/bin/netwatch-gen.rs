//! `netwatch-gen`: sends crafted frames out of an interface, bounded in frames and time, and
//! prints exactly how many it sent (one JSON line). Run it inside the network namespace of the
//! sending end of a veth pair (`ip netns exec NS netwatch-gen ...`): never at a real network.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use netwatch_bench::generator::{Method, Spec, resolve, send};

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
    /// How to send: auto (live where the kernel allows live frames, else tx-ring; says which
    /// on stderr), live (the generator's XDP program through BPF_PROG_TEST_RUN in live-frame
    /// mode; the fastest, and on veth it needs an XDP program in driver mode at the other
    /// end), tx-ring (AF_PACKET with a PACKET_TX_RING, bypassing the qdisc), sendmmsg or
    /// sendto (AF_PACKET).
    #[arg(long, value_enum, default_value_t = MethodArg::Auto)]
    method: MethodArg,
    /// Threads sending at once, each pinned to a CPU of its own, each with its share of the
    /// frames and the rate (with live frames on veth, give the other end as many queues).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Frames per sendmmsg call, per send of the TX ring, or per transmission in live-frame
    /// mode (at most 256).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Auto,
    Live,
    TxRing,
    Sendmmsg,
    Sendto,
}

fn main() -> std::process::ExitCode {
    match main_result() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line, the causes after colons; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("netwatch-gen: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main_result() -> Result<()> {
    let args = Args::parse();
    let asked = match args.method {
        MethodArg::Auto => Method::Auto,
        MethodArg::Live => Method::Live,
        MethodArg::TxRing => Method::TxRing,
        MethodArg::Sendmmsg => Method::Sendmmsg,
        MethodArg::Sendto => Method::Sendto,
    };
    // One line on which method sends, and why when live frames were passed over; `live` where
    // the kernel refuses them fails with the refusal.
    let (method, why) = resolve(asked).map_err(anyhow::Error::msg)?;
    match why {
        Some(why) => eprintln!("netwatch-gen: sending by {method} ({why})"),
        None => eprintln!("netwatch-gen: sending by {method}"),
    }
    let spec = Spec {
        count: args.count,
        duration: Duration::from_secs_f64(args.seconds),
        rate: args.rate,
        size: args.size,
        ipv6_percent: args.ipv6_percent,
        vlan_tags: args.vlan_tags,
        sources: args.sources.max(1),
        method,
        threads: args.threads.max(1),
        batch: args.batch,
    };
    let sent = send(&args.iface, &spec).with_context(|| format!("sending on {}", args.iface))?;
    println!(
        "{{\"method\":\"{}\",\"sent\":{},\"bytes\":{},\"seconds\":{:.6},\"rate_pps\":{:.0}}}",
        sent.method,
        sent.frames,
        sent.bytes,
        sent.elapsed.as_secs_f64(),
        sent.rate()
    );
    Ok(())
}
