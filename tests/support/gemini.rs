//! The pinned Gemini CLI for end-to-end tests (SPEC §12): finding or
//! installing it, a home of its own for each run, and running it headless
//! (`-p`) or interactive in a tmux server of the test's own.
//!
//! Finding it: `$INTER_SESSION_GEMINI_BIN` (a `gemini` executable, or its
//! `gemini.js`, which is run with `node`; it must report 0.61.0), else
//! the package's `bundle/gemini.js` under `target/gemini-cli/node_modules`,
//! run with `node`, installed there when missing with
//! `npm install --prefix target/gemini-cli --no-audit --no-fund --save-exact
//! @google/gemini-cli@0.61.0` (one install at a time, under
//! `target/gemini-cli.lock`). Without node (≥ 20) or npm, or when the
//! install fails (no registry), the test is skipped loudly through
//! `needs::skip("gemini-cli", …)` (`INTER_SESSION_TEST_REQUIRE=all` makes
//! that a failure).
//!
//! A run is offline: `GEMINI_CLI_HOME` and `HOME` are a temp folder whose
//! `.gemini/settings.json` selects the API-key auth (without it: exit 41),
//! turns off usage statistics and update checks, and holds the test's hooks
//! and settings; `GEMINI_API_KEY=dummy` and `GOOGLE_GEMINI_BASE_URL` point it
//! at `support/fake_gemini.rs`. Nothing else of the caller's environment
//! reaches it (the test may itself run inside an agent).
//!
//! A test binary using this also declares `mod support;` (for `skip`,
//! `have_tmux`).
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{have_tmux, runs, skip};

/// The Gemini CLI version the tests use (SPEC §12).
pub const GEMINI_CLI_VERSION: &str = "0.61.0";
/// The model every run asks for (any name does for the fake server).
pub const MODEL: &str = "gemini-2.5-pro";
/// The need `skip` names.
pub const NEED: &str = "gemini-cli";
/// The oldest node the CLI runs on.
const NODE_MAJOR: u32 = 20;

/// Where the tests install it: `target/gemini-cli`.
pub fn gemini_cli_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("gemini-cli")
}

/// The npm command that installs the pinned CLI into `dir`.
pub fn gemini_cli_install_cmd(dir: &Path) -> String {
    format!(
        "npm install --prefix {} --no-audit --no-fund --save-exact @google/gemini-cli@{GEMINI_CLI_VERSION}",
        dir.display()
    )
}

/// How to start the CLI: a program and the arguments before the CLI's own
/// (`node <gemini.js>`, or the `gemini` executable alone).
#[derive(Clone, Debug)]
pub struct GeminiCli {
    pub program: PathBuf,
    pub prefix: Vec<OsString>,
}

impl GeminiCli {
    /// A command for the CLI, with nothing of the caller's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.env_clear().args(&self.prefix);
        c
    }

    /// `--version`, run with a home of its own.
    fn version(&self) -> Option<String> {
        let home = tempfile::tempdir().ok()?;
        let out = self
            .command()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("GEMINI_CLI_HOME", home.path())
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string()
        })
    }

    /// The same CLI started as a global npm install starts it: the
    /// `node_modules/.bin/gemini` link to `gemini.js`, run by its
    /// `#!/usr/bin/env node` line (None if this is not the npm bundle).
    pub fn npm_bin(&self) -> Option<GeminiCli> {
        let script = Path::new(self.prefix.first()?);
        let node_modules = script.ancestors().find(|a| a.ends_with("node_modules"))?;
        let bin = node_modules.join(".bin").join("gemini");
        bin.exists().then(|| GeminiCli {
            program: bin,
            prefix: Vec::new(),
        })
    }

    fn of(bin: &Path) -> GeminiCli {
        if bin.extension().is_some_and(|e| e == "js") {
            GeminiCli {
                program: "node".into(),
                prefix: vec![bin.into()],
            }
        } else {
            GeminiCli {
                program: bin.to_path_buf(),
                prefix: Vec::new(),
            }
        }
    }
}

/// The pinned Gemini CLI, or None after skipping the test loudly.
pub fn gemini_cli() -> Option<GeminiCli> {
    static FOUND: OnceLock<Result<GeminiCli, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install) {
        Ok(cli) => Some(cli.clone()),
        Err(why) => {
            skip(NEED, why);
            None
        }
    }
}

/// node's major version, if node runs.
fn node_major() -> Option<u32> {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout);
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn find_or_install() -> Result<GeminiCli, String> {
    let dir = gemini_cli_dir();
    let install = gemini_cli_install_cmd(&dir);
    if let Some(given) = std::env::var_os("INTER_SESSION_GEMINI_BIN").filter(|v| !v.is_empty()) {
        let cli = GeminiCli::of(Path::new(&given));
        let version = cli.version();
        assert_eq!(
            version.as_deref(),
            Some(GEMINI_CLI_VERSION),
            "INTER_SESSION_GEMINI_BIN={} is not the Gemini CLI {GEMINI_CLI_VERSION}; \
             unset it to let the tests install that into {}",
            Path::new(&given).display(),
            dir.display()
        );
        return Ok(cli);
    }
    match node_major() {
        Some(major) if major >= NODE_MAJOR => {}
        found => {
            return Err(format!(
                "the Gemini CLI {GEMINI_CLI_VERSION} needs Node.js {NODE_MAJOR} or later \
                 (found: {}); install it (https://nodejs.org, or `apt-get install -y nodejs npm` \
                 where that is new enough), then run `{install}` (the tests do that \
                 themselves when npm is there), or point INTER_SESSION_GEMINI_BIN at a \
                 gemini {GEMINI_CLI_VERSION}",
                found.map_or("no node".to_string(), |m| format!("node {m}"))
            ))
        }
    }
    let script = dir
        .join("node_modules")
        .join("@google")
        .join("gemini-cli")
        .join("bundle")
        .join("gemini.js");
    let cli = GeminiCli::of(&script);
    let pinned = || script.is_file() && cli.version().as_deref() == Some(GEMINI_CLI_VERSION);
    if pinned() {
        return Ok(cli);
    }
    if !runs("npm", &["--version"]) {
        return Err(format!(
            "the Gemini CLI {GEMINI_CLI_VERSION} is not installed and there is no npm to \
             install it with; install npm (`apt-get install -y npm`), then run `{install}` \
             (the tests do that themselves when npm is there), or point \
             INTER_SESSION_GEMINI_BIN at a gemini {GEMINI_CLI_VERSION}"
        ));
    }
    // One install at a time: the threads of one test binary and a second
    // `cargo test` may race.
    std::fs::create_dir_all(&dir).expect("mkdir target/gemini-cli");
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).expect("lock file");
    // SAFETY: flock on a file we hold open; released when it is closed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {}", lock_path.display());
    if pinned() {
        return Ok(cli);
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "gemini-cli: installing the pinned CLI: {install}"
    );
    let out = Command::new("npm")
        .args(["install", "--prefix"])
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--save-exact"])
        .arg(format!("@google/gemini-cli@{GEMINI_CLI_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .expect("run npm");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines = || err.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines()
            .find(|l| l.contains("ERR") || l.contains("error"))
            .or_else(|| lines().next_back())
            .unwrap_or("");
        return Err(format!(
            "the Gemini CLI {GEMINI_CLI_VERSION} is not installed and `{install}` failed \
             ({}: {first}); run it by hand once it can reach the npm registry",
            out.status
        ));
    }
    let version = cli.version();
    assert_eq!(
        version.as_deref(),
        Some(GEMINI_CLI_VERSION),
        "`{install}` succeeded but {} reports {version:?}",
        script.display()
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "gemini-cli: installed {GEMINI_CLI_VERSION} at {}",
        script.display()
    );
    Ok(cli)
}

// ---------------------------------------------------------------------------
// A home of its own.

/// What every run's settings hold before the test adds its own.
pub fn base_settings() -> Value {
    json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
    })
}

/// A temp folder holding `home/` (`GEMINI_CLI_HOME` and `HOME`, with
/// `.gemini/settings.json`) and `work/` (the cwd), removed on drop.
pub struct GeminiHome {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
    settings: Value,
    /// Extra variables for every run (after the clean-up).
    pub vars: Vec<(OsString, OsString)>,
}

impl GeminiHome {
    pub fn new() -> GeminiHome {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Canonical: the CLI reports and hands hooks the resolved cwd.
        let root = tmp.path().canonicalize().expect("canonical temp dir");
        let home = root.join("home");
        let work = root.join("work");
        std::fs::create_dir_all(home.join(".gemini")).expect("mkdir home/.gemini");
        std::fs::create_dir_all(&work).expect("mkdir work");
        let me = GeminiHome {
            tmp,
            home,
            work,
            settings: base_settings(),
            vars: Vec::new(),
        };
        me.write();
        me
    }

    /// The temp folder (resolved), for the test's own files.
    pub fn dir(&self) -> PathBuf {
        self.home.parent().expect("root").to_path_buf()
    }

    pub fn settings_path(&self) -> PathBuf {
        self.home.join(".gemini").join("settings.json")
    }

    pub fn settings(&self) -> &Value {
        &self.settings
    }

    fn write(&self) {
        std::fs::write(
            self.settings_path(),
            serde_json::to_string_pretty(&self.settings).expect("json"),
        )
        .expect("write settings.json");
    }

    /// Set the setting at `path` (dotted: `tools.shell.backgroundCompletionBehavior`).
    pub fn set(&mut self, path: &str, value: Value) -> &mut GeminiHome {
        let mut at = &mut self.settings;
        let keys: Vec<&str> = path.split('.').collect();
        for k in &keys[..keys.len() - 1] {
            if !at[*k].is_object() {
                at[*k] = json!({});
            }
            at = &mut at[*k];
        }
        at[keys[keys.len() - 1]] = value;
        self.write();
        self
    }

    /// Add a command hook for `event` (settings.json `hooks`, 0.61.0's shape:
    /// `{"<Event>": [{"matcher"?, "hooks": [{"type": "command", "command",
    /// "timeout" (ms)}]}]}`).
    pub fn hook(&mut self, event: &str, command: &str) -> &mut GeminiHome {
        self.hook_with(
            event,
            json!({"type": "command", "command": command, "timeout": 30_000}),
        )
    }

    /// Add hook `handler` (a whole handler object) for `event`.
    pub fn hook_with(&mut self, event: &str, handler: Value) -> &mut GeminiHome {
        if !self.settings["hooks"].is_object() {
            self.settings["hooks"] = json!({});
        }
        let list = &mut self.settings["hooks"][event];
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut()
            .expect("array")
            .push(json!({"hooks": [handler]}));
        self.write();
        self
    }

    /// `name=value` for every run.
    pub fn var(
        &mut self,
        name: impl Into<OsString>,
        value: impl Into<OsString>,
    ) -> &mut GeminiHome {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// The variables of a run against the model at `base_url`.
    pub fn env(&self, base_url: &str) -> Vec<(OsString, OsString)> {
        let mut v: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
            ("HOME".into(), self.home.clone().into()),
            ("GEMINI_CLI_HOME".into(), self.home.clone().into()),
            ("GEMINI_API_KEY".into(), "dummy".into()),
            ("GOOGLE_GEMINI_BASE_URL".into(), base_url.into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("SHELL".into(), "/bin/bash".into()),
            ("TERM".into(), "xterm-256color".into()),
        ];
        v.extend(self.vars.iter().cloned());
        v
    }

    /// The CLI in `work`, with only this home's environment; `args` after
    /// `--skip-trust -m <MODEL> --yolo`.
    pub fn command(&self, cli: &GeminiCli, base_url: &str, args: &[&str]) -> Command {
        let mut c = cli.command();
        c.envs(self.env(base_url))
            .current_dir(&self.work)
            .args(["--skip-trust", "-m", MODEL, "--yolo"])
            .args(args);
        c
    }

    /// `gemini --skip-trust -m <MODEL> --yolo [extra…] -p PROMPT </dev/null`,
    /// started (in a process group of its own).
    pub fn spawn_prompt(
        &self,
        cli: &GeminiCli,
        base_url: &str,
        extra: &[&str],
        prompt: &str,
    ) -> Running {
        let mut args = extra.to_vec();
        args.extend(["-p", prompt]);
        let mut c = self.command(cli, base_url, &args);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let start = Instant::now();
        let child = c.spawn().expect("spawn the Gemini CLI");
        Running {
            pid: child.id() as i32,
            child: Some(child),
            start,
        }
    }

    /// The same, to its end (its process group killed and the test failed
    /// after `limit`).
    pub fn prompt(&self, cli: &GeminiCli, base_url: &str, prompt: &str, limit: Duration) -> Run {
        self.spawn_prompt(cli, base_url, &[], prompt).finish(limit)
    }
}

/// A headless run under way (its process group killed if dropped
/// unfinished).
pub struct Running {
    /// The launcher's pid (also its process group).
    pub pid: i32,
    child: Option<Child>,
    start: Instant,
}

impl Running {
    /// Wait for its end (its process group killed and the test failed after
    /// `limit`).
    pub fn finish(mut self, limit: Duration) -> Run {
        let pid = self.pid;
        let child = self.child.take().expect("a running CLI");
        let (output, timed_out) = wait_output(child, limit);
        let run = Run {
            pid,
            output,
            took: self.start.elapsed(),
        };
        assert!(
            !timed_out,
            "the Gemini CLI did not finish within {limit:?}\n{}",
            run.report()
        );
        run
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group of the CLI this test started.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Default for GeminiHome {
    fn default() -> Self {
        GeminiHome::new()
    }
}

/// One finished headless run.
pub struct Run {
    /// The launcher's pid (its relaunched child is another node process).
    pub pid: i32,
    pub output: Output,
    pub took: Duration,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn report(&self) -> String {
        format!(
            "==== gemini exit {:?} after {:?}\n==== stdout:\n{}\n==== stderr:\n{}",
            self.output.status,
            self.took,
            self.stdout(),
            self.stderr()
        )
    }

    /// Exit 0, else fail with the run's output and `extra`.
    pub fn assert_ok(&self, extra: &str) {
        assert!(
            self.output.status.success(),
            "the Gemini CLI failed\n{}\n{extra}",
            self.report()
        );
    }
}

/// Wait for `child` (its own process group), reading its output; after
/// `limit` the whole group is killed. The output and whether it timed out.
fn wait_output(mut child: Child, limit: Duration) -> (Output, bool) {
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
    let pgid = child.id() as i32;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > limit {
            timed_out = true;
            // SAFETY: kill(2) on the process group of the CLI this test started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The group may outlive its leader (a hook, a command): end it too, so
    // the pipes close.
    // SAFETY: as above; ESRCH when the group is gone already.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let output = Output {
        status,
        stdout: out.join().expect("stdout thread"),
        stderr: err.join().expect("stderr thread"),
    };
    (output, timed_out)
}

// ---------------------------------------------------------------------------
// Processes.

/// The parent pid of `pid`, from /proc.
pub fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `pid`'s arguments, from /proc.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// Whether `pid` runs the CLI (`node … gemini.js …`, or a `gemini` bin).
pub fn is_gemini(pid: i32) -> bool {
    cmdline(pid)
        .iter()
        .take(4)
        .any(|a| a.ends_with("gemini.js") || a.ends_with("/gemini"))
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s[s.rfind(')')? + 2..].to_string();
            after.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// Every live descendant of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(pp) = ppid(p) {
                    all.push((p, pp));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &all {
            if *pp == parent && !out.contains(p) {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out
}

/// Poll `cond` every 20 ms for up to `timeout`.
pub fn poll(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The interactive CLI in tmux.

/// The interactive Gemini CLI in a tmux server of the test's own
/// (`tmux -S <temp dir>/tmux.sock`, never the user's server), 200×50.
/// Ended on drop: the CLI by SIGTERM, then the server, then anything the
/// CLI ran that is still alive. Drop it before the [`GeminiHome`] whose
/// folder holds the socket.
pub struct LiveGemini {
    pub sock: PathBuf,
    /// The pane's process: the CLI's launcher (`node gemini.js`), which
    /// relaunches the CLI as its child.
    pub pid: i32,
    /// Every process seen under it, with its arguments (killed on drop if
    /// still alive with the same arguments).
    seen: std::sync::Mutex<Vec<(i32, Vec<String>)>>,
}

/// How long the CLI may take to draw its prompt (several may start at once
/// on two cores).
pub const READY: Duration = Duration::from_secs(40);

impl LiveGemini {
    /// Start the CLI (`--skip-trust -m <MODEL> --yolo`, then `args`) in
    /// `home`'s work folder against `base_url`, once tmux is there (else
    /// None after a loud skip). Returns once the input prompt is drawn.
    pub fn start(
        cli: &GeminiCli,
        home: &GeminiHome,
        base_url: &str,
        args: &[&str],
    ) -> Option<LiveGemini> {
        if !have_tmux() {
            return None;
        }
        let sock = home.dir().join("tmux.sock");
        let mut cmd = Command::new("tmux");
        // The server, and so the pane, gets only the run's environment.
        cmd.env_clear()
            .envs(home.env(base_url))
            .arg("-S")
            .arg(&sock)
            .args(["-f", "/dev/null", "new-session", "-d", "-s", "g"])
            .args(["-x", "200", "-y", "50", "-c"])
            .arg(&home.work)
            // More than one argument: tmux runs it without a shell, so the
            // pane's pid is the CLI's launcher.
            .arg(&cli.program)
            .args(&cli.prefix)
            .args(["--skip-trust", "-m", MODEL, "--yolo"])
            .args(args)
            // Keep the pane (and its last screen) if the CLI exits.
            .args([";", "set-option", "-t", "g", "remain-on-exit", "on"])
            .stdin(Stdio::null());
        let out = cmd.output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut live = LiveGemini {
            sock,
            pid: 0,
            seen: std::sync::Mutex::new(Vec::new()),
        };
        let pid = live.tmux(&["display-message", "-p", "-t", "g", "#{pane_pid}"]);
        live.pid = String::from_utf8_lossy(&pid.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no pane pid: {pid:?}"));
        live.wait_screen("the input prompt", READY, |s| prompt_line(s) == Some(""));
        Some(live)
    }

    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("-S")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// The pane's text, scrollback included.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "g"])
                .stdout,
        )
        .into_owned()
    }

    /// Wait until the screen satisfies `pred`; fail with the screen after
    /// `timeout`.
    pub fn wait_screen(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        if !poll(timeout, || pred(&self.screen())) {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n==== the CLI's screen:\n{}",
                self.screen()
            );
        }
    }

    /// Type `text` into the prompt and press Enter. The CLI takes an Enter
    /// that comes within 30 ms of a typed key as a newline (its paste
    /// guard), so Enter goes only once the prompt shows the whole text and
    /// at least 100 ms after the last key; keys typed before the input was
    /// ready are cleared and typed again.
    pub fn submit(&self, text: &str) {
        for _ in 0..3 {
            self.tmux(&["send-keys", "-t", "g", "-l", text]);
            let typed = Instant::now();
            if poll(Duration::from_secs(10), || {
                prompt_line(&self.screen()) == Some(text)
            }) {
                let gap = Duration::from_millis(100).saturating_sub(typed.elapsed());
                std::thread::sleep(gap);
                self.tmux(&["send-keys", "-t", "g", "Enter"]);
                return;
            }
            self.tmux(&["send-keys", "-t", "g", "C-u"]);
        }
        panic!(
            "the prompt never showed {text:?}\n==== the CLI's screen:\n{}",
            self.screen()
        );
    }

    /// Wait until the turn that ended with the text `reply` is over: the
    /// reply is on screen (`✦ reply`) and the CLI is not responding (no
    /// "esc to cancel").
    pub fn wait_idle(&self, reply: &str) {
        let shown = format!("✦ {reply}");
        self.wait_screen(&format!("the turn ending {reply:?}"), READY, |s| {
            s.lines().any(|l| l.trim() == shown) && !s.contains("esc to cancel")
        });
    }

    /// Every process under the CLI now (noted for the clean-up).
    pub fn processes(&self) -> Vec<i32> {
        let found = descendants(self.pid);
        let mut seen = self.seen.lock().expect("seen");
        for p in &found {
            if !seen.iter().any(|(q, _)| q == p) {
                seen.push((*p, cmdline(*p)));
            }
        }
        found
    }

    /// The relaunched CLI: the `node … gemini.js` child of the launcher
    /// (the process whose children hooks and shell commands are).
    pub fn cli_pid(&self) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|p| ppid(*p) == Some(self.pid) && is_gemini(*p))
    }
}

/// The text in the input box (the line starting `*` (YOLO) or `>` below
/// the last rule), "" for the placeholder, None if it is not drawn.
pub fn prompt_line(screen: &str) -> Option<&str> {
    let lines: Vec<&str> = screen.lines().collect();
    let rule = lines.iter().rposition(|l| l.starts_with("────"))?;
    let line = lines[rule + 1..].iter().find_map(|l| {
        let t = l.trim_start();
        t.strip_prefix("* ").or_else(|| t.strip_prefix("> "))
    })?;
    let text = line.trim();
    Some(if text.starts_with("Type your message") {
        ""
    } else {
        text
    })
}

impl Drop for LiveGemini {
    fn drop(&mut self) {
        let _ = self.processes();
        // A hang-up does not end the CLI (its launcher, the session leader,
        // catches SIGHUP and the relaunched CLI lives on): SIGTERM does, and
        // the launcher follows.
        let clis: Vec<i32> = std::iter::once(self.pid).chain(self.cli_pid()).collect();
        for p in clis.iter().rev() {
            // SAFETY: kill(2) on the CLI this test started.
            unsafe { libc::kill(*p, libc::SIGTERM) };
        }
        if !poll(Duration::from_secs(10), || clis.iter().all(|p| !alive(*p))) {
            for p in &clis {
                // SAFETY: as above.
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
        }
        let _ = self.tmux(&["kill-server"]);
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        // Alive and still the process seen (not a pid used again).
        let left = || {
            seen.iter()
                .filter(|(p, args)| alive(*p) && cmdline(*p) == *args)
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
        };
        if !poll(Duration::from_secs(5), || left().is_empty()) {
            for p in left() {
                // SAFETY: kill(2) on a process the CLI of this test ran.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
}
