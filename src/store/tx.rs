//! One transaction in either backend, in plain SQL: how the task queues
//! and file leases (`tasks`, `leases`) are written once for both.
//!
//! Statements use PostgreSQL's `$1`, `$2`, … placeholders (the SQLite side
//! rewrites them to `?1`, `?2`, …), bind and return only integers, text and
//! NULL (`Val`), and take the time as a parameter (`now_text()`), so one
//! text runs on both. Every transaction of this kind is serialised against
//! the others (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: one transaction-level
//! advisory lock), which is what makes a claim claim-once.

use anyhow::{anyhow, Result};

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    pub fn int(&self) -> Result<i64> {
        match self {
            Val::Int(i) => Ok(*i),
            other => Err(anyhow!("expected an integer, found {other:?}")),
        }
    }
    pub fn opt_int(&self) -> Result<Option<i64>> {
        match self {
            Val::Null => Ok(None),
            v => v.int().map(Some),
        }
    }
    pub fn text(&self) -> Result<String> {
        match self {
            Val::Text(s) => Ok(s.clone()),
            other => Err(anyhow!("expected text, found {other:?}")),
        }
    }
    pub fn opt_text(&self) -> Result<Option<String>> {
        match self {
            Val::Null => Ok(None),
            v => v.text().map(Some),
        }
    }
}

impl From<i64> for Val {
    fn from(i: i64) -> Val {
        Val::Int(i)
    }
}

impl From<&str> for Val {
    fn from(s: &str) -> Val {
        Val::Text(s.to_string())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Val {
        Val::Text(s)
    }
}

impl From<&String> for Val {
    fn from(s: &String) -> Val {
        Val::Text(s.clone())
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// One row, read by position.
pub type Values = Vec<Val>;

/// The statements of one open transaction.
pub trait Tx {
    /// The rows a statement returns.
    fn rows(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Values>>;
    /// Run a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    /// Once committed, wake the monitors of these mailboxes (`everyone`:
    /// every monitor, e.g. for a new task any idle worker may take).
    fn wake(&mut self, ids: &[i64], everyone: bool) -> Result<()>;
    /// Which of these mailboxes a live monitor holds now.
    fn online(&mut self, ids: &[i64]) -> Result<std::collections::HashSet<i64>>;

    /// The first row, if any.
    fn row(&mut self, sql: &str, params: &[Val]) -> Result<Option<Values>> {
        Ok(self.rows(sql, params)?.into_iter().next())
    }
}

/// `$1`, `$2`, … → `?1`, `?2`, … (SQLite's numbered parameters), outside
/// quoted text.
pub fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_quotes() {
        assert_eq!(
            sqlite_placeholders("SELECT $1, '$2', $10 WHERE a = $2"),
            "SELECT ?1, '$2', ?10 WHERE a = ?2"
        );
    }

    #[test]
    fn values_read_back_as_their_kind() {
        assert_eq!(Val::from(Some(3)).opt_int().ok(), Some(Some(3)));
        assert_eq!(Val::from(None::<i64>).opt_int().ok(), Some(None));
        assert!(Val::from("x").int().is_err());
        assert_eq!(Val::from("x").text().ok().as_deref(), Some("x"));
    }
}
