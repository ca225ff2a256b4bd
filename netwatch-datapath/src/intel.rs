//! Threat intelligence in the kernel: the networks the indicator feeds list, in one LPM
//! trie per family ([`IntelTries`], taken out of the [`Datapath`] for whoever loads the
//! feeds), and the frames they held, counted per listed network, side and peer in two windows
//! that alternate at each reading, as the overflow's ([`IntelReading`], read by
//! [`Datapath::snapshot`]).
//!
//! A window is emptied exactly: after the reading moves the kernel to the other window,
//! `membarrier(MEMBARRIER_CMD_GLOBAL)` waits until every program run that could still write
//! the closed one has ended (an RCU grace period; XDP runs inside one), then the closed
//! window is read and its entries deleted.

use std::{
    cmp::Ordering,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use aya::maps::{
    Array, HashMap as AyaHashMap, MapData, MapError, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};
use netwatch_common::{
    FAMILY_IPV4, INTEL_COUNTS_MAP, INTEL_GLOBALS_MAP, INTEL_HITS_MAPS, INTEL_SIDE_SOURCE, INTEL_V4,
    INTEL_V4_MAP, INTEL_V6, INTEL_V6_MAP, IntelCounts, IntelGlobals, IntelHitCount, IntelHitKey,
};

use super::{
    error::{DatapathError, not_found},
    handle::Datapath,
    overflow::{Traffic, add_traffic},
};

/// Which address of a frame a listed network held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IntelSide {
    /// The source: traffic from a listed address.
    Source,
    /// The destination: traffic to a listed address.
    Destination,
}

/// The frames of one listed network, on one side, with one peer, in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntelHit {
    /// The listed network (address and prefix length), as the trie holds it.
    pub network: (IpAddr, u8),
    /// Whether it held the frames' source or destination.
    pub side: IntelSide,
    /// The frames' other address: for a listed source, the host it sent to.
    pub peer: IpAddr,
    /// The listed address of the window's first frame.
    pub example: IpAddr,
    /// The frames.
    pub traffic: Traffic,
}

/// The indicator check's reading: the matches of the window just closed, and the counters
/// since the program was loaded, all CPUs together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntelReading {
    /// The matches, most packets first.
    pub hits: Vec<IntelHit>,
    /// Frames a listed network held (once for each side).
    pub listed: Traffic,
    /// Of them, those whose window had no room (in `listed`, in no hit).
    pub unrecorded: Traffic,
}

/// What [`IntelTries::set`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntelSync {
    /// Networks written.
    pub added: usize,
    /// Networks deleted.
    pub removed: usize,
    /// Networks the tries had no room for: the kernel does not match them (the decoders
    /// still match a listed server).
    pub refused: usize,
    /// Networks in the tries now.
    pub held: usize,
    /// Time it took.
    pub took: Duration,
}

/// The indicator tries of one loaded program, taken out of its [`Datapath`].
pub struct IntelTries {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    globals: Array<MapData, IntelGlobals>,
    /// Copies of the tries' descriptors, for their fdinfo.
    fds: [std::os::fd::OwnedFd; 2],
    /// The networks written, sorted.
    written: Vec<(IpAddr, u8)>,
}

impl std::fmt::Debug for IntelTries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntelTries")
            .field("networks", &self.written.len())
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Takes the indicator tries out, for whoever loads the feeds; `None` if taken already.
    pub fn take_intel(&mut self) -> Option<IntelTries> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(DatapathError::Missing(name));
        let tries = (|| -> Result<IntelTries, DatapathError> {
            let (v4, v6) = (take(INTEL_V4_MAP)?, take(INTEL_V6_MAP)?);
            let fds = [fd_of(&v4)?, fd_of(&v6)?];
            Ok(IntelTries {
                v4: LpmTrie::try_from(v4)?,
                v6: LpmTrie::try_from(v6)?,
                globals: Array::try_from(take(INTEL_GLOBALS_MAP)?)?,
                fds,
                written: Vec::new(),
            })
        })();
        tries
            .inspect_err(|err| log::debug!("the indicator tries are not there: {err}"))
            .ok()
    }

    /// Reads and empties the matches of window `closed & 1`, which the kernel left (the
    /// caller moved it to the other one), and reads the counters. A map the kernel refuses
    /// to read is said, and what was read of it kept: each match leaves the map only once it
    /// is in the reading.
    pub(super) fn read_intel(&mut self, closed: u32) -> IntelReading {
        let mut reading = IntelReading::default();
        if let Err(err) = self.read_intel_into(closed, &mut reading) {
            log::warn!(
                "intel: reading the kernel's matches failed ({err}); {} read, the rest is read \
                 at the window's next turn",
                reading.hits.len()
            );
        }
        reading.hits.sort_by(|a, b| {
            b.traffic
                .packets
                .cmp(&a.traffic.packets)
                .then_with(|| a.network.cmp(&b.network))
                .then_with(|| a.side.cmp(&b.side))
                .then_with(|| a.peer.cmp(&b.peer))
        });
        reading
    }

    fn read_intel_into(
        &mut self,
        closed: u32,
        reading: &mut IntelReading,
    ) -> Result<(), DatapathError> {
        let counts = self
            .ebpf
            .map(INTEL_COUNTS_MAP)
            .ok_or(DatapathError::Missing(INTEL_COUNTS_MAP))?;
        let counts: PerCpuArray<&MapData, IntelCounts> = PerCpuArray::try_from(counts)?;
        for cpu in counts.get(&0, 0)?.iter() {
            add_traffic(&mut reading.listed, cpu.listed);
            add_traffic(&mut reading.unrecorded, cpu.unrecorded);
        }
        let name = INTEL_HITS_MAPS[(closed & 1) as usize];
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing(name))?;
        let mut hits: AyaHashMap<&mut MapData, IntelHitKey, IntelHitCount> =
            AyaHashMap::try_from(map)?;
        let Some(first) = hits.keys().next() else {
            // Empty: a frame still writing it now is read two readings on.
            return Ok(());
        };
        first?;
        wait_for_writers();
        let keys: Vec<IntelHitKey> = hits.keys().collect::<Result<_, _>>()?;
        for key in keys {
            let count = match hits.get(&key, 0) {
                Ok(count) => count,
                Err(err) if not_found(&err) => continue,
                Err(err) => return Err(err.into()),
            };
            reading.hits.push(hit_of(&key, &count));
            match hits.remove(&key) {
                Ok(()) => {}
                Err(err) if not_found(&err) => {}
                Err(err) => {
                    // Read, and still in the map: read again at the window's next turn.
                    reading.hits.pop();
                    return Err(err.into());
                }
            }
        }
        Ok(())
    }
}

/// A copy of a trie's descriptor.
fn fd_of(map: &aya::maps::Map) -> Result<std::os::fd::OwnedFd, DatapathError> {
    use std::os::fd::AsFd as _;
    let aya::maps::Map::LpmTrie(data) = map else {
        return Err(DatapathError::Missing("an LPM trie of listed networks"));
    };
    data.fd().as_fd().try_clone_to_owned().map_err(|err| {
        DatapathError::Map(MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: err,
        }))
    })
}

/// Waits until every program run that began before the call has ended: an RCU grace period
/// (`membarrier(MEMBARRIER_CMD_GLOBAL)`). Where the kernel refuses it (nohz_full), a
/// millisecond, far longer than a program run.
fn wait_for_writers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let done = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if done != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn hit_of(key: &IntelHitKey, count: &IntelHitCount) -> IntelHit {
    let address = |bytes: [u8; 16]| -> IpAddr {
        if key.family == FAMILY_IPV4 {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
    };
    IntelHit {
        network: (address(key.network), key.prefix_len),
        side: if key.side == INTEL_SIDE_SOURCE {
            IntelSide::Source
        } else {
            IntelSide::Destination
        },
        peer: address(key.peer),
        example: address(count.example),
        traffic: Traffic {
            packets: count.packets,
            bytes: count.bytes,
        },
    }
}

impl IntelTries {
    /// Makes the tries hold `networks` (sorted, each a network address and its prefix
    /// length): the new ones written, then the gone ones deleted, then the families in use
    /// set (none: the check is skipped, one comparison per frame). A network the tries have
    /// no room for is counted in [`IntelSync::refused`] and left out.
    pub fn set(&mut self, networks: &[(IpAddr, u8)]) -> Result<IntelSync, DatapathError> {
        let started = Instant::now();
        let mut sync = IntelSync::default();
        let mut kept = Vec::with_capacity(networks.len());
        let written = std::mem::take(&mut self.written);
        let (mut old, mut new) = (written.iter().peekable(), networks.iter().peekable());
        let mut gone = Vec::new();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            };
            match order {
                Ordering::Equal => {
                    kept.extend(new.next().copied());
                    old.next();
                }
                Ordering::Less => gone.extend(old.next().copied()),
                Ordering::Greater => {
                    let Some(&(addr, len)) = new.next() else {
                        break;
                    };
                    match self.insert(addr, len) {
                        Ok(()) => {
                            sync.added += 1;
                            kept.push((addr, len));
                        }
                        Err(MapError::SyscallError(err))
                            if matches!(
                                err.io_error.raw_os_error(),
                                Some(libc::ENOSPC | libc::E2BIG | libc::ENOMEM)
                            ) =>
                        {
                            sync.refused += 1;
                        }
                        Err(err) => {
                            // What was written stays known, so that the next call mends it,
                            // and is matched meanwhile.
                            kept.extend(old.copied());
                            kept.extend(gone);
                            kept.sort_unstable();
                            self.written = kept;
                            let _ = self.write_globals(true);
                            return Err(err.into());
                        }
                    }
                }
            }
        }
        for &(addr, len) in &gone {
            let removed = match addr {
                IpAddr::V4(v4) => self.v4.remove(&Key::new(u32::from(len), v4.octets())),
                IpAddr::V6(v6) => self.v6.remove(&Key::new(u32::from(len), v6.octets())),
            };
            match removed {
                Ok(()) => sync.removed += 1,
                Err(err) if not_found(&err) => sync.removed += 1,
                Err(err) => {
                    kept.extend(gone.iter().skip(sync.removed).copied());
                    kept.sort_unstable();
                    self.written = kept;
                    // What is in the tries is matched meanwhile.
                    let _ = self.write_globals(true);
                    return Err(err.into());
                }
            }
        }
        kept.sort_unstable();
        self.written = kept;
        sync.held = self.written.len();
        self.write_globals(true)?;
        sync.took = started.elapsed();
        Ok(sync)
    }

    /// Which families the program looks up: those the tries hold a network of (`on`), or
    /// none.
    fn write_globals(&mut self, on: bool) -> Result<(), DatapathError> {
        let mut active = 0;
        if on && self.written.iter().any(|(addr, _)| addr.is_ipv4()) {
            active |= INTEL_V4;
        }
        if on && self.written.iter().any(|(addr, _)| addr.is_ipv6()) {
            active |= INTEL_V6;
        }
        self.globals.set(0, IntelGlobals { active }, 0)?;
        Ok(())
    }

    /// For the benchmarks: the program looks at the tries (`on`) or skips them, as when they
    /// are empty, while they keep what they hold (writing a million networks again for each
    /// trial would take most of the benchmark's time).
    #[cfg(feature = "bench")]
    pub fn set_matching(&mut self, on: bool) -> Result<(), DatapathError> {
        self.write_globals(on)
    }

    /// The kernel memory the two tries take, as the kernel accounts it (`memlock` in their
    /// fdinfo); `None` where it does not say.
    pub fn kernel_memory(&self) -> Option<u64> {
        let of = |fd: std::os::fd::RawFd| -> Option<u64> {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix("memlock:"))?
                .trim()
                .parse()
                .ok()
        };
        use std::os::fd::AsRawFd as _;
        let v4 = of(self.fds[0].as_raw_fd())?;
        let v6 = of(self.fds[1].as_raw_fd())?;
        Some(v4 + v6)
    }

    fn insert(&mut self, addr: IpAddr, len: u8) -> Result<(), MapError> {
        match addr {
            IpAddr::V4(v4) => {
                self.v4
                    .insert(&Key::new(u32::from(len), v4.octets()), u32::from(len), 0)
            }
            IpAddr::V6(v6) => {
                self.v6
                    .insert(&Key::new(u32::from(len), v6.octets()), u32::from(len), 0)
            }
        }
    }
}
