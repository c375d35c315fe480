//! Delivery under stress and faults: wake-up without the poll, killed
//! senders, a vanished database, a closed stdout, signals, a gone owner, and
//! racing first-time set-up. (A monitor killed mid-stream, concurrent
//! senders, hostile bodies and long ones are in `tests/backends.rs`, which
//! runs them on SQLite and on PostgreSQL.)
//!
//! Everything runs the real binary as real processes. Synchronisation waits
//! on readiness signals (a printed line, `wait_online`, a process exit); the
//! only sleeps are the measured idle period and the random kill delays.

mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::sync::{Barrier, Mutex};
use std::time::Duration;

// ---------------------------------------------------------------- helpers

/// bob registered, and alice's monitor (key `ka`, `vars` in its
/// environment, its stderr kept) online.
fn alice_up(env: &Env, vars: &[(&str, &str)]) -> Monitor {
    register(env, "bob");
    let m = env
        .monitor_with("ka")
        .args(&["--name", "alice"])
        .keep_stderr();
    let m = vars.iter().fold(m, |m, (k, v)| m.var(k, v)).spawn();
    env.wait_online("alice");
    m
}

/// `alice_up`, and a message from bob printed.
fn alice_got_one(env: &Env) -> Monitor {
    let mut m = alice_up(env, &[]);
    let id = send_as(env, "bob", "alice", "before");
    assert_eq!(line_id(&m.line()), Some(id.as_str()));
    m
}

fn state_of(env: &Env, name: &str) -> serde_json::Value {
    session(env, name)["state"].clone()
}

/// CPU time (user + system, all threads) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

// ---------------------------------------------------------------- 1. crash safety

// ---------------------------------------------------------------- 2. concurrency

// ---------------------------------------------------------------- 3. line safety

// ---------------------------------------------------------------- 4. wake-up

#[test]
fn notification_alone_wakes_the_monitor() {
    let env = Env::new();
    let mut mon = alice_up(&env, &[("INTER_SESSION_POLL_MS", "3600000")]);
    for i in 0..200 {
        let id = send_as(&env, "bob", "alice", &format!("w{i}"));
        let l = mon.next_line(Duration::from_secs(5)).unwrap_or_else(|| {
            panic!(
                "message {i} not printed without the poll; saw {:?}",
                mon.seen.last()
            )
        });
        assert_eq!(l, format!("[inter-session msg={id} from=\"bob\"] w{i}"));
    }
}

/// Monitors watch the sentinel file writers touch after each commit; if it
/// is deleted (a clean-up script, a user), the next writer makes a new one
/// and the monitor, seeing a different file within a second, watches that
/// one and looks for what it missed. Still without the fallback poll.
#[test]
fn deleted_sentinel_is_watched_again() {
    let env = Env::new();
    let mut mon = alice_up(&env, &[("INTER_SESSION_POLL_MS", "3600000")]);
    let sentinel = env.data.join("mailbox.db.notify");
    for round in 0..3 {
        std::fs::remove_file(&sentinel).expect("remove the sentinel");
        let id = send_as(&env, "bob", "alice", &format!("after removal {round}"));
        let l = mon
            .next_line(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("round {round}: not printed once the sentinel was gone"));
        assert_eq!(line_id(&l), Some(id.as_str()));
        // And the new file wakes it as the old one did.
        let id = send_as(&env, "bob", "alice", &format!("then {round}"));
        let l = mon
            .next_line(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("round {round}: the new sentinel does not wake it"));
        assert_eq!(line_id(&l), Some(id.as_str()));
    }
}

#[test]
fn idle_monitor_uses_almost_no_cpu() {
    let env = Env::new();
    let mut mon = alice_got_one(&env);
    let pid = mon.child.id();
    let before = cpu_seconds(pid);
    // Measuring idleness itself: this sleep is the measurement window.
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_seconds(pid) - before;
    assert!(used < 0.05, "idle monitor used {used:.3} s of CPU in 3 s");
    assert!(
        mon.child.try_wait().expect("try_wait").is_none(),
        "monitor died while idle"
    );
}

// ---------------------------------------------------------------- 5. senders killed

#[test]
fn sigkilled_senders_leave_only_complete_messages() {
    const JOBS: usize = 60;
    const BODY: usize = 200_000;
    let env = Env::new();
    for n in ["bob", "r1", "r2", "r3"] {
        register(&env, n);
    }
    let body: String = "0123456789abcdefghijklmnopqrstuvwxyz\n"
        .chars()
        .cycle()
        .take(BODY)
        .collect();
    let file = write_file(env.tmp.path(), "big.txt", body.as_bytes());
    let file = file.to_str().expect("path").to_string();

    let mut rng = Rng::seeded("DELIVERY_SEED", "sigkilled_senders");
    let delays: Vec<u64> = (0..JOBS).map(|_| rng.below(21)).collect();
    // (id, broadcast?) of every send that reported success.
    let done: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let killed = Mutex::new(0usize);
    std::thread::scope(|s| {
        for w in 0..3 {
            let (env, file, delays, done, failures, killed) =
                (&env, &file, &delays, &done, &failures, &killed);
            s.spawn(move || {
                for j in (w..JOBS).step_by(3) {
                    let broadcast = j % 2 == 0;
                    let mut c = env.cmd("bob");
                    c.args(["--from", "bob", "mail"]);
                    if broadcast {
                        c.args(["broadcast", "--text-file", file]);
                    } else {
                        c.args(["send", "--to", "r1", "--text-file", file]);
                    }
                    c.stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    let mut child = c.spawn().expect("spawn sender");
                    std::thread::sleep(Duration::from_millis(delays[j]));
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("wait sender");
                    match out.status.code() {
                        None => *killed.lock().unwrap() += 1,
                        Some(0) => {
                            let id = sent_id(&String::from_utf8_lossy(&out.stdout));
                            done.lock().unwrap().push((id, broadcast));
                        }
                        Some(code) => failures.lock().unwrap().push(format!(
                            "job {j} exit {code}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "senders failed by themselves: {failures:?}"
    );
    let done = done.into_inner().unwrap();
    let killed = killed.into_inner().unwrap();
    eprintln!(
        "sigkilled_senders: {killed} killed, {} completed, {} rows",
        done.len(),
        env.sql("select count(*) from messages")
    );

    let incomplete = env.sql(
        "select count(*) from messages m where (m.text is null and m.blob_id is null) \
         or not exists (select 1 from deliveries d where d.message_seq = m.seq)",
    );
    assert_eq!(
        incomplete, "0",
        "messages without a body or without deliveries"
    );
    let dangling = env.sql(
        "select count(*) from messages m where m.blob_id is not null \
         and not exists (select 1 from blobs b where b.id = m.blob_id)",
    );
    assert_eq!(dangling, "0", "messages pointing at a missing blob");
    let cut = env.sql(&format!(
        "select count(*) from messages m left join blobs b on b.id = m.blob_id \
         where length(coalesce(m.text, b.body)) != {BODY} or m.chars != {BODY}"
    ));
    assert_eq!(cut, "0", "a body was stored cut short");
    let short_bc = env.sql(
        "select count(*) from messages m where m.kind = 'broadcast' \
         and (select count(*) from deliveries d where d.message_seq = m.seq) != 3",
    );
    assert_eq!(
        short_bc, "0",
        "a broadcast without one delivery per recipient"
    );
    let bad_direct = env.sql(
        "select count(*) from messages m where m.kind = 'direct' \
         and (select count(*) from deliveries d where d.message_seq = m.seq) != 1",
    );
    assert_eq!(bad_direct, "0");
    // Every send that said `sent <id>` is really there, whole.
    for (id, broadcast) in &done {
        let n = env.sql(&format!(
            "select count(*) from history where id = '{id}' and length(text) = {BODY}"
        ));
        assert_eq!(
            n,
            if *broadcast { "3" } else { "1" },
            "reported send {id} incomplete"
        );
    }
    assert_eq!(env.sql("pragma integrity_check"), "ok");
    stock_integrity_check(&env.db());
    // Still usable afterwards.
    send_as(&env, "bob", "r2", "after the kills");
}

// ---------------------------------------------------------------- 6. environment faults

fn assert_notices_database_fault(mut mon: Monitor, what: &str) {
    let st = mon
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("monitor still running 5 s after the database was {what}"));
    // A runtime failure (SPEC §5), not a signal.
    assert_eq!(st.code(), Some(1), "the monitor's exit: {st:?}");
    let mut lines = mon.seen.clone();
    lines.extend(mon.rest(Duration::from_secs(5)));
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("[inter-session] "),
        "no notice on stdout after the database was {what}: {lines:?}"
    );
    let err = mon.stderr();
    assert!(
        !err.trim().is_empty(),
        "nothing on stderr after the database was {what}"
    );
    assert!(
        err.to_lowercase().contains("database"),
        "stderr does not say what happened: {err:?}"
    );
}

#[test]
fn database_deleted_under_monitor_is_noticed() {
    let env = Env::new();
    let mon = alice_got_one(&env);
    std::fs::remove_file(env.db()).expect("delete db");
    assert_notices_database_fault(mon, "deleted");
}

#[test]
fn database_replaced_under_monitor_is_noticed() {
    let env = Env::new();
    let mon = alice_got_one(&env);
    let copy = env.data.join("mailbox.db.copy");
    std::fs::copy(env.db(), &copy).expect("copy db");
    std::fs::rename(&copy, env.db()).expect("replace db");
    assert_notices_database_fault(mon, "replaced");
}

#[test]
fn closed_stdout_stops_the_monitor_without_marking_mail_delivered() {
    let env = Env::new();
    register(&env, "bob");
    let mut c = env.cmd("ka");
    c.args(["inbox", "watch", "--pace", "off", "--name", "alice"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn().expect("spawn monitor");
    let stdout = child.stdout.take().expect("stdout");
    env.wait_online("alice");

    // Read one line to prove it works, then drop the reading end.
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut l = String::new();
        let _ = r.read_line(&mut l);
        let _ = tx.send(l);
        // `r` (the pipe's only reading end) is dropped here.
    });
    let id = send_as(&env, "bob", "alice", "first");
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("first line");
    assert_eq!(line_id(first.trim_end()), Some(id.as_str()));
    reader.join().expect("reader");
    // Marked once the reader has taken the line.
    wait_for("the line read to be marked delivered", || {
        pending_count(&env) == 0
    });

    for i in 0..3 {
        send_as(&env, "bob", "alice", &format!("unread {i}"));
    }
    let status = wait_child(&mut child, Duration::from_secs(3));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        status.is_some(),
        "monitor still running 3 s after its stdout was closed"
    );
    assert_eq!(
        pending_count(&env),
        3,
        "mail marked delivered though nobody could read it"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "closed stdout is a clean exit"
    );
    assert_eq!(state_of(&env, "alice"), "offline");
}

#[test]
fn sigterm_exits_zero_and_marks_nothing_more() {
    let env = Env::new();
    let mut mon = alice_got_one(&env);
    // The line is marked delivered just after it is written; a SIGTERM in
    // between rightly leaves it pending (at-least-once), so wait for the mark.
    wait_for("the printed line to be marked delivered", || {
        pending_count(&env) == 0
    });
    mon.signal(libc::SIGTERM);
    env.send("bob", "alice", "after the signal");
    let st = mon
        .wait_exit(Duration::from_secs(5))
        .expect("monitor exits on SIGTERM");
    assert_eq!(st.code(), Some(0));
    let rest = mon.rest(Duration::from_secs(5));
    assert!(rest.is_empty(), "printed after SIGTERM: {rest:?}");
    assert_eq!(
        pending_count(&env),
        1,
        "a message after SIGTERM was marked delivered"
    );
    assert_eq!(state_of(&env, "alice"), "offline");
}

/// Claude Code gives a monitor one end of a socket pair for stdout, and when
/// it kills the monitor it drops whatever still sits unread in the socket.
/// So a line counts as delivered only once the reader has taken it: lines
/// still unread at SIGTERM stay pending and are replayed by the next monitor.
#[test]
fn lines_unread_at_sigterm_stay_pending_and_are_replayed() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    let env = Env::new();
    register(&env, "bob");
    let (ours, theirs) = UnixStream::pair().expect("socket pair");
    let mut c = env.cmd("ka");
    c.args(["inbox", "watch", "--pace", "off", "--name", "alice"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::inherit());
    let mut child = c.spawn().expect("spawn monitor");
    env.wait_online("alice");

    // One message, read: marked delivered once taken.
    let first = send_as(&env, "bob", "alice", "read by the host");
    let mut reader = BufReader::new(ours.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("first line");
    assert_eq!(line_id(line.trim_end()), Some(first.as_str()));
    wait_for("the line taken to be marked delivered", || {
        pending_count(&env) == 0
    });

    // One message written but never read: it waits in the socket.
    let second = send_as(&env, "bob", "alice", "never read");
    let mut fds = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&ours),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut fds, 1, 10_000) };
    assert_eq!(ready, 1, "the monitor never wrote the second line");
    assert_eq!(pending_count(&env), 1, "marked delivered while unread");

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(0));
    assert_eq!(
        pending_count(&env),
        1,
        "a line unread when the monitor was killed was marked delivered"
    );
    drop((reader, ours));

    let mut mon = env.monitor("ka", &["--name", "alice"]);
    assert_eq!(line_id(&mon.line()), Some(second.as_str()), "replayed");
}

#[test]
fn monitor_exits_when_its_owner_is_gone() {
    let env = Env::new();
    let mut owner = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let pid = owner.id();
    let mut mon = alice_up(&env, &[("CLAUDE_PID", &pid.to_string())]);
    owner.kill().expect("kill owner");
    owner.wait().expect("reap owner");
    let want = format!("[inter-session] owning session (pid {pid}) is gone; exiting");
    let l = mon
        .next_line(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no notice after the owner died; stderr {:?}", mon.stderr()));
    assert_eq!(l, want);
    let st = mon
        .wait_exit(Duration::from_secs(5))
        .expect("monitor exits");
    assert_eq!(st.code(), Some(0));
    assert_eq!(state_of(&env, "alice"), "offline");
}

// ---------------------------------------------------------------- 7. racing set-up

#[test]
fn concurrent_first_commands_on_a_fresh_folder_all_succeed() {
    const PROCS: usize = 8;
    for round in 0..10 {
        let env = Env::new();
        let barrier = Barrier::new(PROCS);
        let outs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..PROCS)
                .map(|i| {
                    let (env, barrier) = (&env, &barrier);
                    s.spawn(move || {
                        let name = format!("a{i}");
                        let mut c = env.cmd(&name);
                        match i % 3 {
                            0 => c.args(["--from", &name, "status"]),
                            1 => c.args(["list"]),
                            _ => c.args(["sql", "select count(*) from messages"]),
                        };
                        c.stdin(Stdio::null());
                        barrier.wait();
                        (i, c.output().expect("run"))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for (i, out) in &outs {
            assert!(
                out.status.success(),
                "round {round}, process {i} failed ({:?}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let names = env
            .sql("select group_concat(name, ',') from (select name from sessions order by name)");
        let want: Vec<String> = (0..PROCS)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("a{i}"))
            .collect();
        assert_eq!(names, want.join(","), "round {round}");
    }
}
