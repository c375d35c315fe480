//! The only place that runs tmux. Every call goes to our own server socket
//! (`tmux -L inter-session`, or `$INTER_SESSION_TMUX_SOCKET`), so a user's own
//! tmux sessions are never touched or listed.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

pub fn socket() -> String {
    std::env::var("INTER_SESSION_TMUX_SOCKET")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "inter-session".to_string())
}

fn tmux(sock: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new("tmux")
        .arg("-L")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => Ok(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("tmux not found; install it (Debian/Ubuntu: apt-get install tmux; macOS: brew install tmux)")
        }
        Err(e) => Err(e).context("could not run tmux"),
    }
}

fn checked(sock: &str, args: &[&str]) -> Result<String> {
    let out = tmux(sock, args)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // The last of several `;`-separated commands is the one that matters.
        let what = match args.iter().rposition(|a| *a == ";") {
            Some(i) => args.get(i + 1),
            None => args.first(),
        };
        bail!(
            "tmux {} failed: {}",
            what.copied().unwrap_or(""),
            err.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fail early, with the install hint, when tmux is missing.
pub fn require() -> Result<()> {
    tmux(&socket(), &["-V"]).map(|_| ())
}

pub fn alive(sock: &str, session: &str) -> Result<bool> {
    Ok(tmux(sock, &["has-session", "-t", &exact(session)])?
        .status
        .success())
}

/// `=name` matches the session name exactly, never as a prefix.
fn exact(session: &str) -> String {
    format!("={session}")
}

/// The first pane of a session, as a send-keys / capture-pane target.
fn pane(session: &str) -> String {
    format!("={session}:")
}

/// Start a detached session running `shell_command` (run by tmux's shell),
/// with `env` set in it, and each variable named in `pass_through` copied
/// from our own environment — or removed from the session's when we do not
/// have it. Those go through tmux's `update-environment` and the client's
/// environment rather than its command line, where other local users could
/// read them (a database URL may hold a password); without it a pane would
/// get whatever the tmux server was started with.
pub fn new_session(
    sock: &str,
    session: &str,
    cwd: &str,
    env: &[(&str, String)],
    pass_through: &[&str],
    shell_command: &str,
) -> Result<()> {
    let mut args: Vec<String> = Vec::new();
    for (i, var) in pass_through.iter().enumerate() {
        // Fixed slots after tmux's defaults, so repeated spawns do not
        // grow the list; `;` ends a command within one tmux invocation.
        args.extend([
            "set-option".to_string(),
            "-g".to_string(),
            format!("update-environment[{}]", 100 + i),
            var.to_string(),
            ";".to_string(),
        ]);
    }
    args.extend(
        [
            "new-session",
            "-d",
            "-s",
            session,
            "-c",
            cwd,
            "-x",
            "200",
            "-y",
            "50",
        ]
        .map(String::from),
    );
    for (k, v) in env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(shell_command.to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    checked(sock, &refs).map(|_| ())
}

/// Type `text` literally (no key names, no `;` parsing), then Enter.
pub fn send_text(sock: &str, session: &str, text: &str) -> Result<()> {
    let target = pane(session);
    if !text.is_empty() {
        // tmux splits its arguments into commands at a trailing `;` before
        // `-l` is looked at; `\;` is how a literal final `;` survives.
        let literal = match text.strip_suffix(';') {
            Some(head) => format!("{head}\\;"),
            None => text.to_string(),
        };
        checked(sock, &["send-keys", "-t", &target, "-l", "--", &literal])?;
    }
    checked(sock, &["send-keys", "-t", &target, "Enter"]).map(|_| ())
}

/// The pane's last `lines` lines of text, without escape codes.
pub fn capture(sock: &str, session: &str, lines: usize) -> Result<String> {
    let start = format!("-{lines}");
    let text = checked(
        sock,
        &[
            "capture-pane",
            "-p",
            "-J",
            "-t",
            &pane(session),
            "-S",
            &start,
        ],
    )?;
    let trimmed: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    let mut end = trimmed.len();
    while end > 0 && trimmed[end - 1].trim().is_empty() {
        end -= 1;
    }
    let keep = &trimmed[end.saturating_sub(lines)..end];
    Ok(keep.iter().map(|l| format!("{}\n", l.trim_end())).collect())
}

pub struct PaneInfo {
    pub command: String,
    pub pid: Option<i64>,
}

pub fn pane_info(sock: &str, session: &str) -> Result<PaneInfo> {
    let out = checked(
        sock,
        &[
            "display-message",
            "-p",
            "-t",
            &pane(session),
            "#{pane_current_command}\t#{pane_pid}",
        ],
    )?;
    let mut parts = out.trim_end().splitn(2, '\t');
    let command = parts.next().unwrap_or_default().to_string();
    let pid = parts.next().and_then(|p| p.parse().ok());
    Ok(PaneInfo { command, pid })
}

pub fn kill(sock: &str, session: &str) -> Result<()> {
    if alive(sock, session)? {
        checked(sock, &["kill-session", "-t", &exact(session)])?;
    }
    Ok(())
}
