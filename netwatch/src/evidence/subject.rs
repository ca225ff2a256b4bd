//! Whose frames an event's capture keeps: its source or prefix; for a victim, the frames to
//! it, narrowed to its attack's signature when there is one ("UDP from port 123 to
//! 192.0.2.5"); for the interface as a whole, its main victim, else its top contributor.
//! Plain data and pure functions.

use std::fmt;

use crate::{
    datapath::{CaptureSide, RuleAction, SignatureRule},
    detect::{
        alert::{Alert, Subject},
        cidr::Cidr,
    },
    mitigate::Signature,
};

/// Whose frames a capture keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureSubject {
    /// Frames from a source or a prefix.
    Source(Cidr),
    /// Frames to a host or a prefix, those of a signature only when given.
    Destination(Cidr, Option<Signature>),
}

impl CaptureSubject {
    /// Where the kernel looks: the side, the network, the filter.
    pub fn kernel(&self) -> (CaptureSide, Cidr, Option<SignatureRule>) {
        match *self {
            Self::Source(net) => (CaptureSide::Source, net, None),
            Self::Destination(net, signature) => (
                CaptureSide::Destination,
                net,
                signature.map(|signature| SignatureRule {
                    destination: None,
                    ..signature.rule(RuleAction::Count)
                }),
            ),
        }
    }
}

/// `from 198.51.100.7/32`, `to 192.0.2.5/32`, `udp from port 123 to 192.0.2.5/32`.
impl fmt::Display for CaptureSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(net) => write!(f, "from {net}"),
            Self::Destination(_, Some(signature)) => write!(f, "{signature}"),
            Self::Destination(net, None) => write!(f, "to {net}"),
        }
    }
}

/// The subject of an alert's capture; `None` when it has none (a global alert with no
/// victim and no contributor).
pub fn subject_of(alert: &Alert) -> Option<CaptureSubject> {
    let port = alert.victims.first().and_then(|victim| victim.port);
    let signature = |net: Cidr| {
        alert
            .attack
            .as_ref()
            .and_then(|attack| Signature::of(attack.kind, net, port))
    };
    match alert.subject {
        Subject::Source(addr) => Some(CaptureSubject::Source(Cidr::host(addr))),
        Subject::Prefix(net) => Some(CaptureSubject::Source(net)),
        Subject::Destination(addr) => Some(CaptureSubject::Destination(
            Cidr::host(addr),
            signature(Cidr::host(addr)),
        )),
        Subject::DestinationPrefix(net) => Some(CaptureSubject::Destination(net, signature(net))),
        Subject::Global => {
            if let Some(victim) = alert.victims.first() {
                let net = Cidr::host(victim.addr);
                let signature = victim
                    .attack
                    .and_then(|attack| Signature::of(attack, net, victim.port));
                return Some(CaptureSubject::Destination(net, signature));
            }
            alert
                .contributors
                .first()
                .and_then(|contributor| match contributor.subject {
                    Subject::Source(addr) => Some(CaptureSubject::Source(Cidr::host(addr))),
                    Subject::Prefix(net) => Some(CaptureSubject::Source(net)),
                    _ => None,
                })
        }
    }
}
