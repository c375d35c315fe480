//! Reliability and security under hostile conditions (issue 7), at the scale
//! that fits a ~100 s budget on a 2-core machine, with the figures printed.
//!
//! Complements tests/delivery.rs and tests/mailbox.rs (which cover scaled-down
//! monitor and sender kills, environment faults, bad input, permissions,
//! symlinks and the read-only `sql`): here are the 20-kill run over 5,000
//! messages, 16 senders to 8 monitors, a 100,000-message offline replay with
//! its memory measured, ownership by another user and listening sockets, a
//! hostile text corpus through the real monitor, and monitor re-arm cycling.
//!
//! Everything runs the real binary as real processes; big queues are filled
//! in-process through the public store API. Synchronisation waits on printed
//! lines, `wait_online` and process exits; the only sleeps are the random
//! kill delays, send pacing (load shaping) and the RSS sampling interval.
//!
//! Seeds: `RELIABILITY_SEED=<n>` reruns a failure; sizes can be raised with
//! `RELIABILITY_OFFLINE_N`, `RELIABILITY_LOAD_PER` and `RELIABILITY_CYCLES`.

mod support;
use support::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use inter_session::store::sqlite::SqliteStore;
use inter_session::store::{Mailbox, NewMessage, Recipients, Session};

// ---------------------------------------------------------------- helpers

/// A small xorshift generator; the seed is printed so a failure can be rerun.
struct Rng(u64);

impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("{what}: RELIABILITY_SEED={seed}");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The figures of each test; the last one to finish prints the summary.
static FIGURES: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());
const FIGURE_TESTS: usize = 6;

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

/// The text of a message line (after the header).
fn line_text(line: &str) -> &str {
    line.split_once("] ").map_or("", |(_, t)| t)
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
        .send(&NewMessage::new(from, Recipients::One(to), text))
        .expect("in-process send")
        .id
}

fn count(env: &Env, q: &str) -> usize {
    env.sql(q).parse().expect("count")
}

/// A monitor whose lines carry the instant they were read, and whose
/// process exit is observable without consuming the lines.
struct Watch {
    child: Child,
    lines: Receiver<(Instant, String)>,
}

impl Watch {
    fn start(env: &Env, key: &str, name: &str) -> Watch {
        let mut c = env.cmd(key);
        c.args(["inbox", "watch", "--pace", "off", "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines: rx }
    }

    fn next(&self, timeout: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(timeout).ok()
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
    }

    /// Wait for the exit, then every line still in the pipe.
    fn finish(mut self) -> (Option<i32>, Vec<(Instant, String)>) {
        let st = self.child.wait().expect("wait");
        let mut rest = Vec::new();
        while let Some(l) = self.next(Duration::from_secs(5)) {
            rest.push(l);
        }
        (st.code(), rest)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut rng = Rng::new("monitor_sigkilled_20");
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
    let mut mon = Watch::start(&env, "ka", "alice");
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
            if let Some((_, l)) = mon.next(Duration::from_millis(100)) {
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
                    for (_, l) in rest {
                        st.take(l, run);
                        lines += 1;
                    }
                    kills += 1;
                    run += 1;
                    mon = Watch::start(&env, "ka", "alice");
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

// ---------------------------------------------------------------- 3. load

#[test]
fn sixteen_sender_processes_to_eight_monitors_lose_and_duplicate_nothing() {
    const SENDERS: usize = 16;
    const MONITORS: usize = 8;
    const BROADCASTS_EACH: usize = 6; // well under the 60-a-minute limit
    let per = env_usize("RELIABILITY_LOAD_PER", 250);
    let started = Instant::now();
    let mut rng = Rng::new("load");
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
    let mon = Watch::start(&env, "ka", "alice");
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
        let (_, l) = mon
            .next(Duration::from_secs(30))
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
        eprintln!(
            "\n*** NOT ROOT: the `chown nobody` ownership checks are SKIPPED (run as root to cover them) ***\n"
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
            let mut c = env.cmd("kb");
            c.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = c.spawn().expect("spawn");
            let deadline = Instant::now() + Duration::from_secs(10);
            let st = loop {
                if let Some(st) = child.try_wait().expect("try_wait") {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{what} owned by nobody: {args:?} did not exit (it should refuse)");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let out = child.wait_with_output().expect("output");
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
    let mut rng = Rng::new("hostile_corpus");
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
        let out = env.run(
            "kb",
            &[
                "--from",
                "bob",
                "mail",
                "send",
                "--to",
                "alice",
                "--text-file",
                file.to_str().expect("path"),
            ],
        );
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
        let out = env.run(
            "ke",
            &[
                "--from",
                "eve",
                "mail",
                "send",
                "--to",
                "alice",
                "--text-file",
                file.to_str().expect("path"),
            ],
        );
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
        let out = env.run("x", &["inbox", "read", id]);
        assert!(out.status.success(), "{case}: inbox read failed");
        assert!(
            out.stdout == by_id[id],
            "{case}: inbox read returned {} bytes, sent {} (not the original bytes)",
            out.stdout.len(),
            by_id[id].len()
        );
    }
    let tried = corpus.len() + bad.len();
    println!(
        "note: a `proptest` property test of the line formatter is not possible without adding the \
         dependency; src/line.rs carries a seeded random property test of the formatter instead."
    );
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

// ---------------------------------------------------------------- 8. re-arm cycling

#[test]
fn monitor_rearmed_many_times_while_mail_flows_loses_nothing_and_never_overlaps() {
    let cycles = env_usize("RELIABILITY_CYCLES", 200);
    // Four rivals: each waits out the key lock's patience (2 s) before giving up.
    let rival_every = (cycles / 4).max(1);
    let started = Instant::now();
    let mut rng = Rng::new("rearm");
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

        let take = |run: &mut Vec<(Instant, String)>, counts: &mut HashMap<String, usize>| {
            for (_, l) in run.iter() {
                let id = line_id(l).unwrap_or_else(|| panic!("odd line {l:?}"));
                assert!(!l.contains(" cont]"), "{l}");
                *counts.entry(id.to_string()).or_default() += 1;
            }
        };

        let mut mon = Watch::start(&env, "ka", "alice");
        for cycle in 0..cycles {
            // Readiness: the monitor prints live mail.
            let mut run: Vec<(Instant, String)> = Vec::new();
            let want = 1 + rng.below(5) as usize;
            while run.len() < want {
                let l = mon
                    .next(Duration::from_secs(15))
                    .unwrap_or_else(|| panic!("cycle {cycle}: the monitor printed nothing"));
                assert!(
                    line_id(&l.1).is_some(),
                    "cycle {cycle}: unexpected line {:?}",
                    l.1
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
            let next = early.then(|| Watch::start(&env, "ka", "alice"));
            if early {
                overlaps += 1;
            }
            let (code, rest) = std::mem::replace(
                &mut mon,
                next.unwrap_or_else(|| Watch::start(&env, "ka", "alice")),
            )
            .finish();
            assert_eq!(code, Some(0), "cycle {cycle}: SIGTERM exit code");
            run.extend(rest);
            run_ids.push(
                run.iter()
                    .filter_map(|l| line_id(&l.1).map(String::from))
                    .collect(),
            );
            take(&mut run, &mut counts);
        }
        stop.store(true, Ordering::SeqCst);
        sender.join().expect("sender thread");
        let total = sent.lock().unwrap().len();
        let ids: Vec<String> = sent.lock().unwrap().clone();
        assert_eq!(ids.len(), total);
        let mut run: Vec<(Instant, String)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got: HashSet<String> = counts.keys().cloned().collect();
        while !ids.iter().all(|id| got.contains(id)) {
            assert!(Instant::now() < deadline, "the last run never caught up");
            if let Some(l) = mon.next(Duration::from_millis(200)) {
                got.insert(line_id(&l.1).expect("id").to_string());
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
                    .filter_map(|l| line_id(&l.1).map(String::from))
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
