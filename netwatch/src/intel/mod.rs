//! Threat intelligence: indicator feeds in the Zeek Intel framework's format, matched against
//! the traffic. A stage beside `inspect`, pure: the files are read by the caller, the matches
//! are alerts of kind `intel` that go everywhere alerts go.
//!
//! - `feed`: reading a feed ([`parse`], [`LoadReport`]) and looking indicators up ([`Feed`]);
//! - `watch`: the [`IntelWatch`], which matches events and intervals and says each match
//!   once per host and indicator per `repeat_after`.

mod feed;
mod watch;

use std::{path::PathBuf, time::Duration};

pub use self::{
    feed::{Feed, parse},
    watch::IntelWatch,
};

/// `[intel]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// Feeds in Zeek's Intel format; read at start, on SIGHUP, and when one changes.
    pub files: Vec<PathBuf>,
    /// One alert per local host and indicator in this time; the matches in between are
    /// counted in the next.
    #[serde(with = "crate::duration")]
    pub repeat_after: Duration,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            repeat_after: Duration::from_secs(3_600),
        }
    }
}
