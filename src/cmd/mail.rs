//! `mail send` and `mail broadcast`.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::waiter::{Waited, Waiter};
use super::{open, parse_age, sender, sender_and_recipient, BodyArgs};
use crate::identity::{self, UsageError};
use crate::line::{field, safe_name};
use crate::store::{
    HistoryFilter, HistoryRow, LookupError, Mailbox, NewMessage, Recipients, Sent, State, Verbs,
    MAX_BROADCAST_BYTES, MAX_DIRECT_BYTES,
};

/// The message text from --text, --text-file or stdin, checked before any
/// database work: at most `limit` bytes, valid UTF-8, not empty.
///
/// A file is read through `take`, never to its end: a FIFO, `/dev/zero`, a
/// process substitution or a device reports no size (or 0) and may never
/// end, so only the bytes read say whether it is too long.
pub(super) fn read_body(body: &BodyArgs, limit: usize) -> Result<String> {
    let limit64 = limit as u64;
    // `capped`: the read stopped at its cap, so the true size is unknown.
    let (mut bytes, from_stdin, capped) = if let Some(t) = &body.text {
        (t.clone().into_bytes(), false, false)
    } else if let Some(path) = &body.text_file {
        let file = std::fs::File::open(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("could not read {}", path.display()))?;
        if meta.is_file() && meta.len() > limit64 {
            return Err(too_long(Some(meta.len()), limit));
        }
        let bytes = read_at_most(file, limit64 + 1)
            .with_context(|| format!("could not read {}", path.display()))?;
        let capped = bytes.len() as u64 > limit64;
        (bytes, false, capped)
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(UsageError(
                "no text given: use --text, --text-file FILE, or pipe the text on stdin".into(),
            )
            .into());
        }
        // Room for the final line break that is dropped below, and one
        // byte more: a full read means the text did not end in time.
        let cap = limit64 + 3;
        let bytes = read_at_most(stdin.lock(), cap).context("could not read stdin")?;
        if bytes.len() as u64 == cap {
            return Err(too_long(None, limit));
        }
        (bytes, true, false)
    };
    if from_stdin {
        // Like the shell's $(…): `echo hi | mail send` sends "hi".
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
    }
    // Length before encoding: a read cut at the limit may end inside a
    // character, and the answer to an endless stream is "too long".
    if bytes.len() > limit {
        return Err(too_long((!capped).then_some(bytes.len() as u64), limit));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "text is not valid UTF-8 (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        bail!("empty text: nothing to send");
    }
    Ok(text)
}

/// Up to `cap` bytes of `r` (fewer when it ends first).
fn read_at_most(r: impl Read, cap: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The one refusal for a text over the limit, whatever it came from: its
/// size when known (a string, a regular file), else that it has more.
fn too_long(size: Option<u64>, limit: usize) -> anyhow::Error {
    match size {
        Some(n) => anyhow::anyhow!("text too long: {n} bytes, at most {limit}"),
        None => anyhow::anyhow!("text too long: more than {limit} bytes, at most {limit}"),
    }
}

/// Expiry and idempotency options, checked before anything is written.
pub(super) struct Options {
    pub(super) expires_at: Option<String>,
    pub(super) key: Option<String>,
}

pub(super) fn options(body: &BodyArgs) -> Result<Options> {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let expires_at = match (&body.ttl, &body.expires) {
        (Some(ttl), _) => {
            let secs = parse_age(ttl)?;
            if secs == 0 {
                return Err(
                    UsageError(format!("invalid --ttl '{ttl}': it must be longer than 0")).into(),
                );
            }
            Some(fmt(from_now(secs).ok_or_else(|| {
                UsageError(format!("invalid --ttl '{}': too long", ttl.escape_debug()))
            })?))
        }
        (None, Some(at)) => {
            let t = chrono::DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    UsageError(format!(
                        "invalid --expires '{at}': use RFC 3339, e.g. 2026-12-01T09:00:00Z"
                    ))
                })?
                .with_timezone(&chrono::Utc);
            if t <= chrono::Utc::now() {
                return Err(UsageError(format!("--expires '{at}' is in the past")).into());
            }
            Some(fmt(t))
        }
        (None, None) => None,
    };
    let key = match &body.idempotency_key {
        Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY => {
            return Err(UsageError(format!(
                "invalid --idempotency-key: 1 to {MAX_IDEMPOTENCY_KEY} bytes (got {})",
                k.len()
            ))
            .into())
        }
        other => other.clone(),
    };
    Ok(Options { expires_at, key })
}

const MAX_IDEMPOTENCY_KEY: usize = 200;

/// Now plus `secs`, or `None` where chrono cannot represent it (`parse_age`
/// already keeps ages far inside that; this keeps a panic out of reach).
fn from_now(secs: u64) -> Option<chrono::DateTime<chrono::Utc>> {
    let delta = chrono::TimeDelta::try_seconds(i64::try_from(secs).ok()?)?;
    chrono::Utc::now().checked_add_signed(delta)
}

fn print_sent(sent: &Sent, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(sent)?);
        return Ok(());
    }
    if let [one] = sent.recipients.as_slice() {
        println!(
            "sent {} -> {} ({})",
            sent.id,
            crate::line::safe_name(&one.name),
            one.status
        );
    } else if sent.duplicate {
        println!(
            "sent {} -> {} sessions (duplicate, not resent)",
            sent.id,
            sent.recipients.len()
        );
    } else {
        let delivered = sent
            .recipients
            .iter()
            .filter(|r| r.status == "delivered")
            .count();
        println!(
            "sent {} -> {} sessions ({delivered} delivered, {} queued)",
            sent.id,
            sent.recipients.len(),
            sent.recipients.len() - delivered
        );
    }
    Ok(())
}

fn check_recipient_name(to: &str) -> Result<()> {
    if to.is_empty()
        || !to
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(UsageError(format!(
            "invalid recipient '{}': {}",
            to.escape_debug(),
            identity::NAME_RULE
        ))
        .into());
    }
    Ok(())
}

/// `mail send --to T` / `mail send --reply-to ID` / `mail reply ID`.
pub fn send(
    from: Option<&str>,
    force: bool,
    to: Option<&str>,
    reply_to: Option<&str>,
    body: &BodyArgs,
) -> Result<i32> {
    if let Some(to) = to {
        check_recipient_name(to)?;
    }
    let opts = options(body)?;
    let text = read_body(body, MAX_DIRECT_BYTES)?;
    let store = open()?;
    let parent = reply_to.map(|id| store.message(id)).transpose()?;
    let (sender, recipient) = match (to, &parent) {
        (Some(to), _) => sender_and_recipient(store.as_ref(), from, force, to)?,
        (None, Some(p)) => {
            let id = p
                .sender_id
                .context("the replied-to message has no sender mailbox")?;
            let s = store
                .session_by_id(id)?
                .context("the replied-to sender's mailbox is gone")?;
            if s.state == State::Left {
                return Err(LookupError::Left(s.name).into());
            }
            (sender(store.as_ref(), from, force)?, s.address())
        }
        (None, None) => return Err(UsageError("give --to NAME (or --reply-to ID)".into()).into()),
    };
    let mut msg = NewMessage::new(&sender, Recipients::One(recipient.id), &text);
    msg.reply_to = parent.as_ref();
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    let sent = store.send(&msg)?;
    print_sent(&sent, body.json)?;
    wait_delivered(store.as_ref(), &sent, body)
}

pub fn broadcast(from: Option<&str>, force: bool, project: bool, body: &BodyArgs) -> Result<i32> {
    let opts = options(body)?;
    let text = read_body(body, MAX_BROADCAST_BYTES)?;
    let store = open()?;
    let sender = sender(store.as_ref(), from, force)?;
    let project = if project {
        let cwd = std::env::current_dir().context("could not read the current directory")?;
        Some(identity::project_of(&cwd).display().to_string())
    } else {
        None
    };
    let mut msg = NewMessage::new(&sender, Recipients::All { project }, &text);
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    let sent = store.send(&msg)?;
    print_sent(&sent, body.json)?;
    wait_delivered(store.as_ref(), &sent, body)
}

/// `mail ask`: send, then wait for the first reply and print its text
/// (made safe unless `raw`, as `inbox read` prints one).
pub fn ask(
    from: Option<&str>,
    force: bool,
    to: &str,
    timeout: &str,
    raw: bool,
    body: &BodyArgs,
) -> Result<i32> {
    check_recipient_name(to)?;
    if body.wait_delivered.is_some() {
        return Err(UsageError(
            "mail ask waits for the answer itself; --wait-delivered is for send, reply and broadcast"
                .into(),
        )
        .into());
    }
    let wait = parse_age(timeout)?;
    if wait == 0 {
        return Err(UsageError(format!(
            "invalid --timeout '{timeout}': it must be longer than 0"
        ))
        .into());
    }
    let wait = Duration::from_secs(wait);
    let opts = options(body)?;
    let text = read_body(body, MAX_DIRECT_BYTES)?;
    // Handlers before the question goes out: an interrupt always withdraws the wait.
    let waiter = Waiter::new()?;
    let store = open()?;
    let (sender, recipient) = sender_and_recipient(store.as_ref(), from, force, to)?;
    let deadline = Instant::now() + wait;
    // The hold outlives our deadline a little, so the reply cannot slip to
    // the monitor in the instant between our last look and giving up.
    let hold = from_now(wait.as_secs().saturating_add(5)).ok_or_else(|| {
        UsageError(format!(
            "invalid --timeout '{}': too long",
            timeout.escape_debug()
        ))
    })?;
    let mut msg = NewMessage::new(&sender, Recipients::One(recipient.id), &text);
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    msg.ask_until = Some(hold.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    let sent = store.send(&msg)?;
    let asker = store
        .address(&sender.name)?
        .context("the asking session vanished")?;
    match waiter.until(store.as_ref(), deadline, || {
        store.take_reply(&sent.id, asker.id)
    })? {
        Waited::Got(reply) => {
            let mut out = std::io::stdout().lock();
            if body.json {
                // The reply as `inbox read --json` prints a message.
                writeln!(out, "{}", serde_json::to_string(&reply)?)?;
            } else {
                super::inbox::write_text(&mut out, &reply.text, raw)?;
            }
            out.flush()?;
            Ok(0)
        }
        Waited::Interrupted => {
            store.end_ask(&sent.id)?;
            eprintln!(
                "inter-session: interrupted; the question {} stays in its thread",
                sent.id
            );
            Ok(130)
        }
        Waited::TimedOut => {
            store.end_ask(&sent.id)?;
            // The name comes from the database: shown in its safe form.
            let name = safe_name(&recipient.name);
            let state = if store.is_delivered(&sent.id)? {
                "the question was delivered".to_string()
            } else {
                format!("the question is still queued ('{name}' has no monitor running)")
            };
            eprintln!(
                "inter-session: no reply from '{name}' within {}; {state}; a later reply goes to your mailbox (question {})",
                field(timeout), sent.id
            );
            Ok(124)
        }
    }
}

/// `--wait-delivered D`: after the send, wait until every recipient's copy
/// was handed to its reader (exit 0), at most D (exit 124, saying who has
/// not read it yet); 130 when interrupted.
fn wait_delivered(store: &dyn Mailbox, sent: &Sent, body: &BodyArgs) -> Result<i32> {
    let Some(limit) = &body.wait_delivered else {
        return Ok(0);
    };
    let wait = Duration::from_secs(parse_age(limit)?);
    let deadline = Instant::now() + wait;
    let delivered = || Ok(store.is_delivered(&sent.id)?.then_some(()));
    match Waiter::new()?.until(store, deadline, delivered)? {
        Waited::Got(()) => Ok(0),
        Waited::Interrupted => {
            eprintln!(
                "inter-session: interrupted; message {} stays queued",
                sent.id
            );
            Ok(130)
        }
        Waited::TimedOut => {
            let waiting: Vec<String> = receipts(store, &sent.id)?
                .into_iter()
                .filter(|r| r.status != "delivered")
                .map(|r| safe_name(&r.recipient).into_owned())
                .collect();
            eprintln!(
                "inter-session: message {} not delivered within {limit}; still waiting: {}",
                sent.id,
                waiting.join(", ")
            );
            Ok(124)
        }
    }
}

/// One message's rows of the `history` view: its receipts.
fn receipts(store: &dyn Mailbox, id: &str) -> Result<Vec<HistoryRow>> {
    store.history(&HistoryFilter {
        message: Some(id.to_string()),
        limit: usize::MAX / 2,
        ..Default::default()
    })
}

/// `mail status <id>`: per recipient, queued, delivered via X at T, or expired.
pub fn status(id: &str, json: bool) -> Result<i32> {
    let store = open()?;
    let m = store.message(id)?;
    let rows = receipts(store.as_ref(), &m.id)?;
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "recipient": r.recipient, "status": r.status,
                    "delivered_at": r.delivered_at, "delivered_via": r.delivered_via,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
        return Ok(0);
    }
    for r in &rows {
        let how = match (r.status.as_str(), &r.delivered_at) {
            ("delivered", Some(at)) => format!(
                "delivered via {} at {}",
                crate::line::field(r.delivered_via.as_deref().unwrap_or("an earlier version")),
                crate::line::field(at)
            ),
            // The view's word for mail that waits; a receipt says queued.
            ("pending", _) => "queued".to_string(),
            (other, _) => crate::line::field(other),
        };
        println!("{}: {how}", safe_name(&r.recipient));
    }
    Ok(0)
}
