//! The SQLite backend: one WAL-mode file in the data folder.
//!
//! Each process holds one connection for its whole run (a CLI command runs
//! one or two short transactions; a monitor pins its connection so that
//! `PRAGMA data_version` tells it cheaply whether anybody else committed).
//! Presence is an `flock` on `locks/session-<id>.lock`, held by the monitor.
//! Writers touch `mailbox.db.notify` after each commit to wake monitors.

use std::cell::Cell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::*;
use crate::datadir;
pub(crate) use open::{may_write, trouble};
use open::{migrate, open_connection, open_failed, recover_stale_siblings, schema_version};

mod open;
mod sql;
mod tx;
use crate::identity::this_host;
use crate::lock::{self, FileLock};
pub(in crate::store) use tx::read_value;

/// The schema, in order; `PRAGMA user_version` records how many are applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/0001_init.sql"),
    ),
    (
        "0002_peers",
        include_str!("../../../migrations/0002_peers.sql"),
    ),
    (
        "0003_conversations",
        include_str!("../../../migrations/0003_conversations.sql"),
    ),
    (
        "0004_receipts",
        include_str!("../../../migrations/0004_receipts.sql"),
    ),
    (
        "0005_tasks_leases",
        include_str!("../../../migrations/0005_tasks_leases.sql"),
    ),
];

/// The current time in SQL, in the stored text format (works in sqlite3 3.37).
const SQL_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The columns `message_from_row` reads, over `messages m` and `blobs b`.
const MESSAGE_COLUMNS: &str =
    "m.seq, m.id, m.created_at, m.kind, m.sender, m.sender_label, m.chars, \
     m.sender_id, m.in_reply_to, COALESCE(m.thread_id, m.id), m.expires_at, \
     (SELECT t.queue FROM task_rows t WHERE t.message_seq = m.seq)";

const SESSION_COLUMNS: &str = "s.id, s.name, s.session_key, s.label, s.state, s.cwd, s.project, \
     s.monitor_pid, s.created_at, s.since, \
     (SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
      WHERE d.recipient_id = s.id AND d.delivered_at IS NULL \
        AND (m.expires_at IS NULL OR m.expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))";

pub struct SqliteStore {
    dir: PathBuf,
    db_path: PathBuf,
    conn: Connection,
    /// Name of the database file's identity when opened, to notice replacement.
    identity: (u64, u64),
    /// `PRAGMA data_version` when last looked at, for `changed`.
    seen_version: Cell<i64>,
}

struct LockPresence(#[allow(dead_code)] FileLock);
impl Presence for LockPresence {}

/// Open (creating) and close the sentinel file: the close after a write-open
/// is what wakes the monitors watching it.
fn touch_sentinel(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map(drop)
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl SqliteStore {
    pub fn open_default() -> Result<Self> {
        let dir = datadir::path()?;
        Self::open_in(&dir)
    }

    pub fn open_in(dir: &Path) -> Result<Self> {
        datadir::prepare(dir)?;
        let db_path = dir.join(datadir::DB_FILE);
        datadir::check_private(&db_path, "database", false)?;
        let locks = datadir::locks_dir(dir);
        if !locks.exists() {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&locks) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("could not create {}", locks.display()))
                }
            }
        }
        datadir::check_private(&locks, "lock folder", true)?;

        // A folder or database we may not write is still read: `list`,
        // `history`, `sql` and `inbox read` work, and a write fails saying
        // the mailbox is read-only.
        let read_only = db_path.exists() && !(may_write(dir) && may_write(&db_path));
        if !read_only {
            recover_stale_siblings(&db_path)?;
        }
        let conn = open_connection(&db_path, read_only)?;
        let version = schema_version(&conn).map_err(|e| open_failed(&db_path, e))?;
        if version < MIGRATIONS.len() && read_only {
            bail!(
                "the mailbox at {} is read-only here and needs an upgrade to this version's schema; make it writable",
                db_path.display()
            );
        }
        if version < MIGRATIONS.len() {
            // First-time set-up is serialised: two processes starting on a
            // fresh folder would otherwise race on the WAL switch and the
            // schema, and one would fail with "database is locked".
            let _setup = FileLock::acquire(&locks.join("setup.lock"))?;
            migrate(&conn, &db_path)?;
        } else if version > MIGRATIONS.len() {
            bail!(
                "the mailbox at {} has schema version {version}, newer than this inter-session knows ({}); upgrade inter-session",
                db_path.display(),
                MIGRATIONS.len()
            );
        }
        if !read_only {
            datadir::make_private(&db_path)?;
        }
        let identity = file_identity(&db_path).context("the database vanished while opening it")?;
        Ok(SqliteStore {
            dir: dir.to_path_buf(),
            db_path,
            conn,
            identity,
            seen_version: Cell::new(0),
        })
    }

    /// The connection, for `store::copy` (it reads every table as stored).
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn session_lock_path(&self, id: i64) -> PathBuf {
        datadir::locks_dir(&self.dir).join(format!("session-{id}.lock"))
    }

    /// Wake monitors: called after every commit that a monitor may care about.
    fn touch(&self) {
        // Failing to touch only delays a monitor to its fallback poll.
        let _ = touch_sentinel(&datadir::sentinel(&self.dir));
    }

    fn session_from_row(&self, r: &rusqlite::Row) -> rusqlite::Result<Session> {
        // A stored "online" is live only while the monitor holds its lock;
        // one SQLite file serves one machine.
        session_from(
            r,
            |id| lock::is_held(&self.session_lock_path(id)),
            this_host(),
        )
    }

    fn query_sessions(&self, where_sql: &str, param: &dyn rusqlite::ToSql) -> Result<Vec<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE {where_sql}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([param], |r| self.session_from_row(r))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn one_session(&self, where_sql: &str, param: &dyn rusqlite::ToSql) -> Result<Option<Session>> {
        Ok(self.query_sessions(where_sql, param)?.into_iter().next())
    }
}

impl SqliteStore {
    fn query_peers(&self, where_sql: &str, param: &dyn rusqlite::ToSql) -> Result<Vec<Peer>> {
        let sql = format!(
            "SELECT name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at \
             FROM peers WHERE {where_sql}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([param], |r| {
            Ok(Peer {
                name: r.get(0)?,
                session_id: r.get(1)?,
                tmux_socket: r.get(2)?,
                tmux_session: r.get(3)?,
                command: r.get(4)?,
                cwd: r.get(5)?,
                spawned_by: r.get(6)?,
                created_at: r.get(7)?,
                killed_at: r.get(8)?,
                // One machine per SQLite mailbox.
                host: this_host(),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl Mailbox for SqliteStore {
    fn location(&self) -> String {
        self.db_path.display().to_string()
    }

    fn backend(&self) -> super::Backend {
        super::Backend::Sqlite
    }

    fn find(&self, by: Find) -> Result<Option<Session>> {
        match by {
            Find::Key(key) => self.one_session(
                "s.session_key = ?1 ORDER BY s.since DESC, s.id DESC LIMIT 1",
                &key,
            ),
            Find::Name(name) => self.one_session("s.name = ?1", &name),
            Find::Id(id) => self.one_session("s.id = ?1", &id),
        }
    }

    fn sessions(&self, include_left: bool) -> Result<Vec<Session>> {
        let cond = if include_left {
            "?1 = ?1 ORDER BY s.name"
        } else {
            "s.state <> ?1 ORDER BY s.name"
        };
        self.query_sessions(cond, &"left")
    }

    fn briefs(&self, which: Which) -> Result<Vec<Brief>> {
        const COLUMNS: &str = "SELECT id, name, label, state = 'left', session_key FROM sessions";
        let brief = |r: &rusqlite::Row| {
            Ok(Brief {
                address: Address {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    label: r.get(2)?,
                },
                left: r.get(3)?,
                key: r.get(4)?,
            })
        };
        let rows = match which {
            Which::Names(a, b) => self
                .conn
                .prepare_cached(&format!("{COLUMNS} WHERE name = ?1 OR name = ?2"))?
                .query_map([a, b], brief)?
                .collect::<rusqlite::Result<Vec<_>>>(),
            Which::Id(id) => self
                .conn
                .prepare_cached(&format!("{COLUMNS} WHERE id = ?1"))?
                .query_map([id], brief)?
                .collect::<rusqlite::Result<Vec<_>>>(),
        };
        Ok(rows?)
    }

    fn sessions_with_prefix(&self, prefix: &str) -> Result<Vec<Session>> {
        self.query_sessions(
            "s.name LIKE ?1 ESCAPE '\\' AND s.state <> 'left' ORDER BY s.name",
            &prefix_pattern(prefix),
        )
    }

    fn register(&self, name: &str, key: Option<&str>) -> Result<Session> {
        let now = now_text();
        self.conn.execute(
            "INSERT OR IGNORE INTO sessions (name, session_key, state, created_at, since) VALUES (?1, ?2, 'offline', ?3, ?3)",
            params![name, key, now],
        )
        .with_context(|| format!("could not register '{name}'"))?;
        self.find(Find::Name(name))?
            .context("session vanished after registering it")
    }

    fn claim_exact(&self, name: &str, req: &ClaimRequest) -> Result<Option<Claim>> {
        let now = now_text();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO sessions (name, state, created_at, since) VALUES (?1, 'offline', ?2, ?2)",
                params![name, now],
            )
            .with_context(|| format!("could not register '{name}'"))?;
        let id: i64 =
            self.conn
                .query_row("SELECT id FROM sessions WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?;
        // A brief wait: a `list` probing the lock at this instant must not
        // make us think the name is held.
        let Some(lock) =
            FileLock::acquire_within(&self.session_lock_path(id), Duration::from_millis(30))?
        else {
            return Ok(None);
        };
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "UPDATE sessions SET session_key = NULL WHERE session_key = ?1 AND id <> ?2",
            params![req.key, id],
        )?;
        tx.execute(
            "UPDATE sessions SET session_key = ?1, label = ?2, state = 'online', cwd = ?3, project = ?4, \
             monitor_pid = ?5, owner_pid = ?6, since = ?7 WHERE id = ?8",
            params![req.key, req.label, req.cwd, req.project, req.monitor_pid, req.owner_pid, now, id],
        )?;
        tx.commit()
            .with_context(|| format!("could not claim '{name}'"))?;
        self.touch();
        let session = self
            .find(Find::Id(id))?
            .context("session vanished after claiming it")?;
        Ok(Some(Claim {
            session,
            presence: Box::new(LockPresence(lock)),
        }))
    }

    fn release(&self, session_id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET state = 'offline', monitor_pid = NULL, since = ?2 WHERE id = ?1 AND state = 'online'",
            params![session_id, now_text()],
        )
        .context("could not mark the session offline")?;
        self.touch();
        Ok(())
    }

    fn is_online(&self, session_id: i64) -> bool {
        lock::is_held(&self.session_lock_path(session_id))
    }

    fn update(&self, session_id: i64, change: Change) -> Result<()> {
        match change {
            Change::Name(name) => self.conn.execute(
                "UPDATE sessions SET name = ?1 WHERE id = ?2",
                params![name, session_id],
            ),
            Change::Label(label) => self.conn.execute(
                "UPDATE sessions SET label = ?1 WHERE id = ?2",
                params![label, session_id],
            ),
            Change::Left => self.conn.execute(
                "UPDATE sessions SET state = 'left', monitor_pid = NULL, since = ?2 WHERE id = ?1",
                params![session_id, now_text()],
            ),
        }
        .with_context(|| format!("could not update session {session_id}"))?;
        self.touch();
        Ok(())
    }

    fn remembered_label(&self, project: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT label FROM project_labels WHERE project = ?1",
                [project],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn remember_label(&self, project: &str, label: &str) -> Result<()> {
        if label.is_empty() {
            self.conn
                .execute("DELETE FROM project_labels WHERE project = ?1", [project])
                .context("could not forget the project's label")?;
        } else {
            self.conn
                .execute(
                    "INSERT INTO project_labels (project, label) VALUES (?1, ?2) \
                 ON CONFLICT (project) DO UPDATE SET label = excluded.label",
                    params![project, label],
                )
                .context("could not remember the project's label")?;
        }
        Ok(())
    }

    fn write_message(&self, msg: &NewMessage) -> Result<Written> {
        let id = ulid::Ulid::new().to_string();
        let now = now_text();
        let chars = msg.text.chars().count();
        // IMMEDIATE: take the write lock up front so busy waits happen before
        // we read anything, never as a failed upgrade half-way.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;

        // A new `--from` sender (id 0) is registered here, inside the
        // transaction, so a refused send leaves no trace.
        let sender_id = if msg.sender.id == 0 {
            tx.execute(
                "INSERT OR IGNORE INTO sessions (name, state, created_at, since) VALUES (?1, 'offline', ?2, ?2)",
                params![msg.sender.name, now],
            )?;
            tx.query_row(
                "SELECT id FROM sessions WHERE name = ?1",
                [&msg.sender.name],
                |r| r.get(0),
            )?
        } else {
            msg.sender.id
        };
        if let Some(key) = msg.idempotency_key {
            let since = (chrono::Utc::now() - chrono::Duration::hours(24))
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            let earlier: Option<i64> = tx
                .query_row(
                    "SELECT seq FROM messages WHERE sender_id = ?1 AND idempotency_key = ?2 \
                     AND created_at >= ?3 ORDER BY seq LIMIT 1",
                    params![sender_id, key, since],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(seq) = earlier {
                return rules::repeated(earlier_send(&tx, seq)?, msg);
            }
        }
        let recipients: Vec<(i64, String)> = match &msg.to {
            Recipients::One(rid) => {
                let row: Option<(String, String)> = tx
                    .query_row(
                        "SELECT name, state FROM sessions WHERE id = ?1",
                        [rid],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match row {
                    None => bail!("the recipient's mailbox vanished; try again"),
                    Some((name, state)) if state == "left" => {
                        return Err(LookupError::Left(name).into())
                    }
                    Some((name, _)) => vec![(*rid, name)],
                }
            }
            Recipients::All { project } => {
                let since = (chrono::Utc::now() - chrono::Duration::seconds(60))
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                let recent: i64 = tx.query_row(
                    "SELECT count(*) FROM messages WHERE sender_id = ?1 AND kind = 'broadcast' AND created_at >= ?2",
                    params![sender_id, since],
                    |r| r.get(0),
                )?;
                rules::check_rate(recent)?;
                let mut stmt = tx.prepare_cached(
                    "SELECT id, name FROM sessions WHERE state <> 'left' AND id <> ?1 \
                     AND (?2 IS NULL OR project = ?2) ORDER BY name",
                )?;
                let rows = stmt
                    .query_map(params![sender_id, project], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rules::check_recipients(&rows)?;
                rows
            }
            Recipients::Queue(_) => Vec::new(),
        };

        let (inline, blob_id) = if chars <= INLINE_CHARS {
            (Some(msg.text), None)
        } else {
            tx.execute("INSERT INTO blobs (body) VALUES (?1)", [msg.text])?;
            (None, Some(tx.last_insert_rowid()))
        };
        let kind = match msg.to {
            Recipients::One(_) | Recipients::Queue(_) => "direct",
            Recipients::All { .. } => "broadcast",
        };
        let (in_reply_to, thread_id) = match msg.reply_to {
            Some(parent) => (Some(parent.id.as_str()), parent.thread_id.as_str()),
            None => (None, id.as_str()),
        };
        tx.prepare_cached(
            "INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, text, blob_id, \
                                   in_reply_to, thread_id, expires_at, idempotency_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            id,
            now,
            kind,
            sender_id,
            msg.sender.name,
            msg.sender.label,
            chars as i64,
            inline,
            blob_id,
            in_reply_to,
            thread_id,
            msg.expires_at,
            msg.idempotency_key
        ])?;
        let seq = tx.last_insert_rowid();
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO deliveries (message_seq, recipient_id) VALUES (?1, ?2)",
            )?;
            for (rid, _) in &recipients {
                ins.execute(params![seq, rid])?;
            }
        }
        if let Recipients::Queue(t) = &msg.to {
            tx.execute(
                "INSERT INTO task_rows (message_seq, queue, max_attempts, lease_ms, grace_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![seq, t.queue, t.max_attempts, t.lease_ms, t.grace_ms],
            )?;
        }
        if let Some(until) = &msg.ask_until {
            tx.execute(
                "INSERT OR REPLACE INTO asks (question_id, asker_id, until) VALUES (?1, ?2, ?3)",
                params![id, sender_id, until],
            )?;
        }
        tx.commit().context("could not commit the message")?;
        self.touch();
        Ok(Written {
            id,
            recipients,
            duplicate: false,
            online: None,
        })
    }

    fn pending(&self, session_id: i64, after_seq: i64, limit: usize) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, substr(b.body, 1, ?3)) \
             FROM deliveries d \
             JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = ?1 AND d.delivered_at IS NULL AND d.message_seq > ?2 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
               AND NOT EXISTS (SELECT 1 FROM task_rows t WHERE t.message_seq = m.seq \
                    AND (t.state <> 'claimed' OR t.holder_id <> d.recipient_id)) \
               AND (m.in_reply_to IS NULL OR NOT EXISTS (SELECT 1 FROM asks a \
                    WHERE a.question_id = m.in_reply_to AND a.asker_id = d.recipient_id AND a.until > {SQL_NOW})) \
             ORDER BY d.message_seq LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(
            // The limit is part of the SQL text: a bound LIMIT makes SQLite
            // re-prepare the statement on every call.
            params![session_id, after_seq, LINE_PREFIX_CHARS as i64],
            message_from_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn mark_delivered(&self, session_id: i64, seqs: &[i64], via: &str) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let now = now_text();
        let tx = self.conn.unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE deliveries SET delivered_at = ?1, delivered_via = ?4 \
                 WHERE recipient_id = ?2 AND message_seq = ?3 AND delivered_at IS NULL",
            )?;
            for seq in seqs {
                stmt.execute(params![now, session_id, seq, via])?;
            }
        }
        tx.commit().context("could not record delivery")?;
        Ok(())
    }

    fn messages_from(&self, id_prefix: &str) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE m.id >= ?1 ORDER BY m.id LIMIT 2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let found = stmt
            .query_map([id_prefix], message_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(found)
    }

    fn history(&self, f: &HistoryFilter) -> Result<Vec<HistoryRow>> {
        // The newest `limit` rows; after a seq, the oldest (reading on).
        let cut = if f.after_seq.is_some() {
            "h.seq, h.recipient"
        } else {
            "h.seq DESC, h.recipient DESC"
        };
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT * FROM ( \
               SELECT h.id, h.created_at, h.kind, h.sender, h.recipient, h.text, h.delivered_at, \
                      h.in_reply_to, h.thread_id, h.status, h.seq, h.delivered_via \
               FROM history h \
               JOIN messages m ON m.seq = h.seq \
               JOIN sessions r ON r.name = h.recipient \
               WHERE (?1 IS NULL OR m.sender_id = ?1 OR r.id = ?1) \
                 AND (?2 IS NULL OR m.sender_id = ?2 OR r.id = ?2) \
                 AND (?3 IS NULL OR h.created_at >= ?3) \
                 AND (?5 IS NULL OR h.thread_id = ?5) \
                 AND (?6 IS NULL OR h.id = ?6) \
                 AND (?7 IS NULL OR h.seq > ?7) \
               ORDER BY {cut} LIMIT ?4 \
             ) ORDER BY seq, recipient"
        ))?;
        let rows = stmt.query_map(
            params![
                f.involving,
                f.with,
                f.since,
                i64::try_from(f.limit).unwrap_or(i64::MAX),
                f.thread,
                f.message,
                f.after_seq
            ],
            |r| {
                Ok(HistoryRow {
                    id: r.get(0)?,
                    created_at: r.get(1)?,
                    kind: r.get(2)?,
                    sender: r.get(3)?,
                    recipient: r.get(4)?,
                    text: r.get(5)?,
                    delivered_at: r.get(6)?,
                    in_reply_to: r.get(7)?,
                    thread_id: r.get(8)?,
                    status: r.get(9)?,
                    seq: r.get(10)?,
                    delivered_via: r.get(11)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn take_reply(&self, question_id: &str, asker_id: i64) -> Result<Option<Message>> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, COALESCE(m.text, b.body) \
             FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
             LEFT JOIN blobs b ON b.id = m.blob_id \
             WHERE d.recipient_id = ?2 AND d.delivered_at IS NULL AND m.in_reply_to = ?1 \
               AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW}) \
             ORDER BY m.seq LIMIT 1"
        );
        let reply = tx
            .query_row(&sql, params![question_id, asker_id], message_from_row)
            .optional()?;
        if let Some(m) = &reply {
            tx.execute(
                "UPDATE deliveries SET delivered_at = ?3, delivered_via = 'ask' \
                 WHERE recipient_id = ?1 AND message_seq = ?2",
                params![asker_id, m.seq, now_text()],
            )?;
            tx.execute("DELETE FROM asks WHERE question_id = ?1", [question_id])?;
        }
        tx.commit().context("could not take the reply")?;
        if reply.is_some() {
            self.touch();
        }
        Ok(reply)
    }

    fn end_ask(&self, question_id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM asks WHERE question_id = ?1", [question_id])
            .context("could not end the wait for a reply")?;
        // A reply that was held back is now the monitor's to print.
        self.touch();
        Ok(())
    }

    fn is_delivered(&self, message_id: &str) -> Result<bool> {
        let undelivered: i64 = self.conn.query_row(
            "SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
             WHERE m.id = ?1 AND d.delivered_at IS NULL",
            [message_id],
            |r| r.get(0),
        )?;
        Ok(undelivered == 0)
    }

    fn subscribe(&self, tx: Sender<Wake>) -> Result<Box<dyn Subscription>> {
        let guard = WatcherGuard::start(datadir::sentinel(&self.dir), tx)?;
        self.seen_version.set(data_version(&self.conn)?);
        Ok(Box::new(guard))
    }

    fn changed(&self) -> Result<bool> {
        let v = data_version(&self.conn)?;
        Ok(self.seen_version.replace(v) != v)
    }

    fn check_intact(&self) -> Result<()> {
        match file_identity(&self.db_path) {
            Some(id) if id == self.identity => Ok(()),
            Some(_) => bail!(
                "the database {} was replaced by another file",
                self.db_path.display()
            ),
            None => bail!("the database {} was deleted", self.db_path.display()),
        }
    }

    fn add_peer(&self, peer: &Peer, key: &str, project: &str) -> Result<Session> {
        let now = now_text();
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO sessions (name, session_key, state, cwd, project, created_at, since) \
             VALUES (?1, ?2, 'offline', ?3, ?5, ?4, ?4) \
             ON CONFLICT (name) DO UPDATE SET session_key = excluded.session_key, cwd = excluded.cwd, \
               project = excluded.project, \
               state = CASE WHEN state = 'left' THEN 'offline' ELSE state END, since = excluded.since",
            params![peer.name, key, peer.cwd, now, project],
        )?;
        let id: i64 = tx.query_row(
            "SELECT id FROM sessions WHERE name = ?1",
            [&peer.name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO peers (name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![peer.name, id, peer.tmux_socket, peer.tmux_session, peer.command, peer.cwd, peer.spawned_by, now],
        )?;
        tx.commit()
            .with_context(|| format!("could not record peer '{}'", peer.name))?;
        self.touch();
        self.find(Find::Id(id))?.context("peer mailbox vanished")
    }

    fn peer(&self, name: &str) -> Result<Option<Peer>> {
        Ok(self.query_peers("name = ?1", &name)?.into_iter().next())
    }

    fn peers(&self, include_killed: bool) -> Result<Vec<Peer>> {
        if include_killed {
            self.query_peers("?1 = ?1 ORDER BY name", &0)
        } else {
            self.query_peers("killed_at IS NULL AND ?1 = ?1 ORDER BY name", &0)
        }
    }

    fn peer_killed(&self, name: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE peers SET killed_at = ?2 WHERE name = ?1",
                params![name, now_text()],
            )
            .with_context(|| format!("could not mark peer '{name}' killed"))?;
        Ok(())
    }

    fn transact(
        &self,
        f: &mut dyn FnMut(&mut dyn crate::store::tx::Tx) -> Result<()>,
    ) -> Result<()> {
        self.transact_impl(f)
    }

    fn query_readonly(&self, sql: &str) -> Result<SqlResult> {
        struct Collect(SqlResult);
        impl SqlSink for Collect {
            fn columns(&mut self, names: &[String]) -> Result<()> {
                self.0.columns = names.to_vec();
                Ok(())
            }
            fn row(&mut self, values: Vec<serde_json::Value>) -> Result<()> {
                self.0.rows.push(values);
                Ok(())
            }
        }
        let mut all = Collect(SqlResult {
            columns: Vec::new(),
            rows: Vec::new(),
        });
        let limits = SqlLimits::new(Duration::from_secs(SQL_DEFAULT_SECS));
        self.query_stream(sql, &limits, &mut all)?;
        Ok(all.0)
    }

    fn query_stream(&self, sql: &str, limits: &SqlLimits, out: &mut dyn SqlSink) -> Result<()> {
        sql::query_stream(&self.db_path, sql, limits, out)
    }
}

/// The earlier send `seq` (same sender and idempotency key), as
/// `rules::same_send` compares it.
fn earlier_send(tx: &Connection, seq: i64) -> Result<Earlier> {
    let (id, kind, text, in_reply_to): (String, String, String, Option<String>) = tx.query_row(
        "SELECT m.id, m.kind, COALESCE(m.text, b.body), m.in_reply_to \
         FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id WHERE m.seq = ?1",
        [seq],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let recipients = tx
        .prepare_cached(
            "SELECT r.id, r.name FROM deliveries d JOIN sessions r ON r.id = d.recipient_id \
             WHERE d.message_seq = ?1 ORDER BY r.name",
        )?
        .query_map([seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Earlier {
        id,
        kind,
        text,
        in_reply_to,
        recipients,
    })
}

fn message_from_row(r: &rusqlite::Row) -> rusqlite::Result<Message> {
    message_from(r, r.get(12)?)
}

impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }
    fn text(&self, i: usize) -> rusqlite::Result<String> {
        self.get(i)
    }
    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
}

fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Watches the sentinel file that writers touch after each commit, and only
/// it: a watch on the whole folder would also wake on every WAL page a
/// writer appends (eight or so per send), taking the CPU from the very
/// sender whose mail we wait for.
struct WatcherGuard {
    _watcher: notify::RecommendedWatcher,
    sentinel: PathBuf,
    /// The sentinel file being watched; a new file needs a new watch.
    watched: Option<(u64, u64)>,
    /// Set when the watched file was removed or renamed (its inode number
    /// may come back at once for the next file, so identity is not enough).
    lost: Arc<AtomicBool>,
    tx: Sender<Wake>,
}

impl WatcherGuard {
    fn start(sentinel: PathBuf, tx: Sender<Wake>) -> Result<Self> {
        use notify::{EventKind, RecursiveMode, Watcher};
        // Writers create it on their first commit; make sure it is there.
        touch_sentinel(&sentinel)
            .with_context(|| format!("could not create {}", sentinel.display()))?;
        let watched = file_identity(&sentinel);
        let wake = tx.clone();
        let lost = Arc::new(AtomicBool::new(false));
        let gone = Arc::clone(&lost);
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res {
                if matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(notify::event::ModifyKind::Name(_))
                ) {
                    gone.store(true, Ordering::SeqCst);
                }
                if matches!(
                    event.kind,
                    EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    )) | EventKind::Create(_)
                        | EventKind::Modify(_)
                        | EventKind::Remove(_)
                        | EventKind::Any
                ) {
                    let _ = wake.send(Wake::Change);
                }
            }
        })
        .context("could not start file-change notification")?;
        watcher
            .watch(&sentinel, RecursiveMode::NonRecursive)
            .with_context(|| format!("could not watch {}", sentinel.display()))?;
        Ok(WatcherGuard {
            _watcher: watcher,
            sentinel,
            watched,
            lost,
            tx,
        })
    }
}

impl Subscription for WatcherGuard {
    fn refresh(&mut self) -> Result<bool> {
        if !self.lost.load(Ordering::SeqCst) && file_identity(&self.sentinel) == self.watched {
            return Ok(false);
        }
        // Removed or replaced: watch the file that is there now.
        *self = WatcherGuard::start(self.sentinel.clone(), self.tx.clone())?;
        Ok(true)
    }
}
