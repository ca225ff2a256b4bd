//! The run-time settings: what the program reads on every frame from the settings array
//! ([`Settings`]) and the tables beside it (sampled ports, reflection ports, local networks),
//! written while it keeps running and counting. [`Datapath::write_settings`] writes the whole
//! settings at once; [`Datapath::set_epoch`] turns the sketch windows (the readings advance
//! them, see [`snapshot`](super::snapshot)).

use std::{net::IpAddr, time::Duration};

use aya::maps::{Array, MapData};
use netwatch_common::{
    LOCAL_NETWORKS_MAP, LocalNetworks, MAX_DESTINATION_SAMPLE, MAX_LOCAL_NETWORKS,
    REFLECTION_PORTS_MAP, SAMPLE_MAX_SNAP_LEN, SAMPLE_PORT_WORDS, SAMPLE_PORTS_MAP, SETTINGS_MAP,
    Settings,
};

use super::{destinations::DestinationCount, error::DatapathError, handle::Datapath};

/// Which packets the program copies to the sample ring buffer, and how many per second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sampling {
    /// Samples per second per CPU; 0 turns sampling off.
    pub rate: u32,
    /// Samples that may be taken at once after a quiet spell.
    pub burst: u32,
    /// TCP ports: a packet from or to one of them is sampled.
    pub tcp_ports: Vec<u16>,
    /// UDP ports, likewise.
    pub udp_ports: Vec<u16>,
    /// Sample every TCP packet with a payload, whatever its ports.
    pub all_tcp: bool,
    /// Most bytes of a frame copied, 1 to [`SAMPLE_MAX_SNAP_LEN`].
    pub snap_len: u32,
}

impl Datapath {
    /// Sets which packets are sampled and how many per second, at run time: the program
    /// keeps running and counting throughout.
    pub fn set_sampling(&mut self, sampling: &Sampling) -> Result<(), DatapathError> {
        let Sampling {
            rate,
            burst,
            tcp_ports,
            udp_ports,
            all_tcp,
            snap_len,
        } = sampling;
        let mut words = [0u64; 2 * SAMPLE_PORT_WORDS as usize];
        for (base, ports) in [(0, tcp_ports), (SAMPLE_PORT_WORDS as usize, udp_ports)] {
            for port in ports {
                words[base + usize::from(port >> 6)] |= 1 << (port & 63);
            }
        }
        let map = self
            .ebpf
            .map_mut(SAMPLE_PORTS_MAP)
            .ok_or(DatapathError::Missing("sample ports map"))?;
        // The whole bitmap at once: the kernel copies it word by word, so a packet sees each
        // word old or new while it changes.
        let mut ports: Array<&mut MapData, [u64; 2 * SAMPLE_PORT_WORDS as usize]> =
            Array::try_from(map)?;
        ports.set(0, words, 0)?;
        self.settings.sample_rate = *rate;
        self.settings.sample_burst = (*burst).max(1);
        self.settings.sample_all_tcp = u32::from(*all_tcp);
        self.settings.sample_snap_len = (*snap_len).clamp(1, SAMPLE_MAX_SNAP_LEN as u32);
        self.write_settings()
    }

    /// Sets the UDP source ports whose datagrams count as reflected (amplification answers),
    /// at run time.
    pub fn set_reflection_ports(&mut self, ports: &[u16]) -> Result<(), DatapathError> {
        let mut words = [0u64; SAMPLE_PORT_WORDS as usize];
        for port in ports {
            words[usize::from(port >> 6)] |= 1 << (port & 63);
        }
        let map = self
            .ebpf
            .map_mut(REFLECTION_PORTS_MAP)
            .ok_or(DatapathError::Missing("reflection ports map"))?;
        // The whole bitmap at once, as the sampled ports.
        let mut bitmap: Array<&mut MapData, [u64; SAMPLE_PORT_WORDS as usize]> =
            Array::try_from(map)?;
        bitmap.set(0, words, 0)?;
        Ok(())
    }

    /// Turns the per-source counting of fragments and amplification answers on (as loaded)
    /// or off, at run time. Off, attacks are typed from the protocol counts alone (SYN, UDP,
    /// ICMP floods), never as reflection or fragments.
    pub fn set_attack_types(&mut self, enabled: bool) -> Result<(), DatapathError> {
        self.settings.attack_types = u32::from(enabled);
        self.write_settings()
    }

    /// Sets the early limit of the interface's packet rate, or turns it off (`None`, as
    /// loaded): the kernel posts an [`EarlyEvent`] in the sample ring when the frames of all
    /// CPUs together have kept the limit's rate for [`netwatch_common::EARLY_SLOTS`] slots'
    /// time, each slot of 20 ms or of the time `min_packets` take at that rate if longer (at
    /// most a second); at most once a second.
    ///
    /// [`EarlyEvent`]: netwatch_common::EarlyEvent
    pub fn set_early_limit(
        &mut self,
        pps: Option<f64>,
        min_packets: u64,
    ) -> Result<(), DatapathError> {
        let (packets, slot_ns, batch) = early_settings(pps, min_packets, self.cpus);
        if (packets, slot_ns, batch)
            == (
                self.settings.early_packets,
                self.settings.early_slot_ns,
                self.settings.early_batch,
            )
        {
            return Ok(());
        }
        self.settings.early_packets = packets;
        self.settings.early_slot_ns = slot_ns;
        self.settings.early_batch = batch;
        self.write_settings()
    }

    /// Sets the local networks whose hosts are counted per destination, at run time; an empty
    /// list turns the counting off (one comparison per frame). Networks need a datapath
    /// loaded with [`LoadOptions::destinations`].
    ///
    /// [`LoadOptions::destinations`]: super::LoadOptions::destinations
    pub fn set_local_networks(&mut self, networks: &[(IpAddr, u8)]) -> Result<(), DatapathError> {
        if networks.len() > MAX_LOCAL_NETWORKS {
            return Err(DatapathError::TooManyLocalNetworks {
                given: networks.len(),
                most: MAX_LOCAL_NETWORKS,
            });
        }
        if !networks.is_empty() && self.destinations.is_none() {
            return Err(DatapathError::Missing(
                "room for destinations (loaded without)",
            ));
        }
        let mut table = LocalNetworks::default();
        let mut v4 = 0;
        let mut v6 = 0;
        for &(addr, len) in networks {
            let (words, masks) = local_network(addr, len);
            if addr.is_ipv4() {
                table.v4[v4] = (masks[0] << 32) | (words[0] & 0xffff_ffff);
                v4 += 1;
            } else {
                table.v6[v6] = [words[0], words[1], masks[0], masks[1]];
                v6 += 1;
            }
        }
        let map = self
            .ebpf
            .map_mut(LOCAL_NETWORKS_MAP)
            .ok_or(DatapathError::Missing("local networks map"))?;
        // The whole table, then the counts: a frame never sees a network not written yet.
        let mut array: Array<&mut MapData, LocalNetworks> = Array::try_from(map)?;
        array.set(0, table, 0)?;
        self.settings.local_v4 = v4 as u32;
        self.settings.local_networks = networks.len() as u32;
        self.write_settings()?;
        self.note_destination_count();
        Ok(())
    }

    /// Notes the way destinations are counted now as that of the open window too: its frames
    /// before the change (none, at a start) are counted the old way, a few at most after a
    /// reload.
    fn note_destination_count(&mut self) {
        let counting = self.destination_count();
        let open = self.settings.overflow_window;
        if let Some(windows) = &mut self.destinations {
            windows.open(open, counting);
        }
    }

    /// Sets how sparsely every destination is counted while no local network is set: one
    /// frame in `one_in` (a power of two up to [`MAX_DESTINATION_SAMPLE`]), at random gaps;
    /// 0 turns it off (one more comparison per frame, after the local networks'). Needs a
    /// datapath loaded with [`LoadOptions::destinations`]. The snapshots scale the counts
    /// back up and say so ([`DestinationCount::Sampled`]).
    ///
    /// [`LoadOptions::destinations`]: super::LoadOptions::destinations
    pub fn set_destination_sample(&mut self, one_in: u32) -> Result<(), DatapathError> {
        if one_in != 0 && (!one_in.is_power_of_two() || one_in > MAX_DESTINATION_SAMPLE) {
            return Err(DatapathError::DestinationSample {
                given: one_in,
                most: MAX_DESTINATION_SAMPLE,
            });
        }
        if one_in != 0 && self.destinations.is_none() {
            return Err(DatapathError::Missing(
                "room for destinations (loaded without)",
            ));
        }
        self.settings.destination_sample = one_in;
        self.write_settings()?;
        self.note_destination_count();
        Ok(())
    }

    /// How the destination window open now is counted.
    pub fn destination_count(&self) -> DestinationCount {
        if self.destinations.is_none() {
            DestinationCount::Off
        } else if self.settings.local_networks != 0 {
            DestinationCount::Local
        } else if self.settings.destination_sample != 0 {
            DestinationCount::Sampled(self.settings.destination_sample)
        } else {
            DestinationCount::Off
        }
    }

    pub(super) fn write_settings(&mut self) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(SETTINGS_MAP)
            .ok_or(DatapathError::Missing("settings map"))?;
        let mut settings: Array<&mut MapData, Settings> = Array::try_from(map)?;
        settings.set(0, self.settings, 0)?;
        Ok(())
    }

    /// Turns the per-source distinct-destination sketches on or off at run time. Off, the
    /// program skips them (one comparison per packet instead of a window check and two bit
    /// sets), and snapshots carry no spread. Used when no scan rule needs them.
    pub fn set_sketches(&mut self, enabled: bool) -> Result<(), DatapathError> {
        match (enabled, self.epoch) {
            (false, 0) => Ok(()),
            (false, _) => self.set_epoch(0),
            (true, 0) => self.set_epoch(1),
            (true, _) => Ok(()),
        }
    }

    pub(super) fn set_epoch(&mut self, epoch: u32) -> Result<(), DatapathError> {
        self.settings.epoch = epoch;
        self.write_settings()?;
        self.epoch = epoch;
        Ok(())
    }
}

/// The shortest early slot: a flood is said within about two of them.
const EARLY_SLOT: Duration = Duration::from_millis(20);

/// [`Settings::early_packets`], [`Settings::early_slot_ns`] and [`Settings::early_batch`] for
/// a limit of `pps` (none: off) with at least `min_packets` in a slot, on `cpus` CPUs.
fn early_settings(pps: Option<f64>, min_packets: u64, cpus: usize) -> (u32, u32, u32) {
    let Some(pps) = pps.filter(|pps| pps.is_finite() && *pps > 0.0) else {
        return (0, 0, 0);
    };
    let slot = EARLY_SLOT
        .as_secs_f64()
        .max(min_packets as f64 / pps)
        .min(1.0);
    let packets = (pps * slot).ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    // A quarter of the limit pending on each CPU at most: the count lags by that much.
    let batch = (packets / (4 * cpus.max(1) as u32)).max(1);
    (packets, (slot * 1e9) as u32, batch)
}

/// A local network as the kernel matches it: the first two words of the address in memory
/// order, masked, and their masks (an IPv4 address in the low half of the first).
fn local_network(addr: IpAddr, len: u8) -> ([u64; 2], [u64; 2]) {
    let (bytes, len) = match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, u32::from(len.min(32)))
        }
        IpAddr::V6(v6) => (v6.octets(), u32::from(len.min(128))),
    };
    // The mask in network order, bit by bit from the first byte.
    let mut mask = [0u8; 16];
    for (index, byte) in mask.iter_mut().enumerate() {
        let bits = len.saturating_sub(index as u32 * 8).min(8);
        *byte = if bits == 0 { 0 } else { 0xff << (8 - bits) };
    }
    let word = |bytes: &[u8; 16], at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(word)
    };
    let mask = [word(&mask, 0), word(&mask, 8)];
    ([word(&bytes, 0) & mask[0], word(&bytes, 8) & mask[1]], mask)
}
