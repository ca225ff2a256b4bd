//! What the readers of the store's queue share (the webhook delivery, the Kafka export): a
//! thread of their own that runs until told to stop and is joined at the stop or the drop,
//! the store opened again and again while the writer holds it, and waits that a stop cuts
//! short.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::store::Store;

/// A queue reader's thread: it is handed the stop flag, which [`Worker::stop`] (or the drop)
/// sets before joining it.
#[derive(Debug)]
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `work` on a thread named `name`.
    pub(crate) fn spawn(
        name: &str,
        work: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || work(&flag))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Asks the thread to stop and waits for it.
    pub(crate) fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The store at `db`, for `who` to read its queue: the store may be held by the writer alone
/// for a while (opened on a full disk), so it is tried again every few seconds, said once;
/// `None` when stopped meanwhile.
pub(crate) fn open_queue(db: &Path, who: &str, stop: &AtomicBool) -> Option<Store> {
    let mut said = false;
    loop {
        match Store::open(db) {
            Ok(store) => return Some(store),
            Err(err) => {
                if !said {
                    log::error!(
                        "{who} cannot open the queue: {err}; tried again every 5 s, nothing queued is lost"
                    );
                    said = true;
                }
                if wait(Duration::from_secs(5), stop) {
                    return None;
                }
            }
        }
    }
}

/// Sleeps `total` unless stopped meanwhile; true when stopped.
pub(crate) fn wait(total: Duration, stop: &AtomicBool) -> bool {
    let mut left = total;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = left.min(Duration::from_millis(100));
        thread::sleep(step);
        left -= step;
    }
    stop.load(Ordering::Relaxed)
}
