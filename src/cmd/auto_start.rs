//! `auto-start on|off|status`: whether the Claude Code plugin's monitor
//! starts with every session (`when: "always"`) or the first time the
//! inter-session skill runs (`when: "on-skill-invoke:inter-session:inter-session"`,
//! the skill's name as Claude Code invokes it; the older
//! `on-skill-invoke:inter-session` still reads as off).
//!
//! It sets the `when` field of the `inter-session-client` entry in the
//! plugin's `monitors/monitors.json`. The file is ours (the plugin ships it),
//! so it is simply parsed with serde_json and written back pretty-printed;
//! the shipped file is already in that form, so `on` then `off` gives it
//! back byte for byte. The new text goes to a temp file in the same folder,
//! with the old file's permissions, renamed over the old one.
//!
//! The plugin folder is, in order: `--plugin-dir` (where the caller offers
//! it), `$INTER_SESSION_PLUGIN_DIR` (the plugin's launcher sets it),
//! `$CLAUDE_PLUGIN_ROOT` when it is this plugin, a `plugin/` folder in a
//! checkout holding the running binary, then the plugin as Claude Code
//! installed it (`~/.claude/plugins/installed_plugins.json`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use crate::identity::UsageError;

/// The monitor this command edits.
pub const MONITOR_NAME: &str = "inter-session-client";
/// `when` for auto-start on.
pub const WHEN_ON: &str = "always";
/// `when` for auto-start off (the default the plugin ships with).
pub const WHEN_OFF: &str = "on-skill-invoke:inter-session:inter-session";
/// What `off` wrote before the skill was named as Claude Code invokes it
/// (it almost never fires); still reported as off, and `off` replaces it.
const WHEN_OFF_OLD: &str = "on-skill-invoke:inter-session";
/// The plugin's name in its `.claude-plugin/plugin.json`.
const PLUGIN_NAME: &str = "inter-session";

const EFFECT: &str = "takes effect after /reload-plugins or in the next Claude Code session";

/// `inter-session auto-start <action>`; an explicit plugin folder (the
/// `--plugin-dir` flag) takes precedence over every other way of finding it.
pub fn run_with(action: &str, json: bool, plugin_dir: Option<&Path>) -> Result<i32> {
    let want = match action {
        "on" => Some(WHEN_ON),
        "off" => Some(WHEN_OFF),
        "status" => None,
        other => {
            let other = other.escape_debug();
            return Err(
                UsageError(format!("auto-start takes on, off or status, not '{other}'")).into(),
            );
        }
    };
    let dir = find_plugin_dir(plugin_dir).ok_or_else(|| {
        UsageError(
            "cannot find the inter-session Claude Code plugin folder: set INTER_SESSION_PLUGIN_DIR \
             to it (the folder holding monitors/monitors.json), or run this through the plugin's \
             bin/inter-session launcher"
                .into(),
        )
    })?;
    let file = dir.join("monitors").join("monitors.json");
    if !file.is_file() {
        // A runtime failure (exit 1): the file the plugin ships is missing.
        anyhow::bail!(
            "no monitors file at {}: the plugin folder {} has no monitors/monitors.json \
             (set INTER_SESSION_PLUGIN_DIR to the inter-session plugin folder)",
            file.display(),
            dir.display()
        );
    }
    // Write beside the real file when monitors.json is a symlink.
    let file = fs::canonicalize(&file).unwrap_or(file);
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let monitor = find_monitor(&mut doc)
        .with_context(|| format!("{} has no monitor named '{MONITOR_NAME}'", file.display()))?;
    let current = current_when(monitor);
    let shown = file.display().to_string();

    let Some(want) = want else {
        let state = state_of(current.as_deref());
        if json {
            let when = current.as_deref().unwrap_or(WHEN_ON);
            let v = serde_json::json!({ "auto_start": state, "when": when, "file": shown });
            println!("{v}");
        } else {
            let when = current.as_deref().unwrap_or("(absent: always)");
            println!("auto-start {state} (when: {when}) in {shown}");
        }
        return Ok(0);
    };

    let changed = current.as_deref() != Some(want);
    if changed {
        monitor.insert("when".into(), want.into());
        write_atomically(&file, &render(&doc)?)?;
    }
    let state = state_of(Some(want));
    if json {
        let v = serde_json::json!({
            "auto_start": state, "when": want, "file": shown, "changed": changed,
        });
        println!("{v}");
        return Ok(0);
    }
    let how = if want == WHEN_ON {
        "the monitor starts with every Claude Code session"
    } else {
        "the monitor starts the first time the inter-session skill runs"
    };
    if changed {
        println!("auto-start {state}: {how} (when: {want} in {shown}); {EFFECT}");
    } else {
        println!("auto-start already {state}: {how} (when: {want} in {shown})");
    }
    Ok(0)
}

fn state_of(when: Option<&str>) -> &'static str {
    // Claude Code's default for a missing `when` is "always".
    match when {
        None | Some(WHEN_ON) => "on",
        Some(WHEN_OFF | WHEN_OFF_OLD) => "off",
        Some(_) => "custom",
    }
}

/// The `inter-session-client` monitor object: in a top-level array (the
/// format Claude Code reads), or in a `{"monitors": [...]}` object.
fn find_monitor(doc: &mut Value) -> Option<&mut Map<String, Value>> {
    let list = match doc {
        Value::Array(list) => list,
        Value::Object(o) => o.get_mut("monitors")?.as_array_mut()?,
        _ => return None,
    };
    list.iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|m| m.get("name").and_then(Value::as_str) == Some(MONITOR_NAME))
}

/// `None` when absent; a `when` that is not a string reads as "" (custom).
fn current_when(monitor: &Map<String, Value>) -> Option<String> {
    monitor
        .get("when")
        .map(|w| w.as_str().unwrap_or_default().to_string())
}

/// The file's text: serde_json's pretty form plus a final newline.
fn render(doc: &Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(doc)? + "\n")
}

fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let base = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{base}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        if let Ok(meta) = fs::metadata(file) {
            fs::set_permissions(&tmp, meta.permissions())
                .with_context(|| format!("setting the permissions of {}", tmp.display()))?;
        }
        fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------
// Finding the plugin folder

fn find_plugin_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env_dir("INTER_SESSION_PLUGIN_DIR"))
        // Claude Code sets it for whichever plugin runs the command: only ours counts.
        .or_else(|| env_dir("CLAUDE_PLUGIN_ROOT").filter(|d| is_our_plugin(d)))
        .or_else(beside_exe)
        .or_else(installed_by_claude_code)
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A folder whose `.claude-plugin/plugin.json` names this plugin.
fn is_our_plugin(dir: &Path) -> bool {
    fs::read_to_string(dir.join(".claude-plugin").join("plugin.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .is_some_and(|v| v["name"] == PLUGIN_NAME)
}

/// `<checkout>/plugin` when the running binary lives inside a checkout
/// (e.g. `<checkout>/target/debug/inter-session`).
fn beside_exe() -> Option<PathBuf> {
    let exe = fs::canonicalize(std::env::current_exe().ok()?).ok()?;
    exe.ancestors()
        .skip(1)
        .map(|a| a.join("plugin"))
        .find(|p| is_our_plugin(p))
}

/// The install path Claude Code recorded for `inter-session@<marketplace>`
/// (the most recently updated one when there are several).
fn installed_by_claude_code() -> Option<PathBuf> {
    let config =
        env_dir("CLAUDE_CONFIG_DIR").or_else(|| env_dir("HOME").map(|h| h.join(".claude")))?;
    let text = fs::read_to_string(config.join("plugins").join("installed_plugins.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let prefix = format!("{PLUGIN_NAME}@");
    v["plugins"]
        .as_object()?
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        // version 2: a list of installs; version 1: one object.
        .flat_map(|(_, entries)| match entries {
            Value::Array(list) => list.iter().collect(),
            one => vec![one],
        })
        .filter_map(|e| {
            let path = PathBuf::from(e["installPath"].as_str()?);
            let when = e["lastUpdated"].as_str().or(e["installedAt"].as_str());
            Some((when.unwrap_or_default(), path))
        })
        .filter(|(_, p)| p.join("monitors").join("monitors.json").is_file())
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SHIPPED: &str = include_str!("../../plugin/monitors/monitors.json");

    fn edit(text: &str, value: &str) -> String {
        let mut doc: Value = serde_json::from_str(text).unwrap();
        find_monitor(&mut doc)
            .unwrap()
            .insert("when".into(), value.into());
        render(&doc).unwrap()
    }

    fn when_in(text: &str) -> Option<String> {
        let mut doc: Value = serde_json::from_str(text).unwrap();
        current_when(find_monitor(&mut doc).unwrap())
    }

    #[test]
    fn the_shipped_file_is_off_and_only_the_when_value_changes() {
        assert_eq!(when_in(SHIPPED).as_deref(), Some(WHEN_OFF));
        let on = edit(SHIPPED, WHEN_ON);
        assert_eq!(
            on,
            SHIPPED.replace(&format!("\"{WHEN_OFF}\""), "\"always\"")
        );
        assert_eq!(edit(&on, WHEN_OFF), SHIPPED);
    }

    #[test]
    fn a_missing_when_is_added() {
        let mut doc: Value = serde_json::from_str(SHIPPED).unwrap();
        find_monitor(&mut doc).unwrap().remove("when");
        let text = render(&doc).unwrap();
        assert_eq!(when_in(&text), None);
        assert_eq!(edit(&text, WHEN_OFF), SHIPPED);
    }

    #[test]
    fn other_monitors_and_an_object_wrapper() {
        let text = r#"{"x": 1, "monitors": [{"name": "other", "when": "always"},
            {"when":"always","name":"inter-session-client","command":"c"}]}"#;
        let v: Value = serde_json::from_str(&edit(text, WHEN_OFF)).unwrap();
        assert_eq!(
            v["monitors"][0],
            serde_json::json!({"name": "other", "when": "always"})
        );
        assert_eq!(
            v["monitors"][1],
            serde_json::json!({"name": MONITOR_NAME, "command": "c", "when": WHEN_OFF})
        );
        assert_eq!(v["x"], 1);
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn strings_with_escapes_and_unicode_parse() {
        let text =
            "[{\"name\":\"inter-session-client\",\"d\":\"a\\\"]}\\u00e9 é\",\"when\":\"always\"}]";
        let v: Value = serde_json::from_str(&edit(text, WHEN_OFF)).unwrap();
        assert_eq!(v[0]["d"], "a\"]}é é");
        assert_eq!(v[0]["when"], WHEN_OFF);
    }

    #[test]
    fn states() {
        assert_eq!(state_of(None), "on");
        assert_eq!(state_of(Some("always")), "on");
        assert_eq!(state_of(Some(WHEN_OFF)), "off");
        assert_eq!(state_of(Some("on-skill-invoke:inter-session")), "off");
        assert_eq!(state_of(Some("on-skill-invoke:other")), "custom");
        assert_eq!(state_of(Some("")), "custom");
    }

    /// A plugin folder in a temp dir holding `monitors` as its monitors.json.
    fn plugin_with(monitors: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("monitors").join("monitors.json");
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, monitors).unwrap();
        (tmp, file)
    }

    #[test]
    fn off_replaces_the_old_value_and_keeps_the_permissions() {
        let (tmp, file) = plugin_with(&SHIPPED.replace(WHEN_OFF, WHEN_OFF_OLD));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(run_with("off", true, Some(tmp.path())).unwrap(), 0);
        assert_eq!(fs::read_to_string(&file).unwrap(), SHIPPED);
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(fs::read_dir(file.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_broken_or_missing_file_is_an_error_and_left_alone() {
        let broken = "[{\"name\": \"inter-session-client\", \"when\": \"always\",}]\n";
        let (tmp, file) = plugin_with(broken);
        let err = run_with("off", false, Some(tmp.path())).unwrap_err();
        assert!(format!("{err:#}").contains("is not valid JSON"), "{err:#}");
        assert!(!err.is::<UsageError>());
        assert_eq!(fs::read_to_string(&file).unwrap(), broken);

        fs::write(&file, "[{\"name\": \"other\"}]").unwrap();
        let err = run_with("on", false, Some(tmp.path())).unwrap_err();
        assert!(err.to_string().contains("no monitor named"), "{err}");

        fs::remove_file(&file).unwrap();
        let err = run_with("status", false, Some(tmp.path())).unwrap_err();
        assert!(err.to_string().contains("no monitors file"), "{err}");
        assert!(!err.is::<UsageError>(), "{err}");
        let err = run_with("maybe", false, Some(tmp.path())).unwrap_err();
        assert!(err.is::<UsageError>(), "{err}");
    }
}
