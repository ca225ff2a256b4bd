//! `[capture]`: which events get a packet capture, how many of their frames, and how much
//! disk the captures may take.

use std::path::PathBuf;

use serde::Deserialize;

use crate::detect::alert::AlertKind;

/// `[capture]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// A capture for each event of `kinds` (on by default); `netwatch capture` works either
    /// way.
    pub enabled: bool,
    /// The folder of the pcapng files (made 0700, files 0600); empty: `captures/` beside the
    /// store (`replay` writes none unless this or `--capture-dir` says where).
    pub dir: PathBuf,
    /// The alert kinds whose events are captured.
    pub kinds: Vec<AlertKind>,
    /// About this many frames a second are kept of an event, whatever its rate: one in N,
    /// N a power of two, set from the subject's rate each interval.
    pub frames_per_second: u32,
    /// The first frames of an event, all kept (on each CPU) before one in N.
    pub first_frames: u32,
    /// At most this many frames in one capture; it stops there, and says so.
    pub max_frames: u64,
    /// At most this many bytes in one capture.
    pub max_bytes: u64,
    /// At most this many bytes of a frame are kept (its length on the wire is kept too).
    pub snap_len: u32,
    /// The folder's budget: past it the oldest captures are removed, each said in a line.
    pub budget_bytes: u64,
}

/// The kinds captured by default: the floods and the scans, whose frames say what they are.
pub const DEFAULT_KINDS: [AlertKind; 7] = [
    AlertKind::ThresholdPps,
    AlertKind::ThresholdBps,
    AlertKind::SpikePps,
    AlertKind::HeavyHitter,
    AlertKind::SynFlood,
    AlertKind::PortScan,
    AlertKind::HostSweep,
];

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::new(),
            kinds: DEFAULT_KINDS.to_vec(),
            frames_per_second: 100,
            first_frames: 50,
            max_frames: 10_000,
            max_bytes: 64 << 20,
            snap_len: netwatch_common::DEFAULT_SAMPLE_SNAP_LEN,
            budget_bytes: 1 << 30,
        }
    }
}

impl CaptureConfig {
    /// The captures' folder of a daemon whose store is `store`: `dir`, else `captures/`
    /// beside the store.
    pub fn dir_beside(&self, store: &std::path::Path) -> PathBuf {
        if !self.dir.as_os_str().is_empty() {
            return self.dir.clone();
        }
        store
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("captures")
    }

    /// Checks the values; the field and why not.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, reason: String| Err((format!("capture.{field}"), reason));
        if self.frames_per_second == 0 {
            return invalid("frames_per_second", String::from("must be at least 1"));
        }
        if self.max_frames == 0 {
            return invalid("max_frames", String::from("must be at least 1"));
        }
        if self.max_bytes < 4096 {
            return invalid("max_bytes", String::from("must be at least 4096"));
        }
        let most = netwatch_common::CAPTURE_MAX_SNAP_LEN as u32;
        if !(64..=most).contains(&self.snap_len) {
            return invalid("snap_len", format!("must be 64 to {most}"));
        }
        if self.budget_bytes < self.max_bytes {
            return invalid(
                "budget_bytes",
                format!(
                    "must hold one capture at least (capture.max_bytes, {})",
                    self.max_bytes
                ),
            );
        }
        if let Some(kind) = self
            .kinds
            .iter()
            .find(|kind| matches!(kind, AlertKind::TrackingCapacity | AlertKind::Suppressed))
        {
            return invalid(
                "kinds",
                format!("{} has no traffic of its own to capture", kind.name()),
            );
        }
        Ok(())
    }
}
