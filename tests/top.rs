//! `inter-session top` end to end: the real binary in a real tmux server of
//! each test's own (`tmux -S <temp dir>/tmux.sock`, never the user's
//! server), killed when the test ends, pass or fail (a Drop guard, which
//! also ends every `top` it saw). Keys go in with `send-keys`, the screen
//! comes out with `capture-pane`; every wait polls the screen (or a
//! monitor's output) with a deadline, never a fixed sleep. Without tmux
//! each test that needs it skips loudly (support/needs.rs); `--once` needs
//! no terminal and runs everywhere.
//!
//! The cases: sessions appear and change state (online, offline after
//! SIGTERM and after SIGKILL, left), a sent message on screen within a
//! second and an idle `top` using no CPU (both on both backends); the `/`
//! filter; `s` and `r` sending real messages that a monitor prints; Enter
//! opening a message with its thread; hostile database fields never acting
//! on the terminal; the terminal given back on `q`, Ctrl-C, SIGTERM and
//! SIGHUP; small and resized windows; `--once` (both backends).
//!
//! Run one: `cargo test --test top filter`.

#[path = "support/pg.rs"]
mod pg;
mod support;
#[macro_use]
#[path = "support/both.rs"]
mod both;
use both::{postgres_env, DB_VAR};

use support::*;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

on_both_backends!(
    sessions_appear_and_change_state,
    a_sent_message_appears_within_a_second,
    once_prints_one_plain_frame,
);

/// How long `top` may take to start, or a key to show its effect.
const READY: Duration = Duration::from_secs(10);
/// A change that a commit announces (file notification or NOTIFY) is on
/// screen within this.
const COMMITTED: Duration = Duration::from_secs(3);
/// The name `top` sends as.
const OPERATOR: &str = "boss";
/// Printed by the pane's shell before `top` starts, and after it ends.
const BEFORE: &str = "TOP-STARTING";
const EXITED: &str = "TOP-EXITED";
const SESSIONS: &str = "sessions";
const TRAFFIC: &str = "traffic (newest first)";
const RATE: &str = "messages a minute";
const POPUP: &str = "message (↑↓ scroll, Esc close)";
/// The footer when no mode or status is showing.
const KEYS_HINT: &str = "Tab pane";

// ---------------------------------------------------------------- tmux

/// `s` quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A tmux server of the test's own on a socket in the `Env`'s temp dir.
/// Dropping it kills the server, and then every `top` process it ran.
struct Tmux {
    sock: PathBuf,
    /// The `top` processes seen (ended on drop if the hang-up did not).
    pids: Mutex<Vec<i32>>,
}

impl Tmux {
    /// None (the test skipped loudly) when tmux is not installed.
    fn new(env: &Env) -> Option<Tmux> {
        have_tmux().then(|| Tmux {
            sock: env.tmp.path().join("tmux.sock"),
            pids: Mutex::new(Vec::new()),
        })
    }

    /// tmux on this server, with only this environment (nothing of the
    /// caller's tmux, Claude Code or inter-session settings).
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .env("SHELL", "/bin/sh")
            .arg("-u")
            .arg("-S")
            .arg(&self.sock)
            .args(["-f", "/dev/null"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    /// `run`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            stderr_of(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `top --as boss` in a new tmux session `name` of
    /// `cols`×`rows`, with `env`'s data folder (and database URL), and wait
    /// for its first frame. The pane's shell prints `BEFORE` first, and
    /// after `top` ends `TOP-EXITED <status>` and `stty -a`, then idles.
    fn top(&self, env: &Env, name: &str, (cols, rows): (u16, u16)) -> Top<'_> {
        let home = env.tmp.path().display().to_string();
        let data = env.data.display().to_string();
        let mut vars: Vec<(&str, &str)> = vec![
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("HOME", &home),
            ("INTER_SESSION_DATA_DIR", &data),
            ("INTER_SESSION_KEY", "top-operator"),
        ];
        vars.extend(env.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let assign: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("{k}={}", sh_quote(v)))
            .collect();
        let script = format!(
            "echo {BEFORE}; env {} {} top --as {OPERATOR}; echo {EXITED} $?; stty -a; \
             exec sleep 600",
            assign.join(" "),
            sh_quote(support::BIN),
        );
        let (cols, rows) = (cols.to_string(), rows.to_string());
        self.ok(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols,
            "-y",
            &rows,
            &script,
        ]);
        let mut top = Top {
            tmux: self,
            target: name.to_string(),
            pid: 0,
        };
        let pane_pid: i32 = top.format("#{pane_pid}").parse().expect("the pane's pid");
        // The pane runs sh; `top` is its child (`env` execs into it).
        let deadline = Instant::now() + READY;
        top.pid = loop {
            if let Some(pid) = child_named(pane_pid, "inter-session") {
                break pid;
            }
            let screen = top.joined();
            assert!(
                !screen.contains(EXITED) && Instant::now() < deadline,
                "top never started in pane {name}; the pane:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(top.pid);
        top.wait("top's first frame", READY, |s| {
            s.starts_with("inter-session top") && pane(s, SESSIONS).is_some()
        });
        top
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The hang-up ends every `top` (it restores the terminal and exits).
        let _ = self.run(&["kill-server"]);
        let pids = self.pids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in pids.iter().filter(|p| alive(**p)) {
            // SAFETY: kill(2) on a `top` this test started.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
    }
}

/// One `top` in a tmux session of its own.
struct Top<'a> {
    tmux: &'a Tmux,
    target: String,
    pid: i32,
}

impl Top<'_> {
    /// The screen as shown (the alternate screen while `top` runs).
    fn screen(&self) -> String {
        self.tmux.ok(&["capture-pane", "-p", "-t", &self.target])
    }

    /// The screen with wrapped lines joined (the shell's output).
    fn joined(&self) -> String {
        self.tmux
            .ok(&["capture-pane", "-p", "-J", "-t", &self.target])
    }

    /// A tmux format of this pane, e.g. `#{alternate_on}`.
    fn format(&self, f: &str) -> String {
        self.tmux
            .ok(&["display-message", "-p", "-t", &self.target, f])
            .trim()
            .to_string()
    }

    /// Keys by their tmux names (`Tab`, `Down`, `Enter`, `C-c`, `q`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.target];
        args.extend(keys);
        self.tmux.ok(&args);
    }

    /// Type `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux.ok(&["send-keys", "-t", &self.target, "-l", text]);
    }

    /// Poll the screen every 20 ms until `pred` holds on a whole frame
    /// (the screen is returned); fail after `timeout`, or at once if `top`
    /// exited. See `wait_seen`.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_seen(what, timeout, pred).0
    }

    /// Like `wait`, also returning when `pred` was first seen to hold. A
    /// frame is written in pieces, and a capture may catch one half drawn:
    /// the screen returned is one that two captures in a row agree on.
    fn wait_seen(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Instant) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut seen = None;
        loop {
            let s = self.screen();
            if pred(&s) {
                let at = *seen.get_or_insert_with(Instant::now);
                if s == last {
                    return (s, at);
                }
            } else {
                seen = None;
            }
            if s.contains(EXITED) {
                panic!(
                    "top exited while waiting for {what}; the pane:\n{}",
                    self.joined()
                );
            }
            // Held once: a little longer for the frame to settle.
            let limit = if seen.is_some() {
                deadline + Duration::from_secs(2)
            } else {
                deadline
            };
            assert!(
                Instant::now() < limit,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{s}"
            );
            last = s;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until `top` has ended and the shell printed `stty -a` after
    /// it; the pane's text.
    fn wait_exit(&self, what: &str) -> String {
        let deadline = Instant::now() + READY;
        loop {
            let s = self.joined();
            let after = s.split_once(EXITED).map(|(_, rest)| rest);
            if after.is_some_and(|r| r.contains("icanon")) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: top did not end (or stty did not run) within {READY:?}; the pane:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the `top` this test started.
        unsafe { libc::kill(self.pid, sig) };
    }

    fn running(&self) -> bool {
        alive(self.pid)
    }
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != "Z")
}

/// (comm, state, ppid) of `pid`, from /proc.
fn proc_stat(pid: i32) -> Option<(String, String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 2..].split_whitespace();
    let state = rest.next()?.to_string();
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// A live child of `ppid` whose command name is `comm`.
fn child_named(ppid: i32, comm: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            proc_stat(*pid)
                .is_some_and(|(c, state, parent)| parent == ppid && c == comm && state != "Z")
        })
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of proc(5); the text after
    // "(comm) " starts at field 3.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

// ---------------------------------------------------------------- the screen

/// Where a box titled `title…` is drawn whole: its top border `┌ title…┐`,
/// a side border on both sides of every row, its bottom border. Returns
/// (left column, right column, the rows inside without the borders).
fn pane_box(screen: &str, title: &str) -> Option<(usize, usize, Vec<String>)> {
    let rows: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let head: Vec<char> = format!("┌ {title}").chars().collect();
    let (y, x) = rows.iter().enumerate().find_map(|(y, r)| {
        r.windows(head.len())
            .position(|w| w == head.as_slice())
            .map(|x| (y, x))
    })?;
    let right = x + 1 + rows[y][x + 1..].iter().position(|&c| c == '┐')?;
    let mut inside = Vec::new();
    for r in &rows[y + 1..] {
        match (r.get(x), r.get(right)) {
            (Some('└'), Some('┘')) => return Some((x, right, inside)),
            (Some('│'), Some('│')) => inside.push(r[x + 1..right].iter().collect()),
            _ => return None,
        }
    }
    None
}

/// The rows inside the box titled `title…`, if it is drawn whole.
fn pane(screen: &str, title: &str) -> Option<Vec<String>> {
    pane_box(screen, title).map(|(_, _, rows)| rows)
}

/// The table rows of a pane: not its header, not blank, trimmed right.
fn table_rows(screen: &str, title: &str) -> Vec<String> {
    pane(screen, title)
        .unwrap_or_default()
        .into_iter()
        .skip(1)
        .map(|r| r.trim_end().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

/// The STATE cell of `name`'s row in the sessions pane.
fn state_of(screen: &str, name: &str) -> Option<String> {
    table_rows(screen, SESSIONS).into_iter().find_map(|r| {
        let mut cells = r.split_whitespace();
        (cells.next() == Some(name)).then(|| cells.next().unwrap_or_default().to_string())
    })
}

/// The names in the sessions pane.
fn session_names(screen: &str) -> Vec<String> {
    table_rows(screen, SESSIONS)
        .iter()
        .filter_map(|r| r.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The first line (the head).
fn head(screen: &str) -> &str {
    screen.lines().next().unwrap_or_default()
}

/// The last line that is not blank (the foot).
fn foot(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
}

/// The id in a `sent <id> -> …` foot.
fn sent_in_foot(screen: &str) -> String {
    let id = foot(screen)
        .strip_prefix("sent ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert!(is_ulid(&id), "no sent id in the foot: {:?}", foot(screen));
    id
}

/// Exactly `rows` lines, none wider than `cols`.
fn fits(screen: &str, cols: usize, rows: usize) -> bool {
    screen.lines().count() == rows && screen.lines().all(|l| l.chars().count() <= cols)
}

fn is_postgres(env: &Env) -> bool {
    env.var(DB_VAR).is_some()
}

// ---------------------------------------------------------------- cases

/// No sessions: the pane says how to start one. A monitor shows as online;
/// SIGTERM makes it offline (its clean exit commits: at once), SIGKILL too
/// (no commit: the 5 s tick re-reads liveness); disconnect makes it left.
fn sessions_appear_and_change_state(env: &Env) {
    assert_eq!(env.sql("select count(*) from sessions"), "0");
    let Some(tmux) = Tmux::new(env) else { return };
    let top = tmux.top(env, "top", (100, 30));
    top.wait("the hint to start a session", READY, |s| {
        pane(s, SESSIONS).is_some_and(|p| p.join("\n").contains("No sessions yet"))
    });

    let alice = env.monitor("alice", &["--name", "alice"]);
    let dave = env.monitor("dave", &["--name", "dave"]);
    for name in ["alice", "dave"] {
        top.wait(&format!("{name} online"), READY, |s| {
            state_of(s, name).as_deref() == Some("online")
        });
    }
    let s = top.screen();
    assert!(
        !s.contains("No sessions yet"),
        "the hint stayed with sessions listed:\n{s}"
    );

    let killed = Instant::now();
    alice.stop();
    let (_, seen) = top.wait_seen("alice offline after SIGTERM", Duration::from_secs(6), |s| {
        state_of(s, "alice").as_deref() == Some("offline")
    });
    let took = seen.duration_since(killed);
    eprintln!("offline after SIGTERM on screen in {took:?}");
    assert!(took < Duration::from_secs(6), "offline after {took:?}");
    assert_eq!(
        state_of(&top.screen(), "dave").as_deref(),
        Some("online"),
        "dave went with alice"
    );

    // SIGKILL: nothing is committed; only the tick (every 5 s) sees it.
    let killed = Instant::now();
    dave.kill();
    let (_, seen) = top.wait_seen("dave offline after SIGKILL", Duration::from_secs(7), |s| {
        state_of(s, "dave").as_deref() == Some("offline")
    });
    let took = seen.duration_since(killed);
    eprintln!("offline after SIGKILL on screen in {took:?}");
    assert!(
        took < Duration::from_secs(7),
        "offline after {took:?} (one 5 s tick)"
    );

    env.ok("alice", &["--from", "alice", "disconnect"]);
    top.wait("alice left after disconnect", COMMITTED, |s| {
        state_of(s, "alice").as_deref() == Some("left")
    });
    assert_eq!(state_of(&top.screen(), "dave").as_deref(), Some("offline"));
    assert!(top.running(), "top is gone");
}

/// A message on screen within a second of its send's return (two on
/// PostgreSQL, LISTEN/NOTIFY): `top` wakes on the store's notification.
/// Idle, it uses next to no CPU (no busy loop).
fn a_sent_message_appears_within_a_second(env: &Env) {
    register(env, "alice");
    register(env, "bob");
    let Some(tmux) = Tmux::new(env) else { return };
    let top = tmux.top(env, "top", (100, 30));
    top.wait("alice and bob listed", READY, |s| {
        state_of(s, "alice").is_some() && state_of(s, "bob").is_some()
    });
    let bound = if is_postgres(env) {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(1)
    };
    let text = format!("ping-{}", std::process::id());
    env.ok(
        "bob",
        &[
            "--from", "bob", "mail", "send", "--to", "alice", "--text", &text,
        ],
    );
    let returned = Instant::now();
    let (s, seen) = top.wait_seen("the message on screen", READY, |s| {
        table_rows(s, TRAFFIC).iter().any(|r| r.contains(&text))
    });
    let took = seen.duration_since(returned);
    eprintln!("send -> on screen: {took:?}");
    assert!(took < bound, "on screen after {took:?} (bound {bound:?})");
    let row = table_rows(&s, TRAFFIC)
        .into_iter()
        .find(|r| r.contains(&text))
        .expect("the row");
    assert!(row.contains("bob → alice"), "row {row:?}");

    // Idle: a few seconds of wall time, next to no CPU.
    let before = cpu_seconds(top.pid);
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let used = cpu_seconds(top.pid) - before;
    eprintln!("idle top: {used:.3} CPU-s in {window:?}");
    assert!(used < 0.2, "an idle top used {used:.3} CPU-s in {window:?}");
    assert!(top.running(), "top is gone");
}

/// `/car` Enter keeps carol and the traffic mentioning carol only;
/// `/` Backspace×3 Enter brings everything back.
#[test]
fn filter_narrows_sessions_and_traffic() {
    let env = Env::new();
    for name in ["alice", "bob", "carol"] {
        register(&env, name);
    }
    send_as(&env, "alice", "bob", "hello bob");
    send_as(&env, "bob", "carol", "hi there");
    send_as(&env, "carol", "alice", "from the third");
    send_as(&env, "alice", "bob", "lunch?");
    let Some(tmux) = Tmux::new(&env) else { return };
    let top = tmux.top(&env, "top", (100, 30));
    let everything = |s: &str| {
        session_names(s) == ["alice", "bob", "carol"] && table_rows(s, TRAFFIC).len() == 4
    };
    top.wait("three sessions and four messages", READY, everything);

    top.keys(&["/"]);
    top.wait("the filter prompt", READY, |s| {
        foot(s).starts_with("filter /")
    });
    top.type_text("car");
    top.wait("the typed filter", READY, |s| {
        foot(s).starts_with("filter /car") && session_names(s) == ["carol"]
    });
    top.keys(&["Enter"]);
    let s = top.wait("the filter kept", READY, |s| {
        foot(s).starts_with(KEYS_HINT) && head(s).contains("filter /car")
    });
    assert_eq!(session_names(&s), ["carol"], "sessions:\n{s}");
    let traffic = table_rows(&s, TRAFFIC);
    assert_eq!(traffic.len(), 2, "traffic:\n{s}");
    assert!(
        traffic.iter().all(|r| r.contains("carol")),
        "traffic without carol:\n{s}"
    );
    assert!(traffic.iter().any(|r| r.contains("bob → carol")), "{s}");
    assert!(traffic.iter().any(|r| r.contains("carol → alice")), "{s}");

    top.keys(&["/"]);
    top.wait("the filter prompt again", READY, |s| {
        foot(s).starts_with("filter /car")
    });
    top.keys(&["BSpace", "BSpace", "BSpace"]);
    top.wait("the filter emptied", READY, |s| {
        foot(s).starts_with("filter /▏")
    });
    top.keys(&["Enter"]);
    let s = top.wait("everything back", READY, |s| {
        foot(s).starts_with(KEYS_HINT) && everything(s)
    });
    assert!(!head(&s).contains("filter /"), "head: {}", head(&s));
}

/// `s` on the selected session sends a real message (alice's monitor
/// prints it, from the `--as` name); `r` on a message in the traffic pane
/// replies to its sender in its thread.
#[test]
fn compose_sends_a_real_message_that_a_monitor_prints() {
    let env = Env::new();
    for name in ["aaron", "bob", "carol"] {
        register(&env, name);
    }
    let mut alice = monitor_up(&env, "alice", "alice");
    let Some(tmux) = Tmux::new(&env) else { return };
    let top = tmux.top(&env, "top", (100, 30));
    top.wait("alice online, second", READY, |s| {
        session_names(s) == ["aaron", "alice", "bob", "carol"]
            && state_of(s, "alice").as_deref() == Some("online")
    });

    // aaron is selected first: one row down is alice.
    top.keys(&["Down"]);
    top.keys(&["s"]);
    top.wait("the compose prompt to alice", READY, |s| {
        foot(s).starts_with(&format!("to alice as {OPERATOR}: "))
    });
    let text = "hello from top, alice";
    top.type_text(text);
    top.wait("the typed text", READY, |s| foot(s).contains(text));
    top.keys(&["Enter"]);
    let s = top.wait("the send's receipt", READY, |s| {
        foot(s).starts_with("sent ")
    });
    let id = sent_in_foot(&s);
    assert!(foot(&s).contains("-> alice"), "foot: {}", foot(&s));
    let line = alice.until(READY, |l| line_id(l) == Some(id.as_str()));
    assert_eq!(
        line,
        format!("[inter-session msg={id} from=\"{OPERATOR}\"] {text}")
    );

    // A reply: alice asks bob; carol's later message is on top of it.
    let question = send_as(&env, "alice", "bob", "which branch?");
    send_as(&env, "carol", "bob", "noise");
    top.wait("both messages listed", READY, |s| {
        let rows = table_rows(s, TRAFFIC);
        rows.len() == 3 && rows[0].contains("noise") && rows[1].contains("which branch?")
    });
    top.keys(&["Tab"]);
    top.keys(&["Down"]);
    top.keys(&["r"]);
    top.wait("the reply prompt", READY, |s| {
        foot(s).starts_with(&format!("reply to alice (re={question}) as {OPERATOR}: "))
    });
    let reply = "main, rebased";
    top.type_text(reply);
    top.wait("the typed reply", READY, |s| foot(s).contains(reply));
    top.keys(&["Enter"]);
    let s = top.wait("the reply's receipt", READY, |s| {
        foot(s).starts_with("sent ") && !foot(s).contains(&id)
    });
    let reply_id = sent_in_foot(&s);
    let line = alice.until(READY, |l| line_id(l) == Some(reply_id.as_str()));
    assert_eq!(
        line,
        format!("[inter-session msg={reply_id} from=\"{OPERATOR}\" re={question}] {reply}")
    );
    assert_eq!(
        env.sql(&format!(
            "select thread_id from messages where id = '{reply_id}'"
        )),
        question,
        "the reply is not in the question's thread"
    );
}

/// Enter on a message opens its full text (every line of it) and its
/// thread; Escape closes the popup and `top` goes on.
#[test]
fn enter_opens_the_message_and_its_thread() {
    let env = Env::new();
    register(&env, "alice");
    register(&env, "bob");
    let root = send_as(&env, "alice", "bob", "root question");
    let body = "first line of the answer\nsecond line of the answer\nthird line, tail-marker-42";
    let answer = sent_id(&env.ok(
        "bob",
        &[
            "--from",
            "bob",
            "--force",
            "mail",
            "send",
            "--to",
            "alice",
            "--reply-to",
            &root,
            "--text",
            body,
        ],
    ));
    env.ok(
        "alice",
        &[
            "--from",
            "alice",
            "--force",
            "mail",
            "send",
            "--to",
            "bob",
            "--reply-to",
            &answer,
            "--text",
            "thanks",
        ],
    );
    let Some(tmux) = Tmux::new(&env) else { return };
    let top = tmux.top(&env, "top", (100, 30));
    let s = top.wait("the three messages", READY, |s| {
        table_rows(s, TRAFFIC).len() == 3
    });
    let rows = table_rows(&s, TRAFFIC);
    assert!(
        rows[1].contains("first line of the answer↵second"),
        "a multi-line text is one row in the traffic pane:\n{s}"
    );

    top.keys(&["Tab"]);
    top.keys(&["Down"]);
    top.keys(&["Enter"]);
    let s = top.wait("the message popup", READY, |s| pane(s, POPUP).is_some());
    let popup: Vec<String> = pane(&s, POPUP)
        .expect("popup")
        .iter()
        .map(|r| r.trim_end().to_string())
        .collect();
    let at = |want: &str| {
        popup
            .iter()
            .position(|r| r == want)
            .unwrap_or_else(|| panic!("no popup row {want:?}:\n{s}"))
    };
    at(&format!("message {answer}"));
    at("from    bob");
    let (one, two, three) = (
        at("first line of the answer"),
        at("second line of the answer"),
        at("third line, tail-marker-42"),
    );
    assert!(one < two && two < three, "the lines out of order:\n{s}");
    let thread = at("thread (3 messages)");
    assert!(thread > three, "the thread before the text:\n{s}");
    let listed: Vec<&String> = popup[thread..]
        .iter()
        .filter(|r| r.contains(" -> "))
        .collect();
    assert_eq!(listed.len(), 3, "thread rows:\n{s}");
    assert!(listed[0].contains("alice -> bob: root question"), "{s}");
    assert!(
        listed[1].starts_with("> ") && listed[1].contains("bob -> alice: first line"),
        "the opened message is not marked:\n{s}"
    );
    assert!(listed[2].contains("alice -> bob: thanks"), "{s}");

    // Escape on its own (crossterm reads ESC and a quick key as Alt+key).
    top.keys(&["Escape"]);
    let s = top.wait("the popup closed", READY, |s| {
        pane(s, POPUP).is_none() && pane(s, TRAFFIC).is_some()
    });
    assert!(foot(&s).starts_with(KEYS_HINT), "foot: {}", foot(&s));
    assert!(top.running(), "Escape closing the popup also quit top");
}

/// Names, labels, folders and texts written into the database without
/// validation (as a hostile peer of a shared mailbox could): nothing of
/// them acts on the terminal. No ESC, BEL, CR or bidi override on screen,
/// the pane title unchanged, no bell, every box whole; the escaped or
/// cleaned forms shown instead; the same in the message popup and in
/// `--once`.
#[test]
fn hostile_fields_never_reach_the_terminal_raw() {
    const NAME: &str = "mal\x1b[31mlory\x1b]0;pwned-name\x07\r\u{202e}x";
    const LABEL: &str = "\x1b]0;pwned-label\x07lab\x1b[5mel\r\u{202e}";
    const CWD: &str = "/tmp/\x1b]0;pwned-cwd\x07\x1b[2J";
    const PROJECT: &str = "/srv/proj\x1b]0;pwned-project\x07\x1b[41m\r\u{202e}x";
    const TEXT: &str = "RED\x1b[31m alert\x1b]0;pwned-text\x07\rCR\x07\u{202e}bidi\nline2";
    let env = Env::new();
    register(&env, "alice");
    register(&env, "mallory");
    let hostile = send_as(&env, "mallory", "alice", "placeholder one");
    send_as(&env, "alice", "mallory", "placeholder two");
    {
        let db = rusqlite::Connection::open(env.db()).expect("open mailbox.db");
        db.busy_timeout(Duration::from_secs(5)).expect("busy");
        let n = db
            .execute(
                "UPDATE sessions SET name = ?1, label = ?2, cwd = ?3, project = ?4 \
                 WHERE name = 'mallory'",
                rusqlite::params![NAME, LABEL, CWD, PROJECT],
            )
            .expect("hostile session");
        assert_eq!(n, 1);
        let n = db
            .execute(
                "UPDATE messages SET sender = ?1, text = ?2 WHERE id = ?3",
                rusqlite::params![NAME, TEXT, hostile],
            )
            .expect("hostile message");
        assert_eq!(n, 1);
    }
    let Some(tmux) = Tmux::new(&env) else { return };
    // The title a pane starts with, from a pane that shows no data.
    tmux.ok(&["new-session", "-d", "-s", "control", "exec sleep 600"]);
    let title = tmux
        .ok(&["display-message", "-p", "-t", "control", "#{pane_title}"])
        .trim()
        .to_string();
    let top = tmux.top(&env, "top", (220, 40));
    let clean = |what: &str, boxes: &[&str]| -> String {
        let s = top.screen();
        for (c, name) in [
            ('\x1b', "ESC"),
            ('\x07', "BEL"),
            ('\r', "CR"),
            ('\u{202e}', "U+202E"),
        ] {
            assert!(!s.contains(c), "{what}: {name} on screen:\n{s}");
        }
        assert!(!s.contains("pwned-text"), "{what}: an OSC's payload shown");
        assert_eq!(
            top.format("#{pane_title}"),
            title,
            "{what}: the data changed the pane title"
        );
        assert_eq!(
            top.format("#{window_bell_flag}"),
            "0",
            "{what}: a BEL reached the terminal"
        );
        assert!(
            s.starts_with("inter-session top"),
            "{what}: the head line is gone:\n{s}"
        );
        for b in boxes {
            assert!(pane(&s, b).is_some(), "{what}: the {b} box is broken:\n{s}");
        }
        s
    };

    // Both messages drawn (loosely: `clean` says what is wrong, if anything).
    top.wait("both messages", READY, |s| {
        s.contains("placeholder two") && s.contains("alert")
    });
    let s = clean("the main view", &[SESSIONS, TRAFFIC]);
    let sessions = table_rows(&s, SESSIONS);
    let row = sessions
        .iter()
        .find(|r| r.starts_with("?mal\\u{1b}"))
        .unwrap_or_else(|| panic!("the hostile name is not shown escaped:\n{s}"));
    assert!(
        row.contains("?\\u{1b}\\u{5d}0;"),
        "the hostile label is not shown escaped: {row:?}"
    );
    assert!(row.contains("proj↵x"), "the project not cleaned: {row:?}");
    let traffic = table_rows(&s, TRAFFIC);
    let from_mallory = traffic
        .iter()
        .find(|r| r.contains("RED alert↵CRbidi↵line2"))
        .unwrap_or_else(|| panic!("the hostile text is not shown cleaned:\n{s}"));
    assert!(from_mallory.contains("?mal\\u{1b}"), "{from_mallory:?}");
    assert!(
        traffic.iter().any(|r| r.contains("alice → mallory↵x")),
        "the hostile recipient is not shown cleaned:\n{s}"
    );

    // The message popup.
    top.keys(&["Tab"]);
    top.keys(&["Down"]);
    top.keys(&["Enter"]);
    top.wait("the hostile message's popup", READY, |s| {
        pane(s, POPUP).is_some()
    });
    let s = clean("the popup", &[POPUP]);
    let popup: Vec<String> = pane(&s, POPUP)
        .expect("popup")
        .iter()
        .map(|r| r.trim_end().to_string())
        .collect();
    assert!(
        popup.iter().any(|r| r.starts_with("from    ?mal\\u{1b}")),
        "{s}"
    );
    for want in ["RED alert", "CRbidi", "line2"] {
        assert!(
            popup.iter().any(|r| r == want),
            "no popup row {want:?}:\n{s}"
        );
    }
    top.keys(&["Escape"]);
    top.wait("the popup closed", READY, |s| pane(s, POPUP).is_none());
    clean("after the popup", &[SESSIONS, TRAFFIC]);
    assert!(top.running());

    let out = env.run("probe", &["top", "--once", "--size", "200x30"]);
    assert!(out.status.success(), "--once: {}", stderr_of(&out));
    let text = stdout_of(&out);
    for (c, name) in [
        ('\x1b', "ESC"),
        ('\x07', "BEL"),
        ('\r', "CR"),
        ('\u{202e}', "U+202E"),
    ] {
        assert!(!text.contains(c), "--once printed {name}:\n{text}");
    }
    assert!(text.contains("RED alert↵CRbidi↵line2"), "--once:\n{text}");
}

/// After `q`, Ctrl-C, SIGTERM and SIGHUP alike: exit 0, the main screen
/// back with what was on it, the cursor shown, mouse reporting off, and
/// the tty in cooked mode again (`stty -a`: icanon, echo, isig, opost).
#[test]
fn the_terminal_is_restored_on_q_sigterm_sighup_and_ctrl_c() {
    let env = Env::new();
    register(&env, "alice");
    let Some(tmux) = Tmux::new(&env) else { return };
    let ways = ["q", "ctrl-c", "sigterm", "sighup"];
    let tops: Vec<Top> = ways.iter().map(|w| tmux.top(&env, w, (100, 30))).collect();
    for (way, top) in ways.iter().zip(&tops) {
        assert_eq!(
            top.format("#{alternate_on} #{cursor_flag} #{mouse_any_flag}"),
            "1 0 1",
            "{way}: while top runs: alternate screen, cursor hidden, mouse on"
        );
        match *way {
            "q" => top.keys(&["q"]),
            "ctrl-c" => top.keys(&["C-c"]),
            "sigterm" => top.signal(libc::SIGTERM),
            _ => top.signal(libc::SIGHUP),
        }
    }
    for (way, top) in ways.iter().zip(&tops) {
        let s = top.wait_exit(way);
        assert!(
            s.lines().any(|l| l.trim() == format!("{EXITED} 0")),
            "{way}: not exit 0:\n{s}"
        );
        assert!(
            s.lines().any(|l| l.trim() == BEFORE),
            "{way}: the main screen's text is not back:\n{s}"
        );
        assert!(
            !s.contains("oldest undelivered"),
            "{way}: top's frame was drawn on the main screen:\n{s}"
        );
        assert_eq!(
            top.format("#{alternate_on} #{cursor_flag} #{mouse_any_flag}"),
            "0 1 0",
            "{way}: after top: main screen, cursor shown, mouse off"
        );
        let stty: Vec<&str> = s
            .split_once(EXITED)
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        for flag in ["icanon", "echo", "isig", "opost"] {
            assert!(
                stty.contains(&flag) && !stty.contains(&format!("-{flag}").as_str()),
                "{way}: the tty is not back in cooked mode ({flag}):\n{s}"
            );
        }
        assert!(!top.running(), "{way}: top still runs");
    }
}

/// 40×12 shows the sessions and traffic boxes whole; resized to 120×40
/// and back, `top` keeps running and redraws for each size.
#[test]
fn small_and_resized_terminals_work() {
    let env = Env::new();
    register(&env, "alice");
    register(&env, "bob");
    send_as(&env, "bob", "alice", "small screens");
    let Some(tmux) = Tmux::new(&env) else { return };
    let top = tmux.top(&env, "top", (40, 12));
    let frame = |s: &str, cols: usize, rows: usize| {
        fits(s, cols, rows)
            && s.starts_with("inter-session top")
            && session_names(s) == ["alice", "bob"]
            && table_rows(s, TRAFFIC)
                .iter()
                .any(|r| r.contains("small screens"))
            // The traffic box reaches the right edge: drawn for this width.
            && pane_box(s, TRAFFIC).is_some_and(|(_, right, _)| right == cols - 1)
    };
    let small = |s: &str| frame(s, 40, 12) && pane(s, RATE).is_none();
    top.wait("the 40x12 frame", READY, small);

    tmux.ok(&["resize-window", "-t", "top", "-x", "120", "-y", "40"]);
    top.wait("the 120x40 frame, with the rate chart", READY, |s| {
        frame(s, 120, 40) && pane(s, RATE).is_some()
    });
    assert!(top.running(), "top ended on growing");

    tmux.ok(&["resize-window", "-t", "top", "-x", "40", "-y", "12"]);
    let s = top.wait("the 40x12 frame again", READY, small);
    assert!(top.running(), "top ended on shrinking");
    assert!(
        s.lines().all(|l| !l.contains("messages a minute")),
        "the big frame's chart left behind:\n{s}"
    );
}

/// `--once` with stdout piped: one plain frame of the asked size; a bad
/// size is a usage error; the live view without a terminal says to use
/// `--once`.
fn once_prints_one_plain_frame(env: &Env) {
    register(env, "alice");
    register(env, "bob");
    send_as(env, "bob", "alice", "one frame");
    let out = env.run("probe", &["top", "--once", "--size", "100x25"]);
    assert!(out.status.success(), "--once: {}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(!text.contains('\x1b'), "an ESC in the frame:\n{text}");
    assert!(text.ends_with('\n'), "no final newline");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 25, "frame:\n{text}");
    for l in &lines {
        assert!(l.chars().count() <= 100, "a line over 100 columns: {l:?}");
    }
    assert!(lines[0].starts_with("inter-session top"), "{text}");
    assert!(lines[0].contains("oldest undelivered"), "{text}");
    assert_eq!(session_names(&text), ["alice", "bob"], "{text}");
    assert!(
        table_rows(&text, TRAFFIC)
            .iter()
            .any(|r| r.contains("bob → alice") && r.contains("one frame")),
        "{text}"
    );

    let out = env.run("probe", &["top", "--once", "--size", "5x5"]);
    let err = refused(&out, 2, "top --once --size 5x5");
    assert!(err.contains("--size"), "{err}");

    let out = env.run("probe", &["top"]);
    let err = refused(&out, 1, "top without a terminal");
    assert!(err.contains("--once"), "{err}");
}
