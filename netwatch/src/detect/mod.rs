//! Detection: from the per-interval series to alerts.
//!
//! Pure code: an [`Interval`](crate::collect::Interval) and the time it ended go in; alerts and the changes to the set
//! of known sources come out. No clock is read, so replaying a capture gives the alerts the
//! same traffic gives live, and every rule is unit-tested without root.
//!
//! Rules:
//! - static thresholds on packets and bits per second, for the whole interface, per prefix
//!   (IPv4 /24 and IPv6 /64 by default) and per source;
//! - spikes: a packet rate above `mean + k * sigma` of its EWMA baseline, above a minimum rate
//!   and a minimum ratio to the mean, once the series is warmed up;
//! - unknown sources: after a learning period, a source neither learned nor allowlisted that
//!   sends at least a minimum of packets;
//! - SYN floods, port scans and host sweeps per source, from the SYN counter and the kernel's
//!   distinct-destination estimates.
//!
//! - heavy hitters: a source or prefix with no baseline yet (first seen after the interface's
//!   own baseline warmed up) that sends a large share of the interface's packets.
//!
//! Every rule except unknown sources has hysteresis: one event is one `start`, periodic
//! `update`s and one `end` carrying the peak and the totals.
//!
//! Alerts explain themselves: flood alerts say what the traffic is ([`attack`]); global and
//! prefix rate alerts name their top contributors. Many sources of one prefix that meet the
//! same rule in the same interval make one alert for the prefix, and the alerts of one
//! interval are capped, the rest counted in one `suppressed` line.
//!
//! Evidence first: a rate rule fires only on at least `min_packets` packets in the interval
//! (a SYN flood on at least `scan.min_syn` SYNs), and an interval shorter than half the
//! configured one (the end of a capture, the last interval at shutdown) is reported but never
//! starts an event, nor teaches a baseline.
//!
//! The code, by idea:
//! - `config`: the settings ([`DetectConfig`] and its sections), their defaults and their
//!   validation;
//! - `detector`: the [`Detector`], the state it keeps across intervals, and the order in which
//!   one interval goes through the rules, the events and the explanations to its [`Outcome`],
//!   then the cap on its alert lines;
//! - `rules`: the rate series and their baselines, and the rules that turn an interval into
//!   triggers (thresholds, spikes, heavy hitters, SYN floods and scans);
//! - `events`: the hysteresis that turns triggers into events (start, update, end), and the
//!   kernel's early start;
//! - `explain`: the contributors of rate alerts, a victim's senders, the slot-less traffic;
//! - `unknown`: the learning of known sources, and the unknown-source alerts;
//! - `state`: the plain data the others share (series, triggers, running events, known
//!   sources, an interval's outcome), below them all;
//! - [`alert`] (the alert record), [`attack`] (what a flood is made of), [`cidr`] (networks)
//!   and [`ewma`] (a baseline).

pub mod alert;
pub mod attack;
pub mod cidr;
mod config;
mod detector;
mod events;
pub mod ewma;
mod explain;
mod rules;
mod state;
mod unknown;

#[cfg(test)]
pub use self::config::UnknownConfig;
pub use self::{
    config::DetectConfig,
    detector::Detector,
    state::{KnownChange, KnownState},
};

#[cfg(test)]
mod tests;
