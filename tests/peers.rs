//! tmux peers end to end (issue 5's "Must hold" list, SPEC §6): the real
//! binary driving a real tmux server. Every test runs its own tmux server on
//! a socket of its own (`INTER_SESSION_TMUX_SOCKET`), killed when the test
//! ends, pass or fail. Every wait is on a printed monitor line or on
//! `peer read` output polled with a deadline, never a fixed sleep. Without
//! tmux each test but the one of a missing tmux skips loudly
//! (support/needs.rs).

mod support;
use support::*;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SOCKET_VAR: &str = "INTER_SESSION_TMUX_SOCKET";
const WAIT: Duration = Duration::from_secs(20);
/// An interactive shell as the peer's "agent", without the user's dotfiles:
/// a `.bashrc` may be slow or hang (e.g. `pyenv rehash` behind a lock left
/// by a shell that was killed mid-start), which has nothing to do with peers.
const SHELL: &str = "bash --norc --noprofile";

// ---------------------------------------------------------------- helpers

/// A data folder whose commands use a tmux server of this test's own
/// (support's `TmuxServer`, `INTER_SESSION_TMUX_SOCKET`); it derefs to that
/// `Env`. Dropping it kills the server (and with it every pane and the
/// monitors running in them).
struct Peers {
    env: Env,
    server: TmuxServer,
}

impl std::ops::Deref for Peers {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Peers {
    /// None (the test skipped loudly) when tmux is not installed.
    fn new(tag: &str) -> Option<Peers> {
        have_tmux().then(|| Peers::without_tmux(tag))
    }

    /// For the test of a missing tmux, which runs everywhere.
    fn without_tmux(tag: &str) -> Peers {
        let server = TmuxServer::named(tag);
        Peers {
            env: Env::new().with(SOCKET_VAR, &server.sock),
            server,
        }
    }

    fn json(&self, key: &str, args: &[&str]) -> Value {
        let out = self.ok(key, args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON {out:?}: {e}"))
    }

    /// `peer spawn <name> --cmd <cmd>` as `lead`.
    fn spawn(&self, name: &str, cmd: &str) -> String {
        self.ok("lead", &["peer", "spawn", name, "--cmd", cmd])
    }

    fn send_keys(&self, name: &str, text: &str) {
        self.ok("lead", &["peer", "send", name, text]);
    }

    /// Poll `peer read <name>` until `pred` holds for its output (returned).
    fn read_until(&self, name: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.run("lead", &["peer", "read", name, "--lines", "200"]);
            let last = if out.status.success() {
                let screen = String::from_utf8_lossy(&out.stdout).into_owned();
                if pred(&screen) {
                    return screen;
                }
                screen
            } else {
                format!("(peer read failed: {})", stderr_of(&out))
            };
            assert!(
                Instant::now() < deadline,
                "pane '{name}' never showed what was expected; last read:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until the pane shows anything at all (the shell's prompt is up),
    /// so typed text is not raced against the shell's start.
    fn wait_prompt(&self, name: &str) {
        self.read_until(name, |s| !s.trim().is_empty());
    }

    /// tmux itself, on this test's socket.
    fn tmux(&self, args: &[&str]) -> Output {
        self.server.tmux(args)
    }
}

/// Run tmux on `sock` (`-L`), or on the user's default server when `None`.
fn tmux_on(sock: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new("tmux");
    if let Some(s) = sock {
        c.arg("-L").arg(s);
    }
    c.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tmux")
}

/// Exit code `code` and exactly one non-empty stderr line; returns it.
fn fails_with(out: &Output, code: i32) -> String {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(
        err.ends_with('\n') && err.trim_end().lines().count() == 1 && !err.trim().is_empty(),
        "want one stderr line, got {err:?}"
    );
    err.trim_end().to_string()
}

/// The entry named `name` in a JSON array.
fn entry<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|v| v["name"] == name)
}

/// A monitor line from `from` with exactly `text`: returns its id.
fn msg_from<'a>(line: &'a str, from: &str, text: &str) -> Option<&'a str> {
    let id = line_id(line)?;
    let rest = line.strip_prefix(&format!("[inter-session msg={id} from=\"{from}\"] "))?;
    (rest == text).then_some(id)
}

// ---------------------------------------------------------------- 1. round trip

#[test]
fn round_trip_pane_mails_lead_as_its_own_name() {
    let Some(p) = Peers::new("rt") else {
        return;
    };
    let mut lead = p.monitor("lead", &["--name", "lead"]);
    p.wait_online("lead");

    // Spawned from inside a Claude Code session: its variables must not
    // reach the pane (tmux hands its server's environment on).
    let out = p
        .cmd("lead")
        .args(["peer", "spawn", "w1", "--cmd", SHELL])
        .env("CLAUDECODE", "1")
        .env("CLAUDE_CODE_SESSION_ID", "spawner-session")
        .stdin(Stdio::null())
        .output()
        .expect("run inter-session");
    assert!(out.status.success(), "{}", stderr_of(&out));
    p.wait_prompt("w1");
    p.send_keys(
        "w1",
        r#"inter-session mail send --to lead --text "done: 42""#,
    );

    let line = lead.until(WAIT, |l| l.starts_with("[inter-session msg="));
    let id = msg_from(&line, "w1", "done: 42")
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string();
    assert!(is_ulid(&id), "{line}");
    // Stored as sent by w1 to lead: the pane's environment alone said so.
    assert_eq!(
        p.sql(&format!(
            "select sender || ' ' || recipient from history where id = '{id}'"
        )),
        "w1 lead"
    );
    // The pane's `mail send` reported the delivery too.
    p.read_until("w1", |s| {
        s.contains(&format!("sent {id} -> lead (delivered)"))
    });

    // The environment that made it so: its own name and a fresh key of its
    // own, the spawner as parent, the spawner's data folder, no Claude vars.
    p.send_keys(
        "w1",
        r#"echo "env: $INTER_SESSION_NAME|$INTER_SESSION_PARENT|${CLAUDECODE-none}|${CLAUDE_CODE_SESSION_ID-none}|$INTER_SESSION_DATA_DIR|$INTER_SESSION_KEY""#,
    );
    let screen = p.read_until("w1", |s| s.lines().any(|l| l.starts_with("env: ")));
    let env_line = screen
        .lines()
        .find(|l| l.starts_with("env: "))
        .expect("env line");
    let fields: Vec<&str> = env_line["env: ".len()..].split('|').collect();
    let data = p.data.display().to_string();
    assert_eq!(
        fields[..5],
        ["w1", "lead", "none", "none", data.as_str()],
        "{env_line}"
    );
    let key = fields[5];
    assert!(!key.is_empty() && key != "lead", "{env_line}");
    let st = p.json("lead", &["peer", "status", "w1", "--json"]);
    assert_eq!(st["spawned_by"], "lead", "{st}");
}

// ---------------------------------------------------------------- 2. queued before ready

#[test]
fn mail_sent_right_after_spawn_is_queued_and_replayed_in_the_pane() {
    let Some(p) = Peers::new("queue") else {
        return;
    };
    p.spawn("w1", SHELL);
    let out = p.ok(
        "lead",
        &[
            "--from",
            "lead",
            "mail",
            "send",
            "--to",
            "w1",
            "--text",
            "hello w1, queued",
        ],
    );
    assert!(out.ends_with("-> w1 (queued)\n"), "{out}");
    let id = sent_id(&out);

    p.wait_prompt("w1");
    p.send_keys("w1", "inter-session inbox watch --pace off");
    let want = format!("[inter-session msg={id} from=\"lead\"] hello w1, queued");
    p.read_until("w1", |s| s.lines().any(|l| l == want));

    // The monitor in the pane is w1's, online, and marked the mail delivered.
    p.wait_online("w1");
    let deadline = Instant::now() + WAIT;
    loop {
        let st = p.json("lead", &["peer", "status", "w1", "--json"]);
        if st["pending"] == 0 {
            assert_eq!(st["mailbox"], "online", "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {st}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------- 3. literal text

#[test]
fn peer_send_types_text_literally() {
    let Some(p) = Peers::new("lit") else {
        return;
    };
    p.spawn("w1", SHELL);
    p.wait_prompt("w1");
    let typed = r#"echo 'a;b' "$HOME" \; ok"#;
    p.send_keys("w1", typed);

    let home = std::env::var("HOME").expect("HOME");
    let output = format!("a;b {home} ; ok");
    let screen = p.read_until("w1", |s| s.lines().any(|l| l == output));
    assert!(
        screen.lines().any(|l| l.ends_with(typed)),
        "typed command not shown verbatim:\n{screen}"
    );
    // No escape codes in what `peer read` prints.
    assert!(!screen.contains('\x1b'), "{screen:?}");

    // Text that is a tmux key name is typed as the word, not the key.
    p.send_keys("w1", "Space");
    p.read_until("w1", |s| s.contains("Space: command not found"));
}

/// tmux treats an argument that ends in `;` as a command separator even
/// after `send-keys -l`, and `\;` at the end as an escaped `;`: the text must
/// still arrive exactly as given.
#[test]
fn peer_send_text_ending_in_semicolon_is_literal() {
    let Some(p) = Peers::new("semi") else {
        return;
    };
    p.spawn("w1", SHELL);
    p.wait_prompt("w1");
    for (typed, word, output) in [
        (r"echo first;", "first", "first"),
        (r"echo second\;", "second", "second;"),
        (r"echo third\\;", "third", r"third\"),
    ] {
        p.send_keys("w1", typed);
        // Wait for the command's output, right or wrong, then judge it.
        let screen = p.read_until("w1", |s| s.lines().any(|l| l.starts_with(word)));
        let shown = screen.lines().find(|l| l.contains(&format!("echo {word}")));
        let out = screen.lines().find(|l| l.starts_with(word));
        assert!(
            shown.is_some_and(|l| l.ends_with(typed)) && out == Some(output),
            "typed {typed:?}, want output {output:?}; the pane shows:\n{screen}"
        );
    }
}

// ---------------------------------------------------------------- 4. kill, dead, errors

#[test]
fn kill_dead_unknown_duplicate_and_invalid_names() {
    let Some(p) = Peers::new("life") else {
        return;
    };
    p.spawn("w1", SHELL);
    p.spawn("w2", SHELL);
    p.spawn("w3", SHELL);
    // Shares w2's prefix: liveness must match tmux session names exactly.
    p.spawn("w2-b", SHELL);

    // peer kill: gone from the list, killed with --all, mailbox left.
    let out = p.ok("lead", &["peer", "kill", "w1"]);
    assert!(out.contains("w1"), "{out}");
    let list = p.ok("lead", &["peer", "list"]);
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some("w1")),
        "{list}"
    );
    let list = p.json("lead", &["peer", "list", "--json"]);
    assert!(entry(&list, "w1").is_none(), "{list}");
    let all = p.json("lead", &["peer", "list", "--all", "--json"]);
    let w1 = entry(&all, "w1").unwrap_or_else(|| panic!("{all}"));
    assert_eq!(w1["status"], "killed", "{w1}");
    assert_eq!(w1["mailbox"], "left", "{w1}");
    let sessions = p.json("lead", &["list", "--all", "--json"]);
    let s = entry(&sessions, "w1").unwrap_or_else(|| panic!("{sessions}"));
    assert_eq!(s["state"], "left", "{s}");
    assert!(!p.tmux(&["has-session", "-t", "=w1"]).status.success());

    // A tmux session killed from outside shows dead, in the list and status.
    let k = p.tmux(&["kill-session", "-t", "=w2"]);
    assert!(k.status.success(), "{}", stderr_of(&k));
    let list = p.json("lead", &["peer", "list", "--json"]);
    assert_eq!(entry(&list, "w2").expect("w2 listed")["status"], "dead");
    assert_eq!(entry(&list, "w3").expect("w3 listed")["status"], "alive");
    assert_eq!(
        entry(&list, "w2-b").expect("w2-b listed")["status"],
        "alive"
    );
    let table = p.ok("lead", &["peer", "list"]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("w2"))
        .unwrap_or_else(|| panic!("w2 not in:\n{table}"));
    assert_eq!(row.split_whitespace().nth(1), Some("dead"), "{table}");
    let st = p.json("lead", &["peer", "status", "w2", "--json"]);
    assert_eq!(st["status"], "dead", "{st}");
    let st = p.ok("lead", &["peer", "status", "w2"]);
    assert!(st.lines().any(|l| l == "status: dead"), "{st}");

    // Unknown peer: exit 1, one line.
    let err = fails_with(&p.run("lead", &["peer", "status", "nope"]), 1);
    assert!(err.contains("nope"), "{err}");

    // A name already alive is refused, and the running peer is untouched.
    let pid_before = p.json("lead", &["peer", "status", "w3", "--json"])["pid"].clone();
    let err = fails_with(&p.run("lead", &["peer", "spawn", "w3", "--cmd", "bash"]), 1);
    assert!(
        err.contains("w3") && err.contains("already running"),
        "{err}"
    );
    let st = p.json("lead", &["peer", "status", "w3", "--json"]);
    assert_eq!(st["status"], "alive", "{st}");
    assert_eq!(st["pid"], pid_before, "{st}");

    // An invalid name is a usage error (exit 2), with nothing recorded.
    for bad in ["Bad_Name", "-w", ""] {
        let args = ["peer", "spawn", "--cmd", "bash", "--", bad];
        let err = fails_with(&p.run("lead", &args), 2);
        assert!(err.contains("name"), "{err}");
    }
    let all = p.json("lead", &["peer", "list", "--all", "--json"]);
    assert_eq!(all.as_array().map(Vec::len), Some(4), "{all}");

    // A dead peer's name can be spawned again.
    p.spawn("w2", SHELL);
    let st = p.json("lead", &["peer", "status", "w2", "--json"]);
    assert_eq!(st["status"], "alive", "{st}");
}

// ---------------------------------------------------------------- 5. default server untouched

#[test]
fn users_default_tmux_server_is_untouched() {
    let Some(p) = Peers::new("default") else {
        return;
    };
    let snapshot = || {
        let o = tmux_on(None, &["ls"]);
        (o.status.code(), o.stdout, o.stderr)
    };
    let before = snapshot();

    p.spawn("u1", SHELL);
    p.spawn("u2", SHELL);
    p.wait_prompt("u1");
    p.send_keys("u1", "echo marker-u1");
    p.read_until("u1", |s| s.lines().any(|l| l == "marker-u1"));
    p.ok("lead", &["peer", "status", "u1"]);
    p.ok("lead", &["peer", "list"]);
    // The peers do live on our own socket.
    let ours = p.tmux(&["ls", "-F", "#{session_name}"]);
    let ours = String::from_utf8_lossy(&ours.stdout).into_owned();
    assert!(ours.lines().any(|l| l == "u1"), "{ours}");
    assert!(ours.lines().any(|l| l == "u2"), "{ours}");

    // Not on the default one, whether or not a server runs there.
    let mid = tmux_on(None, &["ls", "-F", "#{session_name}"]);
    let names = String::from_utf8_lossy(&mid.stdout).into_owned();
    assert!(
        !names.lines().any(|l| l == "u1" || l == "u2"),
        "peers leaked onto the default server:\n{names}"
    );

    p.ok("lead", &["peer", "kill", "u1"]);
    let k = p.tmux(&["kill-session", "-t", "=u2"]);
    assert!(k.status.success(), "{}", stderr_of(&k));
    p.ok("lead", &["peer", "list", "--all"]);
    drop(p);

    let after = snapshot();
    assert_eq!(
        before,
        after,
        "default server changed: before {:?} / after {:?}",
        String::from_utf8_lossy(&before.2),
        String::from_utf8_lossy(&after.2)
    );
}

// ---------------------------------------------------------------- 6. scripted fake agent

/// A fake agent CLI: its own monitor; answers `question: X` with `answer: X`
/// to whoever asked.
const FAKE_AGENT: &str = r#"#!/bin/sh
inter-session inbox watch --pace off | while IFS= read -r line; do
  case "$line" in
    '[inter-session msg='*) ;;
    *) continue ;;
  esac
  text=${line#*\] }
  from=${line#*from=\"}
  from=${from%%\"*}
  case "$text" in
    'question: '*)
      inter-session mail send --to "$from" --text "answer: ${text#question: }" ;;
  esac
done
"#;

#[test]
fn scripted_agent_answers_three_turns_over_mail() {
    let Some(p) = Peers::new("agent") else {
        return;
    };
    let script = write_file(p.tmp.path(), "agent.sh", FAKE_AGENT.as_bytes());
    let mut lead = p.monitor("lead", &["--name", "lead"]);
    p.wait_online("lead");

    let cmd = format!("sh {}", script.display());
    p.spawn("agent", &cmd);

    for q in ["one", "2 + 2?", "what's \"three\"; $HOME"] {
        let out = p.ok(
            "lead",
            &[
                "mail",
                "send",
                "--to",
                "agent",
                "--text",
                &format!("question: {q}"),
            ],
        );
        assert!(out.contains("-> agent ("), "{out}");
        let want = format!("answer: {q}");
        let line = lead.until(WAIT, |l| l.starts_with("[inter-session msg="));
        assert!(
            msg_from(&line, "agent", &want).is_some(),
            "want {want:?} from agent, got {line:?}"
        );
    }
    let st = p.json("lead", &["peer", "status", "agent", "--json"]);
    assert_eq!(st["status"], "alive", "{st}");
    assert_eq!(st["mailbox"], "online", "{st}");
    assert_eq!(st["pending"], 0, "{st}");
}

// ---------------------------------------------------------------- 7. status / list JSON

#[test]
fn status_and_list_json_fields() {
    let Some(p) = Peers::new("json") else {
        return;
    };
    p.spawn("w1", SHELL);
    p.wait_prompt("w1");

    let st = p.json("lead", &["peer", "status", "w1", "--json"]);
    assert_eq!(st["name"], "w1", "{st}");
    assert_eq!(st["status"], "alive", "{st}");
    assert_eq!(st["command"], "bash", "{st}");
    let pid = st["pid"].as_i64().unwrap_or_else(|| panic!("pid: {st}"));
    assert!(pid > 1, "{st}");
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "{st}");
    assert_eq!(st["mailbox"], "offline", "{st}");
    assert_eq!(st["pending"], 0, "{st}");

    let list = p.json("lead", &["peer", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let w1 = entry(&list, "w1").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(w1["status"], "alive", "{w1}");
    assert_eq!(w1["command"], SHELL, "{w1}");

    // Pending mail shows in both.
    p.ok(
        "lead",
        &[
            "--from", "lead", "mail", "send", "--to", "w1", "--text", "x",
        ],
    );
    let st = p.json("lead", &["peer", "status", "w1", "--json"]);
    assert_eq!(st["pending"], 1, "{st}");
    let list = p.json("lead", &["peer", "list", "--json"]);
    assert_eq!(entry(&list, "w1").expect("w1")["pending"], 1, "{list}");
}

// ---------------------------------------------------------------- --prompt, --cwd, --lines

#[test]
fn prompt_is_typed_once_ready_in_the_given_folder() {
    let Some(p) = Peers::new("prompt") else {
        return;
    };
    let dir = p.tmp.path().join("work dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let dir = std::fs::canonicalize(&dir).expect("canonicalize");
    let dir_text = dir.display().to_string();
    p.ok(
        "lead",
        &[
            "peer",
            "spawn",
            "w1",
            "--cmd",
            SHELL,
            "--cwd",
            &dir_text,
            "--prompt",
            "echo \"prompted in $(pwd)\"",
        ],
    );
    let want = format!("prompted in {dir_text}");
    let screen = p.read_until("w1", |s| s.lines().any(|l| l == want));
    // Typed once.
    let typed = screen
        .lines()
        .filter(|l| l.ends_with("echo \"prompted in $(pwd)\""))
        .count();
    assert_eq!(typed, 1, "{screen}");
    let st = p.json("lead", &["peer", "status", "w1", "--json"]);
    assert_eq!(st["cwd"], dir_text.as_str(), "{st}");

    // --lines N: at most the last N lines.
    let out = p.ok("lead", &["peer", "read", "w1", "--lines", "2"]);
    assert!(
        (1..=2).contains(&out.lines().count()),
        "want at most 2 lines, got {out:?}"
    );
    assert!(
        screen.ends_with(&out),
        "{out:?} is not the tail of {screen:?}"
    );
}

// ---------------------------------------------------------------- 8. missing tmux

#[test]
fn missing_tmux_is_one_clear_line() {
    let p = Peers::without_tmux("notmux");
    let empty = p.tmp.path().join("empty-bin");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = p
        .cmd("lead")
        .args(["peer", "spawn", "x", "--cmd", "bash"])
        .env("PATH", &empty)
        .stdin(Stdio::null())
        .output()
        .expect("run inter-session by absolute path");
    let err = fails_with(&out, 1);
    assert!(
        err.contains("tmux") && err.contains("install"),
        "no install hint: {err}"
    );
    // Nothing was recorded.
    let all = p.json("lead", &["peer", "list", "--all", "--json"]);
    assert_eq!(all, Value::Array(vec![]), "{all}");
}
