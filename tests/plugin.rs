//! The Claude Code plugin (issue 11, SPEC §7): the real Claude Code CLI
//! validates the plugin and the marketplace with no warning and no advice;
//! the launcher finds the binary or prints its one notice; the manifests
//! carry what Claude Code needs; `auto-start` round-trips monitors.json; the
//! `--auto` monitor stays out of Claude Code's worker agents; and every
//! command the skills tell the agent to run parses, so the skills cannot
//! drift from the binary.
//!
//! The CLI is the pinned npm package `@anthropic-ai/claude-code@2.1.332`,
//! taken from `$INTER_SESSION_CLAUDE_BIN`, else from `target/claude-code`,
//! where the test installs it with npm when it is missing
//! (support/needs.rs); without npm the validation test skips loudly.

mod support;
use support::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const NOT_FOUND: &str = "[inter-session] binary not found — install it with: cargo install";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn plugin_dir() -> PathBuf {
    root().join("plugin")
}

fn launcher() -> PathBuf {
    plugin_dir().join("bin").join("inter-session")
}

fn json_file(path: &Path) -> serde_json::Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Run `cmd` to completion, killing it after `limit` (a launcher that finds
/// itself would loop forever).
fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still running after {limit:?}; stdout {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// (a) The real Claude Code CLI

/// `claude <args>` in the repository root, with a temp HOME and none of the
/// caller's Claude Code or Anthropic variables.
fn claude(bin: &Path, home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .current_dir(root())
        .args(args);
    run_with_limit(cmd, Duration::from_secs(120))
}

fn assert_clean_json(report: &serde_json::Value, what: &str) {
    assert_eq!(report["success"], true, "{what}: {report:#}");
    let empty = |v: &serde_json::Value| v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
    for key in ["errors", "warnings"] {
        assert!(
            empty(&report["manifest"][key]),
            "{what}: manifest {key}: {report:#}"
        );
    }
    assert!(empty(&report["advice"]), "{what}: advice: {report:#}");
    let dir = &report["directory"];
    if !dir.is_null() {
        assert!(
            empty(&dir["findings"]),
            "{what}: directory findings: {report:#}"
        );
        assert!(
            empty(&dir["undecided"]),
            "{what}: directory undecided: {report:#}"
        );
        assert_eq!(dir["incomplete"], false, "{what}: {report:#}");
        assert!(dir["failure"].is_null(), "{what}: {report:#}");
    }
}

#[test]
fn claude_code_validates_plugin_and_marketplace_with_no_warning_or_advice() {
    let Some(bin) = claude_code() else {
        return;
    };
    let home = tempfile::tempdir().expect("tempdir");
    let version = claude(&bin, home.path(), &["--version"]);
    let version = text(&version.stdout);
    assert!(
        version.trim().starts_with(CLAUDE_CODE_VERSION),
        "the Claude Code CLI must be the pinned {CLAUDE_CODE_VERSION}, found {version:?}"
    );
    for args in [
        &[
            "plugin",
            "validate",
            "--strict",
            "--profile",
            "directory",
            "plugin",
        ][..],
        &["plugin", "validate", "--strict", "."][..],
    ] {
        let what = format!("claude {}", args.join(" "));
        let out = claude(&bin, home.path(), args);
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        eprintln!("{what}:\n{stdout}{stderr}");
        assert!(
            out.status.success(),
            "{what} failed ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
        let all = format!("{stdout}\n{stderr}").to_lowercase();
        for bad in ["warning", "advice", "⚠", "✘", "error"] {
            assert!(
                !all.contains(bad),
                "{what} printed {bad:?}:\n{stdout}\n{stderr}"
            );
        }
        assert!(stdout.contains("Validation passed"), "{what}:\n{stdout}");

        let mut json_args = args.to_vec();
        json_args.insert(3, "--json");
        let out = claude(&bin, home.path(), &json_args);
        assert!(
            out.status.success(),
            "{what} --json failed: {}",
            text(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what} --json: {e}: {}", text(&out.stdout)));
        assert_clean_json(&report, &what);
    }
}

// ---------------------------------------------------------------------------
// (b) The launcher

/// The launcher run with exactly this environment.
fn launch(
    launcher: &Path,
    path_var: &str,
    home: &Path,
    extra: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(launcher);
    cmd.env_clear().env("PATH", path_var).env("HOME", home);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.args(args);
    run_with_limit(cmd, Duration::from_secs(20))
}

/// A copy of the plugin folder outside any checkout.
fn plugin_copy(dir: &Path) -> PathBuf {
    let dest = dir.join("plugin");
    copy_dir(&plugin_dir(), &dest);
    dest
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

fn assert_one_notice(out: &Output, what: &str) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "{what}: exactly one line: {stdout:?}"
    );
    assert!(stdout.starts_with(NOT_FOUND), "{what}: {stdout:?}");
    assert!(stdout.ends_with('\n'), "{what}: {stdout:?}");
    assert!(
        out.stderr.is_empty(),
        "{what}: stderr {:?}",
        text(&out.stderr)
    );
    stdout
}

#[test]
fn launcher_without_the_binary_prints_one_notice_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).expect("home");

    // In this checkout: an empty PATH, no ~/.cargo/bin. The notice names it.
    let out = launch(&launcher(), "", &home, &[], &["inbox", "watch", "--auto"]);
    let line = assert_one_notice(&out, "in the checkout");
    let repo = fs::canonicalize(root()).expect("canonical root");
    assert_eq!(
        line,
        format!("{NOT_FOUND} --locked --path {}\n", repo.display()),
        "names this checkout"
    );

    // A copy outside any checkout, with its own bin/ on PATH (as Claude Code
    // puts a plugin's bin/ on the Bash tool's PATH): it must not find itself.
    let copy = plugin_copy(tmp.path());
    let copy_launcher = copy.join("bin").join("inter-session");
    let path_var = format!("{}:/usr/bin:/bin", copy.join("bin").display());
    let out = launch(&copy_launcher, &path_var, &home, &[], &["--version"]);
    let line = assert_one_notice(&out, "outside a checkout");
    assert!(line.contains("/inter-session install"), "{line}");

    // A Claude Code marketplace added from a local checkout: named too.
    let plugins = home.join(".claude").join("plugins");
    fs::create_dir_all(&plugins).expect("mkdir");
    fs::write(
        plugins.join("known_marketplaces.json"),
        format!(
            "{{\n  \"inter-session\": {{\n    \"source\": {{\"source\": \"directory\", \"path\": \"{0}\"}},\n    \"installLocation\": \"{0}\"\n  }}\n}}\n",
            repo.display()
        ),
    )
    .expect("write");
    let out = launch(&copy_launcher, "", &home, &[], &[]);
    let line = assert_one_notice(&out, "installed from a local marketplace");
    assert!(
        line.contains(&format!("--path {}", repo.display())),
        "{line}"
    );
}

#[test]
fn launcher_finds_the_binary_on_path_and_forwards_arguments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).expect("home");
    let bin_dir = tmp.path().join("bin");
    fs::create_dir_all(&bin_dir).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("inter-session")).expect("symlink");
    let version = format!("inter-session {}\n", env!("CARGO_PKG_VERSION"));

    // On PATH, behind a PATH entry that holds the plugin's own bin/.
    let path_var = format!(
        "{}:{}:/usr/bin:/bin",
        plugin_dir().join("bin").display(),
        bin_dir.display()
    );
    let out = launch(&launcher(), &path_var, &home, &[], &["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), version);

    // Only in ~/.cargo/bin, with an empty PATH.
    let cargo_bin = home.join(".cargo").join("bin");
    fs::create_dir_all(&cargo_bin).expect("mkdir");
    std::os::unix::fs::symlink(BIN, cargo_bin.join("inter-session")).expect("symlink");
    let out = launch(&launcher(), "", &home, &[], &["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), version);

    // Arguments arrive exactly, PATH is the caller's, and the plugin folder is
    // exported for `auto-start`.
    let fake_dir = tmp.path().join("fake");
    fs::create_dir_all(&fake_dir).expect("mkdir");
    let fake = fake_dir.join("inter-session");
    fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do printf 'arg=[%s]\\n' \"$a\"; done\n\
         printf 'path=%s\\nplugin=%s\\n' \"$PATH\" \"$INTER_SESSION_PLUGIN_DIR\"\n",
    )
    .expect("write");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path_var = fake_dir.display().to_string();
    let args = ["mail", "send", "--text", "it's a \"test\"; $HOME `x`", ""];
    let out = launch(&launcher(), &path_var, &home, &[], &args);
    assert!(out.status.success(), "{out:?}");
    let plugin = fs::canonicalize(plugin_dir()).expect("canonical");
    let mut want: String = args.iter().map(|a| format!("arg=[{a}]\n")).collect();
    want.push_str(&format!("path={path_var}\nplugin={}\n", plugin.display()));
    assert_eq!(text(&out.stdout), want);

    // An INTER_SESSION_PLUGIN_DIR already set is kept.
    let out = launch(
        &launcher(),
        &path_var,
        &home,
        &[("INTER_SESSION_PLUGIN_DIR", "/somewhere")],
        &[],
    );
    assert!(
        text(&out.stdout).ends_with("plugin=/somewhere\n"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------
// (c) The manifests

#[test]
fn manifests_have_the_required_fields() {
    let p = json_file(&plugin_dir().join(".claude-plugin/plugin.json"));
    assert_eq!(p["name"], "inter-session");
    assert_eq!(
        p["version"],
        env!("CARGO_PKG_VERSION"),
        "plugin version follows Cargo.toml"
    );
    assert!(
        p["description"].as_str().is_some_and(|d| d.len() > 40),
        "{p:#}"
    );
    assert!(
        p["author"]["name"].as_str().is_some_and(|n| !n.is_empty()),
        "{p:#}"
    );
    assert_eq!(p["license"], "MIT");
    assert_eq!(
        p["network"]["hosts"],
        serde_json::json!([]),
        "no host is reached"
    );
    assert_eq!(p["experimental"]["monitors"], "./monitors/monitors.json");
    assert!(
        p.get("monitors").is_none(),
        "top-level `monitors` is deprecated"
    );
    let icon = p["icon"].as_str().expect("icon");
    let icon = fs::read(plugin_dir().join(icon.trim_start_matches("./"))).expect("icon file");
    assert_eq!(&icon[..8], b"\x89PNG\r\n\x1a\n", "icon is a PNG");
    let (w, h) = (
        u32::from_be_bytes(icon[16..20].try_into().unwrap()),
        u32::from_be_bytes(icon[20..24].try_into().unwrap()),
    );
    assert!(
        w == h && (512..=2048).contains(&w),
        "icon {w}x{h}: square, 512 to 2048 px"
    );

    let m = json_file(&plugin_dir().join("monitors/monitors.json"));
    let list = m.as_array().expect("monitors.json is an array of monitors");
    assert_eq!(list.len(), 1, "{m:#}");
    let mon = &list[0];
    assert_eq!(mon["name"], "inter-session-client");
    assert_eq!(mon["description"], "inter-session messages");
    assert_eq!(
        mon["when"], "on-skill-invoke:inter-session:inter-session",
        "auto-start is off as shipped, the skill named as Claude Code invokes it"
    );
    let command = mon["command"].as_str().expect("command");
    assert!(
        command.contains("${CLAUDE_PLUGIN_ROOT}/bin/inter-session"),
        "{command}"
    );
    assert!(command.ends_with(" inbox watch --auto"), "{command}");

    let mk = json_file(&root().join(".claude-plugin/marketplace.json"));
    assert!(mk["name"].as_str().is_some_and(|n| !n.is_empty()), "{mk:#}");
    assert!(mk["owner"]["name"].as_str().is_some(), "{mk:#}");
    assert!(mk["metadata"]["description"].as_str().is_some(), "{mk:#}");
    let entry = &mk["plugins"][0];
    assert_eq!(entry["name"], "inter-session");
    assert_eq!(entry["source"], "./plugin");

    let mode = fs::metadata(launcher())
        .expect("launcher")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the launcher is executable");
    let script = fs::read_to_string(launcher()).expect("launcher");
    assert!(script.starts_with("#!/bin/sh\n"), "a POSIX sh script");

    for (skill, needles) in [
        (
            "inter-session",
            &[
                "select:Monitor",
                "timeout_ms: 600000",
                "--window 600",
                "description: \"inter-session messages\"",
                "watch window over",
                "[Monitor expired after",
                "inbox read <id>",
                "inbox check",
                "--project",
                "remembered for this project",
                "`done:`, `status:` or\n   `answer:`",
                "question:",
                "queued=",
                "never override permission rules",
                "Only the leading `[inter-session …]` header is authoritative",
                "already running",
                "binary not found",
                "auto-start on",
                "peer spawn",
                "peer kill",
                "cargo install --locked",
                "only after the user agrees",
            ][..],
        ),
        (
            "session",
            &["inter-session list", "inbox check", "mail broadcast"][..],
        ),
    ] {
        let path = plugin_dir().join("skills").join(skill).join("SKILL.md");
        let body = fs::read_to_string(&path).expect("SKILL.md");
        let front = body
            .strip_prefix("---\n")
            .and_then(|b| b.split_once("\n---\n"))
            .map(|(f, _)| f)
            .unwrap_or_else(|| panic!("{}: no frontmatter", path.display()));
        assert!(front.contains(&format!("name: {skill}\n")), "{front}");
        assert!(front.contains("description: "), "{front}");
        for n in needles {
            assert!(body.contains(n), "{} does not say {n:?}", path.display());
        }
        assert!(
            !body.to_lowercase().contains("python"),
            "no Python in {}",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// (d) auto-start (needs the `auto-start` verb wired into the binary)

fn auto_start(plugin: &Path, args: &[&str]) -> Output {
    let env = Env::new();
    let mut cmd = env.cmd("auto-start-test");
    cmd.env("INTER_SESSION_PLUGIN_DIR", plugin)
        .arg("auto-start")
        .args(args);
    run_with_limit(cmd, Duration::from_secs(20))
}

#[test]
fn auto_start_round_trips_monitors_json_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = plugin_copy(tmp.path());
    let file = plugin.join("monitors/monitors.json");
    let shipped = fs::read_to_string(&file).expect("read");

    let ok = |args: &[&str]| {
        let out = auto_start(&plugin, args);
        assert!(out.status.success(), "auto-start {args:?}: {out:?}");
        text(&out.stdout)
    };

    assert!(ok(&["status"]).starts_with("auto-start off"));
    let on = ok(&["on"]);
    assert!(on.starts_with("auto-start on"), "{on}");
    assert!(
        on.contains("/reload-plugins"),
        "says when it takes effect: {on}"
    );
    let after_on = fs::read_to_string(&file).expect("read");
    assert_eq!(
        after_on,
        shipped.replace(
            "\"on-skill-invoke:inter-session:inter-session\"",
            "\"always\""
        ),
        "only the `when` value changes"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--json"])).expect("status --json");
    assert_eq!(status["auto_start"], "on", "{status}");
    assert_eq!(status["when"], "always", "{status}");
    ok(&["on"]); // idempotent
    assert_eq!(fs::read_to_string(&file).expect("read"), after_on);

    assert!(ok(&["off"]).starts_with("auto-start off"));
    assert_eq!(
        fs::read_to_string(&file).expect("read"),
        shipped,
        "off restores the file byte for byte"
    );

    // Other fields and other monitors survive, the monitors in their order
    // (the file is ours: it is written back in serde_json's pretty form).
    // The `when` that `off` wrote before SPEC §9 named the skill as Claude
    // Code invokes it still reads as off; `off` now writes the new one.
    let custom = "[\n  {\"name\": \"other\", \"command\": \"x\", \"description\": \"d\", \"when\": \"always\"},\n  \
        {\"when\": \"on-skill-invoke:inter-session\", \"name\": \"inter-session-client\", \"command\": \"c\", \"description\": \"inter-session messages\", \"extra\": {\"k\": [1, 2]}}\n]\n";
    fs::write(&file, custom).expect("write");
    assert!(ok(&["status"]).starts_with("auto-start off"));
    ok(&["on"]);
    let v = json_file(&file);
    assert_eq!(v[0]["when"], "always");
    assert_eq!(v[1]["when"], "always");
    assert_eq!(v[1]["extra"]["k"], serde_json::json!([1, 2]));
    ok(&["off"]);
    let want: serde_json::Value = serde_json::from_str(&custom.replace(
        "\"on-skill-invoke:inter-session\"",
        "\"on-skill-invoke:inter-session:inter-session\"",
    ))
    .expect("json");
    assert_eq!(json_file(&file), want);
    let leftovers: Vec<_> = fs::read_dir(plugin.join("monitors"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");

    // Through the launcher, the plugin folder is found without the variable.
    fs::write(&file, &shipped).expect("write");
    let bin_dir = tmp.path().join("bin");
    fs::create_dir_all(&bin_dir).expect("mkdir");
    std::os::unix::fs::symlink(BIN, bin_dir.join("inter-session")).expect("symlink");
    let out = launch(
        &plugin.join("bin/inter-session"),
        &format!("{}:/usr/bin:/bin", bin_dir.display()),
        tmp.path(),
        &[],
        &["auto-start", "on"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_file(&file)[0]["when"], "always");

    // A missing monitors.json: a runtime failure, exit 1, and a clear line.
    fs::remove_file(&file).expect("rm");
    let out = auto_start(&plugin, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("monitors.json"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // An unparseable one: exit 1, a clear line, and the file left as it was.
    let broken = "[{\"name\": \"inter-session-client\", \"when\": \"always\",}]\n";
    fs::write(&file, broken).expect("write");
    let out = auto_start(&plugin, &["off"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("monitors.json is not valid JSON"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read_to_string(&file).expect("read"), broken);
}

// ---------------------------------------------------------------------------
// The agent-team guard of `inbox watch --auto` (SPEC §3)

/// A fake Claude Code process: `sh` under the name `claude` (argv[0]), with
/// `extra` on its command line, running the monitor as a child (not exec'd,
/// so it stays the monitor's ancestor), in a process group of its own.
fn fake_claude(env: &Env, tmp: &Path, extra: &[&str]) -> Monitor {
    use std::os::unix::process::CommandExt;
    let claude = tmp.join("claude");
    if !claude.exists() {
        std::os::unix::fs::symlink("/bin/sh", &claude).expect("symlink");
    }
    let mut c = Command::new(&claude);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLAUDE") || k.starts_with("INTER_SESSION") {
            c.env_remove(k);
        }
    }
    // No INTER_SESSION_KEY: the session key is the fake Claude Code's pid.
    c.env("INTER_SESSION_DATA_DIR", &env.data)
        .env("INTER_SESSION_NAME", "solo")
        .env("BIN", BIN)
        .current_dir(env.tmp.path())
        .process_group(0)
        .arg("-c")
        .arg("\"$BIN\" inbox watch --auto --pace off; rc=$?; exit $rc")
        .arg("claude")
        .args(extra);
    Monitor::spawn(c)
}

#[test]
fn auto_monitor_stays_out_of_claude_code_worker_agents() {
    let env = Env::new();
    let tmp = tempfile::tempdir().expect("tempdir");

    let mut worker = fake_claude(&env, tmp.path(), &["--agent-id", "w1@team"]);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker's monitor exits by itself");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        worker.rest(Duration::from_secs(1)),
        Vec::<String>::new(),
        "prints nothing"
    );
    let list = env.ok("probe", &["list", "--all", "--json"]);
    assert_eq!(list.trim(), "[]", "registers nothing");

    let mut lead = fake_claude(&env, tmp.path(), &["--resume"]);
    env.wait_online("solo");
    assert!(
        lead.child.try_wait().expect("try_wait").is_none(),
        "still watching"
    );
    let pgid = i32::try_from(lead.child.id()).expect("pid");
    // SAFETY: kill(2) on the process group this test created.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    assert!(
        lead.wait_exit(Duration::from_secs(10)).is_some(),
        "stops on SIGTERM"
    );
}

// ---------------------------------------------------------------------------
// Every command the skills tell the agent to run parses

/// Split a shell line into words (single and double quotes, backslashes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The `inter-session …` command lines of a SKILL.md: lines of ```sh blocks,
/// inline code spans (prose wrapped over lines is joined first), and the
/// Monitor's `command:` (with LAUNCHER standing for the launcher).
fn skill_commands(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<String> = None;
    for line in body.lines() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.to_string()),
            };
            prose.push('\n');
            continue;
        }
        match fence.as_deref() {
            Some("sh") => {
                if t.starts_with("inter-session ") {
                    out.push(t.to_string());
                }
            }
            Some(_) => {
                if let Some(rest) = t.strip_prefix("command: \"") {
                    let cmd = rest.trim_end_matches(',').trim_end_matches('"');
                    out.push(launcher_to_name(cmd));
                }
            }
            None => {
                prose.push_str(t);
                prose.push(if t.is_empty() { '\n' } else { ' ' });
            }
        }
    }
    for (i, span) in prose.split('`').enumerate() {
        if i % 2 == 1 {
            let span = launcher_to_name(span);
            if span.starts_with("inter-session ") && !span.starts_with("inter-session …") {
                out.push(span);
            }
        }
    }
    out
}

/// The skills write the launcher as `'LAUNCHER'` in prose and as the path
/// Claude Code fills in; either stands for `inter-session`.
fn launcher_to_name(cmd: &str) -> String {
    cmd.replace(
        "'${CLAUDE_SKILL_DIR}/../../bin/inter-session'",
        "inter-session",
    )
    .replace("'LAUNCHER'", "inter-session")
}

/// Placeholders in the skills' commands, and sample values for them.
const SAMPLES: &[(&str, &str)] = &[
    ("<name>", "alice"),
    ("<to>", "bob"),
    ("<new>", "alice-2"),
    ("<id>", "01JD3K6Y"),
    ("<text>", "hello"),
    ("<summary>", "summary"),
    ("<queue>", "lint"),
    ("<holder>", "alice"),
    ("<path>", "src/main.rs"),
];

#[test]
fn every_command_the_skills_name_parses() {
    let env = Env::new();
    let mut seen = std::collections::BTreeSet::new();
    for skill in ["inter-session", "session"] {
        let body = fs::read_to_string(plugin_dir().join("skills").join(skill).join("SKILL.md"))
            .expect("SKILL.md");
        let commands = skill_commands(&body);
        assert!(commands.len() >= 5, "{skill}: found only {commands:?}");
        for line in commands {
            let mut line = line.clone();
            for (k, v) in SAMPLES {
                line = line.replace(k, v);
            }
            assert!(!line.contains('<'), "unknown placeholder in {line:?}");
            let words = shell_words(&line);
            assert_eq!(words[0], "inter-session", "{line}");
            let mut args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            seen.insert(args.iter().take(2).copied().collect::<Vec<_>>().join(" "));
            args.push("--help");
            let out = env.run("skill-check", &args);
            assert!(
                out.status.success(),
                "{skill}/SKILL.md tells the agent to run `{line}`, which does not parse:\n{}",
                text(&out.stderr)
            );
        }
    }
    for needed in [
        "inbox watch",
        "inbox check",
        "inbox read",
        "mail send",
        "mail broadcast",
        "mail reply",
        "list",
        "status",
        "rename alice-2",
        "disconnect",
        "auto-start on",
        "auto-start off",
        "auto-start status",
        "peer spawn",
        "peer send",
        "peer read",
        "peer status",
        "peer list",
        "peer kill",
        "task post",
        "task done",
        "task fail",
        "task claim",
        "task wait",
        "lease take",
        "lease release",
        "mail ask",
    ] {
        assert!(
            seen.iter()
                .any(|s| s == needed || s.starts_with(&format!("{needed} "))),
            "the skills never run `{needed}`: {seen:?}"
        );
    }
}

#[test]
fn shell_words_splits_like_sh() {
    assert_eq!(
        shell_words(r#"a 'b c' "d \"e\"" f\ g  # comment"#),
        ["a", "b c", "d \"e\"", "f g"]
    );
    assert_eq!(shell_words("x ''"), ["x", ""]);
}
