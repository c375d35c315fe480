//! `inbox check` (pull mode) and `inbox read`.

use std::io::{IsTerminal, Write};

use anyhow::Result;

use super::{me_acting, open};
use crate::line;

pub fn check(from: Option<&str>, force: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let acting = me_acting(store.as_ref(), from, force, "inbox check")?;
    let session = &acting.session;
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    loop {
        let page = store.pending(session.id, after, 256)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let mut text = String::new();
        for m in &page {
            if json {
                // One JSON object per line, with the whole text.
                text.push_str(&serde_json::to_string(&store.message(&m.id)?)?);
                text.push('\n');
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
        store.mark_delivered(session.id, &seqs)?;
    }
    // After the drain, so the note waits for the session's own monitor.
    acting.tell(store.as_ref())?;
    Ok(0)
}

pub fn read(id: &str, json: bool) -> Result<i32> {
    let store = open()?;
    let m = store.message(id)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&m)?)?;
    } else {
        out.write_all(m.text.as_bytes())?;
        // Raw means raw: a newline is added only for a person at a terminal.
        if std::io::stdout().is_terminal() && !m.text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(0)
}
