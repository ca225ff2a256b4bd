//! Captures in the kernel, run by BPF_PROG_TEST_RUN on crafted frames: by source and by
//! destination with a filter, IPv4, IPv6 and VLAN; one in N after the first few, exactly; the
//! snap length; a full ring counted as lost, never silently; nothing once cleared; and the
//! ban check, the rules and the sampler behind the capture do what they do without it.

use netwatch_datapath::{
    BanAction, CaptureCounters, CaptureMaps, CaptureSide, CaptureSpec, CapturedFrame, Datapath,
    LoadOptions, RuleAction, RuleProtocol, Sampling, SignatureRule, SourceMap,
};
use netwatch_tests::{
    frames::{FrameBuilder, TPID_8021Q},
    privileged,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Keeps this thread on the CPU it runs on now: per-CPU counts (a capture's turn, its first
/// frames) are then those of one CPU, exactly.
fn pin() {
    // SAFETY: plain libc calls on this thread's own affinity, with a zeroed set.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

fn load(source_map: SourceMap) -> (Datapath, CaptureMaps) {
    let mut datapath = Datapath::load(LoadOptions {
        source_map,
        max_bans: 4,
        ..LoadOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let captures = datapath
        .take_captures()
        .unwrap_or_else(|| panic!("no capture maps"));
    assert!(datapath.take_captures().is_none(), "taken twice");
    (datapath, captures)
}

fn spec(side: CaptureSide, network: &str, len: u8) -> CaptureSpec {
    CaptureSpec {
        side,
        network: (network.parse().unwrap_or_else(|err| panic!("{err}")), len),
        filter: None,
        every: 1,
        first: 0,
    }
}

fn run(datapath: &Datapath, frame: &[u8]) -> u32 {
    datapath
        .test_run(frame)
        .unwrap_or_else(|err| panic!("{err}"))
}

fn drained(captures: &mut CaptureMaps) -> Vec<CapturedFrame> {
    let mut frames = Vec::new();
    captures.drain(|frame| frames.push(frame));
    frames
}

fn counts(captures: &CaptureMaps, index: u32) -> CaptureCounters {
    captures.counts(index).unwrap_or_else(|err| panic!("{err}"))
}

/// A capture by source keeps exactly its source's frames, whole, with their length; one by
/// destination with a filter keeps exactly the frames to its victim that the filter names
/// (UDP from port 123: the NTP answers, VLAN-tagged or not, and not the DNS ones), IPv6 as
/// IPv4. Every frame passes. Cleared, nothing more is kept, and its network is looked at no
/// more.
#[test]
fn a_capture_keeps_exactly_its_subjects_frames() {
    if !privileged("a_capture_keeps_exactly_its_subjects_frames") {
        return;
    }
    pin();
    for source_map in [SourceMap::PerCpu, SourceMap::Shared] {
        let (datapath, mut captures) = load(source_map);
        let flooder = FrameBuilder::ipv4([198, 51, 100, 7])
            .to_ipv4([192, 0, 2, 5])
            .to_port(80)
            .payload(300)
            .build()
            .bytes;
        let other = FrameBuilder::ipv4([198, 51, 100, 8])
            .to_ipv4([192, 0, 2, 5])
            .to_port(80)
            .payload(300)
            .build()
            .bytes;
        let v6: [u8; 16] = "2001:db8::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap_or_else(|err| panic!("{err}"))
            .octets();
        let ntp = |builder: FrameBuilder| builder.from_port(123).to_port(40_000).payload(400);
        let answers = [
            ntp(FrameBuilder::ipv4([203, 0, 113, 1]).to_ipv4([192, 0, 2, 9])),
            ntp(FrameBuilder::ipv4([203, 0, 113, 2])
                .to_ipv4([192, 0, 2, 9])
                .vlan(TPID_8021Q, 7)),
            ntp(FrameBuilder::ipv6(v6)),
        ]
        .map(|builder| builder.build().bytes);
        let dns = FrameBuilder::ipv4([203, 0, 113, 3])
            .to_ipv4([192, 0, 2, 9])
            .from_port(53)
            .to_port(40_001)
            .payload(60)
            .build()
            .bytes;

        // Nothing set: nothing kept.
        assert_eq!(run(&datapath, &flooder), XDP_PASS);
        assert!(drained(&mut captures).is_empty());

        captures
            .set(3, spec(CaptureSide::Source, "198.51.100.7", 32))
            .unwrap_or_else(|err| panic!("{err}"));
        let ntp_filter = SignatureRule {
            destination: None,
            protocol: Some(RuleProtocol::Udp),
            src_port: Some(123),
            dst_port: None,
            syn: false,
            fragment: false,
            length: None,
            action: RuleAction::Count,
        };
        captures
            .set(
                5,
                CaptureSpec {
                    filter: Some(ntp_filter),
                    ..spec(CaptureSide::Destination, "192.0.2.9", 32)
                },
            )
            .unwrap_or_else(|err| panic!("{err}"));
        // The IPv6 victim's network, beside: the same filter.
        captures
            .set(
                6,
                CaptureSpec {
                    filter: Some(ntp_filter),
                    ..spec(CaptureSide::Source, "2001:db8::", 64)
                },
            )
            .unwrap_or_else(|err| panic!("{err}"));
        for frame in [&flooder, &other, &flooder, &dns]
            .into_iter()
            .chain(answers.iter())
        {
            assert_eq!(run(&datapath, frame), XDP_PASS);
        }
        let kept = drained(&mut captures);
        let summary: Vec<(u32, &[u8], u32)> = kept
            .iter()
            .map(|frame| (frame.captures, frame.data.as_slice(), frame.original_len))
            .collect();
        let len = |frame: &Vec<u8>| frame.len() as u32;
        assert_eq!(
            summary,
            [
                (1 << 3, flooder.as_slice(), len(&flooder)),
                (1 << 3, flooder.as_slice(), len(&flooder)),
                (1 << 5, answers[0].as_slice(), len(&answers[0])),
                (1 << 5, answers[1].as_slice(), len(&answers[1])),
                (1 << 6, answers[2].as_slice(), len(&answers[2])),
            ],
            "{source_map}"
        );
        assert!(kept.iter().all(|frame| frame.time_ns > 0));
        assert_eq!(
            counts(&captures, 3),
            CaptureCounters {
                seen: 2,
                taken: 2,
                lost: 0
            }
        );
        assert_eq!(counts(&captures, 5).seen, 2);

        // Cleared: nothing more.
        for index in [3, 5, 6] {
            captures.clear(index).unwrap_or_else(|err| panic!("{err}"));
        }
        assert_eq!(captures.specs().count(), 0);
        for frame in [&flooder].into_iter().chain(answers.iter()) {
            assert_eq!(run(&datapath, frame), XDP_PASS);
        }
        assert!(drained(&mut captures).is_empty(), "{source_map}");
    }
}

/// One frame in N is kept on a CPU after its first few, exactly: 3 first, then one in 4 of
/// 40 frames is 3 + 9. The rate changes without a reset of the counts. The snap length cuts
/// the copy and keeps the length on the wire.
#[test]
fn one_in_n_after_the_first_and_the_snap_length_are_exact() {
    if !privileged("one_in_n_after_the_first_and_the_snap_length_are_exact") {
        return;
    }
    pin();
    let (datapath, mut captures) = load(SourceMap::PerCpu);
    captures
        .set(
            0,
            CaptureSpec {
                every: 4,
                first: 3,
                ..spec(CaptureSide::Source, "198.51.100.0", 24)
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    captures
        .set_snap_len(64)
        .unwrap_or_else(|err| panic!("{err}"));
    let frame = FrameBuilder::ipv4([198, 51, 100, 7])
        .to_port(80)
        .payload(900)
        .build()
        .bytes;
    for _ in 0..40 {
        assert_eq!(run(&datapath, &frame), XDP_PASS);
    }
    let kept = drained(&mut captures);
    assert_eq!(kept.len(), 3 + 9);
    assert!(
        kept.iter()
            .all(|k| k.data.as_slice() == &frame[..64] && k.original_len as usize == frame.len())
    );
    assert_eq!(
        counts(&captures, 0),
        CaptureCounters {
            seen: 40,
            taken: 12,
            lost: 0
        }
    );
    // Every second frame from the 41st on (40 is a multiple of 2).
    captures
        .set_every(0, 2)
        .unwrap_or_else(|err| panic!("{err}"));
    for _ in 0..10 {
        run(&datapath, &frame);
    }
    assert_eq!(drained(&mut captures).len(), 5);
    assert_eq!(counts(&captures, 0).taken, 17);
}

/// A ring that fills is counted: every frame kept is in the ring or counted lost, never
/// gone silently, and what was read back is exactly what was taken.
#[test]
fn a_full_ring_is_counted_as_lost() {
    if !privileged("a_full_ring_is_counted_as_lost") {
        return;
    }
    pin();
    let (datapath, mut captures) = load(SourceMap::PerCpu);
    captures
        .set(0, spec(CaptureSide::Source, "198.51.100.7", 32))
        .unwrap_or_else(|err| panic!("{err}"));
    let frame = FrameBuilder::ipv4([198, 51, 100, 7])
        .to_port(80)
        .payload(1400)
        .build()
        .bytes;
    // The ring holds 4 MiB: about 2,900 of these with their headers.
    let sent = 4_000;
    for _ in 0..sent {
        run(&datapath, &frame);
    }
    let read = drained(&mut captures).len() as u64;
    let counted = counts(&captures, 0);
    assert_eq!(counted.seen, sent);
    assert!(counted.lost > 0, "{counted:?}");
    assert_eq!(counted.taken + counted.lost, sent, "{counted:?}");
    assert_eq!(read, counted.taken, "{counted:?}");
}

/// With a capture in force the frame still meets the ban check, the rules and the sampler
/// behind it: a banned source is dropped and counted for its ban, a rule drops what it
/// matches, a sampled port is sampled; and each of them also kept when its subject's.
#[test]
fn bans_rules_and_sampling_work_behind_a_capture() {
    if !privileged("bans_rules_and_sampling_work_behind_a_capture") {
        return;
    }
    pin();
    let (mut datapath, mut captures) = load(SourceMap::PerCpu);
    captures
        .set(0, spec(CaptureSide::Destination, "192.0.2.0", 24))
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_ban(
            0,
            "198.51.100.66"
                .parse()
                .unwrap_or_else(|err| panic!("{err}")),
            32,
        )
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_ban_action(Some(BanAction::Drop))
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_rule(
            0,
            SignatureRule {
                destination: Some((
                    "192.0.2.5".parse().unwrap_or_else(|err| panic!("{err}")),
                    32,
                )),
                protocol: Some(RuleProtocol::Udp),
                src_port: Some(11211),
                dst_port: None,
                syn: false,
                fragment: false,
                length: None,
                action: RuleAction::Drop,
            },
        )
        .unwrap_or_else(|err| panic!("{err}"));
    datapath
        .set_sampling(&Sampling {
            rate: 1_000,
            burst: 100,
            tcp_ports: vec![21],
            udp_ports: Vec::new(),
            all_tcp: false,
            snap_len: 1500,
        })
        .unwrap_or_else(|err| panic!("{err}"));
    let banned = FrameBuilder::ipv4([198, 51, 100, 66])
        .to_ipv4([192, 0, 2, 5])
        .to_port(80)
        .payload(100)
        .build()
        .bytes;
    let memcached = FrameBuilder::ipv4([198, 51, 100, 67])
        .to_ipv4([192, 0, 2, 5])
        .from_port(11211)
        .to_port(40_000)
        .payload(100)
        .build()
        .bytes;
    let ftp = FrameBuilder::ipv4([198, 51, 100, 68])
        .to_ipv4([192, 0, 2, 5])
        .transport(netwatch_tests::frames::Transport::Tcp(
            netwatch_tests::frames::ACK,
        ))
        .to_port(21)
        .raw_payload(b"USER anonymous\r\n")
        .build()
        .bytes;
    assert_eq!(run(&datapath, &banned), XDP_DROP);
    assert_eq!(run(&datapath, &memcached), XDP_DROP);
    assert_eq!(run(&datapath, &ftp), XDP_PASS);
    assert_eq!(
        datapath
            .ban_counts(0)
            .unwrap_or_else(|err| panic!("{err}"))
            .packets,
        1
    );
    assert_eq!(
        datapath
            .rule_counts(0)
            .unwrap_or_else(|err| panic!("{err}"))
            .dropped
            .packets,
        1
    );
    let mut samples = 0;
    datapath.drain_samples(|_| samples += 1);
    assert_eq!(samples, 1, "the FTP frame is sampled");
    assert_eq!(drained(&mut captures).len(), 3, "each of them captured");
}
