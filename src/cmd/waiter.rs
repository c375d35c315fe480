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
        poll: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Waited<T>> {
        self.until_with(store, deadline, false, poll)
    }

    /// `until`, woken by mail to anyone (`history --follow`), not only by
    /// this process's own mailboxes.
    pub fn until_any<T>(
        &self,
        store: &dyn Mailbox,
        deadline: Instant,
        poll: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Waited<T>> {
        self.until_with(store, deadline, true, poll)
    }

    fn until_with<T>(
        &self,
        store: &dyn Mailbox,
        deadline: Instant,
        all: bool,
        mut poll: impl FnMut() -> Result<Option<T>>,
    ) -> Result<Waited<T>> {
        let tx = self.tx.clone();
        let _subscription = if all {
            store.subscribe_all(tx)?
        } else {
            store.subscribe(tx)?
        };
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
