//! `peer spawn|send|read|status|list|kill`: agent CLIs in tmux, each with
//! its own mailbox. The pane's environment alone makes it act as its name.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{me_if_any, open, print_table};
use crate::identity::{self, this_host};
use crate::line::{clean_lines, field, safe_name};
use crate::store::{Mailbox, Peer, State, Verbs};
use crate::tmux;

/// Variables of the spawner's Claude Code session that must not leak into
/// the peer (tmux passes its server's environment on): the peer is a session
/// of its own, and Claude Code refuses to start inside another one.
const SCRUB: &[&str] = &[
    "CLAUDECODE",
    "CLAUDE_CODE_SESSION_ID",
    "CLAUDE_PID",
    "CLAUDE_CODE_ENTRYPOINT",
    "INTER_SESSION_LABEL",
];

use crate::line::sh_quote;

fn known_peer(store: &dyn Mailbox, name: &str) -> Result<Peer> {
    match store.peer(name)? {
        Some(p) => Ok(p),
        None => bail!("no peer named '{name}'; see: inter-session peer list"),
    }
}

/// A peer whose tmux session lives on this host: tmux can only reach those.
fn local_peer(store: &dyn Mailbox, name: &str) -> Result<Peer> {
    let p = known_peer(store, name)?;
    let host = p.host.clone();
    let here = this_host();
    if host != here {
        bail!(
            "peer '{name}' runs on host '{host}', not on this one ('{here}'); \
             run this command on {host}"
        );
    }
    Ok(p)
}

pub fn spawn(
    from: Option<&str>,
    name: &str,
    cwd: Option<&Path>,
    cmd: &str,
    prompt: Option<&str>,
    json: bool,
) -> Result<i32> {
    identity::validate_name(name)?;
    tmux::require()?;
    let sock = tmux::socket();
    let store = open()?;
    let host = this_host();
    if let Some(p) = store.peer(name)? {
        if p.killed_at.is_none() {
            let theirs = p.host.clone();
            if theirs != host {
                bail!(
                    "peer '{name}' belongs to host '{theirs}'; end it there \
                     (inter-session peer kill {name}) or pick another name"
                );
            }
            if tmux::alive(&p.tmux_socket, &p.tmux_session)? {
                bail!("peer '{name}' is already running; talk to it with: inter-session peer send {name} TEXT");
            }
        }
    }
    if let Some(s) = store.session_by_name(name)? {
        if s.state == State::Online {
            bail!("name '{name}' is held by a running session; pick another name");
        }
    }
    let cwd = match cwd {
        Some(d) => {
            std::fs::canonicalize(d).with_context(|| format!("no such folder: {}", d.display()))?
        }
        None => std::env::current_dir().context("could not read the current directory")?,
    };
    if !cwd.is_dir() {
        bail!("not a folder: {}", cwd.display());
    }
    let parent = me_if_any(store.as_ref(), from)?
        .map(|s| s.name)
        .unwrap_or_default();
    let key = format!("peer:{name}:{}", ulid::Ulid::new());
    let data_dir = crate::datadir::path()?;

    // The pane acts as `name` on this host, in this mailbox: the host name
    // its sessions record is pinned (its monitor must claim the mailbox on
    // the host the peer belongs to), and the database URL is passed through
    // tmux's environment rather than its command line (it may hold a
    // password); when we use SQLite it is removed from the pane's.
    let env = [
        ("INTER_SESSION_NAME", name.to_string()),
        ("INTER_SESSION_KEY", key.clone()),
        ("INTER_SESSION_PARENT", parent.clone()),
        ("INTER_SESSION_DATA_DIR", data_dir.display().to_string()),
        ("INTER_SESSION_HOSTNAME", host.clone()),
    ];
    let pass_through = ["INTER_SESSION_DATABASE_URL"];
    // The pane finds this very binary first on its PATH. tmux takes PATH
    // from its client rather than from `-e`, so it is set in the command.
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.display().to_string()));
    let path_prefix = bin_dir.map_or(String::new(), |d| {
        format!("PATH={}:\"$PATH\"; export PATH; ", sh_quote(&d))
    });
    let shell = format!("{path_prefix}unset {}; exec {cmd}", SCRUB.join(" "));
    let cwd_text = cwd.display().to_string();
    let peer = Peer {
        name: name.to_string(),
        session_id: None,
        tmux_socket: sock.clone(),
        tmux_session: name.to_string(),
        command: cmd.to_string(),
        cwd: cwd_text.clone(),
        spawned_by: parent,
        created_at: String::new(),
        killed_at: None,
        host: this_host(),
    };
    // Register first: mail sent right after spawn is queued, not refused.
    let project = identity::project_of(&cwd).display().to_string();
    store.add_peer(&peer, &key, &project)?;
    tmux::kill(&sock, name)?; // a dead leftover session of the same name
    tmux::new_session(&sock, name, &cwd_text, &env, &pass_through, &shell)?;

    if let Some(text) = prompt {
        wait_ready(&sock, name)?;
        tmux::send_text(&sock, name, text)?;
    }
    if json {
        println!(
            "{}",
            json!({ "name": name, "host": host, "tmux_socket": peer.tmux_socket, "tmux_session": name, "cwd": cwd_text, "command": cmd })
        );
    } else {
        println!(
            "spawned peer '{name}' ({}) in tmux -L {} session '{name}'; mail to it waits until its monitor runs",
            field(cmd),
            field(&peer.tmux_socket)
        );
    }
    Ok(0)
}

/// Wait until the pane shows something and has stopped changing for a
/// moment (the agent's prompt is up), at most 30 s.
fn wait_ready(sock: &str, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    let mut stable_since = Instant::now();
    while Instant::now() < deadline {
        if !tmux::alive(sock, name)? {
            bail!("peer '{name}' exited right after starting; see its command");
        }
        let now = tmux::capture(sock, name, 50)?;
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if !last.trim().is_empty() && stable_since.elapsed() >= Duration::from_millis(700) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn send(name: &str, text: &str) -> Result<i32> {
    let store = open()?;
    let p = local_peer(store.as_ref(), name)?;
    if !tmux::alive(&p.tmux_socket, &p.tmux_session)? {
        bail!("peer '{name}' is not running (its tmux session is gone)");
    }
    tmux::send_text(&p.tmux_socket, &p.tmux_session, text)?;
    Ok(0)
}

pub fn read(name: &str, lines: usize) -> Result<i32> {
    let store = open()?;
    let p = local_peer(store.as_ref(), name)?;
    if !tmux::alive(&p.tmux_socket, &p.tmux_session)? {
        bail!("peer '{name}' is not running (its tmux session is gone)");
    }
    // capture-pane without -e gives no colour codes, but the cells still
    // hold what the pane printed, bidi and zero-width characters included.
    // Lines are not quoted: the pane's own monitor lines are what it shows.
    print!(
        "{}",
        clean_lines(&tmux::capture(&p.tmux_socket, &p.tmux_session, lines)?)
    );
    Ok(0)
}

/// killed, alive or dead; `remote` for a peer of another host (its tmux
/// server is not reachable from here).
fn liveness(p: &Peer, local: bool) -> Result<&'static str> {
    Ok(if p.killed_at.is_some() {
        "killed"
    } else if !local {
        "remote"
    } else if tmux::alive(&p.tmux_socket, &p.tmux_session)? {
        "alive"
    } else {
        "dead"
    })
}

pub fn status(name: &str, json: bool) -> Result<i32> {
    let store = open()?;
    let p = local_peer(store.as_ref(), name)?;
    let host = this_host();
    let alive = liveness(&p, true)?;
    let info = if alive == "alive" {
        Some(tmux::pane_info(&p.tmux_socket, &p.tmux_session)?)
    } else {
        None
    };
    let session = store.session_by_name(name)?;
    let (state, pending) = session
        .as_ref()
        .map_or(("none", 0), |s| (s.state.as_str(), s.pending));
    if json {
        println!(
            "{}",
            json!({
                "name": p.name, "host": host, "status": alive,
                "command": info.as_ref().map(|i| i.command.clone()),
                "pid": info.as_ref().and_then(|i| i.pid),
                "mailbox": state, "pending": pending, "cwd": p.cwd,
                "tmux_socket": p.tmux_socket, "spawned_by": p.spawned_by,
            })
        );
    } else {
        // Everything here comes from the database or from tmux.
        println!("peer: {}", safe_name(&p.name));
        println!("status: {alive}");
        if let Some(i) = &info {
            println!("command: {}", field(&i.command));
            if let Some(pid) = i.pid {
                println!("pid: {pid}");
            }
        }
        println!("mailbox: {state}, {pending} pending");
        println!("host: {}", field(&host));
        println!("cwd: {}", field(&p.cwd));
    }
    Ok(0)
}

pub fn list(all: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let peers = store.peers(all)?;
    // As in `list`: a HOST column when the mailbox is shared between machines.
    let several_hosts = store.backend().spans_hosts();
    let here = this_host();
    let mut rows = Vec::new();
    let mut out = Vec::new();
    for p in &peers {
        let host = p.host.clone();
        let alive = liveness(p, host == here)?;
        let s = store.session_by_name(&p.name)?;
        let (state, pending) = s
            .as_ref()
            .map_or(("none", 0), |s| (s.state.as_str(), s.pending));
        out.push(json!({
            "name": p.name, "host": host, "status": alive, "mailbox": state, "pending": pending,
            "command": p.command, "cwd": p.cwd, "created_at": p.created_at,
        }));
        // print_table makes every cell safe; the name as a header shows it.
        let mut row = vec![
            safe_name(&p.name).into_owned(),
            alive.to_string(),
            state.to_string(),
            pending.to_string(),
            p.command.clone(),
            p.cwd.clone(),
        ];
        if several_hosts {
            row.insert(4, host);
        }
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    } else if rows.is_empty() {
        println!("no peers; start one with: inter-session peer spawn NAME --cmd 'claude'");
    } else if several_hosts {
        print_table(
            &[
                "NAME", "STATUS", "MAILBOX", "PENDING", "HOST", "COMMAND", "CWD",
            ],
            &rows,
        );
    } else {
        print_table(
            &["NAME", "STATUS", "MAILBOX", "PENDING", "COMMAND", "CWD"],
            &rows,
        );
    }
    Ok(0)
}

pub fn kill(name: &str) -> Result<i32> {
    let store = open()?;
    let p = local_peer(store.as_ref(), name)?;
    tmux::kill(&p.tmux_socket, &p.tmux_session)?;
    store.peer_killed(name)?;
    if let Some(s) = store.session_by_name(name)? {
        if let Some(pid) = store
            .disconnect(s.id)?
            .and_then(|p| libc::pid_t::try_from(p).ok())
        {
            // SAFETY: kill(2) on the monitor pid recorded for this mailbox.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    println!("killed peer '{name}'; its mailbox is marked left");
    Ok(0)
}
