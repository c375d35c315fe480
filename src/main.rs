use clap::Parser;

use inter_session::cmd::{self, Cli};
use inter_session::identity::UsageError;
use inter_session::line;

fn main() {
    // Everything we create (database, WAL, locks) is private to the user.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap's usage errors quote what was typed: printed plain (without
        // clap's colours), anything that would act on a terminal escaped.
        // Help and version go as clap has them.
        Err(e) if e.use_stderr() => {
            eprint!("{}", line::visible(&e.render().to_string()));
            std::process::exit(e.exit_code());
        }
        Err(e) => e.exit(),
    };
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inter-session: {}", one_line(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

/// The error as one line, whatever its chain holds: the causes joined by
/// ": " (as `{e:#}` does) minus the "Error code N: <message>" repeat that
/// rusqlite adds after SQLite's own message, plus what to do when the
/// database could not be written for lack of space. Errors echo what they
/// were given (ids, names, paths, durations, SQL), so the whole line is made
/// safe: line breaks become spaces, and any other control, bidi or format
/// character is written `\u{…}` (`line::visible`).
fn one_line(e: &anyhow::Error) -> String {
    let hint = write_failure_hint(e);
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let mut s = cause.to_string();
        if s.starts_with("Error code ") && parts.last().is_some_and(|p| s.ends_with(p.as_str())) {
            continue;
        }
        // The store calls a database it cannot read corrupt and says to
        // move it aside; when the cause is a full disk that advice would
        // throw away good mail.
        if hint.is_some() {
            if let Some((path, _)) = s
                .split_once(" is not a readable inter-session mailbox")
                .filter(|(_, rest)| rest.contains("move it aside"))
            {
                s = format!("could not open {path}");
            }
        }
        parts.push(s);
    }
    let mut text = parts.join(": ");
    if let Some(hint) = hint {
        text.push_str(hint);
    }
    line::visible(&text.replace(['\n', '\r'], " "))
}

/// A hint for SQLite's "disk full" and failed writes: a write past a file
/// size limit (`ulimit -f`) is EFBIG, which SQLite reports as an I/O error,
/// and a full disk that has no room left for the 32 KiB `-shm` file fails
/// every open with SQLITE_IOERR_SHMSIZE.
fn write_failure_hint(e: &anyhow::Error) -> Option<&'static str> {
    use rusqlite::ffi;
    let failure = e
        .chain()
        .find_map(|c| match c.downcast_ref::<rusqlite::Error>()? {
            rusqlite::Error::SqliteFailure(f, _) => Some(*f),
            _ => None,
        })?;
    match failure.code {
        rusqlite::ErrorCode::DiskFull => {
            Some(" (free space on the disk that holds the data folder, then retry)")
        }
        rusqlite::ErrorCode::SystemIoFailure
            if [
                ffi::SQLITE_IOERR_WRITE,
                ffi::SQLITE_IOERR_SHMSIZE,
                ffi::SQLITE_IOERR_TRUNCATE,
            ]
            .contains(&failure.extended_code) =>
        {
            Some(" (a write failed: the disk may be full, or a file size limit (ulimit -f) was reached)")
        }
        _ => None,
    }
}
