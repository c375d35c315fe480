//! `sql` on SQLite: one read-only query on a connection of its own, rows
//! streamed to the caller as they are read, within a time limit of work in
//! the database (a slow reader does not count) and stopped at once by
//! Ctrl-C; an authorizer refuses pragmas that change behaviour, transaction
//! control, ATTACH and extensions.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use super::open::open_connection;
use crate::store::{SqlLimits, SqlSink, SqlStopped};

pub(super) fn query_stream(
    db_path: &Path,
    sql: &str,
    limits: &SqlLimits,
    out: &mut dyn SqlSink,
) -> Result<()> {
    // Its own read-only connection, so nothing set here (the
    // authorizer, the progress handler) outlives the query.
    let conn = open_connection(db_path, true)?;
    conn.pragma_update(None, "query_only", true)?;
    // No ATTACH of other files, no extension loading (off by default in
    // this build; the limit makes ATTACH fail outright).
    conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    // Checked as each statement is compiled, including the ones a
    // `pragma_*` table function compiles while the query runs.
    let refusal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let slot = Arc::clone(&refusal);
    conn.authorizer(Some(
        move |ctx: rusqlite::hooks::AuthContext<'_>| match sql_authorize(&ctx.action) {
            Ok(()) => rusqlite::hooks::Authorization::Allow,
            Err(why) => {
                if let Ok(mut slot) = slot.lock() {
                    slot.get_or_insert(why);
                }
                rusqlite::hooks::Authorization::Deny
            }
        },
    ))?;
    let clock = Arc::new(WorkClock::new(limits.time));
    let (ticking, stop) = (Arc::clone(&clock), Arc::clone(&limits.stop));
    conn.progress_handler(
        1000,
        Some(move || stop.load(Ordering::Relaxed) || ticking.over()),
    )?;
    let failed = |e: rusqlite::Error| -> anyhow::Error {
        if let Some(why) = refusal.lock().ok().and_then(|mut r| r.take()) {
            return anyhow::anyhow!(why);
        }
        if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted)
        {
            return if limits.stop.load(Ordering::Relaxed) {
                SqlStopped::Interrupted.into()
            } else {
                SqlStopped::TimedOut(limits.time).into()
            };
        }
        anyhow::anyhow!("{}", sql_error_text(&e))
    };
    let mut stmt = conn.prepare(sql).map_err(failed)?;
    if !stmt.readonly() {
        bail!("sql is read-only: only queries (SELECT, read-only PRAGMA, EXPLAIN) are allowed");
    }
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let n = columns.len();
    out.columns(&columns)?;
    let mut rows = stmt.query([]).map_err(failed)?;
    loop {
        if limits.stop.load(Ordering::Relaxed) {
            return Err(SqlStopped::Interrupted.into());
        }
        let Some(row) = rows.next().map_err(failed)? else {
            break;
        };
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            use rusqlite::types::ValueRef;
            values.push(match row.get_ref(i)? {
                ValueRef::Null => serde_json::Value::Null,
                ValueRef::Integer(v) => v.into(),
                ValueRef::Real(v) => v.into(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
            });
        }
        // Out of the database while the row is written: a slow reader
        // (a pager) does not use up the query's time.
        let paused = std::time::Instant::now();
        out.row(values)?;
        clock.resume(paused);
    }
    Ok(())
}

/// Time a query has worked: a deadline that moves later by the time spent
/// outside SQLite, read from the progress handler.
struct WorkClock {
    start: std::time::Instant,
    /// Nanoseconds after `start`.
    deadline: std::sync::atomic::AtomicU64,
}

impl WorkClock {
    fn new(limit: Duration) -> WorkClock {
        WorkClock {
            start: std::time::Instant::now(),
            deadline: u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX).into(),
        }
    }

    fn over(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        now > self.deadline.load(Ordering::Relaxed)
    }

    fn resume(&self, paused: std::time::Instant) {
        let away = u64::try_from(paused.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let d = self.deadline.load(Ordering::Relaxed);
        self.deadline
            .store(d.saturating_add(away), Ordering::Relaxed);
    }
}

/// Pragmas `sql` runs without an argument: each only reads.
const READ_PRAGMAS: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "cache_size",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_key_check",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "integrity_check",
    "journal_mode",
    "max_page_count",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "quick_check",
    "schema_version",
    "synchronous",
    "table_list",
    "user_version",
];

/// Pragmas `sql` runs with an argument: table-valued ones whose argument
/// names what to read (`pragma table_info(history)`), never a new setting.
const TABLE_PRAGMAS: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// What `sql` lets a statement do, action by action (SQLite's authorizer):
/// read tables, views and functions, and the read-only pragmas above.
/// Everything else, including a pragma that sets something
/// (`writable_schema`, `query_only`), transactions and savepoints, is
/// refused with the reason.
pub(super) fn sql_authorize(action: &rusqlite::hooks::AuthAction<'_>) -> Result<(), String> {
    use rusqlite::hooks::AuthAction as A;
    let listed = |list: &[&str], name: &str| list.iter().any(|p| p.eq_ignore_ascii_case(name));
    match action {
        A::Select | A::Read { .. } | A::Recursive => Ok(()),
        A::Function { function_name } if !function_name.eq_ignore_ascii_case("load_extension") => {
            Ok(())
        }
        A::Pragma {
            pragma_name,
            pragma_value: None,
        } if listed(READ_PRAGMAS, pragma_name) => Ok(()),
        A::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if listed(TABLE_PRAGMAS, pragma_name) => Ok(()),
        A::Pragma {
            pragma_name,
            pragma_value,
        } => Err(format!(
            "sql is read-only: PRAGMA {}{} is refused (read-only pragmas such as `pragma table_info(history)` or `pragma user_version` are allowed)",
            pragma_name.escape_debug(),
            if pragma_value.is_some() { " with a value" } else { "" }
        )),
        A::Transaction { .. } | A::Savepoint { .. } => Err(
            "sql runs one query on its own: BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE are refused"
                .to_string(),
        ),
        A::Attach { .. } | A::Detach { .. } => {
            Err("sql reads this mailbox only: ATTACH and DETACH are refused".to_string())
        }
        _ => Err(
            "sql is read-only: only queries (SELECT, read-only PRAGMA, EXPLAIN) are allowed"
                .to_string(),
        ),
    }
}

pub(super) fn sql_error_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => format!("sql error: {msg}"),
        rusqlite::Error::MultipleStatement => "sql takes one statement at a time".to_string(),
        other => format!("sql error: {other}"),
    }
}
