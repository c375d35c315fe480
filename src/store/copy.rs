//! `db copy`: an SQLite mailbox into PostgreSQL. It belongs to neither
//! backend: the SQLite store hands over its rows as stored (`export`, one
//! read transaction, so a consistent snapshot while others write), and they
//! go into PostgreSQL in one transaction that holds the send lock (seqs stay
//! in commit order), in batches of `INSERT … SELECT FROM unnest(…)`.
//!
//! Same ids and seqs on both sides, so rows already there are left alone
//! and a second run copies nothing; a database holding a *different*
//! mailbox (same id, other name or message) is refused before anything is
//! written.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::tx::Values;
use ::postgres::Client;
use anyhow::{Context, Result};
use serde::Serialize;

use super::postgres::{hold_sends, text_to_stored, PostgresStore};
use super::sqlite::SqliteStore;
use super::{Mailbox, Peer};
use crate::identity::this_host;

/// What `copy_from_sqlite` wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    /// The target database, password masked.
    pub database: String,
    pub sessions: u64,
    pub messages: u64,
    pub blobs: u64,
    pub deliveries: u64,
    /// Deliveries already copied as pending, now marked delivered.
    pub delivered_since: u64,
    pub peers: u64,
    pub labels: u64,
    pub asks: u64,
    /// Task queue rows (`task_rows`).
    pub tasks: u64,
    pub leases: u64,
}

impl CopyReport {
    pub fn nothing_new(&self) -> bool {
        self.sessions
            + self.messages
            + self.blobs
            + self.deliveries
            + self.delivered_since
            + self.peers
            + self.labels
            + self.asks
            + self.tasks
            + self.leases
            == 0
    }
}

/// Rows per INSERT … SELECT FROM unnest(…) batch.
const COPY_BATCH: usize = 1000;

/// Copy the SQLite mailbox in `dir` into the PostgreSQL database at `url`:
/// sessions, blobs, messages (same ids and seqs), deliveries, peers, labels
/// and asks, in one transaction. Rows already there are left alone, so a
/// second run copies nothing; a database holding a *different* mailbox
/// (same id, other name or message) is refused and left unchanged.
pub fn copy_from_sqlite(dir: &Path, url: &str) -> Result<CopyReport> {
    // Opening it the usual way checks the folder and brings the schema up to date.
    let mut data = SqliteStore::open_in(dir)?
        .export()
        .context("could not read the SQLite mailbox")?;
    data.escape_nul();
    let target = PostgresStore::connect_only(url)?;
    let host = this_host();
    let mut report = target.run(|c| write_copy(c, &data, &host))?;
    report.database = target.location();
    Ok(report)
}

/// Everything of an SQLite mailbox, row by row, as stored.
#[derive(Default)]
struct Export {
    sessions: Vec<SessionRow>,
    blobs: Vec<BlobRow>,
    messages: Vec<MessageRow>,
    deliveries: Vec<DeliveryRow>,
    labels: Vec<LabelRow>,
    peers: Vec<Peer>,
    asks: Vec<AskRow>,
    /// Tables copied column by column as stored: (table, columns, rows).
    plain: Vec<(&'static str, &'static str, Vec<Values>)>,
}

/// Tables whose rows go over as they are (no ids to keep apart, no text
/// that needs escaping beyond what PostgreSQL takes), in order.
const PLAIN_TABLES: &[(&str, &str)] = &[
    (
        "task_rows",
        "message_seq, queue, state, attempts, max_attempts, lease_ms, grace_ms, holder_id, \
         claimed_by, claimed_at, renewed_at, offline_at, finished_at, failure, result_id",
    ),
    (
        "leases",
        "id, project, pattern, holder_id, exclusive, reason, created_at, expires_at, released_at",
    ),
];

struct SessionRow {
    id: i64,
    name: String,
    key: Option<String>,
    label: String,
    /// The stored state (`online` even when no monitor holds it any more).
    state: String,
    cwd: String,
    project: String,
    monitor_pid: Option<i64>,
    owner_pid: Option<i64>,
    created_at: String,
    since: String,
}

struct BlobRow {
    id: i64,
    body: String,
}

struct MessageRow {
    seq: i64,
    id: String,
    created_at: String,
    kind: String,
    sender_id: Option<i64>,
    sender: String,
    sender_label: String,
    chars: i64,
    text: Option<String>,
    blob_id: Option<i64>,
    in_reply_to: Option<String>,
    thread_id: String,
    expires_at: Option<String>,
    idempotency_key: Option<String>,
    /// The text (inline or in its blob) holds U+0000 and is stored escaped
    /// (set by `escape_nul`).
    escaped: bool,
}

struct DeliveryRow {
    message_seq: i64,
    recipient_id: i64,
    delivered_at: Option<String>,
    delivered_via: Option<String>,
}

struct LabelRow {
    project: String,
    label: String,
}

struct AskRow {
    question_id: String,
    asker_id: i64,
    until: String,
}

impl SqliteStore {
    /// Every row of the mailbox as stored, in one read transaction.
    fn export(&self) -> Result<Export> {
        let tx = self.conn().unchecked_transaction()?;
        let rows = |sql: &str| tx.prepare(sql);
        let d = Export {
            sessions: rows(
                "SELECT id, name, session_key, label, state, cwd, project, monitor_pid, owner_pid, created_at, since \
                 FROM sessions ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(SessionRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    key: r.get(2)?,
                    label: r.get(3)?,
                    state: r.get(4)?,
                    cwd: r.get(5)?,
                    project: r.get(6)?,
                    monitor_pid: r.get(7)?,
                    owner_pid: r.get(8)?,
                    created_at: r.get(9)?,
                    since: r.get(10)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?,
            blobs: rows("SELECT id, body FROM blobs ORDER BY id")?
                .query_map([], |r| {
                    Ok(BlobRow {
                        id: r.get(0)?,
                        body: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?,
            messages: rows(
                "SELECT seq, id, created_at, kind, sender_id, sender, sender_label, chars, text, blob_id, \
                        in_reply_to, COALESCE(thread_id, id), expires_at, idempotency_key \
                 FROM messages ORDER BY seq",
            )?
            .query_map([], |r| {
                Ok(MessageRow {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    created_at: r.get(2)?,
                    kind: r.get(3)?,
                    sender_id: r.get(4)?,
                    sender: r.get(5)?,
                    sender_label: r.get(6)?,
                    chars: r.get(7)?,
                    text: r.get(8)?,
                    blob_id: r.get(9)?,
                    in_reply_to: r.get(10)?,
                    thread_id: r.get(11)?,
                    expires_at: r.get(12)?,
                    idempotency_key: r.get(13)?,
                    escaped: false,
                })
            })?
            .collect::<rusqlite::Result<_>>()?,
            deliveries: rows(
                "SELECT message_seq, recipient_id, delivered_at, delivered_via FROM deliveries \
                 ORDER BY message_seq, recipient_id",
            )?
            .query_map([], |r| {
                Ok(DeliveryRow {
                    message_seq: r.get(0)?,
                    recipient_id: r.get(1)?,
                    delivered_at: r.get(2)?,
                    delivered_via: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?,
            labels: rows("SELECT project, label FROM project_labels ORDER BY project")?
                .query_map([], |r| {
                    Ok(LabelRow {
                        project: r.get(0)?,
                        label: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?,
            peers: self.peers(true)?,
            asks: rows("SELECT question_id, asker_id, until FROM asks ORDER BY question_id")?
                .query_map([], |r| {
                    Ok(AskRow {
                        question_id: r.get(0)?,
                        asker_id: r.get(1)?,
                        until: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?,
            plain: PLAIN_TABLES
                .iter()
                .map(|(table, cols)| {
                    let mut st = rows(&format!("SELECT {cols} FROM {table} ORDER BY 1"))?;
                    let n = st.column_count();
                    let found = st
                        .query_map([], |r| {
                            (0..n)
                                .map(|i| r.get_ref(i).map(super::sqlite::read_value))
                                .collect()
                        })?
                        .collect::<rusqlite::Result<Vec<Values>>>()?;
                    Ok((*table, *cols, found))
                })
                .collect::<Result<_>>()?,
        };
        tx.commit()?;
        Ok(d)
    }
}

impl Export {
    /// Texts holding U+0000 in the form PostgreSQL stores them (see
    /// `text_to_stored`), with `escaped` set on their messages.
    fn escape_nul(&mut self) {
        let nul_blobs: HashSet<i64> = self
            .blobs
            .iter()
            .filter(|b| b.body.contains('\0'))
            .map(|b| b.id)
            .collect();
        for m in &mut self.messages {
            if let Some(t) = m.text.as_mut().filter(|t| t.contains('\0')) {
                *t = text_to_stored(t).0.into_owned();
                m.escaped = true;
            }
            if m.blob_id.is_some_and(|b| nul_blobs.contains(&b)) {
                m.escaped = true;
            }
        }
        for b in &mut self.blobs {
            if nul_blobs.contains(&b.id) {
                b.body = text_to_stored(&b.body).0.into_owned();
            }
        }
    }
}

fn write_copy(c: &mut Client, d: &Export, host: &str) -> Result<CopyReport> {
    let mut tx = c.transaction()?;
    // No sends while we copy: seqs stay in commit order.
    hold_sends(&mut tx)?;
    let conflict = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "the PostgreSQL database already holds a different mailbox ({what}); \
             db copy needs an empty database, or one filled by an earlier copy of this mailbox; nothing was copied"
        )
    };

    // Sessions: the same id must carry the same name, both ways.
    let mut by_id: HashMap<i64, String> = HashMap::new();
    let mut by_name: HashMap<String, i64> = HashMap::new();
    for r in tx.query("SELECT id, name FROM sessions", &[])? {
        let id: i64 = r.try_get(0)?;
        let name: String = r.try_get(1)?;
        by_name.insert(name.clone(), id);
        by_id.insert(id, name);
    }
    for s in &d.sessions {
        if let Some(name) = by_id.get(&s.id) {
            if *name != s.name {
                return Err(conflict(format!(
                    "session {} is '{name}' there, '{}' here",
                    s.id, s.name
                )));
            }
        }
        if let Some(id) = by_name.get(&s.name) {
            if *id != s.id {
                return Err(conflict(format!(
                    "session '{}' has id {id} there, {} here",
                    s.name, s.id
                )));
            }
        }
    }
    // Messages: the same seq must carry the same id, both ways.
    let mut seq_ids: HashMap<i64, String> = HashMap::new();
    let mut id_seqs: HashMap<String, i64> = HashMap::new();
    for r in tx.query("SELECT seq, id FROM messages", &[])? {
        let seq: i64 = r.try_get(0)?;
        let id: String = r.try_get(1)?;
        id_seqs.insert(id.clone(), seq);
        seq_ids.insert(seq, id);
    }
    for m in &d.messages {
        if let Some(id) = seq_ids.get(&m.seq) {
            if *id != m.id {
                return Err(conflict(format!(
                    "message seq {} is {id} there, {} here",
                    m.seq, m.id
                )));
            }
        }
        if let Some(seq) = id_seqs.get(&m.id) {
            if *seq != m.seq {
                return Err(conflict(format!(
                    "message {} has seq {seq} there, {} here",
                    m.id, m.seq
                )));
            }
        }
    }
    let new_messages: Vec<&MessageRow> = d
        .messages
        .iter()
        .filter(|m| !seq_ids.contains_key(&m.seq))
        .collect();
    // Blobs of messages not there yet must not collide with blobs there.
    let wanted: Vec<i64> = new_messages.iter().filter_map(|m| m.blob_id).collect();
    let taken: i64 = tx
        .query_one("SELECT count(*) FROM blobs WHERE id = ANY($1)", &[&wanted])?
        .try_get(0)?;
    if taken > 0 {
        return Err(conflict(format!(
            "{taken} long-message bodies use the same ids"
        )));
    }

    let mut report = CopyReport::default();
    for chunk in d.sessions.chunks(COPY_BATCH) {
        let ids: Vec<i64> = chunk.iter().map(|s| s.id).collect();
        let names: Vec<&str> = chunk.iter().map(|s| s.name.as_str()).collect();
        let keys: Vec<Option<&str>> = chunk.iter().map(|s| s.key.as_deref()).collect();
        let labels: Vec<&str> = chunk.iter().map(|s| s.label.as_str()).collect();
        // Nobody holds a PostgreSQL lock for these yet: online reads offline.
        let states: Vec<&str> = chunk
            .iter()
            .map(|s| {
                if s.state == "online" {
                    "offline"
                } else {
                    s.state.as_str()
                }
            })
            .collect();
        let cwds: Vec<&str> = chunk.iter().map(|s| s.cwd.as_str()).collect();
        let projects: Vec<&str> = chunk.iter().map(|s| s.project.as_str()).collect();
        let pids: Vec<Option<i64>> = chunk
            .iter()
            .map(|s| {
                if s.state == "online" {
                    None
                } else {
                    s.monitor_pid
                }
            })
            .collect();
        let owners: Vec<Option<i64>> = chunk.iter().map(|s| s.owner_pid).collect();
        let created: Vec<&str> = chunk.iter().map(|s| s.created_at.as_str()).collect();
        let since: Vec<&str> = chunk.iter().map(|s| s.since.as_str()).collect();
        report.sessions += tx.execute(
            "INSERT INTO sessions (id, name, session_key, label, state, cwd, project, monitor_pid, owner_pid, \
                                   created_at, since, host) \
             SELECT *, $12 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                                   $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[]) \
             ON CONFLICT DO NOTHING",
            &[
                &ids, &names, &keys, &labels, &states, &cwds, &projects, &pids, &owners, &created, &since, &host,
            ],
        )?;
    }
    let blob_rows: Vec<&BlobRow> = {
        let wanted: HashSet<i64> = wanted.iter().copied().collect();
        d.blobs.iter().filter(|b| wanted.contains(&b.id)).collect()
    };
    for chunk in blob_rows.chunks(COPY_BATCH) {
        let ids: Vec<i64> = chunk.iter().map(|b| b.id).collect();
        let bodies: Vec<&str> = chunk.iter().map(|b| b.body.as_str()).collect();
        report.blobs += tx.execute(
            "INSERT INTO blobs (id, body) SELECT * FROM unnest($1::bigint[], $2::text[]) ON CONFLICT DO NOTHING",
            &[&ids, &bodies],
        )?;
    }
    for chunk in new_messages.chunks(COPY_BATCH) {
        let col = |f: fn(&MessageRow) -> Option<&str>| -> Vec<Option<&str>> {
            chunk.iter().map(|m| f(m)).collect()
        };
        let seqs: Vec<i64> = chunk.iter().map(|m| m.seq).collect();
        let ids = col(|m| Some(m.id.as_str()));
        let created = col(|m| Some(m.created_at.as_str()));
        let kinds = col(|m| Some(m.kind.as_str()));
        let sender_ids: Vec<Option<i64>> = chunk.iter().map(|m| m.sender_id).collect();
        let senders = col(|m| Some(m.sender.as_str()));
        let sender_labels = col(|m| Some(m.sender_label.as_str()));
        let chars: Vec<i64> = chunk.iter().map(|m| m.chars).collect();
        let texts = col(|m| m.text.as_deref());
        let blob_ids: Vec<Option<i64>> = chunk.iter().map(|m| m.blob_id).collect();
        let parents = col(|m| m.in_reply_to.as_deref());
        let threads = col(|m| Some(m.thread_id.as_str()));
        let expires = col(|m| m.expires_at.as_deref());
        let keys = col(|m| m.idempotency_key.as_deref());
        let escaped: Vec<bool> = chunk.iter().map(|m| m.escaped).collect();
        report.messages += tx.execute(
            "INSERT INTO messages (seq, id, created_at, kind, sender_id, sender, sender_label, chars, text, blob_id, \
                                   in_reply_to, thread_id, expires_at, idempotency_key, text_escaped) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
                                  $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[], \
                                  $13::text[], $14::text[], $15::bool[]) \
             ON CONFLICT DO NOTHING",
            &[
                &seqs, &ids, &created, &kinds, &sender_ids, &senders, &sender_labels, &chars, &texts, &blob_ids,
                &parents, &threads, &expires, &keys, &escaped,
            ],
        )?;
    }
    let all: Vec<&DeliveryRow> = d.deliveries.iter().collect();
    for chunk in all.chunks(COPY_BATCH) {
        let (seqs, rids, at, via) = delivery_columns(chunk);
        report.deliveries += tx.execute(
            "INSERT INTO deliveries (message_seq, recipient_id, delivered_at, delivered_via) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) \
             ON CONFLICT DO NOTHING",
            &[&seqs, &rids, &at, &via],
        )?;
    }
    // Mail read here since an earlier copy: read there too.
    let delivered: Vec<&DeliveryRow> = d
        .deliveries
        .iter()
        .filter(|r| r.delivered_at.is_some())
        .collect();
    for chunk in delivered.chunks(COPY_BATCH) {
        let (seqs, rids, at, via) = delivery_columns(chunk);
        report.delivered_since += tx.execute(
            "UPDATE deliveries d SET delivered_at = u.at, delivered_via = u.via \
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(seq, rid, at, via) \
             WHERE d.message_seq = u.seq AND d.recipient_id = u.rid AND d.delivered_at IS NULL",
            &[&seqs, &rids, &at, &via],
        )?;
    }
    for l in &d.labels {
        report.labels += tx.execute(
            "INSERT INTO project_labels (project, label) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&l.project, &l.label],
        )?;
    }
    for p in &d.peers {
        report.peers += tx.execute(
            "INSERT INTO peers (name, session_id, tmux_socket, tmux_session, command, cwd, spawned_by, created_at, killed_at, host) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            &[
                &p.name,
                &p.session_id,
                &p.tmux_socket,
                &p.tmux_session,
                &p.command,
                &p.cwd,
                &p.spawned_by,
                &p.created_at,
                &p.killed_at,
                &host,
            ],
        )?;
    }
    for a in &d.asks {
        report.asks += tx.execute(
            "INSERT INTO asks (question_id, asker_id, \"until\") VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&a.question_id, &a.asker_id, &a.until],
        )?;
    }
    for (table, cols, found) in &d.plain {
        let n = cols.split(',').count();
        let marks: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let st = tx.prepare(&format!(
            "INSERT INTO {table} ({cols}) VALUES ({}) ON CONFLICT DO NOTHING",
            marks.join(", ")
        ))?;
        let mut copied = 0;
        for row in found {
            let bound = st
                .params()
                .iter()
                .zip(row)
                .map(|(t, v)| super::postgres::bind_value(t, v))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&(dyn ::postgres::types::ToSql + Sync)> =
                bound.iter().map(|b| b.as_ref()).collect();
            copied += tx.execute(&st, &refs)?;
        }
        match *table {
            "task_rows" => report.tasks += copied,
            _ => report.leases += copied,
        }
    }
    // New rows made here from now on get ids above the copied ones.
    for (table, column) in [
        ("sessions", "id"),
        ("blobs", "id"),
        ("messages", "seq"),
        ("leases", "id"),
    ] {
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
                           GREATEST((SELECT max({column}) FROM {table}), 1), \
                           (SELECT max({column}) FROM {table}) IS NOT NULL)"
        ))?;
    }
    tx.commit().context("could not commit the copy")?;
    Ok(report)
}

/// A batch of deliveries as `unnest` takes it: seqs, recipients, times.
type DeliveryColumns<'a> = (
    Vec<i64>,
    Vec<i64>,
    Vec<Option<&'a str>>,
    Vec<Option<&'a str>>,
);

fn delivery_columns<'a>(chunk: &[&'a DeliveryRow]) -> DeliveryColumns<'a> {
    (
        chunk.iter().map(|r| r.message_seq).collect(),
        chunk.iter().map(|r| r.recipient_id).collect(),
        chunk.iter().map(|r| r.delivered_at.as_deref()).collect(),
        chunk.iter().map(|r| r.delivered_via.as_deref()).collect(),
    )
}
