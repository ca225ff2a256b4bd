//! The traffic generator against a real veth pair watched by netwatch's datapath in driver
//! mode: by each method it sends exactly the frames it reports, from the sources it was asked
//! for, with a valid IPv4 header. The tests of live frames say in one line that the kernel
//! refuses them and return where it does (a kernel's policy, which no privilege changes, so
//! under CI=true too); every other test sends by a socket method, which always works.

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant},
};

use netwatch_bench::generator::{Method, Spec, live_frames, send};
use netwatch_common::SourceKey;
use netwatch_datapath::{AttachMode, Attachment, Datapath, LoadOptions};
use netwatch_tests::{frames::internet_checksum, netns::VethPair, privileged};

/// Whether live frames can be tested here; where the kernel refuses them, says so in one line.
fn live_frames_allowed(test: &str) -> bool {
    match live_frames() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Loads netwatch's datapath and attaches it in driver mode to the pair's monitored end.
fn watch(pair: &VethPair) -> (Datapath, Attachment) {
    watch_with(pair, LoadOptions::default())
}

/// As [`watch`], with these options.
fn watch_with(pair: &VethPair, options: LoadOptions) -> (Datapath, Attachment) {
    let iface = pair.monitor_if.clone();
    pair.monitor.run(move || {
        let mut datapath = Datapath::load(options).unwrap_or_else(|err| panic!("{err}"));
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
    let test = "live_frames_arrive_exactly_as_reported_from_every_source_asked_for";
    if !privileged(test) || !live_frames_allowed(test) {
        return;
    }
    let pair = VethPair::new(true);
    let (mut datapath, _attachment) = watch(&pair);

    // IPv4 behind a VLAN tag: 100 sources, 100 frames each.
    let sent = send_from(&pair, &spec(Method::Live, 10_000, 100, 0, 1));
    assert_eq!(sent, 10_000);
    let mut expected: HashMap<SourceKey, u64> = (0..100).map(|n| (ipv4_source(n), 100)).collect();
    assert_counted(&mut datapath, &expected);

    // Then IPv6: 50 more sources, 60 frames each.
    let sent = send_from(&pair, &spec(Method::Live, 3_000, 50, 100, 0));
    assert_eq!(sent, 3_000);
    expected.extend((0..50).map(|n| (ipv6_source(n), 60)));
    assert_counted(&mut datapath, &expected);
}

/// One sending thread per CPU (two, even on one CPU), into a veth with a receive queue each.
#[test]
fn live_frames_from_two_cpus_at_once_arrive_exactly_as_reported() {
    let test = "live_frames_from_two_cpus_at_once_arrive_exactly_as_reported";
    if !privileged(test) || !live_frames_allowed(test) {
        return;
    }
    let pair = VethPair::with_queues(true, 2);
    let (mut datapath, _attachment) = watch(&pair);
    let mut spec = spec(Method::Live, 20_000, 100, 0, 0);
    spec.threads = 2;
    assert_eq!(send_from(&pair, &spec), 20_000);
    // Each thread cycles through every source: 100 frames each from each thread.
    let expected = (0..100).map(|n| (ipv4_source(n), 200)).collect();
    assert_counted(&mut datapath, &expected);
}

#[test]
fn every_socket_method_arrives_exactly_as_reported() {
    if !privileged("every_socket_method_arrives_exactly_as_reported") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut datapath, _attachment) = watch(&pair);
    let sent = send_from(&pair, &spec(Method::Sendmmsg, 5_000, 50, 0, 0));
    assert_eq!(sent, 5_000);
    let sent = send_from(&pair, &spec(Method::Sendto, 1_000, 50, 0, 0));
    assert_eq!(sent, 1_000);
    // Behind two VLAN tags, a fifth of them IPv6.
    let sent = send_from(&pair, &spec(Method::TxRing, 4_000, 50, 20, 2));
    assert_eq!(sent, 4_000);
    let mut expected: HashMap<SourceKey, u64> = (0..50)
        .map(|n| {
            let source = if n % 100 < 20 {
                ipv6_source(n)
            } else {
                ipv4_source(n)
            };
            (source, 80)
        })
        .collect();
    for n in 0..50 {
        *expected.entry(ipv4_source(n)).or_default() += 120;
    }
    assert_counted(&mut datapath, &expected);
}

/// More sources than the generator once kept frames for (65,536): N sources are exactly N
/// sources, each as often as the frame count says (3 x 100,000 frames sent 300,000 sources
/// before, every frame its own). By the default method: live frames, or the TX ring.
#[test]
fn more_sources_than_templates_are_exactly_the_sources_asked_for() {
    if !privileged("more_sources_than_templates_are_exactly_the_sources_asked_for") {
        return;
    }
    let pair = VethPair::new(true);
    let (mut datapath, _attachment) = watch_with(
        &pair,
        LoadOptions {
            max_sources: 1 << 18,
            ..LoadOptions::default()
        },
    );
    let sent = send_from(&pair, &spec(Method::Auto, 300_000, 100_000, 0, 0));
    assert_eq!(sent, 300_000);
    let expected = (0..100_000).map(|n| (ipv4_source(n), 3)).collect();
    assert_counted(&mut datapath, &expected);
}

/// The frames as a packet socket at the receiving end sees them, by each method that works
/// here: each IPv4 header still sums to zero, and the sources come in their order.
#[test]
fn every_method_keeps_a_valid_ipv4_header_checksum() {
    if !privileged("every_method_keeps_a_valid_ipv4_header_checksum") {
        return;
    }
    let mut methods = vec![Method::Sendmmsg, Method::Sendto, Method::TxRing];
    if live_frames_allowed("every_method_keeps_a_valid_ipv4_header_checksum (live frames)") {
        methods.push(Method::Live);
    }
    for method in methods {
        let pair = VethPair::new(true);
        let (_datapath, _attachment) = watch(&pair);
        let iface = pair.monitor_if.clone();
        let listener = pair.monitor.spawn(move || capture(&iface, 40));
        // Let the socket bind before anything is sent.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            send_from(&pair, &spec(method, 40, 1_000, 0, 0)),
            40,
            "{method}"
        );
        let frames = listener
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .unwrap_or_else(|err| panic!("capturing: {err}"));
        let ipv4: Vec<&Vec<u8>> = frames
            .iter()
            .filter(|frame| frame.get(12..14) == Some(&[0x08, 0x00]))
            .collect();
        assert_eq!(ipv4.len(), 40, "{method}: {} frames captured", frames.len());
        let mut sources = Vec::new();
        for frame in ipv4 {
            let header = &frame[14..34];
            assert_eq!(internet_checksum(header), 0, "{method}: {header:02x?}");
            sources.push(u32::from_be_bytes([0, header[13], header[14], header[15]]));
        }
        assert_eq!(sources, (0..40).collect::<Vec<u32>>(), "{method}");
    }
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
