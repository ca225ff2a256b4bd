//! Signature rules in the kernel, run by BPF_PROG_TEST_RUN on crafted frames: each match field
//! alone and combined, IPv4, IPv6 and VLAN, with exact matched and dropped counts and the
//! verdict of every frame; the first rule by index decides; a dry run passes what it counts;
//! a rate limit passes its rate within a stated tolerance, its split exact; a frame a rule
//! drops is still counted as every frame.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use netwatch_datapath::{
    Datapath, LoadOptions, RuleAction, RuleProtocol, SignatureRule, SourceMap,
};
use netwatch_tests::{
    frames::{ACK, FrameBuilder, SYN, TPID_8021Q, Transport},
    privileged,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const SOURCE_MAPS: [SourceMap; 2] = [SourceMap::PerCpu, SourceMap::Shared];

/// A rule that drops everything, for its fields to narrow.
fn any() -> SignatureRule {
    SignatureRule {
        destination: None,
        protocol: None,
        src_port: None,
        dst_port: None,
        syn: false,
        fragment: false,
        length: None,
        action: RuleAction::Drop,
    }
}

fn to(network: &str, len: u8) -> Option<(std::net::IpAddr, u8)> {
    Some((
        network
            .parse()
            .unwrap_or_else(|err| panic!("{network}: {err}")),
        len,
    ))
}

/// The frames every case runs: to the victim 192.0.2.5 (and the IPv6 one, 2001:db8::fe),
/// and to its neighbour 192.0.2.6.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let ntp = |builder: FrameBuilder| builder.from_port(123).to_port(40_000).payload(400);
    [
        (
            "ntp",
            ntp(FrameBuilder::ipv4([198, 51, 100, 1]).to_ipv4([192, 0, 2, 5])),
        ),
        (
            "dns",
            FrameBuilder::ipv4([198, 51, 100, 2])
                .to_ipv4([192, 0, 2, 5])
                .from_port(53)
                .to_port(40_001)
                .payload(60),
        ),
        (
            "syn",
            FrameBuilder::ipv4([203, 0, 113, 9])
                .to_ipv4([192, 0, 2, 5])
                .transport(Transport::Tcp(SYN))
                .to_port(443),
        ),
        (
            "ack",
            FrameBuilder::ipv4([203, 0, 113, 9])
                .to_ipv4([192, 0, 2, 5])
                .transport(Transport::Tcp(ACK))
                .to_port(443),
        ),
        (
            "fragment",
            FrameBuilder::ipv4([203, 0, 113, 10])
                .to_ipv4([192, 0, 2, 5])
                .ipv4_fragment(100, false)
                .payload(200),
        ),
        (
            "icmp",
            FrameBuilder::ipv4([203, 0, 113, 11])
                .to_ipv4([192, 0, 2, 5])
                .transport(Transport::Icmp),
        ),
        (
            "ntp to .6",
            ntp(FrameBuilder::ipv4([198, 51, 100, 1]).to_ipv4([192, 0, 2, 6])),
        ),
        (
            "vlan ntp",
            ntp(FrameBuilder::ipv4([198, 51, 100, 3])
                .to_ipv4([192, 0, 2, 5])
                .vlan(TPID_8021Q, 7)),
        ),
        ("v6 ntp", ntp(FrameBuilder::ipv6(v6))),
        (
            "v6 syn",
            FrameBuilder::ipv6(v6)
                .transport(Transport::Tcp(SYN))
                .to_port(443),
        ),
    ]
    .into_iter()
    .map(|(name, builder)| (name, builder.build().bytes))
    .collect()
}

/// Runs every frame; the names of those dropped.
fn dropped(datapath: &Datapath) -> BTreeSet<&'static str> {
    frames()
        .into_iter()
        .filter(|(name, frame)| {
            let verdict = datapath
                .test_run(frame)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(
                verdict == XDP_PASS || verdict == XDP_DROP,
                "{name}: {verdict}"
            );
            verdict == XDP_DROP
        })
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn each_field_alone_and_combined_drops_exactly_what_it_names() {
    if !privileged("each_field_alone_and_combined_drops_exactly_what_it_names") {
        return;
    }
    let cases: Vec<(&str, SignatureRule, Vec<&str>)> = vec![
        (
            "a host",
            SignatureRule {
                destination: to("192.0.2.5", 32),
                ..any()
            },
            vec!["ntp", "dns", "syn", "ack", "fragment", "icmp", "vlan ntp"],
        ),
        (
            "udp anywhere",
            SignatureRule {
                protocol: Some(RuleProtocol::Udp),
                ..any()
            },
            vec!["ntp", "dns", "fragment", "ntp to .6", "vlan ntp", "v6 ntp"],
        ),
        (
            "reflected ntp to a /24",
            SignatureRule {
                destination: to("192.0.2.0", 24),
                protocol: Some(RuleProtocol::Udp),
                src_port: Some(123),
                ..any()
            },
            vec!["ntp", "ntp to .6", "vlan ntp"],
        ),
        (
            "syn to 443",
            SignatureRule {
                syn: true,
                dst_port: Some(443),
                ..any()
            },
            vec!["syn", "v6 syn"],
        ),
        (
            "fragments to a host",
            SignatureRule {
                destination: to("192.0.2.5", 32),
                fragment: true,
                ..any()
            },
            vec!["fragment"],
        ),
        (
            "long packets",
            SignatureRule {
                length: Some((400, 1500)),
                ..any()
            },
            vec!["ntp", "ntp to .6", "vlan ntp", "v6 ntp"],
        ),
        (
            // The IP header's length, not the frame's (Ethernet pads a SYN's 54 bytes).
            "40-byte packets",
            SignatureRule {
                length: Some((40, 40)),
                ..any()
            },
            vec!["syn", "ack"],
        ),
        (
            "icmp",
            SignatureRule {
                protocol: Some(RuleProtocol::Icmp),
                ..any()
            },
            vec!["icmp"],
        ),
        (
            "ipv6 udp to a /32",
            SignatureRule {
                destination: to("2001:db8::", 32),
                protocol: Some(RuleProtocol::Udp),
                ..any()
            },
            vec!["v6 ntp"],
        ),
        (
            "a port no frame has",
            SignatureRule {
                src_port: Some(124),
                ..any()
            },
            vec![],
        ),
    ];
    for source_map in SOURCE_MAPS {
        let mut datapath = Datapath::load(LoadOptions {
            source_map,
            ..LoadOptions::default()
        })
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(dropped(&datapath).is_empty(), "no rule drops nothing");
        for (name, rule, expected) in &cases {
            datapath
                .set_rule(3, *rule)
                .unwrap_or_else(|err| panic!("{name}: {err}"));
            let expected: BTreeSet<&str> = expected.iter().copied().collect();
            assert_eq!(dropped(&datapath), expected, "{source_map}: {name}");
            let counts = datapath
                .rule_counts(3)
                .unwrap_or_else(|err| panic!("{err}"));
            let bytes: u64 = frames()
                .iter()
                .filter(|(frame, _)| expected.contains(frame))
                .map(|(_, bytes)| bytes.len() as u64)
                .sum();
            assert_eq!(
                (counts.matched.packets, counts.matched.bytes),
                (expected.len() as u64, bytes),
                "{source_map}: {name}"
            );
            assert_eq!(counts.dropped, counts.matched, "{source_map}: {name}");
            assert_eq!(counts.passed().packets, 0);
            datapath.clear_rule(3).unwrap_or_else(|err| panic!("{err}"));
            assert!(dropped(&datapath).is_empty(), "{name}: cleared");
        }
        // Every frame was counted as a frame, dropped or not.
        let snapshot = datapath.snapshot().unwrap_or_else(|err| panic!("{err}"));
        let runs = (1 + 2 * cases.len()) * frames().len();
        assert_eq!(snapshot.globals.total_packets, runs as u64, "{source_map}");
    }
}

/// The lowest index that matches decides: a dry run counts and passes what it holds, and the
/// rule after it sees only the rest; each rule's counts are its own.
#[test]
fn the_first_rule_decides_and_a_dry_run_passes() {
    if !privileged("the_first_rule_decides_and_a_dry_run_passes") {
        return;
    }
    let mut datapath = Datapath::load(LoadOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule(
            0,
            SignatureRule {
                destination: to("192.0.2.5", 32),
                src_port: Some(123),
                action: RuleAction::Count,
                ..any()
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule(
            1,
            SignatureRule {
                destination: to("192.0.2.0", 24),
                ..any()
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    let dropped = dropped(&datapath);
    assert_eq!(
        dropped,
        BTreeSet::from(["dns", "syn", "ack", "fragment", "icmp", "ntp to .6"])
    );
    let dry = datapath
        .rule_counts(0)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        (dry.matched.packets, dry.dropped.packets),
        (2, 0),
        "ntp, vlan ntp"
    );
    let drop = datapath
        .rule_counts(1)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!((drop.matched.packets, drop.dropped.packets), (6, 6));
    // A rule set again starts from zero.
    datapath
        .set_rule(
            1,
            SignatureRule {
                destination: to("192.0.2.0", 24),
                ..any()
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    let drop = datapath
        .rule_counts(1)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(drop.matched.packets, 0);
    // What is not a rule is refused, clearly.
    let err = datapath.set_rule(64, any()).unwrap_err().to_string();
    assert!(err.contains("rules 0 to 63"), "{err}");
    let err = datapath
        .set_rule(
            5,
            SignatureRule {
                destination: to("192.0.2.5", 24),
                ..any()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a network"), "{err}");
    // Eight rules may apply to one destination (two are set: 0 and 1); a ninth is refused
    // and leaves nothing behind.
    for index in 10..16 {
        datapath
            .set_rule(
                index,
                SignatureRule {
                    destination: to("192.0.2.5", 32),
                    dst_port: Some(index as u16),
                    ..any()
                },
            )
            .unwrap_or_else(|err| panic!("{index}: {err}"));
    }
    let ninth = SignatureRule {
        destination: to("192.0.2.4", 30),
        ..any()
    };
    let err = datapath.set_rule(20, ninth).unwrap_err().to_string();
    assert!(
        err.contains("more than 8 rules would apply to 192.0.2.5/32"),
        "{err}"
    );
    assert_eq!(datapath.rules().count(), 8);
    assert!(datapath.rules().all(|(index, _)| index != 20));
}

/// A SYN flood rate-limited to 2,000 pkt/s for about two seconds: every frame is matched,
/// the dropped count is exactly the frames the kernel dropped, and what passed is the rate
/// times the time, within a window's allowance at each end and 2%.
#[test]
fn a_rate_limit_passes_its_rate_and_counts_its_split_exactly() {
    if !privileged("a_rate_limit_passes_its_rate_and_counts_its_split_exactly") {
        return;
    }
    const PPS: u32 = 2_000;
    let mut datapath = Datapath::load(LoadOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule(
            7,
            SignatureRule {
                destination: to("192.0.2.5", 32),
                syn: true,
                action: RuleAction::RateLimit { pps: PPS },
                ..any()
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    let syn = FrameBuilder::ipv4([203, 0, 113, 9])
        .to_ipv4([192, 0, 2, 5])
        .transport(Transport::Tcp(SYN))
        .to_port(443)
        .build()
        .bytes;
    let (mut sent, mut dropped) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) && sent < 3_000_000 {
        let verdict = datapath
            .test_run(&syn)
            .unwrap_or_else(|err| panic!("{err}"));
        sent += 1;
        if verdict == XDP_DROP {
            dropped += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let counts = datapath
        .rule_counts(7)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(counts.matched.packets, sent);
    assert_eq!(counts.dropped.packets, dropped);
    let passed = counts.passed().packets as f64;
    let expected = f64::from(PPS) * seconds;
    let (_, allowance) = netwatch_datapath::rate_window(PPS);
    let tolerance = 2.0 * f64::from(allowance) + 0.02 * expected;
    assert!(
        (passed - expected).abs() <= tolerance,
        "passed {passed} of {sent} in {seconds:.2} s; {expected:.0} expected, ±{tolerance:.0}"
    );
    assert!(
        sent as f64 > 3.0 * expected,
        "the flood must outrun the limit: {sent}"
    );
}

/// Sources exempt from the rules (a victim's own NTP or DNS servers): a rule that matches
/// their frames lets them pass and does not count them; the others it drops. Emptying the
/// list drops them again.
#[test]
fn exempt_sources_pass_a_rule_uncounted() {
    if !privileged("exempt_sources_pass_a_rule_uncounted") {
        return;
    }
    let mut datapath = Datapath::load(LoadOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule(
            0,
            SignatureRule {
                destination: to("192.0.2.5", 32),
                ..any()
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule_exemptions(&[
            ("198.51.100.0".parse().unwrap(), 24),
            ("2001:db8:9::".parse().unwrap(), 48),
        ])
        .unwrap_or_else(|err| panic!("{err}"));
    // ntp and dns are from 198.51.100.0/24, vlan ntp from .3 of it.
    assert_eq!(
        dropped(&datapath),
        BTreeSet::from(["syn", "ack", "fragment", "icmp"])
    );
    let counts = datapath
        .rule_counts(0)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!((counts.matched.packets, counts.dropped.packets), (4, 4));
    datapath
        .set_rule_exemptions(&[])
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        dropped(&datapath),
        BTreeSet::from(["ntp", "dns", "syn", "ack", "fragment", "icmp", "vlan ntp"])
    );
    let err = datapath
        .set_rule_exemptions(&[("198.51.100.1".parse().unwrap(), 24)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a network"), "{err}");
}

/// The verifier's load of the counting program and of each tail (the rules' check, the
/// sampler, the capture), whatever rules and captures may do, keeps a fifth of the kernel's
/// budget of a million instructions free. Linux 5.16 and later say it, and must.
#[test]
fn the_verifier_load_keeps_a_fifth_of_its_budget_free() {
    if !privileged("the_verifier_load_keeps_a_fifth_of_its_budget_free") {
        return;
    }
    for source_map in SOURCE_MAPS {
        let datapath = Datapath::load(LoadOptions {
            source_map,
            ..LoadOptions::default()
        })
        .unwrap_or_else(|err| panic!("{err}"));
        let counts = datapath
            .verified_instructions()
            .unwrap_or_else(|err| panic!("{err}"));
        eprintln!("{source_map}: {counts:?} instructions verified");
        let says = aya::util::KernelVersion::current()
            .is_ok_and(|kernel| kernel >= aya::util::KernelVersion::new(5, 16, 0));
        for count in counts {
            match count {
                Some(count) => assert!(count < 800_000, "{source_map}: {counts:?}"),
                None => assert!(!says, "the kernel did not say: {counts:?}"),
            }
        }
    }
}
