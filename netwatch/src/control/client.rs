//! The client side, for `netwatch status`, `top` and `ban`: where the daemon's socket is,
//! and a request sent to it.

use std::{
    io::{self, BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{BAN_ANSWER_TIMEOUT, PROTOCOL_VERSION, Request, write_line};
use crate::{config::ConfigError, report::escape};

/// Why a client command (`netwatch status`, `netwatch ban`) got no answer it could use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The config file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No daemon answers.
    #[error("no netwatch daemon answers on {path}: {source}; {hint}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
        /// What to do, for this command.
        hint: &'static str,
    },
    /// The daemon serves as many clients as it takes.
    #[error("the netwatch daemon on {path} is busy: {reason}")]
    Busy {
        /// The socket.
        path: PathBuf,
        /// What it said (escaped).
        reason: String,
    },
    /// The daemon refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// The daemon answered with something else than the request asks for.
    #[error("the daemon on {path} answered: {answer}")]
    Answer {
        /// The socket.
        path: PathBuf,
        /// What it said (escaped).
        answer: String,
    },
    /// Writing the answer.
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
}

impl ClientError {
    /// The daemon on `path` answered `line`, which is not what was asked for.
    pub fn answer(path: &Path, line: &str) -> Self {
        Self::Answer {
            path: path.to_owned(),
            answer: escape(line.trim_end()).into_owned(),
        }
    }
}

/// Sends `request` to the daemon at `path` and reads its one-line answer; `hint` says what
/// to do when no daemon answers. A daemon too busy to take the request says so, and that is
/// [`ClientError::Busy`].
pub fn ask(path: &Path, request: &Request, hint: &'static str) -> Result<String, ClientError> {
    let mut line = String::new();
    send(path, request)
        .and_then(|mut reader| reader.read_line(&mut line))
        .map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
            hint,
        })?;
    if let Some(reason) = busy(&line) {
        return Err(ClientError::Busy {
            path: path.to_owned(),
            reason,
        });
    }
    Ok(line)
}

/// [`ask`], and the answer parsed: the line and its JSON, or the daemon's `error` (escaped
/// where it was not) as a refusal, or a line that is no JSON as an error of its own.
pub fn ask_answer(
    path: &Path,
    request: &Request,
    hint: &'static str,
) -> Result<(String, serde_json::Value), ClientError> {
    let line = ask(path, request, hint)?;
    let answer: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| ClientError::answer(path, &line))?;
    if answer["type"] == "error" {
        return Err(ClientError::Refused(
            // The daemon escaped what it quotes; this only catches what it did not.
            crate::escape::escape_escaped(answer["error"].as_str().unwrap_or("?")).into_owned(),
        ));
    }
    Ok((line, answer))
}

/// What a `busy` answer says, escaped; `None` for any other line.
pub fn busy(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    (value["type"] == "busy")
        .then(|| escape(value["error"].as_str().unwrap_or("busy")).into_owned())
}

/// The daemon's socket for a client command: `--control` when given, else `monitor.control`
/// of the configuration file (or the default).
pub fn socket_path(
    control: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
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

/// Sends a whole `request` to the daemon at `path`; returns its connection. A daemon that
/// answered and closed before reading the request (one too busy to take it) leaves its
/// answer to be read all the same.
pub fn send(path: &Path, request: &Request) -> io::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // A status comes at once, a ban's answer within the daemon's own bound; a
    // subscription's reader clears this.
    stream.set_read_timeout(Some(BAN_ANSWER_TIMEOUT + Duration::from_secs(1)))?;
    match write_line(&mut stream, request) {
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) => {}
        other => other?,
    }
    Ok(BufReader::new(stream))
}
