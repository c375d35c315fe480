//! Opening the SQLite file: its connections (read-write, or read-only for a
//! folder we may not write), the schema migrations, the recovery of `-wal`
//! and `-shm` files a read-only moment left behind, and the kinds of
//! trouble (`Trouble`) its failures are.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};

use super::MIGRATIONS;
use crate::error::Trouble;

/// Context for a failure while opening: "corrupt, move it aside" only when
/// SQLite says so (not a database, corrupt), never for a full disk or a
/// failed write, where that advice would throw good mail away.
pub(super) fn open_failed(path: &Path, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e: anyhow::Error = e.into();
    if trouble(&e) == Some(Trouble::Corrupt) {
        e.context(not_a_mailbox(path))
    } else {
        e.context(format!("could not open the mailbox at {}", path.display()))
    }
}

/// What kind of trouble the first SQLite failure in an error chain is, if
/// it is one a person can act on (SQLite's result codes, not its text).
pub(crate) fn trouble(e: &anyhow::Error) -> Option<Trouble> {
    e.chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>().and_then(trouble_of))
}

/// The trouble one SQLite error is, if it is a failure a person can act on.
pub(super) fn trouble_of(e: &rusqlite::Error) -> Option<Trouble> {
    use rusqlite::{ffi, ErrorCode};
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return None;
    };
    match f.code {
        ErrorCode::DiskFull => Some(Trouble::DiskFull),
        // A write past a file size limit (`ulimit -f`) is EFBIG, which
        // SQLite reports as an I/O error; a full disk with no room for the
        // 32 KiB `-shm` file fails every open with SQLITE_IOERR_SHMSIZE.
        ErrorCode::SystemIoFailure
            if [
                ffi::SQLITE_IOERR_WRITE,
                ffi::SQLITE_IOERR_SHMSIZE,
                ffi::SQLITE_IOERR_TRUNCATE,
            ]
            .contains(&f.extended_code) =>
        {
            Some(Trouble::WriteFailed)
        }
        ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => Some(Trouble::Corrupt),
        ErrorCode::ReadOnly => Some(Trouble::ReadOnly),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some(Trouble::Busy),
        _ => None,
    }
}

pub(super) fn not_a_mailbox(path: &Path) -> String {
    format!(
        "{} is not a readable inter-session mailbox (corrupt, or not an SQLite database); move it aside to start fresh",
        path.display()
    )
}

pub(super) fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    if read_only {
        return open_read_only(path);
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("could not open mailbox at {}", path.display()))?;
    // SQLite's default busy handler backs off up to 100 ms a try, which
    // leaves a monitor asleep long after a burst of short transactions;
    // ours retries every fraction of a millisecond, for up to ~10 s.
    conn.busy_handler(Some(busy_retry))?;
    // journal_size_limit: after a checkpoint the WAL shrinks back to 4 MiB
    // (a huge or failed transaction would otherwise keep its disk space for
    // as long as any monitor holds the database open).
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA journal_size_limit = 4194304;",
    )
    .map_err(|e| open_failed(path, e))?;
    Ok(conn)
}

/// A connection that never writes. A WAL database is read through its
/// `-shm` file, which a read-only folder may not hold and cannot create;
/// then, when there is no `-wal` either (everything is in the main file),
/// the file is read as immutable.
pub(super) fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("could not open mailbox at {}", path.display()))?;
    conn.busy_handler(Some(busy_retry))?;
    let readable = conn.query_row("PRAGMA user_version", [], |_| Ok(()));
    let wal = sibling(path, "-wal");
    match readable {
        Ok(()) => Ok(conn),
        Err(e) if trouble_of(&e).is_some_and(|t| t != Trouble::Corrupt) && !wal.exists() => {
            drop(conn);
            let uri = format!(
                "file:{}?immutable=1",
                path.display()
                    .to_string()
                    .replace('%', "%25")
                    .replace('?', "%3f")
                    .replace('#', "%23")
            );
            Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .with_context(|| format!("could not open mailbox at {}", path.display()))
        }
        Err(e) => Err(open_failed(path, e)),
    }
}

/// `mailbox.db-wal`, `mailbox.db-shm`: SQLite's files beside the database.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether this process may write `path` (a missing file: its folder).
pub(crate) fn may_write(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string; faccessat only reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) == 0 }
}

/// SQLite gives `-wal` and `-shm` the database file's mode when it creates
/// them: a read while the database was read-only (chmod 0400) leaves them
/// read-only, and every later write fails on them. Ours, in our private
/// folder: make them writable again once the database is.
pub(super) fn recover_stale_siblings(db: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["-wal", "-shm"] {
        let file = sibling(db, suffix);
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        // SAFETY: geteuid cannot fail.
        let mine = meta.uid() == unsafe { libc::geteuid() };
        if meta.file_type().is_file() && mine && meta.mode() & 0o200 == 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).with_context(
                || {
                    format!(
                        "{} is read-only and could not be fixed; remove it (no inter-session process running) and retry",
                        file.display()
                    )
                },
            )?;
        }
    }
    Ok(())
}

pub(super) fn busy_retry(attempt: i32) -> bool {
    if attempt > 20_000 {
        return false;
    }
    // The other writer is most often a monitor marking a line delivered
    // (a transaction of ~0.1 ms): look again soon, then back off.
    let attempt = u64::try_from(attempt).unwrap_or(0);
    let micros = if attempt < 8 {
        20 + attempt * 20
    } else {
        200 + (attempt % 7) * 60 + (attempt / 100).min(800)
    };
    std::thread::sleep(Duration::from_micros(micros));
    true
}

pub(super) fn schema_version(conn: &Connection) -> Result<usize> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(usize::try_from(v).unwrap_or(usize::MAX))
}

pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| open_failed(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!(
            "could not switch {} to WAL mode (got {mode})",
            path.display()
        );
    }
    let version = schema_version(conn)?;
    if version == 0 {
        // A non-empty file with no schema of ours is somebody else's database.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            bail!(
                "{} holds another program's database (no inter-session schema); refusing to touch it",
                path.display()
            );
        }
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {name} failed"))?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1)?)?;
        tx.commit()?;
    }
    Ok(())
}
