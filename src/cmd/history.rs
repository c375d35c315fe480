//! `history`: past messages, oldest first; with `--follow`, then each new
//! row as it is committed, until interrupted.

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::waiter::{Waited, Waiter};
use super::{me_if_any, open, parse_age, HistoryArgs};
use crate::line::{field, safe_id, safe_name, sanitize};
use crate::store::{HistoryFilter, HistoryRow, Mailbox, Verbs};

/// Rows read per look when following; a look that fills it reads on at once.
const BATCH: usize = 500;

pub fn run(from: Option<&str>, args: &HistoryArgs) -> Result<i32> {
    let since = args
        .since
        .as_deref()
        .map(|s| -> Result<String> {
            let secs = parse_age(s)?;
            let t = chrono::Utc::now()
                - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
            Ok(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        })
        .transpose()?;
    // Handlers before anything is printed: a signal during the backlog still
    // ends the follow.
    let waiter = args.follow.then(Waiter::new).transpose()?;
    let store = open()?;
    let thread = match &args.thread {
        // An unknown id is a runtime failure (exit 1), as for `inbox read`.
        Some(id) => Some(store.message(id)?.thread_id),
        None => None,
    };
    // A thread is shown whole, whoever is asking.
    let involving = if args.everyone || thread.is_some() {
        None
    } else {
        me_if_any(store.as_ref(), from)?.map(|s| s.id)
    };
    let with = args
        .with
        .as_deref()
        .map(|w| store.resolve(w))
        .transpose()?
        .map(|s| s.id);
    let filter = HistoryFilter {
        involving,
        with,
        since,
        thread,
        limit: args.limit,
        ..Default::default()
    };
    let Some(waiter) = waiter else {
        let rows = store.history(&filter)?;
        if args.json {
            println!("{}", serde_json::to_string(&rows)?);
            return Ok(0);
        }
        for r in rows {
            println!("{}", line(&r));
        }
        return Ok(0);
    };
    follow(store.as_ref(), &waiter, &filter, args.json)
}

/// `--follow`: the backlog (what `history` prints), then every new row that
/// matches, in commit order, each once; 130 on a signal, 0 when the reader
/// goes away.
fn follow(store: &dyn Mailbox, waiter: &Waiter, filter: &HistoryFilter, json: bool) -> Result<i32> {
    // Where the store stands before the backlog is read: a row committed
    // after this point is either in the backlog or streamed, never lost
    // (even when the backlog is empty or cut by --limit).
    let mut last = store
        .history(&HistoryFilter {
            limit: 1,
            ..Default::default()
        })?
        .last()
        .map_or(0, |r| r.seq);
    let backlog = store.history(filter)?;
    if let Some(r) = backlog.last() {
        last = last.max(r.seq);
    }
    if print(&backlog, json)?.is_none() {
        return Ok(0);
    }
    loop {
        // Re-subscribed each hour: `until` wants a deadline.
        let deadline = Instant::now() + Duration::from_secs(3600);
        let looked = waiter.until_any(store, deadline, || loop {
            let (rows, more) = rows_after(store, filter, last)?;
            if print(&rows, json)?.is_none() {
                return Ok(Some(()));
            }
            if let Some(r) = rows.last() {
                last = r.seq;
            }
            if !more {
                return Ok(None);
            }
        })?;
        match looked {
            // The reader went away (`| head -3`): not an error of ours.
            Waited::Got(()) => return Ok(0),
            // As `mail ask` and `inbox wait`: any of SIGINT, SIGTERM, SIGHUP.
            Waited::Interrupted => return Ok(130),
            Waited::TimedOut => {}
        }
    }
}

/// The matching rows after seq `last`, oldest first, at most about a
/// `BATCH`: only whole messages (a broadcast's rows share one seq and are
/// committed together; a cut through the newest one leaves it for the next
/// look). True when more may follow at once.
fn rows_after(
    store: &dyn Mailbox,
    filter: &HistoryFilter,
    last: i64,
) -> Result<(Vec<HistoryRow>, bool)> {
    let mut limit = BATCH;
    loop {
        let mut rows = store.history(&HistoryFilter {
            after_seq: Some(last),
            limit,
            ..filter.clone()
        })?;
        if rows.len() < limit {
            return Ok((rows, false));
        }
        let (first, newest) = match (rows.first(), rows.last()) {
            (Some(f), Some(n)) => (f.seq, n.seq),
            _ => return Ok((rows, false)),
        };
        if first != newest {
            rows.retain(|r| r.seq != newest);
            return Ok((rows, true));
        }
        // One message's rows fill the batch: read more of it.
        limit = limit.saturating_mul(2);
    }
}

/// Write `rows`, each line flushed; None when stdout is closed.
fn print(rows: &[HistoryRow], json: bool) -> Result<Option<()>> {
    let mut out = std::io::stdout().lock();
    for r in rows {
        let text = if json {
            serde_json::to_string(r)?
        } else {
            line(r)
        };
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(()))
}

/// One row as a line: `<created_at> <id> <sender> -> <recipient>[ re=<id>][ (status)]: <text>`.
fn line(r: &HistoryRow) -> String {
    // How a delivered copy was read: `mail status`, `--json`.
    let state = match r.status.as_str() {
        "delivered" => String::new(),
        other => format!(" ({other})"),
    };
    let re = r
        .in_reply_to
        .as_deref()
        .map_or(String::new(), |p| format!(" re={}", safe_id(p)));
    // Every part comes from the database: names and ids in their safe
    // form (escaped when they break their rule), the rest as fields.
    format!(
        "{} {} {} -> {}{re}{}: {}",
        field(&r.created_at),
        safe_id(&r.id),
        safe_name(&r.sender),
        safe_name(&r.recipient),
        field(&state),
        sanitize(&r.text)
    )
}
