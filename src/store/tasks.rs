//! Task queues (SPEC §11), written once for both backends over `tx::Tx`.
//!
//! A task is a message with no recipient (`Recipients::Queue`) and a row in
//! `task_rows`. A claim makes the claimer its one holder and gives it the
//! message as an ordinary delivery, so a monitor prints it (as a `task=`
//! line), paces it and marks it delivered once taken, like mail. A claim is
//! a lease: it returns to the queue when its holder leaves, when a claim
//! taken by a monitor finds that monitor offline longer than the task's
//! grace, or when a post-time `--lease` passes without `task renew` (the
//! sweep, run before every claim and listing). Each return counts against
//! `max_attempts`; past it the task is dead. Every change runs in one
//! transaction of its kind (`Mailbox::transact`), one at a time, so a task
//! is never held by two sessions.

use std::collections::HashSet;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};

use super::tx::{Tx, Val, Values};
use super::{now_text, Mailbox, NewMessage, NotFound, Recipients, Verbs};

/// The default grace for a claim whose holder's monitor went offline: it
/// covers a host re-arming an expired monitor.
pub const DEFAULT_GRACE_MS: i64 = 120_000;
/// Claims allowed before a task is dead.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;

/// How a claim was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimer {
    /// `inbox watch --take`: the monitor prints it; its going offline
    /// counts against the claim (after the grace).
    Monitor,
    /// `task claim`: pull mode; only leaving or a `--lease` returns it.
    Pull,
}

impl Claimer {
    fn as_str(self) -> &'static str {
        match self {
            Claimer::Monitor => "monitor",
            Claimer::Pull => "claim",
        }
    }
}

/// One task as listings and verbs see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Task {
    pub id: String,
    #[serde(skip)]
    pub seq: i64,
    pub queue: String,
    /// open, claimed, done or dead.
    pub state: String,
    pub poster: String,
    #[serde(skip)]
    pub poster_id: Option<i64>,
    pub holder: Option<String>,
    #[serde(skip)]
    pub holder_id: Option<i64>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub created_at: String,
    pub claimed_at: Option<String>,
    pub renewed_at: Option<String>,
    pub finished_at: Option<String>,
    pub expires_at: Option<String>,
    /// The last `task fail` text, or why the last claim returned.
    pub failure: Option<String>,
    /// The reply that carried the result to the poster.
    pub result_id: Option<String>,
    pub lease_ms: Option<i64>,
    pub grace_ms: i64,
    /// Whether it expired unclaimed (`--ttl`): never handed out.
    pub expired: bool,
}

const TASK_COLUMNS: &str =
    "m.seq, m.id, t.queue, t.state, m.sender, m.sender_id, h.name, t.holder_id, \
     t.attempts, t.max_attempts, m.created_at, t.claimed_at, t.renewed_at, t.finished_at, \
     m.expires_at, t.failure, t.result_id, t.lease_ms, t.grace_ms, t.claimed_by, t.offline_at";

const TASK_FROM: &str = "FROM task_rows t JOIN messages m ON m.seq = t.message_seq \
     LEFT JOIN sessions h ON h.id = t.holder_id";

/// A task row and the two columns only the sweep needs.
struct Row {
    task: Task,
    claimed_by: Option<String>,
    offline_at: Option<String>,
}

fn row(v: &Values, now: &str) -> Result<Row> {
    let expires_at = v[14].opt_text()?;
    let state = v[3].text()?;
    Ok(Row {
        task: Task {
            seq: v[0].int()?,
            id: v[1].text()?,
            queue: v[2].text()?,
            expired: state == "open" && expires_at.as_deref().is_some_and(|e| e <= now),
            state,
            poster: v[4].text()?,
            poster_id: v[5].opt_int()?,
            holder: v[6].opt_text()?,
            holder_id: v[7].opt_int()?,
            attempts: v[8].int()?,
            max_attempts: v[9].int()?,
            created_at: v[10].text()?,
            claimed_at: v[11].opt_text()?,
            renewed_at: v[12].opt_text()?,
            finished_at: v[13].opt_text()?,
            expires_at,
            failure: v[15].opt_text()?,
            result_id: v[16].opt_text()?,
            lease_ms: v[17].opt_int()?,
            grace_ms: v[18].int()?,
        },
        claimed_by: v[19].opt_text()?,
        offline_at: v[20].opt_text()?,
    })
}

fn rows(tx: &mut dyn Tx, filter: &str, params: &[Val]) -> Result<Vec<Row>> {
    let now = now_text();
    tx.rows(
        &format!("SELECT {TASK_COLUMNS} {TASK_FROM} {filter}"),
        params,
    )?
    .iter()
    .map(|v| row(v, &now))
    .collect()
}

/// The task with this id or unique id prefix (any case).
fn find(tx: &mut dyn Tx, id_prefix: &str) -> Result<Task> {
    let prefix = id_prefix.to_ascii_uppercase();
    let found = rows(
        tx,
        "WHERE m.id >= $1 ORDER BY m.id LIMIT 2",
        &[Val::from(&prefix)],
    )?;
    let mut found = found
        .into_iter()
        .map(|r| r.task)
        .filter(|t| t.id.starts_with(&prefix));
    match (found.next(), found.next()) {
        (Some(t), None) => Ok(t),
        (None, _) => Err(NotFound(format!("no task with id '{id_prefix}'")).into()),
        (Some(_), Some(_)) => bail!("task id prefix '{id_prefix}' is ambiguous; give more of it"),
    }
}

/// A task that returned to its queue, or died, in a sweep or a `task fail`.
#[derive(Debug, Clone)]
pub struct Returned {
    pub task: Task,
    /// Its last holder.
    pub holder_id: Option<i64>,
    pub why: String,
    pub dead: bool,
}

fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn older_than(then: Option<&str>, ms: i64, now: DateTime<Utc>) -> bool {
    then.and_then(time)
        .is_some_and(|t| now - t > chrono::Duration::milliseconds(ms))
}

/// Put a claimed task back (or kill it when it used its attempts): its
/// undelivered copy is withdrawn, so nobody prints it who no longer holds it.
fn give_back(tx: &mut dyn Tx, t: &Task, why: &str, now: &str) -> Result<Returned> {
    let dead = t.attempts >= t.max_attempts;
    if dead {
        tx.exec(
            "UPDATE task_rows SET state = 'dead', finished_at = $2, failure = $3, offline_at = NULL \
             WHERE message_seq = $1",
            &[Val::from(t.seq), Val::from(now), Val::from(why)],
        )?;
    } else {
        tx.exec(
            "UPDATE task_rows SET state = 'open', holder_id = NULL, claimed_by = NULL, \
             offline_at = NULL, failure = $2 WHERE message_seq = $1",
            &[Val::from(t.seq), Val::from(why)],
        )?;
    }
    tx.exec(
        "DELETE FROM deliveries WHERE message_seq = $1 AND delivered_at IS NULL",
        &[Val::from(t.seq)],
    )?;
    tx.wake(&[], true)?;
    Ok(Returned {
        task: t.clone(),
        holder_id: t.holder_id,
        why: why.to_string(),
        dead,
    })
}

/// Return the claims of `queue` (every queue: None) whose lease ran out.
fn sweep(tx: &mut dyn Tx, queue: Option<&str>) -> Result<Vec<Returned>> {
    let claimed = match queue {
        Some(q) => rows(
            tx,
            "WHERE t.state = 'claimed' AND t.queue = $1",
            &[Val::from(q)],
        )?,
        None => rows(tx, "WHERE t.state = 'claimed'", &[])?,
    };
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let holders: Vec<i64> = claimed.iter().filter_map(|r| r.task.holder_id).collect();
    let online: HashSet<i64> = tx.online(&holders)?;
    let left: HashSet<i64> = {
        let mut left = HashSet::new();
        for id in &holders {
            let state = tx.row(
                "SELECT state FROM sessions WHERE id = $1",
                &[Val::from(*id)],
            )?;
            if state.is_none_or(|v| v[0] == Val::from("left")) {
                left.insert(*id);
            }
        }
        left
    };
    let now = Utc::now();
    let now_s = now_text();
    let mut returned = Vec::new();
    for r in claimed {
        let t = &r.task;
        let Some(holder) = t.holder_id else {
            returned.push(give_back(tx, t, "requeued: its holder is gone", &now_s)?);
            continue;
        };
        if left.contains(&holder) {
            returned.push(give_back(
                tx,
                t,
                "requeued: its holder disconnected",
                &now_s,
            )?);
            continue;
        }
        if let Some(lease) = t.lease_ms {
            if older_than(t.renewed_at.as_deref(), lease, now) {
                let why = format!(
                    "requeued: its lease of {} passed without task renew",
                    crate::line::format_age(u64::try_from(lease / 1000).unwrap_or(0))
                );
                returned.push(give_back(tx, t, &why, &now_s)?);
                continue;
            }
        }
        if r.claimed_by.as_deref() != Some(Claimer::Monitor.as_str()) {
            continue;
        }
        match (online.contains(&holder), r.offline_at.as_deref()) {
            (true, Some(_)) => {
                tx.exec(
                    "UPDATE task_rows SET offline_at = NULL WHERE message_seq = $1",
                    &[Val::from(t.seq)],
                )?;
            }
            (true, None) => {}
            (false, None) => {
                // First seen offline: the grace starts now (a monitor that
                // was killed leaves no time of its own).
                tx.exec(
                    "UPDATE task_rows SET offline_at = $2 WHERE message_seq = $1",
                    &[Val::from(t.seq), Val::from(&now_s)],
                )?;
            }
            (false, Some(since)) => {
                if older_than(Some(since), t.grace_ms, now) {
                    let why = format!(
                        "requeued: its worker's monitor was offline for over {}",
                        crate::line::format_age(u64::try_from(t.grace_ms / 1000).unwrap_or(0))
                    );
                    returned.push(give_back(tx, t, &why, &now_s)?);
                }
            }
        }
    }
    Ok(returned)
}

/// What a `take` found.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// The task now claimed (None: the queues held nothing open, or the
    /// session already holds one of each).
    pub claimed: Option<Task>,
    /// Tasks the sweep returned or killed meanwhile (the caller tells the
    /// posters of dead ones: `tell_poster`).
    pub returned: Vec<Returned>,
    /// A claimed task the session already holds in the first such queue
    /// (a session holds at most one task of a queue at a time).
    pub held: Option<Task>,
}

/// The task verbs, for every store (`impl<M: Mailbox + ?Sized> Tasks for M`).
pub trait Tasks: Mailbox {
    /// One task by id or unique prefix (its queue swept first).
    fn task(&self, id_prefix: &str) -> Result<Task> {
        self.on_task(id_prefix, &mut |_, t| Ok(t.clone()))
    }

    /// Find a task, sweep its queue, then run `f` on it, in one
    /// transaction; posters of tasks that died in the sweep are told.
    fn on_task(
        &self,
        id_prefix: &str,
        f: &mut dyn FnMut(&mut dyn Tx, &Task) -> Result<Task>,
    ) -> Result<Task> {
        let mut out = None;
        let mut returned = Vec::new();
        self.transact(&mut |tx| {
            let t = find(tx, id_prefix)?;
            returned = sweep(tx, Some(&t.queue))?;
            let t = find(tx, &t.id)?;
            out = Some(f(tx, &t)?);
            Ok(())
        })?;
        told(self, &returned);
        out.ok_or_else(|| anyhow::anyhow!("no task"))
    }

    /// Tasks, oldest first: unfinished ones (open, claimed), or all with
    /// `all`; of one queue or every queue. Stale claims are swept first.
    fn tasks(&self, queue: Option<&str>, all: bool) -> Result<(Vec<Task>, Vec<Returned>)> {
        let mut out = (Vec::new(), Vec::new());
        self.transact(&mut |tx| {
            let returned = sweep(tx, queue)?;
            let state = if all {
                ""
            } else {
                "t.state IN ('open', 'claimed')"
            };
            let (filter, params) = match (queue, state.is_empty()) {
                (Some(q), true) => ("WHERE t.queue = $1".to_string(), vec![Val::from(q)]),
                (Some(q), false) => (
                    format!("WHERE t.queue = $1 AND {state}"),
                    vec![Val::from(q)],
                ),
                (None, true) => (String::new(), vec![]),
                (None, false) => (format!("WHERE {state}"), vec![]),
            };
            let list = rows(tx, &format!("{filter} ORDER BY t.message_seq"), &params)?
                .into_iter()
                .map(|r| r.task)
                .collect();
            out = (list, returned);
            Ok(())
        })?;
        Ok(out)
    }

    /// For session `me`, in each queue where it holds no claimed task:
    /// sweep, then claim the oldest open one (the first such queue wins),
    /// and hand it to `me` as a pending delivery.
    fn take(&self, me: i64, queues: &[String], how: Claimer) -> Result<Taken> {
        let mut out = Taken::default();
        self.transact(&mut |tx| {
            out = Taken::default();
            for q in queues {
                out.returned.extend(sweep(tx, Some(q))?);
                let held = rows(
                    tx,
                    "WHERE t.queue = $1 AND t.state = 'claimed' AND t.holder_id = $2",
                    &[Val::from(q), Val::from(me)],
                )?;
                if let Some(h) = held.into_iter().next() {
                    out.held.get_or_insert(h.task);
                    continue;
                }
                let now = now_text();
                let open = tx.row(
                    "SELECT t.message_seq FROM task_rows t JOIN messages m ON m.seq = t.message_seq \
                     WHERE t.queue = $1 AND t.state = 'open' \
                       AND (m.expires_at IS NULL OR m.expires_at > $2) \
                     ORDER BY t.message_seq LIMIT 1",
                    &[Val::from(q), Val::from(&now)],
                )?;
                let Some(open) = open else { continue };
                let seq = open[0].int()?;
                tx.exec(
                    "UPDATE task_rows SET state = 'claimed', holder_id = $2, claimed_by = $3, \
                     claimed_at = $4, renewed_at = $4, offline_at = NULL, attempts = attempts + 1 \
                     WHERE message_seq = $1 AND state = 'open'",
                    &[
                        Val::from(seq),
                        Val::from(me),
                        Val::from(how.as_str()),
                        Val::from(&now),
                    ],
                )?;
                // A task handed back to the same worker is printed again.
                tx.exec(
                    "INSERT INTO deliveries (message_seq, recipient_id) VALUES ($1, $2) \
                     ON CONFLICT (recipient_id, message_seq) \
                     DO UPDATE SET delivered_at = NULL, delivered_via = NULL",
                    &[Val::from(seq), Val::from(me)],
                )?;
                tx.wake(&[me], false)?;
                out.claimed = rows(tx, "WHERE t.message_seq = $1", &[Val::from(seq)])?
                    .pop()
                    .map(|r| r.task);
                break;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// `task done`: the task `id` held by `me` is done. Refused for a task
    /// `me` does not hold.
    fn finish(&self, me: i64, id: &str) -> Result<Task> {
        self.on_task(id, &mut |tx, t| {
            held_by(t, me, "finish")?;
            tx.exec(
                "UPDATE task_rows SET state = 'done', finished_at = $2, offline_at = NULL \
                 WHERE message_seq = $1",
                &[Val::from(t.seq), Val::from(now_text())],
            )?;
            // Its worker's monitor takes the next one.
            tx.wake(&[me], false)?;
            Ok(t.clone())
        })
    }

    /// Record the reply that carried a finished task's result.
    fn set_result(&self, seq: i64, result_id: &str) -> Result<()> {
        self.transact(&mut |tx| {
            tx.exec(
                "UPDATE task_rows SET result_id = $2 WHERE message_seq = $1",
                &[Val::from(seq), Val::from(result_id)],
            )?;
            tx.wake(&[], true)?;
            Ok(())
        })
    }

    /// `task fail`: give the task `id` held by `me` back (dead after its
    /// last attempt).
    fn fail(&self, me: i64, id: &str, why: &str) -> Result<Returned> {
        let mut out = None;
        self.on_task(id, &mut |tx, t| {
            held_by(t, me, "fail")?;
            out = Some(give_back(tx, t, why, &now_text())?);
            Ok(t.clone())
        })?;
        out.ok_or_else(|| anyhow::anyhow!("no task"))
    }

    /// `task renew`: restart the lease of the task `id` held by `me`.
    fn renew(&self, me: i64, id: &str) -> Result<Task> {
        self.on_task(id, &mut |tx, t| {
            held_by(t, me, "renew")?;
            tx.exec(
                "UPDATE task_rows SET renewed_at = $2, offline_at = NULL WHERE message_seq = $1",
                &[Val::from(t.seq), Val::from(now_text())],
            )?;
            Ok(t.clone())
        })
    }

    /// The queues that ever held a task, by name.
    fn queues(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.transact(&mut |tx| {
            out = tx
                .rows("SELECT DISTINCT queue FROM task_rows ORDER BY queue", &[])?
                .iter()
                .map(|v| v[0].text())
                .collect::<Result<_>>()?;
            Ok(())
        })?;
        Ok(out)
    }

    /// Sweep every queue (after a `disconnect`: its claims return at once).
    fn sweep_all(&self) -> Result<Vec<Returned>> {
        let mut out = Vec::new();
        self.transact(&mut |tx| {
            out = sweep(tx, None)?;
            Ok(())
        })?;
        Ok(out)
    }
}

impl<M: Mailbox + ?Sized> Tasks for M {}

/// A verb on a task only its holder may use.
fn held_by(t: &Task, me: i64, verb: &str) -> Result<()> {
    match t.state.as_str() {
        "claimed" if t.holder_id == Some(me) => Ok(()),
        "claimed" => bail!(
            "task {} is held by '{}', not by you: only its holder can {verb} it",
            t.id,
            crate::line::safe_name(t.holder.as_deref().unwrap_or("?"))
        ),
        "open" => bail!(
            "task {} is not claimed{}: claim it first (task claim --queue {})",
            t.id,
            t.failure
                .as_deref()
                .map(|f| format!(" (it returned to its queue: {})", crate::line::field(f)))
                .unwrap_or_default(),
            crate::line::safe_name(&t.queue)
        ),
        state => bail!("task {} is already {state}", t.id),
    }
}

/// Tell the posters of tasks that died; a failure only warns.
pub fn told<M: Mailbox + ?Sized>(store: &M, returned: &[Returned]) {
    for r in returned {
        if let Err(e) = tell_poster(store, r) {
            eprintln!(
                "inter-session: could not tell the poster of dead task {}: {e:#}",
                r.task.id
            );
        }
    }
}

/// Tell the poster of a task that died (one line, in the task's thread),
/// from its last holder. Best effort: the task stays dead either way.
pub fn tell_poster<M: Mailbox + ?Sized>(store: &M, r: &Returned) -> Result<()> {
    if !r.dead {
        return Ok(());
    }
    let (Some(poster), Some(holder)) = (r.task.poster_id, r.holder_id) else {
        return Ok(());
    };
    let Some(from) = store.session_by_id(holder)? else {
        return Ok(());
    };
    let parent = store.message(&r.task.id)?;
    let text = format!(
        "dead: task {} (queue {}) failed {} of {} attempts; last: {}",
        r.task.id, r.task.queue, r.task.attempts, r.task.max_attempts, r.why
    );
    let me = from.address();
    let mut msg = NewMessage::new(&me, Recipients::One(poster), &text);
    msg.reply_to = Some(&parent);
    msg.note_to_self = poster == holder;
    store.send(&msg)?;
    Ok(())
}
