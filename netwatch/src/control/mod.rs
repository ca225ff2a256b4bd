//! The control socket: how `netwatch status`, `netwatch top` and scripts ask a running daemon
//! what it sees.
//!
//! A Unix stream socket (default `/run/netwatch/control.sock`), mode 0600, owned by the
//! daemon's user. The protocol is versioned and line-based, one JSON object per line (the
//! README has it in full):
//!
//! - the client sends one request: `{"version":1,"request":"status"}` or
//!   `{"version":1,"request":"subscribe"}`;
//! - `status`: the daemon answers with one status object and closes;
//! - `subscribe`: the daemon answers with a `hello` object, then every interval record,
//!   alert, event and ban as the JSON output writes them, until either side closes;
//! - `ban_add` (with `subject`, and `ttl_s` and `reason` if wanted), `ban_remove` (with
//!   `subject`) and `ban_list`: one answer, the ban event, the list or an error, and close.
//!
//! The collection never waits on a client: each subscriber has a bounded queue, filled with
//! `try_send`; a subscriber that falls [`SUBSCRIBER_QUEUE`] records behind is dropped, and
//! that is counted and said.
//!
//! The code, by layer: `protocol` (the request and answer types and their JSON) below
//! `shared` (the [`Control`] state the daemon and the server share, and the report output
//! that feeds it), below `server` (the socket, its clients) and `client` (the commands'
//! side).

mod client;
mod protocol;
mod server;
mod shared;

pub use self::{
    client::{ClientError, ask, ask_answer, busy, connect, send, socket_path},
    protocol::{
        BanAnswer, BanOp, CaptureRequest, Counts, InterfaceStatus, MAX_REASON, PROTOCOL_VERSION,
        Request, RuleSpec, Status, StoreStatus, WebhookStatus,
    },
    server::{BindError, ControlServer},
    shared::{BanCall, Control, ControlSink, SUBSCRIBER_QUEUE},
};
