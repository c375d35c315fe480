//! `inter-session deliver codex --thread <id>` (issue 21, must-hold 2): a
//! monitor whose output is `codex queue --thread <id> --message <batch>`.
//! A fake `codex` (a shell script) records each call's argv and exits as
//! the test tells it: mail is queued once, with the exact §4 line, and
//! marked delivered (receipt `codex-queue`) only after `codex queue` exited
//! 0; a refused batch stays pending and is retried; the session's hooks stay
//! quiet while the deliverer runs; `disconnect` and SIGTERM end it; and
//! `hook codex SessionStart --push` starts one (at most one per thread).
//! The real Codex TUI takes a queued message in tests/codex_e2e.rs.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A fake `codex` in `<tmp>/fakebin`: each call's argv goes, NUL-separated,
/// into a file of its own under `<tmp>/calls`; with `<tmp>/slow` present it
/// sleeps that many seconds after recording; it exits with the number in
/// `<tmp>/exit` (0 when absent).
struct FakeCodex {
    dir: PathBuf,
}

impl FakeCodex {
    fn new(env: &Env) -> FakeCodex {
        let dir = env.tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("fakebin")).unwrap();
        std::fs::create_dir_all(dir.join("calls")).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             d='{d}'\n\
             f=\"$d/calls/$(date +%s%N)-$$\"\n\
             printf '%s\\0' \"$@\" > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n\
             n=$(ls \"$d/calls\" | grep -vc tmp)\n\
             echo \"Queued message item-$n for thread $3.\"\n\
             if [ -f \"$d/slow\" ]; then sleep \"$(cat \"$d/slow\")\"; fi\n\
             exit \"$(cat \"$d/exit\" 2>/dev/null || echo 0)\"\n",
            d = dir.display()
        );
        let bin = dir.join("fakebin/codex");
        std::fs::write(&bin, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeCodex { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("fakebin/codex")
    }

    fn exit_with(&self, code: i32) {
        std::fs::write(self.dir.join("exit"), code.to_string()).unwrap();
    }

    fn slow(&self, secs: Option<u32>) {
        match secs {
            Some(s) => std::fs::write(self.dir.join("slow"), s.to_string()).unwrap(),
            None => {
                let _ = std::fs::remove_file(self.dir.join("slow"));
            }
        }
    }

    /// Every call so far, oldest first, as argv lists.
    fn calls(&self) -> Vec<Vec<String>> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.join("calls"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let raw = std::fs::read(self.dir.join("calls").join(n)).unwrap();
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    fn wait_calls(&self, n: usize, timeout: Duration) -> Vec<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} codex calls, got {calls:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn via(env: &Env, id: &str) -> String {
    env.sql(&format!(
        "select coalesce(delivered_via, 'pending') from history where id = '{id}'"
    ))
}

fn wait_via(env: &Env, id: &str, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = via(env, id);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id}: {got}, wanted {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A hook of Codex (no session key in the environment, as Codex runs them).
fn codex_hook(env: &Env, event: &str, args: &[&str], input: &str, vars: &[(&str, &str)]) -> Output {
    let mut c = env.cmd("");
    c.args(["hook", "codex", event])
        .args(args)
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn the hook");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("hook output")
}

/// Thread `thread` registered as `name` by its SessionStart hook.
fn register(env: &Env, thread: &str, name: &str) {
    let input = format!(r#"{{"session_id":"{thread}","cwd":"/tmp"}}"#);
    let out = codex_hook(env, "SessionStart", &["--name", name], &input, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

fn deliverer_cmd(env: &Env, fake: &FakeCodex, thread: &str) -> Command {
    let mut c = env.cmd("");
    c.args(["deliver", "codex", "--thread", thread])
        .env("INTER_SESSION_CODEX_BIN", fake.bin())
        .env("INTER_SESSION_CODEX_GAP_MS", "100")
        .env("CODEX_HOME", fake.dir.join("codex-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

fn deliverer(env: &Env, fake: &FakeCodex, thread: &str) -> Child {
    deliverer_cmd(env, fake, thread)
        .spawn()
        .expect("spawn deliver codex")
}

fn line_for(id: &str, from: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"{from}\"] {text}")
}

fn queue_argv(thread: &str, message: &str) -> Vec<String> {
    ["queue", "--thread", thread, "--message", message]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn mail_is_queued_once_with_its_exact_line_and_marked_after_exit_0() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    register(&env, "th-1", "cx");
    let mut d = deliverer(&env, &fake, "th-1");
    env.wait_online("cx");

    // A slow `codex queue`: while it runs, the mail is not yet delivered.
    fake.slow(Some(2));
    let id = send_as(&env, "bob", "cx", "review the diff");
    let calls = fake.wait_calls(1, Duration::from_secs(10));
    assert_eq!(
        calls[0],
        queue_argv("th-1", &line_for(&id, "bob", "review the diff"))
    );
    assert_eq!(
        via(&env, &id),
        "pending",
        "marked before codex queue exited"
    );
    wait_via(&env, &id, "codex-queue", Duration::from_secs(10));
    fake.slow(None);

    // Once: nothing is queued again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());

    // A message sent before the deliverer starts is replayed on start.
    signal(&d, libc::SIGTERM);
    assert_eq!(
        wait_child(&mut d, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    let id2 = send_as(&env, "bob", "cx", "second");
    let mut d = deliverer(&env, &fake, "th-1");
    let calls = fake.wait_calls(2, Duration::from_secs(10));
    assert_eq!(
        calls[1],
        queue_argv("th-1", &line_for(&id2, "bob", "second"))
    );
    wait_via(&env, &id2, "codex-queue", Duration::from_secs(10));
    signal(&d, libc::SIGTERM);
    assert_eq!(
        wait_child(&mut d, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn a_refused_batch_stays_pending_is_retried_and_hooks_stay_quiet() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    register(&env, "th-2", "cy");
    fake.exit_with(1);
    let mut d = deliverer(&env, &fake, "th-2");
    env.wait_online("cy");
    let id = send_as(&env, "bob", "cy", "try again");
    let want = queue_argv("th-2", &line_for(&id, "bob", "try again"));
    let calls = fake.wait_calls(2, Duration::from_secs(10));
    assert_eq!(calls[0], want);
    assert_eq!(calls[1], want);
    assert_eq!(via(&env, &id), "pending");
    // Backoff, not a busy loop: a handful of tries in 3 s at most.
    std::thread::sleep(Duration::from_secs(3));
    let n = fake.calls().len();
    assert!(n <= 6, "{n} tries in about 4 s");

    // While it runs the session is online: its hooks hand nothing over.
    let input = r#"{"session_id":"th-2"}"#;
    for event in ["PostToolUse", "UserPromptSubmit", "Stop"] {
        let out = codex_hook(&env, event, &[], input, &[]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(out.stdout.is_empty(), "{event}: {out:?}");
    }
    assert_eq!(via(&env, &id), "pending");

    // Codex takes it now: delivered, once.
    fake.exit_with(0);
    wait_via(&env, &id, "codex-queue", Duration::from_secs(40));
    let n = fake.calls().len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.calls().len(), n);
    assert!(fake.calls().iter().all(|c| *c == want));
    signal(&d, libc::SIGTERM);
    assert_eq!(
        wait_child(&mut d, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn disconnect_and_sigterm_end_it() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    register(&env, "th-3", "cz");
    let mut d = deliverer(&env, &fake, "th-3");
    env.wait_online("cz");
    env.ok("codex:th-3", &["disconnect"]);
    let st = wait_child(&mut d, Duration::from_secs(10)).expect("ends on disconnect");
    assert_eq!(st.code(), Some(0));
    // The closing notice is logged, never queued into the model.
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    register(&env, "th-4", "cw");
    let mut d = deliverer(&env, &fake, "th-4");
    env.wait_online("cw");
    signal(&d, libc::SIGTERM);
    let st = wait_child(&mut d, Duration::from_secs(10)).expect("ends on SIGTERM");
    assert_eq!(st.code(), Some(0));
    env.wait_state("cw", "offline");
}

#[test]
fn without_codex_it_says_so_in_one_line() {
    let env = Env::new();
    let mut c = env.cmd("");
    c.args(["deliver", "codex", "--thread", "th-5"])
        .env("PATH", env.tmp.path())
        .stdin(Stdio::null());
    let out = c.output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("codex"), "{err}");
    let out = deliverer_cmd(&env, &FakeCodex::new(&env), "not a thread")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

fn log_of(env: &Env, thread: &str) -> String {
    std::fs::read_to_string(env.data.join(format!("logs/deliver-codex-{thread}.log")))
        .unwrap_or_default()
}

fn wait_file_contains(path_of: impl Fn() -> String, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = path_of();
        if text.contains(what) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what:?} in {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn session_start_with_push_starts_one_deliverer() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    let path = format!(
        "{}:{}",
        fake.bin().parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let vars = [
        ("PATH", path.as_str()),
        ("INTER_SESSION_CODEX_GAP_MS", "100"),
    ];
    let input = r#"{"session_id":"th-6","cwd":"/tmp"}"#;
    let out = codex_hook(
        &env,
        "SessionStart",
        &["--name", "pushed", "--push"],
        input,
        &vars,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("connected as 'pushed' and a deliverer pushes its mail in"),
        "{said}"
    );
    env.wait_online("pushed");
    let id = send_as(&env, "bob", "pushed", "wake up");
    let calls = fake.wait_calls(1, Duration::from_secs(10));
    assert_eq!(
        calls[0],
        queue_argv("th-6", &line_for(&id, "bob", "wake up"))
    );
    wait_via(&env, &id, "codex-queue", Duration::from_secs(10));

    // A second SessionStart (a resume) starts no second one: it finds the
    // thread's deliverer running and exits.
    let out = codex_hook(&env, "SessionStart", &["--push"], input, &vars);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_file_contains(|| log_of(&env, "th-6"), "already running");

    // Without --push nothing starts.
    let input7 = r#"{"session_id":"th-7","cwd":"/tmp"}"#;
    codex_hook(&env, "SessionStart", &["--name", "plain"], input7, &vars);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!env.data.join("logs/deliver-codex-th-7.log").exists());
    env.wait_state("plain", "offline");

    // Disconnect ends the detached one (it is the session's monitor pid).
    let log = log_of(&env, "th-6");
    let pid: i32 = log
        .split("listener_pid=")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {log:?}"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("deliver"),
        "{pid} is not the deliverer"
    );
    env.ok("codex:th-6", &["disconnect"]);
    wait_until("the deliverer exits", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    });
}

/// The deliverer ends with its thread: Codex holds the thread's rollout
/// file (`transcript_path`) open while the thread is loaded (measured in
/// the real CLI: the app-server daemon closes it about a minute after the
/// thread's TUI quit); once no process holds it, the deliverer exits and
/// the session goes offline (its hooks deliver again).
#[test]
fn it_ends_once_nothing_holds_the_transcript_open() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    register(&env, "th-8", "cv");
    let transcript = env.tmp.path().join("rollout-th-8.jsonl");
    std::fs::write(&transcript, "").unwrap();
    // A stand-in for Codex: a process with the file open.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$1\"; exec sleep 60")
        .arg("sh")
        .arg(&transcript)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the holder");
    let mut d = deliverer_cmd(&env, &fake, "th-8")
        .arg("--transcript")
        .arg(&transcript)
        .env("INTER_SESSION_CODEX_CHECK_MS", "200")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn deliver codex");
    env.wait_online("cv");
    // Held: it stays (well past two checks).
    assert!(
        wait_child(&mut d, Duration::from_secs(2)).is_none(),
        "ended while held"
    );
    let id = send_as(&env, "bob", "cv", "still here");
    wait_via(&env, &id, "codex-queue", Duration::from_secs(10));
    let _ = holder.kill();
    let _ = holder.wait();
    let st = wait_child(&mut d, Duration::from_secs(10)).expect("ends once nothing holds it");
    assert_eq!(st.code(), Some(0));
    let mut err = String::new();
    use std::io::Read;
    d.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("no longer loaded"), "{err}");
    env.wait_state("cv", "offline");
    // Mail from now on waits for the thread's hooks.
    let id = send_as(&env, "bob", "cv", "for the resume");
    let out = codex_hook(
        &env,
        "UserPromptSubmit",
        &[],
        r#"{"session_id":"th-8"}"#,
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
}

/// `setup codex --push` puts `--push` on the SessionStart hook only; run
/// again without it, it takes it off (the handler is ours either way).
#[test]
fn setup_codex_push_adds_it_to_session_start() {
    let env = Env::new();
    let home = env.tmp.path().join("codex-home");
    let setup = |args: &[&str]| {
        let out = env
            .cmd("k")
            .arg("setup")
            .arg("codex")
            .args(args)
            .env("CODEX_HOME", &home)
            .current_dir(env.tmp.path())
            .output()
            .expect("run setup");
        assert!(out.status.success(), "{out:?}");
    };
    let commands = || -> Vec<(String, String)> {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(home.join("hooks.json")).unwrap())
                .unwrap();
        let mut out = Vec::new();
        for (event, groups) in doc["hooks"].as_object().unwrap() {
            for g in groups.as_array().unwrap() {
                for h in g["hooks"].as_array().unwrap() {
                    out.push((event.clone(), h["command"].as_str().unwrap().to_string()));
                }
            }
        }
        out
    };
    setup(&["--push"]);
    let cmds = commands();
    assert_eq!(cmds.len(), 4, "{cmds:?}");
    for (event, cmd) in &cmds {
        assert_eq!(
            cmd.ends_with(" --push"),
            event == "SessionStart",
            "{cmds:?}"
        );
    }
    setup(&[]);
    let cmds = commands();
    assert_eq!(cmds.len(), 4, "{cmds:?}");
    assert!(cmds.iter().all(|(_, c)| !c.contains("--push")), "{cmds:?}");
}

/// One batch at a time: while the last batch still waits in Codex's queue
/// (`$CODEX_HOME/queue_1.sqlite`, `queued_items`, by the id `codex queue`
/// printed), the next one is not queued; once Codex took it, it is.
#[test]
fn the_next_batch_waits_until_codex_took_the_last() {
    let env = Env::new();
    let fake = FakeCodex::new(&env);
    let home = fake.dir.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    let db = rusqlite::Connection::open(home.join("queue_1.sqlite")).unwrap();
    db.execute_batch(
        "create table queued_items (id text primary key not null, thread_id text not null, \
         payload_json text not null, queue_order integer not null, created_at_ms integer not null, \
         updated_at_ms integer not null);
         insert into queued_items values ('item-1', 'th-9', '{}', 1, 0, 0);",
    )
    .unwrap();
    register(&env, "th-9", "cu");
    let mut d = deliverer(&env, &fake, "th-9");
    env.wait_online("cu");
    let a = send_as(&env, "bob", "cu", "first");
    fake.wait_calls(1, Duration::from_secs(10));
    wait_via(&env, &a, "codex-queue", Duration::from_secs(10));
    // item-1 (what the fake said it queued) is still in Codex's queue.
    let b = send_as(&env, "bob", "cu", "second");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());
    assert_eq!(via(&env, &b), "pending");
    // Codex takes it: the next batch goes.
    db.execute("delete from queued_items", []).unwrap();
    let calls = fake.wait_calls(2, Duration::from_secs(5));
    assert_eq!(calls[1], queue_argv("th-9", &line_for(&b, "bob", "second")));
    wait_via(&env, &b, "codex-queue", Duration::from_secs(10));
    signal(&d, libc::SIGTERM);
    assert_eq!(
        wait_child(&mut d, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}
