//! The listening socket ([`ControlServer`]): who may bind it, the clients it serves at
//! once, and one client's request and answer.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::{
    protocol::{
        MAX_CLIENTS, MAX_REQUEST, MAX_SUBSCRIBERS, PROTOCOL_VERSION, REQUEST_TIMEOUT, Request,
        WRITE_TIMEOUT, ban_op, busy, error, too_many_clients, too_many_subscribers, write_line,
    },
    shared::{Control, SUBSCRIBER_QUEUE},
};
use crate::report::{self};

/// Why the control socket could not be set up. Each message follows the socket's path, as in
/// `control socket PATH: has no folder`.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The path names no folder.
    #[error("has no folder")]
    NoFolder,
    /// Its folder could not be created.
    #[error("cannot create {}: {source}", .dir.display())]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The lock file `PATH.lock` could not be opened.
    #[error("cannot open its lock file: {0}")]
    LockFile(#[source] io::Error),
    /// Another daemon holds the lock, or answers on the socket.
    #[error("another netwatch is running on it (stop it, or give this one --control PATH)")]
    Running,
    /// The path is a symbolic link.
    #[error("is a symbolic link; refused")]
    Symlink,
    /// Another user owns the file at the path.
    #[error("is owned by uid {owner}, not by this user (uid {me}); refused")]
    Owner {
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The file at the path is not a socket.
    #[error("exists and is not a socket; refused")]
    NotASocket,
    /// The path names no file.
    #[error("has no file name")]
    NoFileName,
    /// Looking at the path, binding, making the socket private and renaming it into place, or
    /// starting the serving thread failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The listening socket; removed when dropped.
pub struct ControlServer {
    /// The lock on `PATH.lock`, held for the daemon's life.
    _lock: fs::File,
    control: Arc<Control>,
    path: PathBuf,
    /// The socket file's inode, so that only our own file is removed.
    inode: u64,
    stop: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds `path` (mode 0600) and serves `control` on a thread of its own. Refuses a path
    /// that is a symbolic link, that another user owns, that is not a socket, or on which
    /// another daemon answers; a socket left by a daemon that died is replaced.
    pub fn bind(path: &Path, control: Arc<Control>) -> Result<Self, BindError> {
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .ok_or(BindError::NoFolder)?;
        if !dir.exists() {
            crate::private_files::create_dir_all(dir).map_err(|source| BindError::Folder {
                dir: dir.to_owned(),
                source,
            })?;
        }
        // One daemon at a time past this point: two starting at once would both find the
        // path free, and the second's rename would take the first's socket.
        let lock = lock_beside(path)?;
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    return Err(BindError::Symlink);
                }
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    return Err(BindError::Owner {
                        owner: meta.uid(),
                        me,
                    });
                }
                if !meta.file_type().is_socket() {
                    return Err(BindError::NotASocket);
                }
                // A socket nobody answers on was left by a daemon that died: replaced below.
                if UnixStream::connect(path).is_ok() {
                    return Err(BindError::Running);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(BindError::Io(err)),
        }
        // Bound under a name of its own, made private, then renamed into place: the socket is
        // never reachable with the umask's mode.
        let file_name = path
            .file_name()
            .ok_or(BindError::NoFileName)?
            .to_string_lossy()
            .into_owned();
        let staging = dir.join(format!(".{file_name}.{}", std::process::id()));
        let _ = fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging)?;
        let placed = fs::set_permissions(&staging, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&staging, path));
        if let Err(err) = placed {
            let _ = fs::remove_file(&staging);
            return Err(BindError::Io(err));
        }
        let inode = fs::symlink_metadata(path).map(|meta| meta.ino())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let shared = Arc::clone(&control);
        thread::Builder::new()
            .name(String::from("control"))
            .spawn(move || accept(&listener, &shared, &flag))?;
        Ok(Self {
            _lock: lock,
            control,
            path: path.to_owned(),
            inode,
            stop,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Subscribers get the records queued for them (the final interval too), a second at
        // most, and then their connections close.
        self.control.close();
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.control.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which sees the flag.
        let _ = UnixStream::connect(&self.path);
        if fs::symlink_metadata(&self.path).is_ok_and(|meta| meta.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
        // The lock file stays (removing it would race a daemon starting now); the lock goes
        // with the descriptor.
    }
}

/// Takes the lock file `PATH.lock` (mode 0600), or says that another daemon holds it.
pub(super) fn lock_beside(path: &Path) -> Result<fs::File, BindError> {
    use std::os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&name)
        .map_err(BindError::LockFile)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(BindError::Running);
    }
    Ok(file)
}

pub(super) fn accept(listener: &UnixListener, control: &Arc<Control>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else {
            // Out of descriptors, say: a pause rather than a spin.
            thread::sleep(Duration::from_millis(100));
            continue;
        };
        let connected = Instant::now();
        if control.clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
            control.clients.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
            let _ = write_line(&mut stream, &busy(&too_many_clients()));
            continue;
        }
        let shared = Arc::clone(control);
        let spawned = thread::Builder::new()
            .name(String::from("control-client"))
            .spawn(move || {
                serve(stream, &shared, connected);
                shared.clients.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            control.clients.fetch_sub(1, Ordering::Relaxed);
            log::warn!("control socket: cannot start a thread for a client");
        }
    }
}

/// Why a client's request line was not read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LineError {
    /// Not whole within [`REQUEST_TIMEOUT`] of the connection, whatever trickled in.
    Late,
    /// Longer than [`MAX_REQUEST`] bytes.
    TooLong,
    /// Not UTF-8.
    NotText,
    /// The client closed before its newline, or the read failed.
    Closed,
}

impl LineError {
    fn answer(&self) -> String {
        match self {
            Self::Late => format!(
                "no whole request line within {} s of connecting",
                REQUEST_TIMEOUT.as_secs()
            ),
            Self::TooLong => format!("request line longer than {MAX_REQUEST} bytes"),
            Self::NotText => String::from("the request line is not UTF-8"),
            Self::Closed => String::from("the connection ended before a whole request line"),
        }
    }
}

/// Reads one request line (newline included) from `stream`, which must arrive whole by
/// `deadline` and within [`MAX_REQUEST`] bytes: the deadline is the connection's, not
/// restarted by each byte, so that a client dripping bytes holds its slot for a second at
/// most.
pub(super) fn read_line(stream: &mut UnixStream, deadline: Instant) -> Result<String, LineError> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LineError::Late);
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return Err(LineError::Closed);
        }
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Err(LineError::Closed),
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(LineError::Late);
            }
            Err(_) => return Err(LineError::Closed),
        };
        line.extend_from_slice(&chunk[..read]);
        if let Some(end) = line.iter().position(|&byte| byte == b'\n') {
            if end + 1 > MAX_REQUEST as usize {
                return Err(LineError::TooLong);
            }
            line.truncate(end + 1);
            return String::from_utf8(line).map_err(|_| LineError::NotText);
        }
        if line.len() >= MAX_REQUEST as usize {
            return Err(LineError::TooLong);
        }
    }
}

/// One client: its request, then the answer.
pub(super) fn serve(mut stream: UnixStream, control: &Control, connected: Instant) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let line = match read_line(&mut stream, connected + REQUEST_TIMEOUT) {
        Ok(line) => line,
        Err(err) => {
            let _ = write_line(&mut stream, &error(&err.answer()));
            return;
        }
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(err) => {
            let _ = write_line(&mut stream, &error(&format!("bad request: {err}")));
            return;
        }
    };
    if request.version != PROTOCOL_VERSION {
        let _ = write_line(
            &mut stream,
            &error(&format!(
                "protocol version {} is not spoken here; this daemon speaks {PROTOCOL_VERSION}",
                request.version
            )),
        );
        return;
    }
    match request.request.as_str() {
        "status" => {
            let _ = write_line(&mut stream, &control.status());
        }
        "subscribe" => subscription(&mut stream, control),
        "ban_add" | "ban_remove" | "ban_list" | "rule_list" | "rule_add" | "rule_remove"
        | "capture" => {
            let answer = match ban_op(&request) {
                Ok(op) => control.ban(op),
                Err(reason) => error(&reason.to_string()),
            };
            let _ = write_line(&mut stream, &answer);
        }
        other => {
            let _ = write_line(
                &mut stream,
                &error(&format!(
                    "unknown request \"{}\": status, subscribe, ban_add, ban_remove, ban_list, rule_list, rule_add, rule_remove or capture",
                    report::escape(other)
                )),
            );
        }
    }
}

/// A subscription: the hello, every record until the daemon drops the subscriber (it fell
/// behind, or the daemon stops) or the client goes away, then a last line saying which.
fn subscription(stream: &mut UnixStream, control: &Control) {
    let Some((records, counted)) = control.subscribe(MAX_SUBSCRIBERS) else {
        let _ = write_line(stream, &busy(&too_many_subscribers()));
        return;
    };
    let hello = serde_json::json!({
        "version": PROTOCOL_VERSION,
        "type": "hello",
        "pid": std::process::id(),
        "queue": SUBSCRIBER_QUEUE,
    });
    if write_line(stream, &hello).is_err() {
        return;
    }
    for record in records {
        if let Err(err) = stream.write_all(&record) {
            // A client that reads nothing for the write timeout is as far behind as one
            // whose queue is full: dropped, and counted as such. One that went away (a
            // closed connection) is not. Either way there is no one to tell.
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                control.count_dropped(
                    &counted,
                    &format!("read nothing for {} s", WRITE_TIMEOUT.as_secs()),
                );
            }
            return;
        }
    }
    // Dropped (it may subscribe again), or the daemon is stopping.
    let last = if counted.load(Ordering::Relaxed) {
        serde_json::json!({
            "version": PROTOCOL_VERSION,
            "type": "dropped",
            "reason": format!("this subscriber fell behind (over {SUBSCRIBER_QUEUE} records, or {} s without reading) and was dropped", WRITE_TIMEOUT.as_secs()),
        })
    } else {
        serde_json::json!({"version": PROTOCOL_VERSION, "type": "stopping"})
    };
    let _ = write_line(stream, &last);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client dripping a byte at a time, never a newline, is cut at the deadline counted
    /// from its connection (the timeout restarted with every byte, so it held its slot for
    /// as long as it dripped).
    #[test]
    fn a_dripping_client_is_cut_at_its_deadline() {
        let (mut daemon_end, mut client) = UnixStream::pair().unwrap();
        let dripper = thread::spawn(move || {
            for _ in 0..20 {
                if client.write_all(b"{").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let deadline = Instant::now() + Duration::from_millis(600);
        assert_eq!(read_line(&mut daemon_end, deadline), Err(LineError::Late));
        assert!(Instant::now() < deadline + Duration::from_millis(500));
        drop(daemon_end);
        dripper.join().unwrap();
    }

    #[test]
    fn long_and_binary_lines_are_told_apart() {
        let far = || Instant::now() + Duration::from_secs(5);
        let (mut daemon_end, mut client) = UnixStream::pair().unwrap();
        let mut long = vec![b'x'; MAX_REQUEST as usize];
        long.push(b'\n');
        client.write_all(&long).unwrap();
        assert_eq!(read_line(&mut daemon_end, far()), Err(LineError::TooLong));
        let (mut daemon_end, mut client) = UnixStream::pair().unwrap();
        client.write_all(b"{\"request\":\"st\xffatus\"}\n").unwrap();
        assert_eq!(read_line(&mut daemon_end, far()), Err(LineError::NotText));
        let (mut daemon_end, mut client) = UnixStream::pair().unwrap();
        let mut fits = vec![b' '; MAX_REQUEST as usize - 1];
        fits.push(b'\n');
        client.write_all(&fits).unwrap();
        assert_eq!(read_line(&mut daemon_end, far()).map(|l| l.len()), Ok(4096));
        let (mut daemon_end, client) = UnixStream::pair().unwrap();
        drop(client);
        assert_eq!(read_line(&mut daemon_end, far()), Err(LineError::Closed));
    }
}
