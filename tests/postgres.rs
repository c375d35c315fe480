//! The PostgreSQL backend against a real PostgreSQL (issue 14's must-hold
//! list): the CLI flows with `INTER_SESSION_DATABASE_URL` set, LISTEN
//! wake-up with the fallback poll off, presence by advisory lock (a killed
//! monitor frees its name at once), two hosts on one database (mail, `list`,
//! tmux peers owned by their host), reconnects after `pg_terminate_backend`
//! and a server restart, `sql` limits, masked passwords, TLS, and `db copy`
//! of an SQLite mailbox. The core suite that runs on both backends is in
//! tests/backends.rs.
//!
//! The server (see support/pg.rs): `INTER_SESSION_TEST_PG_URL` if set (CI
//! exports it), else a throwaway cluster started here; each test makes its
//! own database. With neither, every test here SKIPS with a loud line. The
//! restart and TLS tests always start clusters of their own.

#[path = "support/pg.rs"]
mod pg;
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pg::{admin, chown, fresh_db, fresh_db_on, user_id, Server, PASSWORD};
use serde_json::Value;
use support::{monitor_up, sent_id, session, sessions, wait_until, Env, Monitor};

// ------------------------------------------------------------ helpers

const DB_VAR: &str = "INTER_SESSION_DATABASE_URL";

/// A data folder whose commands use the database at `url`.
fn on(url: &str) -> Env {
    Env::new().with(DB_VAR, url)
}

/// A fresh database's URL, or None when the test is skipped (said loudly).
fn fresh_url() -> Option<String> {
    fresh_db()
        .map_err(|why| support::skip("postgres", &why))
        .ok()
}

/// The shared server's admin URL, or None when the test is skipped.
fn fresh_server_url() -> Option<String> {
    pg::server_url()
        .map_err(|why| support::skip("postgres", &why))
        .ok()
}

/// `on` a fresh database, or None when the test is skipped (said loudly).
fn fresh() -> Option<Env> {
    fresh_url().map(|url| on(&url))
}

/// The database URL of a data folder made by `on`.
fn url_of(env: &Env) -> String {
    env.var(DB_VAR).expect("a PostgreSQL Env").to_string()
}

/// `args` as `key` must fail with exit 1 (a runtime failure); its stderr.
fn fails(env: &Env, key: &str, args: &[&str]) -> String {
    env.fails(key, args, 1)
}

/// It runs as host `name`.
fn host(env: Env, name: &str) -> Env {
    env.with("INTER_SESSION_HOSTNAME", name)
}

fn line_for(id: &str, from: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"{from}\"] {text}")
}

// ------------------------------------------------------------ the tests

#[test]
fn direct_mail_between_two_monitors_and_offline_replay() {
    let Some(pg) = fresh() else { return };
    let mut alice = monitor_up(&pg, "ka", "alice");
    let mut bob = pg.monitor("kb", &["--name", "bob", "--label", "the builder"]);
    pg.wait_state("bob", "online");

    let out = pg.ok("kb", &["mail", "send", "--to", "alice", "--text", "hello"]);
    let id = sent_id(&out);
    assert_eq!(out, format!("sent {id} -> alice (delivered)\n"));
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={id} from=\"bob\" \"the builder\"] hello")
    );
    // Unique prefix and a reply with re=.
    let out = pg.ok("ka", &["mail", "reply", &id, "--text", "hi bob"]);
    let rid = sent_id(&out);
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={rid} from=\"alice\" re={id}] hi bob")
    );

    // Offline: queued, then replayed in send order, exactly once. The line
    // printed last is marked delivered just after it is written; a SIGTERM
    // in between rightly leaves it pending (at-least-once), so wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while session(&pg, "bob")["pending"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's last line never marked delivered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bob.stop(), Some(0));
    pg.wait_state("bob", "offline");
    let mut ids = Vec::new();
    for i in 1..=3 {
        let out = pg.ok(
            "ka",
            &[
                "mail",
                "send",
                "--to",
                "bob",
                "--text",
                &format!("offline {i}"),
            ],
        );
        let id = sent_id(&out);
        assert_eq!(out, format!("sent {id} -> bob (queued)\n"));
        ids.push(id);
    }
    // A long one: cut in the line, whole in `inbox read`.
    let long = "x".repeat(3000);
    let long_id = sent_id(&pg.ok("ka", &["mail", "send", "--to", "bob", "--text", &long]));
    assert_eq!(session(&pg, "bob")["pending"], 4);
    let mut bob = pg.monitor("kb", &["--name", "bob"]);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            bob.line(),
            line_for(id, "alice", &format!("offline {}", i + 1))
        );
    }
    let cut = bob.line();
    assert!(
        cut.starts_with(&format!(
            "[inter-session msg={long_id} from=\"alice\" truncated=3000] xxx"
        )),
        "{cut}"
    );
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={long_id} cont] full text 3000 chars: inter-session inbox read {long_id}")
    );
    assert_eq!(pg.ok("x", &["inbox", "read", &long_id[..20]]), long);
    // PostgreSQL text cannot hold U+0000; such a body still reads back exact.
    let raw = "nul\0here \\0 and\r\nmore";
    let file = support::write_file(pg.tmp.path(), "nul.txt", raw.as_bytes());
    let nul_id = sent_id(&pg.ok(
        "kb",
        &[
            "mail",
            "send",
            "--to",
            "alice",
            "--text-file",
            file.to_str().unwrap_or_default(),
        ],
    ));
    let out = pg.run("x", &["inbox", "read", "--raw", &nul_id]);
    assert!(out.status.success());
    assert_eq!(out.stdout, raw.as_bytes());
    let live = pg.send("alice", "bob", "live");
    assert_eq!(bob.line(), line_for(&live, "alice", "live"));
    let l = alice.line();
    assert_eq!(
        l,
        format!("[inter-session msg={nul_id} from=\"bob\" \"the builder\"] nulhere \\0 and↵more")
    );
    // Each line is marked delivered once read, just after it is printed.
    wait_until("nothing pending", Duration::from_secs(10), || {
        pg.sql("select count(*) from pending") == "0"
    });
    assert_eq!(
        pg.sql("select count(*) from history where status = 'delivered'"),
        "8"
    );
    drop(alice);
}

#[test]
fn names_get_flat_suffixes_and_a_killed_monitor_frees_its_name_at_once() {
    let Some(pg) = fresh() else { return };
    let pg = host(pg, "host-a");
    let first = monitor_up(&pg, "k1", "dup");
    let mut second = pg.monitor("k2", &["--name", "dup"]);
    assert_eq!(
        second.line(),
        "[inter-session] name 'dup' taken; using 'dup-2'"
    );
    pg.wait_state("dup-2", "online");
    let mut third = pg.monitor("k3", &["--name", "dup-2"]);
    assert_eq!(
        third.line(),
        "[inter-session] name 'dup-2' taken; using 'dup-3'"
    );
    pg.wait_state("dup-3", "online");
    // Prefixes: "dup" is exact; "dup-" reaches no numbered sibling (issue
    // 18.2) and is refused naming them.
    let err = fails(
        &pg,
        "x",
        &[
            "--from", "zed", "mail", "send", "--to", "dup-", "--text", "t",
        ],
    );
    assert!(
        err.contains("no session named 'dup-'") && err.contains("dup-2") && err.contains("dup-3"),
        "{err}"
    );
    let err = fails(
        &pg,
        "x",
        &[
            "--from", "zed", "mail", "send", "--to", "dupp", "--text", "t",
        ],
    );
    assert!(
        err.contains("no session named 'dupp'; did you mean: dup"),
        "{err}"
    );

    // SIGKILL: the connection closes, the advisory lock goes with it.
    first.signal(libc::SIGKILL);
    let killed = Instant::now();
    let mut first = first;
    let _ = first.wait_exit(Duration::from_secs(5));
    let out = loop {
        let out = pg.ok(
            "x",
            &[
                "--from",
                "zed",
                "mail",
                "send",
                "--to",
                "dup",
                "--text",
                "after kill",
            ],
        );
        if out.ends_with("(queued)\n") || killed.elapsed() > Duration::from_secs(3) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(out.ends_with("(queued)\n"), "{out}");
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "took {:?} to read offline",
        killed.elapsed()
    );
    let queued = sent_id(&out);

    // A monitor on another host takes the name over, pending mail included.
    let other = host(on(&url_of(&pg)), "host-b");
    let mut taker = other.monitor("k9", &["--name", "dup"]);
    assert_eq!(taker.line(), line_for(&queued, "zed", "after kill"));
    other.wait_state("dup", "online");
    assert_eq!(
        pg.sql("select host from sessions where name = 'dup'"),
        "host-b"
    );
    second.silent(Duration::from_millis(300));
    drop(third);
}

#[test]
fn broadcast_reaches_every_other_session_once_and_is_rate_limited() {
    let Some(pg) = fresh() else { return };
    let mut alice = monitor_up(&pg, "ka", "alice");
    let mut carol = monitor_up(&pg, "kc", "carol");
    pg.ok("kd", &["--from", "dave", "status"]); // offline mailbox
    pg.ok("ke", &["--from", "erin", "status"]);
    pg.ok("ke", &["--from", "erin", "disconnect"]); // left: gets nothing

    let out = pg.ok(
        "kb",
        &["--from", "bob", "mail", "broadcast", "--text", "b one"],
    );
    let id = sent_id(&out);
    assert_eq!(
        out,
        format!("sent {id} -> 3 sessions (2 delivered, 1 queued)\n")
    );
    assert_eq!(alice.line(), line_for(&id, "bob", "b one"));
    assert_eq!(carol.line(), line_for(&id, "bob", "b one"));
    assert_eq!(
        pg.sql(&format!(
            "select string_agg(recipient, ',' order by recipient) from history where id = '{id}'"
        )),
        "alice,carol,dave"
    );
    for i in 1..60 {
        pg.ok(
            "kb",
            &[
                "--from",
                "bob",
                "mail",
                "send",
                "--all",
                "--text",
                &format!("b {i}"),
            ],
        );
    }
    let err = fails(
        &pg,
        "kb",
        &[
            "--from",
            "bob",
            "mail",
            "broadcast",
            "--text",
            "one too many",
        ],
    );
    assert!(err.contains("broadcast limit reached"), "{err}");
    for i in 1..60 {
        let l = alice.line();
        assert!(l.ends_with(&format!("] b {i}")), "{l}");
    }
    alice.silent(Duration::from_millis(300));
}

#[test]
fn ask_gets_its_reply_and_expired_mail_is_never_printed() {
    let Some(pg) = fresh() else { return };
    let mut w = monitor_up(&pg, "kw", "w1");
    let mut asker_monitor = monitor_up(&pg, "kq", "boss");

    let ask = support::spawn_piped(support::cmd_args(
        &pg,
        "kq",
        &[
            "mail",
            "ask",
            "--to",
            "w1",
            "--text",
            "question: which port?",
            "--timeout",
            "30s",
        ],
    ));
    let q = w.line();
    let qid = support::line_id(&q).expect("question id").to_string();
    assert_eq!(q, line_for(&qid, "boss", "question: which port?"));
    let started = Instant::now();
    pg.ok("kw", &["mail", "reply", &qid, "--text", "answer: 5432"]);
    let out = ask.wait_with_output().expect("ask output");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answer: 5432");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Printed by ask, not by the asker's monitor.
    asker_monitor.silent(Duration::from_millis(500));

    // Expiry: an offline mailbox, a 1 s ttl, never printed, shown expired.
    pg.ok("ko", &["--from", "off", "status"]);
    let gone = sent_id(&pg.ok(
        "kq",
        &[
            "mail", "send", "--to", "off", "--ttl", "1s", "--text", "stale",
        ],
    ));
    let kept = sent_id(&pg.ok("kq", &["mail", "send", "--to", "off", "--text", "fresh"]));
    std::thread::sleep(Duration::from_millis(1300));
    let mut off = pg.monitor("ko", &["--name", "off"]);
    assert_eq!(off.line(), line_for(&kept, "boss", "fresh"));
    assert_eq!(
        pg.sql(&format!("select status from history where id = '{gone}'")),
        "expired"
    );
    // Idempotent sends: the second writes nothing.
    let [a, b] = [(); 2].map(|()| {
        pg.ok(
            "kq",
            &[
                "mail",
                "send",
                "--to",
                "off",
                "--idempotency-key",
                "k-1",
                "--text",
                "once",
            ],
        )
    });
    assert_eq!(
        b,
        format!("sent {} -> off (duplicate, not resent)\n", sent_id(&a))
    );
    assert_eq!(off.line(), line_for(&sent_id(&a), "boss", "once"));
    off.silent(Duration::from_millis(300));
}

#[test]
fn listen_notify_wakes_the_monitor_with_the_poll_off() {
    let Some(pg) = fresh() else { return };
    let pg = pg.with("INTER_SESSION_POLL_MS", "3600000");
    let mut m = monitor_up(&pg, "ka", "alice");
    let mut waits = Vec::new();
    for i in 0..20 {
        let before = Instant::now();
        let id = pg.send("bob", "alice", &format!("ping {i}"));
        let sent = before.elapsed();
        let l = m
            .next_line(Duration::from_secs(3))
            .unwrap_or_else(|| panic!("no wake-up within 3 s (poll is off): LISTEN/NOTIFY failed"));
        assert_eq!(l, line_for(&id, "bob", &format!("ping {i}")));
        waits.push(before.elapsed().saturating_sub(sent));
    }
    waits.sort();
    let worst = waits[waits.len() - 1];
    eprintln!(
        "LISTEN wake-up after the send returned (poll off): p50 {:?}, worst {worst:?}",
        waits[waits.len() / 2]
    );
    assert!(
        worst < Duration::from_millis(900),
        "slowest wake-up {worst:?}"
    );
    // The query connection of `sql` listens on nothing.
    let channels = pg.sql("select count(*) from pg_listening_channels()");
    assert_eq!(channels, "0", "the sql connection listens on nothing");
}

#[test]
fn status_names_the_database_with_the_password_masked() {
    let Some(pg) = fresh() else { return };
    // The clusters started here have one; a server given by URL may not.
    let password = pg::url_password(&url_of(&pg));
    let out = pg.ok("ka", &["--from", "alice", "status"]);
    let db_line = out
        .lines()
        .find(|l| l.starts_with("database: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(db_line.starts_with("database: postgres://"), "{db_line}");
    let json: Value =
        serde_json::from_str(&pg.ok("ka", &["--from", "alice", "status", "--json"])).expect("json");
    let Some(password) = password else {
        support::skip_part(
            "postgres",
            "its masking check",
            "the server in INTER_SESSION_TEST_PG_URL has no password in its URL; \
             give it one (`.ci/pg-throwaway start` does)",
        );
        return;
    };
    assert!(!out.contains(&password), "{out}");
    assert!(db_line.contains(":***@"), "{db_line}");
    assert!(!json.to_string().contains(&password));
    // Wrong passwords and PGPASSFILE: see the TLS test (its server checks them).
}

#[test]
fn sql_refuses_writes_second_statements_and_long_queries() {
    let Some(pg) = fresh() else { return };
    pg.ok("ka", &["--from", "alice", "status"]);
    assert_eq!(pg.sql("select name from sessions"), "alice");
    let header = pg.ok("x", &["sql", "--header", "select * from history"]);
    assert_eq!(
        header.trim(),
        "id|created_at|kind|sender|recipient|text|delivered_at|in_reply_to|thread_id|expires_at|status|seq|delivered_via"
    );
    let header = pg.ok("x", &["sql", "--header", "select * from pending"]);
    assert_eq!(
        header.trim(),
        "id|created_at|kind|sender|recipient|text|in_reply_to|thread_id|expires_at|seq"
    );
    for write in [
        "delete from sessions",
        "update sessions set name = 'x'",
        "create table t (a int)",
        "insert into project_labels values ('a', 'b')",
    ] {
        let err = fails(&pg, "x", &["sql", write]);
        assert!(err.contains("read-only"), "{write}: {err}");
    }
    let err = fails(&pg, "x", &["sql", "select 1; delete from sessions"]);
    assert!(err.contains("one statement"), "{err}");
    let started = Instant::now();
    let out = pg
        .cmd("x")
        .args(["sql", "--timeout", "1s", "select pg_sleep(30)"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(pg.sql("select count(*) from sessions"), "1");
    let json: Value = serde_json::from_str(&pg.ok(
        "x",
        &["sql", "--json", "select 1 as one, 'a' as t, null as n"],
    ))
    .expect("json");
    assert_eq!(json, serde_json::json!([{"one": 1, "t": "a", "n": null}]));
}

#[test]
fn two_hosts_share_one_database() {
    let Some(url) = fresh_url() else { return };
    let a = host(on(&url), "laptop");
    let b = host(on(&url), "buildbox");
    let mut alice = monitor_up(&a, "ka", "alice");
    let mut bob = monitor_up(&b, "kb", "bob");
    // Session keys are local: the same key on the other host is not alice.
    let err = fails(&b, "ka", &["mail", "send", "--to", "bob", "--text", "x"]);
    assert!(err.contains("not connected"), "{err}");
    // Nor may it speak or act as alice with --from (issue 18.3): her
    // monitor is live, on another machine, under a key that only looks the
    // same.
    for args in [
        &[
            "--from", "alice", "mail", "send", "--to", "bob", "--text", "x",
        ][..],
        &["--from", "alice", "relabel", "x"][..],
    ] {
        let err = fails(&b, "ka", args);
        assert!(
            err.contains("'alice' is online under another session"),
            "{args:?}: {err}"
        );
    }

    let id = sent_id(&a.ok(
        "ka",
        &["mail", "send", "--to", "bob", "--text", "from the laptop"],
    ));
    assert_eq!(bob.line(), line_for(&id, "alice", "from the laptop"));
    let id = sent_id(&b.ok(
        "kb",
        &[
            "mail",
            "send",
            "--to",
            "alice",
            "--text",
            "from the build box",
        ],
    ));
    assert_eq!(alice.line(), line_for(&id, "bob", "from the build box"));
    let id = sent_id(&b.ok("kb", &["mail", "broadcast", "--text", "all hands"]));
    assert_eq!(alice.line(), line_for(&id, "bob", "all hands"));
    for side in [&a, &b] {
        let names: Vec<String> = sessions(side)
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s["name"].as_str().unwrap_or(""),
                    s["state"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(names, ["alice:online", "bob:online"]);
        assert_eq!(
            side.sql("select string_agg(name || '@' || host, ',' order by name) from sessions"),
            "alice@laptop,bob@buildbox"
        );
    }
}

#[test]
fn tmux_peers_belong_to_the_host_that_spawned_them() {
    let Some(url) = fresh_url() else { return };
    let Some(tmux) = support::TmuxServer::new("hosts") else {
        return;
    };
    let laptop = host(on(&url), "laptop");
    let buildbox = host(on(&url), "buildbox");
    let peer = |pg: &Env, args: &[&str]| -> Output {
        pg.cmd("lead")
            .env("INTER_SESSION_TMUX_SOCKET", &tmux.sock)
            .args(["peer"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run inter-session")
    };
    let peer_ok = |pg: &Env, args: &[&str]| -> String {
        let out = peer(pg, args);
        assert!(
            out.status.success(),
            "peer {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let read_until = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = peer_ok(&laptop, &["read", "w1", "--lines", "100"]);
            if screen.contains(what) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the pane never showed {what:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    let mut alice = monitor_up(&buildbox, "ka", "alice");

    let spawned: Value = serde_json::from_str(&peer_ok(
        &laptop,
        &["spawn", "w1", "--cmd", "bash --norc --noprofile", "--json"],
    ))
    .expect("json");
    assert_eq!(spawned["host"], "laptop", "{spawned}");
    // The pane gets its host's name and the database URL (through tmux's
    // environment, not its command line), and mails across hosts as w1.
    let deadline = Instant::now() + Duration::from_secs(20);
    while peer_ok(&laptop, &["read", "w1"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "the pane's shell never started");
        std::thread::sleep(Duration::from_millis(25));
    }
    peer_ok(
        &laptop,
        &[
            "send",
            "w1",
            r#"echo "pane: $INTER_SESSION_HOSTNAME ${INTER_SESSION_DATABASE_URL:+has-url}"; inter-session mail send --to alice --text 'from the pane'"#,
        ],
    );
    read_until("pane: laptop has-url");
    let l = alice.line();
    let id = support::line_id(&l).unwrap_or_default().to_string();
    assert_eq!(l, line_for(&id, "w1", "from the pane"));
    assert_eq!(
        buildbox.sql("select host from sessions where name = 'w1'"),
        "laptop"
    );

    // `peer list` shows the host on both; only its own host sees the pane.
    for (side, status) in [(&laptop, "alive"), (&buildbox, "remote")] {
        let list: Value = serde_json::from_str(&peer_ok(side, &["list", "--json"])).expect("json");
        let w1 = list
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == "w1"))
            .unwrap_or_else(|| panic!("no w1 in {list}"));
        assert_eq!(w1["host"], "laptop", "{w1}");
        assert_eq!(w1["status"], status, "{w1}");
        let table = peer_ok(side, &["list"]);
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("w1 "))
            .unwrap_or_else(|| panic!("{table}"))
            .split_whitespace()
            .collect();
        let col = header
            .iter()
            .position(|h| *h == "HOST")
            .unwrap_or_else(|| panic!("{table}"));
        assert_eq!(row.get(col), Some(&"laptop"), "{table}");
    }

    // Another host's peer: one line naming its host, exit 1, and nothing
    // done (the pane shares this test's tmux server, so only the host check
    // stands in the way).
    for args in [
        &["send", "w1", "echo typed-from-buildbox"][..],
        &["read", "w1"][..],
        &["status", "w1"][..],
        &["kill", "w1"][..],
        &["spawn", "w1", "--cmd", "bash --norc --noprofile"][..],
    ] {
        let out = peer(&buildbox, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "peer {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "peer {args:?}: {err}");
        assert!(err.contains("'laptop'"), "peer {args:?}: {err}");
        assert!(out.stdout.is_empty(), "peer {args:?}");
    }
    let status: Value =
        serde_json::from_str(&peer_ok(&laptop, &["status", "w1", "--json"])).expect("json");
    assert_eq!(status["status"], "alive", "{status}");
    assert_eq!(status["host"], "laptop", "{status}");
    assert!(!peer_ok(&laptop, &["read", "w1", "--lines", "100"]).contains("typed-from-buildbox"));

    // Its own host ends it; the other sees it killed.
    peer_ok(&laptop, &["kill", "w1"]);
    let list: Value =
        serde_json::from_str(&peer_ok(&buildbox, &["list", "--all", "--json"])).expect("json");
    assert_eq!(list[0]["name"], "w1", "{list}");
    assert_eq!(list[0]["status"], "killed", "{list}");
    assert_eq!(list[0]["host"], "laptop", "{list}");
}

/// Lines of a monitor until `quiet` passes with nothing new.
fn drain(m: &mut Monitor, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(l) = m.next_line(quiet) {
        out.push(l);
    }
    out
}

#[test]
fn a_monitor_survives_a_terminated_backend_and_a_server_restart() {
    // A server of its own, since this test restarts it; on a machine that
    // cannot start one, only the terminate half runs, on the given server.
    let own = if pg::find_pg_bin().is_some() {
        Some(Server::launch().unwrap_or_else(|e| panic!("{e}")))
    } else {
        None
    };
    let server_url = match &own {
        Some(server) => server.admin_url(),
        None => match fresh_server_url() {
            Some(url) => {
                support::skip_part(
                    "postgres",
                    "its restart half",
                    "it restarts a PostgreSQL server of its own and PostgreSQL is not \
                     installed here (no initdb); install it: `apt-get install -y postgresql`",
                );
                url
            }
            None => return,
        },
    };
    let pg = on(&fresh_db_on(&server_url));
    let mut m = monitor_up(&pg, "ka", "alice");
    let first = pg.send("bob", "alice", "before");
    assert_eq!(m.line(), line_for(&first, "bob", "before"));

    // 1. Terminate every backend of this database (the monitor's three).
    let db = pg::db_name(&url_of(&pg));
    let mut adm = admin(&server_url);
    let killed: i64 = adm
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .expect("terminate")
        .get(0);
    assert!(killed >= 2, "terminated {killed} backends");
    assert_eq!(
        m.line(),
        "[inter-session] database connection lost; reconnecting"
    );
    pg.wait_state("alice", "online");
    let second = pg.send("bob", "alice", "after terminate");
    assert_eq!(m.line(), line_for(&second, "bob", "after terminate"));

    // 2. Restart the server under it, with a send on its way meanwhile:
    // the send retries and goes through once the server is back.
    if let Some(server) = &own {
        drop(adm);
        server.stop("fast");
        let during = support::spawn_piped(support::cmd_args(
            &pg,
            "sender",
            &[
                "--from",
                "bob",
                "mail",
                "send",
                "--to",
                "alice",
                "--text",
                "during restart",
            ],
        ));
        // Not a wait for readiness: the send must go through however long
        // the server is away (within its patience); this only makes it meet
        // the stopped server before the restart.
        std::thread::sleep(Duration::from_millis(300));
        server.start().unwrap_or_else(|e| panic!("{e}"));
        let out = during.wait_with_output().expect("the send");
        assert!(
            out.status.success(),
            "a send during a restart was not retried: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let during = sent_id(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            m.line(),
            "[inter-session] database connection lost; reconnecting"
        );
        assert_eq!(m.line(), line_for(&during, "bob", "during restart"));
        pg.wait_state("alice", "online");
        let third = pg.send("bob", "alice", "after restart");
        assert_eq!(m.line(), line_for(&third, "bob", "after restart"));

        // 3. A server that stays down: the send gives up after its few
        // seconds of retries with one clear line, password masked.
        server.stop("fast");
        let started = Instant::now();
        let out = pg.run(
            "sender",
            &[
                "--from", "bob", "mail", "send", "--to", "alice", "--text", "lost?",
            ],
        );
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("could not connect to postgres://"), "{err}");
        if let Some(pw) = pg::url_password(&url_of(&pg)) {
            assert!(!err.contains(&pw), "password printed: {err}");
        }
        assert!(
            took >= Duration::from_secs(3),
            "gave up after {took:?}: no retries"
        );
        assert!(took < Duration::from_secs(30), "retried for {took:?}");
        server.start().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.line(),
            "[inter-session] database connection lost; reconnecting"
        );
        pg.wait_state("alice", "online");
    }
    // Nothing printed twice.
    let rest = drain(&mut m, Duration::from_millis(1500));
    assert!(rest.is_empty(), "{rest:?}");
    wait_until("nothing pending", Duration::from_secs(10), || {
        pg.sql("select count(*) from pending") == "0"
    });
    assert_eq!(m.stop(), Some(0));
}

#[test]
fn db_copy_moves_an_sqlite_mailbox_and_a_second_run_copies_nothing() {
    use inter_session::store::{sqlite::SqliteStore, Mailbox, NewMessage, Recipients, Verbs};
    let Some(url) = fresh_url() else { return };
    let env = Env::new();
    // 10,000 messages, in-process (the CLI would take minutes): direct and
    // broadcast, some long, some delivered, a reply thread.
    {
        let store = SqliteStore::open_in(&env.data).expect("sqlite");
        let names = ["alice", "bob", "carol", "dave"];
        let sessions: Vec<_> = names
            .iter()
            .map(|n| {
                store
                    .register(n, Some(&format!("key-{n}")))
                    .expect("register")
            })
            .collect();
        let long = "λ".repeat(900);
        let mut last: Option<String> = None;
        for i in 0..10_000usize {
            let from = &sessions[i % 4];
            let from_addr = from.address();
            let to = &sessions[(i + 1) % 4];
            let text = if i % 97 == 0 {
                format!("{long} {i}")
            } else {
                format!("message {i}")
            };
            let mut msg = if i % 67 == 0 {
                NewMessage::new(&from_addr, Recipients::All { project: None }, &text)
            } else {
                NewMessage::new(&from_addr, Recipients::One(to.id), &text)
            };
            let parent;
            if i % 333 == 1 {
                if let Some(id) = &last {
                    parent = store.message(id).expect("parent");
                    msg.reply_to = Some(&parent);
                }
            }
            let sent = store.send(&msg).expect("send");
            if i % 3 == 0 {
                if let Ok(m) = store.message(&sent.id) {
                    for s in &sessions {
                        store
                            .mark_delivered(s.id, &[m.seq], "monitor")
                            .expect("mark");
                    }
                }
            }
            last = Some(sent.id);
        }
        store.remember_label("/proj", "the label").expect("label");
    }
    let sqlite_history = {
        let out = env
            .cmd("x")
            .args(["sql", "select * from history order by seq, recipient"])
            .output()
            .expect("sql");
        assert!(out.status.success());
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert!(sqlite_history.lines().count() > 10_000);

    let started = Instant::now();
    let report = inter_session::store::copy::copy_from_sqlite(&env.data, &url).expect("copy");
    eprintln!("db copy of 10,000 messages took {:?}", started.elapsed());
    assert_eq!(report.sessions, 4);
    assert_eq!(report.messages, 10_000);
    assert_eq!(report.blobs, 104);
    assert_eq!(report.labels, 1);
    if let Some(password) = pg::url_password(&url) {
        assert!(!report.database.contains(&password));
    }
    let pg = env.with(DB_VAR, &url);
    let pg_history = pg.ok(
        "x",
        &["sql", "select * from history order by seq, recipient"],
    );
    assert!(
        pg_history == sqlite_history,
        "history rows differ after the copy"
    );

    let again = inter_session::store::copy::copy_from_sqlite(&pg.data, &url).expect("copy again");
    assert!(again.nothing_new(), "{again:?}");

    // The copied mailbox works: pending mail replays, new mail gets new seqs.
    let pending: i64 = pg
        .sql("select count(*) from pending where recipient = 'bob'")
        .parse()
        .expect("n");
    assert!(pending > 0);
    let mut bob = pg.monitor("key-bob", &["--name", "bob"]);
    let id = pg.send("alice", "bob", "after the copy");
    let last = line_for(&id, "alice", "after the copy");
    bob.until(Duration::from_secs(60), |l| l == last);
    // Each pending message once (a long one adds its `cont` line).
    let heads: Vec<&str> = bob
        .seen
        .iter()
        .filter(|l| !l.contains(" cont] "))
        .filter_map(|l| support::line_id(l))
        .collect();
    let unique: std::collections::HashSet<&&str> = heads.iter().collect();
    assert_eq!(unique.len(), heads.len(), "a message was printed twice");
    assert_eq!(i64::try_from(heads.len()).unwrap_or(0), pending + 1);
    assert_eq!(
        pg.sql(&format!(
            "select seq > 10000 from messages where id = '{id}'"
        )),
        "true"
    );
    // A different mailbox is refused, and nothing is written.
    let other = Env::new();
    {
        let store = SqliteStore::open_in(&other.data).expect("sqlite");
        let z = store.register("zed", None).expect("register");
        let y = store.register("yan", None).expect("register");
        store
            .send(&NewMessage::new(&z.address(), Recipients::One(y.id), "hi"))
            .expect("send");
    }
    let before = pg.sql("select count(*) from messages");
    let err = inter_session::store::copy::copy_from_sqlite(&other.data, &url)
        .expect_err("a different mailbox must be refused");
    assert!(err.to_string().contains("different mailbox"), "{err:#}");
    assert_eq!(pg.sql("select count(*) from messages"), before);
}

#[test]
fn concurrent_senders_lose_nothing_and_keep_commit_order() {
    let Some(pg) = fresh() else { return };
    let mut m = monitor_up(&pg, "ka", "alice");
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let cmd_env = (pg.data.clone(), url_of(&pg));
            std::thread::spawn(move || {
                for i in 0..25 {
                    let out = Command::new(support::BIN)
                        .env_clear()
                        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                        .env("INTER_SESSION_DATA_DIR", &cmd_env.0)
                        .env("INTER_SESSION_DATABASE_URL", &cmd_env.1)
                        .args([
                            "--from",
                            &format!("s{s}"),
                            "mail",
                            "send",
                            "--to",
                            "alice",
                            "--text",
                            &format!("s{s} {i}"),
                        ])
                        .stdin(Stdio::null())
                        .output()
                        .expect("send");
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 100 {
        let l = m.line();
        assert!(seen.insert(l.clone()), "printed twice: {l}");
    }
    m.silent(Duration::from_millis(500));
    // Per sender, in send order.
    for s in 0..4 {
        let mine: Vec<usize> = m
            .seen
            .iter()
            .filter_map(|l| {
                l.split_once(&format!("] s{s} "))
                    .and_then(|(_, n)| n.parse().ok())
            })
            .collect();
        assert_eq!(mine, (0..25).collect::<Vec<_>>());
    }
    wait_until("nothing pending", Duration::from_secs(10), || {
        pg.sql("select count(*) from pending") == "0"
    });
}

/// A CA and a server certificate for `localhost`, made with the openssl
/// command-line tool (test tooling only: the program itself uses rustls).
fn make_certs(dir: &Path, owner: Option<u32>) -> Result<(), String> {
    let ext = dir.join("ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    let d = |f: &str| dir.join(f).display().to_string();
    let steps: [Vec<String>; 3] = [
        vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.crt"),
            "-days",
            "2",
            "-subj",
            "/CN=inter-session test CA",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec![
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &d("server.key"),
            "-out",
            &d("server.csr"),
            "-subj",
            "/CN=localhost",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.crt"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d("server.crt"),
            "-days",
            "2",
            "-extfile",
            &d("ext"),
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["server.key", "server.crt"] {
        let p = dir.join(f);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if let Some(uid) = owner {
            chown(&p, uid)?;
        }
    }
    Ok(())
}

#[test]
fn tls_sslmode_and_passwords_on_a_server_that_checks_them() {
    // A server of its own, with TLS on and SCRAM passwords.
    if let Err(why) = pg::can_launch() {
        support::skip("postgres", &why);
        return;
    }
    if !support::have_openssl() {
        return;
    }
    // SAFETY: geteuid cannot fail.
    let owner = if unsafe { libc::geteuid() } == 0 {
        user_id("postgres")
    } else {
        None
    };
    let server = Server::launch_with("scram-sha-256", |root| {
        make_certs(root, owner)?;
        Ok(format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            root.join("server.crt").display(),
            root.join("server.key").display()
        ))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let ca = server.root.join("ca.crt").display().to_string();
    let db = fresh_db_on(&server.admin_url());
    let name = pg::db_name(&db);
    let url = |host: &str, params: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/{name}?{params}",
            server.port
        )
    };
    let probe = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    let ssl_of = |u: String| -> Result<String, String> {
        let pg = on(&u);
        let out = pg.run("x", &["sql", probe]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    };
    assert_eq!(
        ssl_of(url("127.0.0.1", "sslmode=disable")).as_deref(),
        Ok("false")
    );
    assert_eq!(
        ssl_of(url("127.0.0.1", "sslmode=prefer")).as_deref(),
        Ok("true")
    );
    assert_eq!(
        ssl_of(url("127.0.0.1", "")).as_deref(),
        Ok("true"),
        "prefer is the default"
    );
    assert_eq!(
        ssl_of(url("127.0.0.1", "sslmode=require")).as_deref(),
        Ok("true")
    );
    assert_eq!(
        ssl_of(url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca}")
        ))
        .as_deref(),
        Ok("true")
    );
    assert_eq!(
        ssl_of(url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        ))
        .as_deref(),
        Ok("true")
    );
    // The certificate names localhost, not 127.0.0.1: verify-full refuses.
    let err = ssl_of(url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .expect_err("verify-full must check the host name");
    assert!(err.contains("certificate") || err.contains("TLS"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    // A CA that did not sign it: verify-ca refuses.
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path(), None).unwrap_or_else(|e| panic!("{e}"));
    let wrong = other.path().join("ca.crt").display().to_string();
    let err = ssl_of(url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={wrong}"),
    ))
    .expect_err("verify-ca must check the chain");
    assert!(err.contains("certificate") || err.contains("TLS"), "{err}");
    // A monitor over TLS gets its mail.
    let pg = on(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    let mut m = monitor_up(&pg, "ka", "alice");
    let id = pg.send("bob", "alice", "over tls");
    assert_eq!(m.line(), line_for(&id, "bob", "over tls"));

    // A wrong password fails with one line that does not echo it.
    let plain = url("127.0.0.1", "sslmode=disable");
    let bad = on(&plain.replace(&format!(":{PASSWORD}@"), ":wrong-Pw-123@"));
    let out = bad.run("ka", &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("wrong-Pw-123"), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    // PGPASSFILE supplies a password left out of the URL; without it the
    // server refuses.
    let nopw = on(&plain.replace(&format!(":{PASSWORD}@"), "@"));
    let out = nopw.run("ka", &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let pass = nopw.tmp.path().join("pgpass");
    std::fs::write(&pass, format!("127.0.0.1:*:*:postgres:{PASSWORD}\n")).expect("pgpass");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = nopw
        .cmd("ka")
        .env("PGPASSFILE", &pass)
        .args(["list", "--json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn db_copy_command_prints_counts_and_copies_nothing_twice() {
    let env = Env::new();
    for n in ["alice", "bob"] {
        let out = env.run("k", &["--from", n, "status"]);
        assert!(out.status.success());
    }
    let out = env.ok(
        "k",
        &[
            "--from", "alice", "mail", "send", "--to", "bob", "--text", "hi",
        ],
    );
    let id = sent_id(&out);
    let Some(url) = fresh_url() else { return };
    let out = env.run("k", &["db", "copy", "--to", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 sessions, 1 messages"), "{text}");
    if let Some(password) = pg::url_password(&url) {
        assert!(!text.contains(&password), "{text}");
    }
    let again = env.ok("k", &["db", "copy", "--to", &url, "--json"]);
    let v: Value = serde_json::from_str(&again).expect("json");
    assert_eq!(v["messages"], 0);
    assert_eq!(v["sessions"], 0);
    let pg = env.with(DB_VAR, &url);
    let mut bob = pg.monitor("kb", &["--name", "bob"]);
    assert_eq!(bob.line(), line_for(&id, "alice", "hi"));
}

#[test]
fn concurrent_first_commands_on_a_fresh_database_all_succeed() {
    // First-time set-up (the schema) is serialised by an advisory lock.
    for round in 0..3 {
        let Some(pg) = fresh() else { return };
        let outs: Vec<Output> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let pg = &pg;
                    s.spawn(move || {
                        let name = format!("a{i}");
                        match i % 3 {
                            0 => pg.run(&name, &["--from", &name, "status"]),
                            1 => pg.run(&name, &["list"]),
                            _ => pg.run(&name, &["sql", "select count(*) from messages"]),
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        for (i, out) in outs.iter().enumerate() {
            assert!(
                out.status.success(),
                "round {round}, process {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            pg.sql("select group_concat(name) from (select name from sessions order by name) s"),
            "a0,a3,a6"
        );
        assert_eq!(
            pg.sql("select count(*) from schema_migrations"),
            migrations().to_string()
        );
    }
}

/// How many PostgreSQL migrations this checkout has.
fn migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations/postgres")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count()
}

#[test]
fn an_older_schema_is_upgraded_in_place_and_a_newer_one_is_refused() {
    let Some(pg) = fresh() else { return };
    let n = migrations();
    assert!(n >= 2, "expected at least two migrations, found {n}");
    // A database as the first version left it: 0001 only, no version
    // function, one session and one message.
    let mut db = admin(&url_of(&pg));
    let v1 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/postgres/0001_init.sql"
    ))
    .expect("0001_init.sql");
    db.batch_execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, '0001_init', 'then')",
    )
    .expect("schema_migrations");
    db.batch_execute(&v1).expect("apply 0001");
    db.batch_execute(
        "INSERT INTO sessions (name, created_at, since) VALUES ('bob', 'then', 'then'), ('alice', 'then', 'then'); \
         INSERT INTO messages (id, created_at, kind, sender_id, sender, chars, text, thread_id) \
         VALUES ('01OLDOLDOLDOLDOLDOLDOLDOLD', 'then', 'direct', 2, 'alice', 3, 'old', '01OLDOLDOLDOLDOLDOLDOLDOLD'); \
         INSERT INTO deliveries (message_seq, recipient_id) SELECT seq, 1 FROM messages",
    )
    .expect("old rows");
    let fks = |db: &mut postgres::Client| -> i64 {
        db.query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
             AND conrelid IN ('messages'::regclass, 'deliveries'::regclass)",
            &[],
        )
        .expect("constraints")
        .get(0)
    };
    assert_eq!(fks(&mut db), 4);

    // The next command brings it up to date, keeping what it held.
    let id = pg.send("alice", "bob", "new");
    assert_eq!(
        pg.sql("select count(*) from schema_migrations"),
        n.to_string()
    );
    // Every connection checks the schema through one constant function.
    assert_eq!(
        pg.sql("select inter_session_schema_version()"),
        n.to_string()
    );
    assert_eq!(fks(&mut db), 0);
    let mut bob = pg.monitor("kb", &["--name", "bob"]);
    assert_eq!(
        bob.line(),
        line_for("01OLDOLDOLDOLDOLDOLDOLDOLD", "alice", "old")
    );
    assert_eq!(bob.line(), line_for(&id, "alice", "new"));
    drop(bob);

    // Made by a version that had the migrations but not the function: the
    // next command adds it.
    db.batch_execute("DROP FUNCTION inter_session_schema_version()")
        .expect("drop the function");
    pg.send("alice", "bob", "again");
    assert_eq!(
        pg.sql("select inter_session_schema_version()"),
        n.to_string()
    );

    // A schema from a newer inter-session: refused in one line, untouched.
    db.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION inter_session_schema_version() RETURNS integer \
         LANGUAGE sql IMMUTABLE AS 'SELECT {}'; \
         INSERT INTO schema_migrations VALUES ({}, 'from_the_future', 'now')",
        n + 1,
        n + 1
    ))
    .expect("pretend a newer schema");
    let err = fails(
        &pg,
        "k",
        &[
            "mail", "send", "--from", "alice", "--to", "bob", "--text", "third",
        ],
    );
    assert!(
        err.contains(&format!(
            "schema version {}, newer than this inter-session knows ({n})",
            n + 1
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let count: i64 = db
        .query_one("SELECT count(*) FROM messages", &[])
        .expect("count")
        .get(0);
    assert_eq!(count, 3);
}
