//! Conversations end to end (issue 13's "Must hold" list, SPEC §4–§5):
//! replies and threads, `mail ask`, expiry, `queued=`, idempotent sends.
//! Real binary, real monitors, one fresh data folder per test. Every wait is
//! on a printed line, a process exit or a polled condition; the only fixed
//! sleep is the one that lets a TTL run out.

mod support;
use support::*;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A monitor for `name` (key `k<name>`) that is up before we go on.
fn online(env: &Env, name: &str) -> Monitor {
    monitor_up(env, &format!("k{name}"), name)
}

/// Register `name` as a mailbox and leave it offline (its monitor stopped).
fn offline(env: &Env, name: &str) {
    let m = online(env, name);
    m.stop();
    wait_for(&format!("{name} to go offline"), || {
        session(env, name)["state"] == "offline"
    });
}

/// `mail ask --to <to> --timeout <timeout> --text <text>` as session key
/// `key`, started.
fn start_ask(env: &Env, key: &str, to: &str, timeout: &str, text: &str) -> Child {
    spawn_piped(cmd_args(
        env,
        key,
        &[
            "mail",
            "ask",
            "--to",
            to,
            "--timeout",
            timeout,
            "--text",
            text,
        ],
    ))
}

/// `mail reply <id> --text <text>` as session key `key`; the reply's id.
fn reply(env: &Env, key: &str, id: &str, text: &str) -> String {
    sent_id(&env.ok(key, &["mail", "reply", id, "--text", text]))
}

/// The monitor line of reply `id` from `from` to message `re`.
fn reply_line(id: &str, from: &str, re: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"{from}\" re={re}] {text}")
}

/// Run `args` as `key`: exit 2, nothing on stdout, one stderr line, and
/// the database unchanged. Returns the stderr line.
fn refused_usage(env: &Env, key: &str, args: &[&str]) -> String {
    assert_refused(env, cmd_args(env, key, args), 2, &format!("{args:?}"))
}

/// The question id out of a `mail ask` timeout line (`… (question <id>)`).
fn question_in(line: &str) -> String {
    let i = line
        .rfind("(question ")
        .unwrap_or_else(|| panic!("no question id in {line:?}"));
    line[i + "(question ".len()..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

// ------------------------------------------------- 1. replies and threads

#[test]
fn replies_carry_re_and_history_thread_shows_the_whole_thread() {
    let env = Env::new();
    let mut alice = online(&env, "alice");
    let mut bob = online(&env, "bob");

    // Level 1: alice asks bob.
    let q = sent_id(&env.ok(
        "kalice",
        &["mail", "send", "--to", "bob", "--text", "question: port?"],
    ));
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={q} from=\"alice\"] question: port?")
    );

    // Level 2: bob replies with `mail reply`; it goes to alice, with re=.
    let out = env.ok("kbob", &["mail", "reply", &q, "--text", "answer: 8080"]);
    let r1 = sent_id(&out);
    assert_eq!(out, format!("sent {r1} -> alice (delivered)\n"));
    assert_eq!(alice.line(), reply_line(&r1, "bob", &q, "answer: 8080"));

    // Level 3, twice: `mail send --reply-to` (no --to) and `mail reply` do
    // the same thing: to the parent's sender, re=<parent>, same thread.
    let out = env.ok(
        "kalice",
        &["mail", "send", "--reply-to", &r1, "--text", "thanks (send)"],
    );
    let r2a = sent_id(&out);
    assert_eq!(out, format!("sent {r2a} -> bob (delivered)\n"));
    assert_eq!(bob.line(), reply_line(&r2a, "alice", &r1, "thanks (send)"));
    let out = env.ok(
        "kalice",
        &["mail", "reply", &r1, "--text", "thanks (reply)"],
    );
    let r2b = sent_id(&out);
    assert_eq!(out, format!("sent {r2b} -> bob (delivered)\n"));
    assert_eq!(bob.line(), reply_line(&r2b, "alice", &r1, "thanks (reply)"));
    let row = |id: &str| {
        env.sql(&format!(
            "select sender || '|' || recipient || '|' || in_reply_to || '|' || thread_id \
             from history where id = '{id}'"
        ))
    };
    assert_eq!(row(&r2a), format!("alice|bob|{r1}|{q}"));
    assert_eq!(row(&r2b), row(&r2a).replace(&r2a, &r2b));

    // Mail outside the thread, before and after, stays out of it.
    let other1 = env.send("bob", "alice", "unrelated one");
    expect_msg(&mut alice, &other1);
    let other2 = env.send("alice", "bob", "unrelated two");
    expect_msg(&mut bob, &other2);

    let thread = [q.as_str(), &r1, &r2a, &r2b];
    let parents = [None, Some(q.as_str()), Some(r1.as_str()), Some(r1.as_str())];
    for member in thread {
        // Any member, whoever asks (even a session outside the thread).
        for asker in ["alice", "carol"] {
            let text = env.ok("probe", &["--from", asker, "history", "--thread", member]);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 4, "thread via {member} as {asker}: {text}");
            for (line, (id, parent)) in lines.iter().zip(thread.iter().zip(parents)) {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields[1], *id, "order via {member}: {text}");
                match parent {
                    Some(p) => assert!(line.contains(&format!(" re={p}:")), "{line}"),
                    None => assert!(!line.contains(" re="), "{line}"),
                }
            }
        }
        let rows = history_json(&env, "alice", &["--thread", member]);
        assert_eq!(ids_of(&rows), thread, "json thread via {member}");
        for (r, parent) in rows.iter().zip(parents) {
            assert_eq!(r["thread_id"], q.as_str(), "{r}");
            match parent {
                Some(p) => assert_eq!(r["in_reply_to"], p, "{r}"),
                None => assert!(r["in_reply_to"].is_null(), "{r}"),
            }
        }
    }
    // A message outside the thread is its own thread.
    let rows = history_json(&env, "alice", &["--thread", &other1]);
    assert_eq!(ids_of(&rows), [other1.as_str()]);
    assert_eq!(rows[0]["thread_id"], other1.as_str());
    // The history view has the columns too.
    assert_eq!(
        env.sql(&format!(
            "select count(*) from history where thread_id = '{q}'"
        )),
        "4"
    );
}

// ------------------------------------------------------------ 2. mail ask

/// 5,000 characters, multi-line and not all ASCII, not ending in a newline.
fn long_reply() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.chars().count() < 5000 {
        s.push_str(&format!("answer line {i:04}: é ✓ \"quoted\"\t[tab]\n"));
        i += 1;
    }
    let mut s: String = s.chars().take(5000).collect();
    if s.ends_with('\n') {
        s.pop();
        s.push('.');
    }
    assert_eq!(s.chars().count(), 5000);
    s
}

#[test]
fn ask_prints_the_exact_reply_and_the_askers_monitor_does_not() {
    let env = Env::new();
    let mut alice = online(&env, "alice");
    let mut bob = online(&env, "bob");

    // alice's own session (key) asks, while alice's monitor runs.
    let ask = start_ask(&env, "kalice", "bob", "30s", "question: the whole report?");
    let qline = bob.line();
    let q = line_id(&qline).expect("question line").to_string();
    assert_eq!(
        qline,
        format!("[inter-session msg={q} from=\"alice\"] question: the whole report?")
    );

    let text = long_reply();
    let file = write_file(env.tmp.path(), "reply.txt", text.as_bytes());
    let file = file.to_str().expect("utf-8 path");
    let out = env.ok("kbob", &["mail", "reply", &q, "--text-file", file]);
    let r1 = sent_id(&out);

    let (out, _) = finish(ask, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(0),
        "ask: stderr {:?}",
        stderr_of(&out)
    );
    assert!(
        out.stdout == text.as_bytes(),
        "ask printed {} bytes, not the exact {}-byte reply",
        out.stdout.len(),
        text.len()
    );
    assert_eq!(stderr_of(&out), "", "ask stderr");
    assert_eq!(
        env.sql(&format!("select status from history where id = '{r1}'")),
        "delivered"
    );
    // Its receipt says how: the ask printed it.
    assert_eq!(
        env.sql(&format!(
            "select delivered_via from history where id = '{r1}'"
        )),
        "ask"
    );
    assert_eq!(env.sql("select count(*) from asks"), "0");

    // The monitor never prints that reply: the next line it prints is a
    // later sentinel.
    let sentinel = env.send("bob", "alice", "sentinel after the ask");
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={sentinel} from=\"bob\"] sentinel after the ask")
    );

    // A second reply to the same question is ordinary mail, with re=.
    let r2 = reply(&env, "kbob", &q, "answer: one more thing");
    assert_eq!(
        alice.line(),
        reply_line(&r2, "bob", &q, "answer: one more thing")
    );
    wait_for("alice's pending to reach 0", || {
        session(&env, "alice")["pending"] == 0
    });
    assert!(
        !alice.seen.iter().any(|l| l.contains(&r1)),
        "{:?}",
        alice.seen
    );
}

#[test]
fn ask_to_an_offline_peer_times_out_queued_and_a_late_reply_reaches_the_mailbox() {
    let env = Env::new();
    offline(&env, "bob");
    let mut alice = online(&env, "alice");

    let ask = start_ask(&env, "kalice", "bob", "2s", "question: still there?");
    let (out, took) = finish(ask, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(124), "stderr {:?}", stderr_of(&out));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(3),
        "ask --timeout 2s took {took:?}"
    );
    assert!(out.stdout.is_empty(), "stdout {:?}", stdout_of(&out));
    let line = one_stderr_line(&out, "ask timeout");
    assert!(line.contains("queued"), "{line}");
    let q = question_in(&line);
    assert_eq!(env.sql("select count(*) from asks"), "0");
    assert_eq!(
        env.sql(&format!("select status from history where id = '{q}'")),
        "pending"
    );

    // The question is delivered when bob's monitor starts.
    let mut bob = env.monitor("kbob", &["--name", "bob"]);
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={q} from=\"alice\"] question: still there?")
    );
    // bob's late reply lands in alice's mailbox: her monitor prints it.
    let r = reply(&env, "kbob", &q, "answer: yes, sorry");
    assert_eq!(
        alice.line(),
        reply_line(&r, "bob", &q, "answer: yes, sorry")
    );

    // A timeout with bob online (question printed, no answer) says delivered.
    up(&env, &bob, "bob");
    let ask = start_ask(&env, "kalice", "bob", "1s", "question: again?");
    let q2 = line_id(&bob.line()).expect("question line").to_string();
    let (out, _) = finish(ask, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(124), "stderr {:?}", stderr_of(&out));
    let line = one_stderr_line(&out, "ask timeout, delivered");
    assert!(
        line.contains("delivered") && !line.contains("queued"),
        "{line}"
    );
    assert_eq!(question_in(&line), q2);
}

#[test]
fn twenty_concurrent_asks_to_four_scripted_repliers_get_their_own_answers() {
    let env = Env::new();
    let peers = ["p1", "p2", "p3", "p4"];
    let monitors: Vec<Monitor> = peers.iter().map(|p| online(&env, p)).collect();
    let questions: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                peers[i % 4].to_string(),
                format!("question: what is {i} squared? (#{i})"),
            )
        })
        .collect();

    let answers: Vec<(String, Output)> = std::thread::scope(|s| {
        // Each peer: read its monitor's lines, reply to each as that peer.
        let repliers: Vec<_> = monitors
            .into_iter()
            .zip(peers)
            .map(|(mut m, peer)| {
                let env = &env;
                s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(40);
                    let mut handled = Vec::new();
                    while handled.len() < 5 {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Some(line) = m.next_line(left) else {
                            panic!("{peer} got only {handled:?}; saw {:?}", m.seen);
                        };
                        let id = line_id(&line)
                            .unwrap_or_else(|| panic!("{peer}: not a message: {line}"))
                            .to_string();
                        assert!(line.contains("from=\"lead\""), "{line}");
                        let answer = format!("answer: {}", line_text(&line));
                        // As the peer's own session (its monitor's key).
                        env.ok(
                            &format!("k{peer}"),
                            &["mail", "reply", &id, "--text", &answer],
                        );
                        handled.push(id);
                    }
                    // Nothing more comes to this peer.
                    assert_eq!(m.next_line(Duration::from_millis(200)), None, "{peer}");
                    handled
                })
            })
            .collect();

        let asks: Vec<_> = questions
            .iter()
            .map(|(to, text)| {
                let env = &env;
                s.spawn(move || {
                    let c = cmd_args(
                        env,
                        "script",
                        &[
                            "--from",
                            "lead",
                            "mail",
                            "ask",
                            "--to",
                            to,
                            "--timeout",
                            "60s",
                            "--text",
                            text,
                        ],
                    );
                    (
                        text.clone(),
                        finish(spawn_piped(c), Duration::from_secs(60)).0,
                    )
                })
            })
            .collect();
        let answers = asks
            .into_iter()
            .map(|h| h.join().expect("ask thread"))
            .collect();
        let mut all = BTreeSet::new();
        for h in repliers {
            all.extend(h.join().expect("replier thread"));
        }
        assert_eq!(all.len(), 20, "questions seen by the repliers");
        answers
    });

    for (text, out) in &answers {
        assert_eq!(
            out.status.code(),
            Some(0),
            "ask {text:?}: stderr {:?}",
            stderr_of(out)
        );
        assert_eq!(stdout_of(out), format!("answer: {text}"), "crossed or lost");
    }
    assert_eq!(env.sql("select count(*) from messages"), "40");
    assert_eq!(env.sql("select count(*) from asks"), "0");
    assert_eq!(
        env.sql("select count(*) from pending where recipient = 'lead'"),
        "0",
        "every reply was taken by its ask"
    );
    // Each question's thread is the question and its one answer.
    assert_eq!(
        env.sql(
            "select count(*) from (select thread_id from messages group by thread_id \
             having count(*) = 2)"
        ),
        "20"
    );
}

#[test]
fn sigint_to_a_waiting_ask_exits_130_and_leaves_the_question_in_its_thread() {
    let env = Env::new();
    let mut alice = online(&env, "alice");
    let mut bob = online(&env, "bob");
    let ask = start_ask(&env, "kalice", "bob", "5m", "question: interrupt me?");
    let q = line_id(&bob.line()).expect("question line").to_string();
    wait_for("the ask's hold", || {
        env.sql("select count(*) from asks") == "1"
    });
    signal(&ask, libc::SIGINT);
    let (out, _) = finish(ask, Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(130), "stderr {:?}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "stdout {:?}", stdout_of(&out));
    one_stderr_line(&out, "interrupted ask");
    assert_eq!(env.sql("select count(*) from asks"), "0");
    wait_for("bob's pending to reach 0", || {
        session(&env, "bob")["pending"] == 0
    });
    let rows = history_json(&env, "alice", &["--thread", &q]);
    assert_eq!(ids_of(&rows), [q.as_str()]);
    assert_eq!(rows[0]["text"], "question: interrupt me?");
    assert_eq!(rows[0]["status"], "delivered");

    // The question still stands: bob's reply reaches alice's monitor.
    let r = reply(&env, "kbob", &q, "answer: no");
    assert_eq!(alice.line(), reply_line(&r, "bob", &q, "answer: no"));
    let rows = history_json(&env, "bob", &["--thread", &r]);
    assert_eq!(ids_of(&rows), [q.as_str(), r.as_str()]);
}

/// An `ask` killed outright (SIGKILL, e.g. by a host's hard timeout) cannot
/// withdraw its hold; once the hold runs out (timeout + a few seconds) the
/// reply is the asker's monitor's to print, even with other mail printed in
/// between.
#[test]
fn a_reply_held_for_a_killed_ask_reaches_the_running_monitor() {
    let env = Env::new();
    let mut alice = online(&env, "alice");
    let mut bob = online(&env, "bob");
    let mut ask = start_ask(&env, "kalice", "bob", "1s", "question: killed?");
    let q = line_id(&bob.line()).expect("question line").to_string();
    let _ = ask.kill();
    let _ = ask.wait();
    let r = reply(&env, "kbob", &q, "answer: late");
    let later = env.send("bob", "alice", "later news");
    expect_msg(&mut alice, &later);
    let line = alice.until(Duration::from_secs(15), |l| line_id(l) == Some(r.as_str()));
    assert_eq!(line, reply_line(&r, "bob", &q, "answer: late"));
}

// ---------------------------------------------------------------- 5. TTL

#[test]
fn expired_mail_is_never_printed_shown_expired_and_not_pending() {
    let env = Env::new();
    offline(&env, "bob");
    let mut with_ttl = Vec::new();
    let mut without = Vec::new();
    for i in 0..10 {
        if i % 2 == 0 {
            let text = format!("short-lived {i}");
            let out = env.ok(
                "k",
                &[
                    "--from", "alice", "mail", "send", "--to", "bob", "--ttl", "1s", "--text",
                    &text,
                ],
            );
            with_ttl.push(sent_id(&out));
        } else {
            let text = format!("keep {i}");
            without.push((env.send("alice", "bob", &text), text));
        }
    }
    // Only here a fixed sleep: the TTL must run out.
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(session(&env, "bob")["pending"], 5);
    assert_eq!(
        env.sql("select count(*) from pending where recipient = 'bob'"),
        "5"
    );
    let rows = history_json(&env, "alice", &[]);
    let status: BTreeMap<&str, &str> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id"),
                r["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(status.len(), 10, "{rows:?}");
    for id in &with_ttl {
        assert_eq!(status[id.as_str()], "expired", "{id}");
    }
    for (id, _) in &without {
        assert_eq!(status[id.as_str()], "pending", "{id}");
    }
    let text = env.ok("probe", &["--from", "alice", "history"]);
    assert_eq!(text.matches(" (expired): short-lived").count(), 5, "{text}");

    // bob's monitor prints only the five without a TTL, in order, and then
    // the next new message: nothing expired in between or after.
    let mut bob = env.monitor("kbob", &["--name", "bob"]);
    for (id, text) in &without {
        assert_eq!(
            bob.line(),
            format!("[inter-session msg={id} from=\"alice\"] {text}")
        );
    }
    up(&env, &bob, "bob");
    let sentinel = env.send("alice", "bob", "sentinel");
    expect_msg(&mut bob, &sentinel);
    wait_for("bob's pending to reach 0", || {
        session(&env, "bob")["pending"] == 0
    });
    assert_eq!(
        env.sql("select count(*) from history where status = 'expired'"),
        "5"
    );
    assert_eq!(
        env.sql("select count(*) from history where status = 'delivered'"),
        "6"
    );

    // --expires: in the past is a usage error; in the future is stored.
    refused_usage(
        &env,
        "k",
        &[
            "--from",
            "alice",
            "mail",
            "send",
            "--to",
            "bob",
            "--expires",
            "2020-01-01T00:00:00Z",
            "--text",
            "too late",
        ],
    );
    let id = sent_id(&env.ok(
        "k",
        &[
            "--from",
            "alice",
            "mail",
            "send",
            "--to",
            "bob",
            "--expires",
            "2999-01-01T00:00:00Z",
            "--text",
            "in time",
        ],
    ));
    expect_msg(&mut bob, &id);
    assert_eq!(
        env.sql(&format!("select expires_at from history where id = '{id}'")),
        "2999-01-01T00:00:00.000Z"
    );
}

// ------------------------------------------------------------- 6. queued=

#[test]
fn mail_held_over_a_minute_prints_queued_and_fresh_mail_does_not() {
    let env = Env::new();
    offline(&env, "bob");
    offline(&env, "alice");
    let p = env.send("bob", "alice", "status: started");
    let m1 = env.send("alice", "bob", "deploy when green");
    let m2 = sent_id(&env.ok(
        "k",
        &["--from", "alice", "mail", "reply", &p, "--text", "noted"],
    ));

    // The monitor's clock is 3700 s ahead: 3700 s formats as 1h1m.
    let mut bob = env
        .monitor_with("kbob")
        .args(&["--name", "bob"])
        .var("INTER_SESSION_CLOCK_OFFSET_S", "3700")
        .spawn();
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={m1} from=\"alice\" queued=1h1m] deploy when green")
    );
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={m2} from=\"alice\" re={p} queued=1h1m] noted")
    );
    // Marked delivered before we stop it (a SIGTERM between the write and
    // the mark may repeat a line, by design).
    wait_for("bob's old mail marked delivered", || {
        session(&env, "bob")["pending"] == 0
    });
    bob.stop();

    // Without the offset, fresh mail carries no queued=.
    let mut bob = online(&env, "bob");
    let fresh = env.send("alice", "bob", "fresh order");
    assert_eq!(
        bob.line(),
        format!("[inter-session msg={fresh} from=\"alice\"] fresh order")
    );
    // A fresh reply: re= and still no queued=.
    let b = sent_id(&env.ok(
        "kbob",
        &["mail", "send", "--to", "alice", "--text", "status: ok"],
    ));
    let r = sent_id(&env.ok(
        "k",
        &[
            "--from",
            "alice",
            "mail",
            "reply",
            &b,
            "--text",
            "fresh reply",
        ],
    ));
    assert_eq!(bob.line(), reply_line(&r, "alice", &b, "fresh reply"));
}

// --------------------------------------------------------- 7. idempotency

fn keyed_send(env: &Env, key: &str, text: &str) -> Command {
    cmd_args(
        env,
        "k",
        &[
            "--from",
            "alice",
            "mail",
            "send",
            "--to",
            "bob",
            "--idempotency-key",
            key,
            "--text",
            text,
        ],
    )
}

/// Of ten outputs of the same keyed send: all exit 0, all print the same
/// id, exactly one says queued and the others `(duplicate, not resent)`.
fn check_keyed(outs: &[Output]) -> String {
    let mut ids = BTreeSet::new();
    let mut fresh = 0;
    for out in outs {
        assert_eq!(out.status.code(), Some(0), "stderr {:?}", stderr_of(out));
        let text = stdout_of(out);
        let id = sent_id(&text);
        if text == format!("sent {id} -> bob (queued)\n") {
            fresh += 1;
        } else {
            assert_eq!(text, format!("sent {id} -> bob (duplicate, not resent)\n"));
        }
        ids.insert(id);
    }
    assert_eq!(fresh, 1, "exactly one send is not a duplicate");
    assert_eq!(ids.len(), 1, "the same id every time: {ids:?}");
    ids.into_iter().next().expect("an id")
}

#[test]
fn the_same_idempotency_key_sends_once_sequentially_and_concurrently() {
    let env = Env::new();
    offline(&env, "bob");

    // A retry is the same send: same recipient, same text.
    let outs: Vec<Output> = (0..10)
        .map(|_| run_within(keyed_send(&env, "k", "attempt")))
        .collect();
    let id = check_keyed(&outs);
    assert!(
        stdout_of(&outs[0]).ends_with("(queued)\n"),
        "the first sequential send is the real one"
    );

    let outs: Vec<Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|_| {
                let env = &env;
                s.spawn(move || run_within(keyed_send(env, "k2", "racer")))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let id2 = check_keyed(&outs);
    assert_ne!(id, id2);

    for key in ["k", "k2"] {
        assert_eq!(
            env.sql(&format!(
                "select count(*) from messages where idempotency_key = '{key}'"
            )),
            "1",
            "{key}"
        );
    }
    assert_eq!(env.sql("select count(*) from messages"), "2");
    assert_eq!(env.sql("select count(*) from deliveries"), "2");
    assert_eq!(
        env.sql(&format!("select text from messages where id = '{id}'")),
        "attempt"
    );
    // The same key for another text or recipient is a mistake, not a
    // retry: refused naming the first message, nothing written.
    offline(&env, "carol");
    for (to, text) in [("bob", "attempt, edited"), ("carol", "attempt")] {
        let out = run_within(cmd_args(
            &env,
            "k",
            &[
                "--from",
                "alice",
                "mail",
                "send",
                "--to",
                to,
                "--idempotency-key",
                "k",
                "--text",
                text,
            ],
        ));
        let line = refused(&out, 1, "a reused idempotency key");
        assert!(
            line.contains(&id) && line.contains("idempotency key 'k'"),
            "{line}"
        );
    }
    assert_eq!(env.sql("select count(*) from messages"), "2");
    assert_eq!(session(&env, "bob")["pending"], 2);

    // The key is per sender: bob's "k" is a message of its own.
    let out = env.ok(
        "kbob",
        &[
            "mail",
            "send",
            "--to",
            "alice",
            "--idempotency-key",
            "k",
            "--text",
            "bob's own",
        ],
    );
    assert_ne!(sent_id(&out), id);
    assert!(!out.contains("duplicate"), "{out}");
    assert_eq!(
        env.sql("select count(*) from messages where idempotency_key = 'k'"),
        "2"
    );
}

// ------------------------------------------------------------ 8. bad input

#[test]
fn bad_conversation_input_is_one_line_and_writes_nothing() {
    let env = Env::new();
    offline(&env, "bob");
    offline(&env, "alice");
    let known = env.send("bob", "alice", "a real message");
    // `--from alice mail <args>`, and with `--text x` after `extra`:
    // `send --to bob`, `ask --to bob`, `reply <id>`.
    let as_alice = |args: &[&str]| -> Vec<String> {
        ["--from", "alice", "mail"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    let with_text =
        |verb: &[&str], extra: &[&str]| as_alice(&[verb, extra, &["--text", "x"]].concat());
    let send = |extra: &[&str]| with_text(&["send", "--to", "bob"], extra);
    let ask = |extra: &[&str]| with_text(&["ask", "--to", "bob"], extra);
    let reply_to = |id: &str, extra: &[&str]| with_text(&["reply", id], extra);
    const UNKNOWN: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let long_key = "k".repeat(201);
    // Replies to an id that does not exist (well-formed, and not): a
    // runtime failure (exit 1), as `inbox read` of an unknown id is.
    for args in [
        reply_to(UNKNOWN, &[]),
        reply_to("nope", &[]),
        as_alice(&["send", "--reply-to", UNKNOWN, "--text", "x"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = refused(&run_within(cmd_args(&env, "k", &args)), 1, "unknown id");
        assert!(line.contains("no message with id"), "{args:?}: {line}");
    }
    assert_eq!(env.sql("select count(*) from messages"), "1");
    let cases: Vec<Vec<String>> = vec![
        send(&["--ttl", "0"]),
        send(&["--ttl", "0s"]),
        send(&["--ttl=-5m"]),
        send(&["--ttl", "abc"]),
        send(&["--idempotency-key", &long_key]),
        send(&["--idempotency-key", ""]),
        send(&["--expires", "tomorrow"]),
        reply_to(&known, &["--ttl", "abc"]),
        reply_to(&known, &["--idempotency-key", &long_key]),
        ask(&["--timeout", "0"]),
        ask(&["--timeout", "0s"]),
        ask(&["--ttl", "abc"]),
    ];
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = refused_usage(&env, "k", &args);
        assert!(line.starts_with("inter-session: "), "{args:?}: {line}");
    }
    // A key of exactly 200 bytes is fine.
    let ok = env.ok(
        "k",
        &send(&["--idempotency-key", &"k".repeat(200)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    sent_id(&ok);
}

/// `--ttl -5m` as two words (how an agent writes it) is refused like
/// `--ttl=-5m`: one clear line naming the bad age, not clap's usage block.
#[test]
fn a_negative_ttl_as_a_separate_word_is_one_clear_line() {
    let env = Env::new();
    offline(&env, "bob");
    offline(&env, "alice");
    for args in [
        &[
            "--from", "alice", "mail", "send", "--to", "bob", "--ttl", "-5m", "--text", "x",
        ][..],
        &[
            "--from",
            "alice",
            "mail",
            "ask",
            "--to",
            "bob",
            "--timeout",
            "-5m",
            "--text",
            "x",
        ][..],
    ] {
        let line = refused_usage(&env, "k", args);
        assert!(line.contains("-5m"), "{args:?}: {line}");
    }
}
