//! `netwatch capture`: asks the running daemon for a capture of a source, a prefix or a
//! destination, now, for a time, through its control socket; says where the file is. The
//! daemon takes it in the kernel as it takes an event's, into its captures' folder.

use std::io::Write;

use crate::{
    cli::CaptureArgs,
    control::{self, CaptureRequest, ClientError, PROTOCOL_VERSION, Request},
    report::escape,
};

/// Sends the request and prints the answer.
pub fn run(args: CaptureArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let CaptureArgs {
        config,
        control,
        source,
        prefix,
        destination,
        duration,
    } = args;
    let path = control::socket_path(control, config.as_deref())?;
    let request = Request {
        version: PROTOCOL_VERSION,
        request: String::from("capture"),
        capture: Some(CaptureRequest {
            source: source.map(|addr| addr.to_string()).or(prefix),
            destination,
            duration_s: Some(duration.as_secs_f64()),
        }),
        ..Request::default()
    };
    let (line, answer) = control::ask_answer(
        &path,
        &request,
        "captures are taken by a running daemon (netwatch monitor), see --control",
    )?;
    if answer["type"] != "capture" {
        return Err(ClientError::answer(&path, &line));
    }
    writeln!(
        out,
        "capturing into {} until {}",
        escape(answer["file"].as_str().unwrap_or("-")),
        escape(answer["until"].as_str().unwrap_or("-"))
    )?;
    Ok(())
}
