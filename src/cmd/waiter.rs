//! Waiting on the store: until something shows up (a reply, a delivery,
//! mail), a deadline passes, or a signal comes. Woken by the store's change
//! notification (file notification / LISTEN), with a slow poll as fallback.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::store::{Mailbox, Wake};

/// What a wait came to.
pub enum Waited<T> {
    Got(T),
    TimedOut,
    Interrupted,
}

/// Signal handlers (installed by `new`, so that a signal that comes before
/// the wait starts still ends it) and the channel that wakes the wait.
pub struct Waiter {
    tx: Sender<Wake>,
    rx: Receiver<Wake>,
    signal: Arc<AtomicI32>,
}

impl Waiter {
    pub fn new() -> Result<Waiter> {
        let (tx, rx) = channel();
        let signal = crate::signals::install_signals(tx.clone())?;
        Ok(Waiter { tx, rx, signal })
    }

    /// Look with `poll` until it finds something or `deadline` passes.
    pub fn until<T>(
        &self,
        store: &dyn Mailbox,
        deadline: Instant,
        mut poll: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Waited<T>> {
        let _subscription = store.subscribe(self.tx.clone())?;
        loop {
            if let Some(found) = poll()? {
                return Ok(Waited::Got(found));
            }
            if self.signal.load(Ordering::SeqCst) != 0 {
                return Ok(Waited::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            let _ = self
                .rx
                .recv_timeout((deadline - now).min(Duration::from_secs(1)));
        }
    }
}
