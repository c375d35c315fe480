//! `history`: past messages, oldest first.

use anyhow::Result;

use super::{me_if_any, open, parse_age, HistoryArgs};
use crate::line::{field, safe_id, safe_name, sanitize};
use crate::store::{HistoryFilter, Verbs};

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
    let rows = store.history(&HistoryFilter {
        involving,
        with,
        since,
        thread,
        limit: args.limit,
        ..Default::default()
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(0);
    }
    for r in rows {
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
        println!(
            "{} {} {} -> {}{re}{}: {}",
            field(&r.created_at),
            safe_id(&r.id),
            safe_name(&r.sender),
            safe_name(&r.recipient),
            field(&state),
            sanitize(&r.text)
        );
    }
    Ok(0)
}
