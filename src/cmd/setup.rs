//! `setup <host>`: wire a host's hooks to `inter-session hook <host> …` in
//! the host's own configuration, keeping everything else in the files.
//!
//! - Codex: `$CODEX_HOME/hooks.json` (or the repository's
//!   `.codex/hooks.json` with `--project`) and the trust entries Codex needs
//!   in `$CODEX_HOME/config.toml` (edited with `toml_edit`: comments and
//!   layout stay). Other hooks keep their place and their trust: ours keeps
//!   its group index when it is replaced, and when it is removed the trust
//!   entries of the groups after it move down with them.
//! - Gemini CLI: `$GEMINI_CLI_HOME/.gemini/settings.json` (or the
//!   repository's `.gemini/settings.json`): the hooks, and the two settings
//!   a background `inbox wait` needs. A file with comments is not rewritten
//!   (they would be lost): the lines to add are printed instead.
//! - Claude Code: the plugin carries the hooks; this says how to install it.
//!
//! Idempotent; `--dry-run` prints what would change; a file is backed up
//! (`<file>.inter-session.bak`) before its first change; one line per change.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::hook::Host;
use crate::hosts::{codex, gemini, jsonc};
use crate::{identity, line};

/// What `setup` was asked to do.
pub struct Options<'a> {
    pub project: bool,
    pub dry_run: bool,
    pub remove: bool,
    /// The mailbox name SessionStart registers (Codex, Gemini).
    pub name: Option<&'a str>,
    /// Codex: SessionStart starts the session's deliverer (`hook … --push`).
    pub push: bool,
}

/// The events we hook, per host, and the hook timeout (the host's unit).
const CODEX_EVENTS: &[&str] = &["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"];
const CODEX_TIMEOUT_S: u64 = 30;
const GEMINI_EVENTS: &[&str] = &[
    "SessionStart",
    "BeforeAgent",
    "AfterTool",
    "AfterAgent",
    "SessionEnd",
];
const GEMINI_TIMEOUT_MS: u64 = 30_000;

pub fn run(host: Host, opts: &Options) -> Result<i32> {
    if let Some(n) = opts.name {
        identity::validate_name(n)?;
    }
    match host {
        Host::Claude => claude(),
        Host::Codex => setup_codex(opts),
        Host::Gemini => setup_gemini(opts),
    }
}

fn claude() -> Result<i32> {
    let plugin = std::env::var_os("INTER_SESSION_PLUGIN_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || "<inter-session checkout>/plugin".to_string(),
            |p| p.display().to_string(),
        );
    println!(
        "setup claude: the Claude Code plugin carries the monitor, the hooks and the skills; install it:\n  \
         claude plugin install inter-session --marketplace <inter-session checkout>\n\
         (or, inside Claude Code: /plugin install inter-session --marketplace <inter-session checkout>;\n\
         to try it without installing: claude --plugin-dir {})",
        line::field(&plugin)
    );
    Ok(0)
}

/// The command a host's hook runs: this binary by absolute path (Codex runs
/// hooks through a login shell that may reset PATH), single-quoted.
fn hook_command(host: &str, event: &str, name: Option<&str>, push: bool) -> Result<String> {
    let exe = std::env::current_exe().context("could not find this program's path")?;
    let exe = exe.to_str().context("this program's path is not UTF-8")?;
    let mut cmd = format!("{} hook {host} {event}", shell_quote(exe));
    if let (Some(n), "SessionStart") = (name, event) {
        cmd.push_str(&format!(" --name {}", shell_quote(n)));
    }
    if push && event == "SessionStart" {
        cmd.push_str(" --push");
    }
    Ok(cmd)
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether a hook handler is one of ours for `host`.
fn is_ours(handler: &Value, host: &str) -> bool {
    handler["command"]
        .as_str()
        .is_some_and(|c| c.contains("inter-session") && c.contains(&format!(" hook {host} ")))
}

/// The index of the group holding our handler, in an event's group list.
fn our_group(groups: &[Value], host: &str) -> Option<usize> {
    groups.iter().position(|g| {
        g["hooks"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| is_ours(h, host)))
    })
}

/// The git root of the current directory (for `--project`).
fn project_root() -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let root = identity::project_of(&cwd);
    if !root.join(".git").exists() {
        bail!(
            "--project: {} is not inside a git repository",
            line::field(&cwd.display().to_string())
        );
    }
    Ok(root)
}

/// A JSON file's document (`{}` when absent); one clear line when it cannot
/// be read or parsed, leaving it as it is. The flag says it has comments.
fn read_json(path: &Path, what: &str) -> Result<(Value, bool)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((json!({}), false)),
        Err(e) => bail!("could not read {}: {e}", path.display()),
    };
    let commented = jsonc::strip_comments(&text) != text;
    let v = jsonc::parse(&text, &format!("{what} {}", path.display()))?;
    if !v.is_object() {
        bail!("{what} {} is not a JSON object", path.display());
    }
    Ok((v, commented))
}

/// Write `text` to `path` (backed up first, created with its folder when
/// new), through a temporary file and a rename.
fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    if path.exists() {
        let backup = PathBuf::from(format!("{}.inter-session.bak", path.display()));
        if !backup.exists() {
            std::fs::copy(path, &backup)
                .with_context(|| format!("could not back up {}", path.display()))?;
            println!("backed up {} -> {}", path.display(), backup.display());
        }
    }
    let tmp = PathBuf::from(format!("{}.inter-session.tmp", path.display()));
    std::fs::write(&tmp, text).with_context(|| format!("could not write {}", tmp.display()))?;
    // Keep the file's permissions (a config may be private).
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).with_context(|| format!("could not replace {}", path.display()))
}

/// Put our group for each event into a `hooks` object (in place when there,
/// else appended), or take it out. Returns the change lines and, per event,
/// how group indices moved: (old index, new index or None when removed).
type Moves = Vec<(String, Vec<(usize, Option<usize>)>)>;

fn edit_hooks(
    hooks: &mut serde_json::Map<String, Value>,
    host: &str,
    events: &[&str],
    handler_for: impl Fn(&str) -> Result<Value>,
    remove: bool,
) -> Result<(Vec<String>, Moves)> {
    let mut changes = Vec::new();
    let mut moves = Vec::new();
    for event in events {
        let entry = hooks.entry(event.to_string()).or_insert_with(|| json!([]));
        let Some(groups) = entry.as_array_mut() else {
            bail!("hooks.{event} is not a list");
        };
        let ours = our_group(groups, host);
        let mut moved = Vec::new();
        if remove {
            if let Some(i) = ours {
                groups.remove(i);
                moved.push((i, None));
                for later in i..groups.len() {
                    moved.push((later + 1, Some(later)));
                }
                changes.push(format!("{event} hook: removed"));
            }
            if groups.is_empty() {
                hooks.remove(*event);
            }
        } else {
            let group = json!({"hooks": [handler_for(event)?]});
            match ours {
                Some(i) if groups[i] == group => {}
                Some(i) => {
                    groups[i] = group;
                    changes.push(format!("{event} hook: updated"));
                }
                None => {
                    groups.push(group);
                    changes.push(format!("{event} hook: added"));
                }
            }
        }
        moves.push((event.to_string(), moved));
    }
    Ok((changes, moves))
}

fn setup_codex(opts: &Options) -> Result<i32> {
    let home = codex::home()?;
    let hooks_path = if opts.project {
        project_root()?.join(".codex").join("hooks.json")
    } else {
        home.join("hooks.json")
    };
    let config_path = home.join("config.toml");
    let (mut doc, _) = read_json(&hooks_path, "Codex hooks file")?;
    let config_text = match std::fs::read_to_string(&config_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("could not read {}: {e}", config_path.display()),
    };
    let mut config: toml_edit::DocumentMut = config_text
        .parse()
        .with_context(|| format!("could not parse Codex config {}", config_path.display()))?;

    let root = doc.as_object_mut().context("not an object")?;
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let Some(hooks) = hooks.as_object_mut() else {
        bail!("{}: \"hooks\" is not an object", hooks_path.display());
    };
    let handler_for = |event: &str| -> Result<Value> {
        Ok(json!({
            "type": "command",
            "command": hook_command("codex", event, opts.name, opts.push)?,
            "timeout": CODEX_TIMEOUT_S,
        }))
    };
    let (mut changes, moves) = edit_hooks(hooks, "codex", CODEX_EVENTS, handler_for, opts.remove)?;
    if hooks.is_empty() && opts.remove {
        root.remove("hooks");
    }

    // Trust: our entries at our groups' indices; entries of groups that
    // moved follow them; entries of a removed group go.
    let state = config
        .entry("hooks")
        .or_insert_with(implicit_table)
        .as_table_like_mut()
        .context("config.toml: hooks is not a table")?
        .entry("state")
        .or_insert(implicit_table())
        .as_table_like_mut()
        .context("config.toml: hooks.state is not a table")?;
    let mut trust_changes = 0;
    for (event, moved) in &moves {
        // Lowest first when moving down, so no entry lands on one not yet moved.
        for (old, new) in moved {
            let old_key = codex::trust_key(&hooks_path, event, *old, 0);
            let prefix_old = old_key.trim_end_matches(":0").to_string();
            let keys: Vec<String> = state
                .iter()
                .map(|(k, _)| k.to_string())
                .filter(|k| k.starts_with(&format!("{prefix_old}:")))
                .collect();
            for k in keys {
                let item = state.remove(&k);
                trust_changes += 1;
                if let (Some(item), Some(new)) = (item, new) {
                    let handler = k.rsplit(':').next().unwrap_or("0");
                    let new_key = format!(
                        "{}:{}:{new}:{handler}",
                        hooks_path.display(),
                        codex::event_label(event)
                    );
                    state.insert(&new_key, item);
                }
            }
        }
    }
    if !opts.remove {
        let hooks = doc["hooks"].as_object().context("hooks")?;
        for event in CODEX_EVENTS {
            let groups = hooks[*event].as_array().context("our event")?;
            let Some(g) = our_group(groups, "codex") else {
                continue;
            };
            let handler = &groups[g]["hooks"][0];
            let key = codex::trust_key(&hooks_path, event, g, 0);
            let hash = codex::trust_hash(event, None, handler);
            let current = state
                .get(&key)
                .and_then(|t| t.as_table_like())
                .and_then(|t| t.get("trusted_hash"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
            if current.as_deref() != Some(hash.as_str()) {
                let mut table = toml_edit::Table::new();
                table.insert("trusted_hash", toml_edit::value(hash));
                state.insert(&key, toml_edit::Item::Table(table));
                changes.push(format!("{event} hook: trusted in config.toml"));
            }
        }
    } else if trust_changes > 0 {
        changes.push(format!(
            "config.toml: {trust_changes} trust entries moved or removed"
        ));
    }
    // Leave no empty `[hooks.state]` behind.
    if state.is_empty() {
        if let Some(h) = config.get_mut("hooks").and_then(|h| h.as_table_like_mut()) {
            h.remove("state");
            if h.is_empty() {
                config.remove("hooks");
            }
        }
    }

    report(
        "codex",
        opts,
        &changes,
        &[
            (&hooks_path, pretty(&doc)?),
            (&config_path, config.to_string()),
        ],
    )
}

fn implicit_table() -> toml_edit::Item {
    let mut t = toml_edit::Table::new();
    t.set_implicit(true);
    toml_edit::Item::Table(t)
}

fn pretty(v: &Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

fn setup_gemini(opts: &Options) -> Result<i32> {
    let path = if opts.project {
        project_root()?.join(".gemini").join("settings.json")
    } else {
        gemini::user_settings()
            .context("neither GEMINI_CLI_HOME nor HOME is set: cannot find Gemini CLI's settings")?
    };
    let (mut doc, commented) = read_json(&path, "Gemini CLI settings")?;
    let before = doc.clone();
    let root = doc.as_object_mut().context("not an object")?;
    let hooks = root.entry("hooks").or_insert_with(|| json!({}));
    let Some(hooks) = hooks.as_object_mut() else {
        bail!("{}: \"hooks\" is not an object", path.display());
    };
    let handler_for = |event: &str| -> Result<Value> {
        Ok(json!({
            "type": "command",
            "command": hook_command("gemini", event, opts.name, false)?,
            "timeout": GEMINI_TIMEOUT_MS,
        }))
    };
    let (mut changes, _) = edit_hooks(hooks, "gemini", GEMINI_EVENTS, handler_for, opts.remove)?;
    if hooks.is_empty() && opts.remove {
        root.remove("hooks");
    }
    if !opts.remove {
        // What a background `inbox wait` needs (left on by --remove: other
        // tools may rely on them).
        for (path_keys, value) in [
            (
                &["tools", "shell", "backgroundCompletionBehavior"][..],
                json!("inject"),
            ),
            (&["experimental", "modelSteering"][..], json!(true)),
        ] {
            let mut cur = &mut doc;
            for k in &path_keys[..path_keys.len() - 1] {
                if !cur[*k].is_object() {
                    cur[*k] = json!({});
                }
                cur = &mut cur[*k];
            }
            let last = path_keys[path_keys.len() - 1];
            if cur[last] != value {
                cur[last] = value.clone();
                changes.push(format!("{}: set to {value}", path_keys.join(".")));
            }
        }
    }
    if commented && doc != before {
        bail!(
            "{} has comments, which rewriting it would lose; add this by hand: {}",
            path.display(),
            serde_json::to_string(&doc)?
        );
    }
    report("gemini", opts, &changes, &[(&path, pretty(&doc)?)])
}

/// Print one line per change (or that nothing changes) and write the files
/// whose text changes, unless it is a dry run.
fn report(
    host: &str,
    opts: &Options,
    changes: &[String],
    files: &[(&PathBuf, String)],
) -> Result<i32> {
    if changes.is_empty() {
        println!(
            "setup {host}: nothing to change ({})",
            if opts.remove {
                "not set up"
            } else {
                "already set up"
            }
        );
        return Ok(0);
    }
    for c in changes {
        if opts.dry_run {
            println!("setup {host} (dry run, nothing written): {c}");
        } else {
            println!("setup {host}: {c}");
        }
    }
    if opts.dry_run {
        return Ok(0);
    }
    for (path, text) in files {
        let old = std::fs::read_to_string(path).ok();
        let empty = matches!(text.trim(), "" | "{}");
        if old.as_deref() == Some(text.as_str()) || (old.is_none() && empty) {
            continue;
        }
        write_file(path, text)?;
        println!("setup {host}: wrote {}", path.display());
    }
    Ok(0)
}
