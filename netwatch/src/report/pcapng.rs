//! The captures' files: one pcapng file per event in the captures' folder ([`CaptureFiles`]),
//! the evidence of an attack. Its section header says which event, what of, and how it was
//! sampled; one interface block per interface watched (the name, the snap length,
//! nanosecond timestamps); each packet its capture time and its length on the wire, and a
//! comment where the sampling changed.
//!
//! Bounded on disk: a capture stops at its frame and byte budgets; the folder keeps to its
//! own budget, the oldest files removed first, each said in a line; a write the disk refuses
//! (full, read-only) cuts that capture, is said once until a write works again, and is
//! counted; monitoring goes on whatever the disk does.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};

use crate::{datapath::CapturedFrame, evidence::Written, private_files};

/// What a capture's file says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// The event (an alert's id, or a request's).
    pub event: String,
    /// What of: the alert's kind, or `request`.
    pub what: String,
    /// Whose frames, in words.
    pub subject: String,
    /// One in how many at the start.
    pub every: u32,
    /// The first frames kept on each CPU.
    pub first: u32,
    /// The snap length.
    pub snap_len: u32,
    /// The interfaces watched: their index (0 for a replay) and name.
    pub interfaces: Vec<(u32, String)>,
}

/// What the files have done since the start, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Frames written.
    pub frames: u64,
    /// Frames a capture no longer took (cut by a budget or the disk).
    pub refused: u64,
    /// Captures cut before their end.
    pub cut: u64,
    /// Files removed for the folder's budget.
    pub removed: u64,
    /// Writes the disk refused.
    pub failures: u64,
}

/// A writer that counts what goes through.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A capture's file, open while it takes frames.
struct Open {
    /// `None` once cut: nothing more is written, and nothing buffered either.
    writer: Option<PcapNgWriter<Counting<BufWriter<File>>>>,
    path: PathBuf,
    name: String,
    /// Interface indexes, by their position in the file.
    interfaces: Vec<u32>,
    frames: u64,
    /// Bytes of the file (written and buffered; at a cut, what is left on disk).
    bytes: u64,
    /// The end and the frames of each block written since the last flush: where a failed
    /// write can be cut back to a whole block.
    pending: Vec<(u64, u64)>,
    /// What the last flush put on disk: bytes and frames.
    flushed: (u64, u64),
    every: u32,
    /// The sampling the last packet's comment (or the header) told.
    every_said: u32,
    cut: Option<String>,
}

impl Open {
    fn written(&self) -> Written {
        Written {
            frames: self.frames,
            bytes: self.bytes,
            cut: self.cut.clone(),
        }
    }

    /// Flushes to the disk; on success every block written is there.
    fn flush(&mut self) -> io::Result<()> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        writer.get_mut().flush()?;
        self.pending.clear();
        self.flushed = (self.bytes, self.frames);
        Ok(())
    }

    /// Stops writing: the buffer is dropped unwritten, and after a failed write the file is
    /// cut back to its last whole block, so that it reads to its end.
    fn stop(&mut self, failed: bool) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let (file, _buffered) = writer.into_inner().inner.into_parts();
        if !failed {
            return;
        }
        let on_disk = file.metadata().map_or(0, |meta| meta.len());
        let (bytes, frames) = self
            .pending
            .iter()
            .rev()
            .find(|(end, _)| *end <= on_disk)
            .copied()
            .unwrap_or(self.flushed);
        let (bytes, frames) = if bytes <= on_disk {
            (bytes, frames)
        } else {
            self.flushed
        };
        if let Err(err) = file.set_len(bytes) {
            log::warn!(
                "captures: cannot cut {} back to its last whole frame: {err}",
                self.path.display()
            );
        }
        self.bytes = bytes.min(on_disk);
        self.frames = frames;
        self.pending.clear();
    }
}

/// The captures' folder and the files open in it, by capture index.
pub struct CaptureFiles {
    dir: PathBuf,
    budget: u64,
    max_frames: u64,
    max_bytes: u64,
    open: BTreeMap<u32, Open>,
    /// Bytes of the folder's files, as last counted and written since.
    used: u64,
    /// A write failed and no write worked since: said once.
    failing: bool,
    counts: FileCounts,
}

impl std::fmt::Debug for CaptureFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFiles")
            .field("dir", &self.dir)
            .field("open", &self.open.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The limits of the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// The folder's bytes at most.
    pub budget: u64,
    /// Frames of one capture at most.
    pub max_frames: u64,
    /// Bytes of one capture at most.
    pub max_bytes: u64,
}

impl CaptureFiles {
    /// The folder `dir` (made 0700 when missing), its files counted against the budget.
    pub fn new(dir: &Path, limits: FileLimits) -> io::Result<Self> {
        private_files::create_dir_all(dir)?;
        let mut files = Self {
            dir: dir.to_owned(),
            budget: limits.budget,
            max_frames: limits.max_frames,
            max_bytes: limits.max_bytes,
            open: BTreeMap::new(),
            used: 0,
            failing: false,
            counts: FileCounts::default(),
        };
        files.used = files.listed()?.iter().map(|(_, _, len)| len).sum();
        Ok(files)
    }

    /// Opens the file `name` of capture `index` and writes its header; why not, if the disk
    /// or the budget refuses it.
    pub fn open(&mut self, index: u32, name: &str, header: &FileHeader) -> Result<(), String> {
        if let Some(old) = self.open.remove(&index) {
            // An index is reused only after its capture was closed: never, but said.
            log::warn!("capture file {} was still open; closed", old.name);
        }
        let path = self.dir.join(name);
        let opened = (|| -> io::Result<Open> {
            let file = private_files::open(&path, false)?;
            let section = SectionHeaderBlock {
                endianness: Endianness::native(),
                options: vec![
                    SectionHeaderOption::UserApplication(Cow::Owned(format!(
                        "netwatch {}",
                        env!("CARGO_PKG_VERSION")
                    ))),
                    SectionHeaderOption::Comment(Cow::Owned(format!(
                        "netwatch event {}: {} {} on {}; sampled 1 in {} after the first {} \
                         frames of each CPU, as the subject's rate says (a packet's comment \
                         marks a change); snap length {}",
                        header.event,
                        header.what,
                        header.subject,
                        header
                            .interfaces
                            .iter()
                            .map(|(_, name)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        header.every,
                        header.first,
                        header.snap_len
                    ))),
                ],
                ..SectionHeaderBlock::default()
            };
            let mut writer = PcapNgWriter::with_section_header(
                Counting {
                    inner: BufWriter::new(file),
                    bytes: 0,
                },
                section,
            )
            .map_err(pcap_error)?;
            for (ifindex, iface) in &header.interfaces {
                writer
                    .write_pcapng_block(InterfaceDescriptionBlock {
                        linktype: DataLink::ETHERNET,
                        snaplen: header.snap_len,
                        options: vec![
                            InterfaceDescriptionOption::IfName(Cow::Owned(iface.clone())),
                            InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                                "ifindex {ifindex}"
                            ))),
                            // Nanoseconds, as the blocks' timestamps are written.
                            InterfaceDescriptionOption::IfTsResol(9),
                        ],
                    })
                    .map_err(pcap_error)?;
            }
            writer.get_mut().flush()?;
            let bytes = writer.get_ref().bytes;
            Ok(Open {
                writer: Some(writer),
                path: path.clone(),
                name: name.to_owned(),
                interfaces: header.interfaces.iter().map(|(index, _)| *index).collect(),
                frames: 0,
                bytes,
                pending: Vec::new(),
                flushed: (bytes, 0),
                every: header.every,
                every_said: header.every,
                cut: None,
            })
        })();
        match opened {
            Ok(open) => {
                self.used += open.bytes;
                self.open.insert(index, open);
                Ok(())
            }
            Err(err) => {
                let _ = fs::remove_file(&path);
                self.failed(&err);
                Err(format!("cannot write {}: {err}", path.display()))
            }
        }
    }

    /// Capture `index` keeps one frame in `every` from now on: its next packet says so.
    pub fn every(&mut self, index: u32, every: u32) {
        if let Some(open) = self.open.get_mut(&index) {
            open.every = every;
        }
    }

    /// Writes `frame`, seen at `at` (since the Unix epoch), to the file of every capture
    /// that keeps it and is open.
    pub fn write(&mut self, frame: &CapturedFrame, at: Duration) {
        for index in 0..netwatch_common::MAX_CAPTURES as u32 {
            if (frame.captures >> index) & 1 == 0 {
                continue;
            }
            self.write_one(index, frame, at);
        }
    }

    fn write_one(&mut self, index: u32, frame: &CapturedFrame, at: Duration) {
        let (budget, max_frames, max_bytes) = (self.budget, self.max_frames, self.max_bytes);
        let Some(open) = self.open.get_mut(&index) else {
            return;
        };
        if open.cut.is_some() {
            self.counts.refused += 1;
            return;
        }
        // The block: 32 bytes, the data padded to 4, a comment perhaps (under 64).
        let size = 32 + frame.data.len().next_multiple_of(4) as u64 + 64;
        let cut = if open.frames >= max_frames {
            Some(format!(
                "its {max_frames} frames are written (capture.max_frames)"
            ))
        } else if open.bytes + size > max_bytes {
            Some(format!(
                "its {max_bytes} bytes are written (capture.max_bytes)"
            ))
        } else {
            None
        };
        if let Some(why) = cut {
            self.cut(index, why);
            self.counts.refused += 1;
            return;
        }
        if self.used + size > budget {
            self.make_room(size);
            if self.used + size > budget {
                self.cut(
                    index,
                    format!(
                        "the captures' folder is at its budget of {budget} bytes (capture.budget_bytes), with only open captures in it"
                    ),
                );
                self.counts.refused += 1;
                return;
            }
        }
        let Some(open) = self.open.get_mut(&index) else {
            return;
        };
        let interface_id = open
            .interfaces
            .iter()
            .position(|ifindex| *ifindex == frame.ifindex)
            .unwrap_or(0) as u32;
        let mut options = Vec::new();
        if open.every != open.every_said {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "sampled 1 in {} from here",
                open.every
            ))));
            open.every_said = open.every;
        }
        let Some(writer) = &mut open.writer else {
            return;
        };
        let written = writer.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            timestamp: at,
            original_len: frame.original_len,
            data: Cow::Borrowed(&frame.data),
            options,
        });
        let bytes = writer.get_ref().bytes;
        self.used += bytes - open.bytes;
        open.bytes = bytes;
        match written {
            Ok(_) => {
                open.frames += 1;
                open.pending.push((open.bytes, open.frames));
                self.counts.frames += 1;
            }
            Err(err) => {
                let err = pcap_error(err);
                self.failed(&err);
                self.cut_failed(index, &err);
            }
        }
    }

    /// Flushes every open file to the disk, so that a reader sees what was captured; a
    /// refusal cuts its capture. A flush that works ends an outage of the disk (said).
    pub fn flush(&mut self) {
        let mut worked = false;
        let mut failed = Vec::new();
        for (index, open) in &mut self.open {
            match open.flush() {
                Ok(()) => worked |= open.writer.is_some(),
                Err(err) => failed.push((*index, err)),
            }
        }
        for (index, err) in failed {
            self.failed(&err);
            self.cut_failed(index, &err);
        }
        if worked {
            self.works();
        }
    }

    /// Closes capture `index`'s file: what it holds, or `None` when it was not open.
    pub fn close(&mut self, index: u32) -> Option<Written> {
        match self.open.get_mut(&index)?.flush() {
            Ok(()) => {
                if self
                    .open
                    .get(&index)
                    .is_some_and(|open| open.writer.is_some())
                {
                    self.works();
                }
            }
            Err(err) => {
                self.failed(&err);
                self.cut_failed(index, &err);
            }
        }
        let mut open = self.open.remove(&index)?;
        open.stop(false);
        Some(open.written())
    }

    /// What each open file holds, by capture index.
    pub fn written(&self) -> BTreeMap<u32, Written> {
        self.open
            .iter()
            .map(|(index, open)| (*index, open.written()))
            .collect()
    }

    /// What the files have done since the start.
    pub fn counts(&self) -> FileCounts {
        self.counts
    }

    /// The folder's bytes as counted.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Capture `index` takes no more frames, and why (said once): its file is whole.
    fn cut(&mut self, index: u32, why: String) {
        let Some(open) = self.open.get_mut(&index) else {
            return;
        };
        if open.cut.is_some() {
            return;
        }
        // What it holds so far stays readable.
        let failed = open.flush().err();
        open.stop(failed.is_some());
        log::warn!(
            "capture {} cut at {} frames: {why}",
            crate::escape::escape(&open.name),
            open.frames
        );
        open.cut = Some(why);
        self.counts.cut += 1;
    }

    /// Capture `index`'s file was refused a write: cut back to its last whole frame.
    fn cut_failed(&mut self, index: u32, err: &io::Error) {
        let Some(open) = self.open.get_mut(&index) else {
            return;
        };
        if open.cut.is_some() {
            return;
        }
        let before = open.bytes;
        open.stop(true);
        self.used = self.used.saturating_sub(before - open.bytes);
        log::warn!(
            "capture {} cut at {} frames: the disk refused a write: {err}",
            crate::escape::escape(&open.name),
            open.frames
        );
        open.cut = Some(format!("the disk refused a write: {err}"));
        self.counts.cut += 1;
    }

    /// A write failed: said once until one works again, and counted.
    fn failed(&mut self, err: &io::Error) {
        self.counts.failures += 1;
        if !self.failing {
            self.failing = true;
            log::warn!(
                "captures: writing to {} failed ({err}); the captures it cut say so, monitoring goes on, and the next write that works is said",
                self.dir.display()
            );
        }
    }

    fn works(&mut self) {
        if self.failing {
            self.failing = false;
            log::info!("captures: writing to {} works again", self.dir.display());
        }
    }

    /// Removes the oldest closed captures until `size` more bytes fit in the budget, each
    /// said in a line.
    fn make_room(&mut self, size: u64) {
        let listed = match self.listed() {
            Ok(listed) => listed,
            Err(err) => {
                log::warn!("captures: cannot list {}: {err}", self.dir.display());
                return;
            }
        };
        // Counted again: the disk's word over ours.
        let open: u64 = self.open.values().map(|open| open.bytes).sum();
        let open_names: Vec<&str> = self.open.values().map(|open| open.name.as_str()).collect();
        let mut closed: Vec<(SystemTime, PathBuf, u64)> = listed
            .into_iter()
            .filter(|(_, path, _)| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_none_or(|name| !open_names.contains(&name))
            })
            .collect();
        self.used = open + closed.iter().map(|(_, _, len)| len).sum::<u64>();
        closed.sort();
        for (modified, path, len) in closed {
            if self.used + size <= self.budget {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.used = self.used.saturating_sub(len);
                    self.counts.removed += 1;
                    log::info!(
                        "captures: removed {} ({len} bytes, of {}): the folder is at its budget of {} bytes (capture.budget_bytes)",
                        path.display(),
                        crate::time_text::rfc3339(modified),
                        self.budget
                    );
                }
                Err(err) => log::warn!("captures: cannot remove {}: {err}", path.display()),
            }
        }
    }

    /// The folder's pcapng files: modified, path, length.
    fn listed(&self) -> io::Result<Vec<(SystemTime, PathBuf, u64)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().and_then(|ext| ext.to_str()) != Some("pcapng") {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                files.push((
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    path,
                    meta.len(),
                ));
            }
        }
        Ok(files)
    }
}

fn pcap_error(err: pcap_file::PcapError) -> io::Error {
    match err {
        pcap_file::PcapError::IoError(err) => err,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;

    fn frame(captures: u32, len: usize) -> CapturedFrame {
        CapturedFrame {
            captures,
            time_ns: 0,
            ifindex: 7,
            original_len: len as u32 + 100,
            data: (0..len).map(|i| i as u8).collect(),
        }
    }

    fn header(event: &str) -> FileHeader {
        FileHeader {
            event: event.to_owned(),
            what: String::from("threshold_pps"),
            subject: String::from("from 198.51.100.7/32"),
            every: 1,
            first: 50,
            snap_len: 1522,
            interfaces: vec![(7, String::from("eth0"))],
        }
    }

    fn limits() -> FileLimits {
        FileLimits {
            budget: 1 << 20,
            max_frames: 1_000,
            max_bytes: 1 << 20,
        }
    }

    /// A capture's file reads back as pcapng with every frame written, its times and lengths
    /// on the wire; frames of other captures stay out of it; closed, it says what it holds.
    #[test]
    fn a_capture_file_reads_back_frame_for_frame() {
        let dir = std::env::temp_dir().join(format!("nwpcapng-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut files = CaptureFiles::new(&dir, limits()).unwrap();
        files.open(2, "a-1.pcapng", &header("a-1")).unwrap();
        files.open(3, "a-2.pcapng", &header("a-2")).unwrap();
        let at = Duration::from_millis(1_700_000_000_123);
        files.write(&frame(1 << 2, 60), at);
        files.every(2, 8);
        files.write(&frame(1 << 2 | 1 << 3, 70), at + Duration::from_millis(1));
        files.write(&frame(1 << 5, 80), at);
        let written = files.close(2).unwrap();
        assert_eq!((written.frames, written.cut), (2, None));
        assert_eq!(files.close(3).unwrap().frames, 1);
        assert!(files.close(3).is_none());
        let path = dir.join("a-1.pcapng");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            written.bytes,
            "the bytes counted are the file's"
        );
        let frames: Vec<_> = CaptureReader::open(&path)
            .unwrap()
            .map(|frame| frame.unwrap())
            .collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].timestamp, at);
        assert_eq!(frames[0].data, frame(0, 60).data);
        assert_eq!(frames[0].original_len, 160);
        assert_eq!(frames[1].timestamp, at + Duration::from_millis(1));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A capture stops at its frames; the folder keeps to its budget by removing the oldest
    /// closed file, never an open one; with only open ones over it, the capture is cut.
    #[test]
    fn budgets_cut_a_capture_and_remove_the_oldest_files() {
        let dir = std::env::temp_dir().join(format!("nwpcapng-b-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut files = CaptureFiles::new(
            &dir,
            FileLimits {
                budget: 8_500,
                max_frames: 4,
                max_bytes: 6_000,
            },
        )
        .unwrap();
        files.open(0, "old.pcapng", &header("old")).unwrap();
        for _ in 0..5 {
            files.write(&frame(1, 1_000), Duration::from_secs(1));
        }
        let old = files.close(0).unwrap();
        assert_eq!(old.frames, 4);
        assert!(
            old.cut.as_deref().unwrap_or("").contains("max_frames"),
            "{old:?}"
        );
        assert_eq!(files.counts().refused, 1);
        std::thread::sleep(Duration::from_millis(20));
        files.open(1, "new.pcapng", &header("new")).unwrap();
        files.open(2, "newer.pcapng", &header("newer")).unwrap();
        for _ in 0..3 {
            files.write(&frame(1 << 1, 1_000), Duration::from_secs(2));
        }
        assert!(dir.join("old.pcapng").exists());
        // The newer capture's frames need the old one's room.
        for _ in 0..3 {
            files.write(&frame(1 << 2, 1_000), Duration::from_secs(3));
        }
        assert!(
            !dir.join("old.pcapng").exists(),
            "the oldest closed file stays"
        );
        assert_eq!(files.counts().removed, 1);
        // Only open files now: the one that does not fit is cut.
        files.write(&frame(1 << 1 | 1 << 2, 1_000), Duration::from_secs(4));
        let written = files.written();
        assert_eq!(written[&1].cut, None, "{written:?}");
        assert!(
            written[&2]
                .cut
                .as_deref()
                .unwrap_or("")
                .contains("budget_bytes"),
            "{written:?}"
        );
        assert!(files.used() <= 8_500, "{}", files.used());
        let _ = fs::remove_dir_all(&dir);
    }
}
