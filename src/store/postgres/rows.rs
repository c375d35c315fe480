//! How the store reads rows: the SQL for a session's live state and its
//! columns, and each row as the plain struct `Mailbox` returns. Also the
//! escaping that lets a text holding U+0000 (which PostgreSQL text cannot
//! hold) be stored and read back whole.

use ::postgres::Row;
use anyhow::Result;

use super::LOCK_NS;
use crate::store::{message_from, session_from, Message, Peer, Session};

/// The current time in SQL, in the stored text format.
pub(super) const SQL_NOW: &str =
    "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";
/// The columns `message_from_row` reads, over `messages m` and `blobs b`.
pub(super) const MESSAGE_COLUMNS: &str =
    "m.seq, m.id, m.created_at, m.kind, m.sender, m.sender_label, m.chars, \
     m.sender_id, m.in_reply_to, COALESCE(m.thread_id, m.id), m.expires_at, \
     (SELECT t.queue FROM task_rows t WHERE t.message_seq = m.seq), m.text_escaped";

/// SQL: the advisory lock of session `s` is held by some backend. (The
/// function behind the `pg_locks` view: a fresh server process plans it in
/// half the time.)
pub(super) fn lock_held_sql() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_lock_status() l WHERE l.locktype = 'advisory' AND l.granted \
         AND l.objsubid = 2 AND l.classid = {LOCK_NS}::oid AND l.objid = s.id::oid \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
    )
}

/// SQL: the live state of session `s`.
pub(super) fn live_state_sql() -> String {
    format!(
        "CASE WHEN s.state = 'online' AND NOT {} THEN 'offline' ELSE s.state END",
        lock_held_sql()
    )
}

pub(super) fn session_columns() -> String {
    format!(
        "s.id, s.name, s.session_key, s.label, {}, s.cwd, s.project, \
         s.monitor_pid, s.created_at, s.since, \
         (SELECT count(*) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
          WHERE d.recipient_id = s.id AND d.delivered_at IS NULL \
            AND (m.expires_at IS NULL OR m.expires_at > {SQL_NOW})), \
         s.host",
        live_state_sql()
    )
}

/// The live state is in the query itself (`live_state_sql`).
pub(super) fn session_from_row(r: &Row) -> Result<Session> {
    Ok(session_from(r, |_| true, r.try_get(11)?)?)
}

pub(super) fn message_from_row(r: &Row) -> Result<Message> {
    Ok(message_from(
        r,
        stored_to_text(r.try_get(13)?, r.try_get(12)?),
    )?)
}

impl crate::store::Row for Row {
    type Error = ::postgres::Error;
    fn int(&self, i: usize) -> Result<i64, Self::Error> {
        self.try_get(i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error> {
        self.try_get(i)
    }
    fn text(&self, i: usize) -> Result<String, Self::Error> {
        self.try_get(i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error> {
        self.try_get(i)
    }
}

/// PostgreSQL text cannot hold U+0000: such a text is stored with `\`
/// doubled and U+0000 as `\0` (and `text_escaped` set). Returns the stored
/// form and whether it is escaped.
pub(in crate::store) fn text_to_stored(text: &str) -> (std::borrow::Cow<'_, str>, bool) {
    if !text.contains('\0') {
        return (std::borrow::Cow::Borrowed(text), false);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    (std::borrow::Cow::Owned(out), true)
}

/// The original text of a stored one (a prefix cut inside an escape loses
/// only that escape).
pub(super) fn stored_to_text(stored: String, escaped: bool) -> String {
    if !escaped {
        return stored;
    }
    let mut out = String::with_capacity(stored.len());
    let mut chars = stored.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

pub(super) fn peer_from_row(r: &Row) -> Result<Peer> {
    Ok(Peer {
        name: r.try_get(0)?,
        session_id: r.try_get(1)?,
        tmux_socket: r.try_get(2)?,
        tmux_session: r.try_get(3)?,
        command: r.try_get(4)?,
        cwd: r.try_get(5)?,
        spawned_by: r.try_get(6)?,
        created_at: r.try_get(7)?,
        killed_at: r.try_get(8)?,
        host: r.try_get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_texts_round_trip() {
        for t in ["plain", "a\0b", "\\0 and \0\\", "\0", "end\\"] {
            let (stored, escaped) = text_to_stored(t);
            assert!(!stored.contains('\0'));
            assert_eq!(stored_to_text(stored.into_owned(), escaped), t);
        }
        assert_eq!(text_to_stored("a\\b").0, "a\\b", "escaped only when needed");
    }
}
