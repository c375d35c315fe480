//! The PostgreSQL backend: one database shared by sessions on several
//! machines, selected with `INTER_SESSION_DATABASE_URL=postgres://…`.
//!
//! What it does:
//! - Implements `Mailbox` with the same observable behaviour as the SQLite
//!   store (names and suffixes, offline replay in commit order, broadcasts
//!   and their rate limit, replies, `mail ask` holds, expiry, idempotent
//!   sends), over the schema in `migrations/postgres/`, applied in order under
//!   a transaction-level advisory lock and recorded in `schema_migrations`.
//! - Commit order: every send takes one transaction-level advisory lock
//!   before it inserts, so `seq` order is commit order, as a monitor's
//!   cursor needs.
//! - Presence: a monitor's claim takes a session-level advisory lock on the
//!   session id, on a dedicated connection. "Online" is the stored state
//!   `online` *and* that lock held (seen in `pg_lock_status()`, the function
//!   behind `pg_locks`), so a killed monitor
//!   reads offline as soon as its connection closes. TCP keepalives (client
//!   side, and the server's `tcp_keepalives_*`/`tcp_user_timeout` through the
//!   startup options) make a machine that died without closing its socket
//!   lose its names within about a minute.
//! - Wake-up: the monitor's dedicated connection LISTENs on its mailbox's
//!   channel (`inter_session_<id>`) and on `inter_session` (session changes)
//!   before `subscribe` returns; senders `pg_notify` in the inserting
//!   transaction, with the message's seq (ids only) as payload. A thread
//!   forwards notifications as `Wake::Change`.
//! - Faults: a lost connection is retried with backoff (briefly for a
//!   command, for minutes in a monitor); a monitor is told once
//!   (`Wake::Notice`, which it prints as
//!   `[inter-session] database connection lost; reconnecting`), then its
//!   link re-takes the lock, re-LISTENs and re-scans (if another monitor
//!   took the name meanwhile, `check_intact` fails and the monitor stops).
//!   A send whose commit answer was lost is checked by id before it is
//!   retried, so it is not doubled.
//! - TLS through rustls (ring provider; no OpenSSL), honouring `sslmode`
//!   (disable, allow/prefer, require, verify-ca, verify-full) and
//!   `sslrootcert` (a PEM file, or `system`); passwords from the URL,
//!   `PGPASSFILE` or `~/.pgpass`, never printed: `location()` masks them.
//!
//! What it does not do: client certificates (`sslcert`/`sslkey`), libpq's
//! `PG*` environment variables other than `PGPASSFILE`, or connection pooling
//! (each process holds its own connections: a command one, a monitor two —
//! queries, and the dedicated lock-and-LISTEN one; a pooler in transaction
//! mode would break both advisory locks and LISTEN, so point the URL at the
//! server or at a session-mode pool). Keep `max_connections` above twice the
//! number of monitors plus the commands running at once.
//! PostgreSQL text cannot hold U+0000: a body that has one is stored with `\`
//! doubled and U+0000 written `\0` (`text_escaped` set), and read back whole.
//!
//! Here: the store and its `Mailbox` verbs. Beside it: `target` (URL,
//! passwords, TLS), `error` (one-line errors, what to retry), `link` (the
//! monitor's lock-and-LISTEN thread), `schema` (migrations), `send` (the
//! send transaction, typed parameters), `rows` (row → struct) and `sql` (the
//! `sql` verb: what a query may call, a cursor, the time limit). `db copy`
//! is `store::copy`.

mod error;
mod link;
mod rows;
mod schema;
mod send;
mod sql;
mod target;
mod tx;
pub(in crate::store) use tx::bind_value;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, Statement};
use anyhow::{bail, Context, Result};

use super::prefix_pattern;
use super::{
    now_text, Address, Brief, Change, Claim, ClaimRequest, Find, HistoryFilter, HistoryRow,
    Mailbox, Message, NewMessage, Peer, Session, SqlResult, Subscription, Wake, Which, Written,
    LINE_PREFIX_CHARS,
};

use crate::datadir;
use crate::identity::this_host;
use error::{is_transient, tidy};
use link::{try_lock, Changes, Held, Link, LinkPresence, Notice};
pub(in crate::store) use rows::text_to_stored;
use rows::{
    lock_held_sql, message_from_row, peer_from_row, session_columns, session_from_row,
    stored_to_text, MESSAGE_COLUMNS, SQL_NOW,
};
use schema::migrate;
pub(in crate::store) use send::hold_sends;
use send::{typed, Typed};
pub use target::mask_url;
use target::Target;

/// First key of every advisory lock we take (two-key form), so that our
/// locks cannot collide with another application's in the same database.
const LOCK_NS: i32 = 0x1A7E_5E55;
/// Second key of the lock every send holds until it commits (commit order).
const SEND_KEY: i32 = -1;
/// Session changes (claims, renames, departures) are announced here.
const GLOBAL_CHANNEL: &str = "inter_session";
/// Every send and receipt is announced here too, for watchers of all the
/// traffic (`top`, `history --follow`); no monitor listens to it.
const TRAFFIC_CHANNEL: &str = "inter_session_traffic";
/// How long a command retries a transient failure before giving up.
const COMMAND_PATIENCE: Duration = Duration::from_secs(5);
/// How long a monitor keeps retrying before it gives up with an error.
const MONITOR_PATIENCE: Duration = Duration::from_secs(300);

pub struct PostgresStore {
    target: Arc<Target>,
    conn: RefCell<Option<Client>>,
    /// Statements prepared on `conn`, by name: the monitor's per-wake-up
    /// ones (a prepared statement skips parsing, and after a few runs
    /// planning). Emptied whenever `conn` is replaced.
    stmts: RefCell<HashMap<&'static str, Statement>>,
    host: String,
    changed: Arc<Changes>,
    last_look: Cell<Instant>,
    /// When `sessions_changed` last said yes.
    last_sessions_look: Cell<Instant>,
    link: RefCell<Option<Arc<Link>>>,
    /// Mailboxes whose channels a subscription listens on (claimed, or the
    /// asker of a `mail ask`).
    interest: RefCell<BTreeSet<i64>>,
    /// Subscribe to all the traffic too (`subscribe_all`).
    watch_all: Cell<bool>,
    /// Sessions this process claimed, with the monitor pid it recorded.
    claimed: RefCell<HashMap<i64, i64>>,
    notice: Arc<Notice>,
    /// A monitor's lock connection that did not get the name it tried,
    /// kept for the next candidate name.
    spare_locker: RefCell<Option<Client>>,
}

/// Create the local data folder (session-key locks stay on this machine)
/// without the SQLite-only checks (a network file system is fine here).
fn prepare_local_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = datadir::path()?;
    for (path, what) in [
        (dir.clone(), "data folder"),
        (datadir::locks_dir(&dir), "lock folder"),
    ] {
        if std::fs::symlink_metadata(&path).is_err() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("could not create {}", parent.display()))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("could not create {}", path.display()))
                }
            }
        }
        datadir::check_private(&path, what, true)?;
    }
    Ok(dir)
}

impl PostgresStore {
    /// Connect to the database at `url`, creating or upgrading the schema.
    pub fn connect(url: &str) -> Result<Self> {
        prepare_local_dir()?;
        Self::connect_only(url)
    }

    /// Connect without touching the local data folder.
    pub(in crate::store) fn connect_only(url: &str) -> Result<Self> {
        let target = Arc::new(Target::parse(url)?);
        let store = PostgresStore {
            target,
            conn: RefCell::new(None),
            stmts: RefCell::new(HashMap::new()),
            host: this_host(),
            changed: Arc::new(Changes::default()),
            last_look: Cell::new(Instant::now()),
            last_sessions_look: Cell::new(Instant::now()),
            link: RefCell::new(None),
            interest: RefCell::new(BTreeSet::new()),
            watch_all: Cell::new(false),
            claimed: RefCell::new(HashMap::new()),
            notice: Arc::new(Notice::default()),
            spare_locker: RefCell::new(None),
        };
        let masked = store.target.masked.clone();
        store.run(|c| migrate(c, &masked))?;
        Ok(store)
    }

    fn new_link(&self, held: Option<Held>, parked: Option<Client>) -> Arc<Link> {
        Link::new(
            Arc::clone(&self.target),
            held,
            parked,
            Arc::clone(&self.changed),
            Arc::clone(&self.notice),
        )
    }

    fn patience(&self) -> Duration {
        if self.notice.enabled() {
            MONITOR_PATIENCE
        } else {
            COMMAND_PATIENCE
        }
    }

    /// Run `f` on the connection (opened on first use), retrying on a fresh
    /// connection while the failure is transient. `f` must be safe to run
    /// again: a transaction, or an idempotent statement.
    pub(in crate::store) fn run<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.patience();
        let mut delay = Duration::from_millis(50);
        loop {
            let attempt = {
                let mut slot = self.conn.borrow_mut();
                let ready = match slot.as_mut() {
                    Some(c) if !c.is_closed() => Ok(()),
                    _ => match self.target.connect() {
                        Ok(c) => {
                            self.stmts.borrow_mut().clear();
                            *slot = Some(c);
                            Ok(())
                        }
                        Err(e) => Err(anyhow::Error::from(e)
                            .context(format!("could not connect to {}", self.target.masked))),
                    },
                };
                match (ready, slot.as_mut()) {
                    (Ok(()), Some(c)) => f(c),
                    (Err(e), _) => Err(e),
                    (Ok(()), None) => Err(anyhow::anyhow!("no database connection")),
                }
            };
            match attempt {
                Ok(v) => {
                    self.notice.back(false);
                    return Ok(v);
                }
                Err(e) if is_transient(&e) && Instant::now() < deadline => {
                    self.conn.replace(None);
                    self.stmts.borrow_mut().clear();
                    match self.link.borrow().as_ref() {
                        Some(link) => link.lost_connection(false),
                        None => {
                            self.notice.lost(false);
                        }
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(tidy(e, &self.target.masked)),
            }
        }
    }

    /// The statement `key` on connection `c`, prepared on first use.
    fn prepared(
        &self,
        c: &mut Client,
        key: &'static str,
        sql: impl FnOnce() -> String,
        types: &[Type],
    ) -> Result<Statement> {
        if let Some(st) = self.stmts.borrow().get(key) {
            return Ok(st.clone());
        }
        let st = c.prepare_typed(&sql(), types)?;
        self.stmts.borrow_mut().insert(key, st.clone());
        Ok(st)
    }

    fn query_sessions(&self, where_sql: &str, params: &[&dyn Typed]) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {} FROM sessions s WHERE {where_sql}",
            session_columns()
        );
        let params = typed(params);
        self.run(|c| {
            c.query_typed(sql.as_str(), &params)?
                .iter()
                .map(session_from_row)
                .collect()
        })
    }

    fn one_session(&self, where_sql: &str, params: &[&dyn Typed]) -> Result<Option<Session>> {
        Ok(self.query_sessions(where_sql, params)?.into_iter().next())
    }

    fn query_peers(&self, where_sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Peer>> {
        let sql = format!(
            "SELECT name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host \
             FROM peers WHERE {where_sql}"
        );
        self.run(|c| {
            c.query(sql.as_str(), params)?
                .iter()
                .map(peer_from_row)
                .collect()
        })
    }

    /// Live online state of several sessions at once.
    fn online_ids(&self, ids: &[i64]) -> Result<HashSet<i64>> {
        let sql = format!(
            "SELECT s.id FROM sessions s WHERE s.id = ANY($1) AND s.state = 'online' AND {}",
            lock_held_sql()
        );
        self.run(|c| {
            c.query_typed(sql.as_str(), &typed(&[&ids]))?
                .iter()
                .map(|r| r.try_get(0).map_err(anyhow::Error::from))
                .collect()
        })
    }
}

fn mailbox_channel(id: i64) -> String {
    format!("{GLOBAL_CHANNEL}_{id}")
}

/// Announce session changes (to every monitor) and wake these mailboxes.
fn notify(c: &mut Client, ids: &[i64], global: bool) -> std::result::Result<(), ::postgres::Error> {
    let payload = ids.first().map_or_else(String::new, |id| id.to_string());
    if global {
        c.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &payload])?;
    }
    c.execute(
        "SELECT pg_notify('inter_session_' || r, $1) FROM unnest($2::bigint[]) AS r",
        &[&payload, &ids],
    )?;
    Ok(())
}

impl Mailbox for PostgresStore {
    fn location(&self) -> String {
        self.target.masked.clone()
    }

    fn backend(&self) -> super::Backend {
        super::Backend::Postgres
    }

    fn find(&self, by: Find) -> Result<Option<Session>> {
        match by {
            // Session keys are local to their machine.
            Find::Key(key) => self.one_session(
                "s.session_key = $1 AND s.host = $2 ORDER BY s.since DESC, s.id DESC LIMIT 1",
                &[&key, &self.host],
            ),
            Find::Name(name) => self.one_session("s.name = $1", &[&name]),
            Find::Id(id) => self.one_session("s.id = $1", &[&id]),
        }
    }

    /// On the fresh connection of a `mail send`, each table and view a
    /// statement touches costs its planning a catalog load: one lean query.
    /// A monitor asks by id on every wake-up: prepared once.
    fn briefs(&self, which: Which) -> Result<Vec<Brief>> {
        // Session keys are local to their machine: another machine's comes
        // back as `@<host>`, which no key of this machine's equals, so a
        // mailbox claimed there never passes for ours.
        const COLUMNS: &str = "SELECT id, name, label, state = 'left', \
             CASE WHEN host = $1 THEN session_key ELSE '@' || host END FROM sessions";
        let brief = |r: &::postgres::Row| -> Result<Brief> {
            Ok(Brief {
                address: Address {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    label: r.try_get(2)?,
                },
                left: r.try_get(3)?,
                key: r.try_get(4)?,
            })
        };
        self.run(|c| {
            let rows = match which {
                Which::Names(a, b) => c.query_typed(
                    &format!("{COLUMNS} WHERE name = $2 OR name = $3"),
                    &typed(&[&self.host, &a, &b]),
                )?,
                Which::Id(id) => {
                    let st = self.prepared(
                        c,
                        "brief_by_id",
                        || format!("{COLUMNS} WHERE id = $2"),
                        &[Type::TEXT, Type::INT8],
                    )?;
                    c.query(&st, &[&self.host, &id])?
                }
            };
            rows.iter().map(brief).collect()
        })
    }

    fn sessions(&self, include_left: bool) -> Result<Vec<Session>> {
        if include_left {
            self.query_sessions("TRUE ORDER BY s.name", &[])
        } else {
            self.query_sessions("s.state <> 'left' ORDER BY s.name", &[])
        }
    }

    fn sessions_with_prefix(&self, prefix: &str) -> Result<Vec<Session>> {
        self.query_sessions(
            "s.name LIKE $1 ESCAPE '\\' AND s.state <> 'left' ORDER BY s.name",
            &[&prefix_pattern(prefix)],
        )
    }

    fn register(&self, name: &str, key: Option<&str>) -> Result<Session> {
        let now = now_text();
        self.run(|c| {
            c.execute(
                "INSERT INTO sessions (name, session_key, state, created_at, since, host) \
                 VALUES ($1, $2, 'offline', $3, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&name, &key, &now, &self.host],
            )?;
            Ok(())
        })?;
        self.find(Find::Name(name))?
            .context("session vanished after registering it")
    }

    fn claim_exact(&self, name: &str, req: &ClaimRequest) -> Result<Option<Claim>> {
        // The dedicated connection: it holds the lock and later LISTENs
        // (one that failed to get the name before is tried again).
        let spare = self.spare_locker.borrow_mut().take();
        let mut locker = match spare {
            Some(c) => c,
            None => {
                let deadline = Instant::now() + COMMAND_PATIENCE;
                loop {
                    match self.target.connect() {
                        Ok(c) => break c,
                        Err(e) => {
                            let e = anyhow::Error::from(e);
                            if !is_transient(&e) || Instant::now() >= deadline {
                                return Err(tidy(e, &self.target.masked));
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            }
        };
        {
            let candidate = name;
            let now = now_text();
            let id: i64 = self.run(|c| {
                c.execute(
                    "INSERT INTO sessions (name, state, created_at, since, host) VALUES ($1, 'offline', $2, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                    &[&candidate, &now, &self.host],
                )?;
                Ok(c.query_one("SELECT id FROM sessions WHERE name = $1", &[&candidate])?
                    .try_get(0)?)
            })?;
            if i32::try_from(id).is_err() {
                bail!("session id {id} is too large for an advisory lock");
            }
            let got = try_lock(&mut locker, id).map_err(|e| tidy(e.into(), &self.target.masked))?;
            if got {
                self.run(|c| {
                    let mut tx = c.transaction()?;
                    tx.execute(
                        "UPDATE sessions SET session_key = NULL WHERE session_key = $1 AND host = $2 AND id <> $3",
                        &[&req.key, &self.host, &id],
                    )?;
                    tx.execute(
                        "UPDATE sessions SET session_key = $1, label = $2, state = 'online', cwd = $3, project = $4, \
                         monitor_pid = $5, owner_pid = $6, since = $7, host = $8 WHERE id = $9",
                        &[
                            &req.key,
                            &req.label,
                            &req.cwd,
                            &req.project,
                            &req.monitor_pid,
                            &req.owner_pid,
                            &now,
                            &self.host,
                            &id,
                        ],
                    )?;
                    tx.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &id.to_string()])?;
                    tx.commit()?;
                    Ok(())
                })?;
                self.notice.enable();
                self.claimed.borrow_mut().insert(id, req.monitor_pid);
                self.interest.borrow_mut().insert(id);
                let held = Held {
                    id,
                    host: self.host.clone(),
                    pid: req.monitor_pid,
                };
                let link = self.new_link(Some(held), Some(locker));
                *self.link.borrow_mut() = Some(Arc::clone(&link));
                let session = self
                    .find(Find::Id(id))?
                    .context("session vanished after claiming it")?;
                return Ok(Some(Claim {
                    session,
                    presence: Box::new(LinkPresence(link)),
                }));
            }
            *self.spare_locker.borrow_mut() = Some(locker);
            Ok(None)
        }
    }

    fn release(&self, session_id: i64) -> Result<()> {
        let pid = self.claimed.borrow().get(&session_id).copied();
        let now = now_text();
        self.run(|c| {
            match pid {
                // Only our own claim: another monitor may have taken the
                // name while our connection was down.
                Some(pid) => c.execute(
                    "UPDATE sessions SET state = 'offline', monitor_pid = NULL, since = $2 \
                     WHERE id = $1 AND state = 'online' AND monitor_pid = $3 AND host = $4",
                    &[&session_id, &now, &pid, &self.host],
                )?,
                None => c.execute(
                    "UPDATE sessions SET state = 'offline', monitor_pid = NULL, since = $2 \
                     WHERE id = $1 AND state = 'online'",
                    &[&session_id, &now],
                )?,
            };
            notify(c, &[session_id], true)?;
            Ok(())
        })
    }

    fn is_online(&self, session_id: i64) -> bool {
        self.online_ids(&[session_id])
            .is_ok_and(|ids| ids.contains(&session_id))
    }

    fn update(&self, session_id: i64, change: Change) -> Result<()> {
        let now = now_text();
        self.run(|c| {
            match change {
                Change::Name(name) => c.execute(
                    "UPDATE sessions SET name = $1 WHERE id = $2",
                    &[&name, &session_id],
                )?,
                Change::Label(label) => c.execute(
                    "UPDATE sessions SET label = $1 WHERE id = $2",
                    &[&label, &session_id],
                )?,
                Change::Left => c.execute(
                    "UPDATE sessions SET state = 'left', monitor_pid = NULL, since = $2 WHERE id = $1",
                    &[&session_id, &now],
                )?,
            };
            notify(c, &[session_id], true)?;
            Ok(())
        })
        .with_context(|| format!("could not update session {session_id}"))
    }

    fn remembered_label(&self, project: &str) -> Result<Option<String>> {
        self.run(|c| {
            Ok(
                match c.query_opt(
                    "SELECT label FROM project_labels WHERE project = $1",
                    &[&project],
                )? {
                    Some(r) => Some(r.try_get(0)?),
                    None => None,
                },
            )
        })
    }

    fn remember_label(&self, project: &str, label: &str) -> Result<()> {
        self.run(|c| {
            if label.is_empty() {
                c.execute("DELETE FROM project_labels WHERE project = $1", &[&project])?;
            } else {
                c.execute(
                    "INSERT INTO project_labels (project, label) VALUES ($1, $2) \
                     ON CONFLICT (project) DO UPDATE SET label = excluded.label",
                    &[&project, &label],
                )?;
            }
            Ok(())
        })
    }

    fn write_message(&self, msg: &NewMessage) -> Result<Written> {
        let id = ulid::Ulid::new().to_string();
        let attempts = Cell::new(0u32);
        self.run(|c| {
            attempts.set(attempts.get() + 1);
            self.send_once(c, msg, &id, attempts.get() > 1)
        })
    }

    fn online_of(&self, ids: &[i64]) -> Result<HashSet<i64>> {
        self.online_ids(ids)
    }

    fn pending(&self, session_id: i64, after_seq: i64, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, substr(b.body, 1, $4)) \
             FROM deliveries d \
             JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = $1 AND d.delivered_at IS NULL AND d.message_seq > $2 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
               AND NOT EXISTS (SELECT 1 FROM task_rows t WHERE t.message_seq = m.seq \
                    AND (t.state <> 'claimed' OR t.holder_id <> d.recipient_id)) \
               AND (m.in_reply_to IS NULL OR NOT EXISTS (SELECT 1 FROM asks a \
                    WHERE a.question_id = m.in_reply_to AND a.asker_id = d.recipient_id AND a.\"until\" > {SQL_NOW})) \
             ORDER BY d.message_seq LIMIT $3"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let prefix = i32::try_from(LINE_PREFIX_CHARS).unwrap_or(i32::MAX);
        self.run(|c| {
            let st = self.prepared(
                c,
                "pending",
                || sql.clone(),
                &[Type::INT8, Type::INT8, Type::INT8, Type::INT4],
            )?;
            c.query(&st, &[&session_id, &after_seq, &limit, &prefix])?
                .iter()
                .map(message_from_row)
                .collect()
        })
    }

    fn mark_delivered(&self, session_id: i64, seqs: &[i64], via: &str) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let now = now_text();
        self.run(|c| {
            let st = self.prepared(
                c,
                "mark_delivered",
                || {
                    // Watchers of all traffic (`top`) see receipts change.
                    format!(
                        "WITH u AS (UPDATE deliveries SET delivered_at = $1, delivered_via = $4 \
                         WHERE recipient_id = $2 AND message_seq = ANY($3) AND delivered_at IS NULL \
                         RETURNING 1) \
                         SELECT pg_notify('{TRAFFIC_CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM u)"
                    )
                },
                &[Type::TEXT, Type::INT8, Type::INT8_ARRAY, Type::TEXT],
            )?;
            c.query(&st, &[&now, &session_id, &seqs, &via])
                .context("could not record delivery")?;
            Ok(())
        })
    }

    fn messages_from(&self, id_prefix: &str) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE m.id >= $1 ORDER BY m.id LIMIT 2"
        );
        self.run(|c| {
            c.query(sql.as_str(), &[&id_prefix])?
                .iter()
                .map(message_from_row)
                .collect()
        })
    }

    fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryRow>> {
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        // The newest `limit` rows; after a seq, the oldest (reading on).
        let cut = if f.after_seq.is_some() {
            "h.seq, h.recipient"
        } else {
            "h.seq DESC, h.recipient DESC"
        };
        let sql = format!(
            "SELECT * FROM ( \
               SELECT h.id, h.created_at, h.kind, h.sender, h.recipient, h.text, h.delivered_at, \
                      h.in_reply_to, h.thread_id, h.status, h.seq, m.text_escaped, \
                      h.delivered_via \
               FROM history h \
               JOIN messages m ON m.seq = h.seq \
               JOIN sessions r ON r.name = h.recipient \
               WHERE ($1::bigint IS NULL OR m.sender_id = $1 OR r.id = $1) \
                 AND ($2::bigint IS NULL OR m.sender_id = $2 OR r.id = $2) \
                 AND ($3::text IS NULL OR h.created_at >= $3) \
                 AND ($5::text IS NULL OR h.thread_id = $5) \
                 AND ($6::text IS NULL OR h.id = $6) \
                 AND ($7::bigint IS NULL OR h.seq > $7) \
               ORDER BY {cut} LIMIT $4 \
             ) x ORDER BY seq, recipient"
        );
        self.run(|c| {
            c.query(
                sql.as_str(),
                &[
                    &f.involving,
                    &f.with,
                    &f.since,
                    &limit,
                    &f.thread,
                    &f.message,
                    &f.after_seq,
                ],
            )?
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    sender: r.try_get(3)?,
                    recipient: r.try_get(4)?,
                    text: stored_to_text(r.try_get(5)?, r.try_get(11)?),
                    delivered_at: r.try_get(6)?,
                    in_reply_to: r.try_get(7)?,
                    thread_id: r.try_get(8)?,
                    status: r.try_get(9)?,
                    seq: r.try_get(10)?,
                    delivered_via: r.try_get(12)?,
                })
            })
            .collect()
        })
    }

    fn take_reply(&self, question_id: &str, asker_id: i64) -> Result<Option<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = $2 AND d.delivered_at IS NULL AND m.in_reply_to = $1 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
             ORDER BY m.seq LIMIT 1 FOR UPDATE OF d"
        );
        self.run(|c| {
            let mut tx = c.transaction()?;
            let reply = match tx.query_opt(sql.as_str(), &[&question_id, &asker_id])? {
                Some(r) => Some(message_from_row(&r)?),
                None => None,
            };
            if let Some(m) = &reply {
                tx.execute(
                    "UPDATE deliveries SET delivered_at = $3, delivered_via = 'ask' \
                     WHERE recipient_id = $1 AND message_seq = $2",
                    &[&asker_id, &m.seq, &now_text()],
                )?;
                tx.execute("DELETE FROM asks WHERE question_id = $1", &[&question_id])?;
            }
            tx.commit()?;
            Ok(reply)
        })
    }

    fn end_ask(&self, question_id: &str) -> Result<()> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            let asker = tx.query_opt(
                "DELETE FROM asks WHERE question_id = $1 RETURNING asker_id",
                &[&question_id],
            )?;
            // A reply that was held back is now the monitor's to print.
            if let Some(r) = asker {
                let id: i64 = r.try_get(0)?;
                tx.execute("SELECT pg_notify($1, '')", &[&mailbox_channel(id)])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn is_delivered(&self, message_id: &str) -> Result<bool> {
        let undelivered: i64 = self.run(|c| {
            Ok(c.query_one(
                "SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
                 WHERE m.id = $1 AND d.delivered_at IS NULL",
                &[&message_id],
            )?
            .try_get(0)?)
        })?;
        Ok(undelivered == 0)
    }

    fn subscribe_all(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>> {
        self.watch_all.set(true);
        self.subscribe(tx)
    }

    fn subscribe(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>> {
        let mut channels = vec![GLOBAL_CHANNEL.to_string()];
        if self.watch_all.get() {
            channels.push(TRAFFIC_CHANNEL.to_string());
        }
        channels.extend(self.interest.borrow().iter().map(|id| mailbox_channel(*id)));
        let existing = self.link.borrow().clone();
        let (link, owns) = match existing {
            Some(link) => (link, false),
            None => {
                let link = self.new_link(None, None);
                *self.link.borrow_mut() = Some(Arc::clone(&link));
                (link, true)
            }
        };
        let subscription = link.subscribe(tx, channels, owns)?;
        self.changed.any.store(false, Ordering::SeqCst);
        self.last_look.set(Instant::now());
        Ok(Box::new(subscription))
    }

    fn changed(&self) -> Result<bool> {
        // A notification since the last look; else, once a second, say yes
        // anyway (the caller runs one indexed query): a safety net for a
        // notification lost around a reconnect.
        let now = Instant::now();
        if self.changed.any.swap(false, Ordering::SeqCst) {
            self.last_look.set(now);
            return Ok(true);
        }
        if now.duration_since(self.last_look.get()) >= Duration::from_secs(1) {
            self.last_look.set(now);
            return Ok(true);
        }
        Ok(false)
    }

    fn sessions_changed(&self) -> bool {
        // Mail alone wakes a mailbox's own channel; everything else (and a
        // possibly missed notification) says yes, and so does a second
        // without a look (a killed monitor or a deleted row notifies nobody).
        let now = Instant::now();
        if self.changed.sessions.swap(false, Ordering::SeqCst)
            || now.duration_since(self.last_sessions_look.get()) >= Duration::from_secs(1)
        {
            self.last_sessions_look.set(now);
            return true;
        }
        false
    }

    fn check_intact(&self) -> Result<()> {
        if let Some(link) = self.link.borrow().as_ref() {
            if let Some(text) = link.lost_reason() {
                bail!("{text}");
            }
        }
        Ok(())
    }

    fn add_peer(&self, peer: &Peer, key: &str, project: &str) -> Result<Session> {
        let now = now_text();
        let id: i64 = self.run(|c| {
            let mut tx = c.transaction()?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO sessions (name, session_key, state, cwd, project, created_at, since, host) \
                     VALUES ($1, $2, 'offline', $3, $5, $4, $4, $6) \
                     ON CONFLICT (name) DO UPDATE SET session_key = excluded.session_key, cwd = excluded.cwd, \
                       project = excluded.project, host = excluded.host, \
                       state = CASE WHEN sessions.state = 'left' THEN 'offline' ELSE sessions.state END, \
                       since = excluded.since \
                     RETURNING id",
                    &[&peer.name, &key, &peer.cwd, &now, &project, &self.host],
                )?
                .try_get(0)?;
            tx.execute(
                "INSERT INTO peers (name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9) \
                 ON CONFLICT (name) DO UPDATE SET session_id = excluded.session_id, tmux_socket = excluded.tmux_socket, \
                   tmux_session = excluded.tmux_session, command = excluded.command, cwd = excluded.cwd, \
                   spawned_by = excluded.spawned_by, created_at = excluded.created_at, killed_at = NULL, host = excluded.host",
                &[
                    &peer.name,
                    &id,
                    &peer.tmux_socket,
                    &peer.tmux_session,
                    &peer.command,
                    &peer.cwd,
                    &peer.spawned_by,
                    &now,
                    &self.host,
                ],
            )?;
            tx.execute("SELECT pg_notify($1, $2)", &[&GLOBAL_CHANNEL, &id.to_string()])?;
            tx.commit()?;
            Ok(id)
        })?;
        self.find(Find::Id(id))?.context("peer mailbox vanished")
    }

    fn peer(&self, name: &str) -> Result<Option<Peer>> {
        Ok(self.query_peers("name = $1", &[&name])?.into_iter().next())
    }

    fn peers(&self, include_killed: bool) -> Result<Vec<Peer>> {
        if include_killed {
            self.query_peers("TRUE ORDER BY name", &[])
        } else {
            self.query_peers("killed_at IS NULL ORDER BY name", &[])
        }
    }

    fn peer_killed(&self, name: &str) -> Result<()> {
        let now = now_text();
        self.run(|c| {
            c.execute(
                "UPDATE peers SET killed_at = $2 WHERE name = $1",
                &[&name, &now],
            )?;
            Ok(())
        })
    }

    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn crate::store::tx::Tx) -> Result<()>,
    ) -> Result<()> {
        self.transact_impl(f)
    }

    fn query_readonly(&self, sql: &str) -> Result<SqlResult> {
        sql::collect(self, sql)
    }

    fn query_stream(
        &self,
        sql: &str,
        limits: &super::SqlLimits,
        out: &mut dyn super::SqlSink,
    ) -> Result<()> {
        sql::stream(self, sql, limits, out)
    }
}
