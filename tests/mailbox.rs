//! The core mailbox end to end (issue 3's "Must hold" list, SPEC §2–§5, §8):
//! real binary, real processes, one fresh data folder per test. Every wait
//! is on a printed line or a polled condition, never a fixed sleep. (The
//! exact line, offline replay, prefix lookup, bad input and `inbox read` are
//! in `tests/backends.rs`, which runs them on both backends.)

mod support;
use support::*;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// bob's send of "x" to alice (for commands that must be refused).
const BOB_TO_ALICE: &[&str] = &[
    "--from", "bob", "mail", "send", "--to", "alice", "--text", "x",
];

// ---------------------------------------------------------------- helpers

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
}

/// `q` through the stock sqlite3 shell `shell` (support::sqlite3_shell).
fn sqlite3(shell: &Path, db: &Path, q: &str) -> String {
    let out = Command::new(shell)
        .arg("-bail")
        .arg(db)
        .arg(q)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "sqlite3 {q:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

// ------------------------------------------------------- 1. two sessions

// ----------------------------------------------------- 2. offline replay

// ------------------------------------------------------------- 3. names

#[test]
fn live_name_collisions_get_flat_suffixes_and_prefixes_resolve() {
    let env = Env::new();
    let mut a1 = monitor_up(&env, "k1", "alice");
    let mut a2 = env.monitor("k2", &["--name", "alice"]);
    assert_eq!(
        a2.line(),
        "[inter-session] name 'alice' taken; using 'alice-2'"
    );
    env.wait_online("alice-2");
    let mut a3 = env.monitor("k3", &["--name", "alice"]);
    assert_eq!(
        a3.line(),
        "[inter-session] name 'alice' taken; using 'alice-3'"
    );
    env.wait_online("alice-3");
    // Asking for a suffixed name that is held never nests suffixes.
    let mut a4 = env.monitor("k4", &["--name", "alice-2"]);
    let notice = a4.line();
    let prefix = "[inter-session] name 'alice-2' taken; using '";
    assert!(notice.starts_with(prefix), "{notice}");
    let got = notice[prefix.len()..].trim_end_matches('\'');
    assert!(!got.contains("-2-"), "nested suffix: {notice}");
    env.wait_online(got);
    assert!(
        !sessions(&env)
            .iter()
            .any(|s| s["name"].as_str().is_some_and(|n| n.contains("-2-"))),
        "a nested -2-2 name exists"
    );

    // An exact name wins over being a prefix of others.
    let id = env.send("bob", "alice", "exact");
    expect_msg(&mut a1, &id);
    let id = env.send("bob", "alice-3", "three");
    expect_msg(&mut a3, &id);

    // `ali` is ambiguous: exit 1, the matches listed.
    let line = assert_refused(
        &env,
        cmd_args(
            &env,
            "kb",
            &[
                "--from", "bob", "mail", "send", "--to", "ali", "--text", "x",
            ],
        ),
        1,
        "ambiguous prefix",
    );
    let names = name_tokens(&line);
    for n in ["alice", "alice-2", "alice-3"] {
        assert!(names.contains(n), "{n} not listed in {line:?}");
    }

    // Self-send refused, by exact name and by prefix.
    assert_refused(
        &env,
        cmd_args(
            &env,
            "k1",
            &["mail", "send", "--to", "alice", "--text", "me"],
        ),
        1,
        "self-send",
    );
    assert_refused(
        &env,
        cmd_args(
            &env,
            "k2",
            &[
                "--from", "alice-2", "mail", "send", "--to", "alice-2", "--text", "me",
            ],
        ),
        1,
        "self-send via --from",
    );
    drop(a2);
}

#[test]
fn name_of_a_dead_monitor_is_taken_over_with_its_pending_mail() {
    let env = Env::new();
    let old = monitor_up(&env, "old-key", "alice");
    old.kill(); // SIGKILL: no clean-up ran
    assert_eq!(
        session(&env, "alice")["state"],
        "offline",
        "a crashed monitor reads offline at once"
    );
    let m1 = env.send("bob", "alice", "while dead 1");
    let m2 = env.send("bob", "alice", "while dead 2");
    assert_eq!(session(&env, "alice")["pending"], 2);

    let mut new = env.monitor("new-key", &["--name", "alice"]);
    // No "taken" notice: the offline mailbox is taken over, mail included.
    assert_eq!(
        new.line(),
        format!("[inter-session msg={m1} from=\"bob\"] while dead 1")
    );
    assert_eq!(
        new.line(),
        format!("[inter-session msg={m2} from=\"bob\"] while dead 2")
    );
    env.wait_online("alice");
    let st: Value = serde_json::from_str(&env.ok("new-key", &["status", "--json"])).expect("json");
    assert_eq!(st["name"], "alice", "{st}");
    assert!(
        !sessions(&env).iter().any(|s| s["name"] == "alice-2"),
        "took alice-2 instead of alice"
    );
}

#[test]
fn auto_name_env_name_and_key_reuse() {
    let env = Env::new();
    let proj = env.tmp.path().join("My Project");
    std::fs::create_dir(&proj).expect("mkdir");
    let mut m = env.monitor_with("k1").dir(&proj).spawn();
    assert_eq!(
        m.line(),
        "[inter-session] no --name given; auto-named 'my-project' from cwd (rename with /inter-session rename)"
    );
    env.wait_online("my-project");

    // INTER_SESSION_NAME is used when set, without the auto-name notice.
    let mut p = env
        .monitor_with("k2")
        .dir(&proj)
        .var("INTER_SESSION_NAME", "peer-x")
        .spawn();
    up(&env, &p, "peer-x");
    let id = env.send("bob", "peer-x", "hi peer");
    assert_eq!(
        p.line(),
        format!("[inter-session msg={id} from=\"bob\"] hi peer")
    );

    // A key that reconnects without --name reuses its previous name, even
    // from another folder.
    assert_eq!(m.stop(), Some(0));
    let other = env.tmp.path().join("Other Dir");
    std::fs::create_dir(&other).expect("mkdir");
    let mut m2 = env.monitor_with("k1").dir(&other).spawn();
    up(&env, &m2, "my-project");
    let id = env.send("bob", "my-project", "welcome back");
    assert_eq!(
        m2.line(),
        format!("[inter-session msg={id} from=\"bob\"] welcome back")
    );
    assert!(
        !sessions(&env).iter().any(|s| s["name"] == "other-dir"),
        "auto-named again"
    );
}

// ----------------------------------------------- 4. one monitor per key

#[test]
fn second_monitor_for_the_same_key_exits_zero_with_notice() {
    let env = Env::new();
    let mut alice = monitor_up(&env, "ka", "alice");
    let mut second = env.monitor("ka", &["--name", "alice"]);
    let st = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second monitor exits");
    assert_eq!(st.code(), Some(0));
    let lines = second.rest(Duration::from_secs(5));
    assert_eq!(
        lines,
        vec![format!(
            "[inter-session] another monitor for this session is already running — name='alice', listener_pid={}; exiting",
            alice.child.id()
        )]
    );
    // The first one is undisturbed.
    env.wait_online("alice");
    let id = env.send("bob", "alice", "still yours");
    expect_msg(&mut alice, &id);
    assert!(!sessions(&env).iter().any(|s| s["name"] == "alice-2"));
}

/// The per-key lock file goes with the monitor that held it, so a data
/// folder used by thousands of sessions does not keep a file for each; a
/// monitor waiting on the old file takes the lock on the new one.
#[test]
fn key_lock_files_are_removed_and_handover_stays_exclusive() {
    let env = Env::new();
    let key_locks = || -> Vec<String> {
        std::fs::read_dir(env.data.join("locks"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("key-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in ["k1", "k2", "k3"] {
        let m = env.monitor(name, &["--name", name]);
        up(&env, &m, name);
        assert_eq!(key_locks().len(), 1, "one key lock while {name} watches");
        assert_eq!(m.stop(), Some(0));
        assert!(key_locks().is_empty(), "left behind: {:?}", key_locks());
    }
    // A second monitor started while the first still holds the key waits;
    // when the first ends (and removes its file), the second takes over.
    let first = monitor_up(&env, "kx", "alice");
    let mut second = env.monitor("kx", &["--name", "alice"]);
    first.signal(libc::SIGTERM);
    env.wait_online("alice");
    let id = env.send("bob", "alice", "to the second");
    expect_msg(&mut second, &id);
    assert_eq!(key_locks().len(), 1, "the second's key lock");
    assert_eq!(second.stop(), Some(0));
    assert!(key_locks().is_empty());
}

#[test]
fn sigterm_right_after_start_exits_cleanly() {
    // SPEC §4: on SIGTERM the monitor marks itself offline, releases its lock
    // and exits 0 — also when the signal comes just after it shows online
    // (Claude Code's TaskStop, an immediate re-arm).
    let env = Env::new();
    let mut bad = Vec::new();
    for i in 0..20 {
        let mut m = env.monitor("k", &["--name", "alice"]);
        env.wait_online("alice");
        m.signal(libc::SIGTERM);
        let st = m.child.wait().expect("wait");
        let s = session(&env, "alice");
        if st.code() != Some(0) || s["state"] != "offline" {
            bad.push(format!(
                "run {i}: {st} (signal {:?}), then {s}",
                st.signal()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "SIGTERM soon after coming online did not exit cleanly:\n{}",
        bad.join("\n")
    );
}

// --------------------------------------------------------- 5. bad input
// (Bad names, texts and recipients, and commands without a session: in
// tests/backends.rs, on both backends.)

#[test]
fn group_writable_data_folder_or_database_is_refused() {
    let env = Env::new();
    env.ok("kb", &["--from", "bob", "status"]);
    env.send("alice", "bob", "hi");
    let before = snapshot(&env);
    let cases: [&[&str]; 5] = [
        &["list"],
        &["sql", "select 1"],
        BOB_TO_ALICE,
        &["inbox", "watch", "--pace", "off", "--name", "carol"],
        &["--from", "alice", "inbox", "check"],
    ];

    chmod(&env.data, 0o770);
    for args in cases {
        let line = refused(
            &run_within(cmd_args(&env, "kc", args)),
            1,
            &format!("0770 folder: {args:?}"),
        );
        assert!(
            line.contains(env.data.to_str().unwrap()),
            "the folder is not named: {line}"
        );
    }
    chmod(&env.data, 0o700);
    assert_eq!(snapshot(&env), before);

    chmod(&env.db(), 0o660);
    for args in cases {
        let line = refused(
            &run_within(cmd_args(&env, "kc", args)),
            1,
            &format!("0660 database: {args:?}"),
        );
        assert!(
            line.contains("mailbox.db"),
            "the database is not named: {line}"
        );
    }
    chmod(&env.db(), 0o600);
    assert_eq!(snapshot(&env), before);
    assert_eq!(
        env.sql("select count(*) from pending"),
        "1",
        "alice's mail still waits"
    );
}

#[test]
fn symlinked_data_folder_or_database_is_refused() {
    let env = Env::new();
    // A real mailbox elsewhere, reached through a symlinked data folder.
    let real = env.tmp.path().join("real");
    let via_real = |args: &[&str]| {
        let mut c = cmd_args(&env, "kb", args);
        c.env("INTER_SESSION_DATA_DIR", &real);
        let out = run_within(c);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    via_real(&["--from", "alice", "status"]);
    via_real(&[
        "--from", "bob", "mail", "send", "--to", "alice", "--text", "hi",
    ]);
    let count = || {
        via_real(&["sql", "select count(*) from messages"])
            .trim()
            .to_string()
    };
    assert_eq!(count(), "1");
    std::os::unix::fs::symlink(&real, &env.data).expect("symlink");
    for args in [
        &["list"][..],
        BOB_TO_ALICE,
        &["inbox", "watch", "--pace", "off", "--name", "carol"][..],
    ] {
        refused(
            &run_within(cmd_args(&env, "kc", args)),
            1,
            &format!("symlinked folder: {args:?}"),
        );
    }
    assert_eq!(count(), "1");

    // A data folder whose mailbox.db is a symlink to another mailbox.
    let env2 = Env::new();
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&env2.data)
        .expect("mkdir");
    chmod(&env2.data, 0o700);
    std::os::unix::fs::symlink(real.join("mailbox.db"), env2.db()).expect("symlink");
    for args in [&["list"][..], BOB_TO_ALICE] {
        refused(
            &run_within(cmd_args(&env2, "kc", args)),
            1,
            &format!("symlinked database: {args:?}"),
        );
    }
    assert_eq!(count(), "1");
}

#[test]
fn a_non_sqlite_file_in_place_of_the_database_is_left_untouched() {
    let env = Env::new();
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&env.data)
        .expect("mkdir");
    chmod(&env.data, 0o700);
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_file(&env.data, "mailbox.db", &garbage);
    chmod(&env.db(), 0o600);
    for args in [
        &["list"][..],
        &["status"][..],
        &["sql", "select 1"][..],
        &["history", "--everyone"][..],
        BOB_TO_ALICE,
        &["inbox", "watch", "--pace", "off", "--name", "alice"][..],
    ] {
        refused(
            &run_within(cmd_args(&env, "k", args)),
            1,
            &format!("garbage database: {args:?}"),
        );
        assert_eq!(
            std::fs::read(env.db()).expect("read"),
            garbage,
            "{args:?} changed the file"
        );
    }
}

// ----------------------------------------------------------- 6. commands

#[test]
fn status_and_list_report_the_session() {
    let env = Env::new();
    let alice = env.monitor("ka", &["--name", "alice", "--label", "reviewer one"]);
    up(&env, &alice, "alice");
    let pid = alice.child.id();
    env.ok("kb", &["--from", "bob", "status"]);
    env.send("alice", "bob", "queued for bob");

    let out = env.ok("ka", &["status"]);
    for want in [
        "alice",
        "online",
        &pid.to_string(),
        env.db().to_str().unwrap(),
    ] {
        assert!(out.contains(want), "status lacks {want:?}: {out}");
    }
    let st: Value =
        serde_json::from_str(&env.ok("ka", &["status", "--json"])).expect("status --json");
    assert_eq!(st["name"], "alice", "{st}");
    assert_eq!(st["state"], "online", "{st}");
    assert_eq!(st["label"], "reviewer one", "{st}");
    assert_eq!(st["monitor_pid"], pid, "{st}");
    assert_eq!(st["pending"], 0, "{st}");
    assert_eq!(st["database"], env.db().to_str().unwrap(), "{st}");

    let out = env.ok("nobody", &["status"]);
    assert!(out.contains("not connected"), "{out}");
    let st: Value =
        serde_json::from_str(&env.ok("nobody", &["status", "--json"])).expect("status --json");
    assert_eq!(st["connected"], false, "{st}");

    let list = list_json(&env, &[]);
    assert_eq!(list.len(), 2, "{list:?}");
    let a = list
        .iter()
        .find(|s| s["name"] == "alice")
        .expect("alice listed");
    assert_eq!(a["label"], "reviewer one");
    assert_eq!(a["state"], "online");
    assert_eq!(a["pending"], 0);
    assert_eq!(a["monitor_pid"], pid);
    assert_eq!(a["cwd"], env.tmp.path().to_str().unwrap());
    assert!(a["since"].as_str().is_some_and(|s| !s.is_empty()), "{a}");
    let b = list
        .iter()
        .find(|s| s["name"] == "bob")
        .expect("bob listed");
    assert_eq!(b["state"], "offline");
    assert_eq!(b["pending"], 1);
    let table = env.ok("probe", &["list"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "LABEL", "STATE", "PENDING", "CWD", "SINCE"],
        "{table}"
    );
    assert_eq!(table_pending(&table, "bob"), "1", "{table}");
}

#[test]
fn rename_moves_pending_mail_and_keeps_the_monitor() {
    let env = Env::new();
    let alice = monitor_up(&env, "ka", "alice");
    alice.stop();
    let m1 = env.send("bob", "alice", "one");
    let m2 = env.send("bob", "alice", "two");

    env.ok("ka", &["rename", "alicia"]);
    let s = session(&env, "alicia");
    assert_eq!(s["pending"], 2, "{s}");
    assert!(
        !sessions(&env).iter().any(|s| s["name"] == "alice"),
        "old name still listed"
    );
    let line = assert_refused(
        &env,
        cmd_args(&env, "kb", BOB_TO_ALICE),
        1,
        "send to the old name",
    );
    assert!(line.contains("no session named 'alice'"), "{line}");

    // The renamed mailbox replays under its new name (key reuse, no --name).
    let mut mon = env.monitor("ka", &[]);
    assert_eq!(
        mon.line(),
        format!("[inter-session msg={m1} from=\"bob\"] one")
    );
    assert_eq!(
        mon.line(),
        format!("[inter-session msg={m2} from=\"bob\"] two")
    );
    env.wait_online("alicia");

    // Renaming while the monitor runs: it keeps running and gets the new name's mail.
    env.ok("ka", &["rename", "alyssa"]);
    env.wait_online("alyssa");
    let m3 = env.send("bob", "alyssa", "three");
    assert_eq!(
        mon.line(),
        format!("[inter-session msg={m3} from=\"bob\"] three")
    );
    assert!(
        mon.child.try_wait().expect("try_wait").is_none(),
        "the monitor exited after rename"
    );
    let st: Value = serde_json::from_str(&env.ok("ka", &["status", "--json"])).expect("json");
    assert_eq!(st["name"], "alyssa");

    // A taken name is refused.
    assert_refused(
        &env,
        cmd_args(&env, "ka", &["rename", "bob"]),
        1,
        "rename to a taken name",
    );
}

#[test]
fn relabel_changes_the_label_in_later_lines() {
    let env = Env::new();
    let mut alice = monitor_up(&env, "ka", "alice");
    let _bob = env.monitor("kb", &["--name", "bob", "--label", "one"]);
    up(&env, &_bob, "bob");
    let send = || sent_id(&env.ok("kb", &["mail", "send", "--to", "alice", "--text", "hey"]));

    let id = send();
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={id} from=\"bob\" \"one\"] hey")
    );
    env.ok("kb", &["relabel", "two words"]);
    assert_eq!(session(&env, "bob")["label"], "two words");
    let id = send();
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={id} from=\"bob\" \"two words\"] hey")
    );
    env.ok("kb", &["relabel", ""]);
    let id = send();
    assert_eq!(
        alice.line(),
        format!("[inter-session msg={id} from=\"bob\"] hey")
    );
    // A bad label is a usage error, by relabel and by inbox watch --label.
    for bad in ["has \"quotes\"", "[x]", "tab\there", &"x".repeat(61)] {
        assert_refused(
            &env,
            cmd_args(
                &env,
                "kz",
                &[
                    "inbox", "watch", "--pace", "off", "--name", "zed", "--label", bad,
                ],
            ),
            2,
            &format!("inbox watch --label {bad:?}"),
        );
    }
    // A bad label is refused.
    assert_refused(
        &env,
        cmd_args(&env, "kb", &["relabel", "has \"quotes\""]),
        2,
        "label with quotes",
    );
    assert_refused(
        &env,
        cmd_args(&env, "kb", &["relabel", &"x".repeat(61)]),
        2,
        "61-char label",
    );
}

#[test]
fn labels_are_remembered_per_project() {
    let env = Env::new();
    let proj = env.tmp.path().join("proj");
    let sub = proj.join("sub");
    std::fs::create_dir_all(proj.join(".git")).expect("mkdir");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let other = env.tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");

    // Start a monitor, read its label while online, stop it.
    let label_of = |key: &str, dir: &Path, vars: &[(&str, &str)], args: &[&str], name: &str| {
        let mut full = vec!["--name", name];
        full.extend(args);
        let m = vars
            .iter()
            .fold(env.monitor_with(key).dir(dir).args(&full), |m, (k, v)| {
                m.var(k, v)
            })
            .spawn();
        up(&env, &m, name);
        let label = session(&env, name)["label"]
            .as_str()
            .expect("label")
            .to_string();
        m.stop();
        label
    };
    assert_eq!(
        label_of("kb", &proj, &[], &["--label", "builder"], "bob"),
        "builder"
    );
    assert_eq!(
        label_of("kc", &sub, &[], &[], "carol"),
        "builder",
        "same project, remembered"
    );
    assert_eq!(
        label_of("kd", &other, &[], &[], "dave"),
        "",
        "another project"
    );
    assert_eq!(
        label_of("kc", &proj, &[], &["--label", ""], "carol"),
        "",
        "--label \"\""
    );
    assert_eq!(label_of("kc", &proj, &[], &[], "carol"), "", "forgotten");
    assert_eq!(
        label_of(
            "kc",
            &proj,
            &[("INTER_SESSION_LABEL", "for now")],
            &[],
            "carol"
        ),
        "for now"
    );
    assert_eq!(
        label_of("kc", &proj, &[], &[], "carol"),
        "",
        "INTER_SESSION_LABEL is not remembered"
    );
}

#[test]
fn disconnect_stops_the_monitor_and_leaves_the_session() {
    let env = Env::new();
    let mut alice = monitor_up(&env, "ka", "alice");
    let mut carol = monitor_up(&env, "kc", "carol");
    env.ok("kd", &["--from", "dave", "status"]);
    env.ok("kb", &["--from", "bob", "status"]);

    let out = env.ok("ka", &["disconnect"]);
    assert!(out.contains("alice"), "{out}");
    let st = alice
        .wait_exit(Duration::from_secs(10))
        .expect("alice's monitor exits");
    assert!(st.success(), "{st:?}");

    assert!(
        !list_json(&env, &[]).iter().any(|s| s["name"] == "alice"),
        "list shows a left session"
    );
    assert_eq!(session(&env, "alice")["state"], "left", "list --all");
    let table = env.ok("probe", &["list", "--all"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains("left")),
        "{table}"
    );

    let line = assert_refused(
        &env,
        cmd_args(&env, "kb", BOB_TO_ALICE),
        1,
        "send to a left session",
    );
    assert!(line.contains("alice"), "{line}");

    let out = env.ok(
        "kb",
        &["--from", "bob", "mail", "broadcast", "--text", "all hands"],
    );
    let id = sent_id(&out);
    assert!(
        out.starts_with(&format!("sent {id} -> 2 sessions (")),
        "{out}"
    );
    assert_eq!(
        env.sql(&format!("select group_concat(recipient) from (select recipient from history where id = '{id}' order by recipient)")),
        "carol,dave"
    );
    expect_msg(&mut carol, &id);
}

#[test]
fn history_with_filters() {
    let env = Env::new();
    for n in ["alice", "bob", "carol"] {
        env.ok("k", &["--from", n, "status"]);
    }
    let m1 = env.send("alice", "bob", "one");
    let m2 = env.send("bob", "alice", "two");
    let m3 = env.send("carol", "alice", "three");
    let m4 = env.send("bob", "carol", "four");

    let rows = history_json(&env, "alice", &[]);
    assert_eq!(
        ids_of(&rows),
        [m1.as_str(), m2.as_str(), m3.as_str()],
        "alice's history, oldest first"
    );
    let r = &rows[1];
    assert_eq!(r["sender"], "bob");
    assert_eq!(r["recipient"], "alice");
    assert_eq!(r["text"], "two");
    assert_eq!(r["kind"], "direct");
    assert!(r["delivered_at"].is_null(), "{r}");
    assert!(
        r["created_at"].as_str().is_some_and(|c| !c.is_empty()),
        "{r}"
    );

    assert_eq!(
        ids_of(&history_json(&env, "alice", &["--with", "bob"])),
        [m1.as_str(), m2.as_str()]
    );
    assert_eq!(
        ids_of(&history_json(&env, "alice", &["--limit", "1"])),
        [m3.as_str()]
    );
    assert_eq!(
        ids_of(&history_json(&env, "bob", &["--with", "carol"])),
        [m4.as_str()]
    );
    assert_eq!(
        ids_of(&history_json(&env, "alice", &["--since", "1h"])),
        [m1.as_str(), m2.as_str(), m3.as_str()]
    );

    // Text form: one line per row, with id and text.
    let text = env.ok("k", &["--from", "alice", "history"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (l, (id, t)) in lines
        .iter()
        .zip([(&m1, "one"), (&m2, "two"), (&m3, "three")])
    {
        assert!(l.contains(id.as_str()) && l.contains(t), "{l}");
    }

    // --since excludes older mail (m1 made old behind the binary's back).
    rusqlite::Connection::open(env.db())
        .expect("open the SQLite file")
        .execute(
            "update messages set created_at = '2000-01-01T00:00:00.000Z' where id = ?1",
            [&m1],
        )
        .expect("age m1");
    assert_eq!(
        ids_of(&history_json(&env, "alice", &["--since", "1h"])),
        [m2.as_str(), m3.as_str()]
    );

    refused(
        &run_within(cmd_args(
            &env,
            "k",
            &["--from", "alice", "history", "--since", "soon"],
        )),
        2,
        "bad --since",
    );
    refused(
        &run_within(cmd_args(
            &env,
            "k",
            &["--from", "alice", "history", "--with", "nosuch"],
        )),
        1,
        "unknown --with",
    );
}

#[test]
fn sql_is_read_only() {
    let env = Env::new();
    env.ok("k", &["--from", "alice", "status"]);
    env.send("bob", "alice", "keep me");
    let version = env.sql("pragma user_version");
    let attached = env.tmp.path().join("attached.db");
    let attach = format!("ATTACH DATABASE '{}' AS x", attached.display());
    let vacuum_into = format!("VACUUM INTO '{}'", env.tmp.path().join("copy.db").display());
    for q in [
        "INSERT INTO sessions (name, created_at, since) VALUES ('evil', 'x', 'x')",
        "UPDATE sessions SET label = 'evil'",
        "DELETE FROM messages",
        "DROP TABLE messages",
        "DROP VIEW history",
        "CREATE TABLE t (x)",
        attach.as_str(),
        "select load_extension('x')",
        "PRAGMA user_version=9",
        "PRAGMA journal_mode=DELETE",
        "VACUUM",
        vacuum_into.as_str(),
        "select 1; delete from messages",
    ] {
        assert_refused(&env, cmd_args(&env, "k", &["sql", q]), 1, q);
        assert_eq!(env.sql("pragma user_version"), version, "{q}");
        assert_eq!(env.sql("select text from history"), "keep me", "{q}");
    }
    assert!(!attached.exists(), "ATTACH created a file");
    assert!(
        !env.tmp.path().join("copy.db").exists(),
        "VACUUM INTO created a file"
    );

    let v: Value = serde_json::from_str(&env.ok(
        "k",
        &[
            "sql",
            "--json",
            "select name, label from sessions order by name",
        ],
    ))
    .expect("json");
    assert_eq!(
        v,
        serde_json::json!([{"name": "alice", "label": ""}, {"name": "bob", "label": ""}])
    );
    assert_eq!(
        env.sql("select sender || '>' || recipient from history"),
        "bob>alice"
    );
}

#[test]
fn inbox_check_prints_and_marks_delivered() {
    let env = Env::new();
    let alice = monitor_up(&env, "ka", "alice");
    alice.stop();
    let m1 = env.send("bob", "alice", "first");
    let m2 = env.send("bob", "alice", "second\nline");

    let out = env.ok("ka", &["inbox", "check"]);
    assert_eq!(
        out,
        format!("[inter-session msg={m1} from=\"bob\"] first\n[inter-session msg={m2} from=\"bob\"] second↵line\n")
    );
    assert_eq!(session(&env, "alice")["pending"], 0);
    assert_eq!(
        env.ok("ka", &["inbox", "check"]),
        "",
        "a second check prints nothing"
    );

    // The monitor does not print them again.
    let mut mon = monitor_up(&env, "ka", "alice");
    let m3 = env.send("bob", "alice", "third");
    expect_msg(&mut mon, &m3);
}

#[test]
fn broadcast_reaches_every_other_session_once() {
    let env = Env::new();
    let mut bob = monitor_up(&env, "kb", "bob");
    let mut alice = monitor_up(&env, "ka", "alice");
    let mut carol = env.monitor("kc", &["--name", "carol", "--label", "cl"]);
    up(&env, &carol, "carol");
    let dave = monitor_up(&env, "kd", "dave");
    dave.stop();
    let erin = monitor_up(&env, "ke", "erin");
    env.ok("ke", &["disconnect"]);
    drop(erin);

    let mut ids = Vec::new();
    for args in [
        &["mail", "broadcast", "--text", "b one"][..],
        &["mail", "send", "--all", "--text", "b two"][..],
    ] {
        let out = env.ok("kb", args);
        let id = sent_id(&out);
        assert!(
            out.starts_with(&format!("sent {id} -> 3 sessions (")) && out.ends_with(")\n"),
            "{args:?}: {out}"
        );
        assert_eq!(
            env.sql(&format!("select group_concat(recipient) from (select recipient from history where id = '{id}' order by recipient)")),
            "alice,carol,dave",
            "{args:?}"
        );
        ids.push(id);
    }
    for m in [&mut alice, &mut carol] {
        assert_eq!(
            m.line(),
            format!("[inter-session msg={} from=\"bob\"] b one", ids[0])
        );
        assert_eq!(
            m.line(),
            format!("[inter-session msg={} from=\"bob\"] b two", ids[1])
        );
    }
    assert_eq!(session(&env, "dave")["pending"], 2);
    assert_eq!(session(&env, "erin")["pending"], 0);
    let mut dave = env.monitor("kd", &["--name", "dave"]);
    expect_msg(&mut dave, &ids[0]);
    expect_msg(&mut dave, &ids[1]);

    // The sender got nothing: its next line is a direct message.
    let d = sent_id(&env.ok("ka", &["mail", "send", "--to", "bob", "--text", "direct"]));
    expect_msg(&mut bob, &d);
    // And nobody got anything twice: the next line each is new.
    let d = sent_id(&env.ok("kb", &["mail", "send", "--to", "carol", "--text", "after"]));
    expect_msg(&mut carol, &d);
    let d = sent_id(&env.ok("kb", &["mail", "send", "--to", "dave", "--text", "after"]));
    expect_msg(&mut dave, &d);
}

#[test]
fn the_61st_broadcast_in_a_minute_is_refused() {
    let env = Env::new();
    for n in ["r1", "r2"] {
        env.ok("k", &["--from", n, "status"]);
    }
    for i in 0..60 {
        let out = env.ok(
            "k",
            &[
                "--from",
                "zed",
                "mail",
                "broadcast",
                "--text",
                &format!("b{i}"),
            ],
        );
        assert!(out.contains("-> 2 sessions ("), "broadcast {i}: {out}");
    }
    let line = assert_refused(
        &env,
        cmd_args(
            &env,
            "k",
            &[
                "--from",
                "zed",
                "mail",
                "broadcast",
                "--text",
                "one too many",
            ],
        ),
        1,
        "61st broadcast",
    );
    assert!(line.contains("60"), "{line}");
    assert_refused(
        &env,
        cmd_args(
            &env,
            "k",
            &[
                "--from",
                "zed",
                "mail",
                "send",
                "--all",
                "--text",
                "one too many",
            ],
        ),
        1,
        "61st via send --all",
    );
    // Another sender, and direct mail, are not limited.
    env.ok(
        "k",
        &["--from", "r1", "mail", "broadcast", "--text", "mine"],
    );
    env.send("zed", "r1", "direct still works");
}

// ------------------------------------------------ 7. the stock sqlite3 shell

#[test]
fn history_and_pending_views_work_in_the_stock_sqlite3_shell() {
    let Some(shell) = sqlite3_shell(None) else {
        return;
    };
    let version = Command::new(&shell)
        .arg("--version")
        .output()
        .expect("sqlite3 --version");
    eprintln!(
        "stock sqlite3: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );

    let env = Env::new();
    let mut alice = monitor_up(&env, "ka", "alice");
    let m1 = env.send("bob", "alice", "hello");
    expect_msg(&mut alice, &m1);
    wait_for("hello marked delivered", || {
        env.sql("select count(*) from pending") == "0"
    });
    env.send("alice", "bob", "hi");
    assert_eq!(alice.stop(), Some(0));

    let out = sqlite3(
        &shell,
        &env.db(),
        "select sender, recipient, text, delivered_at from history",
    );
    let rows: BTreeSet<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.contains("alice|bob|hi|"), "{out}");
    let delivered = rows
        .iter()
        .find(|r| r.starts_with("bob|alice|hello|"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        delivered.len() > "bob|alice|hello|".len(),
        "no delivered_at: {out}"
    );
    assert_eq!(
        sqlite3(&shell, &env.db(), "select count(*) from pending").trim(),
        "1"
    );
    assert_eq!(
        sqlite3(
            &shell,
            &env.db(),
            "select sender, recipient, text from pending"
        )
        .trim(),
        "alice|bob|hi"
    );
    let all = sqlite3(
        &shell,
        &env.db(),
        "select id, created_at, kind, sender, recipient, text, delivered_at from history",
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{m1}|")) && l.contains("|direct|bob|alice|hello|")),
        "{all}"
    );
}

// ------------------------------------------------ 8. files and folders

#[test]
fn data_folder_is_0700_and_every_file_0600() {
    let env = Env::new();
    // A permissive umask in every child, so the modes are the product's doing.
    let loose = |key: &str, args: &[&str]| {
        let mut c = env.cmd(key);
        c.args(args);
        // SAFETY: umask is async-signal-safe and cannot fail.
        unsafe {
            c.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
        c
    };
    let mut alice = Monitor::spawn(loose(
        "ka",
        &["inbox", "watch", "--pace", "off", "--name", "alice"],
    ));
    env.wait_online("alice");
    let out = run_within(loose(
        "kb",
        &[
            "--from", "bob", "mail", "send", "--to", "alice", "--text", "hi",
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = sent_id(&String::from_utf8_lossy(&out.stdout));
    expect_msg(&mut alice, &id);
    let big = write_file(env.tmp.path(), "big.txt", &vec![b'x'; 5000]);
    let out = run_within(loose(
        "kb",
        &[
            "--from",
            "bob",
            "mail",
            "send",
            "--to",
            "alice",
            "--text-file",
            big.to_str().unwrap(),
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let check = |when: &str| {
        assert_eq!(mode(&env.data), 0o700, "{when}: data folder mode");
        assert_eq!(mode(&env.db()), 0o600, "{when}: mailbox.db mode");
        let mut stack = vec![env.data.clone()];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read_dir") {
                let p = e.expect("entry").path();
                let meta = std::fs::symlink_metadata(&p).expect("stat");
                assert!(
                    !meta.file_type().is_symlink(),
                    "{when}: symlink {}",
                    p.display()
                );
                if meta.is_dir() {
                    assert_eq!(mode(&p), 0o700, "{when}: folder {}", p.display());
                    stack.push(p);
                } else {
                    assert_eq!(mode(&p), 0o600, "{when}: file {}", p.display());
                    files += 1;
                }
            }
        }
        assert!(files >= 1, "{when}: no files");
    };
    check("monitor running");
    assert_eq!(alice.stop(), Some(0));
    check("after the monitor stopped");
}
