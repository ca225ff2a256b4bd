//! Helpers for netwatch's privileged integration tests: a privilege gate that fails under CI,
//! a frame builder that knows what the XDP program must make of every prefix of a frame,
//! network namespaces and veth pairs that remove themselves, and users made for one test with
//! a checkout and a toolchain of their own.

pub mod daemon;
pub mod frames;
pub mod mmdb;
pub mod netns;
pub mod process;
pub mod replay;
pub mod user;

use std::{collections::HashMap, path::PathBuf};

use netwatch_common::{GlobalStats, SourceKey, SourceStats};
use netwatch_datapath::Snapshot;

/// True when privileged tests can run. Elsewhere than CI a test that cannot run says why and
/// returns early; under `CI=true` it fails, so that nothing is skipped silently.
pub fn privileged(test: &str) -> bool {
    let missing = netwatch::privilege::missing_capabilities();
    let is_root = unsafe_geteuid() == 0;
    if is_root && missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: needs root with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (euid root: {is_root}, missing: {missing:?})"
    );
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{why}; under CI=true a privileged test may not be skipped");
    }
    eprintln!("SKIPPED {why}");
    false
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The folder of real captures with their ground truth, kept in the repository
/// (`tests/pcaps`, with their credit in its README), so that a fresh clone tests itself.
pub fn pcaps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pcaps")
}

/// The binary under test: `$NETWATCH_BIN` (set by `cargo xtask test`), else the debug build.
pub fn netwatch_bin() -> PathBuf {
    let path = std::env::var_os("NETWATCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/netwatch"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} not found: run `cargo xtask test`, or build netwatch and set NETWATCH_BIN",
        path.display()
    );
    path
}

/// Writes a classic pcap (Ethernet, microseconds) of `frames` at their times since the epoch.
pub fn write_pcap(path: &std::path::Path, frames: &[(std::time::Duration, Vec<u8>)]) {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let file =
        std::fs::File::create(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file))
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    for (time, data) in frames {
        writer
            .write_packet(&PcapPacket::new(*time, data.len() as u32, data))
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    }
}

/// A plain HTTP/1.1 GET; returns the status code and the body. Bounded by timeouts.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A scratch directory for one test, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// Creates it, with a unique name starting with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
        Self(dir)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the maps must hold: global counters and every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Global counters.
    pub globals: GlobalStats,
    /// Per-source counters.
    pub sources: HashMap<SourceKey, SourceStats>,
    /// The UDP source ports the datapath counts as reflected (as set with
    /// `Datapath::set_reflection_ports`); none by default, as at load time.
    pub reflection_ports: Vec<u16>,
}

impl Expected {
    /// Compares with a snapshot, panicking with both sides and `context` on a difference.
    pub fn assert_matches(&self, snapshot: &Snapshot, context: &str) {
        assert_eq!(
            snapshot.globals, self.globals,
            "{context}: global counters differ"
        );
        let by_source = snapshot.stats_by_source();
        assert_eq!(
            by_source.len(),
            snapshot.sources.len(),
            "{context}: a source read twice"
        );
        let mut actual: Vec<_> = by_source.iter().collect();
        let mut expected: Vec<_> = self.sources.iter().collect();
        actual.sort_by_key(|(key, _)| **key);
        expected.sort_by_key(|(key, _)| **key);
        assert_eq!(actual, expected, "{context}: per-source counters differ");
    }
}

/// Panics unless `sum over sources + overflow + non_ip + malformed == total`, for packets and
/// for bytes: the datapath's invariant while no slot has been reclaimed.
pub fn assert_invariant(snapshot: &Snapshot, context: &str) {
    let g = &snapshot.globals;
    let by_source = snapshot.stats_by_source();
    let packets: u64 = by_source.values().map(|s| s.packets).sum();
    let bytes: u64 = by_source.values().map(|s| s.bytes).sum();
    assert_eq!(
        packets + g.overflow_packets + g.non_ip_packets + g.malformed_packets,
        g.total_packets,
        "{context}: packets do not add up: {g:?}"
    );
    assert_eq!(
        bytes + g.overflow_bytes + g.non_ip_bytes + g.malformed_bytes,
        g.total_bytes,
        "{context}: bytes do not add up: {g:?}"
    );
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the CPU of the
/// thread that calls it, so threads pinned to different CPUs run it at the same time.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
        assert_eq!(
            rc,
            0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `datapath`'s program `runs` times on each CPU at once, CPU `i` on `frames[i]`, through
/// BPF_PROG_TEST_RUN from a thread pinned to that CPU; returns each CPU's verdict and mean time
/// per run, or what went wrong there.
pub fn run_on_every_cpu(
    datapath: &netwatch_datapath::Datapath,
    frames: &[Vec<u8>],
    runs: u32,
) -> Vec<Result<(u32, std::time::Duration), String>> {
    let start = std::sync::Barrier::new(frames.len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(cpu, frame)| {
                let start = &start;
                scope.spawn(move || {
                    pin_to_cpu(cpu);
                    start.wait();
                    datapath
                        .bench(frame, runs)
                        .map_err(|err| format!("test run on CPU {cpu}: {err}"))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(String::from("a worker panicked")))
            })
            .collect()
    })
}

/// A name no other test run uses at the same time: `prefix`, the process id and a counter,
/// short enough for an interface name (15 bytes).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() & 0xfffff);
    assert!(name.len() <= 15, "{name} is too long for an interface name");
    name
}
