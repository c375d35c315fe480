//! `hook <host> <event>`: a host's hook hands pending mail to its model in
//! the host's own format (SPEC §9: Claude Code). It reads the hook's JSON on
//! stdin, finds the session as Bash and the monitor do (else by the hook's
//! `session_id`), and prints exactly what the host takes: context to inject,
//! a Stop block, or, for an `asyncRewake` hook, the mail on stderr with exit
//! 2. Mail is marked delivered (`hook:<host>:<event>`) only after that output
//! is written and flushed; with no mail, or while a live monitor of the
//! session prints it, the hook prints nothing and exits 0.
//!
//! One batch at most per run (`pace::fit`, ≤ 3,000 UTF-16 units, what the
//! host shows at once); the rest waits for the next hook or the monitor.
//! A Stop hook never blocks twice in a row (`stop_hook_active`): under
//! `claude -p` the host drops the 9th consecutive block, and mail must not be
//! marked delivered through a block the host overrides.

use std::io::{Read, Write};

use anyhow::{Context, Result};
use clap::ValueEnum;
use serde_json::{json, Value};

use super::{me_if_any, open};
use crate::identity::UsageError;
use crate::store::Verbs;
use crate::{line, pace};

/// Largest hook input read from stdin.
const MAX_INPUT: u64 = 1024 * 1024;
/// What one hook hands over at most, in UTF-16 units (a host notification).
const BATCH_UNITS: usize = 3000;
/// Messages looked at per run.
const PAGE: usize = 256;

/// The hosts whose hooks this verb speaks for.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Claude Code (plugin `hooks/hooks.json` or settings hooks)
    Claude,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Claude => "claude",
        }
    }
}

/// How a host takes mail from one hook event.
enum Hand {
    /// `hookSpecificOutput.additionalContext` on stdout.
    Context,
    /// `{"decision":"block","reason":…}` on stdout: the model goes on.
    Block,
    /// The mail on stderr and exit 2 (an `asyncRewake` hook wakes the session).
    Rewake,
}

fn hand_for(host: Host, event: &str) -> Option<Hand> {
    match (host, event) {
        (Host::Claude, "SessionStart" | "UserPromptSubmit" | "PostToolUse") => Some(Hand::Context),
        (Host::Claude, "Stop") => Some(Hand::Block),
        (Host::Claude, "FileChanged") => Some(Hand::Rewake),
        _ => None,
    }
}

pub fn run(host: Host, event: &str, from: Option<&str>) -> Result<i32> {
    let hand = hand_for(host, event).ok_or_else(|| {
        UsageError(format!(
            "hook {}: unknown event '{}' (SessionStart, UserPromptSubmit, PostToolUse, Stop, FileChanged)",
            host.name(),
            line::field(event)
        ))
    })?;
    let input = read_input()?;
    let store = open()?;
    let session = match me_if_any(store.as_ref(), from)? {
        Some(s) => Some(s),
        None => match input["session_id"].as_str().filter(|k| !k.is_empty()) {
            Some(key) => store.session_by_key(key)?,
            None => None,
        },
    };
    // Not connected, or a live monitor prints this session's mail.
    let Some(session) = session.filter(|s| !store.is_online(s.id)) else {
        return Ok(0);
    };
    if matches!(hand, Hand::Block) && input["stop_hook_active"].as_bool() == Some(true) {
        return Ok(0);
    }
    let pending = store.pending(session.id, 0, PAGE)?;
    if pending.is_empty() {
        return Ok(0);
    }
    let now = line::clock();
    let rendered: Vec<Vec<String>> = pending
        .iter()
        .map(|m| line::message_lines(m, now))
        .collect();
    let n = pace::fit(&rendered, 0, BATCH_UNITS);
    let text = rendered[..n].concat().join("\n");
    let seqs: Vec<i64> = pending[..n].iter().map(|m| m.seq).collect();
    let code = match hand {
        Hand::Context => {
            let out =
                json!({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}});
            write_all(&mut std::io::stdout().lock(), &out)?;
            0
        }
        Hand::Block => {
            let out = json!({"decision": "block", "reason": text});
            write_all(&mut std::io::stdout().lock(), &out)?;
            0
        }
        Hand::Rewake => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes())
                .and_then(|()| err.write_all(b"\n"))
                .and_then(|()| err.flush())
                .context("could not hand the mail to the host")?;
            2
        }
    };
    // Handed over: now, and only now, it counts as delivered.
    store.mark_delivered(session.id, &seqs, &format!("hook:{}:{event}", host.name()))?;
    Ok(code)
}

/// The hook's JSON on stdin (an object; empty input counts as `{}`).
fn read_input() -> Result<Value> {
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut raw)
        .context("could not read the hook's input")?;
    if raw.len() as u64 > MAX_INPUT {
        anyhow::bail!("the hook's input is over {MAX_INPUT} bytes");
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&raw).context("the hook's input is not JSON")?;
    if !v.is_object() {
        anyhow::bail!("the hook's input is not a JSON object");
    }
    Ok(v)
}

/// One JSON document and a newline, flushed: the host reads it whole.
fn write_all(out: &mut impl Write, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("could not hand the mail to the host")
}
