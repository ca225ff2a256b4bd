//! Captures in the kernel: which frames of an event's subject the program copies to the
//! capture ring ([`CaptureSpec`]: a source or destination network, a filter, one in N after
//! the first few), what each capture saw, kept and lost ([`CaptureCounters`]), and the
//! frames themselves ([`CapturedFrame`]). [`CaptureMaps`] holds the maps, taken out of the
//! [`Datapath`] for whoever runs the captures: which event a capture is for, and where its
//! frames go, is decided elsewhere.

use std::{collections::BTreeMap, net::IpAddr, os::fd::AsRawFd};

use aya::maps::{
    Array, MapData, PerCpuArray, PerCpuValues, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use netwatch_common::{
    CAPTURE_BY_DESTINATION, CAPTURE_BY_SOURCE, CAPTURE_COUNTS_MAP, CAPTURE_DESTINATIONS_V4_MAP,
    CAPTURE_DESTINATIONS_V6_MAP, CAPTURE_GLOBALS_MAP, CAPTURE_MAX_SNAP_LEN, CAPTURE_RING_MAP,
    CAPTURE_SLOTS_MAP, CAPTURE_SOURCES_V4_MAP, CAPTURE_SOURCES_V6_MAP, CaptureCounts,
    CaptureGlobals, CaptureHeader, CaptureSet, CaptureSlot, MAX_CAPTURES,
};

use super::{
    error::{DatapathError, not_found},
    handle::Datapath,
    rules::{RuleAction, SignatureRule, is_network},
};

/// Which address of a frame a capture's network is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaptureSide {
    /// The source: a flooding source or prefix.
    Source,
    /// The destination: a victim.
    Destination,
}

/// What a capture keeps: the frames of its network (and filter), one in `every` on each CPU
/// after each CPU's `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Source or destination.
    pub side: CaptureSide,
    /// The network (address and prefix length).
    pub network: (IpAddr, u8),
    /// What else a frame must be: protocol, ports, SYN, fragment, length (its destination
    /// and action are not used); `None`: every frame of the network.
    pub filter: Option<SignatureRule>,
    /// One frame in this many is kept: a power of two, 1 or more.
    pub every: u32,
    /// Each CPU's first frames, all kept.
    pub first: u32,
}

/// What a capture saw, kept and lost, all CPUs together, since it was set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    /// Frames of its subject.
    pub seen: u64,
    /// Of them, those copied to the ring.
    pub taken: u64,
    /// Of them, those the ring had no room for.
    pub lost: u64,
}

/// A frame as the capture ring hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The captures that keep it: bit `i` for capture `i`.
    pub captures: u32,
    /// `bpf_ktime_get_ns` when the kernel saw it (monotonic, since boot).
    pub time_ns: u64,
    /// The interface it came in on (0 in BPF_PROG_TEST_RUN).
    pub ifindex: u32,
    /// Its length on the wire.
    pub original_len: u32,
    /// Its first bytes, from the Ethernet header on.
    pub data: Vec<u8>,
}

impl CapturedFrame {
    /// Parses one ring record: a [`CaptureHeader`] and the captured bytes; `None` if it is
    /// shorter than its header says.
    fn parse(record: &[u8]) -> Option<Self> {
        let header_len = size_of::<CaptureHeader>();
        if record.len() < header_len {
            return None;
        }
        // SAFETY: the record starts with a CaptureHeader written by the kernel;
        // read_unaligned copes with any alignment and every bit pattern is valid.
        let header = unsafe { record.as_ptr().cast::<CaptureHeader>().read_unaligned() };
        let captured = (header.captured_len as usize).min(CAPTURE_MAX_SNAP_LEN);
        let data = record.get(header_len..header_len + captured)?;
        Some(Self {
            captures: header.captures,
            time_ns: header.time_ns,
            ifindex: header.ifindex,
            original_len: header.original_len,
            data: data.to_vec(),
        })
    }
}

/// An LPM trie of one side and family.
type Trie<const N: usize> = LpmTrie<MapData, [u8; N], CaptureSet>;

/// The capture maps of one loaded program, taken out of its [`Datapath`].
pub struct CaptureMaps {
    sources_v4: Trie<4>,
    sources_v6: Trie<16>,
    destinations_v4: Trie<4>,
    destinations_v6: Trie<16>,
    slots: Array<MapData, CaptureSlot>,
    counts: PerCpuArray<MapData, CaptureCounts>,
    globals: Array<MapData, CaptureGlobals>,
    ring: RingBuf<MapData>,
    specs: BTreeMap<u32, CaptureSpec>,
    /// The networks of the tries as written, each with its captures' bits.
    written: BTreeMap<(CaptureSide, IpAddr, u8), u32>,
    snap_len: u32,
    cpus: usize,
}

impl std::fmt::Debug for CaptureMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureMaps")
            .field("specs", &self.specs)
            .finish_non_exhaustive()
    }
}

impl Datapath {
    /// Takes the capture maps out, for whoever runs the captures; `None` if taken already.
    pub fn take_captures(&mut self) -> Option<CaptureMaps> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(DatapathError::Missing(name));
        let maps = (|| -> Result<CaptureMaps, DatapathError> {
            Ok(CaptureMaps {
                sources_v4: LpmTrie::try_from(take(CAPTURE_SOURCES_V4_MAP)?)?,
                sources_v6: LpmTrie::try_from(take(CAPTURE_SOURCES_V6_MAP)?)?,
                destinations_v4: LpmTrie::try_from(take(CAPTURE_DESTINATIONS_V4_MAP)?)?,
                destinations_v6: LpmTrie::try_from(take(CAPTURE_DESTINATIONS_V6_MAP)?)?,
                slots: Array::try_from(take(CAPTURE_SLOTS_MAP)?)?,
                counts: PerCpuArray::try_from(take(CAPTURE_COUNTS_MAP)?)?,
                globals: Array::try_from(take(CAPTURE_GLOBALS_MAP)?)?,
                ring: RingBuf::try_from(take(CAPTURE_RING_MAP)?)?,
                specs: BTreeMap::new(),
                written: BTreeMap::new(),
                snap_len: CAPTURE_MAX_SNAP_LEN as u32,
                cpus: self.cpus,
            })
        })();
        maps.inspect_err(|err| log::debug!("the capture maps are not there: {err}"))
            .ok()
    }
}

impl CaptureMaps {
    /// Sets capture `index` (below [`MAX_CAPTURES`]): its counters from zero, then the frames
    /// of its subject are kept as it says. Replaces a capture of the same index.
    pub fn set(&mut self, index: u32, spec: CaptureSpec) -> Result<(), DatapathError> {
        if index as usize >= MAX_CAPTURES {
            return Err(DatapathError::CaptureIndex {
                index,
                most: MAX_CAPTURES,
            });
        }
        let (addr, len) = spec.network;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if len > width || !is_network(addr, len) {
            return Err(DatapathError::RuleDestination { addr, len });
        }
        self.clear(index)?;
        let zero = PerCpuValues::try_from(vec![CaptureCounts::default(); self.cpus])
            .map_err(DatapathError::Cpus)?;
        self.counts.set(index, zero, 0)?;
        self.slots.set(index, slot(&spec), 0)?;
        self.specs.insert(index, spec);
        self.write_tries()
    }

    /// Keeps one frame in `every` (a power of two) of capture `index` from now on.
    pub fn set_every(&mut self, index: u32, every: u32) -> Result<(), DatapathError> {
        let Some(spec) = self.specs.get_mut(&index) else {
            return Ok(());
        };
        spec.every = every;
        let kernel = slot(spec);
        self.slots.set(index, kernel, 0)?;
        Ok(())
    }

    /// Removes capture `index`; nothing if there is none.
    pub fn clear(&mut self, index: u32) -> Result<(), DatapathError> {
        if self.specs.remove(&index).is_none() {
            return Ok(());
        }
        // Out of the tries first, then the slot: a frame that still found it in a set finds
        // a slot that matches nothing.
        self.write_tries()?;
        self.slots.set(index, CaptureSlot::default(), 0)?;
        Ok(())
    }

    /// The captures set, by index.
    pub fn specs(&self) -> impl Iterator<Item = (u32, &CaptureSpec)> {
        self.specs.iter().map(|(index, spec)| (*index, spec))
    }

    /// What capture `index` saw, kept and lost since it was set, all CPUs together.
    pub fn counts(&self, index: u32) -> Result<CaptureCounters, DatapathError> {
        let values = self.counts.get(&index, 0)?;
        let mut sum = CaptureCounters::default();
        for cpu in values.iter() {
            sum.seen += cpu.seen;
            sum.taken += cpu.taken;
            sum.lost += cpu.lost;
        }
        Ok(sum)
    }

    /// Copies at most `snap_len` bytes of each captured frame (1 to the kernel's most).
    pub fn set_snap_len(&mut self, snap_len: u32) -> Result<(), DatapathError> {
        self.snap_len = snap_len.clamp(1, CAPTURE_MAX_SNAP_LEN as u32);
        self.write_globals()
    }

    /// Hands every frame waiting in the ring to `f`; returns how many records there were.
    pub fn drain(&mut self, mut f: impl FnMut(CapturedFrame)) -> usize {
        let mut records = 0;
        while let Some(record) = self.ring.next() {
            records += 1;
            if let Some(frame) = CapturedFrame::parse(&record) {
                f(frame);
            }
        }
        records
    }

    /// Writes the tries for the captures set (new and changed networks, then the gone ones),
    /// then which sides are in use: none skips the check (one comparison per frame).
    fn write_tries(&mut self) -> Result<(), DatapathError> {
        let wanted = networks(&self.specs);
        for (&(side, addr, len), &bits) in &wanted {
            if self.written.get(&(side, addr, len)) == Some(&bits) {
                continue;
            }
            let set = CaptureSet { captures: bits };
            match (side, addr) {
                (CaptureSide::Source, IpAddr::V4(v4)) => {
                    self.sources_v4
                        .insert(&Key::new(u32::from(len), v4.octets()), set, 0)?;
                }
                (CaptureSide::Source, IpAddr::V6(v6)) => {
                    self.sources_v6
                        .insert(&Key::new(u32::from(len), v6.octets()), set, 0)?;
                }
                (CaptureSide::Destination, IpAddr::V4(v4)) => {
                    self.destinations_v4
                        .insert(&Key::new(u32::from(len), v4.octets()), set, 0)?;
                }
                (CaptureSide::Destination, IpAddr::V6(v6)) => {
                    self.destinations_v6
                        .insert(&Key::new(u32::from(len), v6.octets()), set, 0)?;
                }
            }
        }
        let gone: Vec<(CaptureSide, IpAddr, u8)> = self
            .written
            .keys()
            .filter(|network| !wanted.contains_key(network))
            .copied()
            .collect();
        for (side, addr, len) in gone {
            let removed = match (side, addr) {
                (CaptureSide::Source, IpAddr::V4(v4)) => self
                    .sources_v4
                    .remove(&Key::new(u32::from(len), v4.octets())),
                (CaptureSide::Source, IpAddr::V6(v6)) => self
                    .sources_v6
                    .remove(&Key::new(u32::from(len), v6.octets())),
                (CaptureSide::Destination, IpAddr::V4(v4)) => self
                    .destinations_v4
                    .remove(&Key::new(u32::from(len), v4.octets())),
                (CaptureSide::Destination, IpAddr::V6(v6)) => self
                    .destinations_v6
                    .remove(&Key::new(u32::from(len), v6.octets())),
            };
            match removed {
                Ok(()) => {}
                Err(err) if not_found(&err) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.written = wanted;
        self.write_globals()
    }

    fn write_globals(&mut self) -> Result<(), DatapathError> {
        let mut active = 0;
        for spec in self.specs.values() {
            active |= match spec.side {
                CaptureSide::Source => CAPTURE_BY_SOURCE,
                CaptureSide::Destination => CAPTURE_BY_DESTINATION,
            };
        }
        let globals = CaptureGlobals {
            active,
            snap_len: self.snap_len,
        };
        self.globals.set(0, globals, 0)?;
        Ok(())
    }
}

impl AsRawFd for CaptureMaps {
    /// The ring's descriptor: readable when frames wait.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// The kernel's form of a capture.
fn slot(spec: &CaptureSpec) -> CaptureSlot {
    let filter = spec.filter.unwrap_or(SignatureRule {
        destination: None,
        protocol: None,
        src_port: None,
        dst_port: None,
        syn: false,
        fragment: false,
        length: None,
        action: RuleAction::Count,
    });
    CaptureSlot {
        filter: SignatureRule {
            action: RuleAction::Count,
            ..filter
        }
        .kernel(),
        every_mask: spec.every.max(1).next_power_of_two() - 1,
        first: spec.first,
    }
}

/// The networks the captures need in the tries, each with the bits of every capture of its
/// side whose network holds it.
fn networks(specs: &BTreeMap<u32, CaptureSpec>) -> BTreeMap<(CaptureSide, IpAddr, u8), u32> {
    let mut networks = BTreeMap::new();
    for spec in specs.values() {
        let (addr, len) = spec.network;
        let bits = specs
            .iter()
            .filter(|(_, other)| {
                other.side == spec.side && {
                    let (network, bits) = other.network;
                    bits <= len && super::rules::same_prefix(network, addr, bits)
                }
            })
            .fold(0u32, |set, (index, _)| set | (1 << index));
        networks.insert((spec.side, addr, len), bits);
    }
    networks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(side: CaptureSide, addr: &str, len: u8) -> CaptureSpec {
        CaptureSpec {
            side,
            network: (addr.parse().unwrap(), len),
            filter: None,
            every: 1,
            first: 0,
        }
    }

    /// Each network carries the captures of its side whose network holds it, so that the
    /// longest match gives them all; the other side's never.
    #[test]
    fn a_network_carries_the_captures_that_hold_it() {
        let specs = BTreeMap::from([
            (0, spec(CaptureSide::Source, "198.51.100.7", 32)),
            (1, spec(CaptureSide::Source, "198.51.100.0", 24)),
            (2, spec(CaptureSide::Destination, "198.51.100.7", 32)),
            (4, spec(CaptureSide::Source, "2001:db8::", 32)),
        ]);
        let written: Vec<String> = networks(&specs)
            .into_iter()
            .map(|((side, addr, len), bits)| format!("{side:?} {addr}/{len}={bits:#b}"))
            .collect();
        assert_eq!(
            written,
            [
                "Source 198.51.100.0/24=0b10",
                "Source 198.51.100.7/32=0b11",
                "Source 2001:db8::/32=0b10000",
                "Destination 198.51.100.7/32=0b100",
            ]
        );
        // One in 1000 is one in 1024: a power of two.
        let mut every = spec(CaptureSide::Source, "198.51.100.7", 32);
        every.every = 1000;
        assert_eq!(slot(&every).every_mask, 1023);
    }
}
