//! `BPF_MAP_DELETE_BATCH` (Linux 5.6), which aya 0.14 lacks: the addresses of reclaimed
//! sources leave the hash map thousands per syscall instead of one each (BENCHMARKS.md,
//! "Scale", measures the reclaim).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_DELETE_BATCH` from `include/uapi/linux/bpf.h`.
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Deletes `keys` from the hash map `map`; keys that are not there are passed over. `K` must
/// be the map's key type.
pub fn delete<K>(map: BorrowedFd<'_>, mut keys: &[K]) -> io::Result<()> {
    while !keys.is_empty() {
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            count: u32::try_from(keys.len()).unwrap_or(u32::MAX),
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let asked = attr.count as usize;
        // SAFETY: `keys` holds `count` keys of the map's key size and outlives the call; the
        // kernel only reads them and writes `count` back.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_DELETE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        // On an error, `count` says how many keys were deleted before it.
        let done = (attr.count as usize).min(asked);
        if rc == 0 {
            keys = &keys[done..];
            continue;
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ENOENT) {
            return Err(error);
        }
        // Key `done` is not in the map: nothing to delete; go on after it.
        keys = &keys[(done + 1).min(keys.len())..];
    }
    Ok(())
}
