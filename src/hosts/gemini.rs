//! Gemini CLI's settings (SPEC §12): `$GEMINI_CLI_HOME/.gemini/settings.json`
//! (the variable stands for the home folder), overridden by the project's
//! `.gemini/settings.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::Value;

/// The user-level settings file.
pub fn user_settings() -> Option<PathBuf> {
    let home = std::env::var_os("GEMINI_CLI_HOME")
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()))?;
    Some(Path::new(&home).join(".gemini").join("settings.json"))
}

/// The project-level settings file for `cwd` (its own `.gemini/`).
pub fn project_settings(cwd: &Path) -> PathBuf {
    cwd.join(".gemini").join("settings.json")
}

/// A setting by dotted path, the project's file winning over the user's.
fn setting(files: &[Value], path: &[&str]) -> Option<Value> {
    files.iter().rev().find_map(|v| {
        let mut cur = v;
        for part in path {
            cur = cur.get(part)?;
        }
        Some(cur.clone())
    })
}

fn read(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(super::jsonc::parse(
            &text,
            &format!("Gemini CLI settings {}", path.display()),
        )?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => bail!("could not read {}: {e}", path.display()),
    }
}

/// Refuse (one line) unless Gemini CLI hands a background shell command's
/// output to the model on its own: `tools.shell.backgroundCompletionBehavior`
/// "inject" and `experimental.modelSteering` true. Without both, mail a
/// background `inbox wait` printed (and marked delivered) would be lost.
pub fn check_background_inject() -> Result<()> {
    let cwd = std::env::current_dir()?;
    let mut files = Vec::new();
    for path in user_settings().into_iter().chain([project_settings(&cwd)]) {
        if let Some(v) = read(&path)? {
            files.push(v);
        }
    }
    let inject = setting(&files, &["tools", "shell", "backgroundCompletionBehavior"])
        .is_some_and(|v| v == "inject");
    let steering = setting(&files, &["experimental", "modelSteering"]).is_some_and(|v| v == true);
    if !(inject && steering) {
        bail!(
            "under Gemini CLI, `inbox wait` needs tools.shell.backgroundCompletionBehavior \
             \"inject\" and experimental.modelSteering true in its settings (run \
             `inter-session setup gemini`): without them the mail it printed would never \
             reach the model"
        );
    }
    Ok(())
}
