//! Inspection: from sampled frames to events (cleartext credentials, HTTP requests, DNS
//! queries and answers, keyword hits) and to DNS tunnelling alerts.
//!
//! Pure code: frames in, findings out. Frames are decoded with etherparse (VLAN, IPv4, IPv6,
//! extension headers), laxly, because a sample holds only the first bytes of a frame. Any input
//! is safe: nothing here indexes without a check, and a fuzz test holds it to that.
//!
//! The code, by idea:
//! - `config`: the settings ([`InspectConfig`], [`KeywordConfig`], [`DnsTunnelConfig`]) and
//!   their defaults;
//! - `event`: what inspection gives ([`Event`], [`EventKind`], [`Findings`]);
//! - `flow`: what is remembered of a flow between samples, below the inspector and the
//!   decoders;
//! - `inspector`: the [`Inspector`], the order in which one sample goes through the protocols,
//!   the table of flows, the HTTP streams, the keywords and the DNS tunnelling alerts;
//! - `credentials`: the cleartext credentials of each protocol, and an HTTP request's events;
//! - [`dns`], [`http`] and [`text`]: the parsers of DNS messages, of HTTP requests across
//!   segments and of the protocols' text.

mod config;
mod credentials;
pub mod dns;
mod event;
mod flow;
pub mod http;
mod inspector;
pub mod text;

pub use self::{
    config::InspectConfig,
    event::{Event, EventKind},
    inspector::Inspector,
};

#[cfg(test)]
mod tests;
