//! What is remembered of a client->server flow between samples: its key ([`FlowKey`]) and
//! its state ([`FlowState`]: a user name waiting for its password, a Telnet line being
//! typed, ...).
//!
//! Plain data, below the inspector that keeps the table of flows and the decoders that move
//! a flow from state to state: it decides nothing and imports nothing else of this module.

use std::net::SocketAddr;

/// What is remembered of a client->server flow between samples.
#[derive(Clone, Debug, Default)]
pub(super) enum FlowState {
    #[default]
    Idle,
    /// FTP or POP3 USER seen.
    UserSent(String),
    /// SMTP AUTH PLAIN or IMAP AUTHENTICATE PLAIN without its initial response.
    PlainPending,
    /// SMTP AUTH LOGIN: waiting for the user name.
    LoginUserPending,
    /// SMTP AUTH LOGIN: user known, waiting for the password.
    LoginPasswordPending(String),
    /// Telnet: the server asked for a login; the user name typed so far.
    TelnetUser(String),
    /// Telnet: the user name typed, waiting for the password prompt.
    TelnetUserTyped(String),
    /// Telnet: the server asked for the password; the user, and the secret typed so far.
    TelnetPassword(Option<String>, String),
}

pub(super) type FlowKey = (SocketAddr, SocketAddr);
