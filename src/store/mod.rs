//! The mailbox store: the only part of the program that speaks SQL.
//!
//! Commands and the monitor talk to the `Mailbox` trait in domain verbs
//! (claim a name, send, fetch pending, mark delivered) and get plain structs
//! back. Two backends sit behind it: `sqlite` (one file in the data folder,
//! the default; presence is a file lock, wake-up a file-change notification)
//! and `postgres` (one database for several machines; presence is an
//! advisory lock, wake-up LISTEN/NOTIFY). `copy` moves a mailbox from the
//! first to the second (`db copy`). What the product decides (name
//! suffixes, recipient resolution, …) is written once here; a backend file
//! says only how its database does it.

pub mod copy;
pub mod leases;
pub mod rules;
pub mod tasks;
pub mod tx;
mod verbs;

pub use verbs::Verbs;
pub mod postgres;
pub mod sqlite;

use crate::error::Trouble;

use std::collections::HashSet;
use std::sync::mpsc::Sender;

use anyhow::Result;
use serde::Serialize;

/// A message is stored inline up to this many characters, in a blob above it.
pub const INLINE_CHARS: usize = 400;
/// Largest direct message, in bytes of UTF-8.
pub const MAX_DIRECT_BYTES: usize = 10 * 1024 * 1024;
/// Largest broadcast, in bytes of UTF-8.
pub const MAX_BROADCAST_BYTES: usize = 256 * 1024;
/// Broadcasts allowed per sender per minute.
pub const BROADCASTS_PER_MINUTE: i64 = 60;
/// The default time limit of a `sql` query, in seconds (`sql --timeout`).
pub const SQL_DEFAULT_SECS: u64 = 5;
/// How much of a body the monitor loads to print a line; longer bodies are
/// always shown truncated, with the `cont` pointer to `inbox read`.
pub const LINE_PREFIX_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Online,
    Offline,
    Left,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Offline => "offline",
            State::Left => "left",
        }
    }
}

/// How a delivery reached its reader (the `delivered_via` of a receipt);
/// a host's hook records `hook:<host>:<event>` (`inter-session hook`).
pub mod via {
    /// A monitor (`inbox watch`) printed it and its reader took the line.
    pub const MONITOR: &str = "monitor";
    /// `inbox check` printed it.
    pub const CHECK: &str = "check";
    /// `mail ask` printed it as the answer it waited for.
    pub const ASK: &str = "ask";
    /// `inbox wait` printed it and exited 0 (a host's background waiter).
    pub const WAIT: &str = "wait";
    /// `deliver codex` queued it into the Codex thread (`codex queue` exited 0).
    pub const CODEX_QUEUE: &str = "codex-queue";
    /// `task claim` printed it (a task taken in pull mode).
    pub const CLAIM: &str = "claim";
}

/// Which database holds the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One SQLite file in the data folder: one machine.
    Sqlite,
    /// One PostgreSQL database: possibly several machines.
    Postgres,
}

impl Backend {
    /// Whether sessions on other machines can share this mailbox (then
    /// listings say where each session runs).
    pub fn spans_hosts(self) -> bool {
        self == Backend::Postgres
    }
}

/// A mailbox as a send needs it: who it is, not how it is doing (no live
/// state, no pending count), so that looking it up is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// 0 for a `--from` name not registered yet (the send registers it).
    pub id: i64,
    pub name: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub id: i64,
    pub name: String,
    #[serde(skip)]
    pub key: Option<String>,
    pub label: String,
    /// Live state: `Online` only while a monitor holds the mailbox.
    pub state: State,
    pub cwd: String,
    pub project: String,
    pub monitor_pid: Option<i64>,
    pub created_at: String,
    pub since: String,
    pub pending: i64,
    /// The machine the session runs on (`INTER_SESSION_HOSTNAME` overrides).
    pub host: String,
}

impl Session {
    pub fn address(&self) -> Address {
        Address {
            id: self.id,
            name: self.name.clone(),
            label: self.label.clone(),
        }
    }
}

/// One message as a recipient's monitor needs it.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub seq: i64,
    pub id: String,
    pub created_at: String,
    pub kind: String,
    pub sender: String,
    pub sender_label: String,
    /// Length of the whole text in code points.
    pub chars: i64,
    /// The text, or only its first `LINE_PREFIX_CHARS` characters when
    /// fetched for printing (`chars` says whether it is whole).
    pub text: String,
    /// The sender's mailbox (None only for rows from before it existed).
    #[serde(skip)]
    pub sender_id: Option<i64>,
    /// The message this one replies to.
    pub in_reply_to: Option<String>,
    /// The root of its thread (its own id for a new conversation).
    pub thread_id: String,
    pub expires_at: Option<String>,
    /// For a task (`task post`): its queue; its line says `task=` and `queue=`.
    pub queue: Option<String>,
}

/// One row of the `history` view.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub id: String,
    pub created_at: String,
    pub kind: String,
    pub sender: String,
    pub recipient: String,
    pub text: String,
    pub delivered_at: Option<String>,
    pub in_reply_to: Option<String>,
    pub thread_id: String,
    /// delivered, pending or expired.
    pub status: String,
    /// How a delivered one reached its reader (`via`); None before receipts.
    pub delivered_via: Option<String>,
    /// The message's place in commit order (shared by a broadcast's rows).
    pub seq: i64,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only messages sent by or to this session.
    pub involving: Option<i64>,
    /// Only messages between `involving` (or anyone) and this session.
    pub with: Option<i64>,
    /// Only messages created at or after this time (same text format).
    pub since: Option<String>,
    /// Only this thread (by root id).
    pub thread: Option<String>,
    /// Only this message (whole id): its receipts.
    pub message: Option<String>,
    /// Only messages after this seq (`history --follow` reading on). With
    /// it, `limit` keeps the oldest rows after it, not the newest: a reader
    /// that pages on misses nothing (a cut may split one message's rows).
    pub after_seq: Option<i64>,
    pub limit: usize,
}

pub enum Recipients {
    /// One mailbox, by session id.
    One(i64),
    /// Every other session that has not left; `Some(project)` narrows it.
    All { project: Option<String> },
    /// Nobody yet: a task, waiting in a queue until a worker claims it
    /// (`tasks`); the same transaction records its place in the queue.
    Queue(NewTask),
}

/// A task's place in its queue, as `task post` asks for it.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub queue: String,
    /// Claims allowed before it is dead.
    pub max_attempts: i64,
    /// A claim not renewed (`task renew`) for this long returns to the queue.
    pub lease_ms: Option<i64>,
    /// A claim whose holder's monitor is offline this long returns.
    pub grace_ms: i64,
}

pub struct NewMessage<'a> {
    pub sender: &'a Address,
    pub to: Recipients,
    pub text: &'a str,
    /// The message replied to (whole id).
    pub reply_to: Option<&'a Message>,
    /// Undelivered after this time (stored text format), it is never printed.
    pub expires_at: Option<String>,
    /// A second send by the same sender with this key within 24 h writes nothing.
    pub idempotency_key: Option<&'a str>,
    /// For `mail ask`: hold the first reply for the asker until this time
    /// (registered in the same transaction as the question).
    pub ask_until: Option<String>,
    /// A note from a mailbox to itself (what a `--force` did to it): the
    /// one direct send whose recipient may be its sender.
    pub note_to_self: bool,
}

impl<'a> NewMessage<'a> {
    pub fn new(sender: &'a Address, to: Recipients, text: &'a str) -> Self {
        NewMessage {
            sender,
            to,
            text,
            reply_to: None,
            expires_at: None,
            idempotency_key: None,
            ask_until: None,
            note_to_self: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SentTo {
    pub name: String,
    /// `delivered` when a monitor held the mailbox at send time, else
    /// `queued` (or `duplicate, not resent` for a repeated idempotency key).
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub id: String,
    pub recipients: Vec<SentTo>,
    /// An earlier send with the same idempotency key: nothing was written.
    pub duplicate: bool,
}

pub struct ClaimRequest<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub label: &'a str,
    pub cwd: &'a str,
    pub project: &'a str,
    pub monitor_pid: i64,
    pub owner_pid: Option<i64>,
}

/// Held by a running monitor: while it lives, the mailbox is online.
pub trait Presence: Send {}

pub struct Claim {
    pub session: Session,
    pub presence: Box<dyn Presence>,
}

/// What wakes a waiting monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Something in the store may have changed.
    Change,
    /// A signal arrived (its number).
    Signal(i32),
    /// Something the monitor should say on its output (without the
    /// `[inter-session] ` prefix), e.g. that the database connection was lost.
    Notice(String),
}

/// Keeps a monitor's wake-up source alive; dropping it stops the wake-ups.
pub trait Subscription {
    /// Called about once a second: re-establish a wake-up source that went
    /// away (until then the fallback poll stands in for it). `true` when it
    /// was re-established: changes meanwhile may have gone unannounced.
    fn refresh(&mut self) -> Result<bool> {
        Ok(false)
    }
}

/// A tmux-hosted agent session started with `peer spawn`.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    pub name: String,
    pub session_id: Option<i64>,
    pub tmux_socket: String,
    pub tmux_session: String,
    pub command: String,
    pub cwd: String,
    pub spawned_by: String,
    pub created_at: String,
    pub killed_at: Option<String>,
    /// The machine whose tmux runs it (tmux is local; only it can reach it).
    pub host: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// Where `sql` output goes as it is read: the column names once, then
/// each row. An error from the sink (a closed pipe) ends the query.
pub trait SqlSink {
    fn columns(&mut self, names: &[String]) -> Result<()>;
    fn row(&mut self, values: Vec<serde_json::Value>) -> Result<()>;
}

/// How much one `sql` query may do: `time` of work in the database (time
/// spent waiting for the reader of the output does not count), and a flag
/// that stops it at once when set (Ctrl-C).
#[derive(Debug, Clone)]
pub struct SqlLimits {
    pub time: std::time::Duration,
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SqlLimits {
    pub fn new(time: std::time::Duration) -> SqlLimits {
        SqlLimits {
            time,
            stop: Default::default(),
        }
    }
}

/// A query that ended before its last row, by `SqlLimits`.
#[derive(Debug, thiserror::Error)]
pub enum SqlStopped {
    #[error("sql: the query ran longer than {} s and was cancelled (a longer limit: --timeout)", .0.as_secs_f64())]
    TimedOut(std::time::Duration),
    #[error("sql: interrupted")]
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no session named '{name}'{hint}")]
    Unknown { name: String, hint: String },
    #[error("'{prefix}' matches several sessions: {}; give more of the name", matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("session '{0}' has left (disconnected); it receives no mail until it connects again")]
    Left(String),
}

/// Something asked for by id or name does not exist.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot send to yourself ('{0}')")]
    SelfSend(String),
    #[error("no other sessions to broadcast to")]
    NoRecipients,
    #[error("broadcast limit reached: at most {BROADCASTS_PER_MINUTE} a minute per sender; try again shortly")]
    RateLimited,
    #[error("idempotency key '{key}' already sent message {first}, and this send has {what}: nothing was sent (a new message needs a new key)")]
    KeyReused {
        key: String,
        first: String,
        what: &'static str,
    },
}

/// One session, found by what a command knows of it.
#[derive(Debug, Clone, Copy)]
pub enum Find<'a> {
    /// This machine's session with this key (the newest).
    Key(&'a str),
    Name(&'a str),
    Id(i64),
}

/// Which mailboxes a lean lookup (`Mailbox::briefs`) is for.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// Those named exactly `a` or `b` (the two ends of a send).
    Names(&'a str, &'a str),
    Id(i64),
}

/// A mailbox as a send or a monitor's wake-up needs it: no live state, no
/// pending count, so that looking it up is one cheap query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    pub address: Address,
    pub left: bool,
    /// The session key of the monitor that last claimed it, if any; for a
    /// mailbox of another machine (PostgreSQL) `@<host>`, never a local key.
    pub key: Option<String>,
}

/// One change to a session's row (`Mailbox::update`); monitors are woken.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    Name(&'a str),
    Label(&'a str),
    /// Mark it left (no broadcasts; direct sends refused); its monitor, if
    /// any, sees that and exits.
    Left,
}

/// What a backend's send transaction did, for `Verbs::send` to report.
#[derive(Debug, Clone)]
pub struct Written {
    /// The message id (the earlier one's, for a duplicate).
    pub id: String,
    /// The recipients (id, name), by name.
    pub recipients: Vec<(i64, String)>,
    /// An earlier send with the same idempotency key: nothing was written.
    pub duplicate: bool,
    /// Which recipients had a live monitor, when the transaction could
    /// tell (`None`: `Verbs::send` asks).
    pub online: Option<HashSet<i64>>,
}

/// An earlier send with the same idempotency key, as the send transaction
/// found it: what `rules::repeated` compares with the new one.
#[derive(Debug, Clone)]
pub struct Earlier {
    pub id: String,
    pub kind: String,
    pub text: String,
    pub in_reply_to: Option<String>,
    /// The recipients (id, name), by name.
    pub recipients: Vec<(i64, String)>,
}

/// The primitives of one database: how it stores, finds and wakes. What the
/// product decides over them (names, recipients, duplicates, limits) is
/// written once, in `Verbs`. Implemented by `sqlite::SqliteStore` and
/// `postgres::PostgresStore`.
pub trait Mailbox {
    /// Where the mailbox lives, for `status` (a path or a masked URL).
    fn location(&self) -> String;
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// One session with its live state and pending count.
    fn find(&self, by: Find) -> Result<Option<Session>>;
    /// Sessions with live state and pending counts, by name.
    fn sessions(&self, include_left: bool) -> Result<Vec<Session>>;
    /// Sessions that have not left whose names start with `prefix`, by name.
    fn sessions_with_prefix(&self, prefix: &str) -> Result<Vec<Session>>;
    /// Lean lookups (left ones included; in no particular order), in one query.
    fn briefs(&self, which: Which) -> Result<Vec<Brief>>;
    /// Register a mailbox without a monitor (offline), if it does not exist.
    fn register(&self, name: &str, key: Option<&str>) -> Result<Session>;

    /// Take exactly `name` for a monitor (created if new; an offline one
    /// taken over, pending mail included), unless a live monitor holds it.
    fn claim_exact(&self, name: &str, req: &ClaimRequest) -> Result<Option<Claim>>;
    /// Mark a session offline after its monitor stops (unless it has left).
    fn release(&self, session_id: i64) -> Result<()>;
    fn is_online(&self, session_id: i64) -> bool;
    /// Which of these sessions have a live monitor.
    fn online_of(&self, ids: &[i64]) -> Result<HashSet<i64>> {
        Ok(ids
            .iter()
            .copied()
            .filter(|id| self.is_online(*id))
            .collect())
    }
    /// Change one field of a session and wake the monitors.
    fn update(&self, session_id: i64, change: Change) -> Result<()>;

    fn remembered_label(&self, project: &str) -> Result<Option<String>>;
    /// Remember a label for a project; an empty label forgets it.
    fn remember_label(&self, project: &str, label: &str) -> Result<()>;

    /// The send transaction: register a new `--from` sender, find an earlier
    /// send with the same key (answered by `rules::repeated`), choose the
    /// recipients (`rules::check_rate`, `rules::check_recipients` for a
    /// broadcast; a left recipient refused), write message and deliveries,
    /// wake the monitors; nothing is written when anything is refused.
    fn write_message(&self, msg: &NewMessage) -> Result<Written>;
    /// Undelivered mail for a mailbox in commit order, after `after_seq`,
    /// texts cut to `LINE_PREFIX_CHARS`.
    fn pending(&self, session_id: i64, after_seq: i64, limit: usize) -> Result<Vec<Message>>;
    /// Record that these were handed to their reader, and how (`via`: a
    /// `store::via` name).
    fn mark_delivered(&self, session_id: i64, seqs: &[i64], via: &str) -> Result<()>;
    /// The first two messages (by id) whose ids are at or after `id_prefix`
    /// (upper case), whole texts: `Verbs::message` decides which it is.
    fn messages_from(&self, id_prefix: &str) -> Result<Vec<Message>>;
    fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryRow>>;

    /// The first reply to a question sent with `ask_until`, if one came: marked delivered and the
    /// wait ended, in one transaction (whole text).
    fn take_reply(&self, question_id: &str, asker_id: i64) -> Result<Option<Message>>;
    /// Stop waiting (timeout, interrupt): later replies reach the monitor.
    fn end_ask(&self, question_id: &str) -> Result<()>;
    /// Whether every recipient of the message has had it printed.
    fn is_delivered(&self, message_id: &str) -> Result<bool>;

    /// Start watching for changes; wake-ups are sent on `tx`.
    fn subscribe(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>>;
    /// Like `subscribe`, woken by mail to anyone too (`top`, `history
    /// --follow`), not only by this process's own mailboxes.
    fn subscribe_all(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>> {
        self.subscribe(tx)
    }
    /// True when another process committed something since the last call.
    fn changed(&self) -> Result<bool>;
    /// After `changed` said yes: whether sessions (names, states) may have
    /// changed too, not only mail. Says yes when unsure.
    fn sessions_changed(&self) -> bool {
        true
    }
    /// Fails when the store is gone or was replaced under us.
    fn check_intact(&self) -> Result<()>;

    /// Record a spawned peer and register its mailbox under `key` (an
    /// offline or left mailbox of that name is taken over).
    fn add_peer(&self, peer: &Peer, key: &str, project: &str) -> Result<Session>;
    fn peer(&self, name: &str) -> Result<Option<Peer>>;
    fn peers(&self, include_killed: bool) -> Result<Vec<Peer>>;
    fn peer_killed(&self, name: &str) -> Result<()>;

    /// Run `f` in one write transaction that runs alone among its kind
    /// (task queues and file leases, written once over `tx::Tx`); monitors
    /// are woken after the commit as `f` asked.
    fn transact(&self, f: &mut dyn FnMut(&mut dyn tx::Tx) -> Result<()>) -> Result<()>;

    /// Run one read-only query, all of it collected.
    fn query_readonly(&self, sql: &str) -> Result<SqlResult>;

    /// Run one read-only query, handing each row to `out` as it is read,
    /// within `limits` (else `SqlStopped`). This default collects the
    /// whole result with `query_readonly` first, under that backend's own
    /// time limit (not `limits.time`), and sees `limits.stop` only once it
    /// has the rows; a backend that can stream overrides it.
    fn query_stream(&self, sql: &str, limits: &SqlLimits, out: &mut dyn SqlSink) -> Result<()> {
        let stopped = || limits.stop.load(std::sync::atomic::Ordering::Relaxed);
        let result = self.query_readonly(sql)?;
        out.columns(&result.columns)?;
        for row in result.rows {
            if stopped() {
                break;
            }
            out.row(row)?;
        }
        if stopped() {
            return Err(SqlStopped::Interrupted.into());
        }
        Ok(())
    }
}

/// A result row of either backend, read by column position: how a row
/// becomes a `Session` or a `Message` (which state is live, when a monitor
/// pid is shown) is written once, in `session_from` and `message_from`,
/// over the same column order (`SESSION_COLUMNS`, `MESSAGE_COLUMNS` in
/// each backend).
pub(crate) trait Row {
    type Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    fn text(&self, i: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
}

/// A session from its columns 0–10 (id, name, key, label, stored state,
/// cwd, project, monitor pid, created, since, pending). It is online only
/// when stored so and `live` says its monitor still holds it; the monitor
/// pid is shown only then.
pub(crate) fn session_from<R: Row>(
    r: &R,
    live: impl FnOnce(i64) -> bool,
    host: String,
) -> Result<Session, R::Error> {
    let id = r.int(0)?;
    let state = match r.text(4)?.as_str() {
        "left" => State::Left,
        "online" if live(id) => State::Online,
        _ => State::Offline,
    };
    Ok(Session {
        id,
        name: r.text(1)?,
        key: r.opt_text(2)?,
        label: r.text(3)?,
        state,
        cwd: r.text(5)?,
        project: r.text(6)?,
        monitor_pid: match state {
            State::Online => r.opt_int(7)?,
            _ => None,
        },
        created_at: r.text(8)?,
        since: r.text(9)?,
        pending: r.int(10)?,
        host,
    })
}

/// A message from its columns 0–11 (seq, id, created, kind, sender, label,
/// chars, sender id, parent, thread, expiry, task queue) and its text.
pub(crate) fn message_from<R: Row>(r: &R, text: String) -> Result<Message, R::Error> {
    Ok(Message {
        seq: r.int(0)?,
        id: r.text(1)?,
        created_at: r.text(2)?,
        kind: r.text(3)?,
        sender: r.text(4)?,
        sender_label: r.text(5)?,
        chars: r.int(6)?,
        sender_id: r.opt_int(7)?,
        in_reply_to: r.opt_text(8)?,
        thread_id: r.text(9)?,
        expires_at: r.opt_text(10)?,
        queue: r.opt_text(11)?,
        text,
    })
}

/// Open the configured store: PostgreSQL when `INTER_SESSION_DATABASE_URL`
/// is set (and not empty), else SQLite in the data folder.
pub fn open() -> Result<Box<dyn Mailbox>> {
    match std::env::var("INTER_SESSION_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(Box::new(postgres::PostgresStore::connect(&url)?)),
        _ => Ok(Box::new(sqlite::SqliteStore::open_default()?)),
    }
}

/// The kind of store trouble in an error chain, if a person can act on it
/// (see `Trouble`): what `main` adds to the error line.
pub fn trouble(e: &anyhow::Error) -> Option<Trouble> {
    sqlite::trouble(e)
}

/// A LIKE pattern (with `ESCAPE '\'`) for names starting with `prefix`.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
    format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%")
    )
}

/// Current time in the stored text format.
pub fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_match_only_literal_prefixes() {
        assert_eq!(prefix_pattern("ali"), "ali%");
        assert_eq!(prefix_pattern("a_b%c\\"), "a\\_b\\%c\\\\%");
    }
}
