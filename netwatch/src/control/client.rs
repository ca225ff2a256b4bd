//! The client side, for `netwatch status`, `top` and `ban`: where the daemon's socket is,
//! and a request sent to it.

use std::{
    io::{self, BufReader},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{BAN_ANSWER_TIMEOUT, PROTOCOL_VERSION, Request, write_line};

/// The daemon's socket for a client command: `--control` when given, else `monitor.control`
/// of the configuration file (or the default).
pub fn socket_path(
    control: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<PathBuf, crate::config::ConfigError> {
    match control {
        Some(path) => Ok(path),
        None => Ok(PathBuf::from(
            crate::config::Config::load_or_default(config)?
                .monitor
                .control,
        )),
    }
}

/// Sends `request` to the daemon at `path`; returns its connection, the request sent.
pub fn connect(path: &Path, request: &str) -> io::Result<BufReader<UnixStream>> {
    send(
        path,
        &Request {
            version: PROTOCOL_VERSION,
            request: request.to_owned(),
            ..Request::default()
        },
    )
}

/// Sends a whole `request` to the daemon at `path`; returns its connection.
pub fn send(path: &Path, request: &Request) -> io::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // A status comes at once, a ban's answer within the daemon's own bound; a
    // subscription's reader clears this.
    stream.set_read_timeout(Some(BAN_ANSWER_TIMEOUT + Duration::from_secs(1)))?;
    write_line(&mut stream, request)?;
    Ok(BufReader::new(stream))
}
