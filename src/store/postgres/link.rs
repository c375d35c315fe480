//! The monitor's dedicated connection and the thread that owns it. The
//! connection holds the session-level advisory lock that makes the mailbox
//! online, and LISTENs on the mailbox's channel and the global one; the
//! thread forwards notifications as `Wake::Change`. When the connection
//! breaks, the thread reconnects with backoff, re-takes the lock (or gives
//! the mailbox up if another monitor took it meanwhile), re-LISTENs and
//! wakes the monitor to re-scan.
//!
//! A lost connection reaches the monitor as a `Wake::Notice`, once per
//! outage; the monitor prints it with its own output. Nothing here writes
//! to stdout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::Client;
use anyhow::{Context, Result};

use super::error::{is_transient, tidy};
use super::target::Target;
use super::{GLOBAL_CHANNEL, LOCK_NS};
use crate::store::{Presence, Subscription, Wake};

/// The notice a monitor prints (once) when its database connection drops.
const LOST_NOTICE: &str = "database connection lost; reconnecting";
/// After a reconnect, how long our own old backend may still hold the lock
/// (a network cut: the server has not noticed yet) before we call it lost.
const ZOMBIE_PATIENCE: Duration = Duration::from_secs(120);
/// The notification thread's wait per round (also its stop latency).
const LISTEN_ROUND: Duration = Duration::from_millis(100);

/// Decides when the lost-connection notice is due: at most once per outage,
/// and only in a monitor (whose stdout is the agent's notification stream).
#[derive(Default)]
pub(super) struct Notice {
    /// This process runs a monitor (it claimed a mailbox).
    enabled: AtomicBool,
    /// The notification connection is down (until it reconnects).
    listen_down: AtomicBool,
    /// The query connection is down (until a query succeeds again).
    query_down: AtomicBool,
    /// When the notice was last due.
    last: Mutex<Option<Instant>>,
    /// The outage under way (some connection still down) was announced.
    announced: AtomicBool,
}

impl Notice {
    /// From now on, outages are announced (and retried for longer).
    pub(super) fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// One of the connections broke: whether to tell the monitor (not when
    /// this outage was told already). The monitor's connections break
    /// together, but the query connection only finds out at its next
    /// query, perhaps after the notification connection is back: it stays
    /// quiet within a few seconds of a notice.
    pub(super) fn lost(&self, listen: bool) -> bool {
        let (mine, other) = if listen {
            (&self.listen_down, &self.query_down)
        } else {
            (&self.query_down, &self.listen_down)
        };
        if mine.swap(true, Ordering::SeqCst) {
            return false;
        }
        // The other connection is down too and that outage was announced.
        if other.load(Ordering::SeqCst) && self.announced.load(Ordering::SeqCst) {
            return false;
        }
        if !self.enabled() {
            return false;
        }
        let mut last = lock(&self.last);
        // The query connection only finds out at its next query: soon after
        // a notice, this is most likely the same outage found late. If it is
        // a new one, the notification connection announces it.
        if !listen && last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return false;
        }
        *last = Some(Instant::now());
        self.announced.store(true, Ordering::SeqCst);
        true
    }

    pub(super) fn back(&self, listen: bool) {
        if listen {
            self.listen_down.store(false, Ordering::SeqCst);
        } else {
            self.query_down.store(false, Ordering::SeqCst);
        }
        if !self.listen_down.load(Ordering::SeqCst) && !self.query_down.load(Ordering::SeqCst) {
            self.announced.store(false, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The mailbox a monitor holds: retaken after a reconnect.
#[derive(Clone)]
pub(super) struct Held {
    pub(super) id: i64,
    pub(super) host: String,
    pub(super) pid: i64,
}

/// State shared by the store, the presence, the subscription and the thread
/// that owns the dedicated connection.
pub(super) struct Link {
    target: Arc<Target>,
    held: Option<Held>,
    /// The locked connection between `claim` and `subscribe`.
    parked: Mutex<Option<Client>>,
    stop: AtomicBool,
    changed: Arc<Changes>,
    tx: Mutex<Option<Sender<Wake>>>,
    /// Set when the mailbox cannot be held any more (taken over).
    lost: Mutex<Option<String>>,
    notice: Arc<Notice>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

enum Reconnect {
    Retry,
    Fatal(String),
}

/// What the notification thread saw since the monitor last looked.
#[derive(Default)]
pub(super) struct Changes {
    /// Anything: mail, or a session change.
    pub(super) any: AtomicBool,
    /// A session was claimed, renamed, relabelled or left (the global
    /// channel), or notifications may have been missed (a reconnect).
    pub(super) sessions: AtomicBool,
}

impl Link {
    /// A link for a monitor's claim (`held`: the lock taken on `parked`), or
    /// for a subscription without one.
    pub(super) fn new(
        target: Arc<Target>,
        held: Option<Held>,
        parked: Option<Client>,
        changed: Arc<Changes>,
        notice: Arc<Notice>,
    ) -> Arc<Link> {
        Arc::new(Link {
            target,
            held,
            parked: Mutex::new(parked),
            stop: AtomicBool::new(false),
            changed,
            tx: Mutex::new(None),
            lost: Mutex::new(None),
            notice,
            thread: Mutex::new(None),
        })
    }

    /// Send wake-ups to `tx`, and start the thread (LISTENing on `channels`
    /// before this returns) unless it runs already. `owns`: the subscription
    /// is all there is (no claim), and ending it ends the thread.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        tx: Sender<Wake>,
        channels: Vec<String>,
        owns: bool,
    ) -> Result<LinkSubscription> {
        *lock(&self.tx) = Some(tx);
        let running = lock(&self.thread).is_some();
        if !running {
            let parked = lock(&self.parked).take();
            self.start(parked, channels)?;
        }
        Ok(LinkSubscription {
            link: Arc::clone(self),
            owns,
        })
    }

    /// Why the mailbox cannot be held any more (another monitor took it).
    pub(super) fn lost_reason(&self) -> Option<String> {
        lock(&self.lost).clone()
    }

    fn send(&self, wake: Wake) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            let _ = tx.send(wake);
        }
    }

    /// One of the monitor's connections broke (`listen`: this one): tell
    /// the monitor, once per outage.
    pub(super) fn lost_connection(&self, listen: bool) {
        if self.notice.lost(listen) {
            self.send(Wake::Notice(LOST_NOTICE.to_string()));
        }
    }

    /// `sessions`: not only mail may have changed.
    fn wake(&self, sessions: bool) {
        if sessions {
            self.changed.sessions.store(true, Ordering::SeqCst);
        }
        self.changed.any.store(true, Ordering::SeqCst);
        self.send(Wake::Change);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // A connection never handed to a thread: closing it frees the lock.
        drop(lock(&self.parked).take());
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn reconnect(&self, channels: &[String], lost_since: Instant) -> Result<Client, Reconnect> {
        let mut c = self.target.connect().map_err(|_| Reconnect::Retry)?;
        if let Some(held) = &self.held {
            let got = try_lock(&mut c, held.id).map_err(|_| Reconnect::Retry)?;
            if !got {
                let row = c
                    .query_opt(
                        "SELECT host, monitor_pid, state FROM sessions WHERE id = $1",
                        &[&held.id],
                    )
                    .map_err(|_| Reconnect::Retry)?;
                let Some(row) = row else {
                    return Err(Reconnect::Fatal(
                        "this session's mailbox was removed".to_string(),
                    ));
                };
                let host: String = row.try_get(0).map_err(|_| Reconnect::Retry)?;
                let pid: Option<i64> = row.try_get(1).map_err(|_| Reconnect::Retry)?;
                let state: String = row.try_get(2).map_err(|_| Reconnect::Retry)?;
                let ours = host == held.host && pid == Some(held.pid) && state == "online";
                if ours && lost_since.elapsed() < ZOMBIE_PATIENCE {
                    // Our old backend has not noticed the cut yet.
                    return Err(Reconnect::Retry);
                }
                return Err(Reconnect::Fatal(format!(
                    "another monitor (pid {} on {host}) took this mailbox while the database connection was down",
                    pid.map_or("?".to_string(), |p| p.to_string())
                )));
            }
        }
        for ch in channels {
            c.batch_execute(&format!("LISTEN {ch}"))
                .map_err(|_| Reconnect::Retry)?;
        }
        Ok(c)
    }

    /// The thread that owns the dedicated connection: forwards notifications,
    /// and on a lost connection reconnects, re-locks and re-LISTENs.
    fn run(self: Arc<Self>, mut client: Option<Client>, channels: Vec<String>) {
        let mut delay = Duration::from_millis(100);
        let mut lost_since = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            match client.as_mut() {
                Some(c) => {
                    let got = c.notifications().timeout_iter(LISTEN_ROUND).next();
                    match got {
                        Ok(Some(first)) => {
                            let mut sessions = first.channel() == GLOBAL_CHANNEL;
                            while let Ok(Some(n)) = c.notifications().iter().next() {
                                sessions |= n.channel() == GLOBAL_CHANNEL;
                            }
                            self.wake(sessions);
                        }
                        Ok(None) if !c.is_closed() => {}
                        Ok(None) | Err(_) => {
                            if self.stop.load(Ordering::SeqCst) {
                                break;
                            }
                            client = None;
                            lost_since = Instant::now();
                            self.lost_connection(true);
                        }
                    }
                }
                None => match self.reconnect(&channels, lost_since) {
                    Ok(c) => {
                        client = Some(c);
                        self.notice.back(true);
                        delay = Duration::from_millis(100);
                        // Re-scan: mail that came while we were away.
                        self.wake(true);
                    }
                    Err(Reconnect::Retry) => {
                        let until = Instant::now() + delay;
                        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(Reconnect::Fatal(text)) => {
                        *lock(&self.lost) = Some(text);
                        self.wake(true);
                        return;
                    }
                },
            }
        }
        // Dropping the connection ends the backend and frees the lock.
        drop(client);
    }

    /// LISTEN on `channels` (before returning) and start the thread.
    fn start(self: &Arc<Self>, client: Option<Client>, channels: Vec<String>) -> Result<()> {
        let mut client = match client {
            Some(c) => Some(c),
            None => Some(
                self.target
                    .connect()
                    .map_err(|e| tidy(e.into(), &self.target.masked))?,
            ),
        };
        if let Some(c) = client.as_mut() {
            for ch in &channels {
                if let Err(e) = c.batch_execute(&format!("LISTEN {ch}")) {
                    let e = anyhow::Error::from(e);
                    if !is_transient(&e) {
                        return Err(tidy(e, &self.target.masked));
                    }
                    // The thread reconnects and re-scans.
                    client = None;
                    break;
                }
            }
        }
        let link = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("inter-session-listen".into())
            .spawn(move || link.run(client, channels))
            .context("could not start the notification thread")?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }
}

pub(super) fn try_lock(c: &mut Client, id: i64) -> std::result::Result<bool, ::postgres::Error> {
    let key = i32::try_from(id).unwrap_or(i32::MAX);
    c.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&LOCK_NS, &key])?
        .try_get(0)
}

/// Held by a running monitor: the advisory lock lives on its connection.
pub(super) struct LinkPresence(pub(super) Arc<Link>);
impl Presence for LinkPresence {}
impl Drop for LinkPresence {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Keeps notifications flowing to the monitor's channel.
pub(super) struct LinkSubscription {
    link: Arc<Link>,
    /// A subscription without a claim owns its connection.
    owns: bool,
}
impl Subscription for LinkSubscription {}
impl Drop for LinkSubscription {
    fn drop(&mut self) {
        *lock(&self.link.tx) = None;
        if self.owns {
            // Do not wait for the thread's round: the process is ending.
            self.link.stop.store(true, Ordering::SeqCst);
        }
    }
}
