//! Levelled logging on stderr through the `log` crate, one line a message:
//! `netwatch: message` for info, `netwatch: warning: message`, `netwatch: error: message`,
//! `netwatch: debug: message`. Under systemd, when `JOURNAL_STREAM` names this stderr, every
//! line starts with its syslog priority (`<4>netwatch: warning: ...`), which journald takes as
//! the entry's level.
//!
//! The level is `--log-level`, else `RUST_LOG` (a level name, or `netwatch=LEVEL` among other
//! directives), else `info`; it applies to netwatch and its kernel side (aya-log records,
//! target `netwatch_xdp`), while the libraries it uses are heard only when they warn. Messages that carry what a sender put in a packet are escaped
//! where they are made (see [`report::escape`](crate::report::escape)).

use std::{io::Write as _, os::fd::AsRawFd as _, str::FromStr as _};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The logger.
struct Stderr {
    /// Lines start with `<N>` for journald.
    journald: bool,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // netwatch's own messages, and its kernel side's (target `netwatch_xdp`), at the
        // level asked; the libraries' (aya, rustls, ...) only when they warn.
        let ours = metadata.target().starts_with("netwatch");
        metadata.level() <= log::max_level() && (ours || metadata.level() <= Level::Warn)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (priority, label) = match record.level() {
            Level::Error => (3, "error: "),
            Level::Warn => (4, "warning: "),
            Level::Info => (6, ""),
            Level::Debug => (7, "debug: "),
            Level::Trace => (7, "trace: "),
        };
        // One line whatever the message holds.
        let message = record
            .args()
            .to_string()
            .replace('\r', "\\r")
            .replace('\n', "\\n");
        let line = if self.journald {
            format!("<{priority}>netwatch: {label}{message}\n")
        } else {
            format!("netwatch: {label}{message}\n")
        };
        // One write a line, so that lines from several threads never mix; a closed stderr
        // loses the log, never the monitoring.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger at `level`, else the level `RUST_LOG` names, else info. Returns the
/// level in force.
pub fn init(level: Option<LevelFilter>) -> LevelFilter {
    let level = level
        .or_else(|| std::env::var("RUST_LOG").ok().and_then(|v| from_env(&v)))
        .unwrap_or(LevelFilter::Info);
    let logger = Stderr {
        journald: journald_stderr(),
    };
    // A second call (tests) keeps the first logger.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    level
}

/// The level `RUST_LOG` gives netwatch: a bare level (`debug`), or `netwatch=LEVEL` among
/// comma-separated directives; `None` when it says nothing of netwatch.
fn from_env(value: &str) -> Option<LevelFilter> {
    let mut found = None;
    for directive in value.split(',').map(str::trim) {
        match directive.split_once('=') {
            Some((target, level)) if target.trim() == "netwatch" => {
                found = LevelFilter::from_str(level.trim()).ok().or(found);
            }
            Some(_) => {}
            None => {
                if let Ok(level) = LevelFilter::from_str(directive) {
                    found = found.or(Some(level));
                }
            }
        }
    }
    found
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` is `DEVICE:INODE` of it.
fn journald_stderr() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    // SAFETY: a zeroed stat is a valid value of that plain C struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on fd 2 into a valid stat of its own size.
    if unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut stat) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_gives_netwatch_its_level() {
        assert_eq!(from_env("debug"), Some(LevelFilter::Debug));
        assert_eq!(from_env("warn,netwatch=trace"), Some(LevelFilter::Trace));
        assert_eq!(
            from_env("netwatch=error,aya=debug"),
            Some(LevelFilter::Error)
        );
        assert_eq!(from_env("aya=debug"), None);
        assert_eq!(from_env("nonsense"), None);
        assert_eq!(from_env(""), None);
    }
}
