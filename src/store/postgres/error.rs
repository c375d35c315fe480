//! PostgreSQL errors as a user should see them: one plain line with its
//! cause said once (`pg_text`, `tidy`), and which failures are worth a retry
//! on a new connection (`is_transient`). Domain errors pass through as they
//! are, so callers can still downcast them.

/// A PostgreSQL error as one plain line (no repeated cause chain).
pub(super) fn pg_text(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = db.message().to_string();
        if let Some(detail) = db.detail() {
            text.push_str(" (");
            text.push_str(detail);
            text.push(')');
        }
        return text;
    }
    if e.is_closed() {
        return "the database connection was closed".to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A failure worth retrying on a new connection: the connection broke, the
/// server is restarting or shutting down, or a serialisation conflict.
pub(super) fn is_transient(e: &anyhow::Error) -> bool {
    let Some(pg) = e
        .chain()
        .find_map(|c| c.downcast_ref::<::postgres::Error>())
    else {
        return false;
    };
    if pg.is_closed() {
        return true;
    }
    if let Some(code) = pg.code() {
        let code = code.code();
        return code.starts_with("08")
            || code.starts_with("57P")
            || code == "40001"
            || code == "40P01"
            || code == "53300";
    }
    let mut source = std::error::Error::source(pg);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Errors without a code or an I/O cause: connect failures, unexpected EOF.
    let text = pg.to_string();
    text.contains("error connecting") || text.contains("connection closed")
}

/// Replace a PostgreSQL error by one clean line (its cause once), keeping
/// our own context; domain errors pass through untouched.
pub(super) fn tidy(e: anyhow::Error, masked: &str) -> anyhow::Error {
    let Some(pg) = e
        .chain()
        .find_map(|c| c.downcast_ref::<::postgres::Error>())
    else {
        return e;
    };
    let text = pg_text(pg);
    let outer = e.to_string();
    if outer != pg.to_string() {
        // Our context on top (anyhow shows only it in to_string).
        return anyhow::anyhow!("{outer}: {text}");
    }
    if pg.as_db_error().is_some() {
        return anyhow::anyhow!("database error: {text}");
    }
    if is_transient(&e) {
        return anyhow::anyhow!("database unreachable at {masked}: {text}");
    }
    anyhow::anyhow!("database {masked}: {text}")
}
