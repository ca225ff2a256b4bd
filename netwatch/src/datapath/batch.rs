//! `BPF_MAP_LOOKUP_BATCH` (Linux 5.6) for the sources map, per-CPU or shared: thousands of entries per
//! syscall instead of two syscalls per entry (`get_next_key` + lookup), which is what aya
//! 0.14 offers. At a million sources that is the difference between seconds and a fraction of
//! an interval; the scale benchmark measures both.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    time::{Duration, Instant},
};

/// `BPF_MAP_LOOKUP_BATCH` from `include/uapi/linux/bpf.h`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

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

/// Entries asked for per call; grown when a hash bucket holds more (`ENOSPC`).
const START_CHUNK: u32 = 4_096;

/// Reads every entry of a hash map whose keys are `K` and whose entries hold `per_entry` values
/// of type `V` (1 for a shared map, the possible CPUs for a per-CPU one; `V` must be a
/// multiple of 8 bytes, as the kernel lays per-CPU values out), calling `f(key, values)` for
/// each.
///
/// Returns the time spent in the kernel (the `BPF_MAP_LOOKUP_BATCH` calls), the rest of the
/// caller's wait being `f`.
///
/// The map may change while it is read: entries inserted or deleted meanwhile may be seen or
/// not, as with any walk of a live hash map; none is seen twice.
pub fn for_each<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    per_entry: usize,
    mut f: impl FnMut(K, &[V]),
) -> io::Result<Duration> {
    assert!(
        size_of::<V>().is_multiple_of(8),
        "per-CPU values are laid out in 8-byte steps"
    );
    let mut chunk = START_CHUNK;
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<V> = Vec::new();
    // The hash map's cursor is a bucket index (u32), opaque to us.
    let mut cursor: u32 = 0;
    let mut first = true;
    let mut in_kernel = Duration::ZERO;
    loop {
        keys.clear();
        values.clear();
        keys.reserve(chunk as usize);
        values.reserve(chunk as usize * per_entry);
        let mut next_cursor: u32 = 0;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const cursor) as u64 },
            out_batch: (&raw mut next_cursor) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold `chunk` keys and `chunk * per_entry` values of the map's sizes,
        // and outlive the call; the kernel writes at most `count` entries.
        let started = Instant::now();
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        in_kernel += started.elapsed();
        match error.as_ref().and_then(io::Error::raw_os_error) {
            Some(libc::ENOSPC) => {
                // A bucket holds more entries than we asked for: ask for more.
                chunk = chunk.saturating_mul(2);
                continue;
            }
            Some(libc::ENOENT) | None => {}
            Some(_) => return Err(error.unwrap_or_else(io::Error::last_os_error)),
        }
        let filled = attr.count.min(chunk) as usize;
        // SAFETY: the kernel wrote `filled` keys and `filled * per_entry` values.
        unsafe {
            keys.set_len(filled);
            values.set_len(filled * per_entry);
        }
        for (index, key) in keys.iter().enumerate() {
            f(*key, &values[index * per_entry..(index + 1) * per_entry]);
        }
        if error.is_some() {
            // ENOENT: that was the last batch.
            return Ok(in_kernel);
        }
        cursor = next_cursor;
        first = false;
    }
}
