//! `task post|claim|done|fail|renew|list|show|wait`: claim-once work queues
//! (SPEC §11). The rules live in `store::tasks`; this parses, calls, prints.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::mail::{options, read_body};
use super::waiter::{Waited, Waiter};
use super::{me, open, parse_age, print_table, sender, BodyArgs};
use crate::identity::{self, UsageError};
use crate::line::{self, field, safe_name};
use crate::store::tasks::{told, Claimer, Task, Tasks, DEFAULT_GRACE_MS};
use crate::store::{Mailbox, NewMessage, NewTask, Recipients, Verbs, MAX_DIRECT_BYTES};

/// A queue name follows the rule for mailbox names.
pub fn check_queue(q: &str) -> Result<(), UsageError> {
    if identity::is_valid_name(q) {
        return Ok(());
    }
    Err(UsageError(format!(
        "invalid queue '{}': a queue name is 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit",
        q.escape_debug()
    )))
}

fn age_ms(flag: &str, text: &str) -> Result<i64> {
    let secs = parse_age(text)?;
    if secs == 0 {
        return Err(
            UsageError(format!("invalid {flag} '{text}': it must be longer than 0")).into(),
        );
    }
    Ok(i64::try_from(secs)? * 1000)
}

/// A queue named on the command line must exist (have held a task), else
/// one line naming the queues there are.
fn known_queue(store: &dyn Mailbox, q: &str) -> Result<()> {
    let all = store.queues()?;
    if all.iter().any(|x| x == q) {
        return Ok(());
    }
    Err(crate::store::NotFound(format!(
        "no queue named '{q}'{}",
        if all.is_empty() {
            " (no task was ever posted; task post --queue NAME makes one)".to_string()
        } else {
            format!(" (queues: {})", all.join(", "))
        }
    ))
    .into())
}

pub struct PostArgs<'a> {
    pub queue: &'a str,
    pub max_attempts: i64,
    pub lease: Option<&'a str>,
    pub grace: Option<&'a str>,
    pub body: &'a BodyArgs,
}

/// `task post`.
pub fn post(from: Option<&str>, force: bool, a: &PostArgs) -> Result<i32> {
    check_queue(a.queue)?;
    if a.body.wait_delivered.is_some() {
        return Err(UsageError(
            "--wait-delivered is for mail; wait for a task's result with `task wait <id>`".into(),
        )
        .into());
    }
    if !(1..=1000).contains(&a.max_attempts) {
        return Err(UsageError(format!(
            "invalid --max-attempts {}: 1 to 1000",
            a.max_attempts
        ))
        .into());
    }
    let lease_ms = a.lease.map(|l| age_ms("--lease", l)).transpose()?;
    let grace_ms = match a.grace {
        Some(g) => age_ms("--lease-grace", g)?,
        None => DEFAULT_GRACE_MS,
    };
    let opts = options(a.body)?;
    let text = read_body(a.body, MAX_DIRECT_BYTES)?;
    let store = open()?;
    let poster = sender(store.as_ref(), from, force)?;
    let task = NewTask {
        queue: a.queue.to_string(),
        max_attempts: a.max_attempts,
        lease_ms,
        grace_ms,
    };
    let mut msg = NewMessage::new(&poster, Recipients::Queue(task), &text);
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    let sent = store.send(&msg)?;
    let posted = match store.task(&sent.id) {
        Ok(t) => t,
        Err(e) if sent.duplicate && e.is::<crate::store::NotFound>() => {
            anyhow::bail!(
                "idempotency key '{}' already sent message {}, which is not a task: nothing was posted",
                field(opts.key.as_deref().unwrap_or_default()),
                sent.id
            )
        }
        Err(e) => return Err(e),
    };
    let (open_tasks, returned) = store.tasks(Some(a.queue), false)?;
    told(store.as_ref(), &returned);
    let open_n = open_tasks.iter().filter(|t| t.state == "open").count();
    if a.body.json {
        println!(
            "{}",
            serde_json::json!({
                "id": sent.id, "queue": a.queue, "open": open_n,
                "duplicate": sent.duplicate, "state": posted.state,
            })
        );
    } else if sent.duplicate {
        println!(
            "posted {} -> queue {} (duplicate, not reposted; it is {})",
            sent.id, a.queue, posted.state
        );
    } else {
        println!("posted {} -> queue {} ({open_n} open)", sent.id, a.queue);
    }
    Ok(0)
}

/// `task claim`: take the oldest open task of the queue, print it as the
/// monitor would, and mark it delivered once printed.
pub fn claim(from: Option<&str>, queue: &str, wait: Option<&str>, json: bool) -> Result<i32> {
    check_queue(queue)?;
    let patience = match wait {
        Some(w) => Duration::from_secs(parse_age(w)?),
        None => Duration::ZERO,
    };
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    if wait.is_none() {
        // Waiting, a worker may start before the lead posts anything.
        known_queue(store.as_ref(), queue)?;
    }
    let waiter = Waiter::new()?;
    let queues = [queue.to_string()];
    let mut held = None;
    let found = waiter.until(store.as_ref(), Instant::now() + patience, || {
        let taken = store.take(session.id, &queues, Claimer::Pull)?;
        told(store.as_ref(), &taken.returned);
        if let Some(h) = taken.held {
            held = Some(h);
            return Ok(Some(None));
        }
        Ok(taken.claimed.map(Some))
    })?;
    let task = match found {
        Waited::Got(Some(t)) => t,
        Waited::Got(None) => {
            let h = held.context("no task")?;
            eprintln!(
                "inter-session: you already hold task {} of queue {queue}; finish it first \
                 (task done {0} / task fail {0} --text why)",
                h.id
            );
            return Ok(1);
        }
        Waited::TimedOut => {
            eprintln!(
                "inter-session: no open task in queue {queue}{}",
                wait.map(|w| format!(" within {w}")).unwrap_or_default()
            );
            return Ok(124);
        }
        Waited::Interrupted => return Ok(130),
    };
    let m = store.message(&task.id)?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut v = serde_json::to_value(&task)?;
        v["text"] = serde_json::Value::String(m.text.clone());
        writeln!(out, "{v}")?;
    } else {
        for l in line::message_lines(&m, line::clock()) {
            writeln!(out, "{l}")?;
        }
    }
    out.flush()?;
    store.mark_delivered(session.id, &[task.seq], crate::store::via::CLAIM)?;
    Ok(0)
}

/// `task done`: finish a task this session holds; the result goes to the
/// poster as a reply in the task's thread.
pub fn done(from: Option<&str>, id: &str, body: &BodyArgs) -> Result<i32> {
    let text = if body.text.is_none() && body.text_file.is_none() {
        "done".to_string()
    } else {
        read_body(body, MAX_DIRECT_BYTES)?
    };
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    let task = store.finish(session.id, id)?;
    let poster = task.poster_id.context("the task has no poster mailbox")?;
    let parent = store.message(&task.id)?;
    let addr = session.address();
    let mut msg = NewMessage::new(&addr, Recipients::One(poster), &text);
    msg.reply_to = Some(&parent);
    msg.note_to_self = poster == session.id;
    let sent = store.send(&msg).with_context(|| {
        format!(
            "task {} is done, but its result could not be sent to '{}'",
            task.id,
            safe_name(&task.poster)
        )
    })?;
    store.set_result(task.seq, &sent.id)?;
    if body.json {
        println!(
            "{}",
            serde_json::json!({"id": task.id, "state": "done", "result_id": sent.id, "poster": task.poster})
        );
    } else {
        println!(
            "done {}; result sent to {} ({})",
            task.id,
            safe_name(&task.poster),
            sent.id
        );
    }
    Ok(0)
}

/// `task fail`: give a task back (attempt +1); after its last attempt it is
/// dead and the poster is told.
pub fn fail(from: Option<&str>, id: &str, body: &BodyArgs) -> Result<i32> {
    let why = read_body(body, 2000)?;
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    let r = store.fail(session.id, id, &why)?;
    if r.dead {
        told(store.as_ref(), std::slice::from_ref(&r));
    }
    let t = &r.task;
    if body.json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "state": if r.dead { "dead" } else { "open" },
                "attempts": t.attempts, "max_attempts": t.max_attempts})
        );
    } else if r.dead {
        println!(
            "task {} is dead after {} attempts; {} was told",
            t.id,
            t.attempts,
            safe_name(&t.poster)
        );
    } else {
        println!(
            "returned {} to queue {} (attempt {} of {} failed)",
            t.id, t.queue, t.attempts, t.max_attempts
        );
    }
    Ok(0)
}

/// `task renew`: restart the lease of a task this session holds.
pub fn renew(from: Option<&str>, id: &str, json: bool) -> Result<i32> {
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    let t = store.renew(session.id, id)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"id": t.id, "lease_ms": t.lease_ms})
        );
    } else {
        match t.lease_ms {
            Some(ms) => println!(
                "renewed {}: its lease runs {} from now",
                t.id,
                line::format_age(u64::try_from(ms / 1000).unwrap_or(0))
            ),
            None => println!(
                "renewed {} (it has no --lease: only leaving, or its monitor staying offline, returns it)",
                t.id
            ),
        }
    }
    Ok(0)
}

fn ago(at: Option<&str>) -> String {
    at.and_then(line::since).unwrap_or_default()
}

/// A task's state in words: open, failed (back in its queue), claimed by X
/// for 3m, done, dead, expired.
fn state_words(t: &Task) -> String {
    match t.state.as_str() {
        "claimed" => format!(
            "claimed by {} for {}",
            safe_name(t.holder.as_deref().unwrap_or("?")),
            ago(t.claimed_at.as_deref())
        ),
        "open" if t.expired => "expired".to_string(),
        "open"
            if t.attempts > 0
                && t.failure
                    .as_deref()
                    .is_some_and(|f| f.starts_with("requeued:")) =>
        {
            "requeued".to_string()
        }
        "open" if t.attempts > 0 => "failed".to_string(),
        s => s.to_string(),
    }
}

/// `task list`.
pub fn list(queue: Option<&str>, all: bool, json: bool) -> Result<i32> {
    if let Some(q) = queue {
        check_queue(q)?;
    }
    let store = open()?;
    if let Some(q) = queue {
        known_queue(store.as_ref(), q)?;
    }
    let (tasks, returned) = store.tasks(queue, all)?;
    told(store.as_ref(), &returned);
    if json {
        println!("{}", serde_json::to_string(&tasks)?);
        return Ok(0);
    }
    if tasks.is_empty() {
        println!(
            "no {}tasks{}",
            if all { "" } else { "open or claimed " },
            queue.map(|q| format!(" in queue {q}")).unwrap_or_default()
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let text = store.message(&t.id).map(|m| m.text).unwrap_or_default();
            vec![
                t.id.clone(),
                t.queue.clone(),
                state_words(t),
                format!("{}/{}", t.attempts, t.max_attempts),
                safe_name(&t.poster).to_string(),
                ago(Some(&t.created_at)),
                text,
            ]
        })
        .collect();
    print_table(
        &["ID", "QUEUE", "STATE", "ATTEMPTS", "POSTER", "AGE", "TEXT"],
        &rows,
    );
    Ok(0)
}

/// `task show`.
pub fn show(id: &str, json: bool) -> Result<i32> {
    let store = open()?;
    let t = store.task(id)?;
    let m = store.message(&t.id)?;
    let result = t
        .result_id
        .as_deref()
        .map(|r| store.message(r).map(|m| m.text))
        .transpose()?;
    if json {
        let mut v = serde_json::to_value(&t)?;
        v["text"] = serde_json::Value::String(m.text);
        v["result"] = result.map_or(serde_json::Value::Null, serde_json::Value::String);
        println!("{v}");
        return Ok(0);
    }
    let mut out = String::new();
    out.push_str(&format!("task      {}\n", t.id));
    out.push_str(&format!("queue     {}\n", safe_name(&t.queue)));
    out.push_str(&format!("state     {}\n", state_words(&t)));
    out.push_str(&format!("poster    {}\n", safe_name(&t.poster)));
    out.push_str(&format!("attempts  {} of {}\n", t.attempts, t.max_attempts));
    out.push_str(&format!("posted    {}\n", field(&t.created_at)));
    if let Some(e) = &t.expires_at {
        out.push_str(&format!("expires   {}\n", field(e)));
    }
    if let Some(f) = &t.failure {
        out.push_str(&format!("last      {}\n", line::sanitize(f)));
    }
    if let Some(r) = &result {
        out.push_str(&format!("result    {}\n", line::sanitize(r)));
    }
    out.push_str("text\n");
    out.push_str(&line::clean_lines(&m.text));
    out.push('\n');
    print!("{out}");
    Ok(0)
}

/// `task wait`: block until every task given is done (or dead); print each
/// result. Exit 0 when all are done, 1 when one died, 124 on timeout.
pub fn wait(ids: &[String], timeout: Option<&str>, json: bool) -> Result<i32> {
    let patience = match timeout {
        Some(t) => Duration::from_secs(parse_age(t)?),
        None => Duration::from_secs(super::MAX_AGE_SECS),
    };
    let store = open()?;
    let tasks = ids
        .iter()
        .map(|id| store.task(id))
        .collect::<Result<Vec<_>>>()?;
    let waiter = Waiter::new()?;
    let found = waiter.until(store.as_ref(), Instant::now() + patience, || {
        // Each `task` sweeps its queue first (and tells posters of the dead).
        let now: Vec<Task> = tasks
            .iter()
            .map(|t| store.task(&t.id))
            .collect::<Result<_>>()?;
        let finished = now.iter().all(|t| {
            t.state == "dead" || (t.state == "done" && t.result_id.is_some()) || t.expired
        });
        Ok(finished.then_some(now))
    })?;
    let now = match found {
        Waited::Got(now) => now,
        Waited::TimedOut => {
            let open = tasks.len();
            eprintln!(
                "inter-session: timed out waiting for {open} task(s); `task list` shows where they are"
            );
            return Ok(124);
        }
        Waited::Interrupted => return Ok(130),
    };
    let mut any_dead = false;
    let mut out = Vec::new();
    for t in &now {
        let result = t
            .result_id
            .as_deref()
            .map(|r| store.message(r).map(|m| m.text))
            .transpose()?;
        let state = if t.expired {
            "expired"
        } else {
            t.state.as_str()
        };
        any_dead |= state != "done";
        if json {
            out.push(serde_json::json!({
                "id": t.id, "state": state, "result": result, "failure": t.failure,
            }));
        } else {
            let what = match state {
                "done" => line::sanitize(result.as_deref().unwrap_or_default()),
                _ => line::sanitize(t.failure.as_deref().unwrap_or("no result")),
            };
            println!("{} {state}: {what}", t.id);
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(if any_dead { 1 } else { 0 })
}
