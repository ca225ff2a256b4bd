//! Network namespaces and veth pairs made for one test and removed when it ends, pass or fail,
//! and a frame sender that only ever transmits inside them.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    thread,
    time::Duration,
};

use crate::unique_name;

/// Runs `ip` with `args`, panicking with its output if it fails.
pub fn ip(args: &[&str]) -> Output {
    crate::process::succeed(Command::new("ip").args(args))
}

/// A network namespace, deleted on drop (with every interface in it).
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with a unique name starting with `prefix`, with IPv6 off for the
    /// interfaces created in it, so that no router or neighbour solicitation adds traffic
    /// that a test did not send.
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        for key in [
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.all.disable_ipv6=1",
        ] {
            netns.exec(&["sysctl", "-q", "-w", key]);
        }
        // Loopback up, for servers the tests run inside (metrics, Prometheus).
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// A control socket path for a netwatch run in this namespace, removed with it (two
    /// daemons at once on one path: the second is refused).
    pub fn control_path(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("netwatch-test-{}.sock", self.name))
    }

    /// A SQLite store path for a netwatch run in this namespace, in a folder of its own
    /// (netwatch makes it) where the daemon's captures go too (`captures/` beside the store),
    /// removed with the namespace.
    pub fn db_path(&self) -> std::path::PathBuf {
        self.state_dir().join("netwatch.db")
    }

    /// The folder of [`Netns::db_path`].
    pub fn state_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("netwatch-test-{}", self.name))
    }

    /// Where a daemon of this namespace writes its captures by default.
    pub fn capture_dir(&self) -> std::path::PathBuf {
        self.state_dir().join("captures")
    }

    /// Runs a command inside the namespace, panicking if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that will run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `f` on a thread that has entered the namespace, and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Starts `f` on a thread that has entered the namespace, and returns at once.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
            // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
            f()
        })
    }

    /// The XDP line of `ip -d link show dev IFACE` in this namespace, if a program is attached.
    pub fn xdp_attachment(&self, iface: &str) -> Option<String> {
        let output = self.exec(&["ip", "-d", "link", "show", "dev", iface]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|line| line.contains("prog/xdp"))
            .map(|line| line.trim().to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_file(self.control_path());
        let _ = std::fs::remove_dir_all(self.state_dir());
    }
}

/// Two namespaces joined by a veth pair, both ends up: `monitor` is where netwatch runs,
/// `sender` where test traffic comes from.
#[derive(Debug)]
pub struct VethPair {
    /// Namespace of the monitored end.
    pub monitor: Netns,
    /// Namespace of the sending end.
    pub sender: Netns,
    /// The monitored interface.
    pub monitor_if: String,
    /// The sending interface.
    pub sender_if: String,
}

impl VethPair {
    /// Creates both namespaces and the pair, and brings both ends up (unless `up` is false,
    /// which leaves the monitored end down).
    pub fn new(up: bool) -> Self {
        Self::with_queues(up, 1)
    }

    /// [`VethPair::new`] with `queues` receive and transmit queues at each end: frames sent
    /// by XDP from several CPUs at once go to as many receive queues (a veth picks the queue
    /// by CPU), instead of all crowding one ring.
    pub fn with_queues(up: bool, queues: usize) -> Self {
        let monitor = Netns::new("nwm");
        let sender = Netns::new("nws");
        let monitor_if = unique_name("nwa");
        let sender_if = unique_name("nwb");
        let queues = queues.max(1).to_string();
        let queue_args = ["numtxqueues", &queues, "numrxqueues", &queues];
        let mut args = vec!["link", "add", &monitor_if];
        args.extend(queue_args);
        args.extend([
            "netns",
            &monitor.name,
            "type",
            "veth",
            "peer",
            "name",
            &sender_if,
        ]);
        args.extend(queue_args);
        args.extend(["netns", &sender.name]);
        ip(&args);
        sender.exec(&["ip", "link", "set", &sender_if, "up"]);
        if up {
            monitor.exec(&["ip", "link", "set", &monitor_if, "up"]);
        }
        Self {
            monitor,
            sender,
            monitor_if,
            sender_if,
        }
    }

    /// Sends `frames` out of the sender's interface with AF_PACKET, in bursts with pauses so
    /// that the veth queue never overflows; returns how many were sent. Bounded by the number
    /// of frames given.
    pub fn send(&self, frames: Vec<Vec<u8>>) -> usize {
        let iface = self.sender_if.clone();
        self.sender.run(move || send_raw(&iface, &frames, None))
    }

    /// Sends each frame at its offset from the start of the call (sorted by offset); returns
    /// how many were sent. Bounded by the frames given and the last offset.
    pub fn send_paced(&self, frames: Vec<(Duration, Vec<u8>)>) -> usize {
        let iface = self.sender_if.clone();
        self.sender.run(move || {
            let (times, frames): (Vec<Duration>, Vec<Vec<u8>>) = frames.into_iter().unzip();
            send_raw(&iface, &frames, Some(&times))
        })
    }

    /// Frames the monitored interface received, from `/sys/class/net` as seen inside its
    /// namespace. (Its `rx_dropped` is no measure of loss on the link: the stack adds frames
    /// it has no use for, such as QinQ frames without a VLAN device.)
    pub fn monitor_rx(&self) -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", self.monitor_if);
        let output = self.monitor.exec(&["cat", &path]);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|err| panic!("{path}: {err}"))
    }
}

const BURST: usize = 16;

fn send_raw(iface: &str, frames: &[Vec<u8>], schedule: Option<&[Duration]>) -> usize {
    let name = CString::new(iface).unwrap_or_else(|err| panic!("{err}"));
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {iface} in the sender namespace");
    // Protocol 0: this socket sends only, it receives nothing.
    // SAFETY: plain syscall, result checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    let mut sent = 0;
    let start = std::time::Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        if let Some(due) = schedule.and_then(|times| times.get(i)) {
            let due = start + *due;
            let now = std::time::Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        // SAFETY: frame and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            frame.len() as isize,
            "sendto frame {i}: {}",
            io::Error::last_os_error()
        );
        sent += 1;
        if schedule.is_none() && sent % BURST == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
    sent
}
