//! End-to-end benchmark: `cargo bench --bench e2e [-- --quick] [-- --only send,latency]
//! [-- --json out.json]`.
//!
//! Drives the real release binary and real monitors in temp data folders,
//! always with a clean environment (no `CLAUDE*` / `INTER_SESSION*` variables
//! from the caller; `INTER_SESSION_DATA_DIR` and `INTER_SESSION_KEY` set;
//! `--pace off`), and prints one markdown table. There are no timing
//! assertions: each row shows its target and whether it is met. Each row does
//! check correctness (every message printed, none lost); a failed check makes
//! the run exit 1 after the table is printed.
//!
//! Method notes: the footprint row idles its monitor in a data folder of its
//! own on a background thread while the other rows run (nothing writes
//! there, so it stays idle). Fan-out samples start from idle monitors: each
//! waits (up to 3 s) until all deliveries of the previous broadcast are
//! marked. The history row alternates single samples between the empty and
//! the 1M-row database so machine drift hits both alike. Temp folders live in
//! the system temp dir and are removed when each row ends.

#[path = "../tests/support/pg.rs"]
mod pg;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use inter_session::store::postgres::PostgresStore;
use inter_session::store::sqlite::SqliteStore;
use inter_session::store::{Mailbox, NewMessage, Recipients, State, Verbs};

const BIN: &str = env!("CARGO_BIN_EXE_inter-session");

/// How long any single expected line may take before it counts as lost.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- options --

const ROW_KEYS: &[(&str, &str)] = &[
    (
        "floor",
        "process floor: a minimal Rust binary vs `--version`",
    ),
    ("send", "CLI `mail send` wall time"),
    ("latency", "send → monitor line printed"),
    ("throughput", "sustained throughput (4 senders)"),
    ("inproc", "in-process send+deliver"),
    ("fanout", "broadcast fan-out to 50 monitors"),
    ("footprint", "monitor footprint (idle)"),
    ("history", "history growth (1M rows)"),
    ("replay", "offline replay of 10k"),
    ("task", "`task post` → claimed task line printed"),
    (
        "task-fanout",
        "100 tasks fanned out to 4 workers, end to end",
    ),
    ("top", "`top`: send → on screen, and idle CPU"),
    ("pg-send", "PostgreSQL: CLI `mail send` wall time"),
    ("pg-latency", "PostgreSQL: send → monitor line printed"),
    (
        "pg-throughput",
        "PostgreSQL: sustained throughput (4 senders)",
    ),
];

struct Opts {
    quick: bool,
    json: Option<PathBuf>,
    only: Option<Vec<String>>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut opts = Opts {
            quick: false,
            json: None,
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {}
                "--quick" => opts.quick = true,
                "--json" => {
                    opts.json = Some(args.next().context("--json needs a file")?.into());
                }
                "--only" => {
                    let list = args
                        .next()
                        .context("--only needs a list, e.g. send,latency")?;
                    let keys: Vec<String> = list
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for k in &keys {
                        if !ROW_KEYS.iter().any(|(key, _)| key == k) {
                            bail!("unknown row '{k}' in --only; rows: {}", row_list());
                        }
                    }
                    opts.only = Some(keys);
                }
                "-h" | "--help" => {
                    println!(
                        "cargo bench --bench e2e -- [--quick] [--only ROWS] [--json FILE]\n\n  \
                         --quick       smaller sample counts (smoke run, under ~40 s)\n  \
                         --only ROWS   comma-separated subset of: {}\n  \
                         --json FILE   also write the numbers as JSON",
                        row_list()
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument '{other}' (try --help)"),
            }
        }
        Ok(opts)
    }

    fn wants(&self, key: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    }
}

fn row_list() -> String {
    ROW_KEYS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(",")
}

/// Sample counts and durations for one run.
struct Plan {
    sends: usize,
    latency: usize,
    throughput: Duration,
    inproc: usize,
    fanout_monitors: usize,
    fanout_samples: usize,
    idle: Duration,
    cpu_window: Duration,
    history_rows: usize,
    history_samples: usize,
    replay_msgs: usize,
    replay_samples: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                sends: 100,
                latency: 100,
                throughput: Duration::from_secs(2),
                inproc: 10_000,
                fanout_monitors: 50,
                fanout_samples: 6,
                idle: Duration::from_secs(5),
                cpu_window: Duration::from_secs(5),
                history_rows: 1_000_000,
                history_samples: 60,
                replay_msgs: 10_000,
                replay_samples: 1,
            }
        } else {
            Plan {
                sends: 500,
                latency: 500,
                throughput: Duration::from_secs(5),
                inproc: 100_000,
                fanout_monitors: 50,
                fanout_samples: 50,
                idle: Duration::from_secs(60),
                cpu_window: Duration::from_secs(10),
                history_rows: 1_000_000,
                history_samples: 250,
                replay_msgs: 10_000,
                replay_samples: 3,
            }
        }
    }
}

// ------------------------------------------------------------------- rows --

#[derive(Clone, Copy)]
struct Stats {
    min: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Nearest-rank percentiles.
fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).saturating_sub(1);
        v[i.min(v.len() - 1)]
    };
    Some(Stats {
        min: v[0],
        p50: rank(0.50),
        p99: rank(0.99),
        max: v[v.len() - 1],
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Row {
    key: &'static str,
    title: String,
    /// Samples behind the distribution (0 when none applies).
    n: usize,
    unit: &'static str,
    dist: Option<Stats>,
    result: f64,
    result_unit: &'static str,
    result_text: String,
    target: String,
    met: bool,
    /// Correctness check, in words.
    check: String,
    ok: bool,
    notes: Vec<String>,
    /// The raw samples behind `dist`, for the JSON file.
    samples: Vec<f64>,
}

impl Row {
    fn new(key: &'static str, title: impl Into<String>) -> Row {
        Row {
            key,
            title: title.into(),
            n: 0,
            unit: "",
            dist: None,
            result: f64::NAN,
            result_unit: "",
            result_text: String::new(),
            target: String::new(),
            met: false,
            check: String::new(),
            ok: false,
            notes: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Set the distribution from raw samples.
    fn set_samples(&mut self, unit: &'static str, samples: Vec<f64>) {
        self.unit = unit;
        self.n = samples.len();
        self.dist = stats(&samples);
        self.samples = samples;
    }

    fn failed(key: &'static str, title: &str, err: &anyhow::Error) -> Row {
        let mut r = Row::new(key, title);
        r.result_text = "—".into();
        r.target = "—".into();
        r.check = format!("ERROR: {err:#}");
        r
    }

    fn json(&self) -> serde_json::Value {
        let num = |x: f64| {
            if x.is_finite() {
                serde_json::json!(x)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({
            "key": self.key,
            "title": self.title,
            "n": self.n,
            "unit": self.unit,
            "min": self.dist.map(|d| num(d.min)),
            "p50": self.dist.map(|d| num(d.p50)),
            "p99": self.dist.map(|d| num(d.p99)),
            "max": self.dist.map(|d| num(d.max)),
            "result": num(self.result),
            "result_unit": self.result_unit,
            "target": self.target,
            "met": self.met,
            "check": self.check,
            "ok": self.ok,
            "notes": self.notes,
            // Large sample sets (the in-process row) are left out.
            "samples": if self.samples.len() <= 5000 { self.samples.clone() } else { Vec::new() },
        })
    }
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "—".into()
    } else if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn progress(msg: &str) {
    eprintln!("[e2e] {msg}");
}

// -------------------------------------------------------------- processes --

/// Variables never passed to children: the bench may itself run inside
/// Claude Code, or in a shell with an inter-session session of its own.
fn scrubbed_vars() -> &'static [OsString] {
    static VARS: OnceLock<Vec<OsString>> = OnceLock::new();
    VARS.get_or_init(|| {
        std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| {
                let k = k.to_string_lossy();
                k.starts_with("CLAUDE") || k.starts_with("INTER_SESSION")
            })
            .collect()
    })
}

// -------------------------------------------------------------- backends --

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The row key of `base` ("send" → "pg-send").
    fn key(self, base: &'static str) -> &'static str {
        match (self, base) {
            (Backend::Sqlite, _) => base,
            (Backend::Postgres, "send") => "pg-send",
            (Backend::Postgres, "latency") => "pg-latency",
            (Backend::Postgres, "throughput") => "pg-throughput",
            (Backend::Postgres, _) => base,
        }
    }

    /// A temp folder tag (and database name part).
    fn tag(self, base: &'static str) -> &'static str {
        self.key(base)
    }
}

fn row_title(key: &str) -> &'static str {
    ROW_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("?", |(_, t)| t)
}

/// The PostgreSQL server the `pg-*` rows use: `INTER_SESSION_BENCH_PG_URL`
/// (a URL whose role may create databases), else a throwaway cluster started
/// with `.ci/pg-throwaway` (PostgreSQL installed, as CI does) and stopped at
/// the end. Each row gets a new empty database on it.
struct PgServer {
    admin_url: String,
    /// Set when we started the cluster (and so stop it).
    root: Option<String>,
    made: std::sync::atomic::AtomicUsize,
}

static PG: OnceLock<std::result::Result<PgServer, String>> = OnceLock::new();

fn pg_server() -> std::result::Result<&'static PgServer, String> {
    PG.get_or_init(PgServer::find)
        .as_ref()
        .map_err(Clone::clone)
}

/// The throwaway-cluster script, when this checkout has it.
fn pg_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-throwaway")
}

impl PgServer {
    fn find() -> std::result::Result<PgServer, String> {
        if let Some(url) = std::env::var("INTER_SESSION_BENCH_PG_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok(PgServer {
                admin_url: url,
                root: None,
                made: Default::default(),
            });
        }
        let script = pg_script();
        if !script.exists() {
            return Err(format!(
                "no PostgreSQL: set INTER_SESSION_BENCH_PG_URL ({} is missing)",
                script.display()
            ));
        }
        progress("postgres: starting a throwaway cluster (.ci/pg-throwaway start) …");
        let out = Command::new(&script)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "no PostgreSQL: set INTER_SESSION_BENCH_PG_URL, or install PostgreSQL so that {} can start a cluster ({})",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Lines of `export NAME='value'`.
        let text = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(&format!("export {name}="))
                    .map(|v| v.trim_matches('\'').to_string())
            })
        };
        match (
            var("INTER_SESSION_TEST_PG_URL"),
            var("INTER_SESSION_TEST_PG_ROOT"),
        ) {
            (Some(url), Some(root)) => Ok(PgServer {
                admin_url: url,
                root: Some(root),
                made: Default::default(),
            }),
            _ => Err(format!(
                "unexpected output from {}: {text}",
                script.display()
            )),
        }
    }

    /// CREATE DATABASE and return its URL.
    fn fresh_database(&self, tag: &str) -> Result<String> {
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("bench_{}_{}_{n}", tag.replace('-', "_"), std::process::id());
        let mut admin = postgres::Client::connect(&self.admin_url, postgres::NoTls)
            .context("could not connect to the benchmark's PostgreSQL server")?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("could not create database {name}"))?;
        Ok(pg::with_db(&self.admin_url, &name))
    }

    fn stop(&self) {
        if let Some(root) = &self.root {
            let _ = Command::new(pg_script())
                .arg("stop")
                .env("INTER_SESSION_TEST_PG_ROOT", root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// One temp data folder, and the mailbox its commands use: SQLite in the
/// folder, or a fresh PostgreSQL database.
struct Folder {
    tmp: tempfile::TempDir,
    data: PathBuf,
    /// `INTER_SESSION_DATABASE_URL` for every command (PostgreSQL rows).
    url: Option<String>,
}

impl Folder {
    fn new(tag: &str) -> Result<Folder> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("inter-session-bench-{tag}-"))
            .tempdir()
            .context("tempdir")?;
        let data = tmp.path().join("data");
        Ok(Folder {
            tmp,
            data,
            url: None,
        })
    }

    /// A folder whose mailbox lives on `backend` (a new empty database for
    /// PostgreSQL).
    fn on(tag: &str, backend: Backend) -> Result<Folder> {
        let mut f = Folder::new(tag)?;
        if backend == Backend::Postgres {
            let server = pg_server().map_err(|e| anyhow::anyhow!("{e}"))?;
            f.url = Some(server.fresh_database(tag)?);
        }
        Ok(f)
    }

    /// Create the database (schema) before any process races to do it.
    fn store(&self) -> Result<SqliteStore> {
        SqliteStore::open_in(&self.data)
    }

    /// The mailbox through the library, on whichever backend the folder uses
    /// (creating the schema).
    fn mailbox(&self) -> Result<Box<dyn Mailbox>> {
        match &self.url {
            Some(url) => Ok(Box::new(PostgresStore::connect(url)?)),
            None => Ok(Box::new(self.store()?)),
        }
    }

    fn cmd(&self, key: &str) -> Command {
        self.cmd_for(Path::new(BIN), key)
    }

    /// `bin` spawned exactly as the product is (same environment, folder).
    fn cmd_for(&self, bin: &Path, key: &str) -> Command {
        let mut c = Command::new(bin);
        for k in scrubbed_vars() {
            c.env_remove(k);
        }
        c.env("INTER_SESSION_DATA_DIR", &self.data)
            .env("INTER_SESSION_KEY", key)
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        if let Some(url) = &self.url {
            c.env("INTER_SESSION_DATABASE_URL", url);
        }
        c
    }

    /// One `mail send` process, timed around spawn..exit.
    fn send(&self, from: &str, to: &str, text: &str) -> SendOutcome {
        let mut c = self.cmd(&format!("sender-{from}"));
        c.args(["mail", "send", "--from", from, "--to", to, "--text", text]);
        run_sender(c)
    }

    fn broadcast(&self, from: &str, text: &str) -> SendOutcome {
        let mut c = self.cmd(&format!("sender-{from}"));
        c.args(["mail", "broadcast", "--from", from, "--text", text]);
        run_sender(c)
    }

    /// A monitor for `name` whose stdout lines go to `tx`, tagged `idx`.
    fn monitor(&self, name: &str, idx: usize, tx: Sender<Line>) -> Result<Monitor> {
        self.monitor_with(name, idx, tx, &[])
    }

    fn monitor_with(
        &self,
        name: &str,
        idx: usize,
        tx: Sender<Line>,
        extra: &[&str],
    ) -> Result<Monitor> {
        let mut c = self.cmd(&format!("monitor-{name}"));
        c.args(["inbox", "watch", "--pace", "off", "--name", name]);
        c.args(extra);
        Monitor::spawn(c, idx, tx)
    }

    /// One `task post` process to `queue`, timed around spawn..exit.
    fn post(&self, queue: &str, text: &str) -> SendOutcome {
        let mut c = self.cmd("sender-lead");
        c.args([
            "--from", "lead", "task", "post", "--queue", queue, "--text", text,
        ]);
        let mut out = run_sender(c);
        if out.id.is_none() {
            // `posted <id> -> queue …`
            out.id = out
                .error
                .as_deref()
                .and_then(|e| e.split("\"posted ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .filter(|id| id.len() == 26)
                .map(str::to_string);
            if out.id.is_some() {
                out.error = None;
            }
        }
        out
    }

    /// `task done <id>` as the worker `name`'s monitor key.
    fn done(&self, name: &str, id: &str) -> Result<()> {
        let mut c = self.cmd(&format!("monitor-{name}"));
        c.args(["task", "done", id, "--text", "ok"]);
        let out = c.output().context("task done")?;
        if !out.status.success() {
            bail!(
                "task done {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

struct SendOutcome {
    /// Set before spawning the process.
    started: Instant,
    wall: Duration,
    id: Option<String>,
    error: Option<String>,
    /// The sender said the recipient was online: `(delivered)`.
    delivered: bool,
}

fn run_sender(mut c: Command) -> SendOutcome {
    let started = Instant::now();
    let out = c.output();
    let wall = started.elapsed();
    match out {
        Err(e) => SendOutcome {
            started,
            wall,
            id: None,
            error: Some(format!("spawn failed: {e}")),
            delivered: false,
        },
        Ok(out) if !out.status.success() => SendOutcome {
            started,
            wall,
            id: None,
            error: Some(format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            delivered: false,
        },
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let id = stdout
                .strip_prefix("sent ")
                .and_then(|r| r.split_whitespace().next())
                .filter(|id| id.len() == 26)
                .map(str::to_string);
            let error = id
                .is_none()
                .then(|| format!("unexpected output {stdout:?}"));
            SendOutcome {
                started,
                wall,
                id,
                error,
                delivered: stdout.contains("delivered"),
            }
        }
    }
}

/// A line from a monitor's stdout, stamped when the reader got it.
struct Line {
    mon: usize,
    at: Instant,
    text: String,
}

/// The `msg=<id>` (or a task's `task=<id>`) of a monitor line.
fn line_id(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("[inter-session msg=")
        .or_else(|| line.strip_prefix("[inter-session task="))?;
    let end = rest.find([' ', ']'])?;
    Some(&rest[..end])
}

struct Monitor {
    child: Child,
}

impl Monitor {
    fn spawn(mut c: Command, idx: usize, tx: Sender<Line>) -> Result<Monitor> {
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().context("spawn monitor")?;
        let stdout = child.stdout.take().context("monitor stdout")?;
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = String::new();
            loop {
                buf.clear();
                match r.read_line(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let at = Instant::now();
                        let text = buf.trim_end_matches('\n').to_string();
                        if tx.send(Line { mon: idx, at, text }).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Monitor { child })
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // SIGTERM (clean exit: releases its lock), SIGKILL if it lingers.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects monitor lines by message id.
struct Tracker {
    rx: Receiver<Line>,
    /// id → (monitor, time read) for each time it was printed.
    seen: HashMap<String, Vec<(usize, Instant)>>,
    /// Message lines in arrival order, per monitor.
    order: HashMap<usize, Vec<String>>,
    /// Lines that are not message lines (notices).
    other: Vec<String>,
    dups: usize,
}

impl Tracker {
    fn new() -> (Tracker, Sender<Line>) {
        let (tx, rx) = channel();
        (
            Tracker {
                rx,
                seen: HashMap::new(),
                order: HashMap::new(),
                other: Vec::new(),
                dups: 0,
            },
            tx,
        )
    }

    fn record(&mut self, l: Line) {
        match line_id(&l.text) {
            Some(id) => {
                let e = self.seen.entry(id.to_string()).or_default();
                if e.iter().any(|(m, _)| *m == l.mon) {
                    self.dups += 1;
                } else {
                    self.order.entry(l.mon).or_default().push(id.to_string());
                }
                e.push((l.mon, l.at));
            }
            None => self.other.push(l.text),
        }
    }

    /// Take lines until `done` holds or `timeout` passes; true when done.
    fn until(&mut self, timeout: Duration, done: impl Fn(&Tracker) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => self.record(l),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return done(self)
                }
            }
        }
    }

    /// When `id` was first printed (by any monitor), waiting up to `timeout`.
    fn wait_id(&mut self, id: &str, timeout: Duration) -> Option<Instant> {
        self.until(timeout, |t| t.seen.contains_key(id));
        self.seen.get(id).map(|v| v[0].1)
    }

    /// Distinct monitors that printed `id`.
    fn monitors_with(&self, id: &str) -> usize {
        self.seen.get(id).map_or(0, |v| {
            v.iter().map(|(m, _)| *m).collect::<HashSet<_>>().len()
        })
    }

    /// Take whatever arrives within `quiet` of the last line.
    fn settle(&mut self, quiet: Duration) {
        while let Ok(l) = self.rx.recv_timeout(quiet) {
            self.record(l);
        }
    }
}

/// Block until every one of `names` is online (its monitor holds the lock).
fn wait_online(f: &Folder, names: &[&str]) -> Result<()> {
    let store = f.mailbox()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let online = store
            .sessions(false)?
            .into_iter()
            .filter(|s| s.state == State::Online && names.contains(&s.name.as_str()))
            .count();
        if online == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {online}/{} monitors came online", names.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start a monitor and prove it is in its loop: a warm-up message printed.
fn warm_monitor(f: &Folder, name: &str) -> Result<(Monitor, Tracker)> {
    let (mut tracker, tx) = Tracker::new();
    let mon = f.monitor(name, 0, tx)?;
    wait_online(f, &[name])?;
    let out = f.send("bob", name, "warm-up");
    let id = out
        .id
        .with_context(|| format!("warm-up send failed: {}", out.error.unwrap_or_default()))?;
    if tracker.wait_id(&id, Duration::from_secs(20)).is_none() {
        bail!("monitor '{name}' never printed the warm-up message");
    }
    Ok((mon, tracker))
}

fn lost_check(sent: usize, printed: usize, dups: usize, failed: usize) -> (String, bool) {
    let lost = sent - printed.min(sent);
    let mut s = format!("{printed}/{sent} printed, {lost} lost");
    if dups > 0 {
        s.push_str(&format!(", {dups} duplicated"));
    }
    if failed > 0 {
        s.push_str(&format!(", {failed} sends failed"));
    }
    (s, lost == 0 && failed == 0)
}

// ------------------------------------------------------------- the rows --

/// The floor's p50 in ms, once the floor row ran (the CLI rows print their
/// ratio to it).
static FLOOR_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// `… (N.N× floor)` when the floor row ran.
fn vs_floor(p50: f64) -> String {
    FLOOR_MS
        .get()
        .filter(|f| **f > 0.0)
        .map_or(String::new(), |f| format!(" ({:.2}× floor)", p50 / f))
}

/// 0. The true floor: a minimal Rust binary (built here from a few lines
///    with the toolchain's rustc, release options) spawned exactly like the
///    product, beside `inter-session --version` (target ≤ 1.3× the floor).
fn row_floor(plan: &Plan) -> Result<Row> {
    let f = Folder::new("floor")?;
    let src = f.tmp.path().join("hello.rs");
    std::fs::write(&src, "fn main() { println!(\"hello\"); }\n")?;
    let hello = f.tmp.path().join("hello");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["-O", "-C", "codegen-units=1", "-o"])
        .arg(&hello)
        .arg(&src)
        .output()
        .context("rustc (to build the floor binary)")?;
    if !out.status.success() {
        bail!("rustc: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let n = (plan.sends / 2).max(50);
    let time = |bin: &Path, args: &[&str]| -> Result<(Vec<f64>, f64)> {
        let cpu0 = children_cpu();
        let mut walls = Vec::with_capacity(n);
        for _ in 0..n {
            let mut c = f.cmd_for(bin, "floor");
            c.args(args);
            let t = Instant::now();
            let o = c.output()?;
            walls.push(ms(t.elapsed()));
            if !o.status.success() {
                bail!("{} exited {:?}", bin.display(), o.status.code());
            }
        }
        Ok((walls, (children_cpu() - cpu0) / n as f64))
    };
    // Interleaved warm-up, then each measured.
    time(&hello, &[])?;
    let (floor, floor_cpu) = time(&hello, &[])?;
    let (version, version_cpu) = time(Path::new(BIN), &["--version"])?;
    let fl = stats(&floor).context("no floor samples")?;
    let ve = stats(&version).context("no --version samples")?;
    let _ = FLOOR_MS.set(fl.p50);
    let mut r = Row::new("floor", row_title("floor"));
    r.set_samples("ms", version);
    let ratio = ve.p50 / fl.p50;
    r.result = ratio;
    r.result_unit = "×";
    r.result_text = format!(
        "floor p50 {} ms ({:.2} ms CPU); --version p50 {} ms ({:.2} ms CPU) = {:.2}× floor ({:.2}× in CPU)",
        fmt_num(fl.p50),
        floor_cpu * 1e3,
        fmt_num(ve.p50),
        version_cpu * 1e3,
        ratio,
        version_cpu / floor_cpu.max(1e-9)
    );
    r.target = "--version ≤ 1.3× floor".into();
    r.met = ratio <= 1.3;
    r.check = format!("{n} + {n} spawns");
    r.ok = true;
    Ok(r)
}

/// 1. `mail send` wall time, one process per send, to an online monitor.
fn row_send(plan: &Plan) -> Result<Row> {
    send_row(plan, Backend::Sqlite)
}

fn row_pg_send(plan: &Plan) -> Result<Row> {
    send_row(plan, Backend::Postgres)
}

fn send_row(plan: &Plan, backend: Backend) -> Result<Row> {
    let f = Folder::on(backend.tag("send"), backend)?;
    f.mailbox()?;
    let (_mon, mut tracker) = warm_monitor(&f, "alice")?;
    let mut walls = Vec::with_capacity(plan.sends);
    let mut ids = Vec::with_capacity(plan.sends);
    let (mut failed, mut queued) = (0, 0);
    let cpu0 = children_cpu();
    for i in 0..plan.sends {
        let out = f.send("bob", "alice", &format!("bench send {i}"));
        walls.push(ms(out.wall));
        match out.id {
            Some(id) => ids.push(id),
            None => failed += 1,
        }
        if !out.delivered {
            queued += 1;
        }
    }
    let send_cpu = (children_cpu() - cpu0) / plan.sends.max(1) as f64;
    let all: HashSet<String> = ids.iter().cloned().collect();
    tracker.until(LINE_TIMEOUT, |t| {
        all.iter().all(|id| t.seen.contains_key(id))
    });
    let printed = ids
        .iter()
        .filter(|id| tracker.seen.contains_key(*id))
        .count();
    let (mut check, ok) = lost_check(ids.len(), printed, tracker.dups, failed);
    if queued > 0 {
        check.push_str(&format!(", {queued} not reported `delivered`"));
    }
    // The floor: the same binary doing nothing but start, parse, exit.
    let floor_cpu0 = children_cpu();
    let mut floor = Vec::new();
    for _ in 0..(plan.sends / 5).max(20) {
        let mut c = f.cmd("floor");
        c.arg("--version");
        let t = Instant::now();
        let _ = c.output();
        floor.push(ms(t.elapsed()));
    }

    let key = backend.key("send");
    let mut r = Row::new(key, row_title(key));
    r.set_samples("ms", walls);
    let p50 = r.dist.map_or(f64::NAN, |d| d.p50);
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!("p50 {} ms{}", fmt_num(p50), vs_floor(p50));
    (r.target, r.met) = match backend {
        Backend::Sqlite => ("p50 ≤ 2 ms".into(), p50 <= 2.0),
        Backend::Postgres => ("none set".into(), true),
    };
    r.check = check;
    r.ok = ok && queued == 0;
    let floor_cpu = (children_cpu() - floor_cpu0) / floor.len().max(1) as f64;
    if let Some(fl) = stats(&floor) {
        r.notes.push(format!(
            "CPU per `mail send` process: {:.2} ms; process floor: `inter-session --version` spawned the same way takes p50 {} ms (min {} ms), {:.2} ms CPU",
            send_cpu * 1e3,
            fmt_num(fl.p50),
            fmt_num(fl.min),
            floor_cpu * 1e3
        ));
    }
    Ok(r)
}

/// 2. Timestamp before spawning the sender → the line read on the monitor's
///    stdout pipe; sequential.
fn row_latency(plan: &Plan) -> Result<Row> {
    latency_row(plan, Backend::Sqlite)
}

fn row_pg_latency(plan: &Plan) -> Result<Row> {
    latency_row(plan, Backend::Postgres)
}

fn latency_row(plan: &Plan, backend: Backend) -> Result<Row> {
    let f = Folder::on(backend.tag("latency"), backend)?;
    f.mailbox()?;
    let (_mon, mut tracker) = warm_monitor(&f, "alice")?;
    let (lat, sent, printed, failed) = latency_samples(&f, &mut tracker, plan.latency, "latency")?;
    let (check, ok) = lost_check(sent, printed, tracker.dups, failed);
    let key = backend.key("latency");
    let mut r = Row::new(key, row_title(key));
    r.set_samples("ms", lat);
    let (p50, p99) = r.dist.map_or((f64::NAN, f64::NAN), |d| (d.p50, d.p99));
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!(
        "p50 {} / p99 {} ms{}",
        fmt_num(p50),
        fmt_num(p99),
        vs_floor(p50)
    );
    (r.target, r.met) = match backend {
        Backend::Sqlite => ("p50 ≤ 2 ms, p99 ≤ 5 ms".into(), p50 <= 2.0 && p99 <= 5.0),
        Backend::Postgres => (
            "p50 ≤ 10 ms, p99 ≤ 25 ms".into(),
            p50 <= 10.0 && p99 <= 25.0,
        ),
    };
    r.check = check;
    r.ok = ok;
    Ok(r)
}

/// `n` sequential send→print samples in ms; (samples, sent, printed, failed).
fn latency_samples(
    f: &Folder,
    tracker: &mut Tracker,
    n: usize,
    tag: &str,
) -> Result<(Vec<f64>, usize, usize, usize)> {
    let mut lat = Vec::with_capacity(n);
    let (mut sent, mut printed, mut failed) = (0, 0, 0);
    for i in 0..n {
        let out = f.send("bob", "alice", &format!("bench {tag} {i}"));
        let Some(id) = out.id else {
            failed += 1;
            continue;
        };
        sent += 1;
        if let Some(at) = tracker.wait_id(&id, LINE_TIMEOUT) {
            printed += 1;
            lat.push(ms(at.saturating_duration_since(out.started)));
        }
    }
    Ok((lat, sent, printed, failed))
}

/// 3. Four threads, each spawning `mail send` processes in a loop.
fn row_throughput(plan: &Plan) -> Result<Row> {
    throughput_row(plan, Backend::Sqlite)
}

fn row_pg_throughput(plan: &Plan) -> Result<Row> {
    throughput_row(plan, Backend::Postgres)
}

fn throughput_row(plan: &Plan, backend: Backend) -> Result<Row> {
    const SENDERS: usize = 4;
    let f = Folder::on(backend.tag("throughput"), backend)?;
    f.mailbox()?;
    let (mon, mut tracker) = warm_monitor(&f, "alice")?;
    // Register the senders first, so the window measures sends only.
    for s in 0..SENDERS {
        let name = format!("s{s}");
        let out = f.send(&name, "alice", "warm-up");
        let id = out.id.context("sender warm-up failed")?;
        tracker
            .wait_id(&id, LINE_TIMEOUT)
            .context("sender warm-up never printed")?;
    }
    let window = plan.throughput;
    let cpu0 = children_cpu();
    let mon_cpu0 = cpu_seconds(mon.pid()).map_or(0.0, |c| c.1);
    let start = Instant::now();
    let results: Vec<(Vec<String>, Vec<f64>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SENDERS)
            .map(|s| {
                let f = &f;
                scope.spawn(move || {
                    let name = format!("s{s}");
                    let (mut ids, mut walls, mut errors) = (Vec::new(), Vec::new(), Vec::new());
                    let mut i = 0;
                    while start.elapsed() < window {
                        let out = f.send(&name, "alice", &format!("bench throughput {s}/{i}"));
                        walls.push(ms(out.wall));
                        match out.id {
                            Some(id) => ids.push(id),
                            None => errors.push(out.error.unwrap_or_default()),
                        }
                        i += 1;
                    }
                    (ids, walls, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    let ids: Vec<String> = results.iter().flat_map(|r| r.0.iter().cloned()).collect();
    let walls: Vec<f64> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    let errors: Vec<String> = results.iter().flat_map(|r| r.2.iter().cloned()).collect();
    let all: HashSet<&String> = ids.iter().collect();
    tracker.until(Duration::from_secs(30), |t| {
        all.iter().all(|id| t.seen.contains_key(*id))
    });
    let caught_up = Instant::now().saturating_duration_since(start + elapsed);
    let sender_cpu = children_cpu() - cpu0;
    let mon_cpu = cpu_seconds(mon.pid()).map_or(0.0, |c| c.1) - mon_cpu0;
    let printed = ids
        .iter()
        .filter(|id| tracker.seen.contains_key(*id))
        .count();
    let rate = ids.len() as f64 / elapsed.as_secs_f64();
    let (check, ok) = lost_check(ids.len(), printed, tracker.dups, errors.len());

    let key = backend.key("throughput");
    let mut r = Row::new(key, row_title(key));
    r.set_samples("ms", walls);
    r.result = rate;
    r.result_unit = "sends/s";
    r.result_text = format!("{} sends/s", fmt_thousands(rate));
    (r.target, r.met) = match backend {
        Backend::Sqlite => ("≥ 1,000 sends/s, 0 lost".into(), rate >= 1000.0 && ok),
        Backend::Postgres => ("0 lost".into(), ok),
    };
    r.check = check;
    r.ok = ok;
    r.notes.push(format!(
        "{} sends in {:.2} s; distribution is each send's wall time under load; monitor caught up {:.0} ms after the window",
        ids.len(),
        elapsed.as_secs_f64(),
        ms(caught_up)
    ));
    let per = (ids.len() + errors.len()).max(1) as f64;
    r.notes.push(format!(
        "CPU per send: {:.2} ms in the `mail send` process + {:.2} ms in the monitor; {} cores allow at most ~{:.0} sends/s at that cost",
        sender_cpu * 1e3 / per,
        mon_cpu * 1e3 / per,
        cores(),
        cores() as f64 / ((sender_cpu + mon_cpu) / per)
    ));
    if let Some(e) = errors.first() {
        r.notes.push(format!("first send error: {e}"));
    }
    Ok(r)
}

/// 4. Library API in one process: send, fetch pending, mark delivered.
fn row_inproc(plan: &Plan) -> Result<Row> {
    let f = Folder::new("inproc")?;
    let sender = f.store()?;
    let monitor = f.store()?;
    let bob = sender.register("bob", None)?;
    let alice = sender.register("alice", None)?;
    let n = plan.inproc;
    let mut per = Vec::with_capacity(n);
    let mut cursor = 0i64;
    let (mut delivered, mut mismatched) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let text = format!("in-process {i}");
        let sent = sender.send(&NewMessage::new(
            &bob.address(),
            Recipients::One(alice.id),
            &text,
        ))?;
        let msgs = monitor.pending(alice.id, cursor, 256)?;
        let seqs: Vec<i64> = msgs.iter().map(|m| m.seq).collect();
        monitor.mark_delivered(alice.id, &seqs, inter_session::store::via::MONITOR)?;
        if let Some(last) = seqs.last() {
            cursor = *last;
        }
        delivered += msgs.len();
        if msgs.len() != 1 || msgs[0].id != sent.id || msgs[0].text != text {
            mismatched += 1;
        }
        per.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let elapsed = start.elapsed();
    let left = monitor.pending(alice.id, 0, 10)?.len();
    let rate = n as f64 / elapsed.as_secs_f64();

    let mut r = Row::new("inproc", "in-process send+deliver");
    r.set_samples("µs", per);
    r.result = rate;
    r.result_unit = "msg/s";
    r.result_text = format!("{} msg/s", fmt_thousands(rate));
    r.target = "≥ 40,000 msg/s".into();
    r.met = rate >= 40_000.0;
    r.ok = delivered == n && mismatched == 0 && left == 0;
    r.check =
        format!("{delivered}/{n} delivered in order, {mismatched} mismatched, {left} left pending");
    r.notes.push(
        "per message: Mailbox::send on one connection, then pending + mark_delivered on another; distribution in µs"
            .into(),
    );
    Ok(r)
}

/// 5. One `mail broadcast` to N online monitors; time until all printed.
fn row_fanout(plan: &Plan) -> Result<Row> {
    let f = Folder::new("fanout")?;
    let store = f.store()?;
    store.register("caster", None)?;
    let n = plan.fanout_monitors;
    let (mut tracker, tx) = Tracker::new();
    let mut mons = Vec::with_capacity(n);
    for i in 0..n {
        mons.push(f.monitor(&format!("m{i:02}"), i, tx.clone())?);
    }
    drop(tx);
    let names: Vec<String> = (0..n).map(|i| format!("m{i:02}")).collect();
    wait_online(&f, &names.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Warm-up broadcast: every monitor prints once.
    let out = f.broadcast("caster", "warm-up");
    let id = out.id.with_context(|| {
        format!(
            "warm-up broadcast failed: {}",
            out.error.unwrap_or_default()
        )
    })?;
    if !tracker.until(Duration::from_secs(30), |t| t.monitors_with(&id) == n) {
        bail!(
            "warm-up broadcast reached {}/{n} monitors",
            tracker.monitors_with(&id)
        );
    }
    tracker.settle(Duration::from_millis(300));

    // At most 60 broadcasts a minute per sender: rotate senders past 55.
    let mut times = Vec::new();
    let mut exits = Vec::new();
    // The slowest sample's arrival times (ms), to tell a straggler from a slow herd.
    let mut slowest: Option<(usize, Vec<f64>)> = None;
    let (mut sent, mut complete, mut failed) = (0, 0, 0);
    // Broadcast → every delivery marked (ms).
    let mut marked = Vec::new();
    let mut unmarked = 0;
    let cpu_before: f64 = mons
        .iter()
        .filter_map(|m| cpu_seconds(m.pid()).ok())
        .map(|c| c.1)
        .sum();
    for i in 0..plan.fanout_samples {
        let from = format!(
            "caster{}",
            if i < 55 {
                String::new()
            } else {
                format!("-{}", i / 55)
            }
        );
        let out = f.broadcast(&from, &format!("bench fanout {i}"));
        let Some(id) = out.id else {
            failed += 1;
            continue;
        };
        sent += 1;
        exits.push(ms(out.wall));
        if tracker.until(LINE_TIMEOUT, |t| t.monitors_with(&id) >= n) {
            complete += 1;
            let mut arrivals: Vec<f64> = tracker.seen[&id]
                .iter()
                .map(|(_, at)| ms(at.saturating_duration_since(out.started)))
                .collect();
            arrivals.sort_by(f64::total_cmp);
            if let Some(last) = arrivals.last() {
                times.push(*last);
                if slowest
                    .as_ref()
                    .is_none_or(|(_, s): &(usize, Vec<f64>)| s.last() < Some(last))
                {
                    slowest = Some((i, arrivals));
                }
            }
        }
        // Each sample starts from idle monitors: wait until every monitor
        // has marked the broadcast delivered, then a quiet moment.
        // (at most 3 s: past that the product's tail shows in the note).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let pending: i64 = store.sessions(false)?.iter().map(|s| s.pending).sum();
            if pending == 0 {
                marked.push(ms(out.started.elapsed()));
                break;
            }
            if Instant::now() > deadline {
                unmarked += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
        tracker.settle(Duration::from_millis(5));
    }
    let cpu_after: f64 = mons
        .iter()
        .filter_map(|m| cpu_seconds(m.pid()).ok())
        .map(|c| c.1)
        .sum();
    drop(mons);

    let mut r = Row::new("fanout", format!("broadcast fan-out to {n} monitors"));
    r.set_samples("ms", times);
    let p50 = r.dist.map_or(f64::NAN, |d| d.p50);
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!("p50 {} ms", fmt_num(p50));
    r.target = "p50 ≤ 50 ms".into();
    r.met = p50 <= 50.0;
    r.ok = complete == sent && failed == 0 && tracker.dups == 0;
    r.check = format!(
        "{complete}/{sent} broadcasts reached all {n}, {} duplicated lines, {failed} failed",
        tracker.dups
    );
    if let Some((i, a)) = &slowest {
        let at = |k: usize| fmt_num(a[k.min(a.len() - 1)]);
        r.notes.push(format!(
            "slowest sample (#{i}): first monitor printed at {} ms, median {} ms, {}th {} ms, last {} ms",
            at(0),
            at(a.len() / 2),
            a.len().saturating_sub(1),
            at(a.len().saturating_sub(2)),
            at(a.len() - 1)
        ));
    }
    if let Some(s) = stats(&marked) {
        r.notes.push(format!(
            "broadcast → all {n} deliveries marked: p50 {} ms, max {} ms{}; the {n} monitors used {:.1} CPU-ms per broadcast together",
            fmt_num(s.p50),
            fmt_num(s.max),
            if unmarked > 0 { format!(" ({unmarked} samples not all marked after 3 s)") } else { String::new() },
            (cpu_after - cpu_before) * 1e3 / sent.max(1) as f64
        ));
    }
    if let Some(s) = stats(&exits) {
        r.notes.push(format!(
            "`mail broadcast` process itself: p50 {} ms, max {} ms",
            fmt_num(s.p50),
            fmt_num(s.max)
        ));
    }
    Ok(r)
}

/// CPU time of all threads of `pid`: (utime+stime in seconds from
/// /proc/pid/stat, run time in seconds from the threads' schedstat).
fn cpu_seconds(pid: i32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) in parens.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc/pid/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `after` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    let ticks = (utime + stime) as f64 / tck;
    let mut run_ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let p = t?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok((ticks, run_ns as f64 / 1e9))
}

/// CPU seconds (user + system) of all reaped children of this process.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn rss_mb(pid: i32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// 6. An idle monitor's RSS and CPU. Runs on a thread beside the other rows
///    (its data folder sees no traffic, so it stays idle).
fn row_footprint(idle: Duration, cpu_window: Duration) -> Result<Vec<Row>> {
    let f = Folder::new("footprint")?;
    f.store()?;
    let (mon, _tracker) = warm_monitor(&f, "alice")?;
    let pid = mon.pid();
    let start = Instant::now();
    let rss_start = rss_mb(pid)?;
    let window = cpu_window.min(idle);
    std::thread::sleep((start + idle - window).saturating_duration_since(Instant::now()));
    let (cpu0, run0) = cpu_seconds(pid)?;
    std::thread::sleep((start + idle).saturating_duration_since(Instant::now()));
    let (cpu1, run1) = cpu_seconds(pid)?;
    let rss = rss_mb(pid)?;
    let alive = matches!(
        // SAFETY: kill(pid, 0) only checks existence.
        unsafe { libc::kill(pid, 0) },
        0
    );
    drop(mon);
    let scale = 10.0 / window.as_secs_f64();
    let cpu = (cpu1 - cpu0) * scale;
    let run = (run1 - run0) * scale;
    let idle_s = idle.as_secs();

    let mut a = Row::new("footprint", format!("monitor RSS after {idle_s} s idle"));
    a.unit = "MB";
    a.result = rss;
    a.result_unit = "MB";
    a.result_text = format!("{rss:.1} MB");
    a.target = "≤ 10 MB".into();
    a.met = rss <= 10.0;
    a.ok = alive;
    a.check = if alive {
        "monitor alive".into()
    } else {
        "monitor died".into()
    };
    a.notes.push(format!(
        "VmRSS right after the warm-up line: {rss_start:.1} MB"
    ));

    let mut b = Row::new("footprint", "monitor CPU in 10 s idle");
    b.unit = "CPU-s";
    b.result = cpu;
    b.result_unit = "CPU-s per 10 s";
    b.result_text = format!("{cpu:.3} CPU-s ({:.4} by schedstat)", run);
    b.target = "≤ 0.01 CPU-s".into();
    b.met = cpu <= 0.01;
    b.ok = alive;
    b.check = a.check.clone();
    b.notes.push(format!(
        "utime+stime over the last {} s of the idle period{}; schedstat sums every thread's run time in ns",
        window.as_secs(),
        if scale == 1.0 { String::new() } else { format!(", scaled ×{scale:.1} to 10 s") }
    ));
    Ok(vec![a, b])
}

/// Fill `rows` delivered messages bob → others (history, not alice's
/// pending) straight into the file, in big transactions.
fn fill_history(f: &Folder, rows: usize) -> Result<()> {
    let store = f.store()?;
    store.register("bob", None)?;
    store.register("alice", None)?;
    let mut others = Vec::new();
    for i in 0..20 {
        others.push(store.register(&format!("h{i:02}"), None)?.id);
    }
    let bob = store.session_by_name("bob")?.context("bob")?;
    drop(store);

    let conn = rusqlite::Connection::open(f.data.join("mailbox.db"))?;
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;")?;
    let base = chrono::Utc::now() - chrono::Duration::days(30);
    let base_ms = u64::try_from(base.timestamp_millis()).unwrap_or(0);
    const BATCH: usize = 100_000;
    // A root message is its own thread, where the schema has threads.
    let has_thread: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('messages') WHERE name = 'thread_id'",
        [],
        |r| r.get::<_, i64>(0),
    )? > 0;
    let insert_msg = if has_thread {
        "INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, text, thread_id) \
         VALUES (?1, ?2, 'direct', ?3, 'bob', '', ?4, ?5, ?1)"
    } else {
        "INSERT INTO messages (id, created_at, kind, sender_id, sender, sender_label, chars, text) \
         VALUES (?1, ?2, 'direct', ?3, 'bob', '', ?4, ?5)"
    };
    let mut i = 0;
    while i < rows {
        let tx = conn.unchecked_transaction()?;
        {
            let mut msg = tx.prepare_cached(insert_msg)?;
            let mut del = tx.prepare_cached(
                "INSERT INTO deliveries (message_seq, recipient_id, delivered_at) VALUES (?1, ?2, ?3)",
            )?;
            for j in i..(i + BATCH).min(rows) {
                // One message every 2.5 s over the month before now.
                let t_ms = base_ms + (j as u64) * 2500;
                let id = ulid::Ulid::from_parts(t_ms, j as u128).to_string();
                let at = chrono::DateTime::from_timestamp_millis(t_ms as i64)
                    .unwrap_or(base)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                let text = format!("history filler message number {j}, some ordinary text");
                msg.execute(rusqlite::params![
                    id,
                    at,
                    bob.id,
                    text.chars().count() as i64,
                    text
                ])?;
                let seq = tx.last_insert_rowid();
                del.execute(rusqlite::params![seq, others[j % others.len()], at])?;
            }
        }
        tx.commit()?;
        i += BATCH;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// 7. send→print p50 with a big history vs an empty database.
fn row_history(plan: &Plan) -> Result<Row> {
    let empty = Folder::new("history-empty")?;
    let big = Folder::new("history-big")?;
    {
        let s = empty.store()?;
        s.register("bob", None)?;
        s.register("alice", None)?;
    }
    let t = Instant::now();
    fill_history(&big, plan.history_rows)?;
    let fill = t.elapsed();
    progress(&format!(
        "history: filled {} rows in {:.1} s; sampling",
        fmt_thousands(plan.history_rows as f64),
        fill.as_secs_f64()
    ));
    let (_m0, mut t0) = warm_monitor(&empty, "alice")?;
    let (_m1, mut t1) = warm_monitor(&big, "alice")?;
    // Alternate single samples so drift on a shared machine hits both alike.
    let (mut lat0, mut lat1) = (Vec::new(), Vec::new());
    let (mut sent, mut printed, mut failed) = (0, 0, 0);
    for _ in 0..plan.history_samples {
        for (f, tr, lat) in [(&empty, &mut t0, &mut lat0), (&big, &mut t1, &mut lat1)] {
            let (l, s, p, x) = latency_samples(f, tr, 1, "history")?;
            lat.extend(l);
            sent += s;
            printed += p;
            failed += x;
        }
    }
    let (check, ok) = lost_check(sent, printed, t0.dups + t1.dups, failed);
    let s0 = stats(&lat0);
    let s1 = stats(&lat1);
    let p0 = s0.map_or(f64::NAN, |d| d.p50);
    let p1 = s1.map_or(f64::NAN, |d| d.p50);
    let ratio = p1 / p0;

    let rows = fmt_thousands(plan.history_rows as f64);
    let mut r = Row::new("history", format!("history growth ({rows} rows)"));
    r.set_samples("ms", lat1);
    r.result = ratio;
    r.result_unit = "× empty p50";
    r.result_text = format!("{ratio:.2}× ({} vs {} ms)", fmt_num(p1), fmt_num(p0));
    r.target = "< 1.25×".into();
    r.met = ratio < 1.25;
    r.check = check;
    r.ok = ok;
    r.notes.push(format!(
        "distribution: send→print with {rows} history rows; empty db p99 {} ms; fill took {:.1} s",
        fmt_num(s0.map_or(f64::NAN, |d| d.p99)),
        fill.as_secs_f64()
    ));
    Ok(r)
}

/// 8. Queue messages for an offline mailbox, then time monitor start → last line.
fn row_replay(plan: &Plan) -> Result<Row> {
    let n = plan.replay_msgs;
    let mut times = Vec::new();
    let mut checks = Vec::new();
    let mut ok = true;
    for sample in 0..plan.replay_samples {
        let f = Folder::new("replay")?;
        let store = f.store()?;
        let bob = store.register("bob", None)?;
        let alice = store.register("alice", None)?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let text = format!("queued message {i}");
            let sent = store.send(&NewMessage::new(
                &bob.address(),
                Recipients::One(alice.id),
                &text,
            ))?;
            ids.push(sent.id);
        }
        let (mut tracker, tx) = Tracker::new();
        let started = Instant::now();
        let mon = f.monitor("alice", 0, tx)?;
        let done = tracker.until(Duration::from_secs(60), |t| t.seen.len() >= n);
        let last = tracker
            .seen
            .values()
            .filter_map(|v| v.first().map(|(_, at)| *at))
            .max();
        if let (true, Some(last)) = (done, last) {
            times.push(ms(last.saturating_duration_since(started)));
        }
        // Everything marked delivered (the last mark follows the last write).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = store.pending(alice.id, 0, 10)?.len();
        while left > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            left = store.pending(alice.id, 0, 10)?.len();
        }
        drop(mon);
        let order = tracker.order.get(&0).cloned().unwrap_or_default();
        let in_order = order == ids;
        let printed = ids
            .iter()
            .filter(|id| tracker.seen.contains_key(*id))
            .count();
        let this_ok = printed == n && in_order && left == 0 && tracker.dups == 0;
        ok &= this_ok;
        checks.push(format!(
            "{printed}/{n} printed{}, {left} left pending",
            if in_order {
                " in order"
            } else {
                " OUT OF ORDER"
            }
        ));
        progress(&format!(
            "replay: sample {}/{}: {}",
            sample + 1,
            plan.replay_samples,
            times
                .last()
                .map_or("incomplete".into(), |t| format!("{t:.0} ms"))
        ));
    }
    checks.dedup();
    let nk = fmt_thousands(n as f64);
    let mut r = Row::new("replay", format!("offline replay of {nk}"));
    r.set_samples("ms", times);
    let p50 = r.dist.map_or(f64::NAN, |d| d.p50);
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!("p50 {} ms", fmt_num(p50));
    r.target = "≤ 1 s".into();
    r.met = p50 <= 1000.0;
    r.ok = ok && r.n == plan.replay_samples;
    r.check = checks.join("; ");
    r.notes.push(
        "monitor spawn → last of its lines read; queue filled in-process with Mailbox::send".into(),
    );
    Ok(r)
}

// ------------------------------------------------------------------ main --

/// `task post` → the claimed task's line printed by an idle worker's
/// monitor (`--take`); the worker finishes each before the next post.
fn row_task(plan: &Plan) -> Result<Row> {
    let f = Folder::new("task")?;
    f.mailbox()?;
    let (mut tracker, tx) = Tracker::new();
    let _mon = f.monitor_with("w1", 0, tx, &["--take", "q"])?;
    wait_online(&f, &["w1"])?;
    let n = plan.latency / 2;
    let mut lat = Vec::with_capacity(n);
    let (mut sent, mut printed, mut failed) = (0, 0, 0);
    for i in 0..n {
        let out = f.post("q", &format!("bench task {i}"));
        let Some(id) = out.id else {
            failed += 1;
            continue;
        };
        sent += 1;
        if let Some(at) = tracker.wait_id(&id, LINE_TIMEOUT) {
            printed += 1;
            lat.push(ms(at.saturating_duration_since(out.started)));
            f.done("w1", &id)?;
        }
    }
    let (check, ok) = lost_check(sent, printed, tracker.dups, failed);
    let mut r = Row::new("task", row_title("task"));
    r.set_samples("ms", lat);
    let (p50, p99) = r.dist.map_or((f64::NAN, f64::NAN), |d| (d.p50, d.p99));
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!("p50 {} / p99 {} ms", fmt_num(p50), fmt_num(p99));
    r.target = "as send → line (no target of its own)".into();
    r.met = true;
    r.check = check;
    r.ok = ok;
    Ok(r)
}

/// 100 tasks posted by 4 threads at once to 4 worker monitors; each worker
/// runs `task done` for each task it prints. Seconds from the first post to
/// the last task done; every task printed to exactly one worker.
fn row_task_fanout(plan: &Plan) -> Result<Row> {
    const TASKS: usize = 100;
    const WORKERS: usize = 4;
    let samples = (plan.replay_samples).max(1);
    let mut secs = Vec::new();
    let mut problems = Vec::new();
    for s in 0..samples {
        let f = Folder::new(&format!("task-fanout-{s}"))?;
        f.mailbox()?;
        let (mut tracker, tx) = Tracker::new();
        let names: Vec<String> = (1..=WORKERS).map(|i| format!("w{i}")).collect();
        let _mons = names
            .iter()
            .enumerate()
            .map(|(i, n)| f.monitor_with(n, i, tx.clone(), &["--take", "q"]))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_online(&f, &refs)?;
        let started = Instant::now();
        let failed = std::thread::scope(|scope| {
            let posters: Vec<_> = (0..4)
                .map(|t| {
                    let f = &f;
                    scope.spawn(move || {
                        (0..TASKS / 4)
                            .filter(|i| f.post("q", &format!("job {t}-{i}")).id.is_none())
                            .count()
                    })
                })
                .collect();
            // Each line is done by the worker that printed it.
            let mut done = HashSet::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.len() < TASKS && Instant::now() < deadline {
                let Ok(l) = tracker.rx.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                if let Some(id) = line_id(&l.text).map(str::to_string) {
                    if done.insert(id.clone()) {
                        if let Err(e) = f.done(&names[l.mon], &id) {
                            problems.push(format!("{e:#}"));
                        }
                    }
                }
                tracker.record(l);
            }
            if done.len() < TASKS {
                problems.push(format!("{}/{TASKS} tasks done", done.len()));
            }
            posters
                .into_iter()
                .map(|p| p.join().unwrap_or(TASKS / 4))
                .sum::<usize>()
        });
        secs.push(started.elapsed().as_secs_f64());
        let shared = tracker
            .seen
            .keys()
            .filter(|id| tracker.monitors_with(id) > 1)
            .count();
        if failed > 0 || shared > 0 || tracker.dups > 0 {
            problems.push(format!(
                "{failed} posts failed, {shared} tasks printed to two workers, {} duplicated",
                tracker.dups
            ));
        }
    }
    let mut r = Row::new("task-fanout", row_title("task-fanout"));
    r.set_samples("s", secs);
    let p50 = r.dist.map_or(f64::NAN, |d| d.p50);
    r.result = p50;
    r.result_unit = "s";
    r.result_text = format!(
        "{} s ({} tasks/s)",
        fmt_num(p50),
        fmt_num(TASKS as f64 / p50)
    );
    r.target = "each task printed once, done once".into();
    r.met = problems.is_empty();
    r.ok = problems.is_empty();
    r.check = if problems.is_empty() {
        format!("{TASKS}/{TASKS} done, each by one worker")
    } else {
        problems.join("; ")
    };
    Ok(r)
}

/// `inter-session top` in a tmux pane of its own: how long from a send's
/// return to its text on screen (polling `capture-pane`), and the CPU an
/// idle `top` uses in `plan.cpu_window` (target ≤ 0.01 CPU-s per 10 s).
fn row_top(plan: &Plan) -> Result<Row> {
    let f = Folder::new("top")?;
    f.mailbox()?;
    let (_mon, _tracker) = warm_monitor(&f, "alice")?;
    let sock = f.tmp.path().join("tmux.sock");
    let tmux = |args: &[&str]| -> Result<String> {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .output()
            .context("tmux (install it to run this row)")?;
        if !out.status.success() {
            bail!(
                "tmux {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let cmd = format!(
        "env TERM=xterm-256color INTER_SESSION_DATA_DIR='{}' '{BIN}' top --as bench",
        f.data.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ])?;
    struct Kill<'a>(&'a dyn Fn(&[&str]) -> Result<String>);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["kill-server"]);
        }
    }
    let _kill = Kill(&tmux);
    let on_screen = |needle: &str, limit: Duration| -> Result<Option<Instant>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if tmux(&["capture-pane", "-p", "-t", "top"])?.contains(needle) {
                return Ok(Some(Instant::now()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(None)
    };
    if on_screen("alice", Duration::from_secs(20))?.is_none() {
        bail!("top never showed alice");
    }
    let n = (plan.latency / 10).max(10);
    let mut lat = Vec::with_capacity(n);
    let mut missed = 0;
    for i in 0..n {
        let text = format!("top-bench-{i}-{}", std::process::id());
        let out = f.send("bob", "alice", &text);
        if out.id.is_none() {
            missed += 1;
            continue;
        }
        let returned = out.started + out.wall;
        match on_screen(&text, Duration::from_secs(5))? {
            Some(at) => lat.push(ms(at.saturating_duration_since(returned))),
            None => missed += 1,
        }
    }
    let pid: i32 = tmux(&["display-message", "-p", "-t", "top", "#{pane_pid}"])?
        .trim()
        .parse()
        .context("top's pid")?;
    std::thread::sleep(Duration::from_secs(2));
    let (before, _) = cpu_seconds(pid)?;
    std::thread::sleep(plan.cpu_window);
    let (after, _) = cpu_seconds(pid)?;
    let per_10s = (after - before) * 10.0 / plan.cpu_window.as_secs_f64();
    let mut r = Row::new("top", row_title("top"));
    r.set_samples("ms", lat);
    let (p50, p99) = r.dist.map_or((f64::NAN, f64::NAN), |d| (d.p50, d.p99));
    r.result = p50;
    r.result_unit = "ms";
    r.result_text = format!(
        "on screen p50 {} / p99 {} ms; idle {} CPU-s per 10 s",
        fmt_num(p50),
        fmt_num(p99),
        fmt_num(per_10s)
    );
    r.target = "on screen ≤ 100 ms, idle ≤ 0.01 CPU-s / 10 s".into();
    r.met = p50 <= 100.0 && per_10s <= 0.01;
    r.check = format!("{}/{n} shown, {missed} missed", n - missed);
    r.ok = missed == 0;
    r.notes
        .push("latency includes up to one capture-pane poll (≈2–5 ms)".into());
    Ok(r)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn run_row(key: &'static str, f: impl FnOnce() -> Result<Row>) -> Row {
    let title = ROW_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(key, |(_, t)| t);
    progress(&format!("{key}: {title} …"));
    let t = Instant::now();
    if key.starts_with("pg-") {
        if let Err(why) = pg_server() {
            // Loud, but not a failure: PostgreSQL is optional.
            progress(&format!("{key}: SKIPPED: {why}"));
            let mut r = Row::new(key, title);
            r.result_text = "skipped".into();
            r.target = "—".into();
            r.check = format!("skipped: {why}");
            r.ok = true;
            return r;
        }
    }
    let row = f().unwrap_or_else(|e| Row::failed(key, title, &e));
    progress(&format!(
        "{key}: {} (target {}; {}) in {:.1} s",
        row.result_text,
        row.target,
        row.check,
        t.elapsed().as_secs_f64()
    ));
    row
}

fn main() {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("e2e: {e:#}");
            std::process::exit(2);
        }
    };
    let plan = Plan::new(opts.quick);
    let release = Path::new(BIN)
        .components()
        .any(|c| c.as_os_str() == "release");
    if !release {
        progress(&format!(
            "WARNING: {BIN} is not a release build; run through `cargo bench`"
        ));
    }
    let cores = cores();
    let load_start = loadavg();
    let mode = if opts.quick { "quick" } else { "full" };
    progress(&format!(
        "binary {BIN}; {cores} cores; load {load_start}; {mode} mode"
    ));
    let run_start = Instant::now();

    // The footprint row idles for a minute: run it beside the others.
    let footprint = opts.wants("footprint").then(|| {
        let (idle, window) = (plan.idle, plan.cpu_window);
        progress(&format!(
            "footprint: idle monitor for {} s, in the background …",
            idle.as_secs()
        ));
        std::thread::spawn(move || row_footprint(idle, window))
    });

    let mut rows: Vec<Row> = Vec::new();
    type RowFn = fn(&Plan) -> Result<Row>;
    let steps: &[(&'static str, RowFn)] = &[
        ("floor", row_floor),
        ("send", row_send),
        ("latency", row_latency),
        ("throughput", row_throughput),
        ("inproc", row_inproc),
        ("fanout", row_fanout),
        ("history", row_history),
        ("replay", row_replay),
        ("task", row_task),
        ("task-fanout", row_task_fanout),
        ("top", row_top),
        ("pg-send", row_pg_send),
        ("pg-latency", row_pg_latency),
        ("pg-throughput", row_pg_throughput),
    ];
    for (key, f) in steps {
        if opts.wants(key) {
            rows.push(run_row(key, || f(&plan)));
        }
    }
    if let Some(h) = footprint {
        progress("footprint: waiting for the idle period to end …");
        let result = h
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("footprint thread panicked")));
        let fp = match result {
            Ok(rows) => rows,
            Err(e) => vec![Row::failed("footprint", "monitor footprint (idle)", &e)],
        };
        for r in &fp {
            progress(&format!(
                "footprint: {}: {} (target {})",
                r.title, r.result_text, r.target
            ));
        }
        // Table order: footprint before history.
        let at = rows
            .iter()
            .position(|r| r.key == "history" || r.key == "replay")
            .unwrap_or(rows.len());
        rows.splice(at..at, fp);
    }
    if let Some(Ok(server)) = PG.get() {
        server.stop();
    }
    let total = run_start.elapsed();
    let load_end = loadavg();

    // The table.
    let mut out = String::new();
    out.push_str(&format!(
        "\ninter-session e2e benchmark ({mode}): {cores} cores, load average {load_start} at start, {load_end} at end; {:.0} s\n\n",
        total.as_secs_f64()
    ));
    out.push_str("| # | row | n | min | p50 | p99 | max | result | target | met | check |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        let cell = |x: Option<f64>| match x {
            Some(x) if x.is_finite() => format!("{} {}", fmt_num(x), r.unit),
            _ => "—".into(),
        };
        let n = if r.n > 0 {
            r.n.to_string()
        } else {
            "—".into()
        };
        let met = if !r.result.is_finite() {
            "—"
        } else if r.met {
            "yes"
        } else {
            "**no**"
        };
        let check = if r.ok {
            r.check.clone()
        } else {
            format!("**FAIL** {}", r.check)
        };
        out.push_str(&format!(
            "| {} | {} | {n} | {} | {} | {} | {} | {} | {} | {met} | {check} |\n",
            i + 1,
            r.title,
            cell(r.dist.map(|d| d.min)),
            cell(r.dist.map(|d| d.p50)),
            cell(r.dist.map(|d| d.p99)),
            cell(r.dist.map(|d| d.max)),
            r.result_text,
            r.target,
        ));
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("- {}: {n}", r.title)))
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    print!("{out}");
    let _ = std::io::stdout().flush();

    if let Some(path) = &opts.json {
        let doc = serde_json::json!({
            "mode": mode,
            "binary": BIN,
            "release": release,
            "cores": cores,
            "load_start": load_start,
            "load_end": load_end,
            "seconds": total.as_secs_f64(),
            "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        match std::fs::write(path, text + "\n") {
            Ok(()) => progress(&format!("wrote {}", path.display())),
            Err(e) => {
                eprintln!("e2e: could not write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    if rows.iter().any(|r| !r.ok) {
        progress("a correctness check failed (see the check column)");
        std::process::exit(1);
    }
}
