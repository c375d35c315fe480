//! `sql` on PostgreSQL: one query that reads, its rows printed as they come,
//! within the same time limit and Ctrl-C as on SQLite.
//!
//! A read-only transaction alone is not enough: it still lets a query call
//! functions that act outside it and are not undone by its rollback
//! (`pg_terminate_backend`, `pg_cancel_backend`, `pg_advisory_lock` — which
//! would fake a monitor's presence —, `nextval`, `set_config`, `lo_import`,
//! `pg_reload_conf`, `dblink`, …) and utility statements (`LISTEN`, `SET`,
//! `PREPARE`, `COPY … TO PROGRAM`, …). So, before anything runs:
//!
//! 1. The server parses the text (`prepare`): a syntax error, or a second
//!    statement, is reported as it is.
//! 2. The first word says what the statement is: `SELECT`, `WITH`, `VALUES`,
//!    `TABLE` or a parenthesised query; `EXPLAIN [ANALYZE]` of one of
//!    those; `SHOW`. Anything else is refused. (Our lexer only has to find
//!    the first word and the end of `EXPLAIN`'s options; what it finds is
//!    handed back to the server, never trusted as parsed.)
//! 3. The server tells which functions the query calls, without running
//!    it: the query becomes a temporary view (`CREATE TEMP VIEW … AS SELECT
//!    FROM (query)`, in a transaction rolled back at once, where the query
//!    is only parsed), and `pg_get_viewdef` writes it out again, every
//!    function call spelled `name(…)` — whatever the spelling in the query
//!    (`PG_NOTIFY`, `"pg_notify"`, `pg_catalog.pg_notify`), and wherever it
//!    stands (`LIMIT`, `VALUES`, window frames, `FROM`, sub-queries). Unlike
//!    an `EXPLAIN` plan, that text leaves nothing out. Every function sharing
//!    a called name must be one of PostgreSQL's own (`pg_catalog`) that only
//!    read: immutable or stable, except the few that assign a transaction
//!    id, or one of a short list of volatile ones that only read (the clock,
//!    `random`, `pg_sleep` — the time limit covers it —, sizes, locks seen),
//!    or one of the mailbox's own (`group_concat`, as on SQLite) in the
//!    schema of its tables. Other functions (an extension's, `dblink`, the
//!    user's) are refused: what they do is unknown.
//! 4. The query runs in a read-only transaction that is rolled back,
//!    through a cursor: `FETCH` batches (1 row, then doubling, fewer when
//!    rows are big) give each row to the printer as soon as the server has
//!    it, as text whatever its type, and stop at once when the reader goes
//!    (`sql … | head`).
//!
//! The time limit counts time spent in the server only, as on SQLite: each
//! step runs under `SET LOCAL statement_timeout` set to what is left of
//! `--timeout`, and time spent printing does not count. Ctrl-C cancels the
//! running statement on the server: a second connection, opened only then
//! through the same `Target`, runs `pg_cancel_backend` (a protocol cancel
//! request would need `target`'s TLS connector, which it keeps to itself).
//!
//! Not checked: functions behind operators, casts, types and views the query
//! uses. PostgreSQL's own only read; any other was created by someone who
//! could write to the database, which `sql` never can. The check needs
//! `TEMP` on the database (granted to everybody by default); without it,
//! every query that is not `SHOW` is refused, saying so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use ::postgres::types::Type;
use ::postgres::{Client, SimpleQueryMessage, Transaction};
use anyhow::{anyhow, Result};

use super::error::{is_transient, pg_text};
use super::target::Target;
use super::PostgresStore;
use crate::store::{SqlLimits, SqlResult, SqlSink, SqlStopped};

/// What `sql` runs, in the words of its refusals.
const RUNS: &str = "only SELECT, WITH, VALUES, TABLE, EXPLAIN and SHOW run";
/// The cursor the rows are read through.
const CURSOR: &str = "inter_session_sql";
/// The view the check makes (in a transaction rolled back at once).
const CHECK_VIEW: &str = "inter_session_sql_check";
/// A `FETCH` batch grows to this many rows at most…
const MAX_BATCH: usize = 1000;
/// …and shrinks when its rows hold more than this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// Volatile `pg_catalog` functions that only read.
const READING_VOLATILE: &[&str] = &[
    "bernoulli",
    "clock_timestamp",
    "current_query",
    "currval",
    "gen_random_uuid",
    "lastval",
    "pg_blocking_pids",
    "pg_database_size",
    "pg_indexes_size",
    "pg_is_in_recovery",
    "pg_lock_status",
    "pg_notification_queue_usage",
    "pg_relation_size",
    "pg_safe_snapshot_blocking_pids",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "pg_table_size",
    "pg_tablespace_size",
    "pg_total_relation_size",
    "random",
    "system",
    "timeofday",
];

/// Stable `pg_catalog` functions that write: each assigns a transaction id.
const WRITING_STABLE: &[&str] = &["pg_current_xact_id", "txid_current"];

/// The mailbox's own functions (migrations/postgres/, `schema.rs`): SQL
/// that only computes. Allowed in the schema of its tables only.
const OURS: &[&str] = &[
    "group_concat",
    "group_concat_step",
    "inter_session_schema_version",
];

/// Run `sql` on `store`'s connection, rows to `out`.
pub(super) fn stream(
    store: &PostgresStore,
    sql: &str,
    limits: &SqlLimits,
    out: &mut dyn SqlSink,
) -> Result<()> {
    let mut work = Work {
        limits,
        used: Duration::ZERO,
        printed: false,
    };
    store
        .run(|c| {
            let result = work.attempt(c, &store.target, sql, out);
            // A lost connection is tried again on a new one, but only
            // while nothing is printed: a retry would print rows twice.
            match result {
                Err(e) if is_transient(&e) && !work.printed => Err(e),
                other => other.map_err(|e| explain_error(e, limits)),
            }
        })
        .map_err(|e| explain_error(e, limits))
}

/// `sql` collected whole, under the default time limit.
pub(super) fn collect(store: &PostgresStore, sql: &str) -> Result<SqlResult> {
    let limits = SqlLimits::new(Duration::from_secs(crate::store::SQL_DEFAULT_SECS));
    let mut all = SqlResult {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    stream(store, sql, &limits, &mut all)?;
    Ok(all)
}

impl SqlSink for SqlResult {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        self.columns = names.to_vec();
        Ok(())
    }

    fn row(&mut self, values: Vec<serde_json::Value>) -> Result<()> {
        self.rows.push(values);
        Ok(())
    }
}

/// One `sql` run: its limits and what it has used and done so far (kept
/// across a reconnect).
struct Work<'a> {
    limits: &'a SqlLimits,
    /// Time spent waiting for the server.
    used: Duration,
    printed: bool,
}

impl Work<'_> {
    fn attempt(
        &mut self,
        c: &mut Client,
        target: &Target,
        sql: &str,
        out: &mut dyn SqlSink,
    ) -> Result<()> {
        self.go()?;
        let started = Instant::now();
        let pid = c
            .simple_query("SELECT pg_backend_pid()")?
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).and_then(|p| p.parse::<i32>().ok()),
                _ => None,
            })
            .ok_or_else(|| anyhow!("sql: the server did not say its process id"))?;
        self.used += started.elapsed();
        let stop = &*self.limits.stop;
        std::thread::scope(|s| {
            let (done, watching) = std::sync::mpsc::channel::<()>();
            s.spawn(move || cancel_on_stop(target, pid, stop, watching));
            let result = self.check_and_run(c, sql, out);
            drop(done);
            result
        })
    }

    fn check_and_run(&mut self, c: &mut Client, sql: &str, out: &mut dyn SqlSink) -> Result<()> {
        // The check: parsed by the server, then what it calls. Nothing in
        // this transaction is kept.
        let (kind, columns, types) = {
            let mut tx = c.build_transaction().read_only(false).start()?;
            let settings = self.settings()?;
            self.timed(|| tx.batch_execute(&settings))?;
            let stmt = self.timed(|| tx.prepare(sql))?;
            let kind = classify(sql)?;
            if let Some(query) = kind.query() {
                self.check(&mut tx, query)?;
            }
            let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().into()).collect();
            let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
            (kind, columns, types)
        };
        let mut tx = c.build_transaction().read_only(true).start()?;
        match kind {
            Kind::Query(query) => {
                let settings = self.settings()?;
                self.timed(|| tx.batch_execute(&settings))?;
                let declare = format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR\n{query}\n");
                self.timed(|| tx.execute_typed(&declare, &[]))?;
                self.printed = true;
                out.columns(&columns)?;
                self.fetch_all(&mut tx, &types, out)
            }
            Kind::Explain(_) | Kind::Show => {
                // SHOW takes no time: it runs under the server's own
                // settings, so that `show statement_timeout` tells the truth.
                if matches!(kind, Kind::Explain(_)) {
                    let settings = self.settings()?;
                    self.timed(|| tx.batch_execute(&settings))?;
                }
                let msgs = self.timed(|| tx.simple_query(sql))?;
                self.printed = true;
                out.columns(&columns)?;
                self.print(msgs, &types, out)?;
                Ok(())
            }
        }
    }

    /// Refuse a query that writes or calls a function that could act.
    fn check(&mut self, tx: &mut Transaction<'_>, query: &str) -> Result<()> {
        let view = format!("CREATE TEMP VIEW {CHECK_VIEW} AS SELECT FROM (\n{query}\n) AS q");
        if let Err(e) = self.timed(|| tx.execute_typed(&view, &[])) {
            let Some(db) = e.as_db_error() else {
                return Err(e.into());
            };
            return Err(match db.code().code() {
                // The query parsed on its own, but not as a sub-query: it
                // writes (`WITH … DELETE`, `SELECT … INTO`).
                "0A000" | "42601" => anyhow!(
                    "sql is read-only: a query that writes is refused ({}); {RUNS}",
                    db.message()
                ),
                "42501" => anyhow!(
                    "sql cannot check what the query calls without the TEMP privilege on the \
                     database: {}",
                    pg_text(&e)
                ),
                _ => e.into(),
            });
        }
        let text: String = self
            .timed(|| {
                tx.query_typed_one(
                    &format!("SELECT pg_get_viewdef('pg_temp.{CHECK_VIEW}'::regclass)"),
                    &[],
                )
            })?
            .try_get(0)?;
        let names = called_names(&text);
        if names.is_empty() {
            return Ok(());
        }
        // Every function of each name, and whether it is in the mailbox's
        // own schema (where `schema_migrations` is).
        let rows = self.timed(|| {
            tx.query_typed(
                "SELECT p.proname::text, n.nspname::text, p.provolatile::text, \
                        n.oid IS NOT DISTINCT FROM (SELECT relnamespace FROM pg_class \
                                                    WHERE oid = to_regclass('schema_migrations')) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.proname::text = ANY($1) ORDER BY 2, 1",
                &[(&names, Type::TEXT_ARRAY)],
            )
        })?;
        for row in rows {
            let f = Function {
                name: row.try_get(0)?,
                schema: row.try_get(1)?,
                volatility: row.try_get(2)?,
                ours: row.try_get(3)?,
            };
            if let Some(why) = f.refusal() {
                return Err(anyhow!("{why}"));
            }
        }
        Ok(())
    }

    /// Read the cursor in batches, each row to `out` as it comes.
    fn fetch_all(
        &mut self,
        tx: &mut Transaction<'_>,
        types: &[Type],
        out: &mut dyn SqlSink,
    ) -> Result<()> {
        let mut batch = 1;
        loop {
            let fetch = format!("{}FETCH FORWARD {batch} FROM {CURSOR}", self.settings()?);
            let msgs = self.timed(|| tx.simple_query(&fetch))?;
            let (rows, bytes) = self.print(msgs, types, out)?;
            if rows < batch {
                return Ok(());
            }
            batch = next_batch(batch, bytes);
        }
    }

    /// The rows in `msgs` to `out`: how many, and their size in bytes.
    fn print(
        &mut self,
        msgs: Vec<SimpleQueryMessage>,
        types: &[Type],
        out: &mut dyn SqlSink,
    ) -> Result<(usize, usize)> {
        let (mut rows, mut bytes) = (0, 0);
        for m in msgs {
            let SimpleQueryMessage::Row(row) = m else {
                continue;
            };
            let mut values = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                values.push(match row.try_get(i)? {
                    None => serde_json::Value::Null,
                    Some(text) => {
                        bytes += text.len();
                        text_to_json(text, ty)
                    }
                });
            }
            if self.limits.stop.load(Ordering::Relaxed) {
                return Err(SqlStopped::Interrupted.into());
            }
            self.printed = true;
            out.row(values)?;
            rows += 1;
        }
        Ok((rows, bytes))
    }

    /// Stopped by Ctrl-C or out of time: the error that says so.
    fn go(&self) -> Result<()> {
        if self.limits.stop.load(Ordering::Relaxed) {
            return Err(SqlStopped::Interrupted.into());
        }
        if self.used >= self.limits.time {
            return Err(SqlStopped::TimedOut(self.limits.time).into());
        }
        Ok(())
    }

    /// The settings every step runs under: what is left of the time limit
    /// (the server's own clock), and the string syntax our lexer assumes.
    fn settings(&self) -> Result<String> {
        self.go()?;
        let left = self.limits.time.saturating_sub(self.used);
        let ms = left.as_millis().clamp(1, i32::MAX as u128);
        Ok(format!(
            "SET LOCAL statement_timeout = {ms}; SET LOCAL standard_conforming_strings = on; "
        ))
    }

    /// Run `f` (one round trip to the server) on the clock.
    fn timed<T>(
        &mut self,
        f: impl FnOnce() -> std::result::Result<T, ::postgres::Error>,
    ) -> std::result::Result<T, ::postgres::Error> {
        let started = Instant::now();
        let result = f();
        self.used += started.elapsed();
        result
    }
}

/// Until `done` closes: once `stop` is set (Ctrl-C), cancel what backend
/// `pid` runs, again every little while (a cancel that lands between two
/// statements cancels nothing).
fn cancel_on_stop(target: &Target, pid: i32, stop: &AtomicBool, done: Receiver<()>) {
    let mut canceller: Option<Client> = None;
    let mut every = Duration::from_millis(20);
    loop {
        match done.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        if !stop.load(Ordering::Relaxed) {
            continue;
        }
        every = Duration::from_millis(250);
        if canceller.is_none() {
            canceller = target.connect().ok();
        }
        if let Some(c) = canceller.as_mut() {
            if c.execute("SELECT pg_cancel_backend($1)", &[&pid]).is_err() {
                canceller = None;
            }
        }
    }
}

/// The user's error for a failure of the server or of the check.
fn explain_error(e: anyhow::Error, limits: &SqlLimits) -> anyhow::Error {
    let Some(pg) = e
        .chain()
        .find_map(|c| c.downcast_ref::<::postgres::Error>())
    else {
        return e;
    };
    let Some(db) = pg.as_db_error() else {
        return e;
    };
    let stopped = limits.stop.load(Ordering::Relaxed);
    match db.code().code() {
        "57014" if stopped => SqlStopped::Interrupted.into(),
        "57014" if db.message().contains("statement timeout") => {
            SqlStopped::TimedOut(limits.time).into()
        }
        "25006" => anyhow!("sql is read-only: {}", db.message()),
        "42601" if db.message().contains("multiple commands") => {
            anyhow!("sql takes one statement at a time")
        }
        _ => anyhow!("sql error: {}", pg_text(pg)),
    }
}

/// A function a query may call (one of the name's overloads).
struct Function {
    name: String,
    schema: String,
    /// `pg_proc.provolatile`: `i`mmutable, `s`table or `v`olatile.
    volatility: String,
    /// In the schema of the mailbox's tables.
    ours: bool,
}

impl Function {
    /// Why a query may not call it, if it may not.
    fn refusal(&self) -> Option<String> {
        let name = self.name.as_str();
        let reads = match self.schema.as_str() {
            "pg_catalog" => match self.volatility.as_str() {
                "i" | "s" => !WRITING_STABLE.contains(&name),
                _ => READING_VOLATILE.contains(&name),
            },
            _ => self.ours && OURS.contains(&name),
        };
        if reads {
            return None;
        }
        let shown = match self.schema.as_str() {
            "pg_catalog" => format!("{name}()"),
            schema => format!("{schema}.{name}()"),
        };
        Some(format!(
            "sql is read-only: {shown} is refused (a query may call only PostgreSQL's own \
             functions that read, and the mailbox's own)"
        ))
    }
}

/// A `FETCH` batch after one of `bytes`: twice as many rows, or half as
/// many when they were big.
fn next_batch(batch: usize, bytes: usize) -> usize {
    if bytes > BATCH_BYTES {
        (batch / 2).max(1)
    } else {
        (batch * 2).min(MAX_BATCH)
    }
}

/// What a statement is, by its first word.
#[derive(Debug, PartialEq)]
enum Kind<'a> {
    /// A query: the text without trailing `;` and comments.
    Query(&'a str),
    /// `EXPLAIN` of the query given.
    Explain(&'a str),
    Show,
}

impl<'a> Kind<'a> {
    fn query(&self) -> Option<&'a str> {
        match self {
            Kind::Query(q) | Kind::Explain(q) => Some(q),
            Kind::Show => None,
        }
    }
}

/// The kind of `sql` (a statement the server parsed), or its refusal.
fn classify(sql: &str) -> Result<Kind<'_>> {
    let toks = tokens(sql);
    match toks.first() {
        None => Err(anyhow!("empty query")),
        Some(t) if t.word(sql).as_deref() == Some("show") => Ok(Kind::Show),
        Some(t) if t.word(sql).as_deref() == Some("explain") => {
            let mut i = 1;
            if toks.get(i).is_some_and(|t| t.is(sql, "(")) && !starts_query(sql, &toks[i + 1..]) {
                // The option list: to its closing parenthesis.
                let mut depth = 0;
                while let Some(t) = toks.get(i) {
                    i += 1;
                    if t.is(sql, "(") {
                        depth += 1;
                    } else if t.is(sql, ")") {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
            } else {
                let options = ["analyze", "analyse", "verbose"];
                while toks
                    .get(i)
                    .and_then(|t| t.word(sql))
                    .is_some_and(|w| options.contains(&w.as_str()))
                {
                    i += 1;
                }
            }
            if !starts_query(sql, &toks[i.min(toks.len())..]) {
                let what = toks
                    .get(i)
                    .map_or(String::new(), |t| format!(" {}", t.shown(sql)));
                return Err(anyhow!(
                    "sql is read-only: EXPLAIN{what} is refused; {RUNS}"
                ));
            }
            Ok(Kind::Explain(body(sql, &toks[i..])))
        }
        Some(_) if starts_query(sql, &toks) => Ok(Kind::Query(body(sql, &toks))),
        Some(t) => Err(anyhow!(
            "sql is read-only: {} is refused; {RUNS}",
            t.shown(sql)
        )),
    }
}

/// Whether `toks` start a query.
fn starts_query(sql: &str, toks: &[Token]) -> bool {
    toks.first().is_some_and(|t| {
        t.is(sql, "(")
            || t.word(sql)
                .is_some_and(|w| ["select", "values", "table", "with"].contains(&w.as_str()))
    })
}

/// The text of `toks`, without the `;` at its end.
fn body<'a>(sql: &'a str, toks: &[Token]) -> &'a str {
    let last = toks.iter().rev().find(|t| !t.is(sql, ";"));
    match (toks.first(), last) {
        (Some(first), Some(last)) => &sql[first.start..last.end],
        _ => "",
    }
}

/// The names called in `text` (SQL as `pg_get_viewdef` writes it): each
/// word or quoted name followed by `(`. A few are not functions (a type's
/// `numeric(10,2)`, an alias's column list): they find no function, or one
/// that reads.
fn called_names(text: &str) -> Vec<String> {
    let toks = tokens(text);
    let mut names: Vec<String> = toks
        .windows(2)
        .filter(|w| w[1].is(text, "("))
        .filter_map(|w| match w[0].kind {
            Tok::Word => Some(text[w[0].start..w[0].end].to_string()),
            Tok::Quoted => Some(text[w[0].start + 1..w[0].end - 1].replace("\"\"", "\"")),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A lexical token of PostgreSQL's SQL, as far as `sql` needs: where words,
/// quoted names and strings start and end, comments skipped. Assumes
/// `standard_conforming_strings` (set for every statement `sql` runs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Word,
    Quoted,
    Str,
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

impl Token {
    /// A word, lower-cased (SQL keywords are not case-sensitive).
    fn word(&self, sql: &str) -> Option<String> {
        (self.kind == Tok::Word).then(|| sql[self.start..self.end].to_ascii_lowercase())
    }

    fn is(&self, sql: &str, punct: &str) -> bool {
        self.kind == Tok::Other && &sql[self.start..self.end] == punct
    }

    /// For a refusal: a word upper-cased, anything else as it is.
    fn shown(&self, sql: &str) -> String {
        let text = &sql[self.start..self.end];
        match self.kind {
            Tok::Word => text.to_ascii_uppercase(),
            _ => text.to_string(),
        }
    }
}

fn tokens(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let ident_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let ident_char = |c: u8| ident_start(c) || c.is_ascii_digit() || c == b'$';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let rest = &b[i..];
        let kind = if rest[0].is_ascii_whitespace() {
            i += 1;
            continue;
        } else if rest.starts_with(b"--") {
            i = rest
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1);
            continue;
        } else if rest.starts_with(b"/*") {
            i = comment_end(b, i);
            continue;
        } else if rest[0] == b'\'' {
            i = quote_end(b, i + 1, b'\'', false);
            Tok::Str
        } else if rest[0] == b'"' {
            i = quote_end(b, i + 1, b'"', false);
            Tok::Quoted
        } else if rest[0] == b'$' {
            match dollar_end(b, i) {
                Some(end) => {
                    i = end;
                    Tok::Str
                }
                None => {
                    // `$1`, or a lone `$`.
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    Tok::Other
                }
            }
        } else if ident_start(rest[0]) {
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word = sql[start..i].to_ascii_lowercase();
            let next = b.get(i).copied();
            match (word.as_str(), next) {
                // E'…' takes backslash escapes; B'…', X'…', N'…' do not.
                ("e", Some(b'\'')) => {
                    i = quote_end(b, i + 1, b'\'', true);
                    Tok::Str
                }
                ("b" | "x" | "n", Some(b'\'')) => {
                    i = quote_end(b, i + 1, b'\'', false);
                    Tok::Str
                }
                // U&'…' and U&"…".
                ("u", Some(b'&')) if matches!(b.get(i + 1), Some(b'\'' | b'"')) => {
                    let q = b[i + 1];
                    i = quote_end(b, i + 2, q, false);
                    if q == b'"' {
                        Tok::Quoted
                    } else {
                        Tok::Str
                    }
                }
                _ => Tok::Word,
            }
        } else if rest[0].is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            Tok::Other
        } else {
            // One character (a multi-byte one whole).
            i += sql[i..].chars().next().map_or(1, char::len_utf8);
            Tok::Other
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

/// The end of a `/* … */` comment starting at `i` (they nest).
fn comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a quoted string or name whose text starts at `i`: after the
/// closing `q` (a doubled one stands for itself; `\` escapes in E'…').
fn quote_end(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end of a `$tag$…$tag$` string starting at `i`, if one starts there.
fn dollar_end(b: &[u8], i: usize) -> Option<usize> {
    let tag_len = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80))?;
    let tag_end = i + 1 + tag_len;
    if b[tag_end] != b'$' || b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    let tag = &b[i..=tag_end];
    let body = tag_end + 1;
    Some(
        b[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map_or(b.len(), |p| body + p + tag.len()),
    )
}

/// A text-format value as JSON: numbers as numbers, booleans as booleans.
fn text_to_json(text: &str, ty: &Type) -> serde_json::Value {
    if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(ty) {
        if let Ok(v) = text.parse::<i64>() {
            return v.into();
        }
    }
    if [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(ty) {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return serde_json::Value::Number(n);
        }
    }
    if *ty == Type::BOOL {
        return (text == "t").into();
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        tokens(sql)
            .iter()
            .map(|t| sql[t.start..t.end].to_string())
            .collect()
    }

    #[test]
    fn tokens_skip_comments_and_keep_strings_whole() {
        assert_eq!(
            words("/* a /* nested */ still */ select -- x\n 'it''s' , \"a\"\"b\"(1);"),
            ["select", "'it''s'", ",", "\"a\"\"b\"", "(", "1", ")", ";"]
        );
        assert_eq!(
            words(r"select E'a\'b', 'c\', $$x'y$$, $t$ $$ $t$, $1, a$b"),
            [
                "select",
                r"E'a\'b'",
                ",",
                r"'c\'",
                ",",
                "$$x'y$$",
                ",",
                "$t$ $$ $t$",
                ",",
                "$1",
                ",",
                "a$b"
            ]
        );
        assert_eq!(
            words("select U&'d\\0061t' , u&\"x\" , X'1F', b'01', n'é'"),
            [
                "select",
                "U&'d\\0061t'",
                ",",
                "u&\"x\"",
                ",",
                "X'1F'",
                ",",
                "b'01'",
                ",",
                "n'é'"
            ]
        );
        // Unterminated: to the end.
        assert_eq!(words("select 'abc"), ["select", "'abc"]);
        assert_eq!(words("select /* abc"), ["select"]);
        assert_eq!(words("a*/*c*/b"), ["a", "*", "b"]);
    }

    #[test]
    fn statements_are_classified_by_their_first_word() {
        let q = |s| classify(s).ok();
        assert_eq!(q("select 1"), Some(Kind::Query("select 1")));
        assert_eq!(
            q(" -- c\n /* d */ SELECT 1 ; ; -- e"),
            Some(Kind::Query("SELECT 1"))
        );
        assert_eq!(q("(values (1))"), Some(Kind::Query("(values (1))")));
        assert_eq!(q("TABLE sessions;"), Some(Kind::Query("TABLE sessions")));
        assert_eq!(
            q("with x as (select 1) select * from x"),
            Some(Kind::Query("with x as (select 1) select * from x"))
        );
        assert_eq!(q("show all"), Some(Kind::Show));
        assert_eq!(q("explain select 1"), Some(Kind::Explain("select 1")));
        assert_eq!(
            q("EXPLAIN ANALYZE VERBOSE select 1;"),
            Some(Kind::Explain("select 1"))
        );
        assert_eq!(
            q("explain (analyze, format 'json', costs off) /* x */ with a as (select 1) table a"),
            Some(Kind::Explain("with a as (select 1) table a"))
        );
        assert_eq!(
            q("explain (select pg_notify('a', 'b'))"),
            Some(Kind::Explain("(select pg_notify('a', 'b'))"))
        );
        for refused in [
            "insert into t values (1)",
            "listen x",
            "notify x",
            "prepare p as select 1",
            "execute p",
            "deallocate all",
            "set statement_timeout = 0",
            "reset all",
            "begin",
            "copy (select 1) to program 'x'",
            "do $$ begin end $$",
            "explain analyze delete from t",
            "explain (analyze) execute p",
            "explain",
            "\"select\" 1",
        ] {
            let e = classify(refused).expect_err(refused).to_string();
            assert!(e.contains("refused"), "{refused}: {e}");
        }
        assert_eq!(
            classify("Listen x").unwrap_err().to_string(),
            format!("sql is read-only: LISTEN is refused; {RUNS}")
        );
    }

    #[test]
    fn called_names_are_the_words_before_a_parenthesis() {
        assert_eq!(
            called_names(
                "SELECT pg_notify('x'::text, 'a(b'::text) AS \"f(\", public.\"My\"\"Fn\"(1), \
                 count(*) OVER (), 1::numeric(10,2) FROM generate_series(1, 3) g(x)"
            ),
            [
                "My\"Fn",
                "OVER",
                "count",
                "g",
                "generate_series",
                "numeric",
                "pg_notify"
            ]
        );
    }

    #[test]
    fn only_builtin_functions_that_read_pass() {
        let refusal = |schema: &str, name: &str, volatility: &str, ours: bool| {
            Function {
                name: name.into(),
                schema: schema.into(),
                volatility: volatility.into(),
                ours,
            }
            .refusal()
        };
        for (schema, name, vol, ours) in [
            ("pg_catalog", "lower", "i", false),
            ("pg_catalog", "now", "s", false),
            ("pg_catalog", "pg_sleep", "v", false),
            ("public", "group_concat", "i", true),
            ("mine", "inter_session_schema_version", "i", true),
        ] {
            assert_eq!(refusal(schema, name, vol, ours), None, "{name}");
        }
        for (schema, name, vol, ours) in [
            ("pg_catalog", "pg_notify", "v", false),
            ("pg_catalog", "pg_advisory_lock", "v", false),
            ("pg_catalog", "nextval", "v", false),
            ("pg_catalog", "txid_current", "s", false),
            ("public", "lower", "i", false),
            ("public", "dblink", "v", true),
            ("other", "group_concat", "i", false),
        ] {
            let why = refusal(schema, name, vol, ours).expect(name);
            assert!(why.contains(&format!("{name}() is refused")), "{why}");
        }
        assert!(refusal("public", "f", "i", true)
            .unwrap()
            .contains("public.f() is refused"));
    }

    #[test]
    fn batches_grow_and_shrink() {
        assert_eq!(next_batch(1, 10), 2);
        assert_eq!(next_batch(512, 10), 1000);
        assert_eq!(next_batch(1000, 10), 1000);
        assert_eq!(next_batch(8, BATCH_BYTES + 1), 4);
        assert_eq!(next_batch(1, BATCH_BYTES + 1), 1);
    }
}
