//! `mail send` and `mail broadcast`.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};

use super::{open, sender, BodyArgs};
use crate::identity::{self, UsageError};
use crate::store::{NewMessage, Recipients, Sent, MAX_BROADCAST_BYTES, MAX_DIRECT_BYTES};

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

fn print_sent(sent: &Sent, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(sent)?);
        return Ok(());
    }
    if let [one] = sent.recipients.as_slice() {
        println!("sent {} -> {} ({})", sent.id, one.name, one.status);
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

pub fn send(from: Option<&str>, to: &str, body: &BodyArgs) -> Result<i32> {
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
    let text = read_body(body, MAX_DIRECT_BYTES)?;
    let store = open()?;
    let sender = sender(store.as_ref(), from)?;
    let recipient = store.resolve(to)?;
    let sent = store.send(&NewMessage {
        sender: &sender,
        to: Recipients::One(recipient.id),
        text: &text,
    })?;
    print_sent(&sent, body.json)?;
    Ok(0)
}

pub fn broadcast(from: Option<&str>, project: bool, body: &BodyArgs) -> Result<i32> {
    let text = read_body(body, MAX_BROADCAST_BYTES)?;
    let store = open()?;
    let sender = sender(store.as_ref(), from)?;
    let project = if project {
        let cwd = std::env::current_dir().context("could not read the current directory")?;
        Some(identity::project_of(&cwd).display().to_string())
    } else {
        None
    };
    let sent = store.send(&NewMessage {
        sender: &sender,
        to: Recipients::All { project },
        text: &text,
    })?;
    print_sent(&sent, body.json)?;
    Ok(0)
}
