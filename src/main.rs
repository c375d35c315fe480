use clap::Parser;

use inter_session::cmd::{self, Cli};
use inter_session::identity::UsageError;

fn main() {
    // Everything we create (database, WAL, locks) is private to the user.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    let cli = Cli::parse();
    let code = match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the error chain holds.
            let text = format!("{e:#}").replace(['\n', '\r'], " ");
            eprintln!("inter-session: {text}");
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}
