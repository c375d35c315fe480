//! The plugin's hooks inside the real Claude Code (SPEC §9, issue 20): the
//! pinned CLI runs `claude -p --plugin-dir plugin` against a scripted model
//! on loopback (`support/fake_model.rs`), so `plugin/hooks/hooks.json` runs
//! `inter-session hook claude <Event>` as Claude Code runs it, and the request
//! bodies the fake model records are the evidence of what the model was shown.
//!
//! What each test proves, in the real host:
//! - `post_tool_use_injects_mail_sent_during_a_tool_call`: the agent's Bash
//!   `inbox watch --name cc1 --window 1` registers cc1 under
//!   `claude:$CLAUDE_CODE_SESSION_ID` and leaves it offline; mail sent while
//!   a later Bash call runs is in the very next request, after that call's
//!   `tool_result`, as `PostToolUse:Bash hook additional context: <line>`,
//!   once in the whole conversation; its receipt is `hook:claude:PostToolUse`.
//! - `session_start_injects_pending_mail`: `claude -p --session-id <uuid>`
//!   for a mailbox registered under `claude:<uuid>` shows, in its first
//!   request, `SessionStart hook additional context: <status line>\n<line>`
//!   (the head of the system-role message that holds the environment);
//!   receipt `hook:claude:SessionStart`; nothing is left for `inbox check`.
//! - `stop_never_marks_mail_the_host_drops`: mail keeps coming (sent by
//!   another process while the model answers); each Stop blocks with what
//!   is pending, 8 blocks in a row and never a 9th (the host's cap; it
//!   says "blocked the turn from ending 9 consecutive times" when it drops
//!   one); block k carries exactly the mail sent during request k-1, framed
//!   `Stop hook feedback:\n[<command>]: \n<lines>`; every message marked
//!   `hook:claude:Stop` is shown exactly once, every other one never and is
//!   still pending, and `inbox check` as that session prints exactly those.
//! - `hooks_stay_quiet_while_a_monitor_delivers`: with the model's Monitor
//!   running `inbox watch --name cc4 --window 600`, a paced burst of 30 is
//!   still pending when PostToolUse and Stop run; every message reaches the
//!   model once, in a monitor `<event>`, receipt `monitor`, and no hook
//!   context or Stop feedback carries mail.
//! - `file_changed_under_plain_p_leaves_mail_to_the_next_hook`: the send
//!   rings the door and Claude Code runs FileChanged (seen by a hook of our
//!   own beside the plugin's) during a tool call; under plain `-p` the host
//!   drops an asyncRewake hook's exit 2, so the plugin's hook must leave the
//!   mail pending: it is shown once, by PostToolUse, and receipted so.
//! - `a_hook_killed_before_it_printed_leaves_the_mail_to_the_next_path`: a
//!   plugin copy whose PostToolUse hook is SIGKILLed before it can print
//!   (its input held open); the mail sent during the tool call is not in the
//!   next request, and the Stop hook hands it over, once (receipt
//!   `hook:claude:Stop`).
//! - `claude_asks_codex_and_codex_replies` (across hosts): `claude -p`'s
//!   Bash `mail ask --to cx` reaches a real Codex 0.171.0 session through its
//!   listening Stop hook (`hook codex Stop --wait`); Codex's scripted model
//!   replies from its shell (`mail reply`, attributed to `cx` through
//!   `CODEX_THREAD_ID`); the answer is the ask's output; history shows
//!   cc-ask → cx (via `hook:codex:Stop`) and cx → cc-ask (via `ask`).
//!
//! How Claude Code 2.1.332 frames hook output in the request body (measured
//! here): `additionalContext` becomes a text "<Event>[:<Tool>] hook additional
//! context: <text>" in a `system`-role entry of `messages` (PostToolUse adds
//! the tool name: `PostToolUse:Bash`); SessionStart's is prepended to the
//! environment block. A Stop hook's JSON `{"decision":"block","reason":R}`
//! shows R twice (a user `<system-reminder>` "Stop hook feedback:\nR" and a
//! system entry "Stop hook blocking error from command: \"<cmd>\": R");
//! exit 2 shows its stderr once, as "Stop hook feedback:\n[<cmd>]: <stderr>"
//! plus "This hook comes from the <plugin> plugin.", which is why the hook
//! blocks that way. Under plain `-p`, FileChanged runs (during a tool call
//! too) but its exit-2 stderr reaches no request; with `--input-format
//! stream-json` it arrives as a system entry "Stop hook blocking error from
//! command \"FileChanged\": <stderr>".
//!
//! The CLI comes from support/needs.rs (`claude_code()`: the pinned npm
//! package, installed into `target/claude-code` when missing; without npm
//! each test skips loudly). Each test takes a few seconds of real time.

#[path = "support/codex.rs"]
mod codex;
#[path = "support/fake_codex.rs"]
mod fake_codex;
#[path = "support/fake_model.rs"]
mod fake_model;
mod support;

use fake_model::*;
use support::*;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plugin_dir() -> PathBuf {
    root().join("plugin")
}

// ---------------------------------------------------------------------------
// The binary against a data folder (usable from a script's closure).

fn run_at(data: &Path, key: &str, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAUDE") || k.starts_with("INTER_SESSION") {
            c.env_remove(k);
        }
    }
    c.env("INTER_SESSION_DATA_DIR", data)
        .env("INTER_SESSION_KEY", key)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run inter-session")
}

/// Send `text` to `to` as bob, from a process of its own; the message id.
fn send_at(data: &Path, to: &str, text: &str) -> String {
    let out = run_at(
        data,
        "bob-key",
        &["--from", "bob", "mail", "send", "--to", to, "--text", text],
    );
    assert!(out.status.success(), "send failed: {out:?}");
    sent_id(&String::from_utf8_lossy(&out.stdout))
}

/// `name`'s row in `list --json --all` (Null if absent).
fn session_row(data: &Path, name: &str) -> serde_json::Value {
    let out = run_at(data, "probe", &["list", "--json", "--all"]);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_default()
}

fn wait_state(data: &Path, name: &str, state: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if session_row(data, name)["state"] == state {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// How message `id` reached its reader: `mail status --json`'s
/// `delivered_via`, or "pending".
fn receipt(data: &Path, id: &str) -> String {
    let out = run_at(
        data,
        "probe",
        &["--from", "probe", "mail", "status", id, "--json"],
    );
    assert!(out.status.success(), "mail status {id}: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("mail status --json");
    let row = &v.as_array().expect("an array")[0];
    match row["delivered_via"].as_str() {
        Some(via) => via.to_string(),
        None => {
            assert_eq!(row["status"], "pending", "{row}");
            "pending".to_string()
        }
    }
}

/// `history --json` rows of everything sent to `name`, as bob sees them.
fn history_to(data: &Path, name: &str) -> Vec<serde_json::Value> {
    let out = run_at(
        data,
        "bob-key",
        &[
            "--from", "bob", "history", "--json", "--with", name, "--limit", "1000",
        ],
    );
    assert!(out.status.success(), "history: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history --json");
    v.as_array().expect("an array").clone()
}

/// A fresh random UUID (what `--session-id` takes).
fn uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("a uuid from the kernel")
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------
// The real Claude Code, with the plugin, as a child process.

struct Claude {
    child: Child,
    dir: PathBuf,
}

impl Claude {
    /// `claude -p <prompt> --plugin-dir plugin` in `dir/work` with HOME
    /// `dir/home`, talking to `model`, with the built binary on PATH and
    /// `data` as the data folder.
    fn spawn(
        bin: &Path,
        dir: &Path,
        data: &Path,
        model: &FakeModel,
        prompt: &str,
        extra: &[&str],
    ) -> Claude {
        Claude::spawn_with(bin, dir, data, model, prompt, extra, &plugin_dir())
    }

    /// `spawn`, with the plugin from `plugin`.
    fn spawn_with(
        bin: &Path,
        dir: &Path,
        data: &Path,
        model: &FakeModel,
        prompt: &str,
        extra: &[&str],
        plugin: &Path,
    ) -> Claude {
        let home = dir.join("home");
        let work = dir.join("work");
        fs::create_dir_all(&home).expect("home");
        fs::create_dir_all(&work).expect("work");
        let scratch = dir.join("tmp");
        fs::create_dir_all(&scratch).expect("tmp");
        fs::set_permissions(
            &scratch,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod tmp");
        fs::write(
            home.join(".claude.json"),
            r#"{"hasCompletedOnboarding": true}"#,
        )
        .expect(".claude.json");
        let bin_dir = Path::new(BIN).parent().expect("bin dir");
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("SHELL", "/bin/bash")
            .env("LANG", "C.UTF-8")
            .env("ANTHROPIC_BASE_URL", model.base_url())
            .env("ANTHROPIC_API_KEY", "test")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_TMPDIR", &scratch)
            .env("INTER_SESSION_DATA_DIR", data)
            // The plugin's launcher runs this build, whatever else is on PATH.
            .env("INTER_SESSION_BIN", BIN)
            .current_dir(&work)
            .args(["-p", prompt, "--allowedTools", "Bash,Monitor,ToolSearch"])
            .args(["--output-format", "stream-json", "--verbose"])
            .arg("--plugin-dir")
            .arg(plugin)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("claude.stdout")).expect("stdout file"))
            .stderr(fs::File::create(dir.join("claude.stderr")).expect("stderr file"));
        cmd.process_group(0);
        let child = cmd.spawn().expect("spawn claude");
        Claude {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// Claude Code's stream-json lines so far.
    fn stream(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.join("claude.stdout"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Claude Code's session id, from the `init` line of its stream-json.
    fn session_id(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self
                .stream()
                .into_iter()
                .find(|v| v["type"] == "system" && v["subtype"] == "init")
            {
                return v["session_id"].as_str().expect("session_id").to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no init line from claude\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of its stdout and stderr, for failure messages.
    fn output(&self) -> String {
        let tail = |name: &str| {
            let s = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let n = s.chars().count();
            s.chars().skip(n.saturating_sub(6000)).collect::<String>()
        };
        format!(
            "claude stdout (end):\n{}\nclaude stderr (end):\n{}",
            tail("claude.stdout"),
            tail("claude.stderr")
        )
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// SIGTERM to Claude Code alone and wait; SIGKILL to its group after 10 s.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            // SAFETY: as above, its process group.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for Claude {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-self.pid(), libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// What the model was shown.

/// Everything a request shows the model: the system prompt and every text of
/// its messages.
fn shown(r: &Request) -> String {
    format!("{}\n{}", r.system_text(), r.transcript())
}

/// Wait for a main request satisfying `pred`, failing with everything the
/// model was shown and Claude Code's output.
fn expect_request(
    model: &FakeModel,
    claude: &Claude,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Request) -> bool,
) -> Request {
    model.wait_for(timeout, pred).unwrap_or_else(|| {
        panic!(
            "{what}: no such request to the model within {timeout:?}\n{}\n{}",
            model.dump(),
            claude.output()
        )
    })
}

/// Every line of every `<event>…</event>` (a monitor's notification) in
/// the request's messages, with Claude Code's `&lt;` `&gt;` `&amp;` undone.
fn events(req: &Request) -> Vec<String> {
    let text = req.transcript();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<event>") {
        rest = &rest[start + "<event>".len()..];
        let end = rest.find("</event>").unwrap_or(rest.len());
        for line in rest[..end].lines() {
            out.push(
                line.replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            );
        }
        rest = &rest[end..];
    }
    out
}

/// How often `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// `needle` is in no request more than once, and in the last one exactly
/// once: requests carry the whole conversation, so the model was shown it
/// once, and it stayed.
fn assert_shown_once(model: &FakeModel, needle: &str) {
    let requests = model.main_requests();
    for r in &requests {
        assert!(
            count(&shown(r), needle) <= 1,
            "{needle:?} shown {} times in request {}\n{}",
            count(&shown(r), needle),
            r.index,
            model.dump()
        );
    }
    let last = requests.last().expect("a request");
    assert_eq!(
        count(&shown(last), needle),
        1,
        "{needle:?} not shown exactly once in the last request\n{}",
        model.dump()
    );
}

/// `needle` is in no request at all.
fn assert_never_shown(model: &FakeModel, needle: &str) {
    for r in model.main_requests() {
        assert_eq!(
            count(&shown(&r), needle),
            0,
            "{needle:?} was shown in request {}\n{}",
            r.index,
            model.dump()
        );
    }
}

/// The Bash call that signals it runs (creates `started`) and waits until
/// the test creates `go`.
fn waiting_call(started: &Path, go: &Path) -> Turn {
    Turn::bash(&format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done; echo go seen",
        started.display(),
        go.display()
    ))
}

/// Wait until the waiting call runs (its `started` file exists).
fn wait_started(started: &Path, model: &FakeModel, claude: &mut Claude) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(
            Instant::now() < deadline && claude.running(),
            "the waiting tool call never started\n{}\n{}",
            model.dump(),
            claude.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The message line bob's `text` makes (SPEC §4).
fn bob_line(id: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"bob\"] {text}")
}

/// Whether some descendant of process `root` runs a command line holding
/// `needle` (a hook Claude Code started, say).
fn running_under(root: i32, needle: &str) -> bool {
    let mut parent = std::collections::HashMap::new();
    let mut matching = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: i32 = after
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(needle)
        {
            matching.push(pid);
        }
    }
    matching.into_iter().any(|mut pid| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&pp) if pp == root => return true,
                Some(&pp) if pp > 1 => pid = pp,
                _ => return false,
            }
        }
        false
    })
}

// ---------------------------------------------------------------------------

#[test]
fn post_tool_use_injects_mail_sent_during_a_tool_call() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    env.ok("bob-key", &["--from", "bob", "status"]);
    let started = env.tmp.path().join("tool-started");
    let go = env.tmp.path().join("go");

    // The agent registers cc1 under Claude Code's session key (a monitor
    // whose window is over at once), then runs a tool that waits.
    let model = FakeModel::start(Script::steps(vec![
        step(Turn::bash(
            "inter-session inbox watch --name cc1 --window 1",
        )),
        step(waiting_call(&started, &go)),
    ]));
    let t0 = Instant::now();
    let mut claude = Claude::spawn(&bin, env.tmp.path(), &data, &model, "register, wait", &[]);
    let sid = claude.session_id();
    wait_started(&started, &model, &mut claude);
    let registered = expect_request(&model, &claude, Duration::from_secs(5), "watch", |r| {
        r.index == 1
    });
    assert!(
        registered
            .last_tool_result()
            .contains("watch window over; re-arm the monitor"),
        "{}",
        registered.new_text()
    );
    let row = session_row(&data, "cc1");
    assert_eq!(row["state"], "offline", "{row}");
    assert_eq!(
        env.sql("select session_key from sessions where name = 'cc1'"),
        format!("claude:{sid}"),
        "cc1 is not under CLAUDE_CODE_SESSION_ID's key"
    );

    // Mail comes while the tool runs; then the tool ends.
    let text = "sent during the tool call";
    let id = send_at(&data, "cc1", text);
    let line = bob_line(&id, text);
    fs::write(&go, "").expect("create go");

    // The request right after the tool's result carries it, framed by the host.
    let next = expect_request(&model, &claude, Duration::from_secs(60), "context", |r| {
        r.index == 2
    });
    assert_eq!(next.last_tool_result(), "go seen");
    let framed = format!("PostToolUse:Bash hook additional context: {line}");
    assert!(
        next.new_text().contains(&framed),
        "the request after the tool_result lacks {framed:?}:\n{}",
        next.new_text()
    );
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}",
        claude.output()
    );
    assert_shown_once(&model, &line);
    assert_eq!(receipt(&data, &id), "hook:claude:PostToolUse");
    let rows = history_to(&data, "cc1");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["delivered_via"], "hook:claude:PostToolUse");
    eprintln!("post_tool_use: shown in request 2 after {:?}", t0.elapsed());
}

#[test]
fn session_start_injects_pending_mail() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    // cc2 registered under the key Claude Code will have, and offline.
    let sid = uuid();
    let key = format!("claude:{sid}");
    let out = env.ok(&key, &["inbox", "watch", "--name", "cc2", "--window", "1"]);
    assert!(out.contains("watch window over"), "{out}");
    assert_eq!(session_row(&data, "cc2")["state"], "offline");
    env.ok("bob-key", &["--from", "bob", "status"]);
    let text = "waiting for you";
    let id = send_at(&data, "cc2", text);
    let line = bob_line(&id, text);

    let model = FakeModel::start(Script::steps(vec![]));
    let mut claude = Claude::spawn(
        &bin,
        env.tmp.path(),
        &data,
        &model,
        "hello",
        &["--session-id", &sid],
    );
    assert_eq!(claude.session_id(), sid);
    // The first request the model sees holds the status line and the mail.
    let first = expect_request(&model, &claude, Duration::from_secs(60), "first", |r| {
        r.index == 0
    });
    let status = "[inter-session] this session is connected as 'cc2' with no monitor \
                  running (hooks hand over the mail); 1 message(s) pending.";
    let framed = format!("SessionStart hook additional context: {status}\n{line}\n");
    assert!(
        shown(&first).contains(&framed),
        "the first request lacks {framed:?}\n{}",
        model.dump()
    );
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}",
        claude.output()
    );
    assert_shown_once(&model, &line);
    assert_eq!(receipt(&data, &id), "hook:claude:SessionStart");
    // Nothing left for a later reader.
    let out = env.ok(&key, &["inbox", "check"]);
    assert_eq!(out, "", "inbox check after SessionStart delivered");
}

#[test]
fn stop_never_marks_mail_the_host_drops() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    let sid = uuid();
    let key = format!("claude:{sid}");
    env.ok(&key, &["inbox", "watch", "--name", "cc3", "--window", "1"]);
    env.ok("bob-key", &["--from", "bob", "status"]);

    // Each time it is asked, the model first has bob send more mail (from a
    // process of its own), then ends its turn: mail is pending at every
    // Stop, so the hook blocks until the host's cap, and the last two
    // messages come when no block can carry them.
    let plan = [2usize, 1, 1, 1, 1, 1, 1, 2, 2];
    let sent = Arc::new(Mutex::new(Vec::<(usize, String, String)>::new()));
    let s = Arc::clone(&sent);
    let d = data.clone();
    let model = FakeModel::start(Script::new(move |r| {
        let mut s = s.lock().expect("sent");
        for _ in 0..plan.get(r.index).copied().unwrap_or(0) {
            let text = format!("mail {:02}", s.len());
            let id = send_at(&d, "cc3", &text);
            s.push((r.index, id, text));
        }
        Turn::end(&format!("ok {}", r.index))
    }));
    let t0 = Instant::now();
    let mut claude = Claude::spawn(
        &bin,
        env.tmp.path(),
        &data,
        &model,
        "hello",
        &["--session-id", &sid],
    );
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}\n{}",
        model.dump(),
        claude.output()
    );
    let sent = sent.lock().expect("sent").clone();
    assert_eq!(sent.len(), 12, "the script ran out early\n{}", model.dump());

    // Every request after the first follows one Stop block: 8, the cap,
    // and the host never had to override a 9th.
    let requests = model.main_requests();
    let blocks = requests.len() - 1;
    assert_eq!(blocks, 8, "Stop blocks in a row\n{}", model.dump());
    let overridden: Vec<_> = claude
        .stream()
        .into_iter()
        .filter(|v| v.to_string().contains("consecutive times"))
        .collect();
    assert!(
        overridden.is_empty(),
        "the host overrode a block: {overridden:?}"
    );
    let last = requests.last().expect("a request");
    assert_eq!(
        count(&shown(last), "Stop hook feedback:"),
        blocks,
        "{}",
        model.dump()
    );

    // Block k carries exactly the mail sent while the model answered
    // request k-1, framed by the host as the hook's feedback.
    let launcher = plugin_dir().join("bin").join("inter-session");
    let lines_of = |k: usize| -> Vec<String> {
        sent.iter()
            .filter(|(at, _, _)| *at == k)
            .map(|(_, id, text)| bob_line(id, text))
            .collect()
    };
    for (k, request) in requests.iter().enumerate().skip(1) {
        let framed = format!(
            "Stop hook feedback:\n[\"{}\" hook claude Stop]: \n{}\n",
            launcher.display(),
            lines_of(k - 1).join("\n")
        );
        assert!(
            request.new_text().contains(&framed),
            "request {k} lacks {framed:?}\n{}",
            model.dump()
        );
    }

    // Shown once each and marked by Stop, or never shown and still pending.
    let mut left = Vec::new();
    for (_, id, text) in &sent {
        let line = bob_line(id, text);
        match receipt(&data, id).as_str() {
            "hook:claude:Stop" => assert_shown_once(&model, &line),
            "pending" => {
                assert_never_shown(&model, &line);
                left.push(line);
            }
            other => panic!("{id} ({text}) delivered via {other}\n{}", model.dump()),
        }
    }
    assert_eq!(
        left,
        lines_of(blocks),
        "what is left is the mail sent after the last block"
    );

    // A later reader as that session gets exactly the rest, once.
    let out = env.ok(&key, &["inbox", "check"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), left);
    assert_eq!(env.ok(&key, &["inbox", "check"]), "");
    let rows = history_to(&data, "cc3");
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r["status"] != "pending"), "{rows:?}");
    eprintln!(
        "stop: {blocks} blocks, {} messages left to inbox check, in {:?}",
        left.len(),
        t0.elapsed()
    );
}

#[test]
fn hooks_stay_quiet_while_a_monitor_delivers() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    env.ok("bob-key", &["--from", "bob", "status"]);
    let started = env.tmp.path().join("tool-started");
    let go = env.tmp.path().join("go");
    let launcher = plugin_dir().join("bin").join("inter-session");

    // How much mail is still pending when the model is next asked after
    // the waiting call: then PostToolUse (and Stop) ran with mail pending
    // while the monitor was online.
    let pending_then = Arc::new(Mutex::new(None::<u64>));
    let p = Arc::clone(&pending_then);
    let d = data.clone();
    let d2 = data.clone();
    let model = FakeModel::start(Script::steps(vec![
        step(Turn::load_monitor()),
        step(Turn::monitor(
            &format!(
                "'{}' inbox watch --name cc4 --window 600",
                launcher.display()
            ),
            600_000,
        )),
        step_fn(move |_| {
            assert!(
                wait_state(&d, "cc4", "online", Duration::from_secs(30)),
                "the monitor never came online"
            );
            waiting_call(&started, &go)
        }),
        step_fn(move |_| {
            *p.lock().expect("pending") = session_row(&d2, "cc4")["pending"].as_u64();
            Turn::end("noted")
        }),
    ]));
    let started = env.tmp.path().join("tool-started");
    let go = env.tmp.path().join("go");
    let t0 = Instant::now();
    let mut claude = Claude::spawn(&bin, env.tmp.path(), &data, &model, "connect as cc4", &[]);
    wait_started(&started, &model, &mut claude);
    assert_eq!(session_row(&data, "cc4")["state"], "online");

    // A burst bigger than one paced batch (≤ 3,000 units, a second apart
    // under CLAUDECODE=1), so mail is still pending when the tool ends.
    let body = "x".repeat(400);
    let ids: Vec<String> = (0..30)
        .map(|i| send_at(&data, "cc4", &format!("burst {i:02} {body}")))
        .collect();
    let lines: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| bob_line(id, &format!("burst {i:02} {body}")))
        .collect();
    fs::write(&go, "").expect("create go");

    let all = model.wait_for(Duration::from_secs(60), |r| {
        let s = shown(r);
        lines.iter().all(|l| s.contains(l.as_str()))
    });
    let Some(all) = all else {
        panic!(
            "not every message reached the model\n{}\n{}",
            model.dump(),
            claude.output()
        );
    };
    let pending_then = pending_then.lock().expect("pending").to_owned();
    assert!(
        pending_then.is_some_and(|n| n > 0),
        "no mail was pending when the hooks ran ({pending_then:?}): this run proves nothing"
    );
    for (id, line) in ids.iter().zip(&lines) {
        assert_eq!(receipt(&data, id), "monitor", "{line}");
        assert_eq!(count(&shown(&all), line), 1, "{line}");
        assert_eq!(
            events(&all).iter().filter(|l| *l == line).count(),
            1,
            "{line} is not in one monitor event"
        );
        assert_shown_once(&model, line);
    }
    for r in model.main_requests() {
        let s = shown(&r);
        assert!(
            !s.contains("hook additional context: [inter-session msg=")
                && !s.contains("Stop hook feedback"),
            "a hook handed mail over while the monitor ran (request {})\n{}",
            r.index,
            model.dump()
        );
    }
    eprintln!(
        "monitor: {} pending when the hooks ran; all 30 shown by {:?}",
        pending_then.unwrap_or_default(),
        t0.elapsed()
    );
    claude.stop();
    assert!(wait_state(&data, "cc4", "offline", Duration::from_secs(15)));
}

#[test]
fn file_changed_under_plain_p_leaves_mail_to_the_next_hook() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    env.ok("bob-key", &["--from", "bob", "status"]);
    let started = env.tmp.path().join("tool-started");
    let go = env.tmp.path().join("go");
    // A FileChanged hook of our own beside the plugin's: it says when Claude
    // Code ran FileChanged for the door.
    let rang = env.tmp.path().join("file-changed-ran");
    let settings = serde_json::json!({"hooks": {"FileChanged": [{"hooks": [{
        "type": "command",
        "command": format!("cat > /dev/null; touch '{}'", rang.display()),
    }]}]}});

    let model = FakeModel::start(Script::steps(vec![
        step(Turn::bash(
            "inter-session inbox watch --name cc5 --window 1",
        )),
        step(waiting_call(&started, &go)),
    ]));
    let t0 = Instant::now();
    let mut claude = Claude::spawn(
        &bin,
        env.tmp.path(),
        &data,
        &model,
        "register, wait",
        &["--settings", &settings.to_string()],
    );
    wait_started(&started, &model, &mut claude);
    assert_eq!(session_row(&data, "cc5")["state"], "offline");

    // The send rings the door while the tool runs; the tool goes on until
    // the plugin's FileChanged hook has run and ended.
    let text = "rang while the tool ran";
    let id = send_at(&data, "cc5", text);
    let line = bob_line(&id, text);
    let pid = claude.pid();
    wait_until(
        "Claude Code to run FileChanged",
        Duration::from_secs(20),
        || rang.exists(),
    );
    wait_until(
        "the plugin's FileChanged hook to end",
        Duration::from_secs(20),
        || !running_under(pid, "hook claude FileChanged"),
    );
    fs::write(&go, "").expect("create go");
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}",
        claude.output()
    );
    // Under plain -p what an asyncRewake hook hands over reaches no one:
    // the mail must have waited for PostToolUse.
    let via = receipt(&data, &id);
    let times = model.last_main().map_or(0, |r| count(&shown(&r), &line));
    assert!(
        via == "hook:claude:PostToolUse" && times == 1,
        "{id} marked {via:?} and shown to the model {times} times\n{}",
        model.dump()
    );
    let next = expect_request(&model, &claude, Duration::from_secs(1), "context", |r| {
        r.index == 2
    });
    let framed = format!("PostToolUse:Bash hook additional context: {line}");
    assert!(
        next.new_text().contains(&framed),
        "the request after the tool_result lacks {framed:?}:\n{}",
        next.new_text()
    );
    assert_shown_once(&model, &line);
    eprintln!(
        "file_changed: left to PostToolUse, shown after {:?}",
        t0.elapsed()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A hook killed before it printed (its PostToolUse run never gets to
/// print: a wrapper holds its input open and SIGKILLs it) leaves the mail
/// pending; the next path (the Stop hook) hands it over, once, and the
/// receipt says so.
#[test]
fn a_hook_killed_before_it_printed_leaves_the_mail_to_the_next_path() {
    let Some(bin) = claude_code() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();
    env.ok("bob-key", &["--from", "bob", "status"]);
    let started = env.tmp.path().join("tool-started");
    let go = env.tmp.path().join("go");
    let killed = env.tmp.path().join("hook-killed");

    // The plugin, with PostToolUse run through the killing wrapper.
    let plugin = env.tmp.path().join("plugin");
    copy_dir(&plugin_dir(), &plugin);
    let wrapper = plugin.join("bin").join("killed-hook");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             f=\"$(dirname \"$0\")/input.fifo\"\n\
             rm -f \"$f\"; mkfifo \"$f\"\n\
             \"$(dirname \"$0\")/inter-session\" hook claude PostToolUse <\"$f\" >/dev/null 2>&1 &\n\
             hook=$!\n\
             exec 3>\"$f\"\n\
             sleep 0.3\n\
             kill -9 $hook\n\
             wait $hook\n\
             echo \"$?\" > '{k}'\n\
             exec 3>&-\n\
             rm -f \"$f\"\n\
             exit 0\n",
            k = killed.display()
        ),
    )
    .expect("wrapper");
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let hooks_path = plugin.join("hooks").join("hooks.json");
    let mut hooks: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&hooks_path).expect("hooks.json")).expect("json");
    hooks["hooks"]["PostToolUse"][0]["hooks"][0]["command"] =
        serde_json::json!("\"${CLAUDE_PLUGIN_ROOT}/bin/killed-hook\"");
    fs::write(&hooks_path, hooks.to_string()).expect("write hooks.json");

    let model = FakeModel::start(Script::steps(vec![
        step(Turn::bash(
            "inter-session inbox watch --name cc6 --window 1",
        )),
        step(waiting_call(&started, &go)),
        step(Turn::end("tool done")),
        step(Turn::end("mail seen")),
    ]));
    let mut claude = Claude::spawn_with(
        &bin,
        env.tmp.path(),
        &data,
        &model,
        "register, wait",
        &[],
        &plugin,
    );
    wait_started(&started, &model, &mut claude);
    let text = "outlives a killed hook";
    let id = send_at(&data, "cc6", text);
    let line = bob_line(&id, text);
    fs::write(&go, "").expect("create go");

    // The request after the tool's result: the killed hook handed nothing over.
    let next = expect_request(
        &model,
        &claude,
        Duration::from_secs(60),
        "after the tool",
        |r| r.index == 2,
    );
    assert_eq!(next.last_tool_result(), "go seen");
    assert!(!shown(&next).contains(&line), "{}", next.new_text());
    assert_eq!(
        fs::read_to_string(&killed).expect("the wrapper ran").trim(),
        "137",
        "the hook was killed by SIGKILL"
    );
    // The Stop hook hands it over when the model would stop.
    let stop = expect_request(
        &model,
        &claude,
        Duration::from_secs(60),
        "the Stop block",
        |r| r.index == 3,
    );
    assert!(shown(&stop).contains(&line), "{}", stop.new_text());
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}",
        claude.output()
    );
    assert_shown_once(&model, &line);
    assert_eq!(receipt(&data, &id), "hook:claude:Stop");
}

/// Across hosts: a `claude -p` session `mail ask`s a Codex session (hooks
/// from `hook codex`, its Stop listening with `--wait`), whose scripted
/// model answers with `mail reply` from its own shell: the answer comes back
/// as the ask's output, and history attributes both directions to the right
/// mailboxes.
#[test]
fn claude_asks_codex_and_codex_replies() {
    let Some(claude_bin) = claude_code() else {
        return;
    };
    let Some(codex_bin) = codex::codex() else {
        return;
    };
    let env = Env::new();
    let data = env.data.clone();

    // Codex: its first turn ends at once; its Stop hook listens for mail.
    // Shown the question, its model replies from its shell (its thread's
    // own mailbox, through CODEX_THREAD_ID), then ends.
    let reply_cmd = |req: &fake_codex::Request| -> fake_codex::Turn {
        let text = req.texts_of("user").join("\n");
        let id = text
            .split("msg=")
            .nth(1)
            .and_then(|rest| rest.split([' ', '"']).next())
            .unwrap_or("NO-ID")
            .to_string();
        fake_codex::Turn::exec(&format!(
            "{} mail reply {id} --text 'answer: 4'",
            codex::shell_quote(BIN)
        ))
    };
    let codex_model = fake_codex::FakeCodexModel::start(fake_codex::Script::steps(vec![
        fake_codex::step(fake_codex::Turn::end("ready")),
        fake_codex::step_fn(reply_cmd),
        fake_codex::step(fake_codex::Turn::end("replied")),
    ]));
    let home = codex::CodexHome::new(&codex_bin, &codex_model)
        .with("INTER_SESSION_DATA_DIR", &data.display().to_string());
    let bin = codex::shell_quote(BIN);
    home.write_hooks(&codex::CodexHome::hooks_doc(&[
        (
            "SessionStart",
            &format!("{bin} hook codex SessionStart --name cx"),
        ),
        ("Stop", &format!("{bin} hook codex Stop --wait 20s")),
    ]));
    home.trust_hooks();
    let codex_run = std::thread::spawn(move || {
        let run = home.exec("wait for questions", &[]);
        (run, home)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !wait_state(&data, "cx", "offline", Duration::from_millis(200)) {
        assert!(Instant::now() < deadline, "cx never registered");
    }

    // Claude: registers cc-ask, then asks cx and waits for the answer.
    let model = FakeModel::start(Script::steps(vec![
        step(Turn::bash(
            "inter-session inbox watch --name cc-ask --window 1",
        )),
        step(Turn::bash(
            "inter-session mail ask --to cx --timeout 60s --text 'question: what is 2+2?'",
        )),
        step(Turn::end("got it")),
    ]));
    let mut claude = Claude::spawn(&claude_bin, env.tmp.path(), &data, &model, "ask cx", &[]);
    let answered = expect_request(
        &model,
        &claude,
        Duration::from_secs(90),
        "the answer",
        |r| r.index == 2,
    );
    assert_eq!(answered.last_tool_result().trim(), "answer: 4");
    assert!(
        claude.wait_exit(Duration::from_secs(60)).is_some(),
        "claude -p did not end\n{}",
        claude.output()
    );
    let (run, _home) = codex_run.join().expect("the codex thread");
    assert!(run.output.status.success(), "{}", run.show());

    let out = run_at(&data, "probe", &["history", "--json", "--with", "cx"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .flat_map(|v: serde_json::Value| match v {
            serde_json::Value::Array(a) => a,
            other => vec![other],
        })
        .collect();
    let question = rows
        .iter()
        .find(|r| r["text"] == "question: what is 2+2?")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(question["sender"], "cc-ask");
    assert_eq!(question["recipient"], "cx");
    assert_eq!(question["delivered_via"], "hook:codex:Stop");
    let answer = rows
        .iter()
        .find(|r| r["text"] == "answer: 4")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(answer["sender"], "cx");
    assert_eq!(answer["recipient"], "cc-ask");
    assert_eq!(answer["delivered_via"], "ask");
}
