//! Guards against mail consumed by nobody and against acting as a live
//! session of another key (issue 18: must-holds 3, 6 and 7's waiting
//! monitor). Real binary, temp data folder, real monitor processes.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// Mail waiting for `name`, as the `pending` view has it.
fn pending_for(env: &Env, name: &str) -> String {
    env.sql(&format!(
        "select count(*) from pending where recipient = '{name}'"
    ))
}

#[test]
fn a_monitor_whose_stdout_is_dev_null_or_closed_refuses_and_marks_nothing() {
    let env = Env::new();
    register(&env, "alice");
    send_as(&env, "bob", "alice", "nobody may swallow this");
    assert_eq!(pending_for(&env, "alice"), "1");

    let out = env
        .cmd("k-alice")
        .args(["inbox", "watch", "--pace", "off", "--name", "alice"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .expect("run the monitor");
    let line = refused(&out, 1, "monitor on /dev/null");
    assert!(line.contains("/dev/null"), "{line}");
    assert_eq!(pending_for(&env, "alice"), "1", "mail was consumed");

    // stdout closed outright (fd 1 not open at all).
    let mut c = env.cmd("k-alice");
    c.args(["inbox", "watch", "--pace", "off", "--name", "alice"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only close(2) is called.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let out = run_within(c);
    assert_eq!(out.status.code(), Some(1), "monitor with stdout closed");
    // Rust's start-up puts /dev/null on a closed standard descriptor, so
    // the refusal may name either.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stdout is closed") || err.contains("stdout is /dev/null"),
        "{err}"
    );
    assert_eq!(pending_for(&env, "alice"), "1", "mail was consumed");
    assert_eq!(session(&env, "alice")["state"], "offline");

    // A real reader still gets it.
    let mut alice = env.monitor("k-alice", &["--name", "alice"]);
    assert!(alice.line().ends_with("nobody may swallow this"));
}

/// Whether process `pid` has a handler installed for `sig` (SigCgt).
fn catches(pid: u32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

#[test]
fn a_second_monitor_waiting_for_a_busy_key_ends_promptly_on_sigterm() {
    let env = Env::new();
    let mut first = env.monitor("k-1", &["--name", "alice"]);
    env.wait_online("alice");
    for sig in [libc::SIGTERM, libc::SIGHUP] {
        let mut second = env.monitor("k-1", &["--name", "alice"]);
        // It waits for the key's lock (up to 2 s) before saying anything;
        // it is ready for the signal once /proc shows it caught.
        wait_for("the second monitor to catch signals", || {
            catches(second.child.id(), sig)
        });
        let asked = Instant::now();
        second.signal(sig);
        let st = second
            .wait_exit(Duration::from_secs(5))
            .expect("the waiting monitor did not exit");
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "signal {sig}: took {:?} to exit while waiting",
            asked.elapsed()
        );
        assert_eq!(st.code(), Some(0), "signal {sig}");
        assert!(second.rest(Duration::from_secs(1)).is_empty());
    }
    // The first is untouched and still delivers.
    let id = send_as(&env, "bob", "alice", "still here");
    expect_msg(&mut first, &id);
}

#[test]
fn from_may_not_act_as_a_live_session_of_another_key_unless_forced() {
    let env = Env::new();
    let mut alice = monitor_up(&env, "k-alice", "alice");
    let id = send_as(&env, "bob", "alice", "for alice's eyes");
    expect_msg(&mut alice, &id);
    for (args, what) in [
        (vec!["rename", "mallory"], "rename"),
        (vec!["relabel", "owned"], "relabel"),
        (vec!["disconnect"], "disconnect"),
        (vec!["inbox", "check"], "inbox check"),
    ] {
        let mut full = vec!["--from", "alice"];
        full.extend(&args);
        let line = refused(&env.run("k-other", &full), 1, what);
        assert!(
            line.contains("'alice' is online under another session") && line.contains("--force"),
            "{what}: {line}"
        );
    }
    let s = session(&env, "alice");
    assert_eq!(
        (s["name"].as_str(), s["label"].as_str(), s["state"].as_str()),
        (Some("alice"), Some(""), Some("online"))
    );
    // Its own key may; an offline mailbox may be acted as by anyone.
    env.ok("k-alice", &["relabel", "mine"]);
    env.ok("k-other", &["--from", "bob", "relabel", "bobs"]);

    // --force does it, and the owner's monitor is told.
    let out = env.ok(
        "k-other",
        &["--from", "alice", "--force", "relabel", "forced"],
    );
    assert!(out.contains("forced"), "{out}");
    let note = alice.until(Duration::from_secs(10), |l| l.contains("operator"));
    assert!(
        note.contains("from=\"alice\"") && note.contains("`inter-session relabel`"),
        "{note}"
    );
    assert_eq!(session(&env, "alice")["label"], "forced");
    // A forced drain takes the mail, and then the note waits for alice.
    let id = send_as(&env, "bob", "alice", "drained");
    expect_msg(&mut alice, &id);
    // Printed is not yet marked: the monitor marks a line once its reader
    // took it (until then a drain would repeat it, by design).
    wait_for("alice's monitor to mark what it printed", || {
        pending_count(&env) == 0
    });
    let out = env.ok("k-other", &["--from", "alice", "--force", "inbox", "check"]);
    assert!(
        !out.contains("drained"),
        "already delivered mail came again: {out}"
    );
    let note = alice.until(Duration::from_secs(10), |l| l.contains("operator"));
    assert!(note.contains("`inter-session inbox check`"), "{note}");
    // --force without --from is a usage error.
    let out = env.run("k-other", &["--force", "relabel", "x"]);
    assert_eq!(out.status.code(), Some(2), "--force alone");
}

/// Runs the binary as an unprivileged user in a folder of its own: as root,
/// as `nobody` (root writes through any file mode, so a read-only folder
/// would not be read-only to it), from a copy of the binary that `nobody`
/// can reach.
struct Unprivileged {
    _tmp: tempfile::TempDir,
    bin: std::path::PathBuf,
    home: std::path::PathBuf,
    data: std::path::PathBuf,
    uid: Option<u32>,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).expect("home");
        // SAFETY: geteuid cannot fail.
        let uid = (unsafe { libc::geteuid() } == 0).then_some(65534);
        let bin = tmp.path().join("inter-session");
        std::fs::copy(BIN, &bin).expect("copy the binary");
        for (p, mode) in [
            (tmp.path(), 0o755),
            (home.as_path(), 0o777),
            (bin.as_path(), 0o755),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        Unprivileged {
            data: home.join("data"),
            _tmp: tmp,
            bin,
            home,
            uid,
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("CLAUDE") || k.starts_with("INTER_SESSION") {
                c.env_remove(k);
            }
        }
        c.env("INTER_SESSION_DATA_DIR", &self.data)
            .env("INTER_SESSION_KEY", "k-script")
            .env("HOME", &self.home)
            .current_dir(&self.home)
            .args(args)
            .stdin(Stdio::null());
        if let Some(uid) = self.uid {
            c.uid(uid).gid(65534);
        }
        run_within(c)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// chmod as the owner would.
    fn chmod(&self, path: &std::path::Path, mode: u32) {
        let out = self.run(&["--version"]);
        assert!(out.status.success());
        let mut c = std::process::Command::new("chmod");
        c.arg(format!("{mode:o}")).arg(path);
        if let Some(uid) = self.uid {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(65534);
        }
        assert!(c.status().expect("chmod").success(), "chmod {path:?}");
    }
}

#[test]
fn a_read_only_folder_still_serves_reads_and_a_stale_read_only_shm_heals() {
    let u = Unprivileged::new();
    u.ok(&["--from", "alice", "status"]);
    let sent = u.ok(&[
        "--from", "bob", "mail", "send", "--to", "alice", "--text", "kept",
    ]);
    let id = sent_id(&sent);

    // The folder read-only: reads work, a write says read-only, nothing lost.
    u.chmod(&u.data, 0o500);
    let list = u.ok(&["list"]);
    assert!(list.contains("alice") && list.contains("bob"), "{list}");
    let history = u.ok(&["history", "--everyone"]);
    assert!(history.contains("kept"), "{history}");
    assert_eq!(u.ok(&["sql", "select count(*) from messages"]).trim(), "1");
    assert_eq!(u.ok(&["inbox", "read", &id]).trim_end(), "kept");
    let out = u.run(&[
        "--from", "bob", "mail", "send", "--to", "alice", "--text", "more",
    ]);
    let line = refused(&out, 1, "a send into a read-only folder");
    assert!(line.contains("read-only"), "{line}");
    u.chmod(&u.data, 0o700);

    // The database read-only for a while: a read leaves -wal/-shm with its
    // mode; once it is writable again, writes work again.
    let db = u.data.join("mailbox.db");
    u.chmod(&db, 0o400);
    assert!(u.ok(&["list"]).contains("alice"));
    u.chmod(&db, 0o600);
    u.ok(&[
        "--from", "bob", "mail", "send", "--to", "alice", "--text", "after",
    ]);
    assert_eq!(u.ok(&["sql", "select count(*) from messages"]).trim(), "2");
}

/// Issue 20 (SPEC §7): the plugin's monitor (`inbox watch --auto`) is the
/// one Claude Code never restarts, so it never exits because another
/// monitor holds its session: it stands by, silent, and takes over when
/// that one ends; a signal ends it at once.
#[test]
fn the_plugin_monitor_stands_by_for_its_key_and_takes_over() {
    let env = Env::new();
    let mut first = monitor_up(&env, "k-1", "alice");
    let mut plugin = env.monitor("k-1", &["--auto"]);
    wait_for("the plugin monitor to catch signals", || {
        catches(plugin.child.id(), libc::SIGTERM)
    });
    let id = send_as(&env, "bob", "alice", "to the first");
    expect_msg(&mut first, &id);
    // Longer than any other monitor waits for its key (2 s): it says
    // nothing and stays.
    assert_eq!(plugin.next_line(Duration::from_millis(2500)), None);
    assert!(
        plugin.child.try_wait().expect("wait").is_none(),
        "it exited"
    );

    // The first one ends: the plugin monitor takes the session over.
    assert_eq!(first.stop(), Some(0));
    up(&env, &plugin, "alice");
    let id = send_as(&env, "bob", "alice", "to the plugin monitor");
    expect_msg(&mut plugin, &id);
    assert_eq!(plugin.stop(), Some(0));

    // Standing by, a SIGTERM ends it at once, silently.
    let first = monitor_up(&env, "k-1", "alice");
    let mut plugin = env.monitor("k-1", &["--auto"]);
    wait_for("the plugin monitor to catch signals", || {
        catches(plugin.child.id(), libc::SIGTERM)
    });
    plugin.signal(libc::SIGTERM);
    let st = plugin
        .wait_exit(Duration::from_secs(2))
        .expect("a standing-by monitor did not end on SIGTERM");
    assert_eq!(st.code(), Some(0));
    assert!(plugin.rest(Duration::from_secs(1)).is_empty());
    assert_eq!(session(&env, "alice")["monitor_pid"], first.child.id());
}
