//! Who is asking: the session key (which agent conversation a command runs
//! in), the owning Claude Code process, the machine (`this_host`), and the
//! rules for names and labels.
//!
//! Pure rules (validation, cwd-derived names, host names) are unit-tested
//! here; the process-tree walk reads `/proc` and nothing else.
//!
//! Host names (SPEC §10) are recorded by every session and shown by `list`
//! and `peer` on every machine of a shared mailbox, so they are made safe
//! once, where they enter: `host_name` keeps ASCII letters, digits, `.`,
//! `-` and `_`, turns every other run into one `-` (after removing escape
//! sequences whole), trims `-` and `.` from the ends and keeps at most 64
//! characters. An `INTER_SESSION_HOSTNAME` that leaves no letter or digit
//! is refused with one line (exit 2); a machine name that does becomes
//! `unknown`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use unicode_normalization::UnicodeNormalization;

pub const MAX_NAME_LEN: usize = 40;
pub const MAX_LABEL_CHARS: usize = 60;

pub use crate::error::UsageError;

pub const NAME_RULE: &str =
    "a name is 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit";

pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

pub fn validate_name(name: &str) -> Result<(), UsageError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(UsageError(format!(
            "invalid name '{}': {NAME_RULE}",
            name.escape_debug()
        )))
    }
}

/// NFC-normalise and check a label; returns the stored form.
pub fn validate_label(label: &str) -> Result<String, UsageError> {
    let label: String = label.nfc().collect();
    let count = label.chars().count();
    if count > MAX_LABEL_CHARS {
        return Err(UsageError(format!(
            "label too long: {count} characters, at most {MAX_LABEL_CHARS}"
        )));
    }
    if let Some(bad) = label.chars().find(|&c| !label_char_ok(c)) {
        return Err(UsageError(format!(
            "label may not contain {:?} (U+{:04X}): no quotes, brackets, control, format or separator characters except space",
            bad, bad as u32
        )));
    }
    Ok(label)
}

/// Whether a label may hold `c` (SPEC §3): ASCII space, or anything that is
/// not `"`, `[`, `]`, a control, format or separator character.
pub fn label_char_ok(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(matches!(c, '"' | '[' | ']')
        || crate::line::is_control(c)
        || crate::line::is_format(c)
        || is_separator(c))
}

/// General categories Zs, Zl, Zp.
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// Longest host name a session records.
pub const MAX_HOST_LEN: usize = 64;

/// The safe form of a host name (see the module doc); `None` when nothing
/// but junk is left (no ASCII letter or digit).
pub fn host_name(raw: &str) -> Option<String> {
    let mut out = String::new();
    for c in crate::line::sanitize(raw).chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trim = |s: &str| s.trim_matches(['-', '.']).to_string();
    let mut out = trim(&out);
    if out.len() > MAX_HOST_LEN {
        out = trim(&out[..MAX_HOST_LEN]);
    }
    out.bytes()
        .any(|b| b.is_ascii_alphanumeric())
        .then_some(out)
}

/// Makes `INTER_SESSION_HOSTNAME` hold this machine's host name in its safe
/// form, for the store to record and for the monitors and peers we start to
/// inherit: the variable's own value when set, else the machine's name.
pub fn pin_host_name() -> Result<(), UsageError> {
    const VAR: &str = "INTER_SESSION_HOSTNAME";
    let given = std::env::var_os(VAR)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty());
    let name = match given {
        Some(raw) => host_name(&raw).ok_or_else(|| {
            UsageError(format!(
                "invalid {VAR} '{}': a host name needs ASCII letters or digits \
                 (with '.', '-', '_'); unset it to use this machine's name",
                raw.escape_debug()
            ))
        })?,
        None => host_name(&machine_name()).unwrap_or_else(|| "unknown".to_string()),
    };
    std::env::set_var(VAR, name);
    Ok(())
}

/// gethostname(2), lossily as text; empty when it fails.
fn machine_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A name from a folder's basename: lowercase, runs of other characters
/// become '-', trimmed, at most 40; `session` when nothing is left.
pub fn name_from_dir(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|b| b.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut out = String::new();
    let mut dash = false;
    for c in base.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
        if out.len() >= MAX_NAME_LEN {
            break;
        }
    }
    out.truncate(MAX_NAME_LEN);
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "session".to_string()
    } else {
        out
    }
}

/// The project a cwd belongs to: the nearest ancestor holding `.git`
/// (symlinks resolved), else the cwd itself.
pub fn project_of(cwd: &Path) -> PathBuf {
    let real = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    real.ancestors()
        .find(|d| d.join(".git").symlink_metadata().is_ok())
        .map(Path::to_path_buf)
        .unwrap_or(real)
}

/// One process in the ancestry walk.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub exe: String,
    pub argv: Vec<String>,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let ppid = after.split(' ').nth(1)?.parse().ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let argv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(Proc {
        pid,
        ppid,
        exe,
        argv,
    })
}

/// Whether a process is Claude Code: its executable (or argv[0]) basename is
/// `claude` or `claude-*`, or its path holds `/claude/versions/`.
pub fn is_claude(p: &Proc) -> bool {
    let looks = |path: &str| {
        let base = path.rsplit('/').next().unwrap_or(path);
        base == "claude" || base.starts_with("claude-") || path.contains("/claude/versions/")
    };
    looks(&p.exe) || p.argv.first().is_some_and(|a| looks(a))
}

/// The nearest Claude Code ancestor of this process, if any.
pub fn claude_ancestor() -> Option<Proc> {
    ancestor(is_claude)
}

/// Whether a process is Gemini CLI: `node … gemini.js` (the npm bundle),
/// `node … <bin>/gemini` (the npm bin link, as a global install starts it),
/// or an executable named `gemini`.
pub fn is_gemini(p: &Proc) -> bool {
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    let node = p
        .argv
        .first()
        .is_some_and(|a| matches!(base(a).as_str(), "node" | "nodejs"));
    p.argv.first().is_some_and(|a| base(a) == "gemini")
        || p.argv.iter().take(4).any(|a| base(a) == "gemini.js")
        || (node && p.argv.iter().skip(1).take(3).any(|a| base(a) == "gemini"))
}

/// Whether this process runs under a one-shot `codex exec` (its hooks run
/// as that process's children; an interactive session's run under Codex's
/// shared daemon).
pub fn in_codex_exec() -> bool {
    let base = |a: &str| a.rsplit('/').next().unwrap_or(a).to_string();
    ancestor(|p| {
        let codex = p.argv.iter().take(2).any(|a| {
            let b = base(a);
            b == "codex" || b == "codex.js" || b.starts_with("codex-")
        }) || base(&p.exe) == "codex";
        codex && p.argv.iter().skip(1).any(|a| a == "exec")
    })
    .is_some()
}

/// The nearest ancestor of this process that `is` picks, if any.
fn ancestor(is: impl Fn(&Proc) -> bool) -> Option<Proc> {
    // SAFETY: getppid cannot fail.
    let mut pid = unsafe { libc::getppid() };
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let p = read_proc(pid)?;
        if is(&p) {
            return Some(p);
        }
        pid = p.ppid;
    }
    None
}

/// When a process started (clock ticks since boot), to tell a pid from a
/// later process that reused it.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split(' ')
        .nth(19)?
        .parse()
        .ok()
}

/// Where a Gemini CLI session's SessionStart hook records its session id
/// for the shell commands of that session, which get no session variable
/// (SPEC §12): keyed by the `node … gemini.js` process they share.
fn gemini_marker(data: &Path, pid: i32) -> PathBuf {
    data.join("hosts").join(format!("gemini-{pid}"))
}

/// Record `session_id` as the session of the Gemini CLI process this hook
/// runs under (nothing when there is none).
pub fn record_gemini_session(data: &Path, session_id: &str) -> anyhow::Result<()> {
    let Some(g) = ancestor(is_gemini) else {
        return Ok(());
    };
    let Some(started) = start_time(g.pid) else {
        return Ok(());
    };
    let dir = data.join("hosts");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        gemini_marker(data, g.pid),
        format!("{started} {session_id}\n"),
    )?;
    Ok(())
}

/// The Gemini CLI session this process runs in, from its SessionStart
/// hook's record (checked against the process's start time).
fn gemini_session() -> Option<String> {
    let g = ancestor(is_gemini)?;
    let data = crate::datadir::path().ok()?;
    let text = std::fs::read_to_string(gemini_marker(&data, g.pid)).ok()?;
    let (started, id) = text.trim().split_once(' ')?;
    (started.parse::<u64>().ok()? == start_time(g.pid)?).then(|| id.to_string())
}

/// The command line of the Claude Code process `$CLAUDE_PID` names (Claude
/// Code exports it to its hooks, Bash commands and monitors); None when it
/// is unset or names no Claude Code process.
pub fn claude_pid_argv() -> Option<Vec<String>> {
    let pid = env_nonempty("CLAUDE_PID")?
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)?;
    let p = read_proc(pid)?;
    is_claude(&p).then_some(p.argv)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The session key, in order: `$INTER_SESSION_KEY`; the host's own session
/// id, innermost host first (a Codex or Gemini CLI started from a Claude
/// Code shell inherits Claude Code's variables): `codex:$CODEX_THREAD_ID`,
/// `gemini:$GEMINI_SESSION_ID` (hooks) or the Gemini session recorded for
/// the `gemini.js` process a command runs under (`GEMINI_CLI=1`),
/// `claude:$CLAUDE_CODE_SESSION_ID`; the nearest Claude Code ancestor's
/// pid; else the parent pid.
pub fn session_key() -> String {
    if let Some(k) = env_nonempty("INTER_SESSION_KEY") {
        return k;
    }
    if let Some(k) = env_nonempty("CODEX_THREAD_ID") {
        return format!("codex:{k}");
    }
    if let Some(k) = env_nonempty("GEMINI_SESSION_ID") {
        return format!("gemini:{k}");
    }
    if env_nonempty("GEMINI_CLI").is_some() {
        if let Some(k) = gemini_session() {
            return format!("gemini:{k}");
        }
    }
    if let Some(k) = env_nonempty("CLAUDE_CODE_SESSION_ID") {
        return format!("claude:{k}");
    }
    if let Some(p) = claude_ancestor() {
        return format!("claude-pid:{}", p.pid);
    }
    // SAFETY: getppid cannot fail.
    format!("ppid:{}", unsafe { libc::getppid() })
}

/// The agent process a monitor serves: `$CLAUDE_PID`, else the nearest
/// Claude Code ancestor. The monitor exits when it is gone.
pub fn owner_pid() -> Option<i64> {
    if let Some(pid) = env_nonempty("CLAUDE_PID").and_then(|p| p.parse::<i64>().ok()) {
        if pid > 1 {
            return Some(pid);
        }
    }
    claude_ancestor().map(|p| i64::from(p.pid))
}

/// Whether the nearest Claude Code ancestor is an agent-team worker (started
/// with `--agent-id`), whom the auto-started monitor must not enrol.
pub fn in_agent_worker() -> bool {
    claude_ancestor().is_some_and(|p| {
        p.argv
            .iter()
            .any(|a| a == "--agent-id" || a.starts_with("--agent-id="))
    })
}

/// This machine's name as sessions record it, in its safe form (see
/// `host_name`): `INTER_SESSION_HOSTNAME` (which `pin_host_name` checked),
/// else the system's host name, else `unknown`.
pub fn this_host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::var("INTER_SESSION_HOSTNAME")
            .ok()
            .and_then(|h| host_name(&h))
            .or_else(|| host_name(&machine_name()))
            .unwrap_or_else(|| "unknown".to_string())
    })
    .clone()
}

pub fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "alice", "a-2", "0abc", &"x".repeat(40)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "Alice", "a_b", "a b", "é", &"x".repeat(41), "a\n"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn dir_names() {
        let n = |s: &str| name_from_dir(Path::new(s));
        assert_eq!(n("/home/u/My Project"), "my-project");
        assert_eq!(n("/x/__Foo__Bar__"), "foo-bar");
        assert_eq!(n("/x/日本"), "session");
        assert_eq!(n("/"), "session");
        assert_eq!(n(&format!("/x/{}", "a".repeat(60))), "a".repeat(40));
        assert_eq!(n("/x/api.v2"), "api-v2");
    }

    #[test]
    fn labels() {
        assert_eq!(
            validate_label("tester one").ok().as_deref(),
            Some("tester one")
        );
        assert_eq!(validate_label("e\u{301}").ok().as_deref(), Some("\u{e9}"));
        for bad in [
            "a\"b",
            "[x]",
            "tab\there",
            "new\nline",
            "rtl\u{202e}",
            "nb\u{a0}sp",
            &"x".repeat(61),
        ] {
            assert!(validate_label(bad).is_err(), "{bad:?}");
        }
        assert!(validate_label(&"é".repeat(60)).is_ok());
    }

    #[test]
    fn host_names() {
        let h = |s: &str| host_name(s);
        for same in ["laptop", "db-1.example.org", "HOST_2", "a", "10.0.0.7"] {
            assert_eq!(h(same).as_deref(), Some(same));
        }
        assert_eq!(
            h("Alice's MacBook Pro").as_deref(),
            Some("Alice-s-MacBook-Pro")
        );
        assert_eq!(h(" laptop\n").as_deref(), Some("laptop"));
        assert_eq!(
            h("lap\u{1b}[31mtop\u{1b}]0;pwned\u{7}\u{202E}").as_deref(),
            Some("laptop")
        );
        assert_eq!(h("a\r\nb").as_deref(), Some("a-b"));
        assert_eq!(h("-.x.-").as_deref(), Some("x"));
        assert_eq!(h("日本-host").as_deref(), Some("host"));
        assert_eq!(
            h(&"x".repeat(100)).as_deref(),
            Some("x".repeat(64).as_str())
        );
        // A cut never leaves a trailing separator.
        let cut = format!("{}-y", "x".repeat(63));
        assert_eq!(h(&cut).as_deref(), Some("x".repeat(63).as_str()));
        for junk in [
            "",
            " ",
            "...",
            " - ",
            "\u{1b}[31m",
            "\u{202E}\u{200B}",
            "日本",
            "\"[]",
        ] {
            assert_eq!(h(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn claude_detection() {
        let p = |exe: &str, argv0: &str| Proc {
            pid: 2,
            ppid: 1,
            exe: exe.into(),
            argv: vec![argv0.into()],
        };
        assert!(is_claude(&p("/usr/bin/node", "claude")));
        assert!(is_claude(&p(
            "/home/u/.local/share/claude/versions/2.1.204",
            "x"
        )));
        assert!(is_claude(&p("/usr/local/bin/claude-code", "x")));
        assert!(!is_claude(&p("/usr/bin/bash", "bash")));
        assert!(!is_claude(&p("/usr/bin/claudette", "claudette")));
    }
}
