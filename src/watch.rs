//! The monitor (`inbox watch`): claims a mailbox, replays pending mail, then
//! prints new mail as it arrives, one line per message (two when cut).
//!
//! A message is marked delivered only after its line is written, flushed and
//! taken by the reader, so a crash repeats at most the last write and never
//! loses one. Wake-ups come from the store's subscription (a file-change
//! notification for SQLite, LISTEN/NOTIFY for PostgreSQL), with a fallback
//! poll; idle, the loop sleeps. It knows nothing of SQL or of the command
//! line: `cmd` hands it an `Options`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::unix::io::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::identity::{self, pid_alive};
use crate::line;
use crate::lock::{self, FileLock};
use crate::pace::{self, PaceConfig, Pacer};
use crate::signals::install_signals;
use crate::store::tasks::{told, Claimer, Tasks};
use crate::store::{ClaimRequest, Mailbox, Message, State, Verbs, Wake};

/// How often the monitor checks its surroundings (owner alive, stdout open,
/// database intact) even when nothing happens.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Messages fetched per query.
const PAGE: usize = 256;
/// How long to wait for a previous monitor of this session to exit (SPEC
/// §3; Claude Code sends SIGKILL 1.5 s after SIGTERM).
const KEY_LOCK_PATIENCE: Duration = Duration::from_secs(2);
/// How long a written batch may sit unread before we trust a live reader
/// to take it later.
const TAKE_PATIENCE: Duration = Duration::from_secs(10);

fn notice(text: &str) -> String {
    format!("[inter-session] {text}")
}

/// Stdout as a raw fd: each batch goes out in exactly one write(2).
struct Out {
    file: ManuallyDrop<std::fs::File>,
    /// How to ask the kernel what the reader has not taken yet, and whether
    /// that count outlives the reader (see `unread`); `None`: it cannot tell.
    queue: Option<(libc::Ioctl, bool)>,
}

impl Out {
    fn new() -> Self {
        // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps
        // us from closing it.
        let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) });
        // What stdout is does not change while we run: look once.
        let queue = file.metadata().ok().and_then(|m| {
            use std::os::unix::fs::FileTypeExt;
            let t = m.file_type();
            if t.is_fifo() {
                Some((libc::FIONREAD, true))
            } else if t.is_socket() {
                Some((libc::TIOCOUTQ, false))
            } else {
                None
            }
        });
        Out { file, queue }
    }

    /// Refuse to start when nobody can read what we print: a closed stdout
    /// or `/dev/null` would have every pending message marked delivered
    /// and seen by no one.
    fn check_reader(&self) -> Result<()> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let refuse = |what: &str| {
            anyhow::bail!(
                "stdout is {what}: the monitor prints mail for someone to read, and would mark it \
                 delivered unseen; run it with stdout on a terminal, pipe or file"
            )
        };
        let Ok(meta) = self.file.metadata() else {
            return refuse("closed");
        };
        let null = std::fs::metadata("/dev/null").ok();
        if meta.file_type().is_char_device()
            && null.is_some_and(|n| n.file_type().is_char_device() && n.rdev() == meta.rdev())
        {
            return refuse("/dev/null");
        }
        if self.closed() {
            return refuse("closed by its reader");
        }
        Ok(())
    }

    fn write_lines(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.push_str(l);
            buf.push('\n');
        }
        self.file.write_all(buf.as_bytes())?;
        self.file.flush()
    }

    /// Bytes we wrote that the reader has not taken yet, where the kernel
    /// can tell: a pipe's content (`FIONREAD`), or a socket's send queue
    /// (`TIOCOUTQ`: Claude Code gives its monitors one end of a socket pair).
    /// `None` for files and terminals. The flag says whether the count still
    /// holds once the reader is gone (a pipe keeps its content; a socket's
    /// unread data is thrown away with its reader).
    fn unread(&self) -> Option<(usize, bool)> {
        let (request, kept) = self.queue?;
        let mut n: libc::c_int = 0;
        // SAFETY: both requests write one int.
        let rc = unsafe { libc::ioctl(1, request, &mut n) };
        (rc == 0).then(|| (usize::try_from(n).unwrap_or(0), kept))
    }

    /// After a write: wait until the reader has taken every byte of it.
    /// Claude Code passes on what it has read when it kills a monitor, and
    /// drops what still sits unread in the socket; a batch it has not read
    /// is not delivered. `false` when a signal came first, or the reader
    /// went away without taking it: the lines stay pending, to be replayed
    /// (when in doubt, a repeat rather than a loss). A reader that is alive
    /// but takes longer than `TAKE_PATIENCE` is trusted to read them later.
    fn taken(&self, signal: &AtomicI32) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        let mut spins = 0u32;
        loop {
            if signal.load(Ordering::SeqCst) != 0 {
                return false;
            }
            match self.unread() {
                None => return !self.closed(),
                Some((0, true)) => return true,
                Some((0, false)) => return !self.closed(),
                Some(_) if self.closed() => return false,
                Some(_) if start.elapsed() >= TAKE_PATIENCE => return true,
                Some(_) => {}
            }
            // A reader that is running takes the bytes within microseconds:
            // yield to it a few times before sleeping.
            if spins < 64 {
                spins += 1;
                std::thread::yield_now();
                continue;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// True when the reader of our stdout is gone (pipe closed, tty hung up).
    fn closed(&self) -> bool {
        let mut fds = libc::pollfd {
            fd: 1,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut fds, 1, 0) };
        rc > 0 && fds.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    }
}

/// What became of a batch handed to the sink.
enum Sent {
    /// The reader has it: mark it delivered.
    Taken,
    /// Not taken, and worth trying again later (it stays pending).
    Refused,
    /// Not taken, and the reader is gone (or a signal came): stop.
    Gone,
}

/// Where the monitor's batches go: stdout (the monitor), or a Codex
/// thread's queue (`deliver codex`).
enum Sink {
    Stdout(Out),
    Codex(CodexQueue),
}

impl Sink {
    fn new(spec: &SinkSpec) -> Self {
        match spec {
            SinkSpec::Stdout => Sink::Stdout(Out::new()),
            SinkSpec::CodexQueue {
                bin,
                thread,
                transcript,
            } => Sink::Codex(CodexQueue {
                bin: bin.clone(),
                thread: thread.clone(),
                live: transcript.as_ref().map(|t| Liveness::new(t)),
                queued: None,
                queue_db: crate::hosts::codex::home()
                    .ok()
                    .map(|h| h.join("queue_1.sqlite")),
            }),
        }
    }

    fn check_reader(&self) -> Result<()> {
        match self {
            Sink::Stdout(out) => out.check_reader(),
            Sink::Codex(_) => Ok(()),
        }
    }

    /// Hand over one batch; `Taken` only once the reader has it.
    fn send(&mut self, lines: &[String], signal: &AtomicI32) -> Sent {
        match self {
            Sink::Stdout(out) => {
                if out.write_lines(lines).is_err() {
                    return Sent::Gone;
                }
                // A signal that came before the reader took the lines:
                // the host may not pass them on, so they stay pending.
                if out.taken(signal) {
                    Sent::Taken
                } else {
                    Sent::Gone
                }
            }
            Sink::Codex(q) => q.send(lines),
        }
    }

    /// Notices with no mail (a closing line): stdout's reader sees them; a
    /// deliverer logs them (on stderr) rather than start a model turn.
    fn notify(&mut self, lines: &[String]) {
        match self {
            Sink::Stdout(out) => {
                let _ = out.write_lines(lines);
            }
            Sink::Codex(_) => log_lines(lines),
        }
    }

    fn closed(&self) -> bool {
        match self {
            Sink::Stdout(out) => out.closed(),
            Sink::Codex(_) => false,
        }
    }

    /// Milliseconds until the sink may take another batch (a deliverer's
    /// last batch still waiting in Codex's queue: look again soon).
    fn busy_ms(&mut self) -> u64 {
        match self {
            Sink::Stdout(_) => 0,
            Sink::Codex(q) => {
                if q.still_queued() {
                    u64::try_from(QUEUE_LOOK.as_millis()).unwrap_or(200)
                } else {
                    0
                }
            }
        }
    }

    /// Whether the session this sink writes into is over (a deliverer's
    /// Codex thread no longer loaded): the notice to end with.
    fn session_over(&mut self) -> Option<String> {
        match self {
            Sink::Stdout(_) => None,
            Sink::Codex(q) => q.live.as_mut().and_then(Liveness::over),
        }
    }

    /// The receipt of what this sink delivers.
    fn via(&self) -> &'static str {
        match self {
            Sink::Stdout(_) => crate::store::via::MONITOR,
            Sink::Codex(_) => crate::store::via::CODEX_QUEUE,
        }
    }
}

fn log_lines(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "{l}");
    }
}

/// The first try again after a refused batch, and the longest wait.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long one `codex queue` may take (it takes 0.1–0.25 s).
const QUEUE_PATIENCE: Duration = Duration::from_secs(30);
/// Default gap between two batches queued into a Codex thread.
const CODEX_GAP_MS: u64 = 2000;

/// One batch at a time into a Codex thread: a batch of at most 3,000 units,
/// then at least `INTER_SESSION_CODEX_GAP_MS` (default 2 s) before the
/// next, and not before Codex took the last off its queue
/// (`CodexQueue::still_queued`; Codex may lose the second of two messages
/// queued for a thread that nobody runs).
fn codex_pace() -> PaceConfig {
    let gap = env_ms("INTER_SESSION_CODEX_GAP_MS").unwrap_or(CODEX_GAP_MS);
    PaceConfig {
        min_gap_ms: gap,
        capacity: 1,
        margin_tokens: 0,
        refill_ms: gap.max(1),
        refill_slack_pct: 0,
        ..PaceConfig::default()
    }
}

/// `codex queue --thread <id> --message <batch>`: the batch is taken when
/// it exits 0.
struct CodexQueue {
    bin: PathBuf,
    thread: String,
    live: Option<Liveness>,
    /// The item the last batch became (`Queued message <uuid> for thread
    /// …`), while it may still wait in Codex's queue.
    queued: Option<String>,
    /// Codex's queue database (`$CODEX_HOME/queue_1.sqlite`).
    queue_db: Option<PathBuf>,
}

/// How often a deliverer looks whether its last batch left Codex's queue.
const QUEUE_LOOK: Duration = Duration::from_millis(200);

impl CodexQueue {
    /// Whether the last batch is still in Codex's queue (the thread has not
    /// started its turn yet: busy, or not running). Then the next batch
    /// waits: one batch at a time (of two queued for a thread nobody runs,
    /// Codex may lose the second). When the database cannot be read, the
    /// fixed gap alone paces.
    fn still_queued(&mut self) -> bool {
        let (Some(id), Some(db)) = (&self.queued, &self.queue_db) else {
            return false;
        };
        let there = (|| -> rusqlite::Result<bool> {
            let conn = rusqlite::Connection::open_with_flags(
                db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_millis(100))?;
            conn.query_row(
                "select count(*) from queued_items where id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })();
        if there.unwrap_or(false) {
            return true;
        }
        self.queued = None;
        false
    }
}

/// How a deliverer knows its Codex session is over. Codex 0.171 keeps a
/// loaded thread's rollout file (`transcript_path`) open — in the
/// interactive app-server daemon, which serves every TUI of a CODEX_HOME
/// and outlives them, for about a minute after the thread's TUI quit (a
/// message queued meanwhile still runs as a turn); in `codex exec`, for the
/// run. Nothing holding it open means the thread is no longer loaded:
/// mail from then on waits for the thread's hooks (a resume).
struct Liveness {
    path: PathBuf,
    /// The process last seen holding it.
    holder: Option<i32>,
    seen: bool,
    misses: u32,
    started: Instant,
    every: Duration,
    next: Instant,
}

impl Liveness {
    fn new(path: &std::path::Path) -> Self {
        let every = Duration::from_millis(
            env_ms("INTER_SESSION_CODEX_CHECK_MS")
                .filter(|ms| *ms > 0)
                .unwrap_or(5000),
        );
        Liveness {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            holder: None,
            seen: false,
            misses: 0,
            started: Instant::now(),
            every,
            next: Instant::now(),
        }
    }

    /// `Some(notice)` once nothing has held the file open for two checks in
    /// a row (after it was seen held, or, never seen, after a grace of six
    /// checks: the thread may not have opened it yet).
    fn over(&mut self) -> Option<String> {
        let now = Instant::now();
        if now < self.next {
            return None;
        }
        self.next = now + self.every;
        let held = self.holder.is_some_and(|pid| holds(pid, &self.path)) || {
            self.holder = holder_of(&self.path);
            self.holder.is_some()
        };
        if held {
            self.seen = true;
            self.misses = 0;
            return None;
        }
        self.misses += 1;
        let grace_over = self.seen || self.started.elapsed() >= self.every * 6;
        (self.misses >= 2 && grace_over).then(|| {
            format!(
                "the Codex thread is no longer loaded (nothing holds {} open); exiting",
                self.path.display()
            )
        })
    }
}

/// Whether process `pid` has `path` open.
fn holds(pid: i32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok())
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
}

/// A process that has `path` open (of those whose fds we may read).
fn holder_of(path: &std::path::Path) -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .find(|pid| holds(*pid, path))
}

impl CodexQueue {
    fn send(&mut self, lines: &[String]) -> Sent {
        // Notices go to the log; only mail starts a model turn.
        let (notices, mail): (Vec<&String>, Vec<&String>) = lines
            .iter()
            .partition(|l| l.starts_with("[inter-session] "));
        if !notices.is_empty() {
            log_lines(&notices.into_iter().cloned().collect::<Vec<_>>());
        }
        if mail.is_empty() {
            return Sent::Taken;
        }
        let text = mail
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let child = std::process::Command::new(&self.bin)
            .args(["queue", "--thread", &self.thread, "--message", &text])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "inter-session: could not run {}: {e}; the mail stays pending",
                    self.bin.display()
                );
                return Sent::Refused;
            }
        };
        // Once started, a queue call is let finish (a signal meanwhile does
        // not stop it): what it queued must be marked.
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    // "Queued message <uuid> for thread <id>." (a few bytes:
                    // it fits the pipe, so reading after the exit is safe).
                    let mut said = String::new();
                    if let Some(mut out) = child.stdout.take() {
                        use std::io::Read;
                        let _ = out.read_to_string(&mut said);
                    }
                    self.queued = said
                        .split_whitespace()
                        .skip_while(|w| *w != "message")
                        .nth(1)
                        .map(str::to_string);
                    return Sent::Taken;
                }
                Ok(Some(status)) => {
                    eprintln!(
                        "inter-session: {} queue --thread {} exited with {status}; the mail stays pending",
                        self.bin.display(),
                        self.thread
                    );
                    return Sent::Refused;
                }
                Ok(None) if start.elapsed() < QUEUE_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "inter-session: {} queue --thread {} did not finish; the mail stays pending",
                        self.bin.display(),
                        self.thread
                    );
                    return Sent::Refused;
                }
            }
        }
    }
}

/// The Codex CLI a deliverer runs: `$INTER_SESSION_CODEX_BIN`, else `codex`
/// on PATH.
pub fn codex_bin() -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("INTER_SESSION_CODEX_BIN").filter(|b| !b.is_empty()) {
        let b = PathBuf::from(b);
        if b.is_file() {
            return Ok(b);
        }
        anyhow::bail!(
            "INTER_SESSION_CODEX_BIN={} is not a file: cannot deliver to Codex",
            b.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("codex");
        if c.is_file() {
            return Ok(c);
        }
    }
    anyhow::bail!("no `codex` on PATH (nor INTER_SESSION_CODEX_BIN): cannot deliver to Codex")
}

fn env_ms(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// What the monitor is asked to do; `cmd` builds it from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The mailbox name asked for (else `$INTER_SESSION_NAME`, this key's
    /// previous name, or one made from the cwd).
    pub name: Option<String>,
    /// A label to use and remember for this project ("" forgets it).
    pub label: Option<String>,
    /// Also print joins, leaves and renames.
    pub verbose: bool,
    /// The plugin's auto-started monitor: silent inside Claude Code workers.
    pub auto: bool,
    /// Stop a little before this much time has passed since start.
    pub window: Option<Duration>,
    /// Keep within Claude Code's notification limits (SPEC §4).
    pub paced: bool,
    /// Where the lines go (stdout, or a Codex thread's queue).
    pub sink: SinkSpec,
    /// Work queues this monitor takes tasks from (`--take`), one at a time each.
    pub take: Vec<String>,
}

/// Where the monitor writes its batches.
#[derive(Debug, Clone, Default)]
pub enum SinkSpec {
    /// Stdout, for a reader (the host's monitor tool, a terminal, a pipe).
    #[default]
    Stdout,
    /// `<bin> queue --thread <thread> --message <batch>` (`deliver codex`):
    /// the session key is `codex:<thread>`.
    CodexQueue {
        bin: PathBuf,
        thread: String,
        /// The thread's rollout file (the hooks' `transcript_path`): Codex
        /// holds it open while the thread is loaded; the deliverer ends
        /// once nothing does.
        transcript: Option<PathBuf>,
    },
}

/// Run the monitor; returns the exit code.
pub fn run(opts: Options) -> Result<i32> {
    let name = opts.name.clone();
    // The host's window started when it started us, not once we are set up
    // (which can take seconds when a previous monitor is still exiting).
    let started = Instant::now();
    if opts.auto && identity::in_agent_worker() {
        // Claude Code's own worker agents are not sessions of ours.
        return Ok(0);
    }
    if let Some(n) = &name {
        identity::validate_name(n)?;
    }
    // Handlers first: a SIGTERM that comes while we claim the mailbox must
    // still end in a clean exit (mark offline, release the lock).
    let (tx, rx) = channel();
    let signal = install_signals(tx.clone())?;
    let label_flag = opts
        .label
        .as_deref()
        .map(identity::validate_label)
        .transpose()?;
    let env_label = std::env::var("INTER_SESSION_LABEL")
        .ok()
        .filter(|l| !l.is_empty())
        .map(|l| identity::validate_label(&l))
        .transpose()?;
    let env_name = std::env::var("INTER_SESSION_NAME")
        .ok()
        .filter(|n| !n.is_empty());
    if let Some(n) = &env_name {
        identity::validate_name(n).context("INTER_SESSION_NAME")?;
    }
    let paced = opts.paced;

    let mut out = Sink::new(&opts.sink);
    out.check_reader()?;
    let store = crate::store::open()?;
    let key = match &opts.sink {
        SinkSpec::Stdout => identity::session_key(),
        SinkSpec::CodexQueue { thread, .. } => format!("codex:{thread}"),
    };

    // One monitor per session key.
    let dir = crate::datadir::path()?;
    let key_lock_path = lock::key_lock_path(&dir, &key);
    let stopped = || signal.load(Ordering::SeqCst) != 0;
    let owner = match opts.sink {
        SinkSpec::Stdout => identity::owner_pid(),
        SinkSpec::CodexQueue { .. } => None,
    };
    let key_lock =
        match FileLock::acquire_removable_within(&key_lock_path, KEY_LOCK_PATIENCE, stopped)? {
            Some(lock) => Some(lock),
            // Asked to stop while waiting: nothing was claimed, nothing to say.
            None if stopped() => return Ok(0),
            // The plugin's monitor is the one Claude Code never restarts: it
            // stands by, silent, and takes over when the other one ends.
            None if opts.auto => stand_by(key_lock_path.clone(), (&tx, &rx), &signal, owner)?,
            None => None,
        };
    let Some(_key_lock) = key_lock else {
        if stopped() {
            return Ok(0);
        }
        let (held, pid) = match store.session_by_key(&key)? {
            Some(s) => (
                s.name,
                s.monitor_pid.map_or("?".to_string(), |p| p.to_string()),
            ),
            None => ("?".to_string(), "?".to_string()),
        };
        out.notify(&[notice(&format!(
            "another monitor for this session is already running — name='{}', listener_pid={pid}; exiting",
            line::safe_name(&held)
        ))]);
        return Ok(0);
    };

    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let project = identity::project_of(&cwd).display().to_string();
    let mut notices = Vec::new();
    // A deliverer runs outside its session (started by a hook, under the
    // host's shared daemon): the key's previous name comes first.
    let previous = match &opts.sink {
        SinkSpec::Stdout => None,
        SinkSpec::CodexQueue { .. } => store.session_by_key(&key)?.map(|s| s.name),
    };
    let wanted = match name.or(previous).or(env_name) {
        Some(n) => n,
        None => match store.session_by_key(&key)? {
            Some(prev) => prev.name,
            None => {
                let n = identity::name_from_dir(&cwd);
                notices.push(notice(&format!(
                    "no --name given; auto-named '{n}' from cwd (rename with /inter-session rename)"
                )));
                n
            }
        },
    };
    let label = match (label_flag, env_label) {
        (Some(l), _) => {
            store.remember_label(&project, &l)?;
            l
        }
        (None, Some(l)) => l,
        (None, None) => store.remembered_label(&project)?.unwrap_or_default(),
    };
    let claim = store.claim(&ClaimRequest {
        key: &key,
        name: &wanted,
        label: &label,
        cwd: &cwd.display().to_string(),
        project: &project,
        monitor_pid: i64::from(std::process::id()),
        owner_pid: owner,
    })?;
    if claim.session.name != wanted {
        notices.push(notice(&format!(
            "name '{wanted}' taken; using '{}'",
            line::safe_name(&claim.session.name)
        )));
    }

    let result = Monitor {
        store: store.as_ref(),
        session_id: claim.session.id,
        name: claim.session.name.clone(),
        out,
        notices,
        pacer: match &opts.sink {
            SinkSpec::Stdout => paced.then(|| Pacer::new(PaceConfig::from_env(), 0)),
            SinkSpec::CodexQueue { .. } => Some(Pacer::new(codex_pace(), 0)),
        },
        retry: None,
        started,
        window: opts.window,
        owner,
        verbose: opts.verbose,
        signal,
        tx,
        take: opts.take.clone(),
    }
    .run(rx);
    // Whatever happened, the mailbox is offline now (unless it left).
    let _ = store.release(claim.session.id);
    drop(claim.presence);
    result
}

/// Wait, printing nothing, until the session key's lock is ours: `None`
/// when a signal or the owner's exit comes first (then there is nothing to
/// say: nothing was claimed). The lock is waited for on a thread of its own
/// (a blocking `flock`) that rings `wake` when it has it, so standing by
/// costs no CPU and a signal ends it at once.
fn stand_by(
    path: PathBuf,
    wake: (&Sender<Wake>, &Receiver<Wake>),
    signal: &AtomicI32,
    owner: Option<i64>,
) -> Result<Option<FileLock>> {
    let slot: Arc<std::sync::Mutex<Option<Result<FileLock>>>> = Arc::default();
    let (ring, got) = (wake.0.clone(), Arc::clone(&slot));
    std::thread::spawn(move || {
        let lock = FileLock::acquire_removable(&path);
        if let Ok(mut got) = got.lock() {
            *got = Some(lock);
        }
        let _ = ring.send(Wake::Change);
    });
    loop {
        let _ = wake.1.recv_timeout(HOUSEKEEPING);
        if signal.load(Ordering::SeqCst) != 0 || owner.is_some_and(|pid| !pid_alive(pid)) {
            return Ok(None);
        }
        let taken = slot.lock().ok().and_then(|mut s| s.take());
        if let Some(lock) = taken {
            return lock.map(Some);
        }
    }
}

struct Monitor<'a> {
    store: &'a dyn Mailbox,
    session_id: i64,
    name: String,
    out: Sink,
    /// A batch the sink refused: not before this, and the next backoff.
    retry: Option<(Instant, Duration)>,
    /// Notices waiting to go out with the next batch.
    notices: Vec<String>,
    pacer: Option<Pacer>,
    started: Instant,
    window: Option<Duration>,
    owner: Option<i64>,
    verbose: bool,
    /// The signal that asked us to stop (0: none yet).
    signal: Arc<AtomicI32>,
    tx: Sender<Wake>,
    /// Work queues to take tasks from (`--take`).
    take: Vec<String>,
}

/// Why the loop ended.
enum End {
    /// Exit 0 quietly (signal, stdout closed).
    Quiet,
    /// Exit with this code after printing this notice.
    Notice(i32, String),
}

impl Monitor<'_> {
    /// Stop printing a little before the host's window ends.
    fn stop_at(&self) -> Option<Instant> {
        self.window.map(|w| {
            let margin = (w / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
            // Paced, the closing line may have to wait for a token: stop
            // early enough that it still goes out `margin` before the end.
            let reserve = self.pacer.as_ref().map_or(Duration::ZERO, |p| {
                Duration::from_millis(p.config().our_refill_ms() + p.config().min_gap_ms)
            });
            self.started + w.saturating_sub(margin + reserve)
        })
    }

    fn run(mut self, rx: Receiver<Wake>) -> Result<i32> {
        let signal = Arc::clone(&self.signal);
        let tx = self.tx.clone();
        let mut subscription = self.store.subscribe(tx)?;
        let poll = Duration::from_millis(
            env_ms("INTER_SESSION_POLL_MS")
                .filter(|ms| *ms > 0)
                .unwrap_or(1000),
        );
        let stop_at = self.stop_at();
        let mut peers = self.snapshot()?;

        let mut buffer: VecDeque<Message> = VecDeque::new();
        let mut maybe_pending = true;
        let mut announced_backlog = false;
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut next_poll = Instant::now() + poll;
        let mut rechecks = 0u32;

        let end = loop {
            if signal.load(Ordering::SeqCst) != 0 {
                break End::Quiet;
            }
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                break End::Notice(
                    0,
                    "watch window over; re-arm the monitor (pending mail waits)".into(),
                );
            }

            // Output: as much as the pacer allows (and, after a refused
            // batch, not before its backoff is over).
            let retry_wait = self.retry.map_or(0, |(at, _)| {
                u64::try_from(at.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(u64::MAX)
            });
            let mut wait = self
                .pacer
                .as_mut()
                .map_or(0, |p| p.wait_ms(p_now(self.started)))
                .max(retry_wait);
            if wait == 0 && maybe_pending {
                wait = self.out.busy_ms();
            }
            if wait == 0 && (maybe_pending || !self.notices.is_empty()) {
                if self.pacer.is_some() {
                    // Paced batches re-read the mailbox each time, so mail
                    // taken meanwhile by `inbox check` is not printed again.
                    buffer.clear();
                }
                if buffer.is_empty() && maybe_pending {
                    // A queue this session holds no task of: claim the next
                    // one; it arrives below as a pending delivery.
                    self.take_task()?;
                    buffer.extend(self.store.pending(self.session_id, 0, PAGE)?);
                    if buffer.is_empty() {
                        maybe_pending = false;
                    }
                }
                if self.pacer.is_some() && !announced_backlog && !buffer.is_empty() {
                    announced_backlog = true;
                    self.announce_backlog(&buffer)?;
                }
                self.take_notices(&rx);
                let (lines, seqs) = self.next_batch(&mut buffer);
                if !lines.is_empty() {
                    if signal.load(Ordering::SeqCst) != 0 {
                        break End::Quiet;
                    }
                    match self.out.send(&lines, &signal) {
                        Sent::Taken => self.retry = None,
                        Sent::Gone => break End::Quiet,
                        Sent::Refused => {
                            // It stays pending; try again later, each time
                            // a little later (never a busy loop).
                            let backoff = self
                                .retry
                                .map_or(RETRY_FIRST, |(_, b)| (b * 2).min(RETRY_MAX));
                            self.retry = Some((Instant::now() + backoff, backoff));
                            buffer.clear();
                            maybe_pending = true;
                            continue;
                        }
                    }
                    if !seqs.is_empty() {
                        self.store
                            .mark_delivered(self.session_id, &seqs, self.out.via())?;
                    }
                    let now = p_now(self.started);
                    if let Some(p) = self.pacer.as_mut() {
                        p.wrote(now);
                    }
                    continue;
                }
            }

            // Wait for something to happen.
            let now = Instant::now();
            let mut deadline = next_housekeeping.min(next_poll);
            if let Some(t) = stop_at {
                deadline = deadline.min(t);
            }
            if wait > 0 && (maybe_pending || !self.notices.is_empty()) {
                deadline = deadline.min(now + Duration::from_millis(wait));
            }
            if rechecks > 0 {
                deadline = deadline.min(now + Duration::from_millis(3));
            }
            let woke = rx.recv_timeout(deadline.saturating_duration_since(now));
            let mut look = false;
            match woke {
                Ok(Wake::Signal(_)) => continue,
                Ok(Wake::Notice(text)) => {
                    self.notices.push(notice(&text));
                    continue;
                }
                Ok(Wake::Change) => {
                    while let Ok(w) = rx.try_recv() {
                        match w {
                            Wake::Signal(_) => {
                                signal.store(signal.load(Ordering::SeqCst).max(1), Ordering::SeqCst)
                            }
                            Wake::Notice(text) => self.notices.push(notice(&text)),
                            Wake::Change => {}
                        }
                    }
                    look = true;
                    // The `-wal` write that woke us can land before the commit
                    // is visible; look again shortly if nothing shows yet.
                    rechecks = 3;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if rechecks > 0 {
                        rechecks -= 1;
                        look = true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {}
            }
            let now = Instant::now();
            if now >= next_poll {
                next_poll = now + poll;
                look = true;
                // Mail can become printable without anybody committing: a
                // reply held for a `mail ask` that was killed is released
                // when its hold times out. The poll looks for it.
                maybe_pending = true;
            }
            if look && self.store.changed()? {
                rechecks = 0;
                maybe_pending = true;
                buffer.clear();
                if self.store.sessions_changed() {
                    if let Some(end) = self.check_session(&mut peers)? {
                        break end;
                    }
                }
            }
            if now >= next_housekeeping {
                next_housekeeping = now + HOUSEKEEPING;
                if let Some(end) = self.housekeeping()? {
                    break end;
                }
                // A wake-up source that cannot be restored leaves the
                // fallback poll; a vanished database is caught above.
                if subscription.refresh().unwrap_or(false) {
                    maybe_pending = true;
                }
            }
        };

        match end {
            End::Quiet => Ok(0),
            End::Notice(code, text) => {
                // Paced, wait for a token (at most one refill), unless a
                // signal comes first.
                if let Some(p) = self.pacer.as_mut() {
                    let until =
                        Instant::now() + Duration::from_millis(p.wait_ms(p_now(self.started)));
                    while signal.load(Ordering::SeqCst) == 0 && Instant::now() < until {
                        let _ = rx.recv_timeout(until.saturating_duration_since(Instant::now()));
                    }
                }
                if signal.load(Ordering::SeqCst) == 0 {
                    let mut lines = std::mem::take(&mut self.notices);
                    lines.push(notice(&text));
                    self.out.notify(&lines);
                }
                Ok(code)
            }
        }
    }

    /// With `--take`: claim the next task of each queue this session holds
    /// none of (the claim sweeps stale ones first; posters of tasks that
    /// died meanwhile are told).
    fn take_task(&mut self) -> Result<()> {
        if self.take.is_empty() {
            return Ok(());
        }
        let taken = self
            .store
            .take(self.session_id, &self.take, Claimer::Monitor)?;
        told(self.store, &taken.returned);
        Ok(())
    }

    /// Notices the store sent meanwhile (a lost database connection) go out
    /// before mail fetched after them; other wake-ups stay queued.
    fn take_notices(&mut self, rx: &Receiver<Wake>) {
        let mut others = Vec::new();
        while let Ok(w) = rx.try_recv() {
            match w {
                Wake::Notice(text) => self.notices.push(notice(&text)),
                w => others.push(w),
            }
        }
        for w in others {
            let _ = self.tx.send(w);
        }
    }

    /// The next write: queued notices, then as many messages as fit (one
    /// message per write when unpaced).
    fn next_batch(&mut self, buffer: &mut VecDeque<Message>) -> (Vec<String>, Vec<i64>) {
        let mut lines = std::mem::take(&mut self.notices);
        let mut seqs = Vec::new();
        match &self.pacer {
            None => {
                if let Some(m) = buffer.pop_front() {
                    lines.extend(line::message_lines(&m, line::clock()));
                    seqs.push(m.seq);
                }
            }
            Some(p) => {
                let max = p.config().batch_units;
                let now = line::clock();
                let rendered: Vec<Vec<String>> =
                    buffer.iter().map(|m| line::message_lines(m, now)).collect();
                let already = if lines.is_empty() {
                    0
                } else {
                    pace::batch_units(&lines)
                };
                let n = pace::fit(&rendered, already, max);
                for (m, l) in buffer.drain(..n).zip(rendered) {
                    lines.extend(l);
                    seqs.push(m.seq);
                }
            }
        }
        (lines, seqs)
    }

    /// Under pacing, say once when the backlog would take over a minute.
    fn announce_backlog(&mut self, page: &VecDeque<Message>) -> Result<()> {
        let total = self
            .store
            .session_by_id(self.session_id)?
            .map_or(0, |s| s.pending);
        let Some(p) = self.pacer.as_mut() else {
            return Ok(());
        };
        let cfg = *p.config();
        let now = line::clock();
        let units: usize = page
            .iter()
            .map(|m| pace::batch_units(&line::message_lines(m, now)) + 1)
            .sum();
        let per_batch = ((page.len() * cfg.batch_units) / units.max(1)).max(1);
        let batches = u64::try_from(total).unwrap_or(0).div_ceil(per_batch as u64);
        let now = p_now(self.started);
        if p.drain_estimate_ms(now, batches) > 60_000 {
            let per_minute = (cfg.batches_per_minute() * per_batch as f64).round() as u64;
            self.notices.push(notice(&format!(
                "{total} messages pending; they follow at about {per_minute} a minute, or read them all now with: inter-session inbox check"
            )));
        }
        Ok(())
    }

    /// After a change: has this session left, or (verbose) did peers come and go?
    fn check_session(&mut self, peers: &mut BTreeMap<i64, (String, State)>) -> Result<Option<End>> {
        match self.store.name_and_left(self.session_id)? {
            None => {
                return Ok(Some(End::Notice(
                    1,
                    "this session's mailbox was removed; exiting".into(),
                )))
            }
            Some((name, true)) => {
                return Ok(Some(End::Notice(
                    0,
                    format!("session '{}' disconnected; exiting", line::safe_name(&name)),
                )))
            }
            Some((name, false)) => self.name = name,
        }
        if self.verbose {
            let now = self.snapshot()?;
            for (id, (name, state)) in &now {
                if *id == self.session_id {
                    continue;
                }
                match peers.get(id) {
                    Some((old, _)) if old != name => self.notices.push(notice(&format!(
                        "'{}' renamed to '{}'",
                        line::safe_name(old),
                        line::safe_name(name)
                    ))),
                    Some((_, old)) if old == state => {}
                    _ => {
                        let name = line::safe_name(name);
                        match state {
                            State::Online => self.notices.push(notice(&format!("'{name}' joined"))),
                            State::Left => self.notices.push(notice(&format!("'{name}' left"))),
                            State::Offline if peers.contains_key(id) => {
                                self.notices.push(notice(&format!("'{name}' went offline")))
                            }
                            State::Offline => {}
                        }
                    }
                }
            }
            *peers = now;
        }
        Ok(None)
    }

    fn snapshot(&self) -> Result<BTreeMap<i64, (String, State)>> {
        if !self.verbose {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .store
            .sessions(true)?
            .into_iter()
            .map(|s| (s.id, (s.name, s.state)))
            .collect())
    }

    fn housekeeping(&mut self) -> Result<Option<End>> {
        if self.out.closed() {
            return Ok(Some(End::Quiet));
        }
        if let Err(e) = self.store.check_intact() {
            eprintln!(
                "inter-session: {e:#}; the monitor for '{}' stops",
                self.name
            );
            return Ok(Some(End::Notice(
                1,
                format!("{e:#}; exiting (restart the monitor)"),
            )));
        }
        if let Some(text) = self.out.session_over() {
            return Ok(Some(End::Notice(0, text)));
        }
        if let Some(pid) = self.owner {
            if !pid_alive(pid) {
                return Ok(Some(End::Notice(
                    0,
                    format!("owning session (pid {pid}) is gone; exiting"),
                )));
            }
        }
        Ok(None)
    }
}

fn p_now(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
