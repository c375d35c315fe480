use std::io::Write;

use clap::Parser;

use inter_session::cmd::{self, Cli};
use inter_session::{error, line, store};

fn main() {
    // Everything we create (database, WAL, locks) is private to the user.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    // `--version` alone needs none of the command tree: answered before
    // clap builds it (the same text clap prints), at the cost of a bare start.
    let mut args = std::env::args_os().skip(1);
    if let (Some(a), None) = (args.next(), args.next()) {
        if a == "--version" || a == "-V" {
            let _ = writeln!(
                std::io::stdout(),
                "inter-session {}",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(0);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap's usage errors quote what was typed: printed plain (without
        // clap's colours), anything that would act on a terminal escaped.
        // Help and version go as clap has them.
        Err(e) if e.use_stderr() => {
            let _ = write!(
                std::io::stderr(),
                "{}",
                line::visible(&e.render().to_string())
            );
            std::process::exit(e.exit_code());
        }
        Err(e) => e.exit(),
    };
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: a stderr that cannot be written (closed, a
            // full device) must not turn the error into a panic.
            let _ = writeln!(std::io::stderr(), "inter-session: {}", one_line(&e));
            error::exit_code(&e)
        }
    };
    std::process::exit(code);
}

/// The error as one line, whatever its chain holds: the causes joined by
/// ": " (as `{e:#}` does), minus a cause that only repeats the one before it
/// (a database library's "Error code N: <message>"), plus what to do about a
/// store trouble a person can act on (a full disk, a read-only mailbox).
/// Errors echo what they were given (ids, names, paths, durations, SQL),
/// so the whole line is made safe: line breaks become spaces, and any other
/// control, bidi or format character is written `\u{…}` (`line::visible`).
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
    line::visible(&text.replace(['\n', '\r'], " "))
}
