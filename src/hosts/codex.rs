//! Codex CLI's configuration (SPEC §12): `$CODEX_HOME` (default `~/.codex`)
//! holds `hooks.json` and `config.toml`; a hook runs only once trusted, by a
//! `[hooks.state."<hooks file>:<event>:<group>:<handler>"] trusted_hash`
//! entry in `config.toml` whose hash matches what Codex computes for the
//! handler (checked against `codex app-server`'s `hooks/list` in
//! tests/codex_e2e.rs).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

/// `$CODEX_HOME`, else `~/.codex`.
pub fn home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(Path::new(&h).join(".codex")),
        None => bail!("neither CODEX_HOME nor HOME is set: cannot find Codex's configuration"),
    }
}

/// An event's name as trust keys and hashes spell it (`SessionStart` →
/// `session_start`).
pub fn event_label(event: &str) -> String {
    let mut out = String::new();
    for (i, c) in event.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The trust key of handler `handler` of group `group` of `event` in
/// `hooks_file`.
pub fn trust_key(hooks_file: &Path, event: &str, group: usize, handler: usize) -> String {
    format!(
        "{}:{}:{group}:{handler}",
        hooks_file.display(),
        event_label(event)
    )
}

/// What Codex 0.171 hashes for one command handler: `sha256:` and the hex
/// SHA-256 of the compact JSON, keys sorted at every level, of
/// `{"event_name", "hooks": [{"async", "command", "statusMessage"?,
/// "timeout" (default 600), "type"}], "matcher"?}` (no matcher for events
/// that take none: UserPromptSubmit, Stop).
pub fn trust_hash(event: &str, matcher: Option<&str>, handler: &Value) -> String {
    let mut h = json!({
        "async": handler["async"].as_bool().unwrap_or(false),
        "command": handler["command"],
        "timeout": handler["timeout"].as_u64().unwrap_or(600).max(1),
        "type": "command",
    });
    if let Some(s) = handler["statusMessage"].as_str() {
        h["statusMessage"] = json!(s);
    }
    let mut identity = json!({"event_name": event_label(event), "hooks": [h]});
    if let Some(m) = matcher.filter(|_| !matches!(event, "UserPromptSubmit" | "Stop")) {
        identity["matcher"] = json!(m);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical(&identity).as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Compact JSON with object keys sorted at every level.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash `hooks/list` reported for this handler (tests/codex_e2e.rs).
    #[test]
    fn the_hash_codex_computes() {
        let handler = json!({"type": "command", "command": "/tmp/cx/hk/gen.sh PostToolUse"});
        let h = trust_hash("PostToolUse", None, &handler);
        assert!(h.starts_with("sha256:26be818d"), "{h}");
        assert!(h.ends_with("a880a"), "{h}");
        assert_eq!(event_label("UserPromptSubmit"), "user_prompt_submit");
    }
}
