//! File leases and the git pre-commit guard (SPEC §11), on BOTH backends:
//! every case below runs once on the data folder's SQLite file
//! (`<case>::sqlite`) and once on a fresh PostgreSQL database
//! (`<case>::postgres`, see support/pg.rs for where the server comes from).
//!
//! Each case makes its own git repository under the Env's temp folder and
//! runs the real binary (and real `git commit`s through the installed hook)
//! inside it, with git kept away from the user's configuration.
//!
//! The cases: two sessions racing for overlapping globs are never both
//! granted; the pre-commit hook refuses a commit touching another session's
//! exclusive lease until it is released, expires or its holder disconnects,
//! chains a hook already there and `--remove` restores it byte for byte;
//! conflict lines name the holder, the reason and how to ask; shared leases
//! coexist and exclusive ones do not; `--force` takes over and mails the old
//! holder; `release` without paths releases all of mine; every `--json`
//! parses; bad input is refused with one line and changes nothing; `check`
//! lists only other sessions' exclusive leases; a path names the same
//! lease however it is spelt (through a symlink to the project too);
//! hostile file names stay one safe line each, with a usable `mail ask`;
//! a session that has left is never told it holds a lease that is dead.
//!
//! Run one backend: `cargo test --test leases postgres` (or `sqlite`).

#[path = "support/pg.rs"]
mod pg;
mod support;
#[macro_use]
#[path = "support/both.rs"]
mod both;
use both::postgres_env;

use support::*;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NOT_CONNECTED: &str = "not connected; run /inter-session connect in this session first";

on_both_backends!(
    racing_overlapping_globs_are_never_both_granted,
    pre_commit_is_refused_while_another_session_holds_the_lease,
    conflict_lines_name_the_holder_and_how_to_ask,
    shared_leases_coexist_exclusive_ones_do_not,
    force_takes_over_and_mails_the_old_holder,
    release_without_paths_releases_all_of_mine,
    json_output_parses,
    bad_input_is_refused_and_changes_nothing,
    check_lists_only_others_exclusive_leases,
    paths_name_the_same_lease_however_given,
    hostile_file_names_stay_one_safe_line_each,
    a_left_session_is_never_granted_a_dead_lease,
);

// ---------------------------------------------------------------- helpers

/// The files every test repository starts with.
const FILES: &[&str] = &[
    "README.md",
    "docs/x.md",
    "src/a.rs",
    "src/b.rs",
    "src/d.rs",
    "src/main.rs",
    "src/lib.rs",
    "src/store/mod.rs",
    "src/store/leases.rs",
];

/// `git` in `dir`, kept away from the user's configuration, with the
/// environment the binary needs when a hook runs it (data folder, database
/// URL, `key` as the session key) and nothing inherited that could name
/// another session or another repository.
fn git_cmd(env: &Env, dir: &Path, key: &str) -> Command {
    let mut c = Command::new("git");
    for (k, _) in std::env::vars() {
        if ["CLAUDE", "INTER_SESSION", "CODEX_", "GEMINI_", "GIT_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
    c.env("INTER_SESSION_DATA_DIR", &env.data)
        .env("INTER_SESSION_KEY", key)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("LC_ALL", "C");
    for (k, v) in &env.vars {
        c.env(k, v);
    }
    c.args([
        "-c",
        "commit.gpgsign=false",
        "-c",
        "init.defaultBranch=main",
    ])
    .current_dir(dir)
    .stdin(Stdio::null());
    c
}

/// Run git; require success; its stdout.
fn git(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(env, dir, "git-runner")
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        stderr_of(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh git repository `name` under the temp folder, its files committed;
/// its canonical path (as the binary stores it).
fn repo(env: &Env, name: &str) -> PathBuf {
    let root = env.tmp.path().join(name);
    std::fs::create_dir_all(&root).expect("mkdir repo");
    git(env, &root, &["init", "-q", "."]);
    for f in FILES {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, format!("// {f}\n")).expect("write");
    }
    git(env, &root, &["add", "-A"]);
    git(env, &root, &["commit", "-q", "-m", "init"]);
    std::fs::canonicalize(&root).expect("canonical repo path")
}

/// The binary as session key `key`, in `dir`.
fn is_cmd(env: &Env, dir: &Path, key: &str, args: &[&str]) -> Command {
    let mut c = env.cmd(key);
    c.current_dir(dir).args(args);
    c
}

/// Run the binary in `dir` to completion.
fn run_in(env: &Env, dir: &Path, key: &str, args: &[&str]) -> Output {
    run_within(is_cmd(env, dir, key, args))
}

/// Run in `dir`, require exit 0; its stdout.
fn ok_in(env: &Env, dir: &Path, key: &str, args: &[&str]) -> String {
    let out = run_in(env, dir, key, args);
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): stderr {:?}; stdout {:?}",
        out.status,
        stderr_of(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    stdout_of(&out)
}

/// `args` in `dir` must exit 1 (a refused lease or a blocking check);
/// returns its stderr.
fn exit1_in(env: &Env, dir: &Path, key: &str, args: &[&str]) -> String {
    let out = run_in(env, dir, key, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: want exit 1; stderr {:?}; stdout {:?}",
        stderr_of(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    stderr_of(&out)
}

/// `lease take` as `who` (`--from`) in `dir` with more arguments.
fn take_args<'a>(who: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--from", who, "lease", "take"];
    v.extend_from_slice(rest);
    v
}

/// Parse JSON or fail naming what printed it.
fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text:?}"))
}

/// `lease list --all --json` (every project, ended leases too), parsed.
fn all_leases(env: &Env, dir: &Path) -> Vec<Value> {
    let out = ok_in(env, dir, "probe", &["lease", "list", "--all", "--json"]);
    json(&out, "lease list --all --json")
        .as_array()
        .expect("lease list --all --json is an array")
        .clone()
}

/// `lease list --json` in `dir` (live leases of its project), parsed.
fn live_leases(env: &Env, dir: &Path) -> Vec<Value> {
    let out = ok_in(env, dir, "probe", &["lease", "list", "--json"]);
    json(&out, "lease list --json")
        .as_array()
        .expect("lease list --json is an array")
        .clone()
}

/// (holder, pattern, exclusive) of each live lease of `dir`'s project, sorted.
fn live_pairs(env: &Env, dir: &Path) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = live_leases(env, dir)
        .iter()
        .map(|l| {
            (
                l["holder"].as_str().expect("holder").to_string(),
                l["pattern"].as_str().expect("pattern").to_string(),
                l["exclusive"].as_bool().expect("exclusive"),
            )
        })
        .collect();
    v.sort();
    v
}

/// Stderr lines that describe a lease in the way (`…: leased by …`).
fn conflict_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains(": leased by ")).collect()
}

/// Everything on stderr of a refused `lease take`: one line per lease in
/// the way, and nothing else. Returns the lines about leases.
fn refused_take_lines(err: &str, want: usize, what: &str) -> Vec<String> {
    let lines: Vec<&str> = err.lines().collect();
    let conflicts = conflict_lines(err);
    assert_eq!(
        conflicts.len(),
        want,
        "{what}: want {want} conflict line(s), got {err:?}"
    );
    let others: Vec<&&str> = lines
        .iter()
        .filter(|l| !l.contains(": leased by "))
        .collect();
    assert!(
        others.is_empty(),
        "{what}: stray stderr lines besides the conflicts: {err:?}"
    );
    assert!(
        lines.iter().all(|l| !l.trim().is_empty()),
        "{what}: blank line in {err:?}"
    );
    conflicts.into_iter().map(str::to_string).collect()
}

/// HEAD's commit id in `dir`.
fn head(env: &Env, dir: &Path) -> String {
    git(env, dir, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Change `file`, stage it and `git commit` as session key `key`: the
/// commit's output. The hook runs `lease check --staged` as that key.
fn commit(env: &Env, root: &Path, key: &str, file: &str, content: &str) -> Output {
    std::fs::write(root.join(file), content).expect("write");
    git(env, root, &["add", file]);
    git_cmd(env, root, key)
        .args(["commit", "-q", "-m", content])
        .output()
        .expect("run git commit")
}

/// A commit that must be refused by the lease guard: non-zero exit, HEAD
/// unchanged, stderr naming `holder` and `file`.
fn commit_refused(env: &Env, root: &Path, key: &str, file: &str, holder: &str, what: &str) {
    let before = head(env, root);
    let out = commit(env, root, key, file, what);
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "{what}: the commit went through; stderr {err:?}"
    );
    assert_eq!(head(env, root), before, "{what}: HEAD moved");
    let line = err
        .lines()
        .find(|l| l.contains(&format!("leased by {holder}")))
        .unwrap_or_else(|| panic!("{what}: no line naming {holder}: {err:?}"));
    assert!(
        line.starts_with(&format!("{file}:")),
        "{what}: the line does not name {file}: {line:?}"
    );
    assert!(
        line.contains(&format!("inter-session mail ask --to {holder}")),
        "{what}: the line does not say how to ask {holder}: {line:?}"
    );
}

/// A commit that must go through: exit 0 and HEAD moved.
fn commit_allowed(env: &Env, root: &Path, key: &str, file: &str, what: &str) {
    let before = head(env, root);
    let out = commit(env, root, key, file, what);
    assert!(
        out.status.success(),
        "{what}: the commit was refused: {}",
        stderr_of(&out)
    );
    assert_ne!(head(env, root), before, "{what}: HEAD did not move");
}

/// Lines in the chained user hook's log (one per run).
fn hook_runs(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the cases

fn racing_overlapping_globs_are_never_both_granted(env: &Env) {
    let root = repo(env, "repo");
    register(env, "alice");
    register(env, "bob");
    // Pairs that overlap on at least one path (named on the right), in
    // several shapes: a directory against a glob, `?` against `*`, `**`
    // with zero segments, the whole project against one file.
    let pairs: &[(&str, &str)] = &[
        ("src/**", "src/store/*.rs"),          // src/store/mod.rs
        ("src/*.rs", "src/main.rs"),           // src/main.rs
        ("**/*.rs", "src/lib.rs"),             // src/lib.rs
        ("src/?ain.rs", "src/m*"),             // src/main.rs
        ("src/", "src/store/"),                // src/store/mod.rs
        (".", "README.md"),                    // README.md
        ("src/store/**/*.rs", "src/*/mod.rs"), // src/store/mod.rs
        ("docs/*.md", "docs/x.md"),            // docs/x.md
    ];
    let started = Instant::now();
    let rounds = 200;
    let mut wins = [0usize; 2];
    for round in 0..rounds {
        let (p, q) = pairs[round % pairs.len()];
        // Alternate which side each glob is on, and make one request shared
        // now and then: a shared lease still conflicts with an exclusive one.
        let (ga, gb) = if round % 2 == 0 { (p, q) } else { (q, p) };
        let shared_a = round % 5 == 3;
        let mut a_args = take_args("alice", &[ga, "--reason", "race"]);
        if shared_a {
            a_args.push("--shared");
        }
        let b_args = take_args("bob", &[gb, "--reason", "race"]);
        let a = spawn_piped(is_cmd(env, &root, "ka", &a_args));
        let b = spawn_piped(is_cmd(env, &root, "kb", &b_args));
        let (a, _) = finish(a, Duration::from_secs(30));
        let (b, _) = finish(b, Duration::from_secs(30));
        let what = format!("round {round}: alice {a_args:?} vs bob {b_args:?}");
        assert!(
            !(a.status.success() && b.status.success()),
            "{what}: BOTH granted; leases now {:?}",
            live_pairs(env, &root)
        );
        assert!(
            a.status.success() || b.status.success(),
            "{what}: neither granted: alice {:?} {:?}; bob {:?} {:?}",
            a.status,
            stderr_of(&a),
            b.status,
            stderr_of(&b)
        );
        let (winner, win, lose) = if a.status.success() {
            wins[0] += 1;
            ("alice", &a, &b)
        } else {
            wins[1] += 1;
            ("bob", &b, &a)
        };
        assert_eq!(lose.status.code(), Some(1), "{what}: the loser's exit");
        assert!(
            stdout_of(win).starts_with("leased '"),
            "{what}: winner's stdout {:?}",
            stdout_of(win)
        );
        let lines = refused_take_lines(&stderr_of(lose), 1, &what);
        assert!(
            lines[0].contains(&format!("leased by {winner} "))
                && lines[0].contains(&format!("inter-session mail ask --to {winner} ")),
            "{what}: the loser's line does not name the winner {winner}: {lines:?}"
        );
        let key = if winner == "alice" { "ka" } else { "kb" };
        let out = ok_in(env, &root, key, &["--from", winner, "lease", "release"]);
        assert!(
            out.starts_with("released '"),
            "{what}: release printed {out:?}"
        );
        // Now and then, the table itself: nothing live is left.
        if round % 25 == 24 {
            assert_eq!(live_pairs(env, &root), vec![], "{what}: leases left");
        }
    }
    let all = all_leases(env, &root);
    assert_eq!(
        all.len(),
        rounds,
        "one lease row per round (the winner's), no more"
    );
    assert!(
        all.iter()
            .all(|l| l["live"] == false && l["released_at"].is_string()),
        "every lease of the race was released"
    );
    eprintln!(
        "racing: {rounds} rounds in {:?} (alice won {}, bob {})",
        started.elapsed(),
        wins[0],
        wins[1]
    );
}

fn pre_commit_is_refused_while_another_session_holds_the_lease(env: &Env) {
    let root = repo(env, "repo");
    let hooks = root.join(".git/hooks");
    std::fs::create_dir_all(&hooks).expect("hooks dir");
    // The user's own pre-commit hook, already there: it must keep running
    // (after the guard) and come back byte for byte on --remove.
    let log = env.tmp.path().join("user-hook.log");
    let user_hook = format!(
        "#!/bin/sh\n# the user's own hook\nprintf 'ran\\n' >> '{}'\nexit 0\n",
        log.display()
    );
    let hook = hooks.join("pre-commit");
    std::fs::write(&hook, &user_hook).expect("user hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o751)).expect("chmod");

    let out = ok_in(env, &root, "installer", &["lease", "install-hook"]);
    assert!(
        out.contains("installed the lease guard") && out.contains("inter-session-chained"),
        "install-hook: {out:?}"
    );
    let guard = std::fs::read(&hook).expect("guard");
    assert_ne!(guard, user_hook.as_bytes(), "the hook was not replaced");
    // A second install changes nothing (it must not chain itself).
    let again = ok_in(env, &root, "installer", &["lease", "install-hook"]);
    assert!(
        again.contains("already installed"),
        "second install: {again:?}"
    );
    assert_eq!(std::fs::read(&hook).expect("guard"), guard);
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit.inter-session-chained"))
            .expect("chained hook"),
        user_hook
    );

    // bob is a connected session: the hook his commits run is his.
    let _bob = monitor_up(env, "kb", "bob");
    register(env, "alice");

    // No lease yet: the commit goes through, and the user's hook ran.
    commit_allowed(env, &root, "kb", "src/a.rs", "free to change");
    assert_eq!(hook_runs(&log), 1, "the chained user hook did not run");

    // (a) alice's exclusive lease blocks bob's commit until she releases.
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "refactoring a"]),
    );
    commit_refused(
        env,
        &root,
        "kb",
        "src/a.rs",
        "alice",
        "while alice holds it",
    );
    assert_eq!(
        hook_runs(&log),
        1,
        "the user's hook ran although the guard refused"
    );
    // So does a commit by no session at all.
    commit_refused(env, &root, "nobody", "src/a.rs", "alice", "as no session");
    // A file outside the lease is not blocked (src/a.rs stays staged, so
    // unstage it first: only src/b.rs goes in).
    git(env, &root, &["reset", "-q", "--", "src/a.rs"]);
    commit_allowed(env, &root, "kb", "src/b.rs", "another file");
    assert_eq!(hook_runs(&log), 2);
    // bob's own lease does not block bob.
    ok_in(env, &root, "kb", &["lease", "take", "src/b.rs"]);
    commit_allowed(env, &root, "kb", "src/b.rs", "bob's own lease");
    assert_eq!(hook_runs(&log), 3);
    commit_refused(
        env,
        &root,
        "nobody",
        "src/b.rs",
        "bob",
        "bob's lease, no session",
    );
    git(env, &root, &["reset", "-q", "--", "src/b.rs"]);
    ok_in(env, &root, "kb", &["lease", "release"]);

    ok_in(env, &root, "ka", &["--from", "alice", "lease", "release"]);
    commit_allowed(env, &root, "kb", "src/a.rs", "after alice released");

    // (b) a lease whose TTL passed blocks nothing.
    let ttl = Duration::from_secs(2);
    let taken = Instant::now();
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--ttl", "2s", "--reason", "short"]),
    );
    let before = head(env, &root);
    let out = commit(env, &root, "kb", "src/a.rs", "during the short lease");
    // On a machine too slow to commit within the TTL the commit may pass
    // (and the chained hook run once more); it is checked only when fast.
    let slow_pass = usize::from(out.status.success());
    if taken.elapsed() < ttl - Duration::from_millis(300) {
        assert!(
            !out.status.success() && head(env, &root) == before,
            "a commit under a live 2s lease went through: {}",
            stderr_of(&out)
        );
        assert!(
            stderr_of(&out).contains("leased by alice"),
            "{:?}",
            stderr_of(&out)
        );
    } else {
        eprintln!("the machine is slow: the 2s lease may have expired before the commit");
    }
    wait_until(
        "alice's 2s lease to expire",
        Duration::from_secs(30),
        || live_leases(env, &root).is_empty(),
    );
    assert!(
        taken.elapsed() >= ttl - Duration::from_millis(50),
        "the 2s lease was gone after {:?}",
        taken.elapsed()
    );
    let expired = all_leases(env, &root);
    let short = expired
        .iter()
        .find(|l| l["reason"] == "short")
        .expect("the short lease in lease list --all");
    assert_eq!(short["live"], false, "{short}");
    assert!(
        short["released_at"].is_null(),
        "expired, not released: {short}"
    );
    commit_allowed(env, &root, "kb", "src/a.rs", "after the lease expired");

    // (c) a lease dies with its holder.
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/", "--reason", "until I leave"]),
    );
    commit_refused(env, &root, "kb", "src/a.rs", "alice", "before alice left");
    ok_in(env, &root, "ka", &["--from", "alice", "disconnect"]);
    commit_allowed(env, &root, "kb", "src/a.rs", "after alice disconnected");
    let gone = all_leases(env, &root);
    let last = gone
        .iter()
        .find(|l| l["reason"] == "until I leave")
        .expect("alice's last lease");
    assert_eq!(last["live"], false, "{last}");
    assert!(
        last["released_at"].is_string(),
        "disconnect records the release: {last}"
    );
    assert_eq!(
        hook_runs(&log),
        6 + slow_pass,
        "the chained hook runs once per commit that passed"
    );

    // --remove restores the user's hook byte for byte, mode included.
    let out = ok_in(
        env,
        &root,
        "installer",
        &["lease", "install-hook", "--remove"],
    );
    assert!(out.contains("removed the lease guard"), "remove: {out:?}");
    assert_eq!(std::fs::read(&hook).expect("hook"), user_hook.as_bytes());
    let mode = std::fs::metadata(&hook).expect("meta").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o751, "the user's hook mode");
    assert!(
        !hooks.join("pre-commit.inter-session-chained").exists(),
        "the chained copy is left behind"
    );
    // And the guard is really gone: a lease no longer blocks a commit.
    register(env, "carol");
    ok_in(env, &root, "kc", &take_args("carol", &["src/a.rs"]));
    commit_allowed(env, &root, "kb", "src/a.rs", "after --remove");
    assert_eq!(hook_runs(&log), 7 + slow_pass, "the restored hook runs");
    let again = ok_in(
        env,
        &root,
        "installer",
        &["lease", "install-hook", "--remove"],
    );
    assert!(again.contains("not installed"), "second remove: {again:?}");
    assert_eq!(std::fs::read_to_string(&hook).expect("hook"), user_hook);
}

fn conflict_lines_name_the_holder_and_how_to_ask(env: &Env) {
    let root = repo(env, "repo");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "refactoring a"]),
    );
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/store/", "--reason", "splitting the store"]),
    );
    ok_in(
        env,
        &root,
        "kc",
        &take_args("carol", &["docs/x.md", "--reason", "writing docs"]),
    );
    register(env, "bob");
    let before = all_leases(env, &root);
    assert_eq!(before.len(), 3);

    // bob wants all of src/ plus a free file: two leases of alice are in the
    // way (carol's is not), and nothing at all is leased.
    let out = run_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["src/", "README.md", "--reason", "bob's sweep"]),
    );
    assert_eq!(out.status.code(), Some(1), "stderr {:?}", stderr_of(&out));
    assert!(out.stdout.is_empty(), "stdout {:?}", stdout_of(&out));
    let err = stderr_of(&out);
    let lines = refused_take_lines(&err, 2, "bob's sweep");
    for (reason, pattern) in [
        ("refactoring a", "src/a.rs"),
        ("splitting the store", "src/store/**"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(reason))
            .unwrap_or_else(|| panic!("no line with the reason {reason:?}: {err:?}"));
        assert!(line.contains("leased by alice "), "holder: {line:?}");
        assert!(line.contains(&format!("'{pattern}'")), "pattern: {line:?}");
        assert!(line.contains("since "), "since: {line:?}");
        assert!(
            line.contains("inter-session mail ask --to alice "),
            "how to ask: {line:?}"
        );
    }
    assert!(!err.contains("carol"), "carol is not in the way: {err:?}");
    assert_eq!(
        all_leases(env, &root),
        before,
        "a refused take changed leases"
    );

    // Conflicting with two holders at once: one line each.
    let err = exit1_in(
        env,
        &root,
        "kd",
        &take_args("dave", &[".", "--reason", "everything"]),
    );
    let lines = refused_take_lines(&err, 3, "dave takes the project");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("leased by alice "))
            .count(),
        2,
        "{err:?}"
    );
    let carol_line = lines
        .iter()
        .find(|l| l.contains("leased by carol "))
        .unwrap_or_else(|| panic!("no line for carol: {err:?}"));
    assert!(
        carol_line.contains("writing docs")
            && carol_line.contains("inter-session mail ask --to carol "),
        "{carol_line:?}"
    );
    assert_eq!(
        all_leases(env, &root),
        before,
        "a refused take changed leases"
    );
}

fn shared_leases_coexist_exclusive_ones_do_not(env: &Env) {
    let root = repo(env, "repo");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["README.md", "--shared"]),
    );
    ok_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["README.md", "--shared"]),
    );
    ok_in(env, &root, "kc", &take_args("carol", &["*.md", "--shared"]));
    assert_eq!(
        live_pairs(env, &root),
        vec![
            ("alice".into(), "README.md".into(), false),
            ("bob".into(), "README.md".into(), false),
            ("carol".into(), "*.md".into(), false),
        ]
    );
    let before = all_leases(env, &root);

    // An exclusive lease on it conflicts with every shared one.
    let err = exit1_in(env, &root, "kd", &take_args("dave", &["README.md"]));
    let lines = refused_take_lines(&err, 3, "dave exclusive on shared");
    for who in ["alice", "bob", "carol"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("leased by {who} "))),
            "no line for {who}: {err:?}"
        );
    }
    // Turning one's own shared lease exclusive conflicts with the others,
    // never with oneself.
    let err = exit1_in(env, &root, "ka", &take_args("alice", &["README.md"]));
    let lines = refused_take_lines(&err, 2, "alice upgrades");
    assert!(
        lines.iter().all(|l| !l.contains("leased by alice ")),
        "alice conflicts with herself: {err:?}"
    );
    assert_eq!(
        all_leases(env, &root),
        before,
        "a refused take changed leases"
    );

    // An exclusive lease refuses shared ones that overlap it, and other
    // exclusive ones, but not a path beside it.
    ok_in(env, &root, "kd", &take_args("dave", &["src/a.rs"]));
    let err = exit1_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["src/*.rs", "--shared"]),
    );
    let lines = refused_take_lines(&err, 1, "bob shared over dave's");
    assert!(lines[0].contains("leased by dave "), "{err:?}");
    exit1_in(env, &root, "kc", &take_args("carol", &["src/a.rs"]));
    ok_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["src/b.rs", "--shared"]),
    );
    ok_in(
        env,
        &root,
        "kc",
        &take_args("carol", &["src/b.rs", "--shared"]),
    );
    assert_eq!(
        live_pairs(env, &root),
        vec![
            ("alice".into(), "README.md".into(), false),
            ("bob".into(), "README.md".into(), false),
            ("bob".into(), "src/b.rs".into(), false),
            ("carol".into(), "*.md".into(), false),
            ("carol".into(), "src/b.rs".into(), false),
            ("dave".into(), "src/a.rs".into(), true),
        ]
    );
    // Once the shared holders release, the exclusive lease is granted.
    for (key, who) in [("ka", "alice"), ("kb", "bob")] {
        ok_in(
            env,
            &root,
            key,
            &["--from", who, "lease", "release", "README.md"],
        );
    }
    let err = exit1_in(env, &root, "kd", &take_args("dave", &["README.md"]));
    let lines = refused_take_lines(&err, 1, "dave, carol's *.md left");
    assert!(lines[0].contains("leased by carol "), "{err:?}");
    ok_in(
        env,
        &root,
        "kc",
        &["--from", "carol", "lease", "release", "*.md"],
    );
    ok_in(env, &root, "kd", &take_args("dave", &["README.md"]));
}

fn force_takes_over_and_mails_the_old_holder(env: &Env) {
    let root = repo(env, "repo");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "slow refactor"]),
    );
    ok_in(env, &root, "kc", &take_args("carol", &["docs/x.md"]));
    // Nothing for alice or carol yet.
    let quiet = ok_in(env, &root, "ka", &["--from", "alice", "inbox", "check"]);
    assert!(
        !quiet.contains("took over"),
        "alice was told before anything happened: {quiet:?}"
    );

    let out = ok_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["src/", "--force", "--reason", "urgent fix"]),
    );
    assert!(
        out.contains("took over 'src/a.rs' from alice"),
        "bob's output: {out:?}"
    );
    assert!(out.contains("leased 'src/**'"), "bob's output: {out:?}");
    assert_eq!(
        live_pairs(env, &root),
        vec![
            ("bob".into(), "src/**".into(), true),
            ("carol".into(), "docs/x.md".into(), true),
        ]
    );
    let all = all_leases(env, &root);
    let old = all
        .iter()
        .find(|l| l["holder"] == "alice")
        .expect("alice's lease row");
    assert_eq!(old["live"], false, "{old}");
    assert!(old["released_at"].is_string(), "{old}");

    let inbox = ok_in(env, &root, "ka", &["--from", "alice", "inbox", "check"]);
    let line = inbox
        .lines()
        .find(|l| l.contains("took over"))
        .unwrap_or_else(|| panic!("alice was not told: {inbox:?}"));
    assert!(
        line.contains("from=\"bob\"") && line.contains("src/a.rs") && line.contains("urgent fix"),
        "the take-over mail: {line:?}"
    );
    // carol, not in the way, was told nothing.
    let carol = ok_in(env, &root, "kc", &["--from", "carol", "inbox", "check"]);
    assert!(!carol.contains("took over"), "carol was told: {carol:?}");

    // alice is now refused by bob's lease, as anybody would be.
    let err = exit1_in(env, &root, "ka", &take_args("alice", &["src/a.rs"]));
    refused_take_lines(&err, 1, "alice after the take-over");
    assert!(err.contains("leased by bob "), "{err:?}");
}

fn release_without_paths_releases_all_of_mine(env: &Env) {
    let root = repo(env, "repo");
    let other = repo(env, "other");
    ok_in(env, &root, "ka", &take_args("alice", &["src/a.rs"]));
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["docs/", "--shared"]),
    );
    ok_in(env, &other, "ka", &take_args("alice", &["README.md"]));
    ok_in(env, &root, "kb", &take_args("bob", &["src/b.rs"]));
    ok_in(env, &other, "kb", &take_args("bob", &["src/b.rs"]));

    let out = ok_in(env, &root, "ka", &["--from", "alice", "lease", "release"]);
    let mut released: Vec<&str> = out.lines().collect();
    released.sort_unstable();
    assert_eq!(
        released,
        vec![
            "released 'README.md'",
            "released 'docs/**'",
            "released 'src/a.rs'"
        ],
        "release: {out:?}"
    );
    let all = all_leases(env, &root);
    assert_eq!(all.len(), 5);
    for l in &all {
        let alice = l["holder"] == "alice";
        assert_eq!(l["live"], !alice, "{l}");
        assert_eq!(l["released_at"].is_string(), alice, "{l}");
    }
    // Nothing left: a second release says so and succeeds.
    let out = ok_in(env, &root, "ka", &["--from", "alice", "lease", "release"]);
    assert_eq!(out, "no leases to release\n");
    assert_eq!(all_leases(env, &root), all);

    // With paths, only those (in this project).
    ok_in(env, &root, "kb", &take_args("bob", &["src/d.rs"]));
    let out = ok_in(
        env,
        &root,
        "kb",
        &["--from", "bob", "lease", "release", "src/b.rs"],
    );
    assert_eq!(out, "released 'src/b.rs'\n");
    assert_eq!(
        live_pairs(env, &root),
        vec![("bob".into(), "src/d.rs".into(), true)]
    );
    assert_eq!(
        live_pairs(env, &other),
        vec![("bob".into(), "src/b.rs".into(), true)]
    );
    // Released paths are free for others again.
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/b.rs", "src/a.rs"]),
    );
}

fn json_output_parses(env: &Env) {
    let root = repo(env, "repo");
    let out = ok_in(
        env,
        &root,
        "ka",
        &take_args(
            "alice",
            &[
                "src/a.rs",
                "src/store",
                "--ttl",
                "30m",
                "--reason",
                "json",
                "--json",
            ],
        ),
    );
    let v = json(&out, "lease take --json");
    let granted = v["granted"].as_array().expect("granted");
    assert_eq!(granted.len(), 2, "{v}");
    assert_eq!(v["taken_over"], serde_json::json!([]), "{v}");
    let patterns: Vec<&str> = granted
        .iter()
        .map(|l| l["pattern"].as_str().expect("pattern"))
        .collect();
    assert_eq!(patterns, vec!["src/a.rs", "src/store/**"]);
    for l in granted {
        assert_eq!(l["holder"], "alice", "{l}");
        assert_eq!(l["exclusive"], true, "{l}");
        assert_eq!(l["reason"], "json", "{l}");
        assert_eq!(l["live"], true, "{l}");
        assert!(l["released_at"].is_null(), "{l}");
        assert_eq!(
            l["project"].as_str(),
            root.to_str(),
            "the project is the git root: {l}"
        );
        let t = |k: &str| {
            chrono::DateTime::parse_from_rfc3339(l[k].as_str().expect(k))
                .unwrap_or_else(|e| panic!("{k} is not RFC 3339 ({e}): {l}"))
        };
        let ttl = (t("expires_at") - t("created_at")).num_seconds();
        assert!((1795..=1805).contains(&ttl), "--ttl 30m gave {ttl}s: {l}");
    }

    let list = json(
        &ok_in(env, &root, "p", &["lease", "list", "--json"]),
        "list",
    );
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(list[0]["pattern"], "src/a.rs", "{list}");

    // A refused take in JSON: the conflicts on stdout, still exit 1.
    let out = run_in(env, &root, "kb", &take_args("bob", &["src/**", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_of(&out));
    let v = json(&stdout_of(&out), "refused lease take --json");
    assert_eq!(v["granted"], serde_json::json!([]), "{v}");
    let conflicts = v["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 2, "{v}");
    assert!(
        conflicts
            .iter()
            .all(|c| c["wanted"] == "src/**" && c["lease"]["holder"] == "alice"),
        "{v}"
    );

    // check --json: the blocked paths with their leases.
    let out = run_in(
        env,
        &root,
        "nobody",
        &[
            "lease",
            "check",
            "--json",
            "src/a.rs",
            "src/b.rs",
            "src/store/mod.rs",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_of(&out));
    let v = json(&stdout_of(&out), "lease check --json");
    let paths: Vec<&str> = v
        .as_array()
        .expect("check --json is an array")
        .iter()
        .map(|b| b["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, vec!["src/a.rs", "src/store/mod.rs"], "{v}");
    assert!(v[1]["lease"]["pattern"] == "src/store/**", "{v}");
    let out = run_in(
        env,
        &root,
        "nobody",
        &["lease", "check", "--json", "src/b.rs"],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_of(&out));
    assert_eq!(
        json(&stdout_of(&out), "check --json, free"),
        serde_json::json!([])
    );

    // release --json, and the ended leases in list --all --json.
    let out = ok_in(
        env,
        &root,
        "ka",
        &["--from", "alice", "lease", "release", "--json", "src/a.rs"],
    );
    let v = json(&out, "lease release --json");
    let rel = v["released"].as_array().expect("released");
    assert_eq!(rel.len(), 1, "{v}");
    assert_eq!(rel[0]["pattern"], "src/a.rs", "{v}");
    let all = all_leases(env, &root);
    assert_eq!(all.len(), 2);
    assert!(all[0]["released_at"].is_string() && all[0]["live"] == false);
    assert!(all[1]["released_at"].is_null() && all[1]["live"] == true);

    // install-hook --json.
    let v = json(
        &ok_in(env, &root, "x", &["lease", "install-hook", "--json"]),
        "install-hook --json",
    );
    assert!(
        v["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("installed the lease guard")),
        "{v}"
    );
    let v = json(
        &ok_in(
            env,
            &root,
            "x",
            &["lease", "install-hook", "--remove", "--json"],
        ),
        "install-hook --remove --json",
    );
    assert!(
        v["outcome"].as_str().is_some_and(|o| o.contains("removed")),
        "{v}"
    );
}

fn bad_input_is_refused_and_changes_nothing(env: &Env) {
    let root = repo(env, "repo");
    let sub = root.join("src");
    let outside = env.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "held"]),
    );
    register(env, "bob");
    let state = |env: &Env| (snapshot(env), all_leases(env, &root));

    let abs_outside = outside.join("x.rs");
    let abs_outside = abs_outside.to_str().expect("utf-8 path");
    let (r, s, o) = (root.as_path(), sub.as_path(), outside.as_path());
    let cases: Vec<(&str, &Path, &str, Vec<&str>, i32)> = vec![
        (
            "absolute outside",
            r,
            "kb",
            take_args("bob", &[abs_outside]),
            2,
        ),
        (
            "/etc/passwd",
            r,
            "kb",
            take_args("bob", &["/etc/passwd"]),
            2,
        ),
        ("../outside", r, "kb", take_args("bob", &["../outside"]), 2),
        (
            "../../ from src",
            s,
            "kb",
            take_args("bob", &["../../outside"]),
            2,
        ),
        ("empty path", r, "kb", take_args("bob", &[""]), 2),
        ("blank path", r, "kb", take_args("bob", &["  "]), 2),
        (
            "control char",
            r,
            "kb",
            take_args("bob", &["src/\u{1}x"]),
            2,
        ),
        (
            "one bad among good",
            r,
            "kb",
            take_args("bob", &["src/b.rs", "../outside"]),
            2,
        ),
        (
            "--ttl 0",
            r,
            "kb",
            take_args("bob", &["src/b.rs", "--ttl", "0"]),
            2,
        ),
        (
            "--ttl banana",
            r,
            "kb",
            take_args("bob", &["src/b.rs", "--ttl", "banana"]),
            2,
        ),
        (
            "bad reason",
            r,
            "kb",
            take_args("bob", &["src/b.rs", "--reason", "a \"quoted\" reason"]),
            2,
        ),
        (
            "bad --from",
            r,
            "kb",
            vec!["--from", "Not A Name", "lease", "take", "src/b.rs"],
            2,
        ),
        (
            "take, no session",
            r,
            "nobody",
            vec!["lease", "take", "src/b.rs"],
            1,
        ),
        (
            "release, no session",
            r,
            "nobody",
            vec!["lease", "release"],
            1,
        ),
        (
            "release, no session, path",
            r,
            "nobody",
            vec!["lease", "release", "src/a.rs"],
            1,
        ),
        (
            "release, not mine",
            r,
            "kb",
            vec!["--from", "bob", "lease", "release", "src/a.rs"],
            1,
        ),
        (
            "check, nothing to check",
            r,
            "kb",
            vec!["lease", "check"],
            2,
        ),
        (
            "check outside",
            r,
            "kb",
            vec!["lease", "check", "../outside"],
            2,
        ),
        (
            "install-hook outside git",
            o,
            "kb",
            vec!["lease", "install-hook"],
            1,
        ),
    ];
    for (what, dir, key, args, code) in cases {
        let before = state(env);
        let out = run_in(env, dir, key, &args);
        let line = refused(&out, code, what);
        assert!(
            !line.contains("panicked") && line.len() < 400,
            "{what}: not one clear line: {line:?}"
        );
        assert_eq!(state(env), before, "{what}: something changed");
        if what.contains("no session") {
            assert!(line.contains(NOT_CONNECTED), "{what}: {line:?}");
        }
        if what.contains("outside") && what != "install-hook outside git" {
            assert!(line.contains("outside the project"), "{what}: {line:?}");
        }
    }
    // alice's lease is untouched by all of that.
    assert_eq!(
        live_pairs(env, &root),
        vec![("alice".into(), "src/a.rs".into(), true)]
    );
}

fn check_lists_only_others_exclusive_leases(env: &Env) {
    let root = repo(env, "repo");
    let sub = root.join("src");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "mine"]),
    );
    ok_in(
        env,
        &root,
        "kb",
        &take_args("bob", &["src/b.rs", "--shared"]),
    );
    ok_in(
        env,
        &root,
        "kc",
        &take_args("carol", &["docs/", "--reason", "docs"]),
    );
    // dave is connected: his session key alone identifies him.
    let _dave = monitor_up(env, "kd", "dave");
    ok_in(env, &root, "kd", &["lease", "take", "src/d.rs"]);

    let files = ["src/a.rs", "src/b.rs", "src/d.rs", "docs/x.md", "README.md"];
    let check = |key: &str, from: Option<&str>, dir: &Path, paths: &[&str]| {
        let mut args: Vec<&str> = Vec::new();
        if let Some(f) = from {
            args.extend(["--from", f]);
        }
        args.extend(["lease", "check"]);
        args.extend_from_slice(paths);
        run_in(env, dir, key, &args)
    };
    // Blocked lines: (path, holder), sorted.
    let blocked = |out: &Output| {
        let mut v: Vec<(String, String)> = conflict_lines(&stderr_of(out))
            .iter()
            .map(|l| {
                let (path, rest) = l.split_once(": leased by ").expect("a conflict line");
                let holder = rest.split_whitespace().next().unwrap_or_default();
                (path.to_string(), holder.to_string())
            })
            .collect();
        v.sort();
        v
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };

    // No session: every exclusive lease counts, shared ones never do.
    let out = check("nobody", None, &root, &files);
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_of(&out));
    assert_eq!(
        blocked(&out),
        pairs(&[
            ("docs/x.md", "carol"),
            ("src/a.rs", "alice"),
            ("src/d.rs", "dave")
        ]),
        "{:?}",
        stderr_of(&out)
    );
    let err = stderr_of(&out);
    let a_line = err
        .lines()
        .find(|l| l.starts_with("src/a.rs:"))
        .expect("a line");
    assert!(
        a_line.contains("mine") && a_line.contains("inter-session mail ask --to alice "),
        "{a_line:?}"
    );

    // As alice (--from): her own lease does not block her.
    let out = check("ka", Some("alice"), &root, &files);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        blocked(&out),
        pairs(&[("docs/x.md", "carol"), ("src/d.rs", "dave")])
    );
    let out = check(
        "ka",
        Some("alice"),
        &root,
        &["src/a.rs", "src/b.rs", "README.md"],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "{:?}", stderr_of(&out));

    // As bob: his shared lease blocks nobody, alice's exclusive one blocks him.
    let out = check("kb", Some("bob"), &root, &["src/b.rs"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_of(&out));
    let out = check("kb", Some("bob"), &root, &["src/b.rs", "src/a.rs"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(blocked(&out), pairs(&[("src/a.rs", "alice")]));

    // As dave, by his session key only.
    let out = check("kd", None, &root, &["src/d.rs", "src/b.rs"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_of(&out));
    let out = check("kd", None, &root, &["src/d.rs", "src/a.rs"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(blocked(&out), pairs(&[("src/a.rs", "alice")]));

    // Paths relative to the working folder, and absolute ones inside.
    let abs = root.join("docs/x.md");
    let out = check(
        "nobody",
        None,
        &sub,
        &["a.rs", "./b.rs", abs.to_str().expect("utf-8")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        blocked(&out),
        pairs(&[("docs/x.md", "carol"), ("src/a.rs", "alice")])
    );

    // Once released, nothing blocks.
    ok_in(env, &root, "ka", &["--from", "alice", "lease", "release"]);
    ok_in(env, &root, "kc", &["--from", "carol", "lease", "release"]);
    let out = check(
        "nobody",
        None,
        &root,
        &["src/a.rs", "docs/x.md", "src/b.rs"],
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_of(&out));
    assert!(out.stderr.is_empty(), "{:?}", stderr_of(&out));
}

fn paths_name_the_same_lease_however_given(env: &Env) {
    let root = repo(env, "repo");
    let sub = root.join("src");
    // The project reached through a symlink, as a shell `cd`ed into it
    // sees it (macOS's /tmp is one): absolute paths through it are still
    // inside the project.
    let link = env.tmp.path().join("link");
    std::os::unix::fs::symlink(&root, &link).expect("symlink");
    let link_sub = link.join("src");
    ok_in(
        env,
        &root,
        "ka",
        &take_args("alice", &["src/a.rs", "--reason", "held"]),
    );
    let before = all_leases(env, &root);
    assert_eq!(before[0]["project"].as_str(), root.to_str(), "{before:?}");

    let abs = root.join("src/a.rs");
    let abs = abs.to_str().expect("utf-8");
    let via_link = link.join("src/a.rs");
    let via_link = via_link.to_str().expect("utf-8");
    let spellings: &[(&str, &Path, &str)] = &[
        ("from the root", &root, "src/a.rs"),
        ("with ./", &root, "./src/./a.rs"),
        ("through ..", &root, "src/store/../a.rs"),
        ("from src", &sub, "a.rs"),
        ("from src, ../", &sub, "../src/a.rs"),
        ("absolute", &sub, abs),
        ("relative, cwd through the symlink", &link_sub, "a.rs"),
        ("absolute through the symlink, cwd real", &sub, via_link),
        ("absolute through the symlink, cwd too", &link_sub, via_link),
    ];
    for (what, dir, path) in spellings {
        let out = run_in(env, dir, "kb", &take_args("bob", &[path]));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: bob's take of {path:?} in {dir:?} was not refused by alice's lease: {:?}",
            stderr_of(&out)
        );
        let lines = refused_take_lines(&stderr_of(&out), 1, what);
        assert!(lines[0].contains("leased by alice "), "{what}: {lines:?}");
        let out = run_in(env, dir, "nobody", &["lease", "check", path]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: lease check {path:?} in {dir:?}: {:?}",
            stderr_of(&out)
        );
        assert!(
            stderr_of(&out).starts_with("src/a.rs: leased by alice "),
            "{what}: {:?}",
            stderr_of(&out)
        );
        assert_eq!(all_leases(env, &root), before, "{what}: leases changed");
    }
}

/// The argv a shell makes of `inter-session <rest>`: `rest` run through
/// `sh -c` as arguments of printf (None when the shell cannot parse it).
fn shell_words(command: &str) -> Option<Vec<String>> {
    let rest = command.strip_prefix("inter-session ")?;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {rest}"))
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|w| !w.is_empty())
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect(),
    )
}

/// `want` conflict lines and one closing line on stderr, none with a
/// control character in it, and each conflict line's `ask them:` command
/// one a shell runs as `inter-session mail ask --to <holder> --text <one
/// word>`.
fn assert_safe_conflict_lines(err: &str, want: usize, closing: usize, holder: &str, what: &str) {
    assert_eq!(
        err.lines().count(),
        want + closing,
        "{what}: one line per file and {closing} closing line(s): {err:?}"
    );
    let conflicts = conflict_lines(err);
    assert_eq!(
        conflicts.len(),
        want,
        "{what}: want {want} conflict lines: {err:?}"
    );
    for l in err.lines() {
        assert!(
            !l.chars().any(char::is_control),
            "{what}: a control character reached stderr: {l:?}"
        );
    }
    for l in conflicts {
        let (_, ask) = l
            .split_once("ask them: ")
            .unwrap_or_else(|| panic!("{what}: no `ask them:` in {l:?}"));
        let words = shell_words(ask)
            .unwrap_or_else(|| panic!("{what}: the suggested command is not valid shell: {ask:?}"));
        assert_eq!(
            words.get(..5).map(|w| w.join(" ")),
            Some(format!("mail ask --to {holder} --text")),
            "{what}: {ask:?} parses as {words:?}"
        );
        assert_eq!(words.len(), 6, "{what}: {ask:?} parses as {words:?}");
    }
}

fn hostile_file_names_stay_one_safe_line_each(env: &Env) {
    let root = repo(env, "repo");
    ok_in(
        env,
        &root,
        "kc",
        &take_args("carol", &["docs/", "--reason", "docs"]),
    );
    let names = ["docs/it's.md", "docs/a\nb.md", "docs/e\u{1b}[31mred.md"];
    for n in names {
        std::fs::write(root.join(n), "x").expect("write a hostile name");
    }
    git(env, &root, &["add", "docs"]);

    let out = run_in(env, &root, "nobody", &["lease", "check", "--staged"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_of(&out));
    assert_safe_conflict_lines(&stderr_of(&out), 3, 1, "carol", "check --staged");

    // The same through the guard a commit runs.
    ok_in(env, &root, "x", &["lease", "install-hook"]);
    let before = head(env, &root);
    let out = git_cmd(env, &root, "nobody")
        .args(["commit", "-q", "-m", "hostile"])
        .output()
        .expect("git commit");
    assert!(!out.status.success(), "the commit went through");
    assert_eq!(head(env, &root), before);
    assert_safe_conflict_lines(&stderr_of(&out), 3, 1, "carol", "the pre-commit guard");

    // And a refused take of a name with a quote in it.
    let err = exit1_in(env, &root, "kb", &take_args("bob", &["docs/it's.md"]));
    assert_safe_conflict_lines(&err, 1, 0, "carol", "take docs/it's.md");
}

fn a_left_session_is_never_granted_a_dead_lease(env: &Env) {
    let root = repo(env, "repo");
    ok_in(env, &root, "ka", &take_args("alice", &["src/a.rs"]));
    ok_in(env, &root, "ka", &["--from", "alice", "disconnect"]);
    assert_eq!(live_pairs(env, &root), vec![], "alice's lease outlived her");

    // A script still speaking as alice: either refused, or granted a lease
    // that really holds. "leased" for a lease that is dead on arrival would
    // tell the script the files are its own while anybody may change them.
    let out = run_in(env, &root, "ka", &take_args("alice", &["src/b.rs"]));
    if out.status.success() {
        assert_eq!(
            live_pairs(env, &root),
            vec![("alice".into(), "src/b.rs".into(), true)],
            "`lease take` as the left alice said {:?}, but the lease is not live",
            stdout_of(&out)
        );
        let out = run_in(env, &root, "nobody", &["lease", "check", "src/b.rs"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "alice's new lease blocks nobody"
        );
    } else {
        refused(&out, 1, "lease take as a left session");
        assert_eq!(live_pairs(env, &root), vec![]);
    }
}
