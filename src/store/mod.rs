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
pub mod postgres;
pub mod sqlite;

use crate::error::Trouble;

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
    pub limit: usize,
}

pub enum Recipients {
    /// One mailbox, by session id.
    One(i64),
    /// Every other session that has not left; `Some(project)` narrows it.
    All { project: Option<String> },
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
}

/// The store, in domain verbs. Implemented by `sqlite::SqliteStore` and
/// `postgres::PostgresStore`.
pub trait Mailbox {
    /// Where the mailbox lives, for `status` (a path or a masked URL).
    fn location(&self) -> String;
    /// Which backend this is.
    fn backend(&self) -> Backend;

    fn session_by_key(&self, key: &str) -> Result<Option<Session>>;
    fn session_by_name(&self, name: &str) -> Result<Option<Session>>;
    fn session_by_id(&self, id: i64) -> Result<Option<Session>>;
    /// Sessions with live state and pending counts, by name.
    fn sessions(&self, include_left: bool) -> Result<Vec<Session>>;
    /// Sessions that have not left whose names start with `prefix`, by name.
    fn sessions_with_prefix(&self, prefix: &str) -> Result<Vec<Session>>;
    /// The names of the sessions that have not left, in order.
    fn active_names(&self) -> Result<Vec<String>>;
    /// Exact name, else unique prefix among sessions that have not left.
    fn resolve(&self, name_or_prefix: &str) -> Result<Session> {
        if let Some(s) = self.session_by_name(name_or_prefix)? {
            if s.state == State::Left {
                return Err(LookupError::Left(s.name).into());
            }
            return Ok(s);
        }
        let mut found = self.sessions_with_prefix(name_or_prefix)?;
        found.retain(|s| prefix_reaches(name_or_prefix, &s.name));
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => {
                let near = near_names(self.active_names()?, name_or_prefix);
                let hint = if near.is_empty() {
                    String::new()
                } else {
                    format!("; did you mean: {}?", near.join(", "))
                };
                Err(LookupError::Unknown {
                    name: name_or_prefix.to_string(),
                    hint,
                }
                .into())
            }
            _ => Err(LookupError::Ambiguous {
                prefix: name_or_prefix.to_string(),
                matches: found.into_iter().map(|s| s.name).collect(),
            }
            .into()),
        }
    }
    /// The mailboxes named exactly `a` or `b` (left ones included; in no
    /// particular order), each with whether it has left: what a send needs,
    /// with no live state and no pending count, in one query.
    fn briefs(&self, a: &str, b: &str) -> Result<Vec<(Address, bool)>>;
    /// The mailbox named exactly `name` (left ones included), as a send
    /// needs it: cheaper than `session_by_name`.
    fn address(&self, name: &str) -> Result<Option<Address>> {
        Ok(self.briefs(name, name)?.pop().map(|(a, _)| a))
    }
    /// The two ends of a direct send, looked up together: the sender by
    /// exact name (`None` when not registered yet) and the recipient as
    /// `resolve_address` finds it.
    fn send_ends(&self, from: &str, to: &str) -> Result<(Option<Address>, Address)> {
        let mut sender = None;
        let mut recipient = None;
        for (a, left) in self.briefs(from, to)? {
            if a.name == from {
                sender = Some(a.clone());
            }
            if a.name == to {
                recipient = Some((a, left));
            }
        }
        Ok((sender, exact_or_resolved(self, to, recipient)?))
    }
    /// A mailbox's name and whether it has left (what a monitor checks on
    /// each wake-up): cheaper than `session_by_id`.
    fn name_and_left(&self, id: i64) -> Result<Option<(String, bool)>> {
        Ok(self
            .session_by_id(id)?
            .map(|s| (s.name, s.state == State::Left)))
    }
    /// `resolve`, as a send needs it.
    fn resolve_address(&self, name_or_prefix: &str) -> Result<Address> {
        let exact = self.briefs(name_or_prefix, name_or_prefix)?.pop();
        exact_or_resolved(self, name_or_prefix, exact)
    }
    /// Register a mailbox without a monitor (offline), if it does not exist.
    fn register(&self, name: &str, key: Option<&str>) -> Result<Session>;

    /// Take `req.name` (or `name-2`, `-3`, … when a live monitor holds it) for
    /// a monitor; an offline mailbox is taken over, pending mail included.
    fn claim(&self, req: &ClaimRequest) -> Result<Claim>;
    /// Mark a session offline after its monitor stops (unless it has left).
    fn release(&self, session_id: i64) -> Result<()>;
    fn is_online(&self, session_id: i64) -> bool;

    fn rename(&self, session_id: i64, new_name: &str) -> Result<()>;
    fn relabel(&self, session_id: i64, label: &str) -> Result<()>;
    /// Mark left; returns the monitor pid if one was running.
    fn disconnect(&self, session_id: i64) -> Result<Option<i64>>;

    fn remembered_label(&self, project: &str) -> Result<Option<String>>;
    /// Remember a label for a project; an empty label forgets it.
    fn remember_label(&self, project: &str, label: &str) -> Result<()>;

    fn send(&self, msg: &NewMessage) -> Result<Sent>;
    /// Undelivered mail for a mailbox in commit order, after `after_seq`,
    /// texts cut to `LINE_PREFIX_CHARS`.
    fn pending(&self, session_id: i64, after_seq: i64, limit: usize) -> Result<Vec<Message>>;
    fn mark_delivered(&self, session_id: i64, seqs: &[i64]) -> Result<()>;
    /// One message by id or unique id prefix, whole text.
    fn message(&self, id_prefix: &str) -> Result<Message>;
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

/// The recipient `name_or_prefix` of a send, given its exact-name `briefs`
/// row (if any): a prefix or an unknown name goes through `resolve`, which
/// says which it is.
fn exact_or_resolved<M: Mailbox + ?Sized>(
    store: &M,
    name_or_prefix: &str,
    exact: Option<(Address, bool)>,
) -> Result<Address> {
    match exact {
        Some((a, true)) => Err(LookupError::Left(a.name).into()),
        Some((a, false)) => Ok(a),
        None => Ok(store.resolve(name_or_prefix)?.address()),
    }
}

/// Whether a recipient given as `prefix` may mean the longer `name`: only
/// when the name goes on with a letter (`ali` → `alice`), or with `-` and
/// not merely a number (`rev` → `rev-backend`). Never a numbered sibling:
/// `w1` is not `w10`, `w` is not `w2`, `alice` is not `alice-2` (the name a
/// second monitor takes when `alice` is held). Those are refused with the
/// near matches, so mail never silently reaches a session not meant.
pub fn prefix_reaches(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let rest = if prefix.ends_with('-') {
        rest
    } else {
        rest.strip_prefix('-').unwrap_or(rest)
    };
    rest.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Up to five of `names` close to `name`: one contains the other, or they
/// are at most two edits apart.
fn near_names(names: Vec<String>, name: &str) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| n.contains(name) || name.contains(n.as_str()) || edit_distance(n, name) <= 2)
        .take(5)
        .collect()
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

// Name rules shared by the backends.

/// Levenshtein distance, for "did you mean" hints on short names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The next candidate name after `name` is held live: `a` → `a-2`, `a-2` → `a-3`.
pub(crate) fn next_candidate(requested: &str, attempt: u32) -> String {
    let (base, start) = match requested.rsplit_once('-') {
        Some((base, n))
            if !base.is_empty() && n.len() <= 2 && n.parse::<u32>().is_ok_and(|n| n >= 2) =>
        {
            (base, n.parse::<u32>().unwrap_or(2))
        }
        _ => (requested, 1),
    };
    let suffix = format!("-{}", start + attempt);
    let keep = crate::identity::MAX_NAME_LEN
        .saturating_sub(suffix.len())
        .min(base.len());
    format!("{}{suffix}", base[..keep].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_match_only_literal_prefixes() {
        assert_eq!(prefix_pattern("ali"), "ali%");
        assert_eq!(prefix_pattern("a_b%c\\"), "a\\_b\\%c\\\\%");
    }

    #[test]
    fn a_prefix_never_reaches_a_numbered_sibling() {
        for (prefix, name) in [
            ("ali", "alice"),
            ("rev", "rev-backend"),
            ("rev-", "rev-backend"),
            ("w1", "w1-docs"),
            ("a", "a-b2"),
        ] {
            assert!(prefix_reaches(prefix, name), "{prefix} → {name}");
        }
        for (prefix, name) in [
            ("w1", "w10"),
            ("w", "w2"),
            ("alice", "alice-2"),
            ("w", "w-10"),
            ("w-", "w-1"),
            ("w", "w-1x"),
            ("bob", "bob"),
            ("bob", "alice"),
            ("rev", "rev-"),
        ] {
            assert!(!prefix_reaches(prefix, name), "{prefix} → {name}");
        }
    }

    #[test]
    fn near_names_are_contained_or_two_edits_away_at_most_five() {
        let names: Vec<String> = ["alice", "alfred", "bob", "alicia", "carol"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(near_names(names.clone(), "alcie"), ["alice", "alicia"]);
        assert_eq!(near_names(names.clone(), "bbo"), ["bob"]);
        assert_eq!(near_names(names.clone(), "ali"), ["alice", "alicia"]);
        assert!(near_names(names, "zzzzzz").is_empty());
        let many: Vec<String> = (0..9).map(|i| format!("bot{i}")).collect();
        assert_eq!(near_names(many, "bot").len(), 5);
    }
}
