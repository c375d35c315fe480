//! `history`: past messages, oldest first.

use anyhow::Result;

use super::{me_if_any, open, parse_age};
use crate::line::sanitize;
use crate::store::HistoryFilter;

pub fn run(
    from: Option<&str>,
    with: Option<&str>,
    since: Option<&str>,
    limit: usize,
    everyone: bool,
    json: bool,
) -> Result<i32> {
    let since = since
        .map(|s| -> Result<String> {
            let secs = parse_age(s)?;
            let t = chrono::Utc::now()
                - chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
            Ok(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        })
        .transpose()?;
    let store = open()?;
    let involving = if everyone {
        None
    } else {
        me_if_any(store.as_ref(), from)?.map(|s| s.id)
    };
    let with = with.map(|w| store.resolve(w)).transpose()?.map(|s| s.id);
    let rows = store.history(&HistoryFilter {
        involving,
        with,
        since,
        limit,
    })?;
    if json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(0);
    }
    for r in rows {
        let state = if r.delivered_at.is_some() {
            ""
        } else {
            " (pending)"
        };
        println!(
            "{} {} {} -> {}{}: {}",
            r.created_at,
            r.id,
            r.sender,
            r.recipient,
            state,
            sanitize(&r.text)
        );
    }
    Ok(0)
}
