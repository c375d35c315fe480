use clap::Parser;

use inter_session::cmd::{self, Cli};
use inter_session::{error, store};

fn main() {
    // Everything we create (database, WAL, locks) is private to the user.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inter-session: {}", one_line(&e));
            error::exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// The error as one line, whatever its chain holds: the causes joined by
/// ": " (as `{e:#}` does), minus a cause that only repeats the one before it
/// (a database library's "Error code N: <message>"), plus what to do about a
/// store trouble a person can act on (a full disk, a read-only mailbox).
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if parts
            .last()
            .is_some_and(|p| s == *p || s.ends_with(&format!(": {p}")))
        {
            continue;
        }
        parts.push(s);
    }
    let mut text = parts.join(": ");
    if let Some(hint) = store::trouble(e).and_then(error::Trouble::hint) {
        text.push_str(hint);
    }
    text.replace(['\n', '\r'], " ")
}
