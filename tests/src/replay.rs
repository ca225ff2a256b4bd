//! Running `netwatch replay` on captures the tests write: the binary, its JSON lines, and
//! streams of frames on the capture's clock.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;

use crate::{ScratchDir, frames::FrameBuilder, netwatch_bin, write_pcap};

/// Capture time 0 of the written captures, Unix seconds.
pub const BASE: u64 = 1_700_000_000;

/// Runs `netwatch replay ARGS`.
pub fn replay(args: &[&str]) -> Output {
    Command::new(netwatch_bin())
        .arg("replay")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run netwatch replay: {err}"))
}

/// The JSON lines of `output`, parsed.
pub fn records(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{line:?}: {err}")))
        .collect()
}

/// The records of one `type`.
pub fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

/// Writes `frames` (sorted here) as a capture, and `config` beside it; returns their paths.
pub fn write_case(
    dir: &ScratchDir,
    mut frames: Vec<(Duration, Vec<u8>)>,
    config: &str,
) -> (PathBuf, PathBuf) {
    frames.sort_by_key(|(time, _)| *time);
    let capture = dir.join("case.pcap");
    write_pcap(&capture, &frames);
    let config_path = dir.join("netwatch.toml");
    fs::write(&config_path, config).unwrap_or_else(|err| panic!("{err}"));
    (capture, config_path)
}

/// Replays the case with `--format json` (and `extra`); returns every record.
pub fn records_of(capture: &Path, config: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        capture.to_str().unwrap_or_default(),
        "--config",
        config.to_str().unwrap_or_default(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let output = replay(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    records(&output)
}

/// Replays the case as [`records_of`] does; returns its alerts.
pub fn alerts_of(capture: &Path, config: &Path, extra: &[&str]) -> Vec<Value> {
    of_type(&records_of(capture, config, extra), "alert")
        .into_iter()
        .cloned()
        .collect()
}

/// `pps` frames per second from `builder` during seconds `from..to` of the capture, evenly
/// spread, each made by `make(i)` from the builder.
pub fn stream(
    frames: &mut Vec<(Duration, Vec<u8>)>,
    seconds: std::ops::Range<u64>,
    pps: u64,
    make: impl Fn(u64) -> FrameBuilder,
) {
    let mut i = 0;
    for second in seconds {
        for k in 0..pps {
            let time =
                Duration::from_secs(BASE + second) + Duration::from_micros(k * 1_000_000 / pps);
            frames.push((time, make(i).build().bytes));
            i += 1;
        }
    }
}
