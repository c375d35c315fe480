//! `db copy --to <url>`: move this data folder's SQLite mailbox into
//! PostgreSQL (sessions, messages, long bodies, deliveries, peers, labels,
//! waiting asks). It prints counts; a second run copies nothing. The SQL
//! lives in `store::copy`; this file only finds the folder and prints.

use anyhow::{bail, Result};

use crate::datadir;
use crate::store::copy;

pub fn copy(to: &str, json: bool) -> Result<i32> {
    if to.trim().is_empty() {
        return Err(crate::identity::UsageError(
            "give the target database: db copy --to postgres://user@host/db".into(),
        )
        .into());
    }
    let dir = datadir::path()?;
    let db = dir.join(datadir::DB_FILE);
    if !db.exists() {
        bail!("no SQLite mailbox at {} to copy", db.display());
    }
    let report = copy::copy_from_sqlite(&dir, to)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(0);
    }
    if report.nothing_new() {
        println!(
            "nothing to copy: {} already holds everything in {}",
            report.database,
            db.display()
        );
        return Ok(0);
    }
    println!(
        "copied {} to {}: {} sessions, {} messages ({} long bodies), {} deliveries, \
         {} newly marked delivered, {} peers, {} labels, {} waiting asks, {} tasks, {} leases",
        db.display(),
        report.database,
        report.sessions,
        report.messages,
        report.blobs,
        report.deliveries,
        report.delivered_since,
        report.peers,
        report.labels,
        report.asks,
        report.tasks,
        report.leases
    );
    println!(
        "use it everywhere with: export INTER_SESSION_DATABASE_URL='{}' (with your password)",
        report.database
    );
    Ok(0)
}
