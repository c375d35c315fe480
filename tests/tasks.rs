//! Claim-once task queues (issue 22, SPEC §11) on BOTH backends, against
//! the real binary and real monitors: fan-out of 100 tasks to 4 worker
//! monitors (each printed to exactly one worker, done once, every result
//! back to the poster), a SIGKILLed worker's task printed to another after
//! the grace, a poison task dead after 3 attempts with its poster told once,
//! pull mode (`task claim`, `task wait`, a `--lease` that passes), and bad
//! input refused with nothing changed.
//!
//! Run one backend: `cargo test --test tasks postgres` (or `sqlite`).

#[path = "support/pg.rs"]
mod pg;
mod support;
#[macro_use]
#[path = "support/both.rs"]
mod both;
use both::{postgres_env, DB_VAR};

use support::*;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

on_both_backends!(
    fan_out_100_tasks_to_4_workers_each_done_once,
    a_killed_workers_task_goes_to_another_after_the_grace_once,
    a_poison_task_dies_after_three_attempts_and_its_poster_is_told_once,
    pull_mode_claims_one_at_a_time_and_wait_collects_results,
    a_lease_not_renewed_returns_the_task,
    bad_input_is_refused_and_changes_nothing,
);

/// `task post` as `lead`; the task's id.
fn post(env: &Env, queue: &str, text: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--from", "lead", "task", "post", "--queue", queue, "--text", text,
    ];
    args.extend_from_slice(extra);
    let out = env.ok("lead", &args);
    assert!(out.starts_with("posted "), "{out}");
    assert!(out.contains(&format!(" -> queue {queue} (")), "{out}");
    sent_id(&out)
}

/// The task id of a `[inter-session task=<id> queue=<q> …]` line.
fn task_id(line: &str) -> Option<String> {
    line.strip_prefix("[inter-session task=")
        .and_then(|r| r.split(' ').next())
        .map(str::to_string)
}

fn tasks_json(env: &Env) -> Vec<serde_json::Value> {
    let out = env.ok("probe", &["task", "list", "--all", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("task list --json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn task_of(env: &Env, id: &str) -> serde_json::Value {
    let out = env.ok("probe", &["task", "show", id, "--json"]);
    serde_json::from_str(&out).expect("task show --json")
}

/// A worker monitor taking tasks of `queue`, online.
fn worker(env: &Env, name: &str, queue: &str, extra: &[&str]) -> Monitor {
    let mut args = vec!["--name", name, "--take", queue];
    args.extend_from_slice(extra);
    let m = env.monitor(&format!("{name}-key"), &args);
    env.wait_online(name);
    m
}

/// Lines of `lead`'s mail (history rows to lead), as (re, text).
fn replies_to_lead(env: &Env) -> Vec<(String, String)> {
    history_json(env, "lead", &["--with", "lead", "--limit", "100000"])
        .into_iter()
        .filter(|r| r["recipient"] == "lead")
        .map(|r| {
            (
                r["in_reply_to"].as_str().unwrap_or_default().to_string(),
                r["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn fan_out_100_tasks_to_4_workers_each_done_once(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    // Posted at once: 100 processes started together.
    let children: Vec<_> = (0..100)
        .map(|i| {
            let mut c = env.cmd("lead");
            c.args([
                "--from",
                "lead",
                "task",
                "post",
                "--queue",
                "build",
                "--text",
                &format!("job {i}"),
            ]);
            spawn_piped(c)
        })
        .collect();
    let mut posted = HashSet::new();
    for child in children {
        let (out, _) = finish(child, Duration::from_secs(60));
        assert!(out.status.success(), "{out:?}");
        posted.insert(sent_id(&stdout_of(&out)));
    }
    assert_eq!(posted.len(), 100);

    // Four workers: each line they print is done at once by that worker.
    let workers: Vec<(&str, Monitor)> = ["w1", "w2", "w3", "w4"]
        .into_iter()
        .map(|w| (w, worker(env, w, "build", &[])))
        .collect();
    let (tx, rx) = channel::<(String, String)>();
    let mut by: HashMap<String, Vec<String>> = HashMap::new();
    let workers = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|(w, mut m)| {
                let tx = tx.clone();
                scope.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(180);
                    while Instant::now() < deadline {
                        let Some(line) = m.next_line(Duration::from_millis(200)) else {
                            if tx.send((String::new(), String::new())).is_err() {
                                break;
                            }
                            continue;
                        };
                        let Some(id) = task_id(&line) else { continue };
                        assert!(line.contains(" queue=build from=\"lead\"] job "), "{line}");
                        let done_text = format!("result of {id}");
                        env.ok(
                            &format!("{w}-key"),
                            &["task", "done", &id, "--text", &done_text],
                        );
                        if tx.send((w.to_string(), id)).is_err() {
                            break;
                        }
                    }
                    m
                })
            })
            .collect();
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen = 0;
        while seen < 100 && Instant::now() < deadline {
            if let Ok((w, id)) = rx.recv_timeout(Duration::from_secs(1)) {
                if !w.is_empty() {
                    by.entry(id).or_default().push(w);
                    seen += 1;
                }
            }
        }
        drop(rx);
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect::<Vec<Monitor>>()
    });
    let seen: usize = by.values().map(Vec::len).sum();
    assert_eq!(seen, 100, "{} of 100 tasks done: {by:?}", by.len());
    // Each printed to exactly one worker, each done once.
    assert_eq!(by.len(), 100);
    assert!(by.values().all(|w| w.len() == 1), "{by:?}");
    assert_eq!(by.keys().cloned().collect::<HashSet<_>>(), posted);
    let tasks = tasks_json(env);
    assert_eq!(tasks.len(), 100);
    assert!(
        tasks
            .iter()
            .all(|t| t["state"] == "done" && t["attempts"] == 1 && !t["result_id"].is_null()),
        "{tasks:?}"
    );
    // Every result back to the poster, once, in the task's thread.
    let replies = replies_to_lead(env);
    let mut re: HashMap<String, usize> = HashMap::new();
    for (parent, text) in &replies {
        assert_eq!(text, &format!("result of {parent}"));
        *re.entry(parent.clone()).or_default() += 1;
    }
    assert_eq!(re.len(), 100, "{replies:?}");
    assert!(re.values().all(|n| *n == 1));
    // The workers have nothing more to print.
    for mut m in workers {
        assert!(m.next_line(Duration::from_millis(300)).is_none());
        assert_eq!(m.stop(), Some(0));
    }
}

fn a_killed_workers_task_goes_to_another_after_the_grace_once(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    let id = post(env, "q", "survive a crash", &["--lease-grace", "2s"]);
    let mut w1 = worker(env, "w1", "q", &[]);
    let line = w1.line();
    assert_eq!(task_id(&line).as_deref(), Some(id.as_str()), "{line}");
    assert!(line.ends_with("] survive a crash"), "{line}");
    wait_for("the line marked delivered", || {
        task_of(env, &id)["state"] == "claimed"
            && env
                .sql(&format!(
                    "select count(*) from history where id = '{id}' and recipient = 'w1' and status = 'delivered'"
                ))
                == "1"
    });
    w1.kill();
    // Another worker gets it once the grace is over, not before.
    let killed_at = Instant::now();
    let mut w2 = worker(env, "w2", "q", &[]);
    let again = w2.until(Duration::from_secs(30), |l| l.contains("task="));
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "handed over after {:?}, inside the grace",
        killed_at.elapsed()
    );
    assert_eq!(task_id(&again).as_deref(), Some(id.as_str()), "{again}");
    let t = task_of(env, &id);
    assert_eq!(t["holder"], "w2");
    assert_eq!(t["attempts"], 2);
    assert!(
        t["failure"].as_str().is_some_and(|f| f.contains("offline")),
        "{t}"
    );
    env.ok("w2-key", &["task", "done", &id, "--text", "finished"]);
    // Once: w2 prints nothing more, and the poster gets one result.
    assert!(w2.next_line(Duration::from_millis(500)).is_none());
    let replies = replies_to_lead(env);
    assert_eq!(replies, [(id.clone(), "finished".to_string())]);
    assert_eq!(w2.stop(), Some(0));
}

fn a_poison_task_dies_after_three_attempts_and_its_poster_is_told_once(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    let id = post(env, "q", "poison", &[]);
    let mut w = worker(env, "w1", "q", &[]);
    for attempt in 1..=3 {
        let line = w.line();
        assert_eq!(task_id(&line).as_deref(), Some(id.as_str()), "{line}");
        let out = env.ok(
            "w1-key",
            &["task", "fail", &id, "--text", &format!("boom {attempt}")],
        );
        if attempt < 3 {
            assert!(
                out.starts_with(&format!("returned {id} to queue q (attempt {attempt} of 3")),
                "{out}"
            );
        } else {
            assert!(
                out.starts_with(&format!("task {id} is dead after 3 attempts")),
                "{out}"
            );
        }
    }
    // Dead: never handed out again.
    assert!(w.next_line(Duration::from_millis(1500)).is_none());
    let t = task_of(env, &id);
    assert_eq!(t["state"], "dead");
    assert_eq!(t["attempts"], 3);
    // The poster is told in one line.
    let out = env.ok("lead", &["--from", "lead", "inbox", "check"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].contains(&format!("re={id}]"))
            && lines[0].contains("dead: task")
            && lines[0].ends_with("failed 3 of 3 attempts; last: boom 3"),
        "{out}"
    );
    assert_eq!(w.stop(), Some(0));
}

fn pull_mode_claims_one_at_a_time_and_wait_collects_results(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    env.ok("puller", &["--from", "puller", "status"]);
    let a = post(env, "pull", "first", &[]);
    let b = post(env, "pull", "second", &[]);
    // The lead waits for both.
    let mut wait = env.cmd("lead");
    wait.args(["task", "wait", &a, &b, "--timeout", "60s"]);
    let waiting = spawn_piped(wait);

    let out = env.ok(
        "puller",
        &["--from", "puller", "task", "claim", "--queue", "pull"],
    );
    assert_eq!(
        out.trim_end(),
        format!("[inter-session task={a} queue=pull from=\"lead\"] first")
    );
    // One at a time: a second claim is refused while the first is held.
    let refused = env.fails(
        "puller",
        &["--from", "puller", "task", "claim", "--queue", "pull"],
        1,
    );
    assert!(
        refused.contains(&format!("you already hold task {a}")),
        "{refused}"
    );
    env.ok(
        "puller",
        &["--from", "puller", "task", "done", &a, "--text", "A"],
    );
    let out = env.ok(
        "puller",
        &[
            "--from", "puller", "task", "claim", "--queue", "pull", "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("claim --json");
    assert_eq!(v["id"], b.as_str());
    assert_eq!(v["text"], "second");
    env.ok(
        "puller",
        &["--from", "puller", "task", "done", &b, "--text", "B"],
    );
    let (out, _) = finish(waiting, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout_of(&out),
        format!("{a} done: A\n{b} done: B\n"),
        "{out:?}"
    );
    // Nothing open: 124 at once; with --wait, a task posted meanwhile.
    let none = env.run(
        "puller",
        &["--from", "puller", "task", "claim", "--queue", "pull"],
    );
    assert_eq!(none.status.code(), Some(124), "{none:?}");
    let mut c = env.cmd("puller");
    c.args([
        "--from", "puller", "task", "claim", "--queue", "pull", "--wait", "30s",
    ]);
    let claiming = spawn_piped(c);
    let late = post(env, "pull", "late", &[]);
    let (out, _) = finish(claiming, Duration::from_secs(40));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout_of(&out).starts_with(&format!("[inter-session task={late} ")));
    // Its receipt says how it was taken.
    let receipt = env.ok("lead", &["mail", "status", &late]);
    assert!(
        receipt.starts_with("puller: delivered via claim at "),
        "{receipt}"
    );
}

fn a_lease_not_renewed_returns_the_task(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    let id = post(env, "l", "renew me", &["--lease", "2s"]);
    env.ok("p1", &["--from", "p1", "task", "claim", "--queue", "l"]);
    // Renewed, it stays; then left alone, it returns (attempt +1).
    env.ok("p1", &["--from", "p1", "task", "renew", &id]);
    wait_until("the lease to pass", Duration::from_secs(30), || {
        task_of(env, &id)["state"] == "open"
    });
    let t = task_of(env, &id);
    assert_eq!(t["attempts"], 1);
    assert!(
        t["failure"]
            .as_str()
            .is_some_and(|f| f.contains("without task renew")),
        "{t}"
    );
    // The old holder can no longer finish it; another can take it.
    let err = env.fails("p1", &["--from", "p1", "task", "done", &id], 1);
    assert!(err.contains("is not claimed"), "{err}");
    let out = env.ok("p2", &["--from", "p2", "task", "claim", "--queue", "l"]);
    assert!(
        out.starts_with(&format!("[inter-session task={id} ")),
        "{out}"
    );
    assert_eq!(task_of(env, &id)["attempts"], 2);
}

fn bad_input_is_refused_and_changes_nothing(env: &Env) {
    env.ok("lead", &["--from", "lead", "status"]);
    let id = post(env, "q", "mine", &[]);
    env.ok("w1", &["--from", "w1", "task", "claim", "--queue", "q"]);
    let before = tasks_json(env);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--from", "w2", "task", "done", &id], 1, "held by 'w1'"),
        (
            vec!["--from", "w2", "task", "fail", &id, "--text", "x"],
            1,
            "held by 'w1'",
        ),
        (
            vec!["--from", "w2", "task", "renew", &id],
            1,
            "held by 'w1'",
        ),
        (
            vec!["--from", "w1", "task", "done", "01ZZZZZZZZZZZZZZZZZZZZZZZZ"],
            1,
            "no task with id",
        ),
        (vec!["task", "show", "nosuch"], 1, "no task with id"),
        (
            vec!["task", "list", "--queue", "nosuch"],
            1,
            "no queue named 'nosuch' (queues: q)",
        ),
        (
            vec!["--from", "w2", "task", "claim", "--queue", "nosuch"],
            1,
            "no queue named 'nosuch'",
        ),
        (
            vec!["task", "list", "--queue", "Bad Queue"],
            2,
            "invalid queue",
        ),
        (
            vec![
                "--from", "lead", "task", "post", "--queue", "q", "--text", "",
            ],
            1,
            "empty text",
        ),
        (
            vec![
                "--from", "lead", "task", "post", "--queue", "", "--text", "x",
            ],
            2,
            "invalid queue",
        ),
        (
            vec![
                "--from",
                "lead",
                "task",
                "post",
                "--queue",
                "q",
                "--text",
                "x",
                "--max-attempts",
                "0",
            ],
            2,
            "--max-attempts",
        ),
        (
            vec![
                "--from", "lead", "task", "post", "--queue", "q", "--text", "x", "--lease", "soon",
            ],
            2,
            "invalid age",
        ),
        (vec!["--from", "w1", "task", "fail", &id], 2, "--text"),
    ];
    for (args, code, says) in cases {
        let out = env.run("probe", &args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let line = one_stderr_line(&out, &format!("{args:?}"));
        assert!(line.contains(says), "{args:?}: {line}");
    }
    assert_eq!(
        tasks_json(env),
        before,
        "a refused command changed the tasks"
    );
}

/// `db copy` carries the task queues and leases over to PostgreSQL: an open
/// task stays open, a claimed one stays its holder's, a lease stays held.
#[test]
fn db_copy_carries_tasks_and_leases() {
    let url = match pg::fresh_db() {
        Ok(url) => url,
        Err(why) => {
            skip("postgres", &why);
            return;
        }
    };
    let env = Env::new();
    std::fs::create_dir(env.tmp.path().join(".git")).expect("a project");
    env.ok("lead", &["--from", "lead", "status"]);
    let first = post(&env, "q", "claimed one", &[]);
    let second = post(&env, "q", "open one", &[]);
    env.ok("w", &["--from", "w", "task", "claim", "--queue", "q"]);
    env.ok(
        "w",
        &["--from", "w", "lease", "take", "x.rs", "--reason", "mine"],
    );
    let out = env.ok("probe", &["db", "copy", "--to", &url]);
    assert!(out.contains(", 2 tasks, 1 leases"), "{out}");
    let pg = Env::new().with(DB_VAR, &url);
    let t = task_of(&pg, &first);
    assert_eq!(
        (t["state"].as_str(), t["holder"].as_str()),
        (Some("claimed"), Some("w"))
    );
    assert_eq!(task_of(&pg, &second)["state"], "open");
    // The copied claim is still exclusive: another session gets the open one.
    let out = pg.ok("v", &["--from", "v", "task", "claim", "--queue", "q"]);
    assert!(
        out.starts_with(&format!("[inter-session task={second} ")),
        "{out}"
    );
    let leases: serde_json::Value =
        serde_json::from_str(&pg.ok("probe", &["lease", "list", "--all", "--json"])).expect("json");
    assert_eq!(leases[0]["pattern"], "x.rs");
    assert_eq!(leases[0]["holder"], "w");
    // A second copy has nothing new.
    let again = env.ok("probe", &["db", "copy", "--to", &url]);
    assert!(again.starts_with("nothing to copy"), "{again}");
}
