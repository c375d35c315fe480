//! The send: one transaction (or, for the usual direct send, one statement)
//! that takes the commit-order lock, checks the sender's limits, inserts the
//! message and its deliveries and wakes the recipients' monitors when it
//! commits. Also the typed parameters that let a statement go out in one
//! round trip, which every query of the store uses.

use std::collections::HashSet;

use ::postgres::types::{ToSql, Type};
use ::postgres::Client;
use anyhow::{bail, Context, Result};

use super::rows::stored_to_text;
use super::rows::{lock_held_sql, text_to_stored};
use super::{PostgresStore, GLOBAL_CHANNEL, LOCK_NS, SEND_KEY, TRAFFIC_CHANNEL};
use crate::store::{
    now_text, rules, Earlier, LookupError, NewMessage, Recipients, Written, INLINE_CHARS,
};

impl PostgresStore {
    /// The send transaction. On a retry, first looks for the message by id:
    /// an earlier attempt may have committed before its answer was lost.
    pub(super) fn send_once(
        &self,
        c: &mut Client,
        msg: &NewMessage,
        id: &str,
        retry: bool,
    ) -> Result<Written> {
        let now = now_text();
        let chars = msg.text.chars().count();
        // The commit-order lock is held until commit: seq order is commit
        // order (see the module doc). The usual send (direct, short, from a
        // known sender, no key, no question) is one statement on its own,
        // which takes that lock itself; anything else is a transaction.
        let single = !retry
            && msg.sender.id != 0
            && msg.idempotency_key.is_none()
            && msg.ask_until.is_none()
            && chars <= INLINE_CHARS
            && matches!(msg.to, Recipients::One(_));
        let mut tx = if single {
            SendTx::autocommit(c)
        } else {
            SendTx::begin(c)?
        };
        if retry {
            if let Some(row) =
                tx.query_typed_opt("SELECT seq FROM messages WHERE id = $1", &typed(&[&id]))?
            {
                let seq: i64 = row.try_get(0)?;
                let rows = tx.query_typed(
                    "SELECT r.id, r.name FROM deliveries d JOIN sessions r ON r.id = d.recipient_id \
                     WHERE d.message_seq = $1 ORDER BY r.name",
                    &typed(&[&seq]),
                )?;
                let recipients = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Written {
                    recipients,
                    duplicate: false,
                    id: id.to_string(),
                    online: None,
                });
            }
        }

        // A new `--from` sender (id 0) is registered here, inside the
        // transaction, so a refused send leaves no trace.
        let sender_id: i64 = if msg.sender.id == 0 {
            tx.execute_typed(
                "INSERT INTO sessions (name, state, created_at, since, host) VALUES ($1, 'offline', $2, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
                &typed(&[&msg.sender.name, &now, &self.host]),
            )?;
            tx.query_typed_one(
                "SELECT id FROM sessions WHERE name = $1",
                &typed(&[&msg.sender.name]),
            )?
            .try_get(0)?
        } else {
            msg.sender.id
        };
        if let Some(key) = msg.idempotency_key {
            let since = time_text(chrono::Utc::now() - chrono::Duration::hours(24));
            let earlier = tx.query_typed_opt(
                "SELECT seq FROM messages WHERE sender_id = $1 AND idempotency_key = $2 \
                 AND created_at >= $3 ORDER BY seq LIMIT 1",
                &typed(&[&sender_id, &key, &since]),
            )?;
            if let Some(row) = earlier {
                return rules::repeated(earlier_send(&mut tx, row.try_get(0)?)?, msg);
            }
        }
        // The recipients: a direct one is checked by the insert below (one
        // statement fewer before the wake-up); a broadcast's are chosen
        // here, with whether each one's monitor is live.
        let (rids, online): (Vec<i64>, Option<HashSet<i64>>) = match &msg.to {
            Recipients::One(rid) => {
                // Whether its monitor is live is asked after the commit,
                // while that monitor is already fetching the message.
                (vec![*rid], None)
            }
            Recipients::All { project } => {
                let since = time_text(chrono::Utc::now() - chrono::Duration::seconds(60));
                let recent: i64 = tx
                    .query_typed_one(
                        "SELECT count(*) FROM messages WHERE sender_id = $1 AND kind = 'broadcast' AND created_at >= $2",
                        &typed(&[&sender_id, &since]),
                    )?
                    .try_get(0)?;
                rules::check_rate(recent)?;
                let rows = tx.query_typed(
                    &format!(
                        "SELECT s.id, (s.state = 'online' AND {}) FROM sessions s \
                         WHERE s.state <> 'left' AND s.id <> $1 AND ($2::text IS NULL OR s.project = $2)",
                        lock_held_sql()
                    ),
                    &typed(&[&sender_id, project]),
                )?;
                rules::check_recipients(&rows)?;
                let mut online = HashSet::new();
                let mut rids = Vec::with_capacity(rows.len());
                for r in &rows {
                    let rid: i64 = r.try_get(0)?;
                    if r.try_get::<_, bool>(1)? {
                        online.insert(rid);
                    }
                    rids.push(rid);
                }
                (rids, Some(online))
            }
            Recipients::Queue(_) => (Vec::new(), Some(HashSet::new())),
        };

        let (stored, escaped) = text_to_stored(msg.text);
        let (inline, blob_id): (Option<&str>, Option<i64>) = if chars <= INLINE_CHARS {
            (Some(&stored), None)
        } else {
            let bid: i64 = tx
                .query_typed_one(
                    "INSERT INTO blobs (body) VALUES ($1) RETURNING id",
                    &typed(&[&stored.as_ref()]),
                )?
                .try_get(0)?;
            (None, Some(bid))
        };
        let kind = match msg.to {
            Recipients::One(_) | Recipients::Queue(_) => "direct",
            Recipients::All { .. } => "broadcast",
        };
        let (in_reply_to, thread_id) = match msg.reply_to {
            Some(parent) => (Some(parent.id.as_str()), parent.thread_id.as_str()),
            None => (None, id),
        };
        let chars = i64::try_from(chars)?;
        if let Some(until) = &msg.ask_until {
            tx.execute_typed(
                "INSERT INTO asks (question_id, asker_id, \"until\") VALUES ($1, $2, $3) \
                 ON CONFLICT (question_id) DO UPDATE SET asker_id = excluded.asker_id, \"until\" = excluded.\"until\"",
                &typed(&[&id, &sender_id, until]),
            )?;
        }
        // $1…$14 of both inserts below: the message row.
        let message_params = typed(&[
            &id,
            &now,
            &kind,
            &sender_id,
            &msg.sender.name,
            &msg.sender.label,
            &chars,
            &inline,
            &blob_id,
            &in_reply_to,
            &thread_id,
            &msg.expires_at,
            &msg.idempotency_key,
            &escaped,
        ]);
        if let Recipients::Queue(t) = &msg.to {
            // A task: the message and its place in the queue, in commit
            // order, and a wake-up for every monitor (any idle worker).
            tx.execute_typed(
                &format!(
                    "WITH l AS (SELECT pg_advisory_xact_lock({LOCK_NS}, {SEND_KEY})), \
                          m AS (INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, \
                                                      text, blob_id, in_reply_to, thread_id, expires_at, \
                                                      idempotency_key, text_escaped) \
                                SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM l \
                                RETURNING seq) \
                     INSERT INTO task_rows (message_seq, queue, max_attempts, lease_ms, grace_ms) \
                     SELECT m.seq, $15, $16, $17, $18 FROM m"
                ),
                &[
                    message_params.as_slice(),
                    &typed(&[&t.queue, &t.max_attempts, &t.lease_ms, &t.grace_ms]),
                ]
                .concat(),
            )?;
            tx.execute_typed("SELECT pg_notify($1, '')", &typed(&[&GLOBAL_CHANNEL]))?;
            tx.commit().context("could not commit the task")?;
            return Ok(Written {
                recipients: Vec::new(),
                duplicate: false,
                id: id.to_string(),
                online,
            });
        }
        // In one statement: the commit-order lock (again, inside a
        // transaction: it is re-entrant), the recipients that have not left,
        // the message (only if there is one), its deliveries, and the wake-up
        // of their monitors when (and only if) this commits. `l` is read
        // before the message gets its seq, and CTEs with side effects run once.
        let rows = tx.query_typed(
                &format!(
                "WITH l AS (SELECT pg_advisory_xact_lock({LOCK_NS}, {SEND_KEY})), \
                      r AS (SELECT s.id, s.name FROM sessions s, l WHERE s.id = ANY($15) AND s.state <> 'left'), \
                      m AS (INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, \
                                                  text, blob_id, in_reply_to, thread_id, expires_at, \
                                                  idempotency_key, text_escaped) \
                            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 \
                            WHERE EXISTS (SELECT 1 FROM r) RETURNING seq), \
                      d AS (INSERT INTO deliveries (message_seq, recipient_id) \
                            SELECT m.seq, r.id FROM m, r \
                            RETURNING recipient_id, message_seq) \
                 SELECT r.id, r.name, pg_notify('inter_session_' || d.recipient_id, d.message_seq::text), \
                        pg_notify('{TRAFFIC_CHANNEL}', '') \
                 FROM d JOIN r ON r.id = d.recipient_id ORDER BY r.name"),
                &[message_params.as_slice(), &typed(&[&rids])].concat(),
            )?;
        let recipients = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(i64, String)>>>()?;
        if recipients.is_empty() {
            // Nothing was written (dropping `tx` rolls back the rest). Say why.
            let Recipients::One(rid) = &msg.to else {
                rules::check_recipients(&recipients)?;
                bail!("the recipients' mailboxes vanished; try again");
            };
            let gone = tx.query_typed_opt(
                "SELECT name, state = 'left' FROM sessions WHERE id = $1",
                &typed(&[rid]),
            )?;
            return match gone {
                Some(r) if r.try_get::<_, bool>(1)? => Err(LookupError::Left(r.try_get(0)?).into()),
                _ => bail!("the recipient's mailbox vanished; try again"),
            };
        }
        tx.commit().context("could not commit the message")?;
        if msg.ask_until.is_some() {
            self.interest.borrow_mut().insert(sender_id);
        }
        Ok(Written {
            recipients,
            duplicate: false,
            id: id.to_string(),
            online,
        })
    }
}

/// The earlier send `seq` (same sender and idempotency key), as
/// `rules::same_send` compares it.
fn earlier_send(tx: &mut SendTx, seq: i64) -> Result<Earlier> {
    let m = tx.query_typed_one(
        "SELECT m.id, m.kind, COALESCE(m.text, b.body), m.text_escaped, m.in_reply_to \
         FROM messages m LEFT JOIN blobs b ON b.id = m.blob_id WHERE m.seq = $1",
        &typed(&[&seq]),
    )?;
    let recipients = tx
        .query_typed(
            "SELECT r.id, r.name FROM deliveries d JOIN sessions r ON r.id = d.recipient_id \
             WHERE d.message_seq = $1 ORDER BY r.name",
            &typed(&[&seq]),
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i64, String)>>>()?;
    Ok(Earlier {
        id: m.try_get(0)?,
        kind: m.try_get(1)?,
        text: stored_to_text(m.try_get(2)?, m.try_get(3)?),
        in_reply_to: m.try_get(4)?,
        recipients,
    })
}

/// The send transaction: begun together with its lock in one round trip
/// (`Client::transaction` would take two), rolled back when dropped
/// uncommitted. Or none at all, for a send that is one statement.
struct SendTx<'a> {
    c: &'a mut Client,
    open: bool,
}

impl<'a> SendTx<'a> {
    fn begin(c: &'a mut Client) -> Result<Self> {
        c.batch_execute(&format!(
            "START TRANSACTION; SELECT pg_advisory_xact_lock({LOCK_NS}, {SEND_KEY})"
        ))?;
        Ok(SendTx { c, open: true })
    }

    /// No transaction: each statement commits on its own.
    fn autocommit(c: &'a mut Client) -> Self {
        SendTx { c, open: false }
    }

    fn commit(mut self) -> Result<()> {
        if self.open {
            self.open = false;
            self.c.batch_execute("COMMIT")?;
        }
        Ok(())
    }
}

impl std::ops::Deref for SendTx<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.c
    }
}

impl std::ops::DerefMut for SendTx<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.c
    }
}

impl Drop for SendTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A broken connection is dropped by the caller anyway.
            let _ = self.c.batch_execute("ROLLBACK");
        }
    }
}

/// A statement parameter with its PostgreSQL type, so that the statement
/// goes out in one round trip (`query_typed`: parse, bind and execute sent
/// together) instead of three (prepare, execute, close). A `mail send` makes
/// about a dozen statements on a fresh connection; on loopback each saved
/// round trip is a wake-up of the server process.
trait PgType {
    const TYPE: Type;
}

impl PgType for i64 {
    const TYPE: Type = Type::INT8;
}
impl PgType for i32 {
    const TYPE: Type = Type::INT4;
}
impl PgType for bool {
    const TYPE: Type = Type::BOOL;
}
impl PgType for String {
    const TYPE: Type = Type::TEXT;
}
impl PgType for &str {
    const TYPE: Type = Type::TEXT;
}
impl PgType for Vec<i64> {
    const TYPE: Type = Type::INT8_ARRAY;
}
impl PgType for &[i64] {
    const TYPE: Type = Type::INT8_ARRAY;
}
impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

pub(super) trait Typed: ToSql + Sync {
    fn value(&self) -> &(dyn ToSql + Sync);
    fn pg_type(&self) -> Type;
}

impl<T: PgType + ToSql + Sync> Typed for T {
    fn value(&self) -> &(dyn ToSql + Sync) {
        self
    }
    fn pg_type(&self) -> Type {
        T::TYPE
    }
}

/// `params` as `query_typed` takes them.
pub(super) fn typed<'a>(params: &[&'a dyn Typed]) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p.value(), p.pg_type())).collect()
}

/// Hold the commit-order lock until `tx` ends: no send commits meanwhile.
pub(in crate::store) fn hold_sends(tx: &mut ::postgres::Transaction<'_>) -> Result<()> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NS, &SEND_KEY],
    )?;
    Ok(())
}

fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
