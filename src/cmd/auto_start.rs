//! `auto-start on|off|status`: whether the Claude Code plugin's monitor
//! starts with every session (`when: "always"`) or the first time the
//! inter-session skill runs (`when: "on-skill-invoke:inter-session"`).
//!
//! It edits the `when` field of the `inter-session-client` entry in the
//! plugin's `monitors/monitors.json` in place: only that string's bytes
//! change (or one member is added when the field is missing), so the rest of
//! the file — other fields, other monitors, key order, formatting — is kept
//! exactly. The new file is written beside the old one and renamed over it.
//!
//! The plugin folder is, in order: `--plugin-dir` (where the caller offers
//! it), `$INTER_SESSION_PLUGIN_DIR` (the plugin's launcher sets it),
//! `$CLAUDE_PLUGIN_ROOT` when it is this plugin, a `plugin/` folder in a
//! checkout holding the running binary, then the plugin as Claude Code
//! installed it (`~/.claude/plugins/installed_plugins.json`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The monitor this command edits.
pub const MONITOR_NAME: &str = "inter-session-client";
/// `when` for auto-start on.
pub const WHEN_ON: &str = "always";
/// `when` for auto-start off (the default the plugin ships with).
pub const WHEN_OFF: &str = "on-skill-invoke:inter-session";
/// The plugin's name in its `.claude-plugin/plugin.json`.
const PLUGIN_NAME: &str = "inter-session";

const EFFECT: &str = "takes effect after /reload-plugins or in the next Claude Code session";

/// `inter-session auto-start <action>`, finding the plugin folder by itself.
pub fn run(action: &str, json: bool) -> Result<i32> {
    run_with(action, json, None)
}

/// Like [`run`], with an explicit plugin folder (a `--plugin-dir` flag) that
/// takes precedence over every other way of finding it.
pub fn run_with(action: &str, json: bool, plugin_dir: Option<&Path>) -> Result<i32> {
    let want = match action {
        "on" => Some(WHEN_ON),
        "off" => Some(WHEN_OFF),
        "status" => None,
        other => {
            eprintln!(
                "inter-session: auto-start takes on, off or status, not '{}'",
                other.escape_debug()
            );
            return Ok(2);
        }
    };
    let dir = match find_plugin_dir(plugin_dir) {
        Ok(d) => d,
        Err(msg) => {
            eprintln!("inter-session: {msg}");
            return Ok(2);
        }
    };
    let file = dir.join("monitors").join("monitors.json");
    if !file.is_file() {
        eprintln!(
            "inter-session: no monitors file at {}: the plugin folder {} has no monitors/monitors.json \
             (set INTER_SESSION_PLUGIN_DIR to the inter-session plugin folder)",
            file.display(),
            dir.display()
        );
        return Ok(2);
    }
    // Write beside the real file when monitors.json is a symlink.
    let file = fs::canonicalize(&file).unwrap_or(file);
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let doc =
        Parser::parse(&text).with_context(|| format!("{} is not valid JSON", file.display()))?;
    let Some(monitor) = find_monitor(&doc) else {
        bail!("{} has no monitor named '{MONITOR_NAME}'", file.display());
    };
    let current = current_when(monitor);

    let Some(want) = want else {
        let state = state_of(current.as_deref());
        if json {
            let v = serde_json::json!({
                "auto_start": state,
                "when": current.as_deref().unwrap_or(WHEN_ON),
                "file": file.display().to_string(),
            });
            println!("{v}");
        } else {
            let shown = current.as_deref().unwrap_or("(absent: always)");
            println!("auto-start {state} (when: {shown}) in {}", file.display());
        }
        return Ok(0);
    };

    let changed = current.as_deref() != Some(want);
    if changed {
        let new_text = set_when(&text, monitor, want)?;
        // Never write a file Claude Code could not read back.
        Parser::parse(&new_text)
            .context("internal error: the edited monitors.json does not parse")?;
        write_atomically(&file, &new_text)?;
    }
    if json {
        let v = serde_json::json!({
            "auto_start": state_of(Some(want)),
            "when": want,
            "file": file.display().to_string(),
            "changed": changed,
        });
        println!("{v}");
    } else {
        let state = state_of(Some(want));
        let how = if want == WHEN_ON {
            "the monitor starts with every Claude Code session"
        } else {
            "the monitor starts the first time the inter-session skill runs"
        };
        if changed {
            println!(
                "auto-start {state}: {how} (when: {want} in {}); {EFFECT}",
                file.display()
            );
        } else {
            println!(
                "auto-start already {state}: {how} (when: {want} in {})",
                file.display()
            );
        }
    }
    Ok(0)
}

fn state_of(when: Option<&str>) -> &'static str {
    // Claude Code's default for a missing `when` is "always".
    match when {
        None | Some(WHEN_ON) => "on",
        Some(WHEN_OFF) => "off",
        Some(_) => "custom",
    }
}

// ---------------------------------------------------------------------------
// Finding the plugin folder

fn find_plugin_dir(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = env_dir("INTER_SESSION_PLUGIN_DIR") {
        return Ok(d);
    }
    if let Some(d) = env_dir("CLAUDE_PLUGIN_ROOT") {
        // Claude Code sets it for whichever plugin runs the command: only ours counts.
        if is_our_plugin(&d) {
            return Ok(d);
        }
    }
    if let Some(d) = beside_exe() {
        return Ok(d);
    }
    if let Some(d) = installed_by_claude_code() {
        return Ok(d);
    }
    Err(
        "cannot find the inter-session Claude Code plugin folder: set INTER_SESSION_PLUGIN_DIR \
         to it (the folder holding monitors/monitors.json), or run this through the plugin's \
         bin/inter-session launcher"
            .to_string(),
    )
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A folder whose `.claude-plugin/plugin.json` names this plugin.
fn is_our_plugin(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(".claude-plugin").join("plugin.json")) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map(|v| v["name"] == PLUGIN_NAME)
        .unwrap_or(false)
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
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for (id, entries) in v["plugins"].as_object()? {
        if !id.starts_with(&format!("{PLUGIN_NAME}@")) {
            continue;
        }
        // version 2: a list of installs; version 1: one object.
        let list = match entries {
            serde_json::Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for e in list {
            if let Some(p) = e["installPath"].as_str() {
                let when = e["lastUpdated"]
                    .as_str()
                    .or(e["installedAt"].as_str())
                    .unwrap_or("")
                    .to_string();
                let p = PathBuf::from(p);
                if p.join("monitors").join("monitors.json").is_file() {
                    found.push((when, p));
                }
            }
        }
    }
    found
        .into_iter()
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, p)| p)
}

// ---------------------------------------------------------------------------
// Editing

fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let base = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "monitors.json".into());
    let tmp = dir.join(format!(".{base}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = fs::metadata(file) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The `inter-session-client` monitor object: in a top-level array (the
/// format Claude Code reads), or in a `{"monitors": [...]}` object.
fn find_monitor(doc: &Node) -> Option<&Node> {
    let list = match doc {
        Node::Array { items, .. } => items,
        Node::Object { .. } => match doc.member("monitors") {
            Some(Node::Array { items, .. }) => items,
            _ => return None,
        },
        _ => return None,
    };
    list.iter().find(
        |m| matches!(m.member("name"), Some(Node::Str { value, .. }) if value == MONITOR_NAME),
    )
}

fn current_when(monitor: &Node) -> Option<String> {
    match monitor.member("when") {
        Some(Node::Str { value, .. }) => Some(value.clone()),
        Some(_) => Some(String::new()),
        None => None,
    }
}

/// `text` with the monitor's `when` set to `value`: the old value's bytes
/// replaced, or a `"when"` member added after the last one.
fn set_when(text: &str, monitor: &Node, value: &str) -> Result<String> {
    let quoted = serde_json::to_string(value)?;
    let Node::Object { members, span } = monitor else {
        bail!("the '{MONITOR_NAME}' monitor is not a JSON object");
    };
    if let Some((_, node)) = members.iter().find(|(k, _)| k == "when") {
        let (a, b) = node.span();
        return Ok(format!("{}{}{}", &text[..a], quoted, &text[b..]));
    }
    match members.last() {
        Some((_, last)) => {
            // On its own line, with the previous member's indentation, when
            // that member sits on a line of its own inside this object.
            let (_, end) = last.span();
            let sep = match text[..end].rfind('\n') {
                Some(nl) if nl > span.0 => {
                    let indent: String = text[nl + 1..end]
                        .chars()
                        .take_while(|c| *c == ' ' || *c == '\t')
                        .collect();
                    format!("\n{indent}")
                }
                _ => " ".to_string(),
            };
            Ok(format!(
                "{},{}\"when\": {}{}",
                &text[..end],
                sep,
                quoted,
                &text[end..]
            ))
        }
        None => {
            let (a, _) = *span;
            Ok(format!(
                "{}{{\"when\": {}{}",
                &text[..a],
                quoted,
                &text[a + 1..]
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// A small JSON parser that keeps byte spans, so an edit touches only the
// bytes it must. Strict JSON (RFC 8259), as Claude Code reads it.

#[derive(Debug)]
enum Node {
    Object {
        members: Vec<(String, Node)>,
        span: (usize, usize),
    },
    Array {
        items: Vec<Node>,
        span: (usize, usize),
    },
    Str {
        value: String,
        span: (usize, usize),
    },
    Other {
        span: (usize, usize),
    },
}

impl Node {
    fn span(&self) -> (usize, usize) {
        match self {
            Node::Object { span, .. }
            | Node::Array { span, .. }
            | Node::Str { span, .. }
            | Node::Other { span } => *span,
        }
    }

    fn member(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object { members, .. } => {
                members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn parse(text: &'a str) -> Result<Node> {
        // serde_json is the judge of validity; this parser only finds spans.
        serde_json::from_str::<serde_json::Value>(text)?;
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let node = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            bail!("trailing characters at byte {}", p.i);
        }
        Ok(node)
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        self.ws();
        if self.peek() != Some(c) {
            bail!("expected '{}' at byte {}", c as char, self.i);
        }
        self.i += 1;
        Ok(())
    }

    fn value(&mut self) -> Result<Node> {
        self.ws();
        let start = self.i;
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        let key = match self.string()? {
                            Node::Str { value, .. } => value,
                            _ => unreachable!(),
                        };
                        self.expect(b':')?;
                        let v = self.value()?;
                        members.push((key, v));
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => bail!("expected ',' or '}}' at byte {}", self.i),
                        }
                    }
                }
                Ok(Node::Object {
                    members,
                    span: (start, self.i),
                })
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => bail!("expected ',' or ']' at byte {}", self.i),
                        }
                    }
                }
                Ok(Node::Array {
                    items,
                    span: (start, self.i),
                })
            }
            Some(b'"') => self.string(),
            Some(_) => {
                while self.i < self.s.len()
                    && !matches!(
                        self.s[self.i],
                        b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'
                    )
                {
                    self.i += 1;
                }
                Ok(Node::Other {
                    span: (start, self.i),
                })
            }
            None => bail!("unexpected end of input"),
        }
    }

    fn string(&mut self) -> Result<Node> {
        self.ws();
        let start = self.i;
        if self.peek() != Some(b'"') {
            bail!("expected a string at byte {}", self.i);
        }
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    let raw = std::str::from_utf8(&self.s[start..self.i])?;
                    let value: String = serde_json::from_str(raw)?;
                    return Ok(Node::Str {
                        value,
                        span: (start, self.i),
                    });
                }
                _ => self.i += 1,
            }
        }
        bail!("unterminated string")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = r#"[
  {
    "name": "inter-session-client",
    "command": "\"${CLAUDE_PLUGIN_ROOT}/bin/inter-session\" inbox watch --auto",
    "description": "inter-session messages",
    "when": "on-skill-invoke:inter-session"
  }
]
"#;

    fn edit(text: &str, value: &str) -> String {
        let doc = Parser::parse(text).unwrap();
        set_when(text, find_monitor(&doc).unwrap(), value).unwrap()
    }

    #[test]
    fn only_the_when_value_changes() {
        let on = edit(SHIPPED, WHEN_ON);
        assert_eq!(
            on,
            SHIPPED.replace("on-skill-invoke:inter-session", "always")
        );
        assert_eq!(edit(&on, WHEN_OFF), SHIPPED);
    }

    #[test]
    fn a_missing_when_is_added_with_the_same_indent() {
        let text = SHIPPED.replace(",\n    \"when\": \"on-skill-invoke:inter-session\"", "");
        let doc = Parser::parse(&text).unwrap();
        assert_eq!(current_when(find_monitor(&doc).unwrap()), None);
        assert_eq!(edit(&text, WHEN_OFF), SHIPPED);
    }

    #[test]
    fn other_monitors_and_an_object_wrapper() {
        let text = r#"{"x": 1, "monitors": [{"name": "other", "when": "always"},
            {"when":"always","name":"inter-session-client","command":"c"}]}"#;
        let out = edit(text, WHEN_OFF);
        assert_eq!(
            out,
            text.replacen(
                r#""when":"always""#,
                r#""when":"on-skill-invoke:inter-session""#,
                1
            )
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["monitors"][0]["when"], "always");
        assert_eq!(v["x"], 1);
    }

    #[test]
    fn strings_with_escapes_and_unicode_parse() {
        let text =
            "[{\"name\":\"inter-session-client\",\"d\":\"a\\\"]}\\u00e9 é\",\"when\":\"always\"}]";
        let out = edit(text, WHEN_OFF);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["d"], "a\"]}é é");
        assert_eq!(v[0]["when"], WHEN_OFF);
    }

    #[test]
    fn states() {
        assert_eq!(state_of(None), "on");
        assert_eq!(state_of(Some("always")), "on");
        assert_eq!(state_of(Some(WHEN_OFF)), "off");
        assert_eq!(state_of(Some("on-skill-invoke:other")), "custom");
    }
}
