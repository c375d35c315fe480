//! Shared helpers for integration tests: a temp data folder, running the
//! real binary with a clean environment, and monitors as child processes
//! whose stdout lines are read with timeouts (never fixed sleeps).
//!
//! `Env` is a data folder plus the variables every command gets (e.g.
//! `INTER_SESSION_DATABASE_URL` for a PostgreSQL mailbox:
//! `Env::new().with(…)`); `env.monitor(key, args)` starts a monitor, and
//! `env.monitor_with(key)` builds one with extra environment, another
//! working folder or its stderr kept. What a test needs from the machine
//! (tmux, PostgreSQL, …) and how it skips without it: needs.rs.
#![allow(dead_code)]

mod needs;
pub use needs::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_inter-session");

/// A fresh data folder (0700) inside a temp dir, removed on drop.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    /// Set for every command after the clean-up (empty for `new`).
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        Env {
            tmp,
            data,
            vars: Vec::new(),
        }
    }

    /// Like `new`, with `vars` set for every command it runs (after the
    /// clean-up of inherited `INTER_SESSION*` variables), e.g.
    /// `INTER_SESSION_DATABASE_URL` for a PostgreSQL mailbox.
    pub fn with_vars(vars: &[(&str, &str)]) -> Env {
        vars.iter().fold(Env::new(), |env, (k, v)| env.with(k, v))
    }

    /// This `Env` with `name=value` set for every command it runs.
    pub fn with(mut self, name: &str, value: &str) -> Env {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// The value `with` gave `name`, if any.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A command for the binary with a clean environment: no Claude Code
    /// variables (the test itself may run inside Claude Code), the data
    /// folder set, and `key` as the session key.
    pub fn cmd(&self, key: &str) -> Command {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if ["CLAUDE", "INTER_SESSION", "CODEX_", "GEMINI_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                c.env_remove(k);
            }
        }
        c.env("INTER_SESSION_DATA_DIR", &self.data)
            .env("INTER_SESSION_KEY", key);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.current_dir(self.tmp.path());
        c
    }

    /// Run a command to completion with stdin closed.
    pub fn run(&self, key: &str, args: &[&str]) -> Output {
        self.cmd(key)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run inter-session")
    }

    /// Run and require exit 0; returns stdout.
    pub fn ok(&self, key: &str, args: &[&str]) -> String {
        let out = self.run(key, args);
        assert!(
            out.status.success(),
            "{args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `args` as `key` must exit with `code`; returns its stderr.
    pub fn fails(&self, key: &str, args: &[&str], code: i32) -> String {
        let out = self.run(key, args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err:?}");
        err
    }

    /// Send a direct message as `from` and return its id.
    /// Send as `from`, a script speaking for a session whose monitor the
    /// test may have started under another key: hence `--force` (without
    /// it, `--from` may not speak as a live session of another key; see
    /// tests/guards.rs).
    pub fn send(&self, from: &str, to: &str, text: &str) -> String {
        let out = self.ok(
            "sender",
            &[
                "--from", from, "--force", "mail", "send", "--to", to, "--text", text,
            ],
        );
        sent_id(&out)
    }

    /// Start a monitor for `key` with extra args; `--pace off` always.
    pub fn monitor(&self, key: &str, args: &[&str]) -> Monitor {
        self.monitor_with(key).args(args).spawn()
    }

    /// A monitor for `key` (`inbox watch --pace off`) to set up further:
    /// more arguments, environment, working folder, its stderr kept.
    pub fn monitor_with(&self, key: &str) -> MonitorBuilder<'_> {
        let mut cmd = self.cmd(key);
        cmd.args(["inbox", "watch", "--pace", "off"]);
        MonitorBuilder {
            env: self,
            cmd,
            keep_stderr: false,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.data.join("mailbox.db")
    }

    /// `sql` output, trimmed.
    pub fn sql(&self, q: &str) -> String {
        self.ok("sql", &["sql", q]).trim().to_string()
    }

    /// Block until `name` shows as online in `list --json`.
    pub fn wait_online(&self, name: &str) {
        self.wait_state(name, "online");
    }

    /// Block until `name` is in `state` in `list --all --json` (20 s at most).
    pub fn wait_state(&self, name: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run("probe", &["list", "--all", "--json"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
                let there = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| s["name"] == name && s["state"] == state);
                if there {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{name} never became {state}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A monitor being set up (`Env::monitor_with`).
pub struct MonitorBuilder<'a> {
    env: &'a Env,
    cmd: Command,
    keep_stderr: bool,
}

impl MonitorBuilder<'_> {
    pub fn args(mut self, args: &[&str]) -> Self {
        self.cmd.args(args);
        self
    }

    /// `name=value` in its environment.
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.cmd.env(name, value);
        self
    }

    /// Run in `dir` instead of the temp folder.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Keep its stderr in a file (`Monitor::stderr`) instead of the test's.
    pub fn keep_stderr(mut self) -> Self {
        self.keep_stderr = true;
        self
    }

    pub fn spawn(self) -> Monitor {
        if !self.keep_stderr {
            return Monitor::spawn(self.cmd);
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = self.env.tmp.path().join(format!(
            "monitor-{}.stderr",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).expect("stderr file");
        let mut m = Monitor::spawn_with(self.cmd, file.into());
        m.stderr_file = Some(path);
        m
    }
}

/// The id out of `sent <id> -> …`.
pub fn sent_id(out: &str) -> String {
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 26, "no id in {out:?}");
    id
}

/// A running monitor with its stdout lines arriving on a channel.
pub struct Monitor {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    stderr_file: Option<PathBuf>,
}

impl Monitor {
    /// Start `c` with stdin closed and its stderr the test's.
    pub fn spawn(c: Command) -> Monitor {
        Monitor::spawn_with(c, Stdio::inherit())
    }

    fn spawn_with(mut c: Command, stderr: Stdio) -> Monitor {
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = c.spawn().expect("spawn monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor {
            child,
            lines: rx,
            seen: Vec::new(),
            stderr_file: None,
        }
    }

    /// The next line, or None after `timeout` (or at end of output).
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// Require a next line within 10 s.
    pub fn line(&mut self) -> String {
        self.next_line(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no line; saw {:?}", self.seen))
    }

    /// Read lines until `pred` holds for one (returned), failing after `timeout`.
    pub fn until(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if pred(&l) => return l,
                Some(_) => {}
                None => panic!("line never came; saw {:?}", self.seen),
            }
        }
    }

    /// No further line within `quiet`.
    pub fn silent(&mut self, quiet: Duration) {
        if let Some(l) = self.next_line(quiet) {
            panic!("unexpected line: {l}");
        }
    }

    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }

    /// SIGTERM and wait for the exit code.
    pub fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("wait").code()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the process to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// All remaining lines until the process closes stdout.
    pub fn rest(&mut self, timeout: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.next_line(timeout) {
            out.push(l);
        }
        out
    }

    /// Wait for the exit (after a signal), then take every line still in
    /// the pipe: its exit code and those lines.
    pub fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let st = self.child.wait().expect("wait");
        (st.code(), self.rest(Duration::from_secs(5)))
    }

    /// What it wrote to stderr so far (`MonitorBuilder::keep_stderr`).
    pub fn stderr(&self) -> String {
        let path = self
            .stderr_file
            .as_ref()
            .expect("a monitor started with keep_stderr");
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kill(2) `sig` to a child of ours.
pub fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(pid, sig) };
}

/// Wait for `child` to exit by itself within `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Write bytes to a file in the temp dir and return its path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(bytes).expect("write");
    p
}

/// The `msg=<id>` of a monitor line.
pub fn line_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("[inter-session msg=")?;
    let end = rest.find([' ', ']'])?;
    Some(&rest[..end])
}

/// Poll `cond` every 10 ms until it holds; fail after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `cond` every 10 ms for up to 10 s.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    wait_until(what, Duration::from_secs(10), cond);
}

/// Spawn `c` with stdin closed and stdout/stderr piped (see `finish`).
pub fn spawn_piped(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inter-session")
}

/// Wait for a child of `spawn_piped` (killing it and failing the test after
/// `limit`): its output and how long the wait took.
pub fn finish(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("inter-session did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    let output = Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    };
    (output, took)
}

/// Run a command to completion (stdin closed), killing it and failing the
/// test if it takes over 15 s (a refused command must not start a monitor).
pub fn run_within(c: Command) -> Output {
    finish(spawn_piped(c), Duration::from_secs(15)).0
}

pub fn cmd_args(env: &Env, key: &str, args: &[&str]) -> Command {
    let mut c = env.cmd(key);
    c.args(args);
    c
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// Exactly one non-empty stderr line (returned).
pub fn one_stderr_line(out: &Output, what: &str) -> String {
    let err = stderr_of(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want exactly one stderr line, got {err:?}"
    );
    assert!(!lines[0].trim().is_empty(), "{what}: blank stderr line");
    lines[0].to_string()
}

/// A refused command: exit `code` (SPEC §5: 1 a runtime failure, 2 a usage
/// error), nothing on stdout, exactly one non-empty line on stderr (returned).
pub fn refused(out: &Output, code: i32, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: wrong exit; stderr {:?}; stdout {:?}",
        stderr_of(out),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout not empty: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    one_stderr_line(out, what)
}

/// What must not change when a command is refused, read through `sql` (so
/// on either backend): every table's row count, the history rows, the
/// highest seq, and each session's name, label and state.
pub fn snapshot(env: &Env) -> Vec<String> {
    [
        "select (select count(*) from sessions) || ' ' || (select count(*) from messages) \
         || ' ' || (select count(*) from deliveries) || ' ' || (select count(*) from blobs) \
         || ' ' || (select count(*) from project_labels) || ' ' || (select count(*) from peers) \
         || ' ' || (select count(*) from asks) || ' ' || (select count(*) from history) \
         || ' ' || (select coalesce(max(seq), 0) from messages)",
        "select name || ':' || label || ':' || state from sessions order by name",
    ]
    .iter()
    .map(|q| env.sql(q))
    .collect()
}

/// Run `c`: refused (see `refused`) with exit `code`, and `snapshot` of
/// the database the same before and after. Returns the stderr line.
pub fn assert_refused_by<S: PartialEq + std::fmt::Debug>(
    env: &Env,
    c: Command,
    code: i32,
    what: &str,
    snapshot: impl Fn(&Env) -> S,
) -> String {
    let before = snapshot(env);
    let line = refused(&run_within(c), code, what);
    assert_eq!(snapshot(env), before, "{what}: the database changed");
    line
}

/// `assert_refused_by` with support's `snapshot`.
pub fn assert_refused(env: &Env, c: Command, code: i32, what: &str) -> String {
    assert_refused_by(env, c, code, what, snapshot)
}

/// `history --json` as `from`, with extra flags.
pub fn history_json(env: &Env, from: &str, flags: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--from", from, "history", "--json"];
    all.extend(flags);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok("probe", &all)).expect("history --json is JSON");
    v.as_array().expect("history --json is an array").clone()
}

/// The `id`s of `history --json` rows.
pub fn ids_of(rows: &[serde_json::Value]) -> Vec<&str> {
    rows.iter().map(|r| r["id"].as_str().expect("id")).collect()
}

/// A small xorshift generator; the seed (from `var`, else the clock) is
/// printed so that a failure can be rerun.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(var: &str, what: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("{what}: {var}={seed}");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A ULID: 26 characters of Crockford base32 (no I, L, O, U), first ≤ '7'.
pub fn is_ulid(id: &str) -> bool {
    id.len() == 26
        && id
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
        && id.as_bytes()[0] <= b'7'
}

/// The PENDING cell of `name`'s row in the `list` table.
pub fn table_pending(table: &str, name: &str) -> String {
    let mut lines = table.lines();
    let header = lines.next().expect("list header");
    let col = header
        .find("PENDING")
        .unwrap_or_else(|| panic!("no PENDING column in {table:?}"));
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in {table:?}"));
    row.get(col..)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// `list --json` with `flags`.
pub fn list_json(env: &Env, flags: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["list", "--json"];
    args.extend(flags);
    let v: serde_json::Value =
        serde_json::from_str(&env.ok("probe", &args)).expect("list --json is JSON");
    v.as_array().expect("list --json is an array").clone()
}

/// `list --all --json`: every session, left ones too.
pub fn sessions(env: &Env) -> Vec<serde_json::Value> {
    list_json(env, &["--all"])
}

/// One session's row of `list --all --json`.
pub fn session(env: &Env, name: &str) -> serde_json::Value {
    sessions(env)
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no session {name} in list --all --json"))
}

/// Block until `name` is online with this monitor's pid: its claim is
/// committed (online alone is visible a moment earlier).
pub fn up(env: &Env, m: &Monitor, name: &str) {
    env.wait_online(name);
    let pid = m.child.id();
    wait_for(&format!("{name}'s claim by pid {pid}"), || {
        sessions(env)
            .iter()
            .any(|s| s["name"] == name && s["state"] == "online" && s["monitor_pid"] == pid)
    });
}

/// A monitor for `name` with session key `key`, its claim committed (`up`).
pub fn monitor_up(env: &Env, key: &str, name: &str) -> Monitor {
    let m = env.monitor(key, &["--name", name]);
    up(env, &m, name);
    m
}

/// Register a mailbox name without a monitor.
pub fn register(env: &Env, name: &str) {
    env.ok(name, &["--from", name, "status"]);
}

/// Send as `from` using `from` as the session key too; returns the id.
/// Like `Env::send`, as session key `from` (`--force` as there).
pub fn send_as(env: &Env, from: &str, to: &str, text: &str) -> String {
    sent_id(&env.ok(
        from,
        &[
            "--from", from, "--force", "mail", "send", "--to", to, "--text", text,
        ],
    ))
}

/// `--from <from> mail send --to <to> --text-file <file>` as session key `key`.
pub fn send_file_cmd(env: &Env, key: &str, from: &str, to: &str, file: &Path) -> Command {
    let mut c = env.cmd(key);
    c.args([
        "--from",
        from,
        "--force",
        "mail",
        "send",
        "--to",
        to,
        "--text-file",
    ])
    .arg(file);
    c
}

/// `send_as` with the body read from `file` (`--text-file`).
pub fn send_file_as(env: &Env, from: &str, to: &str, file: &Path) -> String {
    let out = run_within(send_file_cmd(env, from, from, to, file));
    assert!(
        out.status.success(),
        "send --text-file {} failed ({:?}): {}",
        file.display(),
        out.status,
        stderr_of(&out)
    );
    sent_id(&stdout_of(&out))
}

/// The text of a message line (after the header).
pub fn line_text(line: &str) -> &str {
    line.split_once("] ").map_or("", |(_, t)| t)
}

/// Rows of the `pending` view.
pub fn pending_count(env: &Env) -> usize {
    env.sql("select count(*) from pending")
        .parse()
        .expect("count")
}

/// The next line must be message `id`; returns the line.
pub fn expect_msg(m: &mut Monitor, id: &str) -> String {
    let l = m.line();
    assert_eq!(
        line_id(&l),
        Some(id),
        "expected message {id} next, got {l:?}"
    );
    l
}

/// Names mentioned in an error line (tokens of name characters).
pub fn name_tokens(line: &str) -> std::collections::BTreeSet<String> {
    line.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `PRAGMA integrity_check` of `db` in the stock sqlite3 shell must say
/// `ok`; true when it ran, false when the shell is missing (that part of
/// the test skipped loudly).
pub fn stock_integrity_check(db: &Path) -> bool {
    let Some(shell) = sqlite3_shell(Some("its stock sqlite3 integrity check")) else {
        return false;
    };
    let out = Command::new(shell)
        .arg(db)
        .arg("pragma integrity_check;")
        .output()
        .expect("run sqlite3");
    assert!(out.status.success(), "stock sqlite3: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "stock sqlite3 integrity_check"
    );
    true
}

/// A tmux server of a test's own (`tmux -L <sock>`; hand `sock` to the
/// binary as `INTER_SESSION_TMUX_SOCKET`), killed with every pane in it
/// when dropped, its socket file removed.
pub struct TmuxServer {
    pub sock: String,
}

impl TmuxServer {
    /// None (the test skipped loudly) when tmux is not installed.
    pub fn new(tag: &str) -> Option<TmuxServer> {
        have_tmux().then(|| TmuxServer::named(tag))
    }

    /// Without looking for tmux (for the test of a missing tmux).
    pub fn named(tag: &str) -> TmuxServer {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TmuxServer {
            sock: format!("is-test-{}-{n}-{tag}", std::process::id()),
        }
    }

    /// tmux itself on this server.
    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        // Not `self.tmux`: that fails where tmux is missing.
        let _ = Command::new("tmux")
            .args(["-L", &self.sock, "kill-server"])
            .stdin(Stdio::null())
            .output();
        // tmux leaves its socket file behind; remove ours.
        let dir = std::env::var_os("TMUX_TMPDIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| "/tmp".into(), PathBuf::from);
        // SAFETY: getuid(2) cannot fail.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(dir.join(format!("tmux-{uid}")).join(&self.sock));
    }
}

/// A hook command for a real host that fails twice before it works, to show
/// that mail a host never took stays pending (SPEC §7): the wrapper's first
/// run starts `hook` on a FIFO it never closes and SIGKILLs it before it
/// could print (its exit status goes to `killed`); its second run gives
/// `hook` a stdout nothing can be written to (`/dev/full`: the output cannot
/// be handed over; its exit status goes to `refused`) and prints nothing;
/// from the third run on it is `hook` itself. `hook` is a shell command.
#[allow(dead_code)]
pub fn failing_twice_hook(dir: &Path, hook: &str) -> PathBuf {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let runs = dir.join("wrapper-runs");
    let fifo = dir.join("wrapper-input.fifo");
    let script = format!(
        "#!/bin/sh\n\
         n=$(cat {runs} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {runs}\n\
         case $n in\n\
         1) rm -f {fifo}; mkfifo {fifo}\n\
            {hook} <{fifo} >/dev/null 2>&1 &\n\
            pid=$!\n\
            exec 3>{fifo}\n\
            # Ready: the hook has started and is blocked reading its input.\n\
            while kill -0 $pid 2>/dev/null; do\n\
              [ \"$(cat /proc/$pid/comm 2>/dev/null)\" = inter-session ] \\\n\
                && grep -q '^State:.*S' /proc/$pid/status 2>/dev/null && break\n\
            done\n\
            kill -9 $pid; wait $pid; echo $? > {killed}\n\
            exec 3>&-; rm -f {fifo}; exit 0 ;;\n\
         2) {hook} >/dev/full 2>{refused_err}; echo $? > {refused}; exit 0 ;;\n\
         *) exec {hook} ;;\n\
         esac\n",
        runs = q(&runs),
        fifo = q(&fifo),
        killed = q(&dir.join("killed")),
        refused = q(&dir.join("refused")),
        refused_err = q(&dir.join("refused.err")),
    );
    let path = dir.join("failing-twice-hook");
    std::fs::write(&path, script).expect("wrapper");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod wrapper");
    path
}
