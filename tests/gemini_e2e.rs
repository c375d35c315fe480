//! The real Gemini CLI (SPEC §12), pinned (0.61.0), against the scripted
//! Gemini API of `support/fake_gemini.rs`: what its shell commands and hooks
//! see, what its hooks' output does to the next model request, and how a
//! background command wakes an idle interactive session. The request bodies
//! the CLI sends are the evidence. Sections 1–7 prove the harness with tiny
//! shell-script hooks and commands, independent of our binary; section 8
//! wires our `inter-session hook gemini <Event>` and `inbox wait --once`.
//!
//! Offline: `GEMINI_CLI_HOME` = `HOME` = a temp folder (settings in
//! `.gemini/settings.json`, support/gemini.rs), `GEMINI_API_KEY=dummy`,
//! `GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:PORT`; `node gemini.js
//! --skip-trust -m gemini-2.5-pro --yolo -p PROMPT </dev/null`.
//!
//! Facts about Gemini CLI 0.61.0 found here (checked 2026-12-03 on a 2-core
//! VM under load; the test that shows each is named; where a fact comes
//! from the bundle's code, the code is named):
//!
//! Processes and commands (`headless_turn_runs_a_shell_command`,
//! `hooks_and_commands_share_the_gemini_process`, `interactive_hooks_and_commands`)
//! - `node gemini.js …` (the launcher) relaunches itself as `node
//!   --max-old-space-size=N gemini.js …` (`GEMINI_CLI_NO_RELAUNCH=true`).
//!   Shell commands (`bash -c <command>`, leading their own process group:
//!   PGID = the bash pid) and hooks are both children of that relaunched
//!   process, whose parent is the launcher, headless and interactive. So a
//!   SessionStart hook can record its `$PPID` → `$GEMINI_SESSION_ID`, and a
//!   command finds its session through its own `$PPID` (shown).
//! - The relaunch keeps the path the CLI was started by: started as a
//!   global npm install starts it (the `gemini` bin link, by its
//!   `#!/usr/bin/env node`), the process is `node --max-old-space-size=N
//!   <…>/bin/gemini …`, with no `gemini.js` in it
//!   (`verb_commands_find_their_session_under_the_npm_bin`: src/identity.rs
//!   `is_gemini` takes that form too).
//! - A command's environment: `GEMINI_CLI=1` (and `GEMINI_CLI_NO_RELAUNCH`,
//!   `GEMINI_CLI_TRUST_WORKSPACE` with --skip-trust, git/pager hardening:
//!   `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_TERMINAL_PROMPT=0`, `PAGER=cat`…);
//!   no session id.
//! - Command substitution (`$(…)`, backticks, `<(…)`, `>(…)`) is refused
//!   even under --yolo: the command does not run and the model gets
//!   "Command injection detected: …" as the output.
//! - A headless run with one tool call takes 2.5–4.5 s.
//!
//! The request (`headless_turn_runs_a_shell_command`)
//! - `POST /v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse` with
//!   `contents`, `systemInstruction`, `tools` (`functionDeclarations` with
//!   `parametersJsonSchema`), `generationConfig` (temperature 1, topP 0.95,
//!   topK 64, thinkingConfig {includeThoughts, thinkingBudget 8192}). The
//!   first user content: a `<session_context>…</session_context>` part, then
//!   the prompt's part.
//! - `run_shell_command` takes `command` (required), `description`,
//!   `dir_path`, `is_background` (boolean), `delay_ms` (integer).
//! - The call comes back with an `id` (`run_shell_command_<ms>_<n>`) and
//!   `thoughtSignature: "skip_thought_signature_validator"`; the result is
//!   `{"functionResponse":{"id","name","response":{"output":"<untrusted_context>\nOutput:
//!   <text>\nProcess Group PGID: <n>\n</untrusted_context>"}}}`.
//! - No side request in a short run; a loop check
//!   (`gemini-3-flash-preview:generateContent`, JSON schema
//!   `unproductive_state_*`) about every 10 model turns of one prompt.
//!
//! Hooks (`hook_context_reaches_the_next_request`, `hook_output_forms`,
//! `after_agent_deny_runs_the_model_again`, `interactive_hooks_and_commands`)
//! - settings.json: `"hooks": {"<Event>": [{"matcher"?, "sequential"?,
//!   "hooks": [{"type": "command", "command": "…", "timeout": <ms, default
//!   60000>, "name"?, "env"?}]}]}`; `hooksConfig.enabled` (default true),
//!   `hooksConfig.disabled` (names). Hooks load only in a trusted folder
//!   (code: `processHooksFromConfig`); --skip-trust trusts it (headless
//!   without it, `GEMINI_CLI_TRUST_WORKSPACE=true` or a trusted folder:
//!   exit 55, "not running in a trusted directory").
//!   The command runs under `bash -c` in the project folder, the input JSON on
//!   stdin; `$GEMINI_SESSION_ID`, `$GEMINI_PROJECT_DIR`, `$GEMINI_CWD` are
//!   also expanded in the command string.
//! - Input: `session_id`, `transcript_path`, `cwd`, `hook_event_name`,
//!   `timestamp`, and per event: SessionStart `source` ("startup");
//!   BeforeAgent `prompt`; AfterTool `tool_name`, `tool_input`,
//!   `tool_response` {`llmContent`, `returnDisplay`}; AfterAgent `prompt`
//!   (the turn's first prompt), `prompt_response` (the turn's answers so
//!   far, joined by "\n"), `stop_hook_active`.
//! - Environment: the CLI's own plus `GEMINI_SESSION_ID` (= input
//!   `session_id` = `--session-id <uuid>` when given), `GEMINI_PROJECT_DIR`,
//!   `GEMINI_CWD`, `GEMINI_PLANS_DIR`, `CLAUDE_PROJECT_DIR` (all the cwd but
//!   the plans dir); not `GEMINI_CLI`.
//! - Output: `stdout.trim()`, or if empty `stderr.trim()`, parsed as JSON.
//!   Plain text: exit 0 → a message for the user (headless: printed on
//!   stderr), never the model; exit 1 → a warning; any other exit (2) →
//!   `{"decision":"deny","reason":<text>}`. Empty output, exit 0: nothing.
//!   JSON with exit 1 is still applied (plus a warning).
//! - `hookSpecificOutput.additionalContext` (`hookEventName` not needed; a
//!   top-level `additionalContext` is ignored), `<` → `&lt;`, `>` → `&gt;`
//!   (nothing else), wrapped `<hook_context>T</hook_context>`:
//!   SessionStart headless: prepended to the prompt's part
//!   (`<hook_context>T</hook_context>\n\nPROMPT`), interactive: a part of its
//!   own before the prompt; BeforeAgent: a part after the prompt; AfterTool:
//!   appended to the result (`…</untrusted_context>\n\n<hook_context>T</hook_context>`).
//! - AfterAgent `{"decision":"deny"` (or `"block"`) `,"reason":T}`: the
//!   model runs again with T as a new user message (a content of its own
//!   after the model's answer, T verbatim); BeforeAgent runs again for it;
//!   the next AfterAgent has `stop_hook_active: true`; the user sees "Agent
//!   execution blocked: T". No cap: 12 denies in a row all honoured (150 in
//!   an exploration); the chain ends only when the hook stops denying (an
//!   always-deny hook met the loop check on repeated answers, then recursed
//!   until the CLI crashed). Exit 2 with T on stderr does the same (reported
//!   as a failed hook too).
//! - Exit 2 on AfterTool replaces the tool's result by `{"error": <stderr>}`
//!   ("Tool result blocked"): the output is lost to the model.
//!
//! The idle wake (`background_waiter_wakes_idle_interactive_session`,
//! `without_steering_a_completion_waits_for_the_next_tool_call`,
//! `with_steering_alone_a_completion_is_never_sent`,
//! `by_default_a_completion_is_never_sent`)
//! - `is_background: true`: the result is at once "Command moved to
//!   background (PID: N). Output hidden. Press Ctrl+B to view."; the footer
//!   shows "1 Background process" until it ends; its output goes to
//!   `$GEMINI_CLI_HOME/.gemini/tmp/background-processes/background-N.log`.
//! - With `tools.shell.backgroundCompletionBehavior: "inject"` and
//!   `experimental.modelSteering: true`, its end starts a turn of an idle
//!   session: a new user message `User steering update:\n<user_input>\n<output>
//!   [Background command completed successfully. Output saved to <log>]
//!   <output> </output>\n</user_input>\nInternal instruction: Re-evaluate the
//!   active plan …` in which the output's whitespace runs (newlines too)
//!   are each one space (several mail lines arrive on one line) and the
//!   output is cut at 5,000 units ("...[TRUNCATED]"). Measured 70–390 ms from
//!   the file the waiter waits for (it polls every 50 ms) to the request.
//! - "inject" alone: held in memory and sent only ahead of the next tool
//!   result of a later turn (a typed prompt does not carry it; lost if the
//!   session ends first). Steering alone, or neither (the default
//!   "silent"): never sent.
//!
//! The interactive CLI (`interactive_hooks_and_commands`; support/gemini.rs)
//! - Commands run in a pseudo-terminal (the background log has CRLF). A
//!   foreground command that ends as soon as it printed sometimes loses its
//!   output: "Output: (empty)" in 1 of 5 runs of a test, 2 of 40 quick
//!   `echo`s under CPU load (0 of ~300 on other tries; the CLI finishes on
//!   the pty's exit with the data received so far, chunk-JDPZ4CE3.js
//!   `pty.onExit`). None lost with a 0.05–0.1 s pause after the output, and
//!   none of 20 background completions nor of 25 `inbox wait --once` wakes
//!   under load.
//! - The prompt (`*` under YOLO, placeholder "Type your message or
//!   @path/to/file") is drawn ≈ 4 s after the start, before initialisation
//!   ends (a prompt typed then is queued: "Initializing... Prompts will be
//!   queued."); SessionStart runs ≈ 0.5 s later. An Enter within 30 ms of a
//!   typed key is a newline (40 ms after a paste): type with `send-keys -l`,
//!   wait until the prompt shows the text, then Enter.
//! - A hang-up (tmux kill-server) does not end it (the launcher catches
//!   SIGHUP, the relaunched CLI lives on); SIGTERM to the relaunched process
//!   does, and the launcher follows.
//!
//! Our verb (section 8), with the session id fixed by `--session-id <uuid>`
//! and `gem` registered under `gemini:<uuid>`:
//! - `verb_session_start_hands_over_waiting_mail`: SessionStart puts the
//!   exact `[inter-session msg=<id> from="bob"] …` line (its `<`, `>`
//!   escaped by the CLI) in the first request; receipt
//!   `hook:gemini:SessionStart`.
//! - `verb_before_agent_and_after_tool_hand_over_mail`: BeforeAgent's line
//!   is the part after the prompt, AfterTool's (mail sent by the tool's own
//!   command) ends the tool's result; receipts `hook:gemini:BeforeAgent`,
//!   `hook:gemini:AfterTool`.
//! - `verb_after_agent_denies_with_mail_and_listens_while_idle`: AfterAgent
//!   denies with the waiting line (the next user message, exactly the
//!   line); with `--wait 8s` the next AfterAgent listens and mail sent then
//!   reaches the model 30–40 ms after `mail send` returned; receipts
//!   `hook:gemini:AfterAgent`.
//! - `verb_background_waiter_wakes_idle_interactive_session`: SessionStart
//!   (`--name gem`) registers the session and records its process; the
//!   model's background `inter-session inbox wait --once` finds it without
//!   `--from`; a `mail send` wakes the idle session 70–90 ms later with the
//!   exact line in the steering update; receipt `wait`.
//! - `setup_gemini_wires_hooks_the_real_cli_runs`: `inter-session setup
//!   gemini` writes hooks the CLI runs (SessionStart hands waiting mail
//!   over) and the two waiter settings; `--remove` takes the hooks out.
//!
//! Each test takes 3–15 s (all 16 in parallel ≈ 45–50 s). Without node ≥ 20 /
//! npm / the registry, each skips loudly (`INTER_SESSION_TEST_REQUIRE=all`
//! fails instead); without tmux the interactive ones skip.

#[path = "support/fake_gemini.rs"]
mod fake_gemini;
#[path = "support/gemini.rs"]
mod gemini;
mod support;

use fake_gemini::*;
use gemini::*;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A headless run's bound (they take 2.5–4 s alone, more on a busy box).
const RUN: Duration = Duration::from_secs(50);
/// How long an interactive step may take.
const SOON: Duration = Duration::from_secs(30);
/// What "wakes at once" must stay under (measured ≈ 0.15 s).
const WAKE_BOUND: Duration = Duration::from_secs(5);
/// How long an idle session is watched for a request that must not come
/// (over 20 times the measured wake).
const QUIET: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------
// Hooks and commands that record what they see.

/// One run of a recording hook.
#[derive(Debug, Clone)]
struct HookRun {
    event: String,
    /// It has exited.
    done: bool,
    input: Value,
    env: BTreeMap<String, String>,
    /// The hook's parent pid and that process's arguments.
    ppid: i32,
    parent: String,
}

/// A folder where recording hooks leave one sub-folder per run, named
/// `<ns clock>-<event>` (in order).
struct HookLog {
    dir: PathBuf,
    scripts: PathBuf,
}

impl HookLog {
    fn new(home: &GeminiHome) -> HookLog {
        let dir = home.dir().join("hooklog");
        let scripts = home.dir().join("hooks");
        fs::create_dir_all(&dir).expect("mkdir hooklog");
        fs::create_dir_all(&scripts).expect("mkdir hooks");
        HookLog { dir, scripts }
    }

    /// A hook script for `event` that records its input, environment and
    /// parent (in `$d`), then runs `body` (bash; `$d/in` holds the input,
    /// `$n` counts this event's runs so far, this one included), and at its
    /// exit touches `$d/done`. Returns its path, to name in settings.json.
    fn script(&self, name: &str, event: &str, body: &str) -> String {
        let path = self.scripts.join(format!("{name}.sh"));
        let text = format!(
            "#!/bin/bash\n\
             d='{log}'/$(date +%s%N)-{event}\n\
             mkdir -p \"$d\"\n\
             trap 'touch \"$d/done\"' EXIT\n\
             cat > \"$d/in\"\n\
             env -0 > \"$d/env\"\n\
             echo $PPID > \"$d/ppid\"\n\
             tr '\\0' ' ' < /proc/$PPID/cmdline > \"$d/parent\"\n\
             n=$(ls '{log}' | grep -c -- '-{event}$')\n\
             {body}\n",
            log = self.dir.display(),
        );
        fs::write(&path, text).expect("write hook script");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod hook script");
        path.display().to_string()
    }

    /// Every run so far, in order.
    fn runs(&self) -> Vec<HookRun> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .expect("read hooklog")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let d = self.dir.join(&name);
                let read = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_default();
                HookRun {
                    event: name.split_once('-').map(|x| x.1).unwrap_or("").into(),
                    done: d.join("done").exists(),
                    input: serde_json::from_str(&read("in")).unwrap_or_default(),
                    env: env_map(&read("env")),
                    ppid: read("ppid").trim().parse().unwrap_or(0),
                    parent: read("parent"),
                }
            })
            .collect()
    }

    fn of(&self, event: &str) -> Vec<HookRun> {
        self.runs()
            .into_iter()
            .filter(|r| r.event == event)
            .collect()
    }
}

fn env_map(nul_separated: &str) -> BTreeMap<String, String> {
    nul_separated
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A shell snippet for a scripted command that records its environment,
/// pid (= its process group), parent and grandparent into `dir`.
fn record_cmd(dir: &Path) -> String {
    format!(
        "mkdir -p '{d}'; env -0 > '{d}/env'; echo $$ > '{d}/pid'; echo $PPID > '{d}/ppid'; \
         tr '\\0' ' ' < /proc/$PPID/cmdline > '{d}/parent'; \
         awk '{{print $4}}' /proc/$PPID/stat > '{d}/grandparent'",
        d = dir.display()
    )
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn pid_in(p: &Path) -> i32 {
    read_trim(p)
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {}", p.display()))
}

/// Whether a command line (arguments joined by spaces) runs the CLI:
/// `node … gemini.js …`, or `node … <bin>/gemini …` when started through
/// npm's bin link (the relaunch keeps the path it was started by).
fn runs_the_cli(cmdline: &str) -> bool {
    cmdline
        .split(' ')
        .take(4)
        .any(|a| a.ends_with("gemini.js") || a.ends_with("/gemini"))
}

/// The `<hook_context>` wrapping of `text` as the CLI sends it
/// (`<` and `>` escaped, nothing else).
fn hook_context(text: &str) -> String {
    format!(
        "<hook_context>{}</hook_context>",
        text.replace('<', "&lt;").replace('>', "&gt;")
    )
}

/// A hook body printing `additionalContext` for `event` (JSON-escaped).
fn print_context(event: &str, text: &str) -> String {
    let out = json!({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}});
    format!("printf '%s' '{}'", out.to_string().replace('\'', "'\\''"))
}

/// The requests' readable summary and the run's output, for failures.
fn report(model: &FakeGemini, run: &Run) -> String {
    format!("{}\n==== requests:\n{}", run.report(), model.dump())
}

// ---------------------------------------------------------------------------
// 1. A headless turn with a shell command.

#[test]
fn headless_turn_runs_a_shell_command() {
    let Some(cli) = gemini_cli() else { return };
    let home = GeminiHome::new();
    let rec = home.dir().join("cmd");
    let command = format!("{}; echo shell-says-hi", record_cmd(&rec));
    let substituted = format!("echo $(touch '{}')", home.dir().join("ran").display());
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell(&command)),
        step(Turn::shell(&substituted)),
        step(Turn::end("all done")),
    ]));
    let run = home.prompt(&cli, &model.base_url(), "run the command", RUN);
    run.assert_ok(&model.dump());
    assert_eq!(run.stdout().trim(), "all done", "{}", report(&model, &run));

    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 3, "{}", report(&model, &run));
    let sides: Vec<String> = model
        .recorded()
        .into_iter()
        .filter(|r| r.index.is_none())
        .map(|r| r.path)
        .collect();
    assert!(
        sides.is_empty(),
        "side requests in a short -p run: {sides:?}"
    );

    // The first request: the session context, then the prompt, in one user
    // content; the system instruction, the tools, the generation config.
    let first = &reqs[0];
    // (Sorted: key order means nothing in JSON.)
    let mut keys: Vec<&String> = first.body.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["contents", "generationConfig", "systemInstruction", "tools"],
        "{}",
        first.body
    );
    assert_eq!(first.contents().len(), 1, "{}", first.body["contents"]);
    let user = &first.contents()[0];
    assert_eq!(user["role"], "user");
    let parts = user["parts"].as_array().expect("parts");
    assert!(
        parts[0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("<session_context>\nThis is the Gemini CLI.")),
        "{}",
        parts[0]
    );
    assert_eq!(parts.last().expect("a part")["text"], "run the command");
    assert!(
        first.system_text().contains("<hook_context>"),
        "the system instruction explains <hook_context>"
    );
    // The shell tool, and the name of its background argument.
    let shell = first.tool(SHELL_TOOL);
    let params = &shell["parametersJsonSchema"];
    assert_eq!(params["required"], json!(["command"]), "{shell}");
    assert_eq!(
        params["properties"]["is_background"]["type"], "boolean",
        "{shell}"
    );
    assert_eq!(
        params["properties"]["delay_ms"]["type"], "integer",
        "{shell}"
    );

    // The second: the call (an id added, and the CLI's own thought
    // signature) and its response, wrapped as untrusted.
    let second = &reqs[1];
    let c = second.contents();
    assert_eq!(c.len(), 3, "{}", second.body["contents"]);
    let call = &c[1]["parts"][0];
    assert_eq!(c[1]["role"], "model");
    assert_eq!(call["functionCall"]["name"], SHELL_TOOL);
    assert_eq!(call["functionCall"]["args"], json!({"command": command}));
    assert_eq!(call["thoughtSignature"], "skip_thought_signature_validator");
    let id = call["functionCall"]["id"].as_str().expect("call id");
    assert!(id.starts_with("run_shell_command_"), "{id}");
    let resp = &c[2]["parts"][0]["functionResponse"];
    assert_eq!(c[2]["role"], "user");
    assert_eq!(resp["id"], id);
    assert_eq!(resp["name"], SHELL_TOOL);
    let pid = pid_in(&rec.join("pid"));
    assert_eq!(
        resp["response"],
        json!({"output": format!(
            "<untrusted_context>\nOutput: shell-says-hi\nProcess Group PGID: {pid}\n</untrusted_context>"
        )}),
    );

    // What the command saw: GEMINI_CLI=1 and no session id; its parent is
    // the relaunched CLI (`node --max-old-space-size=… gemini.js …`), whose
    // parent is the launcher this test started.
    let env = env_map(&fs::read_to_string(rec.join("env")).expect("env"));
    assert_eq!(env.get("GEMINI_CLI").map(String::as_str), Some("1"));
    let session_vars: Vec<&String> = env.keys().filter(|k| k.contains("SESSION_ID")).collect();
    assert!(
        session_vars.is_empty(),
        "session variables: {session_vars:?}"
    );
    let parent = read_trim(&rec.join("parent"));
    assert!(
        runs_the_cli(&parent) && parent.contains("--max-old-space-size="),
        "the command's parent: {parent}"
    );
    assert_eq!(pid_in(&rec.join("grandparent")), run.pid, "{parent}");

    // Command substitution is refused, even under --yolo: the command does
    // not run and the model is told why.
    assert_eq!(
        reqs[2].function_responses(),
        [
            json!({"output": "Command injection detected: command substitution syntax ($(), \
                          backticks, <() or >()) found in command arguments. On PowerShell, \
                          @() array subexpressions and $() subexpressions are also blocked. \
                          This is a security risk and the command was blocked."})
        ],
        "{}",
        report(&model, &run)
    );
    assert!(!home.dir().join("ran").exists(), "the substitution ran");
    eprintln!("headless turn with one shell command: {:?}", run.took);
}

// ---------------------------------------------------------------------------
// 2. additionalContext from SessionStart, BeforeAgent and AfterTool.

#[test]
fn hook_context_reaches_the_next_request() {
    let Some(cli) = gemini_cli() else { return };
    let mut home = GeminiHome::new();
    let log = HookLog::new(&home);
    // `<`, `>` are escaped by the CLI; `&` and quotes are not.
    let ss = r#"ss: <b> & "q""#;
    let ba = "ba: before the agent";
    let at = "at: after the tool";
    let ss_cmd = log.script("ss", "SessionStart", &print_context("SessionStart", ss));
    let ba_cmd = log.script("ba", "BeforeAgent", &print_context("BeforeAgent", ba));
    let at_cmd = log.script("at", "AfterTool", &print_context("AfterTool", at));
    home.hook("SessionStart", &ss_cmd)
        .hook("BeforeAgent", &ba_cmd)
        .hook("AfterTool", &at_cmd);
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell("echo tool-ran")),
        step(Turn::end("done")),
    ]));
    let run = home.prompt(&cli, &model.base_url(), "the prompt", RUN);
    run.assert_ok(&model.dump());
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 2, "{}", report(&model, &run));

    // Headless, SessionStart's context leads the prompt's own part;
    // BeforeAgent's is a part after it.
    let texts = reqs[0].new_user_texts();
    assert_eq!(
        texts[1..],
        [
            format!("{}\n\nthe prompt", hook_context(ss)),
            hook_context(ba)
        ],
        "{}",
        report(&model, &run)
    );
    assert_eq!(
        hook_context(ss),
        r#"<hook_context>ss: &lt;b&gt; & "q"</hook_context>"#
    );
    // AfterTool's is appended to the function response's output.
    let out = reqs[1].last_tool_output();
    let pgid = out
        .split("Process Group PGID: ")
        .nth(1)
        .and_then(|s| s.split('\n').next())
        .unwrap_or("?");
    assert_eq!(
        out,
        format!(
            "<untrusted_context>\nOutput: tool-ran\nProcess Group PGID: {pgid}\n</untrusted_context>\n\n{}",
            hook_context(at)
        )
    );
    // Each hook ran once, in order, and saw the events' fields.
    let runs = log.runs();
    let events: Vec<&str> = runs.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["SessionStart", "BeforeAgent", "AfterTool"]);
    assert_eq!(runs[0].input["source"], "startup");
    assert_eq!(
        runs[1].input["prompt"],
        format!("{}\n\nthe prompt", hook_context(ss)),
        "BeforeAgent's prompt holds SessionStart's context"
    );
    assert_eq!(runs[2].input["tool_name"], SHELL_TOOL);
    assert_eq!(
        runs[2].input["tool_input"],
        json!({"command": "echo tool-ran"})
    );
    assert_eq!(
        runs[2].input["tool_response"]["returnDisplay"], "tool-ran",
        "{}",
        runs[2].input
    );
}

// ---------------------------------------------------------------------------
// 3. AfterAgent deny: a new user message, as often as it is denied.

#[test]
fn after_agent_deny_runs_the_model_again() {
    let Some(cli) = gemini_cli() else { return };
    let mut home = GeminiHome::new();
    let log = HookLog::new(&home);
    // Deny 12 times in a row (Claude Code drops a 9th Stop block), then
    // let the turn end.
    let denies = 12;
    let body = format!(
        "if [ \"$n\" -le {denies} ]; then printf '{{\"decision\":\"deny\",\"reason\":\"mail %s\"}}' \"$n\"; fi"
    );
    let aa = log.script("aa", "AfterAgent", &body);
    home.hook("AfterAgent", &aa);
    let model = FakeGemini::start(Script::new(|r| Turn::end(&format!("answer {}", r.index))));
    let run = home.prompt(&cli, &model.base_url(), "the prompt", RUN);
    run.assert_ok(&model.dump());
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), denies + 1, "{}", report(&model, &run));
    for (i, r) in reqs.iter().enumerate().skip(1) {
        // The reason is the only new text: a user message of its own,
        // after the model's answer.
        assert_eq!(
            r.new_user_texts(),
            [format!("mail {i}")],
            "request {i}\n{}",
            report(&model, &run)
        );
        let c = r.contents();
        assert_eq!(
            c[c.len() - 2]["parts"][0]["text"],
            format!("answer {}", i - 1)
        );
        assert_eq!(c[c.len() - 1]["role"], "user");
    }
    // Every AfterAgent after a deny says so; its prompt stays the original
    // one, its response is the turn's answers so far.
    let runs = log.of("AfterAgent");
    assert_eq!(runs.len(), denies + 1);
    let active: Vec<bool> = runs
        .iter()
        .map(|r| {
            r.input["stop_hook_active"]
                .as_bool()
                .expect("stop_hook_active")
        })
        .collect();
    let mut want = vec![true; denies + 1];
    want[0] = false;
    assert_eq!(active, want);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.input["prompt"], "the prompt", "run {i}");
        let answers: Vec<String> = (0..=i).map(|k| format!("answer {k}")).collect();
        assert_eq!(r.input["prompt_response"], answers.join("\n"), "run {i}");
    }
    // The user is told of each deny (stderr under -p); stdout has every
    // answer.
    for i in 1..=denies {
        assert!(
            run.stderr()
                .contains(&format!("Agent execution blocked: mail {i}\n")),
            "{}",
            run.report()
        );
    }
    assert!(run.stdout().contains(&format!("answer {denies}")));
}

// ---------------------------------------------------------------------------
// 4. What other hook outputs do.

#[test]
fn hook_output_forms() {
    let Some(cli) = gemini_cli() else { return };
    let mut home = GeminiHome::new();
    let log = HookLog::new(&home);
    // Plain text (exit 0): shown to the user, not the model.
    let plain = log.script("plain", "SessionStart", "echo PLAIN-TEXT");
    // Empty stdout (exit 0): nothing.
    let empty = log.script("empty", "BeforeAgent", "true");
    // additionalContext at the top level: ignored.
    let flat = log.script(
        "flat",
        "BeforeAgent",
        r#"printf '{"additionalContext":"FLAT-CONTEXT"}'"#,
    );
    // AfterTool: for the command marked BLOCK, stderr and exit 2 (the
    // tool's result is replaced by an error); else context without
    // hookEventName (taken as it is).
    let at = log.script(
        "at",
        "AfterTool",
        "if grep -q BLOCK \"$d/in\"; then echo EXIT2-AFTER-TOOL >&2; exit 2; fi\n\
         printf '{\"hookSpecificOutput\":{\"additionalContext\":\"NO-EVENT-NAME\"}}'",
    );
    // AfterAgent: stderr and exit 2, once: a deny with stderr as reason.
    let aa = log.script(
        "aa",
        "AfterAgent",
        "if [ \"$n\" = 1 ]; then echo EXIT2-AFTER-AGENT >&2; exit 2; fi",
    );
    home.hook("SessionStart", &plain)
        .hook("BeforeAgent", &empty)
        .hook("BeforeAgent", &flat)
        .hook("AfterTool", &at)
        .hook("AfterAgent", &aa);
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell("echo BLOCK me")),
        step(Turn::shell("echo let me")),
        step(Turn::end("first end")),
        step(Turn::end("second end")),
    ]));
    let run = home.prompt(&cli, &model.base_url(), "the prompt", RUN);
    run.assert_ok(&model.dump());
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 4, "{}", report(&model, &run));
    // Nothing of SessionStart's text or BeforeAgent's reached the model.
    assert_eq!(reqs[0].new_user_texts()[1..], ["the prompt"]);
    for r in &reqs {
        let t = r.transcript();
        assert!(
            !t.contains("PLAIN-TEXT") && !t.contains("FLAT-CONTEXT"),
            "{t}"
        );
    }
    assert!(
        run.stderr().lines().any(|l| l == "PLAIN-TEXT"),
        "plain SessionStart text is printed for the user:\n{}",
        run.report()
    );
    // Exit 2 on AfterTool: the result is the hook's stderr, as an error.
    assert_eq!(
        reqs[1].function_responses(),
        [json!({"error": "EXIT2-AFTER-TOOL"})]
    );
    assert!(run
        .stderr()
        .contains("Tool result blocked: EXIT2-AFTER-TOOL"));
    // Context without hookEventName is taken.
    assert!(
        reqs[2]
            .last_tool_output()
            .ends_with("\n\n<hook_context>NO-EVENT-NAME</hook_context>"),
        "{}",
        reqs[2].last_tool_output()
    );
    // Exit 2 on AfterAgent: stderr becomes the next user message (reported
    // to the user as a failed hook, and as the block).
    assert_eq!(reqs[3].new_user_texts(), ["EXIT2-AFTER-AGENT"]);
    assert!(run
        .stderr()
        .contains("Agent execution blocked: EXIT2-AFTER-AGENT"));
    assert!(run.stderr().contains("failed for event AfterAgent"));
    assert_eq!(log.of("AfterAgent").len(), 2);
}

// ---------------------------------------------------------------------------
// 5. Identity: hooks and commands under one process.

#[test]
fn hooks_and_commands_share_the_gemini_process() {
    let Some(cli) = gemini_cli() else { return };
    let mut home = GeminiHome::new();
    let log = HookLog::new(&home);
    let by_pid = home.dir().join("by-pid");
    fs::create_dir_all(&by_pid).expect("mkdir by-pid");
    // SessionStart records its parent's pid → the session id; a command
    // finds its session through its own parent.
    let ss = log.script(
        "ss",
        "SessionStart",
        &format!("echo \"$GEMINI_SESSION_ID\" > '{}'/$PPID", by_pid.display()),
    );
    home.hook("SessionStart", &ss);
    let rec = home.dir().join("cmd");
    // (No `$(…)`: the CLI refuses command substitution, see test 1.)
    let command = format!(
        "{}; printf 'my session: '; cat '{}'/$PPID",
        record_cmd(&rec),
        by_pid.display()
    );
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell(&command)),
        step(Turn::end("done")),
    ]));
    let run = home.prompt(&cli, &model.base_url(), "who am i", RUN);
    run.assert_ok(&model.dump());

    let runs = log.of("SessionStart");
    assert_eq!(runs.len(), 1);
    let hook = &runs[0];
    let sid = hook.input["session_id"].as_str().expect("session_id");
    assert!(!sid.is_empty());
    let mut keys: Vec<&String> = hook.input.as_object().expect("input").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cwd",
            "hook_event_name",
            "session_id",
            "source",
            "timestamp",
            "transcript_path"
        ],
        "{}",
        hook.input
    );
    let cwd = home.work.display().to_string();
    assert_eq!(hook.input["cwd"], cwd.as_str());
    assert_eq!(hook.input["hook_event_name"], "SessionStart");
    assert!(
        hook.input["transcript_path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&home.home.join(".gemini/tmp").display().to_string())),
        "{}",
        hook.input
    );
    // The hook's environment: the session id and the folders, no
    // GEMINI_CLI (commands have that).
    let var = |k: &str| hook.env.get(k).map(String::as_str);
    assert_eq!(var("GEMINI_SESSION_ID"), Some(sid));
    assert_eq!(var("GEMINI_PROJECT_DIR"), Some(cwd.as_str()));
    assert_eq!(var("GEMINI_CWD"), Some(cwd.as_str()));
    assert_eq!(var("CLAUDE_PROJECT_DIR"), Some(cwd.as_str()));
    assert_eq!(var("GEMINI_CLI"), None);
    // The command's: GEMINI_CLI=1, no session id.
    let cmd_env = env_map(
        &fs::read_to_string(rec.join("env"))
            .unwrap_or_else(|e| panic!("the command left no env ({e})\n{}", report(&model, &run))),
    );
    assert_eq!(cmd_env.get("GEMINI_CLI").map(String::as_str), Some("1"));
    assert_eq!(cmd_env.get("GEMINI_SESSION_ID"), None);
    // One parent: the relaunched CLI, child of the launcher.
    let cmd_parent = pid_in(&rec.join("ppid"));
    assert_eq!(hook.ppid, cmd_parent, "hook parent {}", hook.parent);
    assert!(runs_the_cli(&hook.parent), "{}", hook.parent);
    assert_eq!(pid_in(&rec.join("grandparent")), run.pid);
    // So the command learned its session id from the hook's record.
    let reqs = model.main_requests();
    assert!(
        reqs[1]
            .last_tool_output()
            .contains(&format!("my session: {sid}\n")),
        "{}",
        report(&model, &run)
    );
}

// ---------------------------------------------------------------------------
// 6. The same hooks in the interactive CLI.

#[test]
fn interactive_hooks_and_commands() {
    let Some(cli) = gemini_cli() else { return };
    let mut home = GeminiHome::new();
    let log = HookLog::new(&home);
    let ss = log.script(
        "ss",
        "SessionStart",
        &print_context("SessionStart", "ss: interactive"),
    );
    let ba = log.script(
        "ba",
        "BeforeAgent",
        &print_context("BeforeAgent", "ba: interactive"),
    );
    let at = log.script(
        "at",
        "AfterTool",
        &print_context("AfterTool", "at: interactive"),
    );
    let aa = log.script(
        "aa",
        "AfterAgent",
        r#"if [ "$n" = 1 ]; then printf '{"decision":"deny","reason":"deny: go on"}'; fi"#,
    );
    home.hook("SessionStart", &ss)
        .hook("BeforeAgent", &ba)
        .hook("AfterTool", &at)
        .hook("AfterAgent", &aa);
    let rec = home.dir().join("cmd");
    let model = FakeGemini::start(cued(vec![(
        "hello there",
        vec![
            // The pause after the output: a command that ends at once may
            // lose it under the pseudo-terminal (see the header).
            step(Turn::shell(&format!(
                "{}; echo fg-ran; sleep 0.3",
                record_cmd(&rec)
            ))),
            step(Turn::end("first answer")),
        ],
    )]));
    let Some(live) = LiveGemini::start(&cli, &home, &model.base_url(), &[]) else {
        return;
    };
    // SessionStart runs once the prompt is drawn; type after it ended.
    assert!(
        poll(SOON, || log.of("SessionStart").iter().any(|r| r.done)),
        "SessionStart never ran\n{}",
        live.screen()
    );
    live.submit("hello there");
    let denied = model
        .wait_for(SOON, |r| {
            r.new_user_texts()
                .first()
                .is_some_and(|t| t == "deny: go on")
        })
        .unwrap_or_else(|| {
            panic!(
                "no request after the deny\n{}\n{}",
                model.dump(),
                live.screen()
            )
        });
    live.wait_idle(&format!("noted {}", denied.index));
    // The screen can say idle while the turn's last AfterAgent hook is
    // still writing its record: wait for every run to finish.
    assert!(
        poll(SOON, || {
            let runs = log.runs();
            runs.iter().filter(|r| r.event == "AfterAgent").count() == 2
                && runs.iter().all(|r| r.done)
        }),
        "the hooks never all finished\n{}",
        live.screen()
    );
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 3, "{}", model.dump());

    // Interactive, SessionStart's context is a part of its own, before the
    // prompt, in the first user content; BeforeAgent's follows the prompt.
    let first = &reqs[0];
    assert_eq!(first.contents().len(), 1, "{}", first.body["contents"]);
    assert_eq!(
        first.new_user_texts()[1..],
        [
            hook_context("ss: interactive"),
            "hello there".to_string(),
            hook_context("ba: interactive")
        ]
    );
    // The command ran in a pseudo-terminal; AfterTool's context follows
    // its output.
    let out = reqs[1].last_tool_output();
    assert!(
        out.starts_with("<untrusted_context>\nOutput: fg-ran\nProcess Group PGID: ")
            && out.ends_with(&format!(
                "\n</untrusted_context>\n\n{}",
                hook_context("at: interactive")
            )),
        "{out}"
    );
    // The deny: its reason a user message, BeforeAgent's context again
    // after it; the user sees the block.
    assert_eq!(
        denied.new_user_texts(),
        ["deny: go on".to_string(), hook_context("ba: interactive")]
    );
    let c = denied.contents();
    assert_eq!(c[c.len() - 2]["parts"][0]["text"], "first answer");
    assert!(live
        .screen()
        .contains("Agent execution blocked: deny: go on"));
    let aa_runs = log.of("AfterAgent");
    let active: Vec<&Value> = aa_runs
        .iter()
        .map(|r| &r.input["stop_hook_active"])
        .collect();
    assert_eq!(active, [&json!(false), &json!(true)]);

    // Every hook and the command: children of the relaunched CLI, child
    // of the pane's launcher.
    let cli_pid = live.cli_pid().expect("the relaunched CLI");
    assert_eq!(ppid(cli_pid), Some(live.pid));
    assert_eq!(pid_in(&rec.join("ppid")), cli_pid);
    let events: Vec<(String, i32)> = log.runs().into_iter().map(|r| (r.event, r.ppid)).collect();
    assert_eq!(
        events,
        [
            ("SessionStart".to_string(), cli_pid),
            ("BeforeAgent".to_string(), cli_pid),
            ("AfterTool".to_string(), cli_pid),
            ("AfterAgent".to_string(), cli_pid),
            ("BeforeAgent".to_string(), cli_pid),
            ("AfterAgent".to_string(), cli_pid),
        ]
    );
    let sid = &log.of("SessionStart")[0].input["session_id"];
    assert!(log.runs().iter().all(|r| &r.input["session_id"] == sid));
}

// ---------------------------------------------------------------------------
// 7. The idle wake in the interactive CLI.

/// A script of cues: a request whose new text holds a cue (a prompt the
/// test types) starts that cue's turns, one per request; anything else ends
/// the turn with "noted <index>". Each cue fires once.
fn cued(plans: Vec<(&'static str, Vec<Step>)>) -> Script {
    let mut plans = plans;
    let mut queue: VecDeque<Step> = VecDeque::new();
    Script::new(move |r| {
        let new = r.new_text();
        if let Some(i) = plans.iter().position(|(cue, _)| new.contains(cue)) {
            queue = plans.remove(i).1.into();
        }
        match queue.pop_front() {
            Some(mut s) => s(r),
            None => Turn::end(&format!("noted {}", r.index)),
        }
    })
}

/// A background waiter: waits for `wake` (or its folder to go), prints it,
/// then touches `done`.
fn waiter(wake: &Path, done: &Path) -> String {
    format!(
        "while [ -d '{dir}' ] && [ ! -e '{w}' ]; do sleep 0.05; done; cat '{w}'; touch '{d}'",
        dir = wake.parent().expect("dir").display(),
        w = wake.display(),
        d = done.display()
    )
}

/// Write `text` to `path` at once (a rename).
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).expect("write");
    fs::rename(&tmp, path).expect("rename");
}

/// The pid in "Command moved to background (PID: N)".
fn background_pid(output: &str) -> i32 {
    output
        .split("(PID: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no background pid in {output:?}"))
}

/// What the CLI submits for a background completion under model steering.
fn steering_update(log: &Path, output_joined: &str) -> String {
    format!(
        "User steering update:\n<user_input>\n<output> [Background command completed \
         successfully. Output saved to {}] {output_joined} </output>\n</user_input>\n\
         Internal instruction: Re-evaluate the active plan using this user steering update. \
         Classify it as ADD_TASK, MODIFY_TASK, CANCEL_TASK, or EXTRA_CONTEXT. Apply \
         minimal-diff changes only to affected tasks and keep unaffected tasks active. Do not \
         cancel/skip tasks unless the user explicitly cancels them. Acknowledge the steering \
         briefly and state the course correction.",
        log.display()
    )
}

/// An interactive session with `settings` whose model starts the waiter on
/// "start the waiter" and runs `echo second-tool` on "run another";
/// returns once the waiter runs and the session is idle.
struct WakeSetup {
    // Dropped in this order: the CLI before its home (the tmux socket).
    live: LiveGemini,
    model: FakeGemini,
    home: GeminiHome,
    wake: PathBuf,
    done: PathBuf,
    /// The waiter's pid (its log is `background-<pid>.log`).
    bg_pid: i32,
}

fn wake_setup(settings: &[(&str, Value)]) -> Option<WakeSetup> {
    let cli = gemini_cli()?;
    let mut home = GeminiHome::new();
    for (k, v) in settings {
        home.set(k, v.clone());
    }
    let wake = home.dir().join("box").join("wake");
    let done = home.dir().join("waiter-done");
    fs::create_dir_all(wake.parent().expect("dir")).expect("mkdir box");
    let model = FakeGemini::start(cued(vec![
        (
            "start the waiter",
            vec![
                step(Turn::background(&waiter(&wake, &done))),
                step(Turn::end("waiter started")),
            ],
        ),
        (
            "run another",
            vec![
                step(Turn::shell("echo second-tool")),
                step(Turn::end("second done")),
            ],
        ),
    ]));
    let live = LiveGemini::start(&cli, &home, &model.base_url(), &[])?;
    live.submit("start the waiter");
    let started = model
        .wait_for(SOON, |r| {
            r.function_responses().iter().any(|f| {
                f["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("moved to background"))
            })
        })
        .unwrap_or_else(|| panic!("the waiter never started\n{}", model.dump()));
    let out = started.last_tool_output();
    assert_eq!(
        out,
        format!(
            "<untrusted_context>\nCommand moved to background (PID: {}). Output hidden. \
             Press Ctrl+B to view.\n</untrusted_context>",
            background_pid(&out)
        )
    );
    let bg_pid = background_pid(&out);
    live.wait_idle("waiter started");
    live.wait_screen("the background process", SOON, |s| {
        s.contains("1 Background process")
    });
    assert!(alive(bg_pid), "the waiter (pid {bg_pid}) is not running");
    Some(WakeSetup {
        home,
        model,
        live,
        wake,
        done,
        bg_pid,
    })
}

#[test]
fn background_waiter_wakes_idle_interactive_session() {
    let Some(s) = wake_setup(&[
        ("tools.shell.backgroundCompletionBehavior", json!("inject")),
        ("experimental.modelSteering", json!(true)),
    ]) else {
        return;
    };
    let before = s.model.main_requests().len();
    put(&s.wake, "WAKE-LINE-1\nsecond line\n");
    let sent = Instant::now();
    let woke = s
        .model
        .wait_for(SOON, |r| r.new_text().contains("WAKE-LINE-1"))
        .unwrap_or_else(|| {
            panic!(
                "no wake-up\n{}\n==== screen:\n{}",
                s.model.dump(),
                s.live.screen()
            )
        });
    let arrived = s.model.arrived_at(woke.index).expect("arrival");
    let wake = arrived.saturating_duration_since(sent);
    eprintln!(
        "background waiter: idle interactive Gemini asked the model {wake:?} after the file \
         appeared (request {})",
        woke.index
    );
    assert_eq!(woke.index, before, "the wake-up is the next request");
    // A user turn of its own, the output's lines joined by spaces.
    let log = s
        .home
        .home
        .join(".gemini/tmp/background-processes")
        .join(format!("background-{}.log", s.bg_pid));
    assert_eq!(
        woke.new_user_texts(),
        [steering_update(&log, "WAKE-LINE-1 second line")]
    );
    let c = woke.contents();
    assert_eq!(c[c.len() - 2]["parts"][0]["text"], "waiter started");
    assert!(
        wake < WAKE_BOUND,
        "the idle session took {wake:?} to wake\n==== screen:\n{}",
        s.live.screen()
    );
    // The model's answer ends that turn; the output is in the log file
    // (the command ran in a pseudo-terminal: CRLF).
    s.live.wait_idle(&format!("noted {}", woke.index));
    assert_eq!(
        fs::read_to_string(&log).expect("the background log"),
        "WAKE-LINE-1\r\nsecond line\r\n"
    );
}

/// Without both settings: after the waiter ended, the idle session sends
/// nothing; then a prompt whose turn runs a tool: the request after that
/// tool, returned.
fn completion_without_steering(settings: &[(&str, Value)]) -> Option<(WakeSetup, Request)> {
    let s = wake_setup(settings)?;
    let before = s.model.main_requests().len();
    put(&s.wake, "HELD-LINE\n");
    // The waiter printed and ended, and the CLI saw it end.
    assert!(poll(SOON, || s.done.exists()), "the waiter never finished");
    s.live
        .wait_screen("the background process to end", SOON, |sc| {
            !sc.contains("Background process")
        });
    let quiet_from = Instant::now();
    let early = s.model.wait_for(QUIET, |r| r.index >= before);
    assert!(
        early.is_none(),
        "the idle session asked the model {:?} after the waiter ended\n{}",
        quiet_from.elapsed(),
        s.model.dump()
    );
    s.live.submit("run another");
    let after_tool = s
        .model
        .wait_for(SOON, |r| {
            r.function_responses().iter().any(|f| {
                f["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("second-tool"))
            })
        })
        .unwrap_or_else(|| panic!("no request after the second tool\n{}", s.model.dump()));
    // The prompt itself never carried it.
    let prompt = s
        .model
        .wait_for(SOON, |r| r.new_text().contains("run another"))
        .expect("the prompt's request");
    assert!(
        !prompt.new_text().contains("HELD-LINE"),
        "{}",
        prompt.new_text()
    );
    s.live.wait_idle("second done");
    Some((s, after_tool))
}

#[test]
fn without_steering_a_completion_waits_for_the_next_tool_call() {
    let Some((s, after_tool)) = completion_without_steering(&[(
        "tools.shell.backgroundCompletionBehavior",
        json!("inject"),
    )]) else {
        return;
    };
    // Held in memory, then sent before the next tool's result.
    let log = s
        .home
        .home
        .join(".gemini/tmp/background-processes")
        .join(format!("background-{}.log", s.bg_pid));
    let last = after_tool.contents().last().expect("a content").clone();
    let parts = last["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 2, "{last}");
    assert_eq!(parts[0]["text"], steering_update(&log, "HELD-LINE"));
    assert!(parts[1].get("functionResponse").is_some(), "{last}");
}

#[test]
fn with_steering_alone_a_completion_is_never_sent() {
    let Some((s, after_tool)) =
        completion_without_steering(&[("experimental.modelSteering", json!(true))])
    else {
        return;
    };
    assert!(
        !after_tool.transcript().contains("HELD-LINE"),
        "{}",
        s.model.dump()
    );
}

#[test]
fn by_default_a_completion_is_never_sent() {
    let Some((s, after_tool)) = completion_without_steering(&[]) else {
        return;
    };
    assert!(
        !after_tool.transcript().contains("HELD-LINE"),
        "{}",
        s.model.dump()
    );
}

// ---------------------------------------------------------------------------
// 8. Our verb in the real CLI: `inter-session hook gemini <Event>` wired in
// settings.json, and `inbox wait --once` as the background waiter.

/// A UUID of this test's own (the CLI takes it with `--session-id`).
fn session_uuid() -> String {
    let mut rng = support::Rng::seeded("INTER_SESSION_TEST_SEED", "gemini session ids");
    let hex = |n: usize, rng: &mut support::Rng| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.below(16) as u32, 16).expect("hex digit"))
            .collect()
    };
    format!(
        "{}-{}-4{}-8{}-{}",
        hex(8, &mut rng),
        hex(4, &mut rng),
        hex(3, &mut rng),
        hex(3, &mut rng),
        hex(12, &mut rng)
    )
}

/// settings.json's command for our verb.
fn verb(event: &str, args: &str) -> String {
    format!("'{}' hook gemini {event} {args}", support::BIN)
        .trim_end()
        .to_string()
}

/// A home whose runs use `env`'s data folder and find the built binary
/// first on PATH.
fn home_for(env: &support::Env) -> GeminiHome {
    let mut home = GeminiHome::new();
    let bin_dir = Path::new(support::BIN).parent().expect("bin dir");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    home.var("PATH", path)
        .var("INTER_SESSION_DATA_DIR", &env.data);
    home
}

/// `gem`, registered under `gemini:<sid>` (a monitor under that key, then
/// stopped) and offline.
fn register_gem(env: &support::Env, sid: &str) {
    let m = support::monitor_up(env, &format!("gemini:{sid}"), "gem");
    assert_eq!(m.stop(), Some(0));
    env.wait_state("gem", "offline");
    let key = env.sql("select session_key from sessions where name = 'gem'");
    assert_eq!(key.trim(), format!("gemini:{sid}"));
}

/// The exact line a plain message from bob is (SPEC §4).
fn bob_line(id: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"bob\"] {text}")
}

/// `mail status` must say `gem: delivered via <via> at …`.
fn assert_via(env: &support::Env, id: &str, via: &str) {
    let status = env.ok("bob", &["--from", "bob", "mail", "status", id]);
    assert!(
        status.starts_with(&format!("gem: delivered via {via} at ")),
        "mail status {id}: {status}"
    );
}

#[test]
fn verb_session_start_hands_over_waiting_mail() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let sid = session_uuid();
    register_gem(&env, &sid);
    let id = support::send_as(&env, "bob", "gem", "hello <gem> & \"you\"");
    let mut home = home_for(&env);
    home.hook("SessionStart", &verb("SessionStart", ""));
    let model = FakeGemini::start(Script::steps(vec![step(Turn::end("read it"))]));
    let run = home
        .spawn_prompt(
            &cli,
            &model.base_url(),
            &["--session-id", &sid],
            "the prompt",
        )
        .finish(RUN);
    run.assert_ok(&model.dump());
    let first = model.main_requests().remove(0);
    let texts = first.new_user_texts();
    let part = texts.last().expect("the prompt's part");
    let (context, prompt) = part.rsplit_once("\n\n").expect("context, then the prompt");
    assert_eq!(prompt, "the prompt");
    // The context holds the exact line (the CLI escapes only `<` and `>`).
    let inner = context
        .strip_prefix("<hook_context>")
        .and_then(|c| c.strip_suffix("</hook_context>"))
        .unwrap_or_else(|| panic!("not a hook context: {context}"));
    let line = bob_line(&id, "hello <gem> & \"you\"");
    let escaped = line.replace('<', "&lt;").replace('>', "&gt;");
    assert!(
        inner.lines().any(|l| l == escaped),
        "{escaped} not in {inner:?}"
    );
    assert!(inner.contains("connected as 'gem'"), "{inner}");
    assert_via(&env, &id, "hook:gemini:SessionStart");
}

#[test]
fn verb_before_agent_and_after_tool_hand_over_mail() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let sid = session_uuid();
    register_gem(&env, &sid);
    let first_id = support::send_as(&env, "bob", "gem", "before the agent");
    let mut home = home_for(&env);
    home.hook("BeforeAgent", &verb("BeforeAgent", ""))
        .hook("AfterTool", &verb("AfterTool", ""));
    // The model's command sends bob's second message while the tool runs.
    let send = format!(
        "INTER_SESSION_KEY=bob '{}' --from bob --force mail send --to gem --text 'during the tool'",
        support::BIN
    );
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell(&send)),
        step(Turn::end("done")),
    ]));
    let run = home
        .spawn_prompt(
            &cli,
            &model.base_url(),
            &["--session-id", &sid],
            "the prompt",
        )
        .finish(RUN);
    run.assert_ok(&model.dump());
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 2, "{}", report(&model, &run));
    assert_eq!(
        reqs[0].new_user_texts()[1..],
        [
            "the prompt".to_string(),
            hook_context(&bob_line(&first_id, "before the agent"))
        ]
    );
    assert_via(&env, &first_id, "hook:gemini:BeforeAgent");
    let out = reqs[1].last_tool_output();
    let second_id = support::sent_id(
        out.split("Output: ")
            .nth(1)
            .and_then(|o| o.split("\nProcess Group").next())
            .unwrap_or_else(|| panic!("no send output in {out:?}")),
    );
    assert!(
        out.ends_with(&format!(
            "</untrusted_context>\n\n{}",
            hook_context(&bob_line(&second_id, "during the tool"))
        )),
        "{out}"
    );
    assert_via(&env, &second_id, "hook:gemini:AfterTool");
}

/// An AfterTool hook killed before it printed, then one whose output could
/// not be handed over (its stdout fails), leave the mail pending: the model
/// sees nothing of it until the third run hands it over, once.
#[test]
fn verb_killed_or_output_not_taken_leaves_the_mail_to_the_next_run() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let sid = session_uuid();
    register_gem(&env, &sid);
    let id = support::send_as(&env, "bob", "gem", "outlives two failed hooks");
    let mut home = home_for(&env);
    let wrapper = support::failing_twice_hook(&home.dir(), &verb("AfterTool", ""));
    home.hook("AfterTool", &format!("'{}'", wrapper.display()));
    // Before each request after a tool: how the mail stands.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let after_tool = |next: Turn| {
        let (data, id, seen) = (env.data.clone(), id.clone(), seen.clone());
        step_fn(move |_| {
            let out = std::process::Command::new(support::BIN)
                .env("INTER_SESSION_DATA_DIR", &data)
                .env("INTER_SESSION_KEY", "bob")
                .args(["--from", "bob", "mail", "status", &id])
                .output()
                .expect("mail status");
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            next.clone()
        })
    };
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell("echo one")),
        after_tool(Turn::shell("echo two")),
        after_tool(Turn::shell("echo three")),
        after_tool(Turn::end("done")),
    ]));
    let run = home
        .spawn_prompt(
            &cli,
            &model.base_url(),
            &["--session-id", &sid],
            "the prompt",
        )
        .finish(RUN);
    run.assert_ok(&model.dump());
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 4, "{}", report(&model, &run));
    let read = |p: &str| std::fs::read_to_string(home.dir().join(p)).unwrap_or_default();
    assert_eq!(read("killed").trim(), "137", "the first run was killed");
    assert_eq!(
        read("refused").trim(),
        "1",
        "the second run failed: {}",
        read("refused.err")
    );
    // After each failed run the mail is still pending and the model saw
    // none of it; the third run hands it over, once.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..2], ["gem: queued", "gem: queued"], "{seen:?}");
    assert!(
        seen[2].starts_with("gem: delivered via hook:gemini:AfterTool at "),
        "{seen:?}"
    );
    let marker = format!("msg={id} ");
    for r in &reqs[..3] {
        assert!(!r.body.to_string().contains(&marker), "{}", r.index);
    }
    let out = reqs[3].last_tool_output();
    assert!(
        out.ends_with(&hook_context(&bob_line(&id, "outlives two failed hooks"))),
        "{out}"
    );
    assert_eq!(reqs[3].body.to_string().matches(&marker).count(), 1);
}

#[test]
fn verb_after_agent_denies_with_mail_and_listens_while_idle() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let sid = session_uuid();
    register_gem(&env, &sid);
    let first_id = support::send_as(&env, "bob", "gem", "at the end of the turn");
    let mut home = home_for(&env);
    // Listens up to 8 s at each end of a turn (the last one ends the run).
    home.hook("AfterAgent", &verb("AfterAgent", "--wait 8s"));
    let model = FakeGemini::start(Script::new(|r| Turn::end(&format!("answer {}", r.index))));
    let running = home.spawn_prompt(
        &cli,
        &model.base_url(),
        &["--session-id", &sid],
        "the prompt",
    );
    // The waiting mail: a deny at once, the exact line the next user message.
    let second = model
        .wait_for(RUN, |r| r.index == 1)
        .unwrap_or_else(|| panic!("no second request\n{}", model.dump()));
    assert_eq!(
        second.new_user_texts(),
        [bob_line(&first_id, "at the end of the turn")]
    );
    assert_via(&env, &first_id, "hook:gemini:AfterAgent");
    // The next AfterAgent finds no mail and listens: a message sent then
    // reaches the model.
    let hook_waits = || {
        descendants(running.pid).into_iter().any(|p| {
            let args = cmdline(p);
            args.iter().any(|a| a == "AfterAgent") && args.iter().any(|a| a == "--wait")
        })
    };
    assert!(
        poll(SOON, || model.main_requests().len() == 2 && hook_waits()),
        "no AfterAgent hook listening after the second answer\n{}",
        model.dump()
    );
    let second_id = support::send_as(&env, "bob", "gem", "while idle");
    let sent = Instant::now();
    let third = model
        .wait_for(SOON, |r| r.index == 2)
        .unwrap_or_else(|| panic!("no third request\n{}", model.dump()));
    let took = model
        .arrived_at(2)
        .expect("arrival")
        .saturating_duration_since(sent);
    eprintln!("AfterAgent --wait: the model had the mail {took:?} after `mail send` returned");
    assert_eq!(third.new_user_texts(), [bob_line(&second_id, "while idle")]);
    assert!(took < WAKE_BOUND, "{took:?}");
    assert_via(&env, &second_id, "hook:gemini:AfterAgent");
    // No more mail: the last AfterAgent listens its 8 s and lets the run end.
    let run = running.finish(RUN);
    run.assert_ok(&model.dump());
    assert_eq!(model.main_requests().len(), 3, "{}", report(&model, &run));
}

#[test]
fn verb_background_waiter_wakes_idle_interactive_session() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let mut home = home_for(&env);
    home.set("tools.shell.backgroundCompletionBehavior", json!("inject"))
        .set("experimental.modelSteering", json!(true))
        .hook("SessionStart", &verb("SessionStart", "--name gem"));
    let model = FakeGemini::start(cued(vec![(
        "wait for mail",
        vec![
            step(Turn::background("inter-session inbox wait --once")),
            step(Turn::end("waiting for mail")),
        ],
    )]));
    let Some(live) = LiveGemini::start(&cli, &home, &model.base_url(), &[]) else {
        return;
    };
    // SessionStart registered gem under the CLI's session id.
    assert!(
        poll(SOON, || env
            .sql("select session_key from sessions where name = 'gem'")
            .starts_with("gemini:")),
        "SessionStart never registered gem\n{}",
        live.screen()
    );
    live.submit("wait for mail");
    let started = model
        .wait_for(SOON, |r| {
            r.function_responses().iter().any(|f| {
                f["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("moved to background"))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "the waiter never started\n{}\n{}",
                model.dump(),
                live.screen()
            )
        });
    let bg_pid = background_pid(&started.last_tool_output());
    live.wait_idle("waiting for mail");
    live.wait_screen("the background waiter", SOON, |s| {
        s.contains("1 Background process")
    });
    assert!(
        alive(bg_pid),
        "the waiter is not running\n{}",
        live.screen()
    );
    let id = support::send_as(&env, "bob", "gem", "wake up");
    let sent = Instant::now();
    let line = bob_line(&id, "wake up");
    let woke = model
        .wait_for(SOON, |r| r.new_text().contains(&line))
        .unwrap_or_else(|| {
            panic!(
                "no wake-up with {line}\n{}\n==== screen:\n{}",
                model.dump(),
                live.screen()
            )
        });
    let took = model
        .arrived_at(woke.index)
        .expect("arrival")
        .saturating_duration_since(sent);
    eprintln!(
        "inbox wait --once: idle interactive Gemini asked the model {took:?} after `mail send`"
    );
    let log = home
        .home
        .join(".gemini/tmp/background-processes")
        .join(format!("background-{bg_pid}.log"));
    assert_eq!(woke.new_user_texts(), [steering_update(&log, &line)]);
    assert!(took < WAKE_BOUND, "{took:?}");
    assert_via(&env, &id, "wait");
}

/// Started as users start it after `npm install -g` (the `gemini` bin link,
/// run by its `#!/usr/bin/env node` line), the relaunched CLI is `node
/// --max-old-space-size=N <…>/bin/gemini …`, with no `gemini.js` in its
/// arguments. Then SessionStart records no process for the session and a
/// command does not find it (`status --json` says `"connected":false`).
#[test]
fn verb_commands_find_their_session_under_the_npm_bin() {
    let Some(cli) = gemini_cli() else { return };
    let cli = cli.npm_bin().expect("the npm bin link next to gemini.js");
    let env = support::Env::new();
    let mut home = home_for(&env);
    home.hook("SessionStart", &verb("SessionStart", "--name gem"));
    let rec = home.dir().join("cmd");
    let model = FakeGemini::start(Script::steps(vec![
        step(Turn::shell(&format!(
            "{}; inter-session status --json",
            record_cmd(&rec)
        ))),
        step(Turn::end("done")),
    ]));
    let run = home.prompt(&cli, &model.base_url(), "who am i", RUN);
    run.assert_ok(&model.dump());
    let parent = read_trim(&rec.join("parent"));
    assert!(
        parent.contains("/gemini ") && !parent.contains("gemini.js"),
        "the relaunched CLI: {parent}"
    );
    let out = model.main_requests()[1].last_tool_output();
    assert!(out.contains("\"name\":\"gem\""), "{}", report(&model, &run));
}

/// `inter-session setup gemini` writes hooks the real Gemini CLI runs (its
/// SessionStart hands waiting mail over) and the two settings the
/// background waiter needs; `--remove` takes the hooks out again.
#[test]
fn setup_gemini_wires_hooks_the_real_cli_runs() {
    let Some(cli) = gemini_cli() else { return };
    let env = support::Env::new();
    let sid = session_uuid();
    register_gem(&env, &sid);
    let id = support::send_as(&env, "bob", "gem", "via setup's hooks");
    let home = home_for(&env);
    let setup = |args: &[&str]| {
        let out = env
            .cmd("setup-probe")
            .args(["setup", "gemini"])
            .args(args)
            .env("GEMINI_CLI_HOME", &home.home)
            .output()
            .expect("run setup");
        assert!(out.status.success(), "setup gemini {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = setup(&["--name", "gem"]);
    assert!(said.contains("SessionStart hook: added"), "{said}");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(home.settings_path()).expect("read"))
            .expect("json");
    assert_eq!(settings["experimental"]["modelSteering"], true);
    assert_eq!(
        settings["tools"]["shell"]["backgroundCompletionBehavior"],
        "inject"
    );
    let model = FakeGemini::start(Script::steps(vec![step(Turn::end("read it"))]));
    let run = home
        .spawn_prompt(
            &cli,
            &model.base_url(),
            &["--session-id", &sid],
            "the prompt",
        )
        .finish(RUN);
    run.assert_ok(&model.dump());
    let first = model.main_requests().remove(0);
    let line = bob_line(&id, "via setup's hooks");
    assert!(
        first.new_user_texts().iter().any(|t| t.contains(&line)),
        "{}",
        model.dump()
    );
    assert_via(&env, &id, "hook:gemini:SessionStart");
    let said = setup(&["--remove"]);
    assert!(said.contains("SessionStart hook: removed"), "{said}");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(home.settings_path()).expect("read"))
            .expect("json");
    assert!(settings.get("hooks").is_none(), "{settings}");
}
