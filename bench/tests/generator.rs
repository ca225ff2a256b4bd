//! The traffic generator against a real veth pair watched by netwatch's datapath in driver
//! mode: by each method it sends exactly the frames it reports, from the sources it was asked
//! for, and live frames carry a valid IPv4 header.

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use netwatch::datapath::{AttachMode, Attachment, Datapath, LoadOptions};
use netwatch_bench::generator::{Method, Spec, send};
use netwatch_common::SourceKey;
use netwatch_tests::{frames::internet_checksum, netns::VethPair, privileged};

/// Loads netwatch's datapath and attaches it in driver mode to the pair's monitored end.
fn watch(pair: &VethPair) -> (Datapath, Attachment) {
    let iface = pair.monitor_if.clone();
    pair.monitor.run(move || {
        let mut datapath =
            Datapath::load(LoadOptions::default()).unwrap_or_else(|err| panic!("{err}"));
        let attachment = datapath
            .attach(&iface, AttachMode::Driver, false)
            .unwrap_or_else(|err| panic!("{err}"));
        (datapath, attachment)
    })
}

fn spec(method: Method, count: u64, sources: u32, ipv6_percent: u8, vlan_tags: u8) -> Spec {
    Spec {
        count,
        duration: Duration::from_secs(20),
        rate: 0,
        size: 64,
        ipv6_percent,
        vlan_tags,
        sources,
        method,
        threads: 1,
        batch: 64,
    }
}

/// Sends `spec` from the pair's sending end and returns what the generator reported.
fn send_from(pair: &VethPair, spec: &Spec) -> u64 {
    let iface = pair.sender_if.clone();
    let spec = spec.clone();
    let sent = pair
        .sender
        .run(move || send(&iface, &spec))
        .unwrap_or_else(|err| panic!("sending: {err}"));
    sent.frames
}

/// Reads the datapath until it has counted every frame of `expected` (bounded in time), and
/// panics unless it counted exactly those: as many frames in all, each from its source.
fn assert_counted(datapath: &mut Datapath, expected: &HashMap<SourceKey, u64>) {
    let total: u64 = expected.values().sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    let snapshot = loop {
        let snapshot = datapath.snapshot().unwrap_or_else(|err| panic!("{err}"));
        if snapshot.globals.total_packets >= total || Instant::now() > deadline {
            break snapshot;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        snapshot.globals.total_packets, total,
        "{:?}",
        snapshot.globals
    );
    let by_source: HashMap<SourceKey, u64> = snapshot
        .stats_by_source()
        .into_iter()
        .map(|(key, stats)| (key, stats.packets))
        .collect();
    assert_eq!(&by_source, expected);
}

fn ipv4_source(n: u32) -> SourceKey {
    let [_, a, b, c] = n.to_be_bytes();
    SourceKey::ipv4([10, a, b, c])
}

fn ipv6_source(n: u32) -> SourceKey {
    let mut addr = [
        0x20, 0x01, 0x0d, 0xb8, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    addr[12..16].copy_from_slice(&n.to_be_bytes());
    SourceKey::ipv6(addr)
}

#[test]
fn live_frames_arrive_exactly_as_reported_from_every_source_asked_for() {
    if !privileged("live_frames_arrive_exactly_as_reported_from_every_source_asked_for") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut datapath, _attachment) = watch(&pair);

    // IPv4 behind a VLAN tag: 100 sources, 100 frames each.
    let sent = send_from(&pair, &spec(Method::LiveFrames, 10_000, 100, 0, 1));
    assert_eq!(sent, 10_000);
    let mut expected: HashMap<SourceKey, u64> = (0..100).map(|n| (ipv4_source(n), 100)).collect();
    assert_counted(&mut datapath, &expected);

    // Then IPv6: 50 more sources, 60 frames each.
    let sent = send_from(&pair, &spec(Method::LiveFrames, 3_000, 50, 100, 0));
    assert_eq!(sent, 3_000);
    expected.extend((0..50).map(|n| (ipv6_source(n), 60)));
    assert_counted(&mut datapath, &expected);
}

/// One sending thread per CPU (two, even on one CPU), into a veth with a receive queue each.
#[test]
fn live_frames_from_two_cpus_at_once_arrive_exactly_as_reported() {
    if !privileged("live_frames_from_two_cpus_at_once_arrive_exactly_as_reported") {
        return;
    }
    let pair = VethPair::with_queues(true, 2);
    let (mut datapath, _attachment) = watch(&pair);
    let mut spec = spec(Method::LiveFrames, 20_000, 100, 0, 0);
    spec.threads = 2;
    assert_eq!(send_from(&pair, &spec), 20_000);
    // Each thread cycles through every source: 100 frames each from each thread.
    let expected = (0..100).map(|n| (ipv4_source(n), 200)).collect();
    assert_counted(&mut datapath, &expected);
}

#[test]
fn sendmmsg_and_sendto_arrive_exactly_as_reported() {
    if !privileged("sendmmsg_and_sendto_arrive_exactly_as_reported") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut datapath, _attachment) = watch(&pair);
    let sent = send_from(&pair, &spec(Method::Sendmmsg, 5_000, 50, 0, 0));
    assert_eq!(sent, 5_000);
    let sent = send_from(&pair, &spec(Method::Sendto, 1_000, 50, 0, 0));
    assert_eq!(sent, 1_000);
    let expected = (0..50).map(|n| (ipv4_source(n), 120)).collect();
    assert_counted(&mut datapath, &expected);
}

/// The frames the generator program rewrote, as a packet socket at the receiving end sees
/// them: each IPv4 header still sums to zero.
#[test]
fn live_frames_keep_a_valid_ipv4_header_checksum() {
    if !privileged("live_frames_keep_a_valid_ipv4_header_checksum") {
        return;
    }
    let pair = VethPair::new(true);
    let (_datapath, _attachment) = watch(&pair);
    let iface = pair.monitor_if.clone();
    let listener = pair.monitor.spawn(move || capture(&iface, 40));
    // Let the socket bind before anything is sent.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        send_from(&pair, &spec(Method::LiveFrames, 40, 1_000, 0, 0)),
        40
    );
    let frames = listener
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        .unwrap_or_else(|err| panic!("capturing: {err}"));
    let ipv4: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|frame| frame.get(12..14) == Some(&[0x08, 0x00]))
        .collect();
    assert_eq!(ipv4.len(), 40, "{} frames captured", frames.len());
    let mut sources = Vec::new();
    for frame in ipv4 {
        let header = &frame[14..34];
        assert_eq!(internet_checksum(header), 0, "{header:02x?}");
        sources.push(u32::from_be_bytes([0, header[13], header[14], header[15]]));
    }
    assert_eq!(sources, (0..40).collect::<Vec<u32>>());
}

/// Up to `count` frames received on `iface` (in this thread's namespace), within two seconds.
fn capture(iface: &str, count: usize) -> io::Result<Vec<Vec<u8>>> {
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain syscall, checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = receive(fd, ifindex, protocol, count);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

fn receive(fd: i32, ifindex: u32, protocol: u16, count: usize) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: a zeroed sockaddr_ll is valid; the fields that matter are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of that size.
    if unsafe { libc::bind(fd, (&raw const addr).cast(), size_of_val(&addr) as u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: a valid timeval of that size.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of_val(&timeout) as u32,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut frames = Vec::new();
    let mut buffer = [0u8; 2048];
    while frames.len() < count && Instant::now() < deadline {
        // SAFETY: the buffer is writable for its length.
        let n = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n > 0 {
            frames.push(buffer[..n as usize].to_vec());
        }
    }
    Ok(frames)
}
