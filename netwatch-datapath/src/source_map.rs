//! [`SourceMap`]: how the sources' values are laid out, a region per CPU or one shared, and
//! which of the program's entry points counts in each.

use std::fmt;

use netwatch_common::{PROGRAM_NAME, SHARED_PROGRAM_NAME, SourceValue};

/// How the sources' values are laid out in their slots (see [`slots`](super::slots)).
///
/// Per-CPU, each CPU adds to its own copy of a source's value (its region of the array) with
/// plain instructions: the fastest, and no cache line moves between CPUs when one source
/// floods every queue; but the array holds a value per possible CPU for every slot. Shared,
/// one value per source takes atomic adds: a few nanoseconds more per packet, and contention
/// when many CPUs count the same source at once, for an array a CPU count times smaller
/// (BENCHMARKS.md measures both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceMap {
    /// Per-CPU while its values fit in [`SourceMap::PER_CPU_BUDGET`], shared beyond (on
    /// Linux [`MIN_KERNEL_SHARED`](super::MIN_KERNEL_SHARED) and newer; per-CPU always on older kernels).
    Auto,
    /// A region of the values array per possible CPU.
    PerCpu,
    /// One region, updated with atomic adds.
    Shared,
}

impl SourceMap {
    /// The most memory [`SourceMap::Auto`] lets per-CPU values take: with 2 CPUs that is
    /// over a million sources, with 64 about 43,700.
    pub const PER_CPU_BUDGET: u64 = 512 << 20;

    /// `Auto` decided for a map of `max_sources` on `cpus` possible CPUs, on a kernel that
    /// can run the shared map or not; the others as they are.
    pub fn resolve(self, max_sources: u32, cpus: usize, shared_runs: bool) -> Self {
        match self {
            Self::Auto => {
                let per_cpu_values =
                    u64::from(max_sources) * cpus as u64 * size_of::<SourceValue>() as u64;
                if per_cpu_values <= Self::PER_CPU_BUDGET || !shared_runs {
                    Self::PerCpu
                } else {
                    Self::Shared
                }
            }
            other => other,
        }
    }

    pub(super) fn program(self) -> &'static str {
        match self {
            Self::Shared => SHARED_PROGRAM_NAME,
            Self::Auto | Self::PerCpu => PROGRAM_NAME,
        }
    }
}

impl fmt::Display for SourceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::PerCpu => "per-cpu",
            Self::Shared => "shared",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_source_map_is_per_cpu_while_its_values_fit_the_budget() {
        // 192-byte values: 65,536 sources take 12 MiB per CPU, so 42 CPUs fit in 512 MiB.
        assert_eq!(size_of::<SourceValue>(), 192);
        let auto = |sources, cpus| SourceMap::Auto.resolve(sources, cpus, true);
        assert_eq!(auto(65_536, 2), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 42), SourceMap::PerCpu);
        assert_eq!(auto(65_536, 43), SourceMap::Shared);
        assert_eq!(auto(1 << 20, 2), SourceMap::PerCpu);
        assert_eq!(auto(1 << 20, 4), SourceMap::Shared);
        assert_eq!(auto(1_000_000, 64), SourceMap::Shared);
        // A kernel without the shared map's atomics keeps per-CPU.
        assert_eq!(
            SourceMap::Auto.resolve(1_000_000, 64, false),
            SourceMap::PerCpu
        );
        // An explicit choice stands.
        assert_eq!(
            SourceMap::PerCpu.resolve(1 << 24, 64, true),
            SourceMap::PerCpu
        );
        assert_eq!(SourceMap::Shared.resolve(1, 1, true), SourceMap::Shared);
    }
}
