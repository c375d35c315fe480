//! Signals that end a waiting command cleanly (the monitor, `mail ask`):
//! SIGTERM, SIGINT and SIGHUP are caught on a thread of their own and turned
//! into a wake-up, so the waiting loop can finish what it owes (mark offline,
//! end a wait) instead of dying mid-write.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::store::Wake;

/// Catch SIGTERM, SIGINT and SIGHUP: the returned cell holds the first one
/// that came (0: none yet), and a `Wake::Signal` is sent on `tx`.
pub fn install_signals(tx: Sender<Wake>) -> Result<Arc<AtomicI32>> {
    let signal = Arc::new(AtomicI32::new(0));
    let cell = Arc::clone(&signal);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("could not install signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            cell.store(sig, Ordering::SeqCst);
            let _ = tx.send(Wake::Signal(sig));
        }
    });
    Ok(signal)
}
