//! The commands: `monitor` (a live interface), `replay` (a capture), `status`, `top`, `ban`
//! and `mitigate` (a running daemon, through its control socket), `check` (this machine), and `known` and `history` (answers from the
//! store). Each turns its arguments into a [`Session`](crate::session) or a
//! store query; the stages themselves live beside this folder.

pub mod ban;
pub mod capture;
pub mod check;
pub mod history;
pub mod known;
pub mod mitigate;
pub mod monitor;
pub mod replay;
pub mod status;
pub mod store;
pub mod top;
