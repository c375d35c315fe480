//! The real Codex CLI for end-to-end tests (SPEC §12): finding or installing
//! the pinned version, a `CODEX_HOME` of the test's own talking to a scripted
//! model (support/fake_codex.rs), hooks and their trust entries, the
//! app-server's `hooks/list`, `codex queue`, and an interactive Codex in a
//! tmux server of the test's own.
//!
//! Finding it: `$INTER_SESSION_CODEX_BIN` (which must be that version), else
//! `target/codex/node_modules/.bin/codex`, installed there with npm when it
//! is missing or another version (one install at a time across test binaries
//! and threads, under `target/codex.lock`); without npm, or when the install
//! fails (no registry), the test skips loudly (need `codex`, support/needs.rs).
//!
//! Hook trust (measured against 0.171.0's `codex app-server` `hooks/list`):
//! a user hook runs only when `--dangerously-bypass-hook-trust` is given, or
//! config.toml holds `[hooks.state."<key>"] trusted_hash = "<currentHash>"`,
//! with `<key>` = `<hooks file path>:<event in snake_case>:<group index>:<handler
//! index>` and the hash computed by [`hook_trust_hash`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_codex::FakeCodexModel;
use crate::support::{runs, skip};

/// The Codex CLI version the tests use (SPEC §12).
pub const CODEX_VERSION: &str = "0.171.0";

/// Where the tests install it: `target/codex`.
pub fn codex_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("codex")
}

/// The npm command that installs the pinned CLI into `dir`.
pub fn codex_install_cmd(dir: &Path) -> String {
    format!(
        "npm install --prefix {} --no-audit --no-fund --save-exact @openai/codex@{CODEX_VERSION}",
        dir.display()
    )
}

/// `codex --version`'s version ("codex-cli 0.171.0"), run with a HOME and
/// CODEX_HOME of its own.
fn codex_version(bin: &Path, home: &Path) -> Option<String> {
    let out = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", home)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| {
        text.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    })
}

/// The pinned Codex CLI, or None after skipping the test loudly.
pub fn codex() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install_codex) {
        Ok(bin) => Some(bin.clone()),
        Err(why) => {
            skip("codex", why);
            None
        }
    }
}

fn find_or_install_codex() -> Result<PathBuf, String> {
    let dir = codex_dir();
    let home = tempfile::tempdir().expect("tempdir");
    if let Some(given) = std::env::var_os("INTER_SESSION_CODEX_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(given);
        let version = codex_version(&bin, home.path());
        assert_eq!(
            version.as_deref(),
            Some(CODEX_VERSION),
            "INTER_SESSION_CODEX_BIN={} is not the Codex CLI {CODEX_VERSION}; \
             unset it to let the tests install that into {}",
            bin.display(),
            dir.display()
        );
        return Ok(bin);
    }
    let bin = dir.join("node_modules/.bin/codex");
    let pinned = || codex_version(&bin, home.path()).as_deref() == Some(CODEX_VERSION);
    if pinned() {
        return Ok(bin);
    }
    let install = codex_install_cmd(&dir);
    if !runs("npm", &["--version"]) {
        return Err(format!(
            "the Codex CLI {CODEX_VERSION} is not installed and there is no npm to install \
             it with; install Node.js and npm (`apt-get install -y npm`), then run \
             `{install}` (the tests do that themselves when npm is there), or point \
             INTER_SESSION_CODEX_BIN at a codex {CODEX_VERSION}"
        ));
    }
    // One install at a time: the threads of one binary and a second
    // `cargo test` may race.
    std::fs::create_dir_all(&dir).expect("mkdir target/codex");
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
    // SAFETY: flock on a file we hold open; released when it is closed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {}", dir.with_extension("lock").display());
    if pinned() {
        return Ok(bin);
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "codex: installing the pinned CLI: {install}"
    );
    let out = Command::new("npm")
        .args(["install", "--prefix"])
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--save-exact"])
        .arg(format!("@openai/codex@{CODEX_VERSION}"))
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
            "the Codex CLI {CODEX_VERSION} is not installed and `{install}` failed \
             ({}: {first}); run it by hand once it can reach the npm registry",
            out.status
        ));
    }
    let version = codex_version(&bin, home.path());
    assert_eq!(
        version.as_deref(),
        Some(CODEX_VERSION),
        "`{install}` succeeded but {} reports {version:?}",
        bin.display()
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "codex: installed {CODEX_VERSION} at {}",
        bin.display()
    );
    Ok(bin)
}

// ------------------------------------------------------------ hook trust

/// A hook event's name as Codex writes it in trust keys and hashes
/// (`SessionStart` → `session_start`).
pub fn event_key_label(event: &str) -> String {
    let mut out = String::new();
    for (i, c) in event.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether Codex keeps a group's `matcher` for `event` (it drops it for
/// events that take none, before hashing).
fn event_takes_matcher(event: &str) -> bool {
    !matches!(event, "UserPromptSubmit" | "Stop" | "Interrupt")
}

/// The trust key of handler `handler` of group `group` of `event` in
/// `hooks_file`: `<path>:<event_snake>:<group>:<handler>`.
pub fn hook_trust_key(hooks_file: &Path, event: &str, group: usize, handler: usize) -> String {
    format!(
        "{}:{}:{group}:{handler}",
        hooks_file.display(),
        event_key_label(event)
    )
}

/// The `currentHash` Codex 0.171 computes for one command handler (and
/// compares with `trusted_hash`): `sha256:` + hex SHA-256 of the compact JSON,
/// keys sorted at every level, of
/// `{"event_name": <event_snake>, "hooks": [<handler>], "matcher": <matcher>}`
/// where `<handler>` is `{"async": <async or false>, "command": <command>,
/// "statusMessage": <if given>, "timeout": <timeout or 600, at least 1>,
/// "type": "command"}` and `matcher` is left out when absent or when the
/// event takes none (UserPromptSubmit, Stop). The file's path is not part of
/// it (it is part of the key).
pub fn hook_trust_hash(event: &str, matcher: Option<&str>, handler: &Value) -> String {
    let mut h = serde_json::Map::new();
    h.insert("type".into(), json!("command"));
    h.insert("command".into(), handler["command"].clone());
    let timeout = handler["timeout"].as_u64().unwrap_or(600).max(1);
    h.insert("timeout".into(), json!(timeout));
    h.insert(
        "async".into(),
        json!(handler["async"].as_bool().unwrap_or(false)),
    );
    if let Some(s) = handler["statusMessage"].as_str() {
        h.insert("statusMessage".into(), json!(s));
    }
    let mut identity = serde_json::Map::new();
    identity.insert("event_name".into(), json!(event_key_label(event)));
    identity.insert("hooks".into(), Value::Array(vec![Value::Object(h)]));
    if let Some(m) = matcher.filter(|_| event_takes_matcher(event)) {
        identity.insert("matcher".into(), json!(m));
    }
    let canonical = canonical_json(&Value::Object(identity));
    format!("sha256:{}", hex(&sha256(canonical.as_bytes())))
}

/// Compact JSON with object keys sorted (byte order) at every level, strings
/// escaped as serde_json escapes them.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).expect("key"),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Every command handler of a hooks.json document: (key, hash), in file
/// order.
pub fn trust_entries(hooks_file: &Path, doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (event, groups) in doc["hooks"].as_object().into_iter().flatten() {
        for (g, group) in groups.as_array().into_iter().flatten().enumerate() {
            let matcher = group["matcher"].as_str();
            for (h, handler) in group["hooks"].as_array().into_iter().flatten().enumerate() {
                if handler["type"] == "command" {
                    out.push((
                        hook_trust_key(hooks_file, event, g, h),
                        hook_trust_hash(event, matcher, handler),
                    ));
                }
            }
        }
    }
    out
}

/// The config.toml text that trusts `entries`.
pub fn trust_toml(entries: &[(String, String)]) -> String {
    entries
        .iter()
        .map(|(key, hash)| {
            format!(
                "\n[hooks.state.{}]\ntrusted_hash = {}\n",
                serde_json::to_string(key).expect("key"),
                serde_json::to_string(hash).expect("hash")
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), for trust hashes: the tests have no crypto crate.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

// ------------------------------------------------------------ a Codex home

/// One `codex exec` (or `exec resume`) run with `--json`.
pub struct ExecRun {
    pub output: Output,
    /// The `thread_id` of its `thread.started` event ("" if none).
    pub thread_id: String,
    /// Its JSONL events.
    pub events: Vec<Value>,
}

impl ExecRun {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Exit 0, else fail with its output.
    pub fn ok(self) -> ExecRun {
        assert!(
            self.output.status.success(),
            "codex failed: {}",
            self.show()
        );
        self
    }

    /// Its stdout and stderr, for failure messages.
    pub fn show(&self) -> String {
        format!(
            "{}\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            self.stderr()
        )
    }
}

/// A temp folder with `home/` (HOME), `codex/` (CODEX_HOME, holding
/// config.toml pointed at the scripted model) and `work/` (the session's
/// working folder); every Codex process a test starts through it gets a
/// clean environment with those. A daemon Codex started for it (the
/// interactive TUI starts one per CODEX_HOME) is stopped on drop.
pub struct CodexHome {
    pub bin: PathBuf,
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub codex_home: PathBuf,
    pub work: PathBuf,
    /// Set for every Codex process (after the clean-up).
    pub vars: Vec<(String, String)>,
}

impl CodexHome {
    /// config.toml: the fake provider at `model`'s address, no approvals, no
    /// sandbox (SPEC §12).
    pub fn new(bin: &Path, model: &FakeCodexModel) -> CodexHome {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        let codex_home = tmp.path().join("codex");
        let work = tmp.path().join("work");
        for d in [&home, &codex_home, &work] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let config = format!(
            "model = \"gpt-5\"\n\
             model_provider = \"fake\"\n\
             approval_policy = \"never\"\n\
             sandbox_mode = \"danger-full-access\"\n\
             \n\
             [model_providers.fake]\n\
             name = \"fake\"\n\
             base_url = \"{}\"\n\
             wire_api = \"responses\"\n\
             env_key = \"FAKE_API_KEY\"\n",
            model.base_url()
        );
        std::fs::write(codex_home.join("config.toml"), config).expect("config.toml");
        CodexHome {
            bin: bin.to_path_buf(),
            tmp,
            home,
            codex_home,
            work,
            vars: Vec::new(),
        }
    }

    /// This home with `name=value` set for every Codex process.
    pub fn with(mut self, name: &str, value: &str) -> CodexHome {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.codex_home.join("config.toml")
    }

    pub fn hooks_path(&self) -> PathBuf {
        self.codex_home.join("hooks.json")
    }

    /// Append `text` to config.toml.
    pub fn append_config(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.config_path())
            .expect("open config.toml");
        f.write_all(text.as_bytes()).expect("append config.toml");
    }

    /// Write `$CODEX_HOME/hooks.json` (`{"hooks": {Event: [groups]}}`).
    pub fn write_hooks(&self, doc: &Value) {
        std::fs::write(
            self.hooks_path(),
            serde_json::to_string_pretty(doc).expect("json"),
        )
        .expect("hooks.json");
    }

    /// A hooks.json document of one command handler per `(event, command)`.
    pub fn hooks_doc(hooks: &[(&str, &str)]) -> Value {
        let mut events = serde_json::Map::new();
        for (event, command) in hooks {
            let groups = events
                .entry(event.to_string())
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("groups");
            groups.push(json!({"hooks": [{"type": "command", "command": command}]}));
        }
        json!({ "hooks": events })
    }

    /// Trust every handler of the current hooks.json through config.toml
    /// entries computed by [`hook_trust_hash`] (no bypass flag needed). The
    /// entries of an earlier call (config.toml's last tables) are replaced:
    /// a key written twice makes Codex refuse the whole file.
    pub fn trust_hooks(&self) -> Vec<(String, String)> {
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(self.hooks_path()).expect("read hooks.json"),
        )
        .expect("hooks.json is JSON");
        let entries = trust_entries(&self.hooks_path(), &doc);
        let config = std::fs::read_to_string(self.config_path()).expect("read config.toml");
        let base = config
            .find("\n[hooks.state.")
            .map_or(config.as_str(), |at| &config[..at]);
        std::fs::write(
            self.config_path(),
            format!("{}\n{}", base.trim_end(), trust_toml(&entries)),
        )
        .expect("write config.toml");
        entries
    }

    /// A Codex command (`args`) with the clean environment, in `work/`, in a
    /// process group of its own.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("CODEX_HOME", &self.codex_home)
            .env("FAKE_API_KEY", "test")
            .env("LANG", "C.UTF-8");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c.current_dir(&self.work).args(args).process_group(0);
        c
    }

    /// Run `c` (stdin closed) to its end, killing its process group and
    /// failing the test after `limit`.
    pub fn run(&self, c: Command, limit: Duration, what: &str) -> Output {
        run_limited(c, limit, what)
    }

    /// `codex exec --skip-git-repo-check --json [extra] PROMPT </dev/null`.
    pub fn exec(&self, prompt: &str, extra: &[&str]) -> ExecRun {
        let mut args = vec!["exec", "--skip-git-repo-check", "--json"];
        args.extend_from_slice(extra);
        args.push(prompt);
        self.exec_args(&args)
    }

    /// `codex exec resume --skip-git-repo-check --json [extra] THREAD [PROMPT]`.
    pub fn resume(&self, thread: &str, prompt: Option<&str>, extra: &[&str]) -> ExecRun {
        let mut args = vec!["exec", "resume", "--skip-git-repo-check", "--json"];
        args.extend_from_slice(extra);
        args.push(thread);
        args.extend(prompt);
        self.exec_args(&args)
    }

    fn exec_args(&self, args: &[&str]) -> ExecRun {
        let output = run_limited(self.cmd(args), Duration::from_secs(45), "codex exec");
        let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let thread_id = events
            .iter()
            .find(|e| e["type"] == "thread.started")
            .and_then(|e| e["thread_id"].as_str())
            .unwrap_or_default()
            .to_string();
        ExecRun {
            output,
            thread_id,
            events,
        }
    }

    /// `codex queue --thread THREAD --message TEXT`.
    pub fn queue(&self, thread: &str, text: &str) -> Output {
        run_limited(
            self.cmd(&["queue", "--thread", thread, "--message", text]),
            Duration::from_secs(20),
            "codex queue",
        )
    }

    /// `hooks/list` of `codex app-server` (stdio JSON-RPC) for `work/`: its
    /// hook entries (`key`, `eventName`, `command`, `currentHash`,
    /// `trustStatus`, …).
    pub fn hooks_list(&self) -> Vec<Value> {
        let mut c = self.cmd(&["app-server"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = KillOnDrop(c.spawn().expect("spawn codex app-server"));
        let mut stdin = child.0.stdin.take().expect("stdin");
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut send = |v: Value| {
            writeln!(stdin, "{v}").expect("write to app-server");
            stdin.flush().expect("flush");
        };
        let wait = |id: u64| -> Value {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        if v["id"] == id {
                            return v;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        panic!("codex app-server: no answer to request {id} in 20 s")
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        panic!("codex app-server ended before answering request {id}")
                    }
                }
            }
        };
        send(json!({"id": 0, "method": "initialize",
                    "params": {"clientInfo": {"name": "inter-session-tests", "version": "1"}}}));
        let init = wait(0);
        assert!(init.get("error").is_none(), "initialize: {init}");
        send(json!({"method": "initialized"}));
        send(json!({"id": 1, "method": "hooks/list",
                    "params": {"cwds": [self.work.display().to_string()]}}));
        let list = wait(1);
        assert!(list.get("error").is_none(), "hooks/list: {list}");
        list["result"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["hooks"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Stop a daemon this home's Codex started (`codex app-server daemon
    /// stop`, then SIGKILL to the pids its pid files name, if they still
    /// run this home's Codex).
    pub fn stop_daemon(&self) {
        let dir = self.codex_home.join("app-server-daemon");
        if !dir.exists() {
            return;
        }
        let mut c = self.cmd(&["app-server", "daemon", "stop"]);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = c.spawn() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in ["daemon.pid", "daemon-updater.pid"] {
            let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
                continue;
            };
            let Some(pid) = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["pid"].as_i64())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours =
                String::from_utf8_lossy(&cmdline).contains(&self.codex_home.display().to_string());
            if ours {
                // SAFETY: kill(2) on a process this test's Codex started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for CodexHome {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_group(&mut self.0);
    }
}

/// SIGKILL to `child`'s process group (it leads one: `process_group(0)`),
/// and reap it.
fn kill_group(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    }
    let _ = child.wait();
}

/// Run `c` (stdin closed, output captured) to its end; after `limit` kill its
/// process group and fail the test.
pub fn run_limited(mut c: Command, limit: Duration, what: &str) -> Output {
    let out_file = tempfile::tempfile().expect("tempfile");
    let err_file = tempfile::tempfile().expect("tempfile");
    c.stdin(Stdio::null())
        .stdout(out_file.try_clone().expect("dup"))
        .stderr(err_file.try_clone().expect("dup"));
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > limit {
            kill_group(&mut child);
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut v).expect("read");
        v
    };
    Output {
        status,
        stdout: read(out_file),
        stderr: read(err_file),
    }
}

// ------------------------------------------------------------ the TUI in tmux

/// An interactive Codex in a tmux server of the test's own (`tmux -S
/// <socket in the temp folder>`), killed with the server on drop.
pub struct Tui {
    pub sock: PathBuf,
}

impl Tui {
    /// Start `codex [args]` in `home`'s environment in a 160×50 window and
    /// wait until its composer shows.
    pub fn start(home: &CodexHome, args: &[&str]) -> Tui {
        let sock = home.tmp.path().join("tmux.sock");
        // A launcher script carries the clean environment into the pane.
        let mut script = String::from("#!/bin/sh\nexec env -i");
        let mut vars: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            ),
            ("HOME".into(), home.home.display().to_string()),
            ("CODEX_HOME".into(), home.codex_home.display().to_string()),
            ("FAKE_API_KEY".into(), "test".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TERM".into(), "xterm-256color".into()),
        ];
        vars.extend(home.vars.iter().cloned());
        for (k, v) in &vars {
            script.push_str(&format!(" {}", shell_quote(&format!("{k}={v}"))));
        }
        script.push_str(&format!(
            " {}",
            shell_quote(&home.bin.display().to_string())
        ));
        for a in args {
            script.push_str(&format!(" {}", shell_quote(a)));
        }
        script.push('\n');
        let launcher = home.tmp.path().join("tui.sh");
        std::fs::write(&launcher, script).expect("launcher");
        std::fs::set_permissions(
            &launcher,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod launcher");
        let tui = Tui { sock };
        let out = tui.tmux(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-c",
            &home.work.display().to_string(),
            &launcher.display().to_string(),
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        tui.wait_screen(Duration::from_secs(30), "the composer", |s| {
            s.contains("Ask Codex to do anything")
        });
        tui
    }

    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// The visible screen.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Wait until the screen satisfies `cond`; fail after `timeout`.
    pub fn wait_screen(&self, timeout: Duration, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if cond(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} in the Codex TUI; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `text` into the composer and wait until it shows.
    pub fn type_text(&self, text: &str) {
        let out = self.tmux(&["send-keys", "-t", ":0", "-l", text]);
        assert!(out.status.success(), "send-keys: {out:?}");
        self.wait_screen(Duration::from_secs(10), "the typed text", |s| {
            s.contains(text)
        });
    }

    pub fn enter(&self) {
        let out = self.tmux(&["send-keys", "-t", ":0", "Enter"]);
        assert!(out.status.success(), "send-keys Enter: {out:?}");
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .arg("kill-server")
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// `s` single-quoted for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
