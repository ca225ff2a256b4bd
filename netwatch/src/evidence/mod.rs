//! Evidence: a packet capture of every attack, taken in the kernel while it lasts.
//!
//! The [`CaptureKeeper`] decides. An alert of `[capture] kinds` at its start gets a capture
//! of its subject (its source or prefix; its victim, narrowed to the attack's signature; for
//! the interface as a whole, its main victim, else its top contributor), named by its event
//! id; the kernel keeps one frame in N of it on each CPU after the first few, N set from the
//! subject's rate so that about `frames_per_second` are kept whatever the flood's size; it
//! stops at the event's end or at its budget. `netwatch capture` asks for one by hand.
//!
//! Pure decisions, like `mitigate`: the kernel's side is the datapath's `CaptureMaps`, the
//! files are written by `report::pcapng`, both driven by the daemon wiring (`capturing`).
//!
//! - `config`: `[capture]` ([`CaptureConfig`]);
//! - `subject`: whose frames an alert's capture keeps ([`CaptureSubject`]);
//! - `keeper`: the [`CaptureKeeper`] and its [`CaptureChange`]s.

mod config;
mod keeper;
mod subject;

pub use self::{
    config::CaptureConfig,
    keeper::{Capture, CaptureChange, CaptureKeeper, Written},
    subject::CaptureSubject,
};
