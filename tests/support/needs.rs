//! What a test needs from the machine beyond the Rust toolchain (tmux, the
//! sqlite3 shell, PostgreSQL, the Claude Code CLI, openssl, root), and what
//! happens when it is absent.
//!
//! A newcomer's plain `cargo test` must be green on a machine with only the
//! Rust toolchain, and never silently thin. So a test that needs something
//! absent installs it where it can without root (the pinned Claude Code CLI,
//! with npm, into `target/claude-code`), else calls [`skip`] (or
//! [`skip_part`] for one part of a test), which prints one line
//!
//! ```text
//! *** SKIPPED <binary>::<test>: <what is missing and the command that installs it> ***
//! ```
//!
//! straight to stderr (past libtest's capture, so it shows although the test
//! passes), records it for the end-of-run list, and the test returns early.
//!
//! `INTER_SESSION_TEST_REQUIRE=all` (`.ci/run` exports it) turns every such
//! skip into a failure with the same text; a comma list of needs
//! (`tmux,postgres`) requires only those. The needs: `tmux`, `sqlite3`,
//! `postgres`, `claude-code`, `openssl`, and two that no command installs,
//! `root` and `loop-mount` (reliability's ownership and full-file-system
//! parts): those are informational, listed but never failed by `all`, only
//! when named.
//!
//! The end-of-run list: each skip appends a line to a file named after the
//! process that ran this test binary, i.e. the `cargo test` of this run (its
//! pid and start time, so a list left by an earlier run is never shown).
//! `tests/zz_skipped.rs`, which cargo runs after every other test binary (it
//! runs them in name order), prints that list after its own result and
//! removes the file.
//!
//! Finding things: tmux, the sqlite3 shell, npm and openssl on `PATH`; the
//! Claude Code CLI at `$INTER_SESSION_CLAUDE_BIN`, else in
//! `target/claude-code`; PostgreSQL in support/pg.rs (`/usr/lib/postgresql/*/bin`,
//! else `PATH`). To try the fresh-machine path where they are installed, run
//! with a `PATH` without them and `INTER_SESSION_TEST_PG_BIN=/nonexistent`
//! (a test-only override: only that folder is searched for initdb/pg_ctl).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The variable that turns skips into failures (`all`, or a comma list of needs).
pub const REQUIRE_VAR: &str = "INTER_SESSION_TEST_REQUIRE";
/// Needs no command can install: listed, failed only when named.
const INFORMATIONAL: [&str; 2] = ["root", "loop-mount"];

// ------------------------------------------------------------ skipping

/// Whether `INTER_SESSION_TEST_REQUIRE` makes a missing `need` a failure.
pub fn required(need: &str) -> bool {
    let Ok(v) = std::env::var(REQUIRE_VAR) else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|w| w == need || (w == "all" && !INFORMATIONAL.contains(&need)))
}

/// This test, as `<binary>::<test>` (libtest names each test's thread).
fn current_test() -> String {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => name,
        _ => "(a test run on the main thread)",
    };
    format!("{}::{test}", env!("CARGO_CRATE_NAME"))
}

/// Skip the rest of the current test: `need` is absent, `why` says what is
/// missing and the command that installs it. Prints the one line, records
/// it for the end-of-run list, and returns (the caller returns and passes),
/// or panics with the same line when `INTER_SESSION_TEST_REQUIRE` asks for
/// `need`.
pub fn skip(need: &str, why: &str) {
    skip_line(need, &current_test(), why);
}

/// Like [`skip`] for one `part` of the current test, which goes on.
pub fn skip_part(need: &str, part: &str, why: &str) {
    skip_line(need, &format!("{} ({part})", current_test()), why);
}

fn skip_line(need: &str, label: &str, why: &str) {
    let line = format!("*** SKIPPED {label}: {why} ***");
    if required(need) {
        panic!(
            "{line}\n({REQUIRE_VAR}={} makes a missing {need} a failure)",
            std::env::var(REQUIRE_VAR).unwrap_or_default()
        );
    }
    // Straight to the handle: libtest captures print! and eprint! only.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    record(need, label, why);
}

/// The folder of the end-of-run lists.
pub fn skipped_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped")
}

/// This run's list: named after the parent process (the `cargo test` that
/// runs every test binary of the run, one after another) and its start time.
pub fn skipped_file() -> PathBuf {
    // SAFETY: getppid cannot fail.
    let ppid = unsafe { libc::getppid() };
    let started = std::fs::read_to_string(format!("/proc/{ppid}/stat"))
        .ok()
        .and_then(|s| {
            // Field 22 of proc(5); the text after "(comm) " starts at field 3.
            let after = &s[s.rfind(')')? + 2..];
            after.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default();
    skipped_dir().join(format!("run-{ppid}-{started}.txt"))
}

fn record(need: &str, label: &str, why: &str) {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let row = format!("{}\t{}\t{}\n", clean(need), clean(why), clean(label));
    let _ = std::fs::create_dir_all(skipped_dir());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skipped_file())
    {
        // One write per row, so parallel tests never interleave inside one.
        let _ = f.write_all(row.as_bytes());
    }
}

/// The end-of-run list of this `cargo test`, as printed by tests/zz_skipped.rs
/// (and the file removed, with any list older than a day).
pub fn take_skipped_list() -> String {
    let file = skipped_file();
    let rows = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    if let Ok(dir) = std::fs::read_dir(skipped_dir()) {
        for e in dir.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Grouped by reason, in the order first seen.
    let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut total = 0;
    for row in rows.lines() {
        let mut f = row.splitn(3, '\t');
        let (Some(need), Some(why), Some(label)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        total += 1;
        match groups.iter_mut().find(|(n, w, _)| n == need && w == why) {
            Some((_, _, labels)) => labels.push(label.to_string()),
            None => groups.push((need.into(), why.into(), vec![label.into()])),
        }
    }
    if total == 0 {
        return "\n==== cargo test: nothing was skipped ====\n".to_string();
    }
    let mut out = format!(
        "\n==== cargo test: {total} SKIPPED (tests, or parts of one); \
         {REQUIRE_VAR}=all makes them fail ====\n"
    );
    for (need, why, labels) in groups {
        let note = if INFORMATIONAL.contains(&need.as_str()) {
            format!(" (informational: failed only by {REQUIRE_VAR}={need})")
        } else {
            String::new()
        };
        out.push_str(&format!("*** SKIPPED {}: {why}{note} ***\n", labels.len()));
        for l in labels {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}

// ------------------------------------------------------------ finding things

/// Whether `program` (looked up on PATH) runs with `args` and exits 0.
pub fn runs(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// tmux is installed, else the test is skipped (said loudly) and false.
pub fn have_tmux() -> bool {
    if runs("tmux", &["-V"]) {
        return true;
    }
    skip(
        "tmux",
        "tmux is not installed (tmux peers run in it); install it: \
         `apt-get install -y tmux` (Debian/Ubuntu) or `brew install tmux` (macOS)",
    );
    false
}

/// The openssl command-line tool is installed, else the test is skipped.
pub fn have_openssl() -> bool {
    if runs("openssl", &["version"]) {
        return true;
    }
    skip(
        "openssl",
        "the openssl command-line tool is not installed (it makes this test's \
         certificates); install it: `apt-get install -y openssl`",
    );
    false
}

/// The sqlite3 shell on PATH (the one a distribution ships), else None
/// after skipping the test (or `part` of it) loudly.
pub fn sqlite3_shell(part: Option<&str>) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("sqlite3"))
            .find(|p| p.is_file() && runs(p, &["--version"]))
    });
    if found.is_none() {
        let why = "the sqlite3 shell is not installed (the views must work in the \
                   stock shell, SPEC §8); install it: `apt-get install -y sqlite3` \
                   (Debian/Ubuntu) or `brew install sqlite` (macOS)";
        match part {
            Some(p) => skip_part("sqlite3", p, why),
            None => skip("sqlite3", why),
        }
    }
    found
}

// ------------------------------------------------------------ Claude Code

/// The Claude Code CLI version the tests use (SPEC §9). Never unpinned: on
/// node 20 npm resolves an unpinned install to 2.1.197, whose `plugin
/// validate` has no `--profile` and whose Monitor differs.
pub const CLAUDE_CODE_VERSION: &str = "2.1.332";

/// Where the tests install it: `target/claude-code`.
pub fn claude_code_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("claude-code")
}

/// The npm command that installs the pinned CLI into `dir`.
pub fn claude_code_install_cmd(dir: &Path) -> String {
    format!(
        "npm install --prefix {} --no-audit --no-fund --save-exact @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}",
        dir.display()
    )
}

/// `claude --version`'s version, run with a HOME of its own and no Claude
/// Code variables of the caller's.
fn claude_version(bin: &Path, home: &Path) -> Option<String> {
    let out = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| {
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

/// The pinned Claude Code CLI: `$INTER_SESSION_CLAUDE_BIN` (which must be
/// that version), else `target/claude-code/node_modules/.bin/claude`,
/// installed there with npm when it is missing or another version (one
/// install at a time across test binaries and threads, under a lock file).
/// Without npm, or when the install fails (no network), None after
/// skipping the test loudly.
pub fn claude_code() -> Option<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install_claude_code) {
        Ok(bin) => Some(bin.clone()),
        Err(why) => {
            skip("claude-code", why);
            None
        }
    }
}

fn find_or_install_claude_code() -> Result<PathBuf, String> {
    let dir = claude_code_dir();
    let home = tempfile::tempdir().expect("tempdir");
    if let Some(given) = std::env::var_os("INTER_SESSION_CLAUDE_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(given);
        let version = claude_version(&bin, home.path());
        assert_eq!(
            version.as_deref(),
            Some(CLAUDE_CODE_VERSION),
            "INTER_SESSION_CLAUDE_BIN={} is not the Claude Code CLI {CLAUDE_CODE_VERSION}; \
             unset it to let the tests install that into {}",
            bin.display(),
            dir.display()
        );
        return Ok(bin);
    }
    let bin = dir.join("node_modules/.bin/claude");
    let pinned = || claude_version(&bin, home.path()).as_deref() == Some(CLAUDE_CODE_VERSION);
    if pinned() {
        return Ok(bin);
    }
    let install = claude_code_install_cmd(&dir);
    if !runs("npm", &["--version"]) {
        return Err(format!(
            "the Claude Code CLI {CLAUDE_CODE_VERSION} is not installed and there is no npm \
             to install it with; install Node.js and npm (`apt-get install -y npm`), then \
             run `{install}` (the tests do that themselves when npm is there), or point \
             INTER_SESSION_CLAUDE_BIN at a claude {CLAUDE_CODE_VERSION}"
        ));
    }
    // One install at a time: test binaries run one after another, but the
    // threads of one binary and a second `cargo test` may race.
    std::fs::create_dir_all(&dir).expect("mkdir target/claude-code");
    let lock = std::fs::File::create(dir.with_extension("lock")).expect("lock file");
    // SAFETY: flock on a file we hold open; released when it is closed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {}", dir.with_extension("lock").display());
    if pinned() {
        return Ok(bin);
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "claude-code: installing the pinned CLI: {install}"
    );
    let out = Command::new("npm")
        .args(["install", "--prefix"])
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--save-exact"])
        .arg(format!("@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .expect("run npm");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines = || err.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines()
            .find(|l| l.contains("ERR") || l.contains("error"))
            .or_else(|| lines().next_back())
            .unwrap_or("");
        return Err(format!(
            "the Claude Code CLI {CLAUDE_CODE_VERSION} is not installed and `{install}` \
             failed ({}: {first}); run it by hand once it can reach the npm registry",
            out.status
        ));
    }
    let version = claude_version(&bin, home.path());
    assert_eq!(
        version.as_deref(),
        Some(CLAUDE_CODE_VERSION),
        "`{install}` succeeded but {} reports {version:?}",
        bin.display()
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "claude-code: installed {CLAUDE_CODE_VERSION} at {}",
        bin.display()
    );
    Ok(bin)
}
