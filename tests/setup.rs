//! `inter-session setup codex|gemini|claude` (issue 21, must-hold 4): our
//! hooks written into the host's own configuration, everything else in the
//! files kept, idempotent, a backup, a dry run that writes nothing, and a
//! `--remove` that gives the files back. That Codex runs the hooks it
//! trusts this way is proved in the real Codex (tests/codex_e2e.rs); the
//! trust hash is checked against Codex's own in the unit tests.

mod support;

use std::fs;
use std::path::Path;

use serde_json::Value;
use support::*;

fn setup(env: &Env, home: &Path, args: &[&str]) -> std::process::Output {
    env.cmd("k")
        .arg("setup")
        .args(args)
        .env("CODEX_HOME", home.join("codex"))
        .env("GEMINI_CLI_HOME", home.join("gemini"))
        .current_dir(home)
        .output()
        .expect("run setup")
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    stdout_of(&out)
}

const CONFIG: &str =
    "# mine\nmodel = \"o3\"   # keep this comment\n\n[profiles.fast]\nmodel = \"o4-mini\"\n";
const HOOKS: &str = r#"{"hooks":{"Stop":[{"hooks":[{"type":"command","command":"/usr/local/bin/notify-me"}]}]},"zeta":1,"alpha":2}"#;

#[test]
fn codex_hooks_and_trust_go_in_and_come_out_leaving_the_rest() {
    let env = Env::new();
    let home = env.tmp.path().join("h");
    let codex = home.join("codex");
    fs::create_dir_all(&codex).expect("dir");
    fs::write(codex.join("config.toml"), CONFIG).expect("config");
    fs::write(codex.join("hooks.json"), HOOKS).expect("hooks");

    // A dry run says what and writes nothing.
    let out = ok(setup(&env, &home, &["codex", "--dry-run", "--name", "rev"]));
    assert!(out.contains("SessionStart hook: added"), "{out}");
    assert_eq!(
        fs::read_to_string(codex.join("config.toml")).expect("read"),
        CONFIG
    );
    assert_eq!(
        fs::read_to_string(codex.join("hooks.json")).expect("read"),
        HOOKS
    );

    let out = ok(setup(&env, &home, &["codex", "--name", "rev"]));
    for event in ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"] {
        assert!(out.contains(&format!("{event} hook: added")), "{out}");
        assert!(out.contains(&format!("{event} hook: trusted")), "{out}");
    }
    assert!(codex.join("config.toml.inter-session.bak").exists());
    let config = fs::read_to_string(codex.join("config.toml")).expect("read");
    assert!(
        config.starts_with(CONFIG),
        "the user's part stays as it was:\n{config}"
    );
    let hooks_file = codex.join("hooks.json");
    let doc: Value =
        serde_json::from_str(&fs::read_to_string(&hooks_file).expect("read")).expect("json");
    // The user's hook keeps index 0 (and so its trust); ours comes after.
    assert_eq!(
        doc["hooks"]["Stop"][0]["hooks"][0]["command"],
        "/usr/local/bin/notify-me"
    );
    let ours = doc["hooks"]["Stop"][1]["hooks"][0]["command"]
        .as_str()
        .expect("our Stop hook");
    assert!(ours.ends_with(" hook codex Stop"), "{ours}");
    let start = doc["hooks"]["SessionStart"][0]["hooks"][0]["command"]
        .as_str()
        .expect("our SessionStart hook");
    assert!(
        start.ends_with(" hook codex SessionStart --name rev"),
        "{start}"
    );
    let keys: Vec<&str> = doc
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["hooks", "zeta", "alpha"], "key order kept");
    let stop_key = format!("{}:stop:1:0", hooks_file.display());
    assert!(config.contains(&stop_key), "{config}");
    assert!(
        !config.contains(":stop:0:0"),
        "the user's hook is not ours to trust"
    );

    // Twice: nothing changes, nothing written.
    let before = fs::read_to_string(codex.join("config.toml")).expect("read");
    let out = ok(setup(&env, &home, &["codex", "--name", "rev"]));
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(
        fs::read_to_string(codex.join("config.toml")).expect("read"),
        before
    );

    // The user trusts their own hook; removing ours keeps that entry.
    let mine = format!(
        "\n[hooks.state.\"{}:stop:0:0\"]\ntrusted_hash = \"sha256:users-own\"\n",
        hooks_file.display()
    );
    fs::write(codex.join("config.toml"), format!("{before}{mine}")).expect("write");
    let out = ok(setup(&env, &home, &["codex", "--remove"]));
    assert!(out.contains("Stop hook: removed"), "{out}");
    let config = fs::read_to_string(codex.join("config.toml")).expect("read");
    assert!(config.starts_with(CONFIG), "{config}");
    assert!(config.contains("sha256:users-own"), "{config}");
    assert!(
        !config.contains("inter-session") && !config.contains(":stop:1:0"),
        "{config}"
    );
    let doc: Value =
        serde_json::from_str(&fs::read_to_string(&hooks_file).expect("read")).expect("json");
    let original: Value = serde_json::from_str(HOOKS).expect("json");
    assert_eq!(doc, original);
    let out = ok(setup(&env, &home, &["codex", "--remove"]));
    assert!(out.contains("nothing to change"), "{out}");
}

#[test]
fn a_config_we_cannot_parse_is_one_line_and_left_alone() {
    let env = Env::new();
    let home = env.tmp.path().join("h");
    let codex = home.join("codex");
    fs::create_dir_all(&codex).expect("dir");
    fs::write(codex.join("config.toml"), "model = \n[[").expect("config");
    let line = refused(
        &setup(&env, &home, &["codex"]),
        1,
        "an unparsable config.toml",
    );
    assert!(line.contains("config.toml"), "{line}");
    assert_eq!(
        fs::read_to_string(codex.join("config.toml")).expect("read"),
        "model = \n[["
    );
    assert!(!codex.join("hooks.json").exists());
    fs::write(codex.join("config.toml"), "").expect("config");
    fs::write(codex.join("hooks.json"), "{\"hooks\": [").expect("hooks");
    let line = refused(
        &setup(&env, &home, &["codex"]),
        1,
        "an unparsable hooks.json",
    );
    assert!(line.contains("hooks.json"), "{line}");
    // --project outside a repository.
    let line = refused(
        &setup(&env, &home, &["gemini", "--project"]),
        1,
        "--project outside git",
    );
    assert!(line.contains("git"), "{line}");
}

#[test]
fn gemini_hooks_and_the_two_settings() {
    let env = Env::new();
    let home = env.tmp.path().join("h");
    let settings_dir = home.join("gemini").join(".gemini");
    fs::create_dir_all(&settings_dir).expect("dir");
    let settings = settings_dir.join("settings.json");
    fs::write(
        &settings,
        r#"{"security":{"auth":{"selectedType":"gemini-api-key"}},"tools":{"shell":{"enableInteractiveShell":true}}}"#,
    )
    .expect("settings");
    let out = ok(setup(&env, &home, &["gemini"]));
    assert!(out.contains("AfterAgent hook: added"), "{out}");
    let v: Value =
        serde_json::from_str(&fs::read_to_string(&settings).expect("read")).expect("json");
    assert_eq!(v["security"]["auth"]["selectedType"], "gemini-api-key");
    assert_eq!(v["tools"]["shell"]["enableInteractiveShell"], true);
    assert_eq!(
        v["tools"]["shell"]["backgroundCompletionBehavior"],
        "inject"
    );
    assert_eq!(v["experimental"]["modelSteering"], true);
    for event in [
        "SessionStart",
        "BeforeAgent",
        "AfterTool",
        "AfterAgent",
        "SessionEnd",
    ] {
        let cmd = v["hooks"][event][0]["hooks"][0]["command"]
            .as_str()
            .unwrap_or_default();
        assert!(
            cmd.ends_with(&format!(" hook gemini {event}")),
            "{event}: {v}"
        );
        assert_eq!(v["hooks"][event][0]["hooks"][0]["timeout"], 30_000);
    }
    // The waiter now runs under Gemini with these settings.
    let out = ok(setup(&env, &home, &["gemini"]));
    assert!(out.contains("nothing to change"), "{out}");
    let out = ok(setup(&env, &home, &["gemini", "--remove"]));
    assert!(out.contains("SessionEnd hook: removed"), "{out}");
    let v: Value =
        serde_json::from_str(&fs::read_to_string(&settings).expect("read")).expect("json");
    assert!(v.get("hooks").is_none(), "{v}");

    // A file with comments is not rewritten: the lines to add are printed.
    let commented = "{ // my settings\n \"general\": {\"vimMode\": true} }\n";
    fs::write(&settings, commented).expect("settings");
    let line = refused(
        &setup(&env, &home, &["gemini"]),
        1,
        "settings with comments",
    );
    assert!(
        line.contains("comments") && line.contains("modelSteering"),
        "{line}"
    );
    assert_eq!(fs::read_to_string(&settings).expect("read"), commented);
}

#[test]
fn setup_claude_points_at_the_plugin() {
    let env = Env::new();
    let home = env.tmp.path().join("h");
    fs::create_dir_all(&home).expect("dir");
    let out = ok(setup(&env, &home, &["claude"]));
    assert!(out.contains("claude plugin install inter-session"), "{out}");
}
