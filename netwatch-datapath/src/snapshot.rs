//! Readings: [`Datapath::snapshot`] advances the sketch and overflow windows, reads the
//! slots, the per-CPU globals and the closed overflow and destination windows into a
//! [`Snapshot`], then reclaims slots ([`Reclaim`]): the addresses of the idlest sources
//! forgotten, the slots whose grace is over cleared and queued again by the kernel.

use std::{collections::HashMap, io, os::fd::AsFd as _};

use aya::{
    Ebpf,
    maps::{HashMap as AyaHashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use netwatch_common::{
    CPU_STATE_MAP, CpuState, GlobalStats, QUEUE_PROGRAM_NAME, QueueJob, SOURCE_SLOTS_MAP,
    SourceKey, SourceStats,
};

use super::{
    batch,
    destinations::{DestinationCount, DestinationReading},
    error::{DatapathError, not_found},
    handle::Datapath,
    handle::{QueueJobs, Reclaim},
    intel::IntelReading,
    overflow::{OverflowBreakdown, Traffic},
    slots::{SourceReading, Spread},
    sums::add_globals,
    test_run::run_frame,
};

/// Counters read from the maps at one moment, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Global counters.
    pub globals: GlobalStats,
    /// Every source with a slot, in slot order, each slot once. A list rather than a map: at
    /// a million sources, building a hash map here would cost more than reading the slots.
    pub sources: Vec<SourceReading>,
    /// Slots cleared and freed after this reading (their sources were reclaimed a reading
    /// earlier): whoever takes one next starts from zero, whatever its address.
    pub released: Vec<u32>,
    /// The amplification port of the last overflow frame from one (of some CPU); 0 for none.
    pub overflow_reflected_port: u16,
    /// The overflow since the previous snapshot, broken down by source prefix and
    /// destination. Its window changes just before the globals are read: a frame without a
    /// slot counted in between is in these globals and in the next snapshot's breakdown.
    pub overflow: OverflowBreakdown,
    /// How [`Snapshot::destinations`] were counted: the local networks' hosts exactly, a
    /// sample of every destination, or not at all.
    pub destination_count: DestinationCount,
    /// The hosts of the local networks (or, sampled, any hosts) that received something
    /// since the previous snapshot, most packets first (in windows as
    /// [`Snapshot::overflow`]); none when destinations are not counted.
    pub destinations: Vec<DestinationReading>,
    /// Frames to a local host that found no bucket of their CPU's window.
    pub destination_other: Traffic,
    /// The frames of listed networks since the previous snapshot (in windows as
    /// [`Snapshot::overflow`], emptied exactly), and the indicator check's counters.
    pub intel: IntelReading,
}

impl Snapshot {
    /// The counters of every source by address (for one address in two slots, the first).
    pub fn stats_by_source(&self) -> HashMap<SourceKey, SourceStats> {
        let mut map = HashMap::with_capacity(self.sources.len());
        for reading in &self.sources {
            map.entry(reading.key).or_insert(reading.stats);
        }
        map
    }

    /// The spread of every source that has one, by address.
    pub fn spread_by_source(&self) -> HashMap<SourceKey, Spread> {
        self.sources
            .iter()
            .filter_map(|reading| Some((reading.key, reading.spread?)))
            .collect()
    }
}

impl Datapath {
    /// Reads the maps, summing the per-CPU regions, and closes the current sketch window:
    /// [`SourceReading::spread`] covers the traffic since the previous snapshot.
    ///
    /// Then, if free slots run low, reclaims the slots of the sources idle longest (see
    /// [`slots`](super::slots)): such a source leaves the snapshots after one more reading, and
    /// its next frame makes it a new source in a new slot.
    pub fn snapshot(&mut self) -> Result<Snapshot, DatapathError> {
        // Sized like the last reading: a million pushes onto a growing list copy it twenty
        // times over.
        let mut snapshot = Snapshot {
            globals: GlobalStats::default(),
            sources: Vec::with_capacity(self.slots.in_use()),
            released: Vec::new(),
            overflow_reflected_port: 0,
            overflow: OverflowBreakdown::default(),
            destination_count: DestinationCount::Off,
            destinations: Vec::new(),
            destination_other: Traffic::default(),
            intel: IntelReading::default(),
        };
        self.snapshot_into(&mut snapshot)?;
        Ok(snapshot)
    }

    /// [`Datapath::snapshot`] into the lists of a past snapshot: a reader that keeps one
    /// snapshot from interval to interval writes a million readings into memory it touched
    /// already, instead of into fresh pages (at a million sources, page faults were half the
    /// time of a reading).
    pub fn snapshot_into(&mut self, snapshot: &mut Snapshot) -> Result<(), DatapathError> {
        let closing = self.epoch;
        let closing_overflow = self.settings.overflow_window;
        self.settings.overflow_window = closing_overflow.wrapping_add(1);
        let counting = self.destination_count();
        if let Some(windows) = &mut self.destinations {
            windows.open(self.settings.overflow_window, counting);
        }
        if closing != 0 {
            // Epoch 0 marks windows never written (and sketches off); skip it on wrapping.
            self.set_epoch(closing.wrapping_add(1).max(1))?;
        } else {
            self.write_settings()?;
        }
        snapshot.globals = GlobalStats::default();
        snapshot.sources.clear();
        snapshot.released.clear();
        self.slots
            .read(closing, |reading| snapshot.sources.push(reading));
        // Globals after sources: a packet counted in a source read above is in the globals too.
        let state_map = self
            .ebpf
            .map(CPU_STATE_MAP)
            .ok_or(DatapathError::Missing("per-CPU state map"))?;
        let states: PerCpuArray<&MapData, CpuState> = PerCpuArray::try_from(state_map)?;
        snapshot.overflow_reflected_port = 0;
        for state in states.get(&0, 0)?.iter() {
            add_globals(&mut snapshot.globals, &state.globals);
            if state.overflow_reflected_port != 0 {
                snapshot.overflow_reflected_port = state.overflow_reflected_port as u16;
            }
        }
        snapshot.overflow = self.windows.take(closing_overflow);
        (
            snapshot.destination_count,
            snapshot.destinations,
            snapshot.destination_other,
        ) = match &mut self.destinations {
            Some(windows) => windows.take(closing_overflow),
            None => (DestinationCount::Off, Vec::new(), Traffic::default()),
        };
        snapshot.intel = self.read_intel(closing_overflow);
        snapshot.released = self.reclaim()?;
        Ok(())
    }

    /// Empties the breakdowns of traffic without a slot and of local hosts and the indicator
    /// matches, both windows, as
    /// readings do, without a reading's reclaim: for benchmarks whose trials should each start
    /// from empty tables. The global counters go on: the next snapshot's breakdown then holds
    /// less than its overflow count.
    pub fn clear_overflow(&mut self) -> Result<(), DatapathError> {
        for _ in 0..2 {
            let closing = self.settings.overflow_window;
            self.settings.overflow_window = closing.wrapping_add(1);
            self.write_settings()?;
            self.windows.take(closing);
            if let Some(windows) = &mut self.destinations {
                windows.take(closing);
            }
            self.read_intel(closing);
        }
        Ok(())
    }

    /// What the last snapshot's reclaim did.
    pub fn last_reclaim(&self) -> Reclaim {
        self.last_reclaim
    }

    /// Frees the slots whose grace is over and takes back idle ones (see [`slots`](super::slots));
    /// returns the slots freed.
    fn reclaim(&mut self) -> Result<Vec<u32>, DatapathError> {
        let started = std::time::Instant::now();
        // Slots the kernel could not queue stay in quarantine and are staged again next time.
        let staged = self.slots.stage_release();
        let freed = if staged > 0 {
            let queued = queue_slots(
                &self.ebpf,
                &mut self.jobs,
                QueueJob {
                    next: 0,
                    end: staged as u32,
                    staged: 1,
                    warned: 0,
                },
            )?;
            if let Some(diagnostics) = &mut self.diagnostics {
                diagnostics.flush();
            }
            if queued > 0 {
                // CPUs that found the queue empty try it again.
                self.settings.free_generation = self.settings.free_generation.wrapping_add(1);
                self.write_settings()?;
            }
            self.slots.released(queued as usize)
        } else {
            Vec::new()
        };
        let keys = self.slots.retire_idlest();
        if !keys.is_empty() {
            let addresses = self
                .ebpf
                .map_mut(SOURCE_SLOTS_MAP)
                .ok_or(DatapathError::Missing("address map"))?;
            if let Err(err) = forget(addresses, &keys) {
                self.slots.unretire();
                return Err(DatapathError::Reclaim(err));
            }
            self.slots.quarantine_retired();
            // Their bits go from the filter: lookups move to the half rebuilt without them.
            self.settings.filter_half = self.slots.rebuild_filter();
            self.write_settings()?;
        }
        self.last_reclaim = Reclaim {
            forgotten: keys.len(),
            freed: freed.len(),
            took: started.elapsed(),
        };
        Ok(freed)
    }
}

/// Has the kernel do `job`: writes it, runs the queueing program once per slot, and returns
/// how many slots it queued.
pub(super) fn queue_slots(
    ebpf: &Ebpf,
    jobs: &mut QueueJobs,
    job: QueueJob,
) -> Result<u32, DatapathError> {
    jobs.set(0, job, 0)?;
    let program: &Xdp = ebpf
        .program(QUEUE_PROGRAM_NAME)
        .ok_or(DatapathError::Missing(QUEUE_PROGRAM_NAME))?
        .try_into()?;
    // The smallest frame the kernel takes; the program does not look at it.
    run_frame(program, &[0u8; 14], job.end - job.next)?;
    Ok(jobs.get(&0, 0)?.next - job.next)
}

/// Deletes `keys` from the address map: in batches, or one by one on kernels without batch
/// operations on hash maps.
fn forget(addresses: &mut aya::maps::Map, keys: &[SourceKey]) -> io::Result<()> {
    let aya::maps::Map::HashMap(data) = addresses else {
        return Err(io::Error::other("the address map is not a hash map"));
    };
    match batch::delete(data.fd().as_fd(), keys) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP | 524)) => {
            let mut addresses: AyaHashMap<&mut MapData, SourceKey, u32> =
                AyaHashMap::try_from(addresses).map_err(io::Error::other)?;
            for key in keys {
                match addresses.remove(key) {
                    Ok(()) => {}
                    Err(err) if not_found(&err) => {}
                    Err(err) => return Err(io::Error::other(err)),
                }
            }
            Ok(())
        }
        other => other,
    }
}
