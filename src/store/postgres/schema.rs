//! The schema in `migrations/postgres/`, applied in order under a
//! transaction-level advisory lock (the first of several processes to start
//! does it; the others wait, then find it done) and recorded in
//! `schema_migrations`. Every connection checks the version first, through a
//! constant function that costs far less than reading a table.

use ::postgres::Client;
use anyhow::{bail, Context, Result};

use super::LOCK_NS;
use crate::store::now_text;

/// A function in the schema that returns the number of applied migrations.
const VERSION_FUNCTION: &str = "inter_session_schema_version";

/// The schema, in order; `schema_migrations` records which are applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_lean_writes",
        include_str!("../../../migrations/postgres/0002_lean_writes.sql"),
    ),
    (
        "0003_receipts",
        include_str!("../../../migrations/postgres/0003_receipts.sql"),
    ),
    (
        "0004_tasks_leases",
        include_str!("../../../migrations/postgres/0004_tasks_leases.sql"),
    ),
];

/// Second key of the lock that serialises first-time set-up.
const SETUP_KEY: i32 = 0;

fn schema_version(c: &mut Client) -> Result<usize> {
    // One round trip on every connection: a database without our table
    // answers "undefined table" (outside any transaction, so harmless).
    let v: i32 = match c.query_typed_one(
        "SELECT COALESCE(max(version), 0) FROM schema_migrations",
        &[],
    ) {
        Ok(row) => row.try_get(0)?,
        Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(usize::try_from(v).unwrap_or(0))
}

/// SQL: (re)create the function that answers the schema version without
/// touching a table (see `migrate`).
fn version_function_sql() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {VERSION_FUNCTION}() RETURNS integer \
         LANGUAGE sql IMMUTABLE AS 'SELECT {}'",
        MIGRATIONS.len()
    )
}

pub(super) fn migrate(c: &mut Client, masked: &str) -> Result<()> {
    // The fast check, on every connection: a constant function costs a
    // fresh server process a fraction of what the first read of a table
    // does (its catalog entries, its indexes, planning).
    match c.query_typed_one(&format!("SELECT {VERSION_FUNCTION}()"), &[]) {
        Ok(row) => {
            let v: i32 = row.try_get(0)?;
            if usize::try_from(v).ok() == Some(MIGRATIONS.len()) {
                return Ok(());
            }
        }
        Err(e) if e.code() == Some(&::postgres::error::SqlState::UNDEFINED_FUNCTION) => {}
        Err(e) => return Err(e.into()),
    }
    let version = schema_version(c)?;
    if version == MIGRATIONS.len() {
        // Made by a version without the function: add it, if this role
        // may (else every connection takes the slower check).
        let _ = c.batch_execute(&version_function_sql());
        return Ok(());
    }
    if version > MIGRATIONS.len() {
        bail!(
            "the mailbox at {masked} has schema version {version}, newer than this inter-session knows ({}); upgrade inter-session",
            MIGRATIONS.len()
        );
    }
    // First-time set-up is serialised: the second process waits here, then
    // finds the work done.
    let mut tx = c.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NS, &SETUP_KEY],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ( \
             version    INTEGER PRIMARY KEY, \
             name       TEXT NOT NULL, \
             applied_at TEXT NOT NULL)",
    )?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let applied = usize::try_from(applied).unwrap_or(0);
    if applied == 0 {
        let foreign: Option<String> = tx
            .query_one("SELECT to_regclass('sessions')::text", &[])?
            .try_get(0)?;
        if foreign.is_some() {
            bail!(
                "the database at {masked} already has a 'sessions' table that is not inter-session's; \
                 use an empty database (or another schema, e.g. ?options=-csearch_path%3Dinter_session)"
            );
        }
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql)
            .with_context(|| format!("migration {name} failed"))?;
        let version = i32::try_from(i + 1)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, name, &now_text()],
        )?;
    }
    tx.batch_execute(&version_function_sql())?;
    tx.commit()?;
    Ok(())
}
