//! The state detection keeps between intervals, as plain data: a subject's rate series and
//! baseline ([`Series`]), a rule crossed ([`Trigger`]), a running event ([`Open`]), an
//! interval's volume ([`Volume`]), the known sources ([`KnownState`], [`KnownChange`]) and
//! what an interval gave ([`Outcome`]). The rules, the events and the detector work on these;
//! this module decides nothing and imports none of them.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use super::{
    alert::{Alert, Members},
    ewma::Ewma,
};
use crate::collect::Mix;

/// A subject's packets and bytes in an interval.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Volume {
    pub(super) packets: u64,
    pub(super) bytes: u64,
}

/// A rule crossed in an interval: what was seen against what the rule allows.
pub(super) struct Trigger {
    pub(super) observed: f64,
    pub(super) threshold: f64,
    pub(super) baseline: Option<f64>,
    pub(super) detail: Option<String>,
    pub(super) members: Option<Members>,
}

impl Trigger {
    pub(super) fn new(observed: f64, threshold: f64, baseline: Option<f64>) -> Self {
        Self {
            observed,
            threshold,
            baseline,
            detail: None,
            members: None,
        }
    }
}

/// A subject's rate series: its baseline, how long it has been idle, and whether it is a
/// newcomer.
#[derive(Default)]
pub(super) struct Series {
    pub(super) ewma: Ewma,
    pub(super) idle: u32,
    /// First seen after the interface's own baseline had warmed up: a newcomer, which the
    /// heavy-hitter rule watches until its own baseline has warmed up.
    pub(super) new: bool,
}

/// A running event, from its start to its end.
pub(super) struct Open {
    pub(super) id: String,
    pub(super) started: Duration,
    pub(super) peak: f64,
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) threshold: f64,
    pub(super) baseline: Option<f64>,
    pub(super) since_report: u32,
    pub(super) quiet: u32,
    pub(super) last_observed: f64,
    pub(super) detail: Option<String>,
    pub(super) members: Option<Members>,
    /// The traffic mix of the whole event, for flood alerts.
    pub(super) mix: Mix,
    /// Started by the kernel's early event, before an interval's reading: the next reading
    /// confirms it (an update) or ends it.
    pub(super) early: bool,
}

/// What one interval gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Alerts, in a stable order.
    pub alerts: Vec<Alert>,
    /// Changes to the known set.
    pub known: Vec<KnownChange>,
}

/// A change to the set of known sources, for the store to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnownChange {
    /// The learning period began at this time.
    LearningStarted(Duration),
    /// Learned during the learning period.
    Learned(IpAddr),
    /// Reported as unknown; known from now on, so it alerts once.
    Alerted(IpAddr),
}

/// Where known-source detection stands at start.
#[derive(Clone, Debug, Default)]
pub struct KnownState {
    /// Sources already known.
    pub known: HashSet<IpAddr>,
    /// When learning began, if it ever did.
    pub learning_started: Option<Duration>,
}
