//! Mitigation, opt-in: bans that the kernel enforces where it counts, at XDP.
//!
//! The [`Mitigator`] decides. An alert that a rule of `[mitigate]` names bans its source or
//! the source's prefix for a time (longer for a repeat offender); `netwatch ban` adds and
//! removes bans by hand; a ban ends when its time is up. Nothing on the never-ban list (the
//! allowlist, the local networks, `mitigate.never`) is ever banned, and no more than
//! `mitigate.max_bans` bans exist at once. Every decision is a [`BanEvent`] that the report
//! stage writes everywhere an alert goes, and that the notify commands
//! (`crate::notify`, daemon wiring) receive.
//!
//! The kernel side is a [`BanTable`]: this module says which network has which index and
//! what a match meets, and never touches a map itself. In `dry-run` the kernel counts what it
//! would drop and drops nothing; with mitigation `off` (the default) no ban exists and the
//! program does not even look.
//!
//! The code, by idea:
//! - `config`: the settings ([`MitigateConfig`], [`BanRule`], [`MitigateMode`]), their
//!   defaults and their validation, and the bounds of a ban ([`MAX_BANS`], [`WIDEST_V4`],
//!   [`WIDEST_V6`]);
//! - `ban`: the plain data of bans ([`BanTable`], [`BanTerms`], [`Ban`], [`BanEvent`],
//!   [`BanRefusal`], ...), below the mitigator;
//! - `mitigator`: the [`Mitigator`], the bans in force and every decision on them, and the
//!   never-ban list ([`NeverBan`]);
//! - `signature`: what an attack's frames have in common that a rule in XDP matches
//!   ([`Signature`]), from an alert's victim and type;
//! - `rules`: the [`RuleKeeper`], the signature rules in force and every decision on them;

mod ban;
mod config;
mod mitigator;
mod rules;
mod signature;

#[cfg(test)]
pub use self::config::BanSubject;
pub use self::{
    ban::{AlertRef, Ban, BanChange, BanEvent, BanRefusal, BanTable, BanTerms, Origin},
    config::{BanTtlError, MitigateConfig, MitigateMode, check_ban_ttl},
    mitigator::{Mitigator, NeverBan},
    rules::{RuleChange, RuleEvent, RuleInForce, RuleKeeper, RuleTable},
    signature::{Signature, SignatureAttack},
};

#[cfg(test)]
mod tests;
