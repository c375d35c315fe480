//! `inbox wait` (issue 21, must-hold 3): the background waiter a Gemini CLI
//! agent starts. It exits as soon as mail is pending, printing it in the
//! monitor's lines, and marks it delivered (receipt `wait`) only once it is
//! written; under Gemini CLI it refuses to run unless the host hands a
//! background command's output to the model.

mod support;

use std::process::{Output, Stdio};
use std::time::Duration;

use support::*;

fn via(env: &Env, id: &str) -> String {
    env.sql(&format!(
        "select coalesce(delivered_via, 'pending') from history where id = '{id}'"
    ))
}

fn alice_offline(env: &Env) {
    let m = monitor_up(env, "ka", "alice");
    assert_eq!(m.stop(), Some(0));
    env.wait_state("alice", "offline");
}

fn wait_cmd(env: &Env, args: &[&str]) -> std::process::Command {
    let mut c = env.cmd("ka");
    c.args(["inbox", "wait"]).args(args).stdin(Stdio::null());
    c
}

#[test]
fn wait_once_prints_the_mail_when_it_comes_and_marks_it() {
    let env = Env::new();
    alice_offline(&env);
    let child = spawn_piped(wait_cmd(&env, &["--once"]));
    let id = send_as(&env, "bob", "alice", "wake up\nnow");
    let (out, _) = finish(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout_of(&out),
        format!("[inter-session msg={id} from=\"bob\"] wake up\u{21b5}now\n")
    );
    assert_eq!(via(&env, &id), "wait");
    // Mail already waiting: at once.
    let id = send_as(&env, "bob", "alice", "already here");
    let out = wait_cmd(&env, &["--once"]).output().expect("run");
    assert!(stdout_of(&out).contains(&id), "{out:?}");
    assert_eq!(via(&env, &id), "wait");
}

#[test]
fn nothing_within_the_timeout_is_124_and_a_monitor_keeps_its_mail() {
    let env = Env::new();
    alice_offline(&env);
    let out = wait_cmd(&env, &["--once", "--timeout", "1s"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(out.stdout.is_empty());
    // While alice's monitor runs, the waiter leaves her mail to it.
    let mut m = monitor_up(&env, "ka", "alice");
    let id = send_as(&env, "bob", "alice", "for the monitor");
    expect_msg(&mut m, &id);
    let out = wait_cmd(&env, &["--once", "--timeout", "1s"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    wait_for("the monitor's mark", || pending_count(&env) == 0);
    assert_eq!(via(&env, &id), "monitor");
    assert_eq!(m.stop(), Some(0));
    // Not connected: the usual one line.
    let out = env.run("nobody", &["inbox", "wait", "--once", "--timeout", "1s"]);
    let line = refused(&out, 1, "a waiter that is not connected");
    assert!(line.contains("not connected"), "{line}");
}

fn gemini_wait(env: &Env, home: &std::path::Path) -> Output {
    wait_cmd(env, &["--once", "--timeout", "1s"])
        .env("GEMINI_CLI", "1")
        .env("GEMINI_CLI_HOME", home)
        .output()
        .expect("run")
}

#[test]
fn under_gemini_it_refuses_without_the_settings_that_inject_its_output() {
    let env = Env::new();
    alice_offline(&env);
    let id = send_as(&env, "bob", "alice", "must not be lost");
    let home = env.tmp.path().join("gemini-home");
    let settings = home.join(".gemini");
    std::fs::create_dir_all(&settings).expect("dir");
    // No settings file, then one with only one of the two settings.
    let out = gemini_wait(&env, &home);
    let line = refused(&out, 1, "inbox wait without Gemini's inject settings");
    assert!(line.contains("backgroundCompletionBehavior"), "{line}");
    write_file(
        &settings,
        "settings.json",
        br#"{"tools":{"shell":{"backgroundCompletionBehavior":"inject"}}}"#,
    );
    refused(&gemini_wait(&env, &home), 1, "only one of the two settings");
    // A settings file we cannot parse: one line naming it.
    write_file(&settings, "settings.json", b"{\"tools\": ");
    let line = refused(&gemini_wait(&env, &home), 1, "unparsable settings");
    assert!(line.contains("settings.json"), "{line}");
    assert_eq!(via(&env, &id), "pending");
    // Both (with comments, as Gemini allows): it runs and delivers.
    write_file(
        &settings,
        "settings.json",
        b"{ // ours\n \"tools\": {\"shell\": {\"backgroundCompletionBehavior\": \"inject\"}},\n \"experimental\": {\"modelSteering\": true} }",
    );
    let out = gemini_wait(&env, &home);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout_of(&out).contains(&id), "{out:?}");
    assert_eq!(via(&env, &id), "wait");
}
