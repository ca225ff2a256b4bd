//! Tells, before anything is loaded, whether this process may load and attach XDP programs.

use std::fs;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities netwatch needs that this process lacks, by name; empty when it has them.
///
/// CAP_SYS_ADMIN alone is enough; otherwise CAP_BPF (load programs, create maps),
/// CAP_PERFMON (packet pointer arithmetic in the verifier) and CAP_NET_ADMIN (attach XDP) are
/// needed together (see `capabilities(7)` and the kernel's `bpf_capable()`).
pub fn missing_capabilities() -> Vec<&'static str> {
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_caps(&status));
    let Some(effective) = effective else {
        // Without /proc nothing can be said; the kernel will answer at load time.
        return Vec::new();
    };
    missing_capabilities_of(effective)
}

fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The capabilities netwatch needs that an effective set `effective` lacks.
pub fn missing_capabilities_of(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ]
    .into_iter()
    .filter(|(cap, _)| !has(*cap))
    .map(|(_, name)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn sys_admin_is_enough() {
        assert!(missing_capabilities_of(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing_capabilities_of(1 << CAP_BPF),
            vec!["CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert_eq!(missing_capabilities_of(0).len(), 3);
    }
}
