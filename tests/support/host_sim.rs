//! A simulator of Claude Code 2.1.332's `Monitor` tool, for integration tests.
//!
//! It runs a real child process (the test builds the `Command`; usually the
//! real `inter-session inbox watch` binary) the way the host does — stdout
//! piped, stdin from `/dev/null`, in its own process group — timestamps every
//! stdout line as it arrives and applies the host's rules (SPEC §9) to decide
//! what "the model" receives. It does not escape `<`, `>`, `&` (the host does
//! that after the cuts, so it changes no count), does not wrap events in
//! `<task-notification>`, and ignores the host's handling of its own internal
//! tags and of a partial line over 1 MiB.
//!
//! # The rules, as the host's code applies them
//!
//! - **Batching**: a notification opens at the first non-blank line read
//!   while none is open and takes every line read within
//!   [`BATCH_WINDOW_MS`] of that first line (a fixed window, not a sliding
//!   one); then it closes and is offered to the bucket.
//! - **Cuts**: each line is trimmed (JavaScript `trim`) and dropped if blank;
//!   a line longer than [`LINE_CUT_UNITS`] UTF-16 code units keeps its first
//!   500 units plus [`LINE_CUT_SUFFIX`]; the lines joined by `\n`, if longer
//!   than [`NOTIFICATION_CUT_UNITS`], keep their first 3,000 units plus
//!   [`NOTIFICATION_CUT_SUFFIX`]. Units are counted before any escaping.
//! - **Token bucket**: [`BUCKET_CAPACITY`] tokens, starting full at spawn;
//!   `floor(elapsed / REFILL_MS)` whole tokens are added when it is looked at
//!   (its clock advances by whole refill periods, even while full). A closing
//!   notification that finds a token spends it and is delivered; one that
//!   finds none is **dropped** (its lines never reach the model). The next one
//!   delivered is preceded by its own notice
//!   `[N events suppressed — output rate too high. …]`.
//! - **Suppression streak**: starts at the first drop. It ends when a
//!   notification closes more than [`STREAK_QUIET_RESET_MS`] (3 × refill)
//!   after the previous one, or finds the bucket full. A delivery does not
//!   end it. When a notification is dropped more than [`STREAK_KILL_MS`] after
//!   the streak began, the monitor is killed (`killed_for_rate`,
//!   `[Monitor stopped — too much output …]`).
//! - **Expiry** (`SimConfig::expiry`, capped at [`MAX_EXPIRY_MS`] like
//!   `timeout_ms`): the open notification is closed at once and offered to the
//!   bucket, the model gets `[Monitor expired after …]`, the group gets
//!   SIGTERM, and SIGKILL [`SIGKILL_GRACE_MS`] later if the child is still
//!   alive. Nothing read after the SIGTERM reaches the model (it is kept in
//!   `after_sigterm`). The rate kill ends the monitor the same way.
//! - **Exit on its own**: at end of stdout the open notification (with an
//!   unterminated last line) is closed at once, without waiting for the window.
//!
//! # API
//!
//! ```ignore
//! let mut cmd = Command::new(env!("CARGO_BIN_EXE_inter-session"));
//! cmd.args(["inbox", "watch"]);
//! let sim = HostSim::spawn(cmd, SimConfig { expiry: Some(Duration::from_secs(20)) })?;
//! assert!(sim.wait_for(Duration::from_secs(5), |lines| lines.iter().any(|l| l.contains("msg="))));
//! let report = sim.stop(); // or sim.wait_exit(timeout)
//! assert_eq!(report.suppressed, 0);
//! ```
//!
//! - [`HostSim::spawn`]`(Command, SimConfig)`: starts the child (the
//!   simulator sets stdin, stdout and the process group; stderr is left as the
//!   command has it).
//! - [`HostSim::wait_for`]`(timeout, pred)`: blocks until `pred(model lines so
//!   far)` holds or the timeout passes (or the monitor ended); no polling.
//!   [`HostSim::wait_for_raw`] does the same on the raw stdout lines.
//! - [`HostSim::model_lines`], [`HostSim::snapshot`], [`HostSim::pid`].
//! - [`HostSim::stop`]: an expiry now (close the open notification, SIGTERM,
//!   SIGKILL after 1.5 s), waits for the end, returns the [`SimReport`].
//! - [`HostSim::wait_exit`]`(timeout)`: waits for the child to exit on its own;
//!   if it has not by then, stops it as `stop` does and sets `timed_out`.
//! - Dropping a `HostSim` without either SIGKILLs the group.
//!
//! The constants are `pub` so a unit test can pin them against the product's
//! own pacer constants (`src/pace.rs`, `HOST_*`). The rules above were read
//! from the Monitor code in the 2.1.331 bundle (`@anthropic-ai/claude-code-linux-x64`;
//! unchanged in 2.1.332, SPEC §9),
//! and agree with SPEC §9's measurements (1 notification a second starts
//! dropping after about 20 s and is killed at about 51 s: see the tests).
//! The host runs the command under `bash -c`; the simulator runs the
//! `Command` as given (wrap it in `bash -c` to match exactly).
//!
//! This file's own tests that run real processes only run in a test crate
//! named `host_sim_selftest` (or with `HOST_SIM_SELFTEST=1`), so every other
//! integration test that includes this module does not repeat them; the
//! fake-clock tests run everywhere.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Lines read within this long of a notification's first line join it.
pub const BATCH_WINDOW_MS: u64 = 200;
/// A line longer than this many UTF-16 code units is cut to this many.
pub const LINE_CUT_UNITS: usize = 500;
/// A notification longer than this many UTF-16 code units is cut to this many.
pub const NOTIFICATION_CUT_UNITS: usize = 3000;
/// Tokens in the bucket, and at spawn.
pub const BUCKET_CAPACITY: u32 = 10;
/// One token is added every this many milliseconds.
pub const REFILL_MS: u64 = 2000;
/// A suppression streak older than this when a notification is dropped kills the monitor.
pub const STREAK_KILL_MS: u64 = 30_000;
/// A notification closing more than this after the previous one ends a streak.
pub const STREAK_QUIET_RESET_MS: u64 = 6000;
/// SIGKILL follows SIGTERM after this long if the child is still alive.
pub const SIGKILL_GRACE_MS: u64 = 1500;
/// The longest `timeout_ms` the host accepts (a longer one is capped).
pub const MAX_EXPIRY_MS: u64 = 600_000;
/// Appended to a line cut at [`LINE_CUT_UNITS`].
pub const LINE_CUT_SUFFIX: &str = "...(truncated)";
/// Appended to a notification cut at [`NOTIFICATION_CUT_UNITS`].
pub const NOTIFICATION_CUT_SUFFIX: &str = "\n...(truncated)";

// The host computes the quiet gap as three refill periods.
const _: () = assert!(STREAK_QUIET_RESET_MS == 3 * REFILL_MS);

/// How the simulated `Monitor` call was made.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// The Monitor's `timeout_ms`: the host expires the monitor this long
    /// after it starts (capped at [`MAX_EXPIRY_MS`]). `None`: never.
    pub expiry: Option<Duration>,
}

/// One notification as the host closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// When its first line was read (since spawn).
    pub opened: Duration,
    /// When it closed and was offered to the bucket (since spawn).
    pub at: Duration,
    /// Its lines after the cuts (what the model got, or would have got).
    pub lines: Vec<String>,
    /// It found a token; `false`: dropped, the model never saw it.
    pub delivered: bool,
    /// A line of it, or the whole, was cut.
    pub clipped: bool,
    /// How many of its lines were cut at [`LINE_CUT_UNITS`].
    pub clipped_lines: usize,
    /// The `[N events suppressed …]` notice that went just before it (N, or 0).
    pub suppressed_before: usize,
}

/// What kind of event reached the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A notification of the monitor's own lines.
    Output,
    /// A notice from the host: events suppressed, monitor stopped or expired.
    Notice,
}

/// One event the model received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEvent {
    pub at: Duration,
    pub kind: EventKind,
    pub text: String,
}

/// Everything the simulator saw and decided.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Every notification closed, delivered or dropped, in order.
    pub notifications: Vec<Notification>,
    /// Lines of delivered notifications, in order (notices not included).
    pub model_lines: Vec<String>,
    /// Everything the model received, notices included, in order.
    pub model_events: Vec<ModelEvent>,
    /// The host's notices only (suppressed, stopped, expired), in order.
    pub notices: Vec<String>,
    /// Notifications dropped for want of a token.
    pub suppressed: usize,
    /// Notifications (delivered or not) with a line or the whole cut.
    pub clipped: usize,
    /// Lines cut at [`LINE_CUT_UNITS`].
    pub clipped_lines: usize,
    /// The host killed the monitor after a suppression streak over 30 s.
    pub killed_for_rate: bool,
    /// The monitor expired (`SimConfig::expiry`, or `stop`).
    pub expired: bool,
    /// Raw lines read after the SIGTERM was sent: they never reach the model.
    pub after_sigterm: Vec<String>,
    /// When the SIGTERM was sent (since spawn).
    pub sigterm_at: Option<Duration>,
    /// SIGKILL had to follow the SIGTERM.
    pub sigkill_sent: bool,
    /// The child's exit status (None while it runs, or if it could not be had).
    pub exit_status: Option<ExitStatus>,
    /// When the child was seen to exit (since spawn).
    pub exited_at: Option<Duration>,
    /// `wait_exit` ran out of time and stopped the child.
    pub timed_out: bool,
    /// Every stdout line as read (untrimmed, blank ones too), with its time since spawn.
    pub raw: Vec<(Duration, String)>,
}

impl SimReport {
    /// The delivered notifications.
    pub fn delivered(&self) -> impl Iterator<Item = &Notification> + '_ {
        self.notifications.iter().filter(|n| n.delivered)
    }

    /// The dropped notifications.
    pub fn dropped(&self) -> impl Iterator<Item = &Notification> + '_ {
        self.notifications.iter().filter(|n| !n.delivered)
    }

    /// Everything the model received as one text, one event a paragraph.
    pub fn transcript(&self) -> String {
        let events: Vec<&str> = self.model_events.iter().map(|e| e.text.as_str()).collect();
        events.join("\n\n")
    }
}

/// Length in UTF-16 code units, as the host (JavaScript `.length`) counts.
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `s` cut to `max` UTF-16 code units with `suffix` appended, as the host
/// does, and whether it was cut. A surrogate pair split by the cut leaves a
/// U+FFFD (the host would leave a lone surrogate: same length).
pub fn cut_units(s: &str, max: usize, suffix: &str) -> (String, bool) {
    let units: Vec<u16> = s.encode_utf16().collect();
    if units.len() <= max {
        return (s.to_string(), false);
    }
    let mut cut = String::from_utf16_lossy(&units[..max]);
    cut.push_str(suffix);
    (cut, true)
}

/// JavaScript's `String.prototype.trim`: its whitespace is not Rust's
/// (U+FEFF is, U+0085 is not).
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// The notice before the next delivered notification after drops.
pub fn suppressed_notice(n: usize) -> String {
    format!(
        "[{n} events suppressed \u{2014} output rate too high. Consider using TaskStop to restart this monitor with a more selective filter.]"
    )
}

fn rate_kill_notice(n: usize, streak: Duration) -> String {
    let secs = (streak.as_millis() + 500) / 1000;
    format!(
        "[Monitor stopped \u{2014} too much output ({n} events suppressed over {secs}s). Restart with a more selective source.]"
    )
}

/// The expiry notice (the duration's format is approximate).
fn expiry_notice(after: Duration, delivered: usize) -> String {
    let secs = (after.as_millis() + 500) / 1000;
    let after = match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m {s}s"),
    };
    let rearm = "Re-arm it if you still need the watch";
    match delivered {
        0 => format!(
            "[Monitor expired after {after} with no events delivered. {rearm} \u{2014} and widen the filter if silence was unexpected.]"
        ),
        1 => format!("[Monitor expired after {after} with 1 event delivered. {rearm}.]"),
        n => format!("[Monitor expired after {after} with {n} events delivered. {rearm}.]"),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The host's token bucket: lazily refilled by whole periods.
#[derive(Debug)]
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl Bucket {
    fn new(at: Instant) -> Bucket {
        Bucket {
            tokens: BUCKET_CAPACITY,
            last: at,
        }
    }

    fn refill(&mut self, now: Instant) {
        let periods = now.saturating_duration_since(self.last).as_millis() / u128::from(REFILL_MS);
        if periods > 0 {
            let periods = u64::try_from(periods).unwrap_or(u64::MAX / REFILL_MS);
            let added = u32::try_from(periods).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(added).min(BUCKET_CAPACITY);
            self.last += ms(periods * REFILL_MS);
        }
    }

    fn tokens(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens
    }

    fn try_consume(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Batch {
    opened: Instant,
    lines: Vec<String>,
    clipped_lines: usize,
}

/// The host's decisions, as a state machine driven by the caller's clock:
/// no I/O, so it can be tested with made-up instants. Signals it wants sent
/// to the group are queued in `signals`.
#[derive(Debug)]
struct Host {
    t0: Instant,
    expiry_at: Option<Instant>,
    expiry_fired: bool,
    batch: Option<Batch>,
    bucket: Bucket,
    streak_start: Option<Instant>,
    last_batch_at: Instant,
    suppressed_pending: usize,
    delivered_count: usize,
    terminated_at: Option<Instant>,
    kill_at: Option<Instant>,
    sigkill_sent: bool,
    exited_at: Option<Instant>,
    exit_status: Option<ExitStatus>,
    eof: bool,
    finished: bool,
    timed_out: bool,
    signals: Vec<libc::c_int>,
    notifications: Vec<Notification>,
    model_lines: Vec<String>,
    model_events: Vec<ModelEvent>,
    suppressed: usize,
    killed_for_rate: bool,
    expired: bool,
    after_sigterm: Vec<String>,
    raw: Vec<(Duration, String)>,
}

impl Host {
    fn new(t0: Instant, expiry: Option<Duration>) -> Host {
        Host {
            t0,
            expiry_at: expiry.map(|d| t0 + d.min(ms(MAX_EXPIRY_MS))),
            expiry_fired: false,
            batch: None,
            bucket: Bucket::new(t0),
            streak_start: None,
            last_batch_at: t0,
            suppressed_pending: 0,
            delivered_count: 0,
            terminated_at: None,
            kill_at: None,
            sigkill_sent: false,
            exited_at: None,
            exit_status: None,
            eof: false,
            finished: false,
            timed_out: false,
            signals: Vec::new(),
            notifications: Vec::new(),
            model_lines: Vec::new(),
            model_events: Vec::new(),
            suppressed: 0,
            killed_for_rate: false,
            expired: false,
            after_sigterm: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn since(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.t0)
    }

    fn batch_deadline(&self) -> Option<Instant> {
        self.batch.as_ref().map(|b| b.opened + ms(BATCH_WINDOW_MS))
    }

    fn expiry_deadline(&self) -> Option<Instant> {
        match (self.expiry_fired, self.terminated_at) {
            (false, None) => self.expiry_at,
            _ => None,
        }
    }

    fn kill_deadline(&self) -> Option<Instant> {
        match (self.sigkill_sent, self.exited_at) {
            (false, None) => self.kill_at,
            _ => None,
        }
    }

    /// The next instant at which a timer fires, if any.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.batch_deadline(),
            self.expiry_deadline(),
            self.kill_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every timer due at or before `now`, each at its own instant.
    fn advance(&mut self, now: Instant) {
        loop {
            let due = |t: Option<Instant>| t.filter(|t| *t <= now);
            let (batch, expiry, kill) = (
                due(self.batch_deadline()),
                due(self.expiry_deadline()),
                due(self.kill_deadline()),
            );
            let Some(first) = [batch, expiry, kill].into_iter().flatten().min() else {
                return;
            };
            if batch == Some(first) {
                self.close_batch(first, true);
            } else if expiry == Some(first) {
                self.expire(first);
            } else {
                self.sigkill_sent = true;
                self.signals.push(libc::SIGKILL);
            }
        }
    }

    /// A complete stdout line read at `at` (without its `\n`).
    fn on_line(&mut self, at: Instant, raw: String) {
        self.raw.push((self.since(at), raw.clone()));
        if self.terminated_at.is_some() {
            self.after_sigterm.push(raw);
            return;
        }
        let line = js_trim(&raw);
        if line.is_empty() {
            return;
        }
        let (line, cut) = cut_units(line, LINE_CUT_UNITS, LINE_CUT_SUFFIX);
        let batch = self.batch.get_or_insert_with(|| Batch {
            opened: at,
            lines: Vec::new(),
            clipped_lines: 0,
        });
        batch.lines.push(line);
        if cut {
            batch.clipped_lines += 1;
        }
    }

    /// End of stdout at `at`, with the unterminated last line if any: the
    /// host drains its batch at once (no window, no rate kill).
    fn on_eof(&mut self, at: Instant, partial: Option<String>) {
        if let Some(line) = partial {
            self.on_line(at, line);
        }
        self.eof = true;
        if self.terminated_at.is_none() {
            self.close_batch(at, false);
        }
    }

    fn on_exit(&mut self, at: Instant, status: Option<ExitStatus>) {
        self.exited_at = Some(at);
        self.exit_status = status;
    }

    /// An expiry now (what `HostSim::stop` does).
    fn stop_now(&mut self, at: Instant) {
        if self.terminated_at.is_none() {
            self.expire(at);
        }
    }

    /// Ends the monitor now without ceremony (a test is being torn down).
    fn abort(&mut self, at: Instant) {
        if self.terminated_at.is_none() {
            self.terminated_at = Some(at);
        }
        if self.exited_at.is_none() && !self.sigkill_sent {
            self.sigkill_sent = true;
            self.signals.push(libc::SIGKILL);
        }
    }

    fn ready_to_finish(&self) -> bool {
        self.exited_at.is_some() && (self.eof || self.terminated_at.is_some())
    }

    fn finish(&mut self) {
        // The leader is gone; anything left in its group after a SIGTERM is
        // not given the rest of the grace period (not counted as the host's
        // SIGKILL: `sigkill_sent` is about the child).
        if self.terminated_at.is_some() && !self.sigkill_sent {
            self.signals.push(libc::SIGKILL);
        }
        self.batch = None;
        self.finished = true;
    }

    fn notice(&mut self, at: Instant, text: String) {
        self.model_events.push(ModelEvent {
            at: self.since(at),
            kind: EventKind::Notice,
            text,
        });
    }

    fn terminate(&mut self, at: Instant) {
        self.terminated_at = Some(at);
        self.signals.push(libc::SIGTERM);
        self.kill_at = Some(at + ms(SIGKILL_GRACE_MS));
    }

    fn expire(&mut self, at: Instant) {
        self.expiry_fired = true;
        if self.terminated_at.is_some() {
            return;
        }
        self.close_batch(at, true);
        if self.terminated_at.is_some() {
            return;
        }
        self.expired = true;
        let after = match self.expiry_at {
            Some(t) if t <= at => t - self.t0,
            _ => self.since(at),
        };
        self.notice(at, expiry_notice(after, self.delivered_count));
        self.terminate(at);
    }

    /// Closes the open notification at `at` and offers it to the bucket.
    fn close_batch(&mut self, at: Instant, may_kill: bool) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let (text, cut) = cut_units(
            &batch.lines.join("\n"),
            NOTIFICATION_CUT_UNITS,
            NOTIFICATION_CUT_SUFFIX,
        );
        let mut notification = Notification {
            opened: self.since(batch.opened),
            at: self.since(at),
            lines: text.split('\n').map(str::to_string).collect(),
            delivered: false,
            clipped: cut || batch.clipped_lines > 0,
            clipped_lines: batch.clipped_lines,
            suppressed_before: 0,
        };
        if at.saturating_duration_since(self.last_batch_at) > ms(STREAK_QUIET_RESET_MS)
            || self.bucket.tokens(at) == BUCKET_CAPACITY
        {
            self.streak_start = None;
        }
        self.last_batch_at = at;
        if self.bucket.try_consume(at) {
            if self.suppressed_pending > 0 {
                self.notice(at, suppressed_notice(self.suppressed_pending));
                notification.suppressed_before = self.suppressed_pending;
                self.suppressed_pending = 0;
            }
            self.delivered_count += 1;
            notification.delivered = true;
            self.model_lines.extend(notification.lines.iter().cloned());
            self.model_events.push(ModelEvent {
                at: notification.at,
                kind: EventKind::Output,
                text,
            });
            self.notifications.push(notification);
            return;
        }
        self.suppressed_pending += 1;
        self.suppressed += 1;
        self.notifications.push(notification);
        let streak_start = *self.streak_start.get_or_insert(at);
        let streak = at.saturating_duration_since(streak_start);
        if may_kill && streak > ms(STREAK_KILL_MS) {
            self.killed_for_rate = true;
            self.notice(at, rate_kill_notice(self.suppressed_pending, streak));
            self.terminate(at);
        }
    }

    fn report(&self) -> SimReport {
        let notifications = self.notifications.clone();
        SimReport {
            clipped: notifications.iter().filter(|n| n.clipped).count(),
            clipped_lines: notifications.iter().map(|n| n.clipped_lines).sum(),
            notifications,
            model_lines: self.model_lines.clone(),
            notices: self
                .model_events
                .iter()
                .filter(|e| e.kind == EventKind::Notice)
                .map(|e| e.text.clone())
                .collect(),
            model_events: self.model_events.clone(),
            suppressed: self.suppressed,
            killed_for_rate: self.killed_for_rate,
            expired: self.expired,
            after_sigterm: self.after_sigterm.clone(),
            sigterm_at: self.terminated_at.map(|t| self.since(t)),
            sigkill_sent: self.sigkill_sent,
            exit_status: self.exit_status,
            exited_at: self.exited_at.map(|t| self.since(t)),
            timed_out: self.timed_out,
            raw: self.raw.clone(),
        }
    }
}

struct Shared {
    host: Mutex<Host>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Host> {
        self.host.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends the signals the host queued to the child's process group.
fn send_signals(host: &mut Host, pgid: libc::pid_t) {
    for sig in host.signals.drain(..) {
        signal_group(pgid, sig);
    }
}

fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    // Never 0 or 1: killpg(0) is our own group, 1 is init's.
    if pgid > 1 {
        // SAFETY: killpg has no memory effects; ESRCH (group gone) is fine.
        unsafe {
            libc::killpg(pgid, sig);
        }
    }
}

fn wake(tx: &UnixStream) {
    // Non-blocking: a full pipe already holds a wake-up.
    let _ = (&*tx).write(&[1]);
}

/// A running monitor under the simulated host.
pub struct HostSim {
    shared: Arc<Shared>,
    pgid: libc::pid_t,
    wake_tx: UnixStream,
    threads: Vec<JoinHandle<()>>,
}

impl HostSim {
    /// Starts `cmd` as the host starts a monitor: stdout piped, stdin from
    /// `/dev/null`, in a new process group. Time 0 of the report is now.
    pub fn spawn(mut cmd: Command, cfg: SimConfig) -> io::Result<HostSim> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        let waiter_wake = wake_tx.try_clone()?;
        let mut child = cmd.spawn()?;
        let t0 = Instant::now();
        let pgid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("host_sim: child stdout is not piped"));
        };
        let shared = Arc::new(Shared {
            host: Mutex::new(Host::new(t0, cfg.expiry)),
            changed: Condvar::new(),
        });
        let mut sim = HostSim {
            shared: Arc::clone(&shared),
            pgid,
            wake_tx,
            threads: Vec::new(),
        };
        // From here on, an error drops `sim`, which kills the group; the
        // waiter must exist to reap the child, so it goes first.
        let waiter_shared = Arc::clone(&shared);
        let waiter = thread::Builder::new()
            .name("host-sim-wait".into())
            .spawn(move || {
                let status = child.wait().ok();
                let mut host = waiter_shared.lock();
                host.on_exit(Instant::now(), status);
                send_signals(&mut host, pgid);
                drop(host);
                waiter_shared.changed.notify_all();
                wake(&waiter_wake);
            });
        match waiter {
            Ok(handle) => sim.threads.push(handle),
            Err(e) => {
                // The child went with the closure, unreaped: kill its group.
                signal_group(pgid, libc::SIGKILL);
                return Err(e);
            }
        }
        let host_shared = Arc::clone(&shared);
        let reader = thread::Builder::new()
            .name("host-sim-read".into())
            .spawn(move || host_loop(&host_shared, stdout, &wake_rx, pgid))?;
        sim.threads.push(reader);
        Ok(sim)
    }

    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pgid).unwrap_or_default()
    }

    /// Blocks until `pred(lines the model has received so far)` holds, the
    /// timeout passes or the monitor has ended; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        self.wait_until(timeout, |host| pred(&host.model_lines))
    }

    /// As [`HostSim::wait_for`], on the raw stdout lines read so far
    /// (whether or not they reached the model).
    pub fn wait_for_raw(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        self.wait_until(timeout, |host| {
            let raw: Vec<String> = host.raw.iter().map(|(_, l)| l.clone()).collect();
            pred(&raw)
        })
    }

    fn wait_until(&self, timeout: Duration, pred: impl Fn(&Host) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut host = self.shared.lock();
        loop {
            if pred(&host) {
                return true;
            }
            let now = Instant::now();
            if host.finished || now >= deadline {
                return false;
            }
            host = self
                .shared
                .changed
                .wait_timeout(host, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The lines the model has received so far.
    pub fn model_lines(&self) -> Vec<String> {
        self.shared.lock().model_lines.clone()
    }

    /// The report so far, while the monitor runs.
    pub fn snapshot(&self) -> SimReport {
        self.shared.lock().report()
    }

    /// Expires the monitor now, as the host does (the open notification is
    /// closed and offered to the bucket, SIGTERM to the group, SIGKILL 1.5 s
    /// later if needed), waits for it to end and returns the report.
    pub fn stop(mut self) -> SimReport {
        {
            let mut host = self.shared.lock();
            let now = Instant::now();
            host.advance(now);
            host.stop_now(now);
            send_signals(&mut host, self.pgid);
        }
        self.shared.changed.notify_all();
        wake(&self.wake_tx);
        self.finish()
    }

    /// Waits up to `timeout` for the child to exit on its own (and its stdout
    /// to close), then returns the report; past the timeout it stops the
    /// child as [`HostSim::stop`] does and sets `timed_out`.
    pub fn wait_exit(mut self, timeout: Duration) -> SimReport {
        let deadline = Instant::now() + timeout;
        {
            let mut host = self.shared.lock();
            loop {
                if host.finished {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    host.timed_out = true;
                    host.advance(now);
                    host.stop_now(now);
                    send_signals(&mut host, self.pgid);
                    break;
                }
                host = self
                    .shared
                    .changed
                    .wait_timeout(host, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        self.shared.changed.notify_all();
        wake(&self.wake_tx);
        self.finish()
    }

    /// Waits for the host thread to finish (the SIGKILL bounds it), joins
    /// the threads and reports.
    fn finish(&mut self) -> SimReport {
        const LIMIT: Duration = Duration::from_secs(30);
        let deadline = Instant::now() + ms(SIGKILL_GRACE_MS) + LIMIT;
        {
            let mut host = self.shared.lock();
            while !host.finished {
                let now = Instant::now();
                assert!(
                    now < deadline,
                    "host_sim: monitor (pid {}) did not end within {LIMIT:?} after SIGKILL",
                    self.pgid
                );
                host = self
                    .shared
                    .changed
                    .wait_timeout(host, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        self.shared.lock().report()
    }
}

impl Drop for HostSim {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        {
            let mut host = self.shared.lock();
            host.abort(Instant::now());
            send_signals(&mut host, self.pgid);
        }
        wake(&self.wake_tx);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Rounds up to whole milliseconds, so a wait never ends just short of a
/// deadline and spins.
fn poll_timeout(d: Option<Duration>) -> libc::c_int {
    match d {
        None => -1,
        Some(d) => libc::c_int::try_from(d.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX),
    }
}

/// The host's side: reads the child's stdout, timestamps lines and fires the
/// host's timers, until the child has exited and its stdout is done with.
fn host_loop(shared: &Shared, stdout: ChildStdout, wake_rx: &UnixStream, pgid: libc::pid_t) {
    let mut stdout = Some(stdout);
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let (done, timeout) = {
            let mut host = shared.lock();
            let now = Instant::now();
            host.advance(now);
            let done = host.ready_to_finish();
            if done {
                host.finish();
            }
            send_signals(&mut host, pgid);
            let next = host.next_deadline();
            (done, next.map(|t| t.saturating_duration_since(now)))
        };
        shared.changed.notify_all();
        if done {
            return;
        }
        let mut fds = [
            libc::pollfd {
                fd: wake_rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // poll ignores a negative fd.
                fd: stdout.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of 2 pollfd for the whole call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, poll_timeout(timeout)) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Not expected; treat it as the end of stdout rather than spin.
            end_of_stdout(shared, &mut stdout, &mut partial, pgid);
            continue;
        }
        if fds[0].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&*wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        }
        if fds[1].revents == 0 {
            continue;
        }
        let Some(out) = stdout.as_mut() else {
            continue;
        };
        match out.read(&mut buf) {
            Ok(0) => end_of_stdout(shared, &mut stdout, &mut partial, pgid),
            Ok(n) => {
                let now = Instant::now();
                partial.extend_from_slice(&buf[..n]);
                let mut lines = Vec::new();
                let mut start = 0;
                for (i, b) in partial.iter().enumerate() {
                    if *b == b'\n' {
                        lines.push(String::from_utf8_lossy(&partial[start..i]).into_owned());
                        start = i + 1;
                    }
                }
                partial.drain(..start);
                if !lines.is_empty() {
                    let mut host = shared.lock();
                    host.advance(now);
                    for line in lines {
                        host.on_line(now, line);
                    }
                    send_signals(&mut host, pgid);
                    drop(host);
                    shared.changed.notify_all();
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(_) => end_of_stdout(shared, &mut stdout, &mut partial, pgid),
        }
    }
}

fn end_of_stdout(
    shared: &Shared,
    stdout: &mut Option<ChildStdout>,
    partial: &mut Vec<u8>,
    pgid: libc::pid_t,
) {
    let now = Instant::now();
    *stdout = None;
    let last = (!partial.is_empty()).then(|| String::from_utf8_lossy(partial).into_owned());
    partial.clear();
    let mut host = shared.lock();
    host.advance(now);
    host.on_eof(now, last);
    send_signals(&mut host, pgid);
    drop(host);
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- fake clock: the host's rules, exactly and fast ----

    fn host() -> Host {
        Host::new(Instant::now(), None)
    }

    fn t(h: &Host, millis: u64) -> Instant {
        h.t0 + ms(millis)
    }

    /// One line at each of `times` (ms), advancing the clock before each.
    fn feed(h: &mut Host, times: impl IntoIterator<Item = u64>) {
        for (i, at) in times.into_iter().enumerate() {
            let at = t(h, at);
            h.advance(at);
            h.on_line(at, format!("line {i}"));
        }
    }

    #[test]
    fn lone_line_is_delivered_when_the_window_ends() {
        let mut h = host();
        feed(&mut h, [100]);
        h.advance(t(&h, 299));
        assert!(h.notifications.is_empty());
        h.advance(t(&h, 300));
        let r = h.report();
        assert_eq!(r.notifications.len(), 1);
        assert_eq!(r.notifications[0].at, ms(300));
        assert_eq!(r.notifications[0].opened, ms(100));
        assert_eq!(r.model_lines, ["line 0"]);
    }

    #[test]
    fn window_is_fixed_from_the_first_line() {
        let mut h = host();
        feed(&mut h, [0, 150, 199, 200, 350, 401]);
        h.advance(t(&h, 10_000));
        let lines: Vec<Vec<String>> = h.notifications.iter().map(|n| n.lines.clone()).collect();
        assert_eq!(
            lines,
            [
                vec!["line 0", "line 1", "line 2"],
                vec!["line 3", "line 4"],
                vec!["line 5"]
            ]
        );
    }

    #[test]
    fn lines_are_trimmed_and_blank_ones_dropped() {
        let mut h = host();
        let at = t(&h, 0);
        for raw in ["  a \r", "", " \t ", "\u{feff}b\u{a0}", "\u{85}c"] {
            h.on_line(at, raw.to_string());
        }
        h.advance(t(&h, 200));
        // U+0085 is whitespace to Rust but not to JavaScript.
        assert_eq!(h.model_lines, ["a", "b", "\u{85}c"]);
        assert_eq!(h.raw.len(), 5);
    }

    #[test]
    fn blank_line_does_not_open_a_notification() {
        let mut h = host();
        h.on_line(t(&h, 0), "   ".into());
        feed(&mut h, [150]);
        h.advance(t(&h, 349));
        assert!(
            h.notifications.is_empty(),
            "window opened at the blank line"
        );
        h.advance(t(&h, 350));
        assert_eq!(h.notifications.len(), 1);
    }

    #[test]
    fn cuts_count_utf16_units() {
        let emoji = "\u{1F600}";
        let ok = emoji.repeat(250);
        assert_eq!(utf16_len(&ok), 500);
        assert_eq!(cut_units(&ok, 500, "~"), (ok.clone(), false));
        let (cut, was) = cut_units(&emoji.repeat(300), 500, LINE_CUT_SUFFIX);
        assert!(was);
        assert_eq!(cut, format!("{}{LINE_CUT_SUFFIX}", emoji.repeat(250)));
        // A cut through a surrogate pair keeps the length.
        let (cut, _) = cut_units(&format!("a{}", emoji.repeat(300)), 500, "");
        assert_eq!(utf16_len(&cut), 500);
        assert!(cut.ends_with('\u{fffd}'));
        let cjk = "\u{6f22}".repeat(500);
        assert_eq!(cut_units(&cjk, 500, "~"), (cjk.clone(), false));
    }

    #[test]
    fn long_line_and_long_notification_are_clipped() {
        let mut h = host();
        let at = t(&h, 0);
        h.on_line(at, "x".repeat(600));
        h.advance(t(&h, 1000));
        let at = t(&h, 1000);
        for i in 0..8 {
            h.on_line(at, format!("{i}{}", "y".repeat(449)));
        }
        h.advance(t(&h, 2000));
        let r = h.report();
        assert_eq!(r.notifications.len(), 2);
        let one = &r.notifications[0];
        assert!(one.clipped);
        assert_eq!(one.clipped_lines, 1);
        assert_eq!(one.lines, [format!("{}{LINE_CUT_SUFFIX}", "x".repeat(500))]);
        let two = &r.notifications[1];
        assert!(two.clipped);
        assert_eq!(two.clipped_lines, 0);
        // 6 whole lines of 450 + their newlines = 2,706 units; 294 of the 7th.
        assert_eq!(two.lines.len(), 8);
        assert_eq!(two.lines[5].len(), 450);
        assert_eq!(two.lines[6].len(), 294);
        assert_eq!(two.lines[7], "...(truncated)");
        assert_eq!(r.clipped, 2);
        assert_eq!(r.clipped_lines, 1);
    }

    #[test]
    fn bucket_refills_by_whole_periods_even_when_full() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0);
        assert!(b.try_consume(t0 + ms(1000)));
        assert_eq!(b.tokens(t0 + ms(1999)), 9);
        // The period that began while the bucket was full still counts.
        assert_eq!(b.tokens(t0 + ms(2000)), 10);
        for _ in 0..10 {
            assert!(b.try_consume(t0 + ms(2500)));
        }
        assert!(!b.try_consume(t0 + ms(3999)));
        assert!(b.try_consume(t0 + ms(4000)));
        assert_eq!(b.tokens(t0 + ms(60_000)), BUCKET_CAPACITY);
    }

    #[test]
    fn drops_when_the_bucket_is_empty_and_reports_them_before_the_next() {
        let mut h = host();
        // One notification every 250 ms: closes at 200 + 250k ms.
        feed(&mut h, (0..17).map(|k| 250 * k));
        h.advance(t(&h, 10_000));
        let delivered: Vec<bool> = h.notifications.iter().map(|n| n.delivered).collect();
        // 10 tokens, +1 at 2 s, +1 at 4 s.
        let mut expect = vec![true; 11];
        expect.extend([false; 5]);
        expect.push(true);
        assert_eq!(delivered, expect);
        let r = h.report();
        assert_eq!(r.suppressed, 5);
        assert_eq!(r.notifications[16].suppressed_before, 5);
        assert_eq!(r.notices, [suppressed_notice(5)]);
        assert!(!r.model_lines.contains(&"line 11".to_string()));
        assert_eq!(r.model_lines.len(), 12);
        // The notice is its own event, just before the notification.
        let n = r.model_events.len();
        assert_eq!(r.model_events[n - 2].kind, EventKind::Notice);
        assert_eq!(r.model_events[n - 1].text, "line 16");
    }

    /// SPEC §9, measured: "0.5 notification/s forever is safe; 1/s starts
    /// dropping after about 19 s and is killed at about 51 s".
    #[test]
    fn one_a_second_drops_after_about_20s_and_is_killed_at_about_51s() {
        let mut h = host();
        feed(&mut h, (0..70).map(|k| 1000 * k));
        h.advance(t(&h, 80_000));
        let first_drop = h.notifications.iter().find(|n| !n.delivered).map(|n| n.at);
        let first_drop = first_drop.expect("a drop");
        assert!(
            (ms(18_000)..ms(22_000)).contains(&first_drop),
            "{first_drop:?}"
        );
        assert!(h.killed_for_rate);
        let killed = h.terminated_at.map(|at| at - h.t0).expect("killed");
        assert!((ms(50_000)..ms(53_000)).contains(&killed), "{killed:?}");
        assert!(h
            .notices()
            .last()
            .expect("a notice")
            .starts_with("[Monitor stopped \u{2014} too much output ("));
        assert!(
            !h.after_sigterm.is_empty(),
            "lines after the kill are kept aside"
        );
        assert_eq!(h.signals, [libc::SIGTERM, libc::SIGKILL]);

        let mut h = host();
        feed(&mut h, (0..300).map(|k| 2000 * k));
        h.advance(t(&h, 700_000));
        assert_eq!(h.suppressed, 0, "0.5/s is safe forever");
    }

    #[test]
    fn a_quiet_gap_over_6s_ends_the_streak() {
        // 1/s for 30 s (the streak starts at about 20 s), 7 s of silence,
        // then 1/s again: no kill at 51 s; the new streak starts afresh.
        let mut h = host();
        let times: Vec<u64> = (0..30).chain(37..100).map(|k| 1000 * k).collect();
        feed(&mut h, times);
        h.advance(t(&h, 120_000));
        let killed = h.terminated_at.map(|at| at - h.t0).expect("killed later");
        assert!(killed > ms(70_000), "{killed:?}");

        // A 6 s gap (not more) does not end it.
        let mut h = host();
        let times: Vec<u64> = (0..30)
            .map(|k| 1000 * k)
            .chain((0..100).map(|k| 35_000 + 1000 * k))
            .collect();
        feed(&mut h, times);
        h.advance(t(&h, 140_000));
        let killed = h.terminated_at.map(|at| at - h.t0).expect("killed");
        assert!(killed < ms(60_000), "{killed:?}");
    }

    #[test]
    fn a_full_bucket_ends_the_streak() {
        let mut h = host();
        // 11 notifications in 2.2 s: the 12th, at 2.45 s, is dropped.
        feed(&mut h, (0..12).map(|k| 210 * k));
        h.advance(t(&h, 3000));
        assert_eq!(h.suppressed, 1);
        assert!(h.streak_start.is_some());
        // Notifications every 5.9 s refill the bucket faster than they spend it.
        feed(&mut h, (1..12).map(|k| 2310 + 5900 * k));
        h.advance(t(&h, 80_000));
        assert!(!h.killed_for_rate);
        assert_eq!(h.suppressed, 1);
        assert!(h.streak_start.is_none());
    }

    #[test]
    fn expiry_flushes_the_open_notification_then_terms_then_kills() {
        let mut h = Host::new(Instant::now(), Some(ms(10_000)));
        feed(&mut h, [9_900]);
        h.advance(t(&h, 10_000));
        assert_eq!(
            h.model_lines,
            ["line 0"],
            "flushed at expiry, not at 10.1 s"
        );
        assert_eq!(h.notifications[0].at, ms(10_000));
        assert!(h.expired);
        assert_eq!(h.signals, [libc::SIGTERM]);
        assert_eq!(
            h.notices(),
            ["[Monitor expired after 10s with 1 event delivered. Re-arm it if you still need the watch.]"]
        );
        h.on_line(t(&h, 10_100), "bye".into());
        h.advance(t(&h, 11_499));
        assert_eq!(h.signals, [libc::SIGTERM]);
        h.advance(t(&h, 11_500));
        assert_eq!(h.signals, [libc::SIGTERM, libc::SIGKILL]);
        assert_eq!(h.after_sigterm, ["bye"]);
        assert_eq!(h.model_lines, ["line 0"]);

        // No SIGKILL when the child exits in time.
        let mut h = Host::new(Instant::now(), Some(ms(1000)));
        h.advance(t(&h, 1000));
        h.on_exit(t(&h, 1200), None);
        h.advance(t(&h, 5000));
        assert_eq!(h.signals, [libc::SIGTERM]);
        assert!(h.ready_to_finish());
        assert_eq!(
            h.notices(),
            ["[Monitor expired after 1s with no events delivered. Re-arm it if you still need the watch \u{2014} and widen the filter if silence was unexpected.]"]
        );
    }

    #[test]
    fn expiry_is_capped_at_ten_minutes() {
        let h = Host::new(Instant::now(), Some(Duration::from_secs(3600)));
        assert_eq!(h.expiry_at, Some(t(&h, MAX_EXPIRY_MS)));
    }

    #[test]
    fn end_of_stdout_delivers_the_open_notification_at_once() {
        let mut h = host();
        feed(&mut h, [0]);
        h.on_eof(t(&h, 50), Some("  tail  ".into()));
        assert_eq!(h.model_lines, ["line 0", "tail"]);
        assert_eq!(h.notifications[0].at, ms(50));
        assert!(!h.ready_to_finish());
        h.on_exit(t(&h, 60), None);
        assert!(h.ready_to_finish());
    }

    impl Host {
        fn notices(&self) -> Vec<String> {
            self.report().notices
        }
    }

    // ---- real processes ----

    /// Only in the crate meant for them (see the module docs).
    fn real() -> bool {
        let on = env!("CARGO_CRATE_NAME") == "host_sim_selftest"
            || std::env::var_os("HOST_SIM_SELFTEST").is_some();
        if !on {
            eprintln!("host_sim: real-process self-test skipped outside host_sim_selftest");
        }
        on
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script]);
        cmd
    }

    fn run(cmd: Command, cfg: SimConfig) -> SimReport {
        HostSim::spawn(cmd, cfg)
            .expect("spawn the monitor")
            .wait_exit(Duration::from_secs(20))
    }

    #[test]
    fn real_one_line_one_notification() {
        if !real() {
            return;
        }
        let r = run(sh("echo hello; sleep 1"), SimConfig::default());
        assert_eq!(r.model_lines, ["hello"]);
        assert_eq!(r.notifications.len(), 1);
        let n = &r.notifications[0];
        assert!(n.delivered && !n.clipped);
        let waited = n.at - r.raw[0].0;
        assert!((ms(200)..ms(300)).contains(&waited), "{waited:?}");
        assert!(r.exit_status.expect("status").success());
        assert!(!r.timed_out && !r.expired);
    }

    #[test]
    fn real_three_lines_together_one_notification() {
        if !real() {
            return;
        }
        let r = run(
            sh("printf 'a\\n\\n  b  \\nc\\n'; sleep 0.5"),
            SimConfig::default(),
        );
        assert_eq!(r.notifications.len(), 1);
        assert_eq!(r.notifications[0].lines, ["a", "b", "c"]);
        assert_eq!(r.model_lines, ["a", "b", "c"]);
        assert_eq!(r.raw.len(), 4);
    }

    #[test]
    fn real_exit_delivers_at_once_with_unterminated_line() {
        if !real() {
            return;
        }
        let r = run(sh("printf 'a\\nb'"), SimConfig::default());
        assert_eq!(r.model_lines, ["a", "b"]);
        let n = &r.notifications[0];
        assert!(n.at - n.opened < ms(150), "{n:?}");
    }

    #[test]
    fn real_bucket_exhausted_drops_and_counts() {
        if !real() {
            return;
        }
        // 13 lines about 230 ms apart, each its own notification: 10 tokens
        // plus the one refilled at 2 s cover 11 (for any gap from 200 to
        // 300 ms), so the 12th and 13th are dropped; a line 1.8 s later gets
        // the token refilled at 4 s and carries the count.
        let script = "for k in $(seq 0 12); do echo n$k; sleep 0.23; done; sleep 1.8; echo last";
        let r = run(sh(script), SimConfig::default());
        let (last, before) = r.notifications.split_last().expect("notifications");
        assert_eq!(last.lines, ["last"]);
        assert!(last.delivered);
        // On a loaded machine two lines can be read together and share a
        // notification: then fewer are dropped, but the rule is the same.
        let n = before.len();
        if n < 13 {
            eprintln!("host_sim: lines merged under load: {n} notifications, not 13");
        }
        assert!(n > 11, "no drop at all: {:#?}", r.notifications);
        let delivered: Vec<bool> = before.iter().map(|n| n.delivered).collect();
        let mut expect = vec![true; 11];
        expect.resize(n, false);
        assert_eq!(delivered, expect, "{:#?}", r.notifications);
        let dropped = n - 11;
        assert_eq!(r.suppressed, dropped);
        assert_eq!(last.suppressed_before, dropped);
        assert_eq!(r.notices, [suppressed_notice(dropped)]);
        for notification in before {
            let seen = notification.lines.iter().all(|l| r.model_lines.contains(l));
            assert_eq!(seen, notification.delivered, "{notification:?}");
        }
    }

    #[test]
    fn real_long_line_and_long_burst_are_clipped() {
        if !real() {
            return;
        }
        let script = format!(
            "printf '%s\\n' {long}; sleep 0.5; for i in 1 2 3 4 5 6 7 8; do printf '%s\\n' {line}; done; sleep 0.5",
            long = "x".repeat(600),
            line = "y".repeat(450)
        );
        let r = run(sh(&script), SimConfig::default());
        assert_eq!(r.notifications.len(), 2);
        assert_eq!(r.clipped, 2);
        assert_eq!(r.clipped_lines, 1);
        assert_eq!(
            r.model_lines[0],
            format!("{}{LINE_CUT_SUFFIX}", "x".repeat(500))
        );
        let burst = &r.notifications[1];
        assert!(burst.clipped);
        assert_eq!(
            burst.lines.last().map(String::as_str),
            Some("...(truncated)")
        );
        assert_eq!(
            utf16_len(&burst.lines.join("\n")),
            3000 + NOTIFICATION_CUT_SUFFIX.len()
        );
    }

    #[test]
    fn real_expiry_terms_the_whole_group() {
        if !real() {
            return;
        }
        // The grandchild is in the group: it gets the SIGTERM too.
        let script = "trap 'echo after-term; exit 0' TERM; sleep 100 & echo \"before $!\"; wait";
        let r = run(
            sh(script),
            SimConfig {
                expiry: Some(ms(1000)),
            },
        );
        assert_eq!(r.model_lines.len(), 1, "{r:#?}");
        let grandchild: libc::pid_t = r.model_lines[0]
            .strip_prefix("before ")
            .and_then(|p| p.parse().ok())
            .expect("grandchild pid");
        assert_eq!(r.after_sigterm, ["after-term"]);
        assert!(r.expired && !r.killed_for_rate && !r.sigkill_sent);
        let term = r.sigterm_at.expect("SIGTERM sent");
        assert!((ms(1000)..ms(1100)).contains(&term), "{term:?}");
        assert!(r.exit_status.expect("status").success());
        assert!(r.notices[0].starts_with("[Monitor expired after 1s with 1 event delivered."));
        // SAFETY: signal 0 only checks that the process exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        while unsafe { libc::kill(grandchild, 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived the SIGTERM"
            );
            thread::sleep(ms(10));
        }
    }

    #[test]
    fn real_stop_kills_a_child_that_ignores_sigterm() {
        if !real() {
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        let sim = HostSim::spawn(
            sh("trap '' TERM; echo ready; while :; do sleep 0.05; echo tick; done"),
            SimConfig::default(),
        )
        .expect("spawn");
        assert!(sim.wait_for(Duration::from_secs(5), |l| l.iter().any(|l| l == "ready")));
        let r = sim.stop();
        assert!(r.expired && r.sigkill_sent);
        assert_eq!(r.exit_status.and_then(|s| s.signal()), Some(libc::SIGKILL));
        let grace = r.exited_at.expect("exited") - r.sigterm_at.expect("termed");
        assert!((ms(1500)..ms(1700)).contains(&grace), "{grace:?}");
        assert!(r.after_sigterm.iter().all(|l| l == "tick"));
    }

    #[test]
    fn real_wait_for_sees_lines_as_they_are_delivered() {
        if !real() {
            return;
        }
        let sim = HostSim::spawn(sh("sleep 0.3; echo one; sleep 30"), SimConfig::default())
            .expect("spawn");
        let start = Instant::now();
        assert!(sim.wait_for(Duration::from_secs(5), |l| l == ["one"]));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!sim.wait_for(ms(300), |l| l.len() > 1));
        assert_eq!(sim.model_lines(), ["one"]);
        let r = sim.wait_exit(ms(100));
        assert!(r.timed_out && r.expired);
    }

    #[test]
    fn real_rate_kill_after_30s_of_suppression() {
        if !real() {
            return;
        }
        use std::os::unix::process::ExitStatusExt;
        // 4 notifications a second: the bucket is empty at about 2.7 s, then
        // one in 8 gets through; the streak never ends; killed at about 33 s.
        let script = "while :; do echo spam; sleep 0.25; done";
        let r = HostSim::spawn(sh(script), SimConfig::default())
            .expect("spawn")
            .wait_exit(Duration::from_secs(60));
        assert!(r.killed_for_rate, "{:?}", r.notices);
        let first_drop = r.dropped().next().expect("a drop").at;
        let killed = r.sigterm_at.expect("SIGTERM");
        let streak = killed - first_drop;
        assert!((ms(30_000)..ms(31_000)).contains(&streak), "{streak:?}");
        assert_eq!(r.exit_status.and_then(|s| s.signal()), Some(libc::SIGTERM));
        assert!(r
            .notices
            .last()
            .expect("notice")
            .starts_with("[Monitor stopped \u{2014} too much output ("));
        assert!(r.delivered().any(|n| n.suppressed_before > 0));
    }
}
