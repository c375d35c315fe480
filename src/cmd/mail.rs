//! `mail send` and `mail broadcast`.

use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{open, parse_age, sender, sender_and_recipient, BodyArgs};
use crate::identity::{self, UsageError};
use crate::line::{field, safe_name};
use crate::store::{
    LookupError, Mailbox, Message, NewMessage, NotFound, Recipients, Sent, State,
    MAX_BROADCAST_BYTES, MAX_DIRECT_BYTES,
};

/// The message text from --text, --text-file or stdin, checked before any
/// database work: valid UTF-8, not empty, within `limit` bytes.
fn read_body(body: &BodyArgs, limit: usize) -> Result<String> {
    let (bytes, from_stdin) = if let Some(t) = &body.text {
        (t.clone().into_bytes(), false)
    } else if let Some(path) = &body.text_file {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        if meta.len() > limit as u64 {
            bail!("text too long: {} bytes, at most {limit}", meta.len());
        }
        (
            std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?,
            false,
        )
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(UsageError(
                "no text given: use --text, --text-file FILE, or pipe the text on stdin".into(),
            )
            .into());
        }
        let mut buf = Vec::new();
        stdin
            .lock()
            .take(limit as u64 + 2)
            .read_to_end(&mut buf)
            .context("could not read stdin")?;
        (buf, true)
    };
    let mut text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "text is not valid UTF-8 (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    if from_stdin {
        // Like the shell's $(…): `echo hi | mail send` sends "hi".
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
    }
    if text.len() > limit {
        bail!("text too long: {} bytes, at most {limit}", text.len());
    }
    if text.trim().is_empty() {
        bail!("empty text: nothing to send");
    }
    Ok(text)
}

/// Expiry and idempotency options, checked before anything is written.
struct Options {
    expires_at: Option<String>,
    key: Option<String>,
}

fn options(body: &BodyArgs) -> Result<Options> {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let expires_at = match (&body.ttl, &body.expires) {
        (Some(ttl), _) => {
            let secs = parse_age(ttl)?;
            if secs == 0 {
                return Err(
                    UsageError(format!("invalid --ttl '{ttl}': it must be longer than 0")).into(),
                );
            }
            let secs = i64::try_from(secs)
                .map_err(|_| UsageError(format!("--ttl '{ttl}' is too long")))?;
            Some(fmt(chrono::Utc::now() + chrono::Duration::seconds(secs)))
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

fn print_sent(sent: &Sent, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(sent)?);
        return Ok(());
    }
    if let [one] = sent.recipients.as_slice() {
        println!("sent {} -> {} ({})", sent.id, one.name, one.status);
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

/// The message replied to; an unknown id is a usage error.
fn parent(store: &dyn Mailbox, id: &str) -> Result<Message> {
    match store.message(id) {
        Ok(m) => Ok(m),
        Err(e) if e.is::<NotFound>() => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e),
    }
}

/// `mail send --to T` / `mail send --reply-to ID` / `mail reply ID`.
pub fn send(
    from: Option<&str>,
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
    let parent = reply_to.map(|id| parent(store.as_ref(), id)).transpose()?;
    let (sender, recipient) = match (to, &parent) {
        (Some(to), _) => sender_and_recipient(store.as_ref(), from, to)?,
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
            (sender(store.as_ref(), from)?, s.address())
        }
        (None, None) => return Err(UsageError("give --to NAME (or --reply-to ID)".into()).into()),
    };
    let mut msg = NewMessage::new(&sender, Recipients::One(recipient.id), &text);
    msg.reply_to = parent.as_ref();
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    let sent = store.send(&msg)?;
    print_sent(&sent, body.json)?;
    Ok(0)
}

pub fn broadcast(from: Option<&str>, project: bool, body: &BodyArgs) -> Result<i32> {
    let opts = options(body)?;
    let text = read_body(body, MAX_BROADCAST_BYTES)?;
    let store = open()?;
    let sender = sender(store.as_ref(), from)?;
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
    Ok(0)
}

/// `mail ask`: send, then wait for the first reply and print its text
/// (made safe unless `raw`, as `inbox read` prints one).
pub fn ask(from: Option<&str>, to: &str, timeout: &str, raw: bool, body: &BodyArgs) -> Result<i32> {
    check_recipient_name(to)?;
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
    let (tx, rx) = channel();
    let signal = crate::watch::install_signals(tx.clone())?;
    let store = open()?;
    let (sender, recipient) = sender_and_recipient(store.as_ref(), from, to)?;
    let deadline = Instant::now() + wait;
    // The hold outlives our deadline a little, so the reply cannot slip to
    // the monitor in the instant between our last look and giving up.
    let hold = chrono::Utc::now()
        + chrono::Duration::seconds(i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 4) + 5);
    let mut msg = NewMessage::new(&sender, Recipients::One(recipient.id), &text);
    msg.expires_at = opts.expires_at;
    msg.idempotency_key = opts.key.as_deref();
    msg.ask_until = Some(hold.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
    let sent = store.send(&msg)?;
    let asker = store
        .address(&sender.name)?
        .context("the asking session vanished")?;
    let _subscription = store.subscribe(tx)?;
    loop {
        if signal.load(Ordering::SeqCst) != 0 {
            store.end_ask(&sent.id)?;
            eprintln!(
                "inter-session: interrupted; the question {} stays in its thread",
                sent.id
            );
            return Ok(130);
        }
        if let Some(reply) = store.take_reply(&sent.id, asker.id)? {
            let mut out = std::io::stdout().lock();
            super::inbox::write_text(&mut out, &reply.text, raw)?;
            out.flush()?;
            return Ok(0);
        }
        let now = Instant::now();
        if now >= deadline {
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
            return Ok(124);
        }
        // Woken by the store's change notification; the poll is a fallback.
        let _ = rx.recv_timeout((deadline - now).min(Duration::from_secs(1)));
    }
}
