//! `lease take|release|list|check|install-hook`: file leases and the git
//! pre-commit guard (SPEC §11). The rules live in `store::leases`.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{me, me_if_any, open, parse_age, print_table};
use crate::identity::{self, UsageError};
use crate::lease_glob::Pattern;
use crate::line::{self, field, safe_name};
use crate::store::leases::{Lease, Leases, Request, DEFAULT_TTL_SECS};
use crate::store::{Mailbox, NewMessage, Recipients, Verbs};

/// The project (git root) of the working folder, as stored.
fn project() -> Result<(PathBuf, PathBuf)> {
    let cwd = std::env::current_dir().context("could not read the working folder")?;
    let cwd = std::fs::canonicalize(&cwd).unwrap_or(cwd);
    Ok((identity::project_of(&cwd), cwd))
}

/// `a/./b/../c` → `a/c`, lexically (a path that climbs above its start
/// keeps its `..`, so the check below refuses it).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `p` with its longest existing ancestor resolved (symbolic links, as
/// the project root is), the rest kept: `/tmp/link/src/*.rs` names the
/// same files as `/real/repo/src/*.rs`.
fn resolved(p: &Path) -> PathBuf {
    for base in p.ancestors() {
        if let Ok(real) = std::fs::canonicalize(base) {
            return match p.strip_prefix(base) {
                Ok(rest) if !rest.as_os_str().is_empty() => real.join(rest),
                _ => real,
            };
        }
    }
    p.to_path_buf()
}

/// A path or glob as typed (relative to the working folder, or absolute
/// inside the project) → a pattern relative to the project root. A plain
/// path naming a folder covers everything under it.
fn pattern(arg: &str, root: &Path, cwd: &Path) -> Result<Pattern> {
    if arg.trim().is_empty() {
        return Err(UsageError("empty path or glob".into()).into());
    }
    let given = Path::new(arg);
    let full = if given.is_absolute() {
        resolved(&lexical(given))
    } else {
        lexical(&cwd.join(given))
    };
    let Ok(rel) = full.strip_prefix(root) else {
        return Err(UsageError(format!(
            "'{}' is outside the project ({}): leases are on paths inside it",
            arg.escape_debug(),
            root.display()
        ))
        .into());
    };
    let text = rel
        .to_str()
        .ok_or_else(|| UsageError(format!("'{}' is not valid UTF-8", arg.escape_debug())))?;
    let text = if text.is_empty() { "." } else { text };
    let p = Pattern::parse(text).map_err(|e| {
        UsageError(format!(
            "invalid path or glob '{}': {e}",
            arg.escape_debug()
        ))
    })?;
    if p.is_literal() && root.join(p.as_str()).is_dir() {
        return Ok(p.as_directory());
    }
    Ok(p)
}

fn patterns(args: &[String]) -> Result<(String, Vec<Pattern>)> {
    let (root, cwd) = project()?;
    let ps = args
        .iter()
        .map(|a| pattern(a, &root, &cwd))
        .collect::<Result<Vec<_>>>()?;
    Ok((root.display().to_string(), ps))
}

fn ago(at: &str) -> String {
    line::since(at).unwrap_or_default()
}

fn until(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            let secs = (t.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
            line::format_age(u64::try_from(secs).unwrap_or(0))
        })
        .unwrap_or_default()
}

fn mode(l: &Lease) -> &'static str {
    if l.exclusive {
        "exclusive"
    } else {
        "shared"
    }
}

/// One line about a lease in the way, with how to ask its holder (a
/// command that pastes into a shell as it is, whatever the file is called).
fn in_the_way(what: &str, l: &Lease) -> String {
    let reason = if l.reason.is_empty() {
        String::new()
    } else {
        format!(": \"{}\"", line::sanitize(&l.reason))
    };
    let what = field(what);
    format!(
        "{what}: leased by {holder} ({mode} '{pattern}', since {since}{reason}); ask them: \
         inter-session mail ask --to {holder} --text {question}",
        holder = safe_name(&l.holder),
        mode = mode(l),
        pattern = field(&l.pattern),
        since = ago(&l.created_at),
        question = line::sh_quote(&format!("question: may I change {what}?")),
    )
}

pub struct TakeArgs<'a> {
    pub paths: &'a [String],
    pub ttl: Option<&'a str>,
    pub reason: &'a str,
    pub shared: bool,
    pub force: bool,
    pub json: bool,
}

/// `lease take`.
pub fn take(from: Option<&str>, a: &TakeArgs) -> Result<i32> {
    let ttl_secs = match a.ttl {
        Some(t) => match parse_age(t)? {
            0 => {
                return Err(
                    UsageError(format!("invalid --ttl '{t}': it must be longer than 0")).into(),
                )
            }
            s => s,
        },
        None => DEFAULT_TTL_SECS,
    };
    let reason = identity::validate_label(a.reason)
        .map_err(|e| UsageError(format!("invalid --reason: {}", e.0)))?;
    let (project, ps) = patterns(a.paths)?;
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    if session.state == crate::store::State::Left {
        return Err(crate::store::LookupError::Left(session.name).into());
    }
    let out = store.take_leases(
        session.id,
        &Request {
            project: &project,
            patterns: &ps,
            ttl_secs,
            reason: &reason,
            exclusive: !a.shared,
            force: a.force,
        },
    )?;
    if !out.conflicts.is_empty() {
        if a.json {
            let list: Vec<_> = out
                .conflicts
                .iter()
                .map(|c| serde_json::json!({"wanted": c.wanted, "lease": c.lease}))
                .collect();
            println!("{}", serde_json::json!({"granted": [], "conflicts": list}));
        }
        // One line per lease in the way, and nothing else: nothing was leased.
        for c in &out.conflicts {
            eprintln!("{}", in_the_way(&c.wanted, &c.lease));
        }
        return Ok(1);
    }
    for l in &out.taken_over {
        tell_holder(store.as_ref(), &session.address(), l, &reason);
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"granted": out.granted, "taken_over": out.taken_over})
        );
    } else {
        for l in &out.taken_over {
            println!(
                "took over '{}' from {} (told)",
                field(&l.pattern),
                safe_name(&l.holder)
            );
        }
        for l in &out.granted {
            println!(
                "leased '{}' ({}, {})",
                field(&l.pattern),
                mode(l),
                line::format_age(ttl_secs)
            );
        }
    }
    Ok(0)
}

/// Mail the holder of a lease taken over with `--force`.
fn tell_holder(store: &dyn Mailbox, me: &crate::store::Address, l: &Lease, reason: &str) {
    if l.holder_id == me.id {
        return;
    }
    let text = format!(
        "status: {} took over your lease on '{}' with --force{}",
        me.name,
        l.pattern,
        if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        }
    );
    let msg = NewMessage::new(me, Recipients::One(l.holder_id), &text);
    if let Err(e) = store.send(&msg) {
        eprintln!(
            "inter-session: could not tell {}: {e:#}",
            safe_name(&l.holder)
        );
    }
}

/// `lease release`.
pub fn release(from: Option<&str>, paths: &[String], json: bool) -> Result<i32> {
    let store = open()?;
    let session = me(store.as_ref(), from)?;
    let released = if paths.is_empty() {
        store.release_leases(session.id, None, None)?
    } else {
        let (project, ps) = patterns(paths)?;
        let r = store.release_leases(session.id, Some(&project), Some(&ps))?;
        if r.is_empty() {
            bail!(
                "you hold no lease on {} in this project (`lease list` shows yours)",
                ps.iter()
                    .map(|p| format!("'{}'", field(p.as_str())))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        r
    };
    if json {
        println!("{}", serde_json::json!({ "released": released }));
    } else if released.is_empty() {
        println!("no leases to release");
    } else {
        for l in &released {
            println!("released '{}'", field(&l.pattern));
        }
    }
    Ok(0)
}

/// `lease list`.
pub fn list(all: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let project = if all { None } else { Some(project()?.0) };
    let project = project.map(|p| p.display().to_string());
    let leases = store.leases(project.as_deref(), all)?;
    if json {
        println!("{}", serde_json::to_string(&leases)?);
        return Ok(0);
    }
    if leases.is_empty() {
        println!(
            "no leases{}",
            project.map(|p| format!(" in {p}")).unwrap_or_default()
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            let mut r = vec![
                l.pattern.clone(),
                l.holder.clone(),
                mode(l).to_string(),
                ago(&l.created_at),
                if l.live {
                    until(&l.expires_at)
                } else if l.released_at.is_some() {
                    "released".into()
                } else {
                    "ended".into()
                },
                l.reason.clone(),
            ];
            if all {
                r.insert(0, l.project.clone());
            }
            r
        })
        .collect();
    let mut headers = vec!["PATH", "HOLDER", "MODE", "SINCE", "EXPIRES", "REASON"];
    if all {
        headers.insert(0, "PROJECT");
    }
    print_table(&headers, &rows);
    Ok(0)
}

/// The files staged for commit, relative to the repository root.
fn staged(root: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new("git")
        .args(["diff", "--cached", "--name-only", "-z", "--no-renames"])
        .current_dir(root)
        .output()
        .context("could not run git")?;
    if !out.status.success() {
        bail!(
            "git diff --cached failed: {}",
            line::sanitize(String::from_utf8_lossy(&out.stderr).trim())
        );
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

/// `lease check`: exit 1 listing the files (staged, or given) under another
/// live session's exclusive lease.
pub fn check(from: Option<&str>, staged_only: bool, paths: &[String], json: bool) -> Result<i32> {
    let (root, cwd) = project()?;
    let files: Vec<String> = if staged_only {
        staged(&root)?
    } else {
        if paths.is_empty() {
            return Err(UsageError("give paths to check, or --staged".into()).into());
        }
        paths
            .iter()
            .map(|a| pattern(a, &root, &cwd).map(|p| p.as_str().to_string()))
            .collect::<Result<_>>()?
    };
    if files.is_empty() {
        return Ok(0);
    }
    let store = open()?;
    let mine = me_if_any(store.as_ref(), from)?.map(|s| s.id);
    let blocked = store.blocked(mine, &root.display().to_string(), &files)?;
    if json {
        let list: Vec<_> = blocked
            .iter()
            .map(|(f, l)| serde_json::json!({"path": f, "lease": l}))
            .collect();
        println!("{}", serde_json::Value::Array(list));
    }
    if blocked.is_empty() {
        return Ok(0);
    }
    for (f, l) in &blocked {
        eprintln!("{}", in_the_way(f, l));
    }
    eprintln!(
        "inter-session: {} file(s) are leased by another session; wait for its release, or ask its holder",
        blocked.len()
    );
    Ok(1)
}

/// `lease install-hook [--remove]`.
pub fn install_hook(remove: bool, json: bool) -> Result<i32> {
    let cwd = std::env::current_dir().context("could not read the working folder")?;
    let dir = crate::git_hook::hooks_dir(&cwd).map_err(|e| anyhow::anyhow!(e))?;
    let outcome = if remove {
        crate::git_hook::remove(&dir)
    } else {
        let bin = std::env::current_exe().context("could not find this program's path")?;
        crate::git_hook::install(&dir, &bin)
    }
    .map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::json!({"outcome": outcome.to_string()}));
    } else {
        println!("{outcome}");
    }
    Ok(0)
}
