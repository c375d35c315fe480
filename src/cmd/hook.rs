//! `hook <host> <event>`: a host's hook hands pending mail to its model in
//! the host's own format (SPEC §9: Claude Code). It reads the hook's JSON on
//! stdin, finds the session as Bash and the monitor do (else by the hook's
//! `session_id`), and prints exactly what the host takes: context to inject,
//! or the mail on stderr with exit 2 (a Stop block, or an `asyncRewake`
//! hook's wake-up). Mail is marked delivered (`hook:<host>:<event>`) only
//! after that output is written and flushed; with no mail, or while a live
//! monitor of the session prints it, the hook prints nothing and exits 0.
//!
//! One batch at most per run (`pace::fit`, ≤ 3,000 UTF-16 units, what the
//! host shows at once); the rest waits for the next hook or the monitor.
//! Delivery is claimed under the session key's lock (the one its monitor
//! holds while it runs), so racing hooks and a monitor never hand one
//! message over twice; a hook killed mid-way leaves its mail pending.
//!
//! SessionStart also opens the session's door (`door.rs`) and names it in
//! `watchPaths`: every send then rings it, and the host runs FileChanged.
//! A Stop hook counts the Stops of the current chain (`stop_hook_active`)
//! and blocks only while the block is at most the host's cap in a row
//! (`CLAUDE_CODE_STOP_HOOK_BLOCK_CAP`, default 8): the host drops the next
//! one, and mail must not be marked delivered through a block it overrides.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use serde_json::{json, Value};

use super::waiter::{Waited, Waiter};
use super::{me_if_any, open};
use crate::lock::{self, FileLock};
use crate::store::{ClaimRequest, Find, Mailbox, Session, State, Verbs};
use crate::{door, identity, line, pace};

/// Largest hook input read from stdin.
const MAX_INPUT: u64 = 1024 * 1024;
/// What one hook hands over at most, in UTF-16 units (a host notification).
const BATCH_UNITS: usize = 3000;
/// Messages looked at per run.
const PAGE: usize = 256;
/// How long a hook waits for another hook's delivery to finish.
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

/// The hosts whose hooks this verb speaks for.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Claude Code (plugin `hooks/hooks.json` or settings hooks)
    Claude,
    /// Codex CLI (`$CODEX_HOME/hooks.json`)
    Codex,
    /// Gemini CLI (`settings.json` hooks)
    Gemini,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Claude => "claude",
            Host::Codex => "codex",
            Host::Gemini => "gemini",
        }
    }

    fn events(self) -> &'static str {
        match self {
            Host::Claude => {
                "SessionStart, UserPromptSubmit, PostToolUse, Stop, FileChanged, SessionEnd"
            }
            Host::Codex => "SessionStart, UserPromptSubmit, PostToolUse, Stop",
            Host::Gemini => "SessionStart, BeforeAgent, AfterTool, AfterAgent, SessionEnd",
        }
    }
}

/// How a host takes mail from one hook event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hand {
    /// `hookSpecificOutput.additionalContext` on stdout.
    Context,
    /// `{"decision":<word>,"reason":<mail>}` on stdout at the end of a turn:
    /// the model runs again with the mail (Codex `block`, Gemini `deny`).
    Decision(&'static str),
    /// The mail on stderr and exit 2 from a Claude Code Stop hook.
    Block,
    /// The mail on stderr and exit 2 (an `asyncRewake` hook wakes the session).
    Rewake,
    /// The session ended: its door goes.
    Close,
}

impl Hand {
    /// At the end of a turn (where `--wait` may keep an idle agent listening).
    fn ends_turn(self) -> bool {
        matches!(self, Hand::Decision(_) | Hand::Block)
    }
}

fn hand_for(host: Host, event: &str) -> Option<Hand> {
    match (host, event) {
        (Host::Claude | Host::Codex, "SessionStart" | "UserPromptSubmit" | "PostToolUse") => {
            Some(Hand::Context)
        }
        (Host::Claude, "Stop") => Some(Hand::Block),
        (Host::Claude, "FileChanged") => Some(Hand::Rewake),
        (Host::Claude | Host::Gemini, "SessionEnd") => Some(Hand::Close),
        (Host::Codex, "Stop") => Some(Hand::Decision("block")),
        (Host::Gemini, "SessionStart" | "BeforeAgent" | "AfterTool") => Some(Hand::Context),
        (Host::Gemini, "AfterAgent") => Some(Hand::Decision("deny")),
        _ => None,
    }
}

/// The options of `hook <host> <event>`.
pub struct Options<'a> {
    pub from: Option<&'a str>,
    /// The mailbox name a Codex or Gemini session registers at SessionStart.
    pub name: Option<&'a str>,
    /// At the end of a turn: wait up to this long for mail.
    pub wait: Option<&'a str>,
    /// Codex SessionStart: start the session's deliverer (`deliver codex`)
    /// unless this is a one-shot `codex exec` run.
    pub push: bool,
}

/// Run one hook. It never exits 2 on an error of its own: to a Stop or an
/// `asyncRewake` hook, exit 2 means "show the model this stderr".
pub fn run(host: Host, event: &str, opts: &Options) -> Result<i32> {
    run_hook(host, event, opts)
        .map_err(|e| anyhow!("hook {} {}: {e:#}", host.name(), line::field(event)))
}

fn run_hook(host: Host, event: &str, opts: &Options) -> Result<i32> {
    let hand = hand_for(host, event)
        .ok_or_else(|| anyhow!("unknown event (events: {})", host.events()))?;
    let wait = match opts.wait {
        Some(w) if hand.ends_turn() => Some(Duration::from_secs(super::parse_age(w)?)),
        Some(_) => {
            bail!("--wait is for the end of a turn (Claude Code and Codex Stop, Gemini AfterAgent)")
        }
        None => None,
    };
    if let Some(n) = opts.name {
        identity::validate_name(n)?;
    }
    let input = read_input()?;
    let data = crate::datadir::path()?;
    // A Codex or Gemini hook without its session id cannot tell whose it is.
    let Some(key) = hook_key(host, &input) else {
        return Ok(0);
    };
    match hand {
        Hand::Close => {
            door::close(&data, &key);
            let _ = std::fs::remove_file(stop_streak_path(&data, &key));
            return Ok(0);
        }
        Hand::Context if event == "SessionStart" => {
            return session_start(host, &data, &key, &input, opts);
        }
        // Under plain `claude -p` the host runs an asyncRewake hook but
        // drops what its exit 2 hands over: the mail waits for the next
        // PostToolUse, Stop or UserPromptSubmit hook instead.
        Hand::Rewake if rewake_is_dropped() => return Ok(0),
        _ => {}
    }
    let store = open()?;
    let Some(session) = find_session(store.as_ref(), opts.from, &key)? else {
        return Ok(0);
    };
    // A Stop block the host would drop must carry no mail (SPEC §9: under
    // `-p` the 9th consecutive block is lost).
    if hand == Hand::Block && stop_streak(&data, &key, &input).is_none_or(|n| n > stop_cap()) {
        return Ok(0);
    }
    if let Some(limit) = wait {
        // Listen while idle: until mail waits (and no monitor prints it).
        let deadline = Instant::now() + limit;
        let mail = || {
            if store.is_online(session.id) {
                return Ok(Some(false));
            }
            Ok((!store.pending(session.id, 0, 1)?.is_empty()).then_some(true))
        };
        match Waiter::new()?.until(store.as_ref(), deadline, mail)? {
            Waited::Got(true) => {}
            _ => return Ok(0),
        }
    }
    let Some(claim) = claim(store.as_ref(), &data, &session)? else {
        return Ok(0);
    };
    let Some((text, seqs)) = batch(store.as_ref(), session.id)? else {
        return Ok(0);
    };
    let code = match hand {
        Hand::Context => {
            let out =
                json!({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}});
            write_all(&mut std::io::stdout().lock(), &out)?;
            0
        }
        Hand::Decision(word) => {
            write_all(
                &mut std::io::stdout().lock(),
                &json!({"decision": word, "reason": text}),
            )?;
            0
        }
        Hand::Block => {
            // A blocking exit 2, not `{"decision":"block","reason":…}`:
            // Claude Code 2.1.332 shows a JSON block's reason to the model
            // twice (as "Stop hook feedback:" and again as a "Stop hook
            // blocking error from command …" message), exit 2's stderr once,
            // as "Stop hook feedback:\n[<command>]: <stderr>". The leading
            // newline starts the first message line at a line start.
            write_stderr(&format!("\n{text}\n"))?;
            2
        }
        Hand::Rewake => {
            write_stderr(&format!("{text}\n"))?;
            2
        }
        Hand::Close => 0,
    };
    // Handed over: now, and only now, it counts as delivered.
    store.mark_delivered(session.id, &seqs, &format!("hook:{}:{event}", host.name()))?;
    drop(claim);
    Ok(code)
}

/// SessionStart: whether this session is connected, and (when no monitor
/// prints it) the first batch of its mail. Claude Code's also opens the
/// door to watch (`watchPaths`); a Codex or Gemini session is given its
/// mailbox here (no skill connects it), named by `--name`,
/// `INTER_SESSION_NAME`, its previous name, or its folder.
fn session_start(host: Host, data: &Path, key: &str, input: &Value, opts: &Options) -> Result<i32> {
    // The doorbell first: whatever else fails, the host watches it.
    let door_path = match host {
        Host::Claude => Some(door::open(data, key)?),
        Host::Codex | Host::Gemini => None,
    };
    if host == Host::Gemini {
        if let Some(id) = key.strip_prefix("gemini:") {
            identity::record_gemini_session(data, id)?;
        }
    }
    let store = open()?;
    let mut session = find_session(store.as_ref(), opts.from, key)?;
    if session.is_none() && host != Host::Claude {
        session = Some(register(store.as_ref(), key, input, opts)?);
    }
    let mut context = Vec::new();
    // No skill teaches a Codex or Gemini model our lines: this does, once a
    // session (the same reaction policy as SKILL.md).
    match host {
        Host::Claude => {}
        Host::Codex => context.push(include_str!("../../hosts/codex.md").trim_end().to_string()),
        Host::Gemini => context.push(include_str!("../../hosts/gemini.md").trim_end().to_string()),
    }
    // The TUI (not `codex exec`) with `--push` gets a deliverer once this
    // hook has answered.
    let push = host == Host::Codex && opts.push && !identity::in_codex_exec();
    let mut marked = None;
    match session {
        None => context.push(
            "[inter-session] this session has no mailbox yet: `/inter-session connect <name>` \
             gives it one (mail reaches it from then on)."
                .to_string(),
        ),
        Some(s) => {
            let online = store.is_online(s.id);
            context.push(format!(
                "[inter-session] this session is connected as '{}'{}; {} message(s) pending.",
                line::safe_name(&s.name),
                if online {
                    " and its monitor is running (it prints the mail)"
                } else if push {
                    " and a deliverer pushes its mail in as it comes (codex queue)"
                } else {
                    " with no monitor running (hooks hand over the mail)"
                },
                s.pending
            ));
            if !online {
                if let Some(claim) = claim(store.as_ref(), data, &s)? {
                    if let Some((text, seqs)) = batch(store.as_ref(), s.id)? {
                        context.push(text);
                        marked = Some((s.id, seqs, claim));
                    }
                }
            }
        }
    }
    let mut out = json!({"hookSpecificOutput": {
        "hookEventName": "SessionStart",
        "additionalContext": context.join("\n"),
    }});
    if let Some(door) = door_path {
        out["hookSpecificOutput"]["watchPaths"] = json!([door.display().to_string()]);
    }
    write_all(&mut std::io::stdout().lock(), &out)?;
    if let Some((id, seqs, claim)) = marked {
        store.mark_delivered(id, &seqs, &format!("hook:{}:SessionStart", host.name()))?;
        drop(claim);
    }
    if push {
        if let Some(thread) = key.strip_prefix("codex:") {
            // The hook's answer is out: a deliverer that cannot start costs
            // the session its push, not its start.
            let transcript = input["transcript_path"]
                .as_str()
                .map(Path::new)
                .filter(|p| p.is_absolute());
            if let Err(e) = spawn_deliverer(data, thread, transcript) {
                eprintln!("inter-session: could not start the deliverer: {e:#}");
            }
        }
    }
    Ok(0)
}

/// Whether a thread id is safe to use in a key and a file name.
fn check_thread(thread: &str) -> Result<()> {
    if thread.is_empty()
        || thread.len() > 128
        || !thread
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("not a Codex thread id: '{}'", line::field(thread));
    }
    Ok(())
}

/// Start `deliver codex --thread <id>` detached: a session of its own
/// (setsid), stdin and stdout on /dev/null, stderr appended to
/// `<data>/logs/deliver-codex-<id>.log`. At most one runs per thread: a
/// second one finds the key lock held and exits.
fn spawn_deliverer(data: &Path, thread: &str, transcript: Option<&Path>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    check_thread(thread)?;
    let logs = data.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("could not create {}", logs.display()))?;
    let log_path = logs.join(format!("deliver-codex-{thread}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("could not open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("could not find this program's path")?;
    let mut cmd = Command::new(exe);
    cmd.args(["deliver", "codex", "--thread", thread]);
    if let Some(t) = transcript {
        cmd.arg("--transcript").arg(t);
    }
    cmd.current_dir(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe; nothing else runs in the child
    // before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("could not start `deliver codex`")?;
    // Not waited for: reaped by init once we exit (our process ends now).
    drop(child);
    Ok(())
}

/// `deliver codex --thread <id>`: the monitor, writing into the thread's
/// queue (`watch::SinkSpec::CodexQueue`).
pub fn deliver_codex(thread: &str, transcript: Option<&Path>) -> Result<i32> {
    check_thread(thread)?;
    let bin = crate::watch::codex_bin()?;
    crate::watch::run(crate::watch::Options {
        sink: crate::watch::SinkSpec::CodexQueue {
            bin,
            thread: thread.to_string(),
            transcript: transcript.map(Path::to_path_buf),
        },
        ..Default::default()
    })
}

/// Give a Codex or Gemini session its mailbox: claimed as a monitor would
/// claim it (a name taken by a live session gets a `-2`), then left offline
/// for its hooks to serve.
fn register(store: &dyn Mailbox, key: &str, input: &Value, opts: &Options) -> Result<Session> {
    let cwd = input["cwd"]
        .as_str()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map_or_else(std::env::current_dir, Ok)
        .context("could not read the current directory")?;
    let env_name = std::env::var("INTER_SESSION_NAME")
        .ok()
        .filter(|n| identity::validate_name(n).is_ok());
    let name = opts
        .name
        .map(str::to_string)
        .or(env_name)
        .unwrap_or_else(|| identity::name_from_dir(&cwd));
    let project = identity::project_of(&cwd).display().to_string();
    let label = store.remembered_label(&project)?.unwrap_or_default();
    let claim = store.claim(&ClaimRequest {
        key,
        name: &name,
        label: &label,
        cwd: &cwd.display().to_string(),
        project: &project,
        monitor_pid: i64::from(std::process::id()),
        owner_pid: None,
    })?;
    store.release(claim.session.id)?;
    drop(claim.presence);
    let session = claim.session;
    Ok(store.find(Find::Id(session.id))?.unwrap_or(session))
}

/// This hook's session key. Claude Code: the environment's (as Bash and the
/// monitor see it) when the host set one, else `claude:<session_id>`.
/// Codex: `codex:<session_id>` from the input only (its hooks share one
/// daemon's environment across sessions, SPEC §12). Gemini:
/// `gemini:$GEMINI_SESSION_ID`, else the input's `session_id`.
fn hook_key(host: Host, input: &Value) -> Option<String> {
    let given = input["session_id"]
        .as_str()
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    match host {
        Host::Claude => {
            let from_env = ["INTER_SESSION_KEY", "CLAUDE_CODE_SESSION_ID"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
            Some(match given {
                Some(id) if !from_env => format!("claude:{id}"),
                _ => identity::session_key(),
            })
        }
        Host::Codex => given.map(|id| format!("codex:{id}")),
        Host::Gemini => std::env::var("GEMINI_SESSION_ID")
            .ok()
            .filter(|k| !k.is_empty())
            .or(given)
            .map(|id| format!("gemini:{id}")),
    }
}

/// The connected session this hook serves (`--from`, else by key).
fn find_session(store: &dyn Mailbox, from: Option<&str>, key: &str) -> Result<Option<Session>> {
    if from.is_some() {
        return me_if_any(store, from);
    }
    Ok(store
        .session_by_key(key)?
        .filter(|s| s.state != State::Left))
}

/// The right to hand this session's mail over, atomic across paths and
/// processes: the session key's lock, which its monitor holds for as long
/// as it runs. `None` while a monitor (or, past a short wait, another
/// delivery) has it: that one delivers. A hook killed mid-way leaves the
/// lock to the kernel and its mail pending.
pub(super) fn claim(
    store: &dyn Mailbox,
    data: &Path,
    session: &Session,
) -> Result<Option<FileLock>> {
    if store.is_online(session.id) {
        return Ok(None);
    }
    let key = session
        .key
        .clone()
        .unwrap_or_else(|| format!("session-id:{}", session.id));
    let Some(lock) = FileLock::acquire_removable_within(
        &lock::key_lock_path(data, &key),
        CLAIM_PATIENCE,
        || false,
    )?
    else {
        return Ok(None);
    };
    // A monitor under another key may have come up meanwhile.
    Ok((!store.is_online(session.id)).then_some(lock))
}

/// The first batch of pending mail (≤ 3,000 units) and its seqs.
pub(super) fn batch(store: &dyn Mailbox, session_id: i64) -> Result<Option<(String, Vec<i64>)>> {
    let pending = store.pending(session_id, 0, PAGE)?;
    if pending.is_empty() {
        return Ok(None);
    }
    let now = line::clock();
    let rendered: Vec<Vec<String>> = pending
        .iter()
        .map(|m| line::message_lines(m, now))
        .collect();
    let n = pace::fit(&rendered, 0, BATCH_UNITS)
        .max(1)
        .min(pending.len());
    let text = rendered[..n].concat().join("\n");
    let seqs = pending[..n].iter().map(|m| m.seq).collect();
    Ok(Some((text, seqs)))
}

/// Whether the host is `claude -p` reading no stream-json input, where an
/// `asyncRewake` hook's exit 2 reaches no one: Claude Code 2.1.332 runs the
/// FileChanged hook there (during a tool call too) and drops its stderr;
/// with `--input-format stream-json`, and interactive, it shows it. Known
/// from `$CLAUDE_PID`'s command line; when that cannot be read, the hook
/// hands the mail over as usual.
fn rewake_is_dropped() -> bool {
    let Some(argv) = identity::claude_pid_argv() else {
        return false;
    };
    let print = argv.iter().any(|a| a == "-p" || a == "--print");
    let stream_input = argv.iter().any(|a| a == "--input-format=stream-json")
        || argv
            .windows(2)
            .any(|w| w[0] == "--input-format" && w[1] == "stream-json");
    print && !stream_input
}

/// Consecutive Stop blocks the host takes (`CLAUDE_CODE_STOP_HOOK_BLOCK_CAP`,
/// default 8).
fn stop_cap() -> usize {
    std::env::var("CLAUDE_CODE_STOP_HOOK_BLOCK_CAP")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(8)
}

fn stop_streak_path(data: &Path, key: &str) -> PathBuf {
    door::dir(data).join(format!("stops-{:016x}", lock::fnv1a(key)))
}

/// Which Stop of the current chain this is (1 = the turn's first; the one
/// before each later one was blocked, by us or another hook), so a block
/// now is the n-th in a row. `None` when it cannot be known: then no block.
fn stop_streak(data: &Path, key: &str, input: &Value) -> Option<usize> {
    let path = stop_streak_path(data, key);
    let n = if input["stop_hook_active"].as_bool() == Some(true) {
        let seen: usize = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
        seen.checked_add(1)?
    } else {
        1
    };
    // Every Stop of the chain counts, blocked by us or not; a count that
    // cannot be kept means no block (the next one could not be counted).
    std::fs::create_dir_all(door::dir(data)).ok()?;
    std::fs::write(&path, format!("{n}\n")).ok()?;
    Some(n)
}

/// The hook's JSON on stdin (an object; empty input counts as `{}`).
fn read_input() -> Result<Value> {
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut raw)
        .context("could not read the hook's input")?;
    if raw.len() as u64 > MAX_INPUT {
        anyhow::bail!("the hook's input is over {MAX_INPUT} bytes");
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(&raw).context("the hook's input is not JSON")?;
    if !v.is_object() {
        anyhow::bail!("the hook's input is not a JSON object");
    }
    Ok(v)
}

/// The mail on stderr, flushed (what a blocking exit 2 hands the host).
fn write_stderr(text: &str) -> Result<()> {
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())
        .and_then(|()| err.flush())
        .context("could not hand the mail to the host")
}

/// One JSON document and a newline, flushed: the host reads it whole.
fn write_all(out: &mut impl Write, v: &Value) -> Result<()> {
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("could not hand the mail to the host")
}
