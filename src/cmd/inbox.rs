//! `inbox check` (pull mode) and `inbox read`.

use std::io::{IsTerminal, Write};

use std::time::{Duration, Instant};

use anyhow::Result;

use super::waiter::{Waited, Waiter};
use super::{hook, me, me_acting, open};
use crate::line::{self, safe_text};
use crate::store::Verbs;

pub fn check(from: Option<&str>, force: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let acting = me_acting(store.as_ref(), from, force, "inbox check")?;
    let session = &acting.session;
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    // With --json, one array streamed page by page: `[`, the objects
    // separated by commas, `]` once the last page is marked.
    let mut first = true;
    if json {
        out.write_all(b"[")?;
    }
    loop {
        let page = store.pending(session.id, after, 256)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let mut text = String::new();
        for m in &page {
            if json {
                text.push_str(if first { "\n" } else { ",\n" });
                first = false;
                text.push_str(&serde_json::to_string(&store.message(&m.id)?)?);
            } else {
                for l in line::message_lines(m, line::clock()) {
                    text.push_str(&l);
                    text.push('\n');
                }
            }
        }
        // Printed and flushed first, then marked: a crash repeats, never loses.
        out.write_all(text.as_bytes())?;
        out.flush()?;
        let seqs: Vec<i64> = page.iter().map(|m| m.seq).collect();
        store.mark_delivered(session.id, &seqs, crate::store::via::CHECK)?;
    }
    if json {
        out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
        out.flush()?;
    }
    // After the drain, so the note waits for the session's own monitor.
    acting.tell(store.as_ref())?;
    if !first || !json {
        linger_for_the_host();
    }
    Ok(0)
}

/// Gemini CLI runs a command in a pseudo-terminal and, when the command
/// exits right after printing, sometimes passes on only what it had read so
/// far (0.61.0: `Output: (empty)`, about 1 in 20 under load). A short pause
/// before exiting let every try through: printed mail is not lost.
fn linger_for_the_host() {
    if std::env::var_os("GEMINI_CLI").is_some() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `inbox wait`: until mail is pending (and no monitor prints it), then
/// the first batch in the monitor's lines, flushed, then marked delivered
/// (`wait`); with `once`, exit 0 there. 124 when `timeout` passes first,
/// 130 on a signal; either way nothing printed, nothing marked.
pub fn wait(from: Option<&str>, once: bool, timeout: Option<&str>) -> Result<i32> {
    let limit = timeout.map(super::parse_age).transpose()?;
    if std::env::var_os("GEMINI_CLI").is_some() {
        crate::hosts::gemini::check_background_inject()?;
    }
    let waiter = Waiter::new()?;
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    let data = crate::datadir::path()?;
    // Far enough for ever (100 years), near enough for Instant.
    let deadline = Instant::now() + Duration::from_secs(limit.unwrap_or(super::MAX_AGE_SECS));
    let mut out = std::io::stdout().lock();
    loop {
        let ready = || {
            Ok(
                (!store.is_online(session.id) && !store.pending(session.id, 0, 1)?.is_empty())
                    .then_some(()),
            )
        };
        match waiter.until(store.as_ref(), deadline, ready)? {
            Waited::Got(()) => {}
            Waited::TimedOut => return Ok(124),
            Waited::Interrupted => return Ok(130),
        }
        let Some(claim) = hook::claim(store.as_ref(), &data, &session)? else {
            // A monitor (or a hook) took it: wait for what comes next.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let Some((text, seqs)) = hook::batch(store.as_ref(), session.id)? else {
            continue;
        };
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        store.mark_delivered(session.id, &seqs, crate::store::via::WAIT)?;
        drop(claim);
        if once {
            linger_for_the_host();
            return Ok(0);
        }
    }
}

/// One message's text: made safe (`line::safe_text`) unless `raw`.
pub fn read(id: &str, raw: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let m = store.message(id)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&m)?)?;
    } else {
        write_text(&mut out, &m.text, raw)?;
    }
    out.flush()?;
    Ok(0)
}

/// A message text on stdout (also `mail ask`'s reply): `safe_text` of it,
/// or its exact bytes when `raw`. A final newline is added only for a
/// person at a terminal, so that a pipe gets the text as it is.
pub(super) fn write_text(out: &mut impl Write, text: &str, raw: bool) -> Result<()> {
    let shown = if raw {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(safe_text(text))
    };
    out.write_all(shown.as_bytes())?;
    if std::io::stdout().is_terminal() && !shown.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}
