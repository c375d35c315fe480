//! Reliability and security under hostile conditions (issue 7), at the scale
//! that fits a ~100 s budget on a 2-core machine, with the figures printed.
//!
//! Complements tests/delivery.rs and tests/mailbox.rs (which cover scaled-down
//! monitor and sender kills, environment faults, bad input, permissions,
//! symlinks and the read-only `sql`): here are the 20-kill run over 5,000
//! messages, 200 `mail send` processes killed mid-flight, 16 senders × 500
//! messages to 8 monitors, a 100,000-message offline replay with its memory
//! measured, a full disk (a file size limit always; a full ext4 loop mount
//! as root), ownership by another user and listening sockets, a hostile text
//! corpus through the real monitor, a `proptest` property of the line
//! formatter, and monitor re-arm cycling.
//!
//! Everything runs the real binary as real processes; big queues are filled
//! in-process through the public store API. Synchronisation waits on printed
//! lines, `wait_online` and process exits; the only sleeps are the random
//! kill delays, send pacing (load shaping) and the RSS sampling interval.
//!
//! Seeds: `RELIABILITY_SEED=<n>` reruns a failure; sizes can be raised with
//! `RELIABILITY_OFFLINE_N`, `RELIABILITY_LOAD_PER`, `RELIABILITY_CYCLES`,
//! `RELIABILITY_SENDER_KILLS` and `RELIABILITY_PROP_CASES`.

mod support;
use support::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inter_session::store::sqlite::SqliteStore;
use inter_session::store::{Mailbox, NewMessage, Recipients, Session, Verbs};

// ---------------------------------------------------------------- helpers

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The figures of each test; the last one to finish prints the summary.
static FIGURES: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());
const FIGURE_TESTS: usize = 10;

fn record(test: &'static str, figure: String) {
    eprintln!("RELIABILITY {test}: {figure}");
    let mut f = FIGURES.lock().unwrap_or_else(|e| e.into_inner());
    f.insert(test, figure);
    if f.len() == FIGURE_TESTS {
        let para: Vec<&str> = f.values().map(String::as_str).collect();
        eprintln!(
            "\n==== Reliability summary (cargo test --test reliability) ====\n{} Lost = 0 in every run.\n",
            para.join(" ")
        );
    }
}

/// `"s3:000123"` → ("s3", 123).
fn tag_of(text: &str) -> Option<(String, u64)> {
    let (who, n) = text.split_once(':')?;
    Some((who.to_string(), n.parse().ok()?))
}

fn open_store(env: &Env) -> SqliteStore {
    SqliteStore::open_in(&env.data).expect("open store in-process")
}

fn session(store: &SqliteStore, name: &str) -> Session {
    store
        .session_by_name(name)
        .expect("lookup")
        .unwrap_or_else(|| panic!("no session {name}"))
}

fn send_in(store: &SqliteStore, from: &Session, to: i64, text: &str) -> String {
    store
        .send(&NewMessage::new(&from.address(), Recipients::One(to), text))
        .expect("in-process send")
        .id
}

fn count(env: &Env, q: &str) -> usize {
    env.sql(q).parse().expect("count")
}

/// alice's monitor, key `ka`.
fn watch_alice(env: &Env) -> Monitor {
    env.monitor("ka", &["--name", "alice"])
}

// ---------------------------------------------------------------- 1. monitor killed

/// What a series of monitor runs printed.
#[derive(Default)]
struct Seen {
    counts: HashMap<String, usize>,
    run_of: HashMap<String, usize>,
    /// (sender, n) of first printings, in order.
    printed: Vec<(String, u64)>,
    odd: Vec<String>,
    same_run_dups: Vec<String>,
}

impl Seen {
    fn take(&mut self, l: String, run: usize) {
        let Some(id) = line_id(&l) else {
            self.odd.push(l);
            return;
        };
        let c = self.counts.entry(id.to_string()).or_default();
        *c += 1;
        if *c == 1 {
            self.run_of.insert(id.to_string(), run);
            self.printed.push(tag_of(line_text(&l)).unwrap_or_default());
        } else if self.run_of.get(id) == Some(&run) {
            self.same_run_dups.push(l.clone());
        }
    }
}

#[test]
fn monitor_sigkilled_20_times_while_5000_messages_stream_in() {
    const KILLS: usize = 20;
    const IN_PROC: [&str; 4] = ["s1", "s2", "s3", "s4"];
    const IN_PROC_EACH: usize = 1000;
    const PROCS: [&str; 2] = ["p1", "p2"];
    const PROC_EACH: usize = 500;
    const TOTAL: usize = IN_PROC.len() * IN_PROC_EACH + PROCS.len() * PROC_EACH;
    let started = Instant::now();
    let mut rng = Rng::seeded("RELIABILITY_SEED", "monitor_sigkilled_20");
    // Kill after these many lines in total (distinct, sorted, spread over the run).
    let mut kill_at: Vec<usize> = Vec::new();
    while kill_at.len() < KILLS {
        let n = 20 + rng.below((TOTAL - 200) as u64) as usize;
        if !kill_at.contains(&n) {
            kill_at.push(n);
        }
    }
    kill_at.sort_unstable();

    let env = Env::new();
    let mut mon = watch_alice(&env);
    env.wait_online("alice");
    {
        let store = open_store(&env);
        for s in IN_PROC {
            store.register(s, None).expect("register");
        }
    }
    let alice = session(&open_store(&env), "alice").id;

    let sent: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let senders_done = AtomicU64::new(0);
    let mut st = Seen::default();
    let mut kills = 0usize;
    let mut lines = 0usize;
    let mut run = 0usize;

    std::thread::scope(|s| {
        for (k, who) in IN_PROC.iter().enumerate() {
            let (env, sent, done) = (&env, &sent, &senders_done);
            s.spawn(move || {
                let store = open_store(env);
                let me = session(&store, who);
                for i in 0..IN_PROC_EACH {
                    let id = send_in(&store, &me, alice, &format!("{who}:{i:06}"));
                    sent.lock().unwrap().push(id);
                    // Load shaping: spread the stream over several seconds so
                    // the kills land while mail is arriving live.
                    if i % 4 == k % 4 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for who in PROCS {
            let (env, sent, done) = (&env, &sent, &senders_done);
            s.spawn(move || {
                for i in 0..PROC_EACH {
                    let id = env.send(who, "alice", &format!("{who}:{i:06}"));
                    sent.lock().unwrap().push(id);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }

        let deadline = Instant::now() + Duration::from_secs(75);
        let all = IN_PROC.len() + PROCS.len();
        loop {
            assert!(
                Instant::now() < deadline,
                "not all printed in time: {} distinct of {TOTAL} after {kills} kills",
                st.counts.len()
            );
            if let Some(l) = mon.next_line(Duration::from_millis(100)) {
                st.take(l, run);
                lines += 1;
                if kill_at.get(kills).is_some_and(|at| lines >= *at) {
                    // A random moment: right away or up to 3 ms later.
                    let d = rng.below(4);
                    if d > 0 {
                        std::thread::sleep(Duration::from_millis(d));
                    }
                    mon.signal(libc::SIGKILL);
                    let (_, rest) = mon.finish();
                    for l in rest {
                        st.take(l, run);
                        lines += 1;
                    }
                    kills += 1;
                    run += 1;
                    mon = watch_alice(&env);
                }
            }
            if senders_done.load(Ordering::SeqCst) == all as u64 && st.counts.len() >= TOTAL {
                let sent = sent.lock().unwrap();
                if sent.iter().all(|id| st.counts.contains_key(id)) {
                    break;
                }
            }
        }
        // Everything printed is marked delivered by the live monitor.
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&env, "select count(*) from pending") > 0 {
            assert!(
                Instant::now() < deadline,
                "printed mail never marked delivered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(mon);
    });
    let Seen {
        counts,
        printed,
        odd,
        same_run_dups,
        ..
    } = st;

    let sent = sent.into_inner().unwrap();
    assert_eq!(sent.len(), TOTAL);
    assert!(odd.is_empty(), "unexpected non-message lines: {odd:?}");
    assert_eq!(
        kills, KILLS,
        "killed {kills} times, planned {KILLS} (kill points {kill_at:?})"
    );
    let known: HashSet<&String> = sent.iter().collect();
    let strangers: Vec<&String> = counts.keys().filter(|id| !known.contains(id)).collect();
    assert!(
        strangers.is_empty(),
        "never-sent ids printed: {strangers:?}"
    );
    let lost = sent.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(lost, 0, "{lost} messages never printed");
    let dups: usize = counts.values().map(|c| c - 1).sum();
    // A message can be printed once more per kill that lands before it is
    // marked (two kills in a row can both hit the same replayed line), so
    // the bound is on the total and within each run, not per message.
    let most = counts.values().max().copied().unwrap_or(0);
    assert!(
        dups <= kills,
        "{dups} duplicate lines for {kills} kills (at most one per kill)"
    );
    assert!(
        same_run_dups.is_empty(),
        "a monitor printed a message twice without being killed: {same_run_dups:?}"
    );
    // Per-sender order: first printings of each sender's messages are in send order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (who, n) in &printed {
        if let Some(prev) = last.insert(who, *n) {
            assert!(
                *n > prev,
                "{who}: message {n} printed after {prev} (order broken)"
            );
        }
    }
    record(
        "1 monitor killed",
        format!(
            "The monitor was SIGKILLed {kills} times at random moments while {TOTAL} messages from 6 \
             concurrent senders (4 in-process, 2 streams of `mail send` processes) arrived live, \
             and restarted each time: all {TOTAL} printed, {dups} duplicate lines (≤ 1 per kill; \
             at most {most} printings of one message), per-sender order kept ({:.1} s).",
            started.elapsed().as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------- 2. senders killed

/// The sizes (in code points) of the bodies senders are killed with: all
/// over the 400-char inline cap, so every body goes to the blob table.
/// Broadcasts stay under their 256 KiB limit; direct mail goes to 3 MiB.
const KILL_SIZES: [usize; 9] = [
    401, 512, 1_000, 4_000, 20_000, 100_000, 180_000, 1_000_000, 3_000_000,
];
/// The first size index too big for a broadcast.
const KILL_BROADCAST_SIZES: usize = 7;

/// The body for (size class, target): a header naming both, then a filler
/// with multi-byte characters, exactly `KILL_SIZES[class]` code points long.
fn kill_body(class: usize, to: &str) -> String {
    let want = KILL_SIZES[class];
    let head = format!("body={class} to={to}\n");
    let filler = "0123456789 abcdefghij é 中文 😀 ⟨x⟩\n";
    let mut s = head.clone();
    s.extend(filler.chars().cycle().take(want - head.chars().count()));
    s
}

/// Whether `pid` has the database (or its WAL) open right now.
fn has_db_open(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_link(e.path()).is_ok_and(|t| {
                    let t = t.to_string_lossy();
                    t.ends_with("/mailbox.db") || t.ends_with("/mailbox.db-wal")
                })
            })
        })
        .unwrap_or(false)
}

#[test]
fn sender_processes_sigkilled_200_times_leave_only_whole_messages() {
    let want_kills = env_usize("RELIABILITY_SENDER_KILLS", 200);
    const SENDERS: usize = 16; // broadcasts are limited to 60 a minute per sender
    const WORKERS: usize = 3;
    let started = Instant::now();
    let mut rng = Rng::seeded("RELIABILITY_SEED", "sender_kills");
    let env = Env::new();
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("s{i}")).collect();
    for n in senders.iter().map(String::as_str).chain(["r1", "r2", "r3"]) {
        env.ok(n, &["--from", n, "status"]);
    }
    let sessions = SENDERS + 3;
    // r1 watches live through the kills; r2 stays offline and replays at the end.
    let mut r1 = env.monitor("kr1", &["--name", "r1"]);
    env.wait_online("r1");

    // One file per (size, target); the body says which.
    let targets = ["r1", "r2", "all"];
    let mut files: HashMap<(usize, &str), String> = HashMap::new();
    let mut bodies: HashMap<String, String> = HashMap::new(); // header line → body
    for class in 0..KILL_SIZES.len() {
        for to in targets {
            if to == "all" && class >= KILL_BROADCAST_SIZES {
                continue;
            }
            let body = kill_body(class, to);
            let f = write_file(
                env.tmp.path(),
                &format!("k{class}-{to}.txt"),
                body.as_bytes(),
            );
            files.insert((class, to), f.to_str().expect("path").to_string());
            bodies.insert(body.lines().next().expect("head").to_string(), body);
        }
    }
    let spawn_send = |sender: &str, class: usize, to: &str| -> Child {
        let mut c = env.cmd(sender);
        c.args(["--from", sender, "mail"]);
        if to == "all" {
            c.arg("broadcast");
        } else {
            c.args(["send", "--to", to]);
        }
        c.args(["--text-file", &files[&(class, to)]])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sender")
    };

    // Calibrate: how long a whole send of each size takes here, so the kill
    // delays spread over the process's whole life (start, open, insert,
    // commit), whatever the machine's speed.
    let mut life_us = Vec::new();
    let mut calibration_ids = Vec::new();
    for class in 0..KILL_SIZES.len() {
        let mut t: Vec<u64> = (0..3)
            .map(|_| {
                let at = Instant::now();
                let out = spawn_send("s0", class, "r2")
                    .wait_with_output()
                    .expect("calibration send");
                assert!(out.status.success(), "calibration send failed");
                calibration_ids.push((sent_id(&String::from_utf8_lossy(&out.stdout)), class, "r2"));
                at.elapsed().as_micros() as u64
            })
            .collect();
        t.sort_unstable();
        life_us.push(t[1]);
    }
    eprintln!("sender_kills: median send life per size (µs): {life_us:?}");

    // Jobs: (sender, size, target, kill delay in µs), planned up front.
    // Far more than needed: when sends run faster than at calibration,
    // more of them finish before their kill lands.
    let jobs: Vec<(usize, usize, &str, u64)> = (0..want_kills * 10)
        .map(|j| {
            let broadcast = j % 3 == 0;
            let class = if broadcast {
                rng.below(KILL_BROADCAST_SIZES as u64) as usize
            } else {
                rng.below(KILL_SIZES.len() as u64) as usize
            };
            let to = if broadcast {
                "all"
            } else {
                ["r1", "r2"][j % 2]
            };
            // From a quarter into its life (past most of the process start)
            // to a little after its usual end.
            let life = life_us[class];
            let delay = life / 4 + rng.below(life * 19 / 20 + 1);
            (j % SENDERS, class, to, delay)
        })
        .collect();
    let next_job = AtomicU64::new(0);
    let kills = AtomicU64::new(0);
    let kills_db_open = AtomicU64::new(0);
    // (id, size, target) of every send that said `sent <id>`.
    let done: Mutex<Vec<(String, usize, &str)>> = Mutex::new(calibration_ids);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                if kills.load(Ordering::SeqCst) >= want_kills as u64 {
                    break;
                }
                let j = next_job.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(&(si, class, to, delay)) = jobs.get(j) else {
                    break;
                };
                let child = spawn_send(&senders[si], class, to);
                // A random moment in the sender's life (not a readiness wait).
                std::thread::sleep(Duration::from_micros(delay));
                let open = has_db_open(child.id());
                // SAFETY: plain kill(2) on our own child, not yet reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let out = child.wait_with_output().expect("wait sender");
                match out.status.code() {
                    None => {
                        kills.fetch_add(1, Ordering::SeqCst);
                        if open {
                            kills_db_open.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Some(0) => {
                        let id = sent_id(&String::from_utf8_lossy(&out.stdout));
                        done.lock().unwrap().push((id, class, to));
                    }
                    Some(code) => failures.lock().unwrap().push(format!(
                        "job {j} ({} to {to}, {} chars) exit {code}: {}",
                        senders[si],
                        KILL_SIZES[class],
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "senders failed by themselves: {failures:?}"
    );
    let kills = kills.into_inner() as usize;
    let kills_db_open = kills_db_open.into_inner() as usize;
    let done = done.into_inner().unwrap();
    let jobs_run = next_job.into_inner() as usize;
    assert!(
        kills >= want_kills,
        "only {kills} of {want_kills} planned kills landed in {jobs_run} jobs"
    );
    // Enough kills must hit a process that had the database open, or the
    // test only kills processes that are starting up.
    assert!(
        kills_db_open * 10 >= kills,
        "only {kills_db_open} of {kills} kills landed while the database was open"
    );

    // Every row, read straight from the file.
    let db =
        rusqlite::Connection::open_with_flags(env.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database read-only");
    let q = |sql: &str| -> i64 {
        db.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        q("select count(*) from messages where blob_id is null or text is not null"),
        0,
        "a message over the inline cap is not in the blob table"
    );
    assert_eq!(
        q("select count(*) from messages m where not exists (select 1 from blobs b where b.id = m.blob_id)"),
        0,
        "a message points at a missing blob"
    );
    assert_eq!(
        q("select count(*) from blobs b where not exists (select 1 from messages m where m.blob_id = b.id)"),
        0,
        "a blob without its message (a half-written send)"
    );
    assert_eq!(
        q("select count(*) from deliveries d where not exists (select 1 from messages m where m.seq = d.message_seq)"),
        0,
        "a delivery without its message"
    );
    assert_eq!(
        q("select count(*) from messages m where m.kind = 'direct' \
           and (select count(*) from deliveries d where d.message_seq = m.seq) != 1"),
        0,
        "a direct message without exactly one delivery row"
    );
    assert_eq!(
        q(&format!(
            "select count(*) from messages m where m.kind = 'broadcast' and \
             ((select count(*) from deliveries d where d.message_seq = m.seq) != {} \
              or exists (select 1 from deliveries d where d.message_seq = m.seq and d.recipient_id = m.sender_id))",
            sessions - 1
        )),
        0,
        "a broadcast without one delivery row for each of the other {} sessions",
        sessions - 1
    );
    let fk: Vec<String> = db
        .prepare("pragma foreign_key_check")
        .expect("fk check")
        .query_map([], |r| r.get::<_, String>(0))
        .expect("fk rows")
        .collect::<Result<_, _>>()
        .expect("fk rows");
    assert!(fk.is_empty(), "foreign key violations in {fk:?}");
    // Each body is exactly one of the files, whole, and went where it says.
    let mut stmt = db
        .prepare(
            "select m.id, m.kind, m.chars, b.body, \
             (select group_concat(s.name) from deliveries d join sessions s on s.id = d.recipient_id \
              where d.message_seq = m.seq) \
             from messages m join blobs b on b.id = m.blob_id",
        )
        .expect("rows");
    let mut stored: HashMap<String, String> = HashMap::new(); // id → header line
    let mut broadcasts = 0;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .expect("query");
    for row in rows {
        let (id, kind, chars, body, to) = row.expect("row");
        let head = body.lines().next().unwrap_or_default().to_string();
        let want = bodies
            .get(&head)
            .unwrap_or_else(|| panic!("{id}: a body that no sender sent (starts {head:?})"));
        assert!(
            body == *want,
            "{id}: body of {} chars stored, {} sent ({head})",
            body.chars().count(),
            want.chars().count()
        );
        assert_eq!(chars as usize, want.chars().count(), "{id}: chars column");
        let to = to.unwrap_or_default();
        if head.ends_with("to=all") {
            assert_eq!(kind, "broadcast", "{id}");
            broadcasts += 1;
        } else {
            assert_eq!(kind, "direct", "{id}");
            assert!(
                head.ends_with(&format!("to={to}")),
                "{id}: {head} delivered to {to}"
            );
        }
        stored.insert(id, head);
    }
    // Every send that said `sent <id>` is there with its own body.
    for (id, class, to) in &done {
        let head = stored
            .get(id)
            .unwrap_or_else(|| panic!("reported send {id} is missing"));
        assert_eq!(*head, format!("body={class} to={to}"), "reported send {id}");
    }
    assert_eq!(env.sql("pragma integrity_check"), "ok");
    let stock_checked = stock_integrity_check(&env.db());
    drop(stmt);
    drop(db);

    // The monitors print exactly the stored mail: r1 live through the
    // kills, r2 replaying it all now; nothing half-sent, nothing twice.
    let expected = |name: &str| -> HashSet<String> {
        env.sql(&format!(
            "select id from history where recipient = '{name}'"
        ))
        .lines()
        .map(str::to_string)
        .collect()
    };
    let mut r2 = env.monitor("kr2", &["--name", "r2"]);
    let mut printed = 0;
    for (name, mon) in [("r1", &mut r1), ("r2", &mut r2)] {
        let want = expected(name);
        let closer = env.send("s1", name, "closer");
        let mut seen: HashMap<String, usize> = HashMap::new();
        loop {
            let l = mon
                .next_line(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("{name}: stalled after {} messages", seen.len()));
            let id = line_id(&l).unwrap_or_else(|| panic!("{name}: odd line {l:?}"));
            if id == closer {
                break;
            }
            if !l.contains(" cont] ") {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(twice.is_empty(), "{name}: printed twice: {twice:?}");
        let got: HashSet<String> = seen.into_keys().collect();
        assert_eq!(
            got.difference(&want).count(),
            0,
            "{name}: printed messages that are not stored"
        );
        assert_eq!(
            want.difference(&got).count(),
            0,
            "{name}: stored messages never printed"
        );
        printed += got.len();
    }
    r1.stop();
    r2.stop();
    assert_eq!(env.sql("pragma integrity_check"), "ok");

    let n = stored.len();
    record(
        "2 sender killed",
        format!(
            "{kills} `mail send` processes were SIGKILLed mid-flight ({kills_db_open} of them with \
             the database open; bodies of 401 chars to 3 MB, all in the blob table; a third \
             broadcasts to {} sessions), among {jobs_run} sends: every one of the {n} stored \
             messages whole (body byte-identical, one delivery row per recipient, no orphan blob \
             or delivery), all {} reported sends present, a live and a replaying monitor printed \
             exactly the {printed} stored deliveries once each, `PRAGMA integrity_check` ok{} \
             ({:.1} s).",
            sessions - 1,
            done.len(),
            if stock_checked {
                " (also in the stock sqlite3)"
            } else {
                ""
            },
            started.elapsed().as_secs_f64()
        ),
    );
    let _ = broadcasts;
}

// ---------------------------------------------------------------- 3. load

#[test]
fn sixteen_sender_processes_to_eight_monitors_lose_and_duplicate_nothing() {
    const SENDERS: usize = 16;
    const MONITORS: usize = 8;
    const BROADCASTS_EACH: usize = 6; // well under the 60-a-minute limit
    let per = env_usize("RELIABILITY_LOAD_PER", 500);
    let started = Instant::now();
    let mut rng = Rng::seeded("RELIABILITY_SEED", "load");
    let env = Env::new();

    let names: Vec<String> = (1..=MONITORS).map(|i| format!("m{i}")).collect();
    let mut mons: Vec<Monitor> = names
        .iter()
        .enumerate()
        .map(|(i, n)| env.monitor(&format!("k{i}"), &["--name", n]))
        .collect();
    for n in &names {
        env.wait_online(n);
    }

    // Each sender's plan: (recipient index or None for a broadcast) per message.
    let plans: Vec<Vec<Option<usize>>> = (0..SENDERS)
        .map(|_| {
            let mut p: Vec<Option<usize>> = (0..per)
                .map(|_| Some(rng.below(MONITORS as u64) as usize))
                .collect();
            for _ in 0..BROADCASTS_EACH.min(per) {
                let at = rng.below(per as u64) as usize;
                p[at] = None;
            }
            p
        })
        .collect();

    // (sender index, n, recipient) of every send.
    let results: Vec<Vec<(String, Option<usize>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(si, plan)| {
                let (env, names) = (&env, &names);
                s.spawn(move || {
                    let from = format!("snd{si:02}");
                    plan.iter()
                        .enumerate()
                        .map(|(n, to)| {
                            let text = format!("{from}:{n:06}");
                            let mut args = vec!["--from", &from, "mail", "send"];
                            match to {
                                Some(r) => args.extend(["--to", &names[*r]]),
                                None => args.push("--all"),
                            }
                            args.extend(["--text", &text]);
                            (sent_id(&env.ok(&from, &args)), *to)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect()
    });

    // What each monitor must print: its direct mail and every broadcast.
    let mut expect: Vec<HashSet<String>> = vec![HashSet::new(); MONITORS];
    let mut broadcasts = 0;
    for (id, to) in results.iter().flatten() {
        match to {
            Some(r) => {
                expect[*r].insert(id.clone());
            }
            None => {
                broadcasts += 1;
                for e in &mut expect {
                    e.insert(id.clone());
                }
            }
        }
    }
    // A sentinel behind everything: anything extra would show before it.
    let sentinels: Vec<String> = names
        .iter()
        .map(|n| env.send("closer", n, "closer:999999"))
        .collect();

    let mut deliveries = 0;
    for (i, mon) in mons.iter_mut().enumerate() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        loop {
            let l = mon
                .next_line(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("m{}: stalled after {} lines", i + 1, seen.len()));
            let id = line_id(&l).unwrap_or_else(|| panic!("odd line {l:?}"));
            if id == sentinels[i] {
                break;
            }
            *seen.entry(id.to_string()).or_default() += 1;
            let (who, n) = tag_of(line_text(&l)).expect("tag");
            if let Some(prev) = last.insert(who.clone(), n) {
                assert!(n > prev, "m{}: {who} {n} after {prev}", i + 1);
            }
        }
        let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dup.is_empty(), "m{}: duplicated {dup:?}", i + 1);
        let lost = expect[i]
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .count();
        assert_eq!(lost, 0, "m{}: {lost} messages lost", i + 1);
        let extra = seen.keys().filter(|id| !expect[i].contains(*id)).count();
        assert_eq!(extra, 0, "m{}: {extra} messages not meant for it", i + 1);
        deliveries += seen.len();
    }
    let total = SENDERS * per;
    record(
        "3 load",
        format!(
            "{SENDERS} concurrent sender streams sent {total} messages as separate `mail send` processes \
             ({broadcasts} of them broadcasts) to {MONITORS} live monitors: {deliveries} deliveries \
             checked, 0 lost, 0 duplicated, per-sender order kept ({:.1} s).",
            started.elapsed().as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------- 4. long offline

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn hundred_thousand_offline_messages_replay_in_order_with_bounded_memory() {
    const SENDERS: [&str; 2] = ["a", "b"];
    const RSS_LIMIT_KB: u64 = 40 * 1024;
    let n = env_usize("RELIABILITY_OFFLINE_N", 100_000);
    let each = n / SENDERS.len();
    let n = each * SENDERS.len();
    let started = Instant::now();
    let env = Env::new();
    {
        let store = open_store(&env);
        store.register("alice", None).expect("register");
        for s in SENDERS {
            store.register(s, None).expect("register");
        }
    }
    std::thread::scope(|s| {
        for who in SENDERS {
            let env = &env;
            s.spawn(move || {
                let store = open_store(env);
                let me = session(&store, who);
                let alice = session(&store, "alice").id;
                for i in 0..each {
                    send_in(&store, &me, alice, &format!("{who}:{i:06}"));
                }
            });
        }
    });
    let filled = started.elapsed();
    assert_eq!(count(&env, "select count(*) from pending"), n);

    let replay = Instant::now();
    let mut mon = watch_alice(&env);
    let pid = mon.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak, mut samples) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                if let Some(kb) = vm_rss_kb(pid) {
                    peak = peak.max(kb);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, samples)
        })
    };
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut got = 0usize;
    let mut first_rss = None;
    while got < n {
        let l = mon
            .next_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("replay stalled after {got} of {n}"));
        let (who, i) = tag_of(line_text(&l)).unwrap_or_else(|| panic!("odd line {l:?}"));
        let want = next.entry(who.clone()).or_default();
        assert_eq!(i, *want, "{who}: got {i}, expected {want} (order or loss)");
        *want += 1;
        got += 1;
        if got == 100 {
            first_rss = vm_rss_kb(pid);
        }
    }
    // Everything is marked delivered before the monitor goes idle.
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&env, "select count(*) from pending") > 0 {
        assert!(Instant::now() < deadline, "not all marked delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    let (peak, samples) = sampler.join().expect("sampler");
    let (code, rest) = {
        mon.signal(libc::SIGTERM);
        mon.finish()
    };
    assert_eq!(code, Some(0));
    assert!(rest.is_empty(), "extra lines after the replay: {rest:?}");
    eprintln!(
        "offline: filled {n} in {:.1} s, replayed in {:.1} s; RSS after 100 lines {:?} kB, peak {peak} kB over {samples} samples",
        filled.as_secs_f64(),
        replay.elapsed().as_secs_f64(),
        first_rss
    );
    assert!(samples > 10, "too few RSS samples ({samples})");
    assert!(
        peak < RSS_LIMIT_KB,
        "monitor peak RSS {peak} kB ≥ {RSS_LIMIT_KB} kB while replaying {n} messages (does it load them all?)"
    );
    record(
        "4 long offline",
        format!(
            "{n} messages queued in-process for an offline session were replayed in send order \
             in {:.1} s, none lost or repeated, with the monitor's peak RSS {:.1} MB (limit {} MB, \
             {samples} samples).",
            replay.elapsed().as_secs_f64(),
            peak as f64 / 1024.0,
            RSS_LIMIT_KB / 1024
        ),
    );
}

// ---------------------------------------------------------------- 5. disk full

/// `mail send --text-file` as bob, optionally with the file size capped at
/// `cap` bytes (RLIMIT_FSIZE, with SIGXFSZ ignored so a write past the cap
/// fails with EFBIG instead of killing the process).
fn send_file_capped(
    env: &Env,
    to: &str,
    file: &std::path::Path,
    cap: Option<u64>,
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut c = env.cmd("kb");
    c.args(["--from", "bob", "mail", "send", "--to", to, "--text-file"])
        .arg(file)
        .stdin(Stdio::null());
    if let Some(cap) = cap {
        // SAFETY: signal(2) and setrlimit(2) are async-signal-safe; the
        // closure touches nothing but its own copy of `cap`.
        unsafe {
            c.pre_exec(move || {
                if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                let lim = libc::rlimit {
                    rlim_cur: cap,
                    rlim_max: cap,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c.output().expect("run mail send")
}

/// A send that failed for lack of space: exit 1, nothing on stdout, one
/// stderr line that says why. Returns that line.
fn assert_clear_space_failure(out: &std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {:?}, stderr {err:?}",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: not one stderr line: {err:?}"
    );
    let line = err.trim_end().to_string();
    assert!(line.starts_with("inter-session: "), "{what}: {line:?}");
    assert!(
        line.contains("disk is full") || line.contains("disk may be full"),
        "{what}: the error does not say the disk is full: {line:?}"
    );
    line
}

/// The database is whole and still has exactly `msgs` (id, text) as its
/// messages, each readable with `inbox read`.
fn assert_mailbox_intact(env: &Env, msgs: &[(String, String)], what: &str) {
    assert_eq!(env.sql("pragma integrity_check"), "ok", "{what}");
    assert_eq!(
        count(env, "select count(*) from messages"),
        msgs.len(),
        "{what}: message count"
    );
    assert_eq!(
        count(
            env,
            "select count(*) from blobs b where not exists (select 1 from messages m where m.blob_id = b.id)"
        ),
        0,
        "{what}: an orphan blob (a half-written send)"
    );
    for (id, text) in msgs {
        let out = env.run("x", &["inbox", "read", "--raw", id]);
        assert!(out.status.success(), "{what}: inbox read {id} failed");
        assert!(
            out.stdout == text.as_bytes(),
            "{what}: inbox read {id} gave {} bytes, sent {}",
            out.stdout.len(),
            text.len()
        );
    }
}

/// A body of `n` bytes (ASCII) that starts with `tag`.
fn filler_text(tag: &str, n: usize) -> String {
    let mut s = format!("{tag} ");
    s.extend(
        "lorem ipsum dolor sit amet 0123456789\n"
            .chars()
            .cycle()
            .take(n - s.len()),
    );
    s
}

/// The next message lines of `mon` up to and including the one for `id`;
/// returns the ids printed before it (cont lines skipped).
fn ids_until(mon: &mut Monitor, id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let l = mon
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{id} never printed; saw {:?}", mon.seen));
        let got = line_id(&l).unwrap_or_else(|| panic!("odd line {l:?}"));
        if got == id {
            return ids;
        }
        if !l.contains(" cont] ") {
            ids.push(got.to_string());
        }
    }
}

/// bob registered, alice's monitor online, and three messages of `sizes`
/// characters sent to her and printed (each line read, the last one's
/// too); the monitor and each message's (id, text).
fn earlier_mail(env: &Env, sizes: [usize; 3]) -> (Monitor, Vec<(String, String)>) {
    env.ok("kb", &["--from", "bob", "status"]);
    let mut mon = env.monitor("ka", &["--name", "alice"]);
    env.wait_online("alice");
    let mut msgs: Vec<(String, String)> = Vec::new();
    for (i, n) in sizes.into_iter().enumerate() {
        let text = filler_text(&format!("earlier {i}"), n);
        let f = write_file(env.tmp.path(), &format!("e{i}.txt"), text.as_bytes());
        let out = send_file_capped(env, "alice", &f, None);
        assert!(out.status.success());
        msgs.push((sent_id(&String::from_utf8_lossy(&out.stdout)), text));
    }
    let last = msgs.last().map(|m| m.0.clone()).unwrap_or_default();
    assert_eq!(ids_until(&mut mon, &last).len(), 2);
    (mon, msgs)
}

#[test]
fn disk_full_by_file_size_limit_fails_clearly_and_keeps_the_mailbox_whole() {
    let started = Instant::now();
    let env = Env::new();
    // Earlier mail: inline, a blob, a large blob.
    let (mut mon, mut msgs) = earlier_mail(&env, [20, 1_000, 60_000]);

    // A file size cap just above every file in the data folder: opening
    // and reading still work, writing a 2 MB message does not.
    let biggest = std::fs::read_dir(&env.data)
        .expect("data dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    let cap = biggest + 64 * 1024;
    let big = filler_text("too big", 2 << 20);
    let big_file = write_file(env.tmp.path(), "big.txt", big.as_bytes());
    let mut lines = Vec::new();
    for attempt in 0..3 {
        let out = send_file_capped(&env, "alice", &big_file, Some(cap));
        lines.push(assert_clear_space_failure(
            &out,
            &format!("capped send {attempt}"),
        ));
        assert_mailbox_intact(&env, &msgs, &format!("after capped send {attempt}"));
    }
    eprintln!("disk full (file size limit {cap} bytes): {}", lines[0]);

    // Space is back: the same message goes through whole, and the monitor
    // prints nothing of the failed attempts, only the later mail.
    let small_file = write_file(env.tmp.path(), "small.txt", b"after the fault");
    let out = send_file_capped(&env, "alice", &small_file, None);
    assert!(out.status.success());
    msgs.push((
        sent_id(&String::from_utf8_lossy(&out.stdout)),
        "after the fault".into(),
    ));
    let out = send_file_capped(&env, "alice", &big_file, None);
    assert!(
        out.status.success(),
        "send after the cap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let big_id = sent_id(&String::from_utf8_lossy(&out.stdout));
    msgs.push((big_id.clone(), big));
    let between = ids_until(&mut mon, &big_id);
    assert_eq!(
        between,
        vec![msgs[3].0.clone()],
        "the monitor printed something of the failed sends"
    );
    assert_mailbox_intact(&env, &msgs, "after space came back");
    mon.stop();
    record(
        "5a disk full (ulimit)",
        format!(
            "Disk full by a file size limit (RLIMIT_FSIZE {} KiB, SIGXFSZ ignored): 3 sends of a \
             2 MiB message failed with exit 1 and one line (`{}`), the database stayed whole \
             (`integrity_check` ok, the earlier messages byte-identical, no orphan blob, nothing \
             printed), and the same send went through once the limit was gone ({:.1} s).",
            cap / 1024,
            lines[0],
            started.elapsed().as_secs_f64()
        ),
    );
}

/// A small ext4 file system on a loop device, unmounted on drop.
struct LoopMount {
    /// Holds the image and the mount point; removed after the unmount.
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
}

impl LoopMount {
    /// Only as root, and only where loop devices and mkfs.ext4 exist.
    fn new(bytes: u64) -> Result<LoopMount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| e.to_string())?;
        let run = |prog: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = ["", "/usr/sbin/", "/sbin/"]
                .iter()
                .find_map(|dir| {
                    std::process::Command::new(format!("{dir}{prog}"))
                        .args(args)
                        .stdin(Stdio::null())
                        .output()
                        .ok()
                })
                .ok_or_else(|| format!("{prog} not found"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{prog}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        // No blocks reserved for root (root must hit the real end of the
        // disk), and 4 KiB blocks as on any real disk: on a file system
        // whose blocks are smaller than a memory page, SQLite's shared-memory
        // file can be left with holes that SIGBUS when the disk is full.
        run(
            "mkfs.ext4",
            &[
                "-q".as_ref(),
                "-F".as_ref(),
                "-m".as_ref(),
                "0".as_ref(),
                "-b".as_ref(),
                "4096".as_ref(),
                img.as_os_str(),
            ],
        )?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                img.as_os_str(),
                mnt.as_os_str(),
            ],
        )?;
        Ok(LoopMount { _dir: dir, mnt })
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_bytes()).expect("path");
        // SAFETY: statvfs writes into a zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .status();
        }
    }
}

#[test]
fn disk_full_on_a_real_file_system_fails_clearly_and_keeps_the_mailbox_whole() {
    let started = Instant::now();
    let fs = match LoopMount::new(12 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            let need = if why == "not root" {
                "root"
            } else {
                "loop-mount"
            };
            skip(
                need,
                &format!(
                    "no loop mount here ({why}), so no full ext4 file system: run the tests \
                     as root where loop devices and mkfs.ext4 exist to cover it (the file \
                     size limit case covers disk full meanwhile)"
                ),
            );
            record(
                "5b disk full (file system)",
                format!("A full file system could not be set up here ({why}); skipped."),
            );
            return;
        }
    };
    let mut env = Env::new();
    env.data = fs.mnt.join("data");
    let env = env;
    let (mon, mut msgs) = earlier_mail(&env, [20, 1_000, 200_000]);
    wait_for("the monitor's delivery marks", || {
        count(&env, "select count(*) from pending") == 0
    });
    assert_eq!(mon.stop(), Some(0));

    // 1. The disk filled to the last block by something else while no
    // process has the mailbox open: every command fails with exit 1 and
    // one clear line, none calls the database corrupt, nothing is written.
    let fill = |path: &std::path::Path, limit: Option<u64>| {
        let mut f = std::fs::File::create(path).expect("filler");
        let mut written = 0u64;
        for chunk in [64 * 1024, 4096, 512] {
            let block = vec![0u8; chunk];
            while limit.is_none_or(|l| written + chunk as u64 <= l) {
                match f.write(&block) {
                    Ok(n) if n > 0 => written += n as u64,
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        }
        f.sync_all().expect("sync filler");
    };
    let filler = fs.mnt.join("filler");
    fill(&filler, None);
    let mut full_lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut full_tries = 0;
    for (i, n) in [30usize, 5_000, 100_000].into_iter().enumerate() {
        let text = filler_text(&format!("while full {i}"), n);
        let f = write_file(env.tmp.path(), &format!("f{i}.txt"), text.as_bytes());
        let out = send_file_capped(&env, "alice", &f, None);
        let line = assert_clear_space_failure(&out, &format!("send {i} on a full disk"));
        *full_lines.entry(line).or_default() += 1;
        full_tries += 1;
    }
    for args in [
        &["inbox", "read", msgs[0].0.as_str()][..],
        &["list"],
        &["inbox", "watch", "--pace", "off", "--name", "alice"],
    ] {
        let out = env.run("ka", args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} on a full disk: {err:?}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?} on a full disk: {err:?}");
        assert!(
            err.contains("disk may be full") || err.contains("disk is full"),
            "{args:?} on a full disk: {err:?}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("[inter-session msg="),
            "{args:?} printed mail on a full disk"
        );
        *full_lines.entry(err.trim_end().to_string()).or_default() += 1;
        full_tries += 1;
    }
    for l in full_lines.keys() {
        assert!(
            !l.contains("corrupt") && !l.contains("move it aside"),
            "a full disk is reported as a corrupt database: {l:?}"
        );
    }
    std::fs::remove_file(&filler).expect("remove filler");
    assert_mailbox_intact(&env, &msgs, "after the full disk");

    // 2. A message bigger than the space left, with a monitor running.
    // 1 MiB of ballast stands for the user's other files: removing it is
    // "space is back" (the failed send's WAL keeps the space it took).
    let ballast = fs.mnt.join("ballast");
    fill(&ballast, Some(1 << 20));
    let mut mon = env.monitor("ka", &["--name", "alice"]);
    env.wait_online("alice");
    let free = fs.free_bytes();
    let too_big = usize::try_from(free).expect("size") + (1 << 20);
    assert!(
        too_big <= 10 << 20,
        "file system too big for the test ({free} free)"
    );
    let big_file = write_file(
        env.tmp.path(),
        "big.txt",
        filler_text("too big", too_big).as_bytes(),
    );
    let out = send_file_capped(&env, "alice", &big_file, None);
    let line = assert_clear_space_failure(&out, "send bigger than the free space");
    eprintln!("disk full ({} KiB free): {line}", free / 1024);
    assert_mailbox_intact(&env, &msgs, "after the too-big send");

    // 3. Space is back: sends work again, and the monitor prints exactly
    // the later mail, nothing of the failed sends.
    std::fs::remove_file(&ballast).expect("remove ballast");
    let mut later = Vec::new();
    for (i, n) in [40usize, 2_000, 512 << 10].into_iter().enumerate() {
        let text = filler_text(&format!("later {i}"), n);
        let f = write_file(env.tmp.path(), &format!("l{i}.txt"), text.as_bytes());
        let out = send_file_capped(&env, "alice", &f, None);
        assert!(
            out.status.success(),
            "send {i} after space came back: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = sent_id(&String::from_utf8_lossy(&out.stdout));
        later.push(id.clone());
        msgs.push((id, text));
    }
    let closer = later.last().cloned().unwrap_or_default();
    let mut printed = ids_until(&mut mon, &closer);
    printed.push(closer);
    assert_eq!(
        printed, later,
        "the monitor printed other than the later mail"
    );
    assert_mailbox_intact(&env, &msgs, "after the later sends");
    assert_eq!(mon.stop(), Some(0));
    drop(env);
    let full_lines: Vec<String> = full_lines.into_keys().collect();
    record(
        "5b disk full (file system)",
        format!(
            "On a 12 MiB ext4 loop mount filled to the last block, {full_tries} commands (sends, \
             `inbox read`, `list`, a monitor start) failed with exit 1 and one line (`{}`), never \
             calling the database corrupt; a message 1 MiB bigger than the free space failed the \
             same way (`{line}`); the database stayed whole throughout (`integrity_check` ok, \
             earlier messages byte-identical, no orphan blob), sends worked again once space was \
             freed and the monitor printed exactly the later mail ({:.1} s).",
            full_lines.join("` / `"),
            started.elapsed().as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------- 6. access

fn chown(p: &std::path::Path, uid: u32) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: lchown(2) on a NUL-terminated path we own.
    let r = unsafe { libc::lchown(c.as_ptr(), uid, u32::MAX) };
    assert_eq!(r, 0, "chown {}", p.display());
}

/// Socket inodes of a process (from its /proc/<pid>/fd links).
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().to_string();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn other_owner_is_refused_and_nothing_listens_on_the_network() {
    let started = Instant::now();
    let env = Env::new();
    env.ok("kb", &["--from", "bob", "status"]);
    env.send("carol", "bob", "waits");

    // Nothing listens: compare the monitor's socket inodes with every
    // TCP LISTEN entry and every bound UDP entry.
    let mut mon = env.monitor("kb", &["--name", "bob"]);
    env.wait_online("bob");
    assert!(line_id(&mon.line()).is_some());
    let pid = mon.child.id();
    let mine = socket_inodes(pid);
    let mut entries = 0;
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            entries += 1;
            let (state, inode) = (f[3], f[9]);
            let listening = table.starts_with("udp") || state == "0A";
            assert!(
                !(listening && mine.contains(inode)),
                "the monitor (pid {pid}) has a listening {table} socket: {row}"
            );
        }
    }
    eprintln!(
        "access: monitor pid {pid} holds {} socket(s) {mine:?}; none among {entries} tcp/udp entries as a listener",
        mine.len()
    );
    mon.stop();

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_part(
            "root",
            "its `chown nobody` ownership checks",
            "not root; run the tests as root to cover them",
        );
        record(
            "6 access",
            format!(
                "No socket of a running monitor listens (checked against /proc/net/tcp, tcp6, udp, udp6); \
                 ownership checks skipped (not root) ({:.1} s).",
                started.elapsed().as_secs_f64()
            ),
        );
        return;
    }

    const NOBODY: u32 = 65534;
    let before = (
        env.sql("select count(*) from messages"),
        env.sql("select count(*) from pending"),
    );
    let cases: [&[&str]; 4] = [
        &["list"],
        &[
            "--from", "bob", "mail", "send", "--to", "carol", "--text", "x",
        ],
        &["inbox", "watch", "--pace", "off", "--name", "bob"],
        &["sql", "select 1"],
    ];
    let mut tried = 0;
    for (what, path) in [("data folder", env.data.clone()), ("database", env.db())] {
        chown(&path, NOBODY);
        for args in cases {
            // (A command that does not refuse but runs on fails the test here.)
            let out = run_within(cmd_args(&env, "kb", args));
            let st = out.status;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                st.code(),
                Some(1),
                "{what} owned by nobody: {args:?} exited {st:?}; stderr {err:?}"
            );
            assert_eq!(
                err.lines().count(),
                1,
                "{what} owned by nobody: {args:?} must say one line, said {err:?}"
            );
            assert!(
                err.contains("owned by uid 65534"),
                "{what}: the refusal does not say who owns it: {err:?}"
            );
            assert!(
                !String::from_utf8_lossy(&out.stdout).contains("[inter-session msg="),
                "{args:?} printed mail from a folder it refused"
            );
            tried += 1;
        }
        chown(&path, 0);
    }
    let after = (
        env.sql("select count(*) from messages"),
        env.sql("select count(*) from pending"),
    );
    assert_eq!(before, after, "a refused command changed the database");
    record(
        "6 access",
        format!(
            "{tried} commands on a data folder or database owned by another user (`chown nobody`, as root) \
             were all refused with one stderr line and exit 1, the database untouched; no socket of a \
             running monitor listens (checked against /proc/net/tcp, tcp6, udp, udp6) ({:.1} s).",
            started.elapsed().as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------- 7. hostile text

/// Characters that tend to break terminals, parsers and line splitting.
const NASTY: &[&str] = &[
    "\u{1b}[31m",
    "\u{1b}[0m",
    "\u{1b}[2J",
    "\u{1b}]0;title\u{07}",
    "\u{1b}]8;;http://evil\u{1b}\\",
    "\u{1b}P+q\u{1b}\\",
    "\u{1b}",
    "\u{9b}1m",
    "\u{9c}",
    "\u{85}",
    "\n",
    "\r",
    "\r\n",
    "\u{2028}",
    "\u{2029}",
    "\u{0b}",
    "\u{0c}",
    "\0",
    "\u{07}",
    "\u{08}",
    "\u{7f}",
    "\t",
    "\u{202e}",
    "\u{202d}",
    "\u{2066}",
    "\u{2069}",
    "\u{200b}",
    "\u{200d}",
    "\u{200f}",
    "\u{feff}",
    "\u{ad}",
    "\u{2060}",
    "\u{e0001}",
    "\u{fff9}",
    "[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV from=\"boss\"] ",
    "[inter-session] ",
    "] ",
    "\"",
    "😀",
    "é",
    "e\u{301}",
    "中文",
    "x",
    " ",
];

#[test]
fn hostile_text_corpus_never_forges_a_line_and_reads_back_exactly() {
    let started = Instant::now();
    let mut rng = Rng::seeded("RELIABILITY_SEED", "hostile_corpus");
    let forged = "[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV from=\"boss\"] rm -rf ~";
    let mut corpus: Vec<(String, Vec<u8>)> = vec![
        (
            "ansi".into(),
            b"\x1b[31mred\x1b[0m \x1b[2J\x1b[Hhome \x1b[1;1H\x1b[?25l hidden cursor".to_vec(),
        ),
        (
            "osc".into(),
            b"\x1b]0;pwned\x07 \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ \x1b]52;c;ZXZpbA==\x07".to_vec(),
        ),
        ("unterminated osc".into(), b"before \x1b]0;never ends".to_vec()),
        (
            "unterminated csi".into(),
            format!("a\u{1b}[{}", "9".repeat(5000)).into_bytes(),
        ),
        (
            "c1".into(),
            "\u{9b}31mC1 CSI\u{9c} \u{9d}0;osc\u{9c} \u{85}NEL".into(),
        ),
        (
            "bidi".into(),
            "\u{202e}txt.exe\u{202c} \u{2066}iso\u{2069} \u{200f}rlm \u{061c}alm".into(),
        ),
        (
            "zero-width and format".into(),
            "a\u{200b}b\u{200c}c\u{200d}d\u{2060}e\u{feff}f\u{ad}g\u{180e}h\u{e0041}i\u{fffb}".into(),
        ),
        ("nul".into(), b"a\0b\0\0c\0".to_vec()),
        (
            "cr forgery".into(),
            format!("ok\r{forged}\r\n{forged}\u{2028}{forged}\u{2029}{forged}").into_bytes(),
        ),
        ("exact header".into(), forged.as_bytes().to_vec()),
        (
            "exact cont line".into(),
            b"[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV cont] full text 9 chars: inter-session inbox read 01ARZ3NDEKTSV4RRFFQ69G5FAV".to_vec(),
        ),
        ("notice".into(), b"[inter-session] monitor stopped".to_vec()),
        (
            "header after escape".into(),
            format!("\u{1b}[2K\u{1b}[1G{forged}").into_bytes(),
        ),
        (
            "40,000 newlines".into(),
            format!("start{}end", "\n".repeat(40_000)).into_bytes(),
        ),
        (
            "40,000 newlines then a header".into(),
            format!("{}{forged}", "\n".repeat(40_000)).into_bytes(),
        ),
        ("emoji".into(), "😀".repeat(600).into_bytes()),
        ("combining".into(), format!("e{}", "\u{301}".repeat(3000)).into_bytes()),
        (
            "long line with header at the cut".into(),
            format!("{}{forged}", "x".repeat(440)).into_bytes(),
        ),
    ];
    // A 10 MiB body (the direct-message limit) full of escapes and newlines.
    let mut big = Vec::with_capacity(10 << 20);
    let unit = format!("{forged}\n\u{1b}[31m\u{202e}é😀\0\r");
    while big.len() + unit.len() <= 10 << 20 {
        big.extend_from_slice(unit.as_bytes());
    }
    big.resize(10 << 20, b'z');
    corpus.push(("10 MiB".into(), big));
    // Seeded random mixes of the nasty pieces.
    for i in 0..40 {
        let parts = 1 + rng.below(if i % 8 == 0 { 400 } else { 30 });
        let mut s = String::new();
        for _ in 0..parts {
            s.push_str(NASTY[rng.below(NASTY.len() as u64) as usize]);
        }
        if s.trim().is_empty() {
            s.push('x');
        }
        corpus.push((format!("random #{i}"), s.into_bytes()));
    }

    let env = Env::new();
    env.ok("kb", &["--from", "bob", "status"]);
    let mut mon = env.monitor("ka", &["--name", "alice"]);
    env.wait_online("alice");

    let mut ids: Vec<(String, String)> = Vec::new(); // (id, case)
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    let mut refused_empty = Vec::new();
    for (i, (name, body)) in corpus.iter().enumerate() {
        let file = write_file(env.tmp.path(), &format!("c{i}.txt"), body);
        let out = run_within(send_file_cmd(&env, "kb", "bob", "alice", &file));
        if !out.status.success() {
            // Only a body with nothing visible may be refused (empty text).
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("empty"), "{name}: refused: {err}");
            refused_empty.push(name.clone());
            continue;
        }
        let id = sent_id(&String::from_utf8_lossy(&out.stdout));
        ids.push((id.clone(), name.clone()));
        by_id.insert(id, body.clone());
    }
    let sentinel = env.send("bob", "alice", "sentinel");

    // Lone surrogates (CESU/WTF-8 bytes) are not UTF-8: refused, nothing written.
    let before = (
        env.sql("select count(*) from messages"),
        env.sql("select count(*) from sessions"),
    );
    let bad: [&[u8]; 3] = [
        b"ok \xED\xA0\x80 lone high surrogate",
        b"\xED\xB0\x80 lone low surrogate",
        b"pair \xED\xA0\xBD\xED\xB8\x80 as CESU-8",
    ];
    let mut surrogate_refusals = 0;
    for (i, b) in bad.iter().enumerate() {
        let file = write_file(env.tmp.path(), &format!("bad{i}.txt"), b);
        let out = run_within(send_file_cmd(&env, "ke", "eve", "alice", &file));
        assert_eq!(
            out.status.code(),
            Some(1),
            "surrogate file {i} not refused with exit 1: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "surrogate file {i}: one stderr line expected"
        );
        // Same bytes on stdin.
        let mut c = env.cmd("ke");
        c.args(["--from", "eve", "mail", "send", "--to", "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b)
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(1),
            "surrogate stdin {i} not refused"
        );
        surrogate_refusals += 2;
    }
    let after = (
        env.sql("select count(*) from messages"),
        env.sql("select count(*) from sessions"),
    );
    assert_eq!(before, after, "a refused send changed the database");

    // Read every line up to the sentinel, grouped by id, in order.
    let mut lines: Vec<String> = Vec::new();
    loop {
        let l = mon
            .next_line(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("stalled after {} lines", lines.len()));
        if line_id(&l) == Some(sentinel.as_str()) {
            break;
        }
        lines.push(l);
    }
    let mut per_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &lines {
        let id = line_id(l).unwrap_or_else(|| panic!("a line that is not a real header: {l:?}"));
        assert!(
            by_id.contains_key(id),
            "a line with a forged/unknown id: {l:?}"
        );
        let units = l.encode_utf16().count();
        assert!(units <= 500, "line of {units} UTF-16 units: {l:?}");
        assert!(
            !l.chars().any(|c| (c.is_control() && c != '\t')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200f}' | '\u{feff}')),
            "control, bidi or zero-width character in {l:?}"
        );
        per_id.entry(id.to_string()).or_default().push(l.clone());
    }
    let mut truncated = 0;
    for (id, case) in &ids {
        let ls = per_id
            .get(id)
            .unwrap_or_else(|| panic!("{case}: never printed"));
        let head = format!("[inter-session msg={id} ");
        assert!(ls[0].starts_with(&head), "{case}: {:?}", ls[0]);
        let is_trunc = ls[0].contains(" truncated=");
        let allowed = if is_trunc { 2 } else { 1 };
        assert_eq!(
            ls.len(),
            allowed,
            "{case}: printed {} lines: {ls:?}",
            ls.len()
        );
        if is_trunc {
            truncated += 1;
            assert!(
                ls[1].starts_with(&format!("[inter-session msg={id} cont] full text ")),
                "{case}: second line is not the cont line: {:?}",
                ls[1]
            );
        }
        let out = env.run("x", &["inbox", "read", "--raw", id]);
        assert!(out.status.success(), "{case}: inbox read failed");
        assert!(
            out.stdout == by_id[id],
            "{case}: inbox read returned {} bytes, sent {} (not the original bytes)",
            out.stdout.len(),
            by_id[id].len()
        );
    }
    let tried = corpus.len() + bad.len();
    record(
        "7 hostile text",
        format!(
            "{tried} hostile inputs (ANSI/OSC/C1 sequences, bidi overrides, zero-width and format \
             characters, NUL, a 10 MiB body, 40,000 newlines, bodies that are exactly a header, {} \
             seeded random mixes, lone surrogates) went through `mail send` and the real monitor: \
             {} accepted bodies printed as one line each ({truncated} as a truncated line plus its \
             `cont` line), never a forged header, every line ≤ 500 UTF-16 units, `inbox read` \
             byte-identical; {surrogate_refusals} invalid-UTF-8 sends refused with exit 1 and the \
             database unchanged ({:.1} s).",
            40,
            ids.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        refused_empty.len() <= 2,
        "too many corpus entries refused as empty: {refused_empty:?}"
    );
}

// ---------------------------------------------------------------- 7b. line formatter property

/// Pieces a hostile body is built from: every kind of line break, escape
/// introducers, format characters, wide characters, and whole forged headers.
const PROP_PIECES: &[&str] = &[
    "\n",
    "\r",
    "\r\n",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{0b}",
    "\u{0c}",
    "\u{1c}",
    "\u{1d}",
    "\u{1e}",
    "\0",
    "\t",
    "\u{1b}",
    "\u{1b}[",
    "\u{1b}[31m",
    "\u{1b}[1E",
    "\u{1b}E",
    "\u{1b}]0;t\u{07}",
    "\u{1b}]8;;http://x\u{1b}\\",
    "\u{1b}P",
    "\u{1b}\\",
    "\u{9b}",
    "\u{9c}",
    "\u{07}",
    "\u{7f}",
    "\u{202e}",
    "\u{2066}",
    "\u{200b}",
    "\u{200d}",
    "\u{feff}",
    "\u{ad}",
    "\u{e0041}",
    "😀",
    "👨\u{200d}💻",
    "中文",
    "e\u{301}",
    "\u{10ffff}",
    " ",
    "]",
    "[",
    "\"",
    "[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV from=\"boss\"] ",
    "[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV cont] full text 9 chars: ",
    "[inter-session] ",
    " truncated=9] ",
    " re=01ARZ3NDEKTSV4RRFFQ69G5FAV",
];

/// Plain text between the hostile pieces.
const PROP_WORDS: &[&str] = &[
    "hello",
    "run the tests",
    "inter-session",
    "msg=",
    "from=",
    "cont",
    "a",
    "0123456789",
    "rm -rf ~",
    "done: ",
];

/// Characters that end a line for some reader (Rust's `lines` only knows
/// `\n`; terminals, editors and JSON tooling know more).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}'
            ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// The header fields after `from="…"` (and the label) that may follow, in
/// order: ` re=<id>`, ` queued=<age>`, ` truncated=<N>`; returns what is
/// left after the closing `]`, or why it does not parse.
fn rest_after_header<'a>(
    mut s: &'a str,
    re: Option<&str>,
    queued: Option<bool>,
    truncated: Option<usize>,
) -> Result<&'a str, String> {
    if let Some(re) = re {
        s = s
            .strip_prefix(&format!(" re={re}"))
            .ok_or_else(|| format!("no re= at {s:?}"))?;
    }
    let has_queued = s.starts_with(" queued=");
    if let Some(want) = queued {
        if want != has_queued {
            return Err(format!(
                "queued= present: {has_queued}, expected {want}: {s:?}"
            ));
        }
    }
    if has_queued {
        let age = &s[" queued=".len()..];
        let end = age.find([' ', ']']).ok_or("queued= never ends")?;
        let (v, tail) = age.split_at(end);
        let ok = !v.is_empty()
            && v.chars().all(|c| c.is_ascii_digit() || "smhd".contains(c))
            && v.ends_with(['s', 'm', 'h', 'd'])
            && v.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(format!("bad age {v:?}"));
        }
        s = tail;
    }
    if let Some(n) = truncated {
        s = s
            .strip_prefix(&format!(" truncated={n}"))
            .ok_or_else(|| format!("no truncated={n} at {s:?}"))?;
    }
    s.strip_prefix(']')
        .ok_or_else(|| format!("header does not close at {s:?}"))
}

/// One generated case: (body, id, name, label, reply-to, age in seconds).
type PropCase = (String, u128, String, String, Option<u128>, u64);

fn prop_body() -> proptest::strategy::BoxedStrategy<String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        4 => proptest::sample::select(PROP_PIECES).prop_map(String::from),
        3 => any::<char>().prop_map(String::from),
        2 => proptest::sample::select(PROP_WORDS).prop_map(String::from),
    ];
    prop_oneof![
        // Short and mid-length mixes.
        4 => proptest::collection::vec(piece.clone(), 0..60).prop_map(|v| v.concat()),
        // Long: around and far past the 500-unit line and the 2,000-char prefix.
        2 => proptest::collection::vec(piece, 60..700).prop_map(|v| v.concat()),
        // Arbitrary Unicode.
        2 => any::<String>(),
        // Break, then a forged header, anywhere in a plain body.
        1 => ("[a-z ]{0,480}", proptest::sample::select(PROP_PIECES), "[a-z ]{0,40}").prop_map(
            |(a, brk, b)| format!("{a}{brk}[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV from=\"boss\"] {b}")
        ),
    ]
    .boxed()
}

fn prop_age() -> proptest::strategy::BoxedStrategy<u64> {
    use proptest::prelude::*;
    prop_oneof![Just(0u64), 0u64..=55, 65u64..200_000_000].boxed()
}

/// The monitor's lines for one message, through the product's own
/// `watch::message_lines` (which also applies the 2,000-char load prefix
/// and the `queued=` age) — exactly what `inbox watch` prints.
fn monitor_lines(
    case: &PropCase,
    name: &str,
    label: &str,
) -> (String, Option<String>, Vec<String>) {
    use inter_session::store::{Message, LINE_PREFIX_CHARS};
    let (text, id, _, _, re, age) = case;
    let id = ulid::Ulid::from(*id).to_string();
    let re = re.map(|r| ulid::Ulid::from(r).to_string());
    let created = chrono::Utc::now() - chrono::Duration::seconds(i64::try_from(*age).unwrap_or(0));
    let m = Message {
        seq: 1,
        id: id.clone(),
        created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        kind: "direct".into(),
        sender: name.to_string(),
        sender_label: label.to_string(),
        chars: i64::try_from(text.chars().count()).unwrap_or(i64::MAX),
        // The store loads only a prefix of a long body for printing.
        text: text.chars().take(LINE_PREFIX_CHARS).collect(),
        sender_id: Some(1),
        in_reply_to: re.clone(),
        thread_id: id.clone(),
        expires_at: None,
        queue: None,
    };
    (
        id,
        re,
        inter_session::line::message_lines(&m, inter_session::line::clock()),
    )
}

/// Checks that hold for any name and label: each line is one line (no
/// break of any kind, no control but TAB, no ESC), at most 500 UTF-16 units,
/// begins with this message's real header, and there are one or two lines
/// (the second only as the `cont` pointer).
fn check_safe_lines(id: &str, lines: &[String]) -> Result<(), String> {
    if lines.is_empty() || lines.len() > 2 {
        return Err(format!("{} lines: {lines:?}", lines.len()));
    }
    for (k, l) in lines.iter().enumerate() {
        let units = l.encode_utf16().count();
        if units > 500 {
            return Err(format!("line {k} has {units} UTF-16 units"));
        }
        if let Some(c) = l
            .chars()
            .find(|c| is_line_break(*c) || (c.is_control() && *c != '\t'))
        {
            return Err(format!("line {k} holds {c:?}: {l:?}"));
        }
        let head = format!("[inter-session msg={id} ");
        if !l.starts_with(&head) {
            return Err(format!(
                "line {k} does not start with the real header: {l:?}"
            ));
        }
    }
    if let Some(cont) = lines.get(1) {
        if !cont.starts_with(&format!("[inter-session msg={id} cont] full text ")) {
            return Err(format!("second line is not the cont line: {cont:?}"));
        }
    }
    Ok(())
}

#[test]
fn line_formatter_property_any_text_name_and_label() {
    use inter_session::line::sanitize;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let cases = env_usize("RELIABILITY_PROP_CASES", 3000);
    let started = Instant::now();
    let config = || Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: None,
        // ChaCha (the default) is most of the run time in a debug build.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..Config::default()
    };
    let tried = AtomicU64::new(0);
    let truncated = AtomicU64::new(0);
    let forged = AtomicU64::new(0);

    // Names and labels as the product admits them (§3): the header must be
    // exactly the real one, field by field, whatever the body holds.
    let valid = (
        prop_body(),
        any::<u128>(),
        "[a-z0-9][a-z0-9-]{0,39}",
        prop_oneof![
            Just(String::new()),
            "[a-zA-Z0-9 ._:/@#!?-]{1,60}",
            "[^\\p{C}\\p{Z}\"\\[\\]]{1,60}"
        ],
        proptest::option::of(any::<u128>()),
        prop_age(),
    );
    let mut runner = TestRunner::new(config());
    runner
        .run(&valid, |case: PropCase| {
            tried.fetch_add(1, Ordering::Relaxed);
            let (text, _, name, label, _, age) = &case;
            if text.contains("[inter-session msg=01ARZ3NDEKTSV4RRFFQ69G5FAV") {
                forged.fetch_add(1, Ordering::Relaxed);
            }
            let (id, re, lines) = monitor_lines(&case, name, label);
            check_safe_lines(&id, &lines).map_err(TestCaseError::fail)?;
            let n = text.chars().count();
            let cut = lines.len() == 2;
            if cut {
                truncated.fetch_add(1, Ordering::Relaxed);
            }
            let mut head = format!("[inter-session msg={id} from=\"{name}\"");
            if !label.is_empty() {
                head.push_str(&format!(" \"{label}\""));
            }
            let rest = lines[0]
                .strip_prefix(&head)
                .ok_or_else(|| TestCaseError::fail(format!("not the real header: {:?}", lines[0])))?;
            let queued = if *age <= 55 { Some(false) } else { Some(true) };
            let rest = rest_after_header(rest, re.as_deref(), queued, cut.then_some(n))
                .map_err(|e| TestCaseError::fail(format!("{e} in {:?}", lines[0])))?;
            // The body part: all of the safe body, or a prefix of it when cut.
            let body = sanitize(text);
            let shown = if rest.is_empty() {
                ""
            } else {
                rest.strip_prefix(' ').ok_or_else(|| {
                    TestCaseError::fail(format!("no space after the header: {:?}", lines[0]))
                })?
            };
            if cut {
                prop_assert!(body.starts_with(shown), "shown text is not a prefix of the body");
                prop_assert_eq!(
                    &lines[1],
                    &format!("[inter-session msg={id} cont] full text {n} chars: inter-session inbox read {id}")
                );
            } else {
                prop_assert_eq!(shown, body.as_str());
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("valid names and labels: {e}"));

    // Any name and label at all (the formatter sanitises header fields too):
    // still one or two safe lines under this message's own header.
    let any_field = || {
        prop_oneof![
            3 => any::<String>(),
            2 => proptest::collection::vec(proptest::sample::select(PROP_PIECES), 0..12)
                .prop_map(|v| v.concat()),
            1 => proptest::collection::vec(any::<char>(), 400..700)
                .prop_map(|v| v.into_iter().collect::<String>()),
        ]
    };
    let wild = (
        prop_body(),
        any::<u128>(),
        any_field(),
        any_field(),
        proptest::option::of(any::<u128>()),
        prop_age(),
    );
    let mut runner = TestRunner::new(config());
    runner
        .run(&wild, |case: PropCase| {
            tried.fetch_add(1, Ordering::Relaxed);
            let (id, _, lines) = monitor_lines(&case, &case.2, &case.3);
            check_safe_lines(&id, &lines).map_err(TestCaseError::fail)?;
            let head = format!("[inter-session msg={id} from=\"");
            prop_assert!(
                lines[0].starts_with(&head),
                "not the real header: {:?}",
                lines[0]
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("any names and labels: {e}"));

    let tried = tried.into_inner();
    record(
        "7b formatter property",
        format!(
            "A `proptest` property test of the line formatter (through the monitor's own \
             `message_lines`) tried {tried} generated inputs — arbitrary Unicode and hostile mixes \
             of every line break, escape, format character and forged header, {} of them long \
             enough to be cut, {} carrying a forged header, half with any name and label at all: \
             every line one line, ≤ 500 UTF-16 units, under the message's real header ({:.1} s).",
            truncated.into_inner(),
            forged.into_inner(),
            started.elapsed().as_secs_f64()
        ),
    );
}

// ---------------------------------------------------------------- 8. re-arm cycling

#[test]
fn monitor_rearmed_many_times_while_mail_flows_loses_nothing_and_never_overlaps() {
    let cycles = env_usize("RELIABILITY_CYCLES", 200);
    // Four rivals: each waits out the key lock's patience (2 s) before giving up.
    let rival_every = (cycles / 4).max(1);
    let started = Instant::now();
    let mut rng = Rng::seeded("RELIABILITY_SEED", "rearm");
    let env = Env::new();
    {
        let store = open_store(&env);
        store.register("alice", None).expect("register");
        store.register("bob", None).expect("register");
    }
    let stop = AtomicBool::new(false);
    let sent: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut rivals = 0;
    let mut overlaps = 0;
    // The ids each run printed, to check their delivery marks' order below.
    let mut run_ids: Vec<Vec<String>> = Vec::new();

    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let store = open_store(&env);
            let bob = session(&store, "bob");
            let alice = session(&store, "alice").id;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let id = send_in(&store, &bob, alice, &format!("bob:{i:06}"));
                sent.lock().unwrap().push(id);
                i += 1;
                // Load shaping: a steady flow, not a burst.
                std::thread::sleep(Duration::from_millis(3));
            }
        });

        let take = |run: &mut Vec<String>, counts: &mut HashMap<String, usize>| {
            for l in run.iter() {
                let id = line_id(l).unwrap_or_else(|| panic!("odd line {l:?}"));
                assert!(!l.contains(" cont]"), "{l}");
                *counts.entry(id.to_string()).or_default() += 1;
            }
        };

        let mut mon = watch_alice(&env);
        for cycle in 0..cycles {
            // Readiness: the monitor prints live mail.
            let mut run: Vec<String> = Vec::new();
            let want = 1 + rng.below(5) as usize;
            while run.len() < want {
                let l = mon
                    .next_line(Duration::from_secs(15))
                    .unwrap_or_else(|| panic!("cycle {cycle}: the monitor printed nothing"));
                assert!(
                    line_id(&l).is_some(),
                    "cycle {cycle}: unexpected line {l:?}"
                );
                run.push(l);
            }
            if cycle % rival_every == rival_every / 2 {
                // A second monitor for the same key while this one runs.
                let mut c = env.cmd("ka");
                c.args(["inbox", "watch", "--pace", "off", "--name", "alice"]);
                let out = c.stdin(Stdio::null()).output().expect("rival");
                let text = String::from_utf8_lossy(&out.stdout);
                assert_eq!(out.status.code(), Some(0), "rival exit: {text}");
                assert!(
                    text.contains("another monitor for this session is already running"),
                    "rival did not say so: {text:?}"
                );
                assert!(
                    !text.contains("[inter-session msg="),
                    "the rival printed mail while the first monitor ran: {text:?}"
                );
                rivals += 1;
            }
            // Stop it; every other time start the next one before the old has
            // exited, so the two race for the key.
            mon.signal(libc::SIGTERM);
            let early = cycle % 2 == 1;
            let next = early.then(|| watch_alice(&env));
            if early {
                overlaps += 1;
            }
            let (code, rest) =
                std::mem::replace(&mut mon, next.unwrap_or_else(|| watch_alice(&env))).finish();
            assert_eq!(code, Some(0), "cycle {cycle}: SIGTERM exit code");
            run.extend(rest);
            run_ids.push(
                run.iter()
                    .filter_map(|l| line_id(l).map(String::from))
                    .collect(),
            );
            take(&mut run, &mut counts);
        }
        stop.store(true, Ordering::SeqCst);
        sender.join().expect("sender thread");
        let total = sent.lock().unwrap().len();
        let ids: Vec<String> = sent.lock().unwrap().clone();
        assert_eq!(ids.len(), total);
        let mut run: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got: HashSet<String> = counts.keys().cloned().collect();
        while !ids.iter().all(|id| got.contains(id)) {
            assert!(Instant::now() < deadline, "the last run never caught up");
            if let Some(l) = mon.next_line(Duration::from_millis(200)) {
                got.insert(line_id(&l).expect("id").to_string());
                run.push(l);
            }
        }
        mon.signal(libc::SIGTERM);
        let (code, rest) = mon.finish();
        assert_eq!(code, Some(0));
        run.extend(rest);
        if !run.is_empty() {
            run_ids.push(
                run.iter()
                    .filter_map(|l| line_id(l).map(String::from))
                    .collect(),
            );
            take(&mut run, &mut counts);
        }
    });

    let sent = sent.into_inner().unwrap();
    let lost = sent.iter().filter(|id| !counts.contains_key(*id)).count();
    assert_eq!(lost, 0, "{lost} of {} messages never printed", sent.len());
    let dups: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        dups <= cycles,
        "{dups} duplicate lines over {cycles} stops (at most one per stop)"
    );
    // No two runs printed at the same time. Pipe read times of two processes
    // can be reordered by the scheduler, so the evidence is the monitors' own
    // delivery marks (written right after each flush, on one clock): the ids
    // a run printed that no later run printed again were marked by that run,
    // and each run's marks must all come after the previous run's.
    let marks: HashMap<String, String> = {
        let store = open_store(&env);
        let rows = store
            .query_readonly("select id, delivered_at from history where recipient = 'alice' and delivered_at is not null")
            .expect("delivery marks");
        rows.rows
            .into_iter()
            .filter_map(|r| {
                Some((
                    r.first()?.as_str()?.to_string(),
                    r.get(1)?.as_str()?.to_string(),
                ))
            })
            .collect()
    };
    let mut last_run_of: HashMap<&str, usize> = HashMap::new();
    for (k, ids) in run_ids.iter().enumerate() {
        for id in ids {
            last_run_of.insert(id.as_str(), k);
        }
    }
    let mut mark_spans: Vec<Option<(String, String)>> = vec![None; run_ids.len()];
    for (id, k) in &last_run_of {
        if let Some(at) = marks.get(*id) {
            let span = mark_spans[*k].get_or_insert_with(|| (at.clone(), at.clone()));
            if *at < span.0 {
                span.0 = at.clone();
            }
            if *at > span.1 {
                span.1 = at.clone();
            }
        }
    }
    let mark_spans: Vec<(usize, (String, String))> = mark_spans
        .into_iter()
        .enumerate()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect();
    for w in mark_spans.windows(2) {
        let ((a, (_, a_last)), (b, (b_first, _))) = (&w[0], &w[1]);
        assert!(
            b_first >= a_last,
            "run {b} marked mail delivered at {b_first}, before run {a} had finished ({a_last})"
        );
    }
    record(
        "8 re-arm",
        format!(
            "The monitor for one key was started and stopped (SIGTERM) {cycles} times while mail \
             flowed ({overlaps} restarts racing the exiting monitor, {rivals} rival monitors \
             refused with the `already running` notice): all {} messages printed, {dups} \
             duplicates, never two monitors printing at once ({:.1} s).",
            sent.len(),
            started.elapsed().as_secs_f64()
        ),
    );
}
