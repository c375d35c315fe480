//! End to end inside the real Codex CLI (issue 21, SPEC §12): the pinned
//! `@openai/codex@0.171.0` runs offline against a scripted Responses API on
//! loopback (support/fake_codex.rs), with a `CODEX_HOME` and `HOME` of the
//! test's own (support/codex.rs); the request bodies Codex sends are the
//! evidence of what reached the model. The hooks here are tiny shell
//! scripts printing fixed output, so the harness is proven independent of
//! our `hook` verb.
//!
//! FACTS (measured with 0.171.0 on this machine kind, 2026-12-03)
//!
//! Requests. `codex exec --skip-git-repo-check "PROMPT" </dev/null` POSTs
//! `/v1/responses` (JSON, not compressed, `stream: true`; headers
//! `thread-id` and `session-id` = the thread id, `originator: codex_exec`, TUI
//! `codex-tui`), takes 0.3–0.6 s with no hooks. Body keys: `model`,
//! `stream`, `input`, `tools`, `tool_choice`, `parallel_tool_calls`,
//! `reasoning`, `store` (false), `include`, `prompt_cache_key` (= thread id),
//! `client_metadata` (`thread_id`, `turn_id`, …); no `instructions`: the
//! system prompt is the first `developer` message of `input`. `input` is the
//! whole conversation each time: `message` items (`role` developer / user /
//! assistant, `content: [{"type": "input_text"|"output_text", "text"}]`),
//! then `function_call` (`name`, `arguments` as a JSON string, `call_id`)
//! and `function_call_output` (`call_id`, `output` a string:
//! "Chunk ID: …\nWall time: …\nProcess exited with code 0\nOriginal token
//! count: N\nOutput:\n<stdout>"). The user's prompt follows a user
//! `<environment_context>` message. Tools offered: `exec_command` (required
//! `cmd`; also `workdir`, `login`, `justification`, …), `write_stdin`,
//! `request_user_input`, `view_image`, a `multi_agent_v1` namespace, goal
//! tools, `web_search`. The SSE answer that works: `response.created`,
//! `response.output_item.done` per item (`message` or `function_call`),
//! `response.completed` (with `usage`). The interactive TUI also sends a
//! side request with no tools ("Generate a concise, single-line task
//! title…", its own thread id): the fake server tells main requests by the
//! `exec_command` tool.
//!
//! Commands. `exec_command` runs `/bin/bash -lc CMD` in the working folder:
//! a login shell, so on Debian `/etc/profile` replaces the inherited `PATH`
//! (call our binary by its absolute path). Commands get `CODEX_THREAD_ID` =
//! `CODEX_SESSION_ID` = the thread id (= `thread.started`'s `thread_id` of
//! `exec --json`), plus `CODEX_HOME`, `CODEX_CI=1`, `CODEX_TOOL_CALL_ID`.
//!
//! Hooks file. `$CODEX_HOME/hooks.json` is `{"hooks": {"<Event>": [{"matcher":
//! …, "hooks": [{"type": "command", "command": "<sh -c string>", "timeout":
//! <s>, "statusMessage": …}]}]}}` (the Claude Code shape under a top-level
//! `hooks` key; a file without that key is silently empty). Hooks get the
//! Codex process's environment (no `CODEX_THREAD_ID`; `CODEX_HOME`, cwd =
//! the session's folder). A user hook that is not trusted is skipped with
//! no word on stdout or stderr. Trust: `--dangerously-bypass-hook-trust`
//! (prints a warning) or config.toml `[hooks.state."<key>"] trusted_hash =
//! "sha256:<hex>"`, key `<absolute hooks.json path>:<event snake_case>:<group
//! index>:<handler index>` (e.g. `/…/codex/hooks.json:session_start:0:0`). The
//! hash (`currentHash` in `codex app-server`'s `hooks/list`, which also
//! reports `trustStatus` untrusted / trusted / modified) is `sha256:` + hex
//! SHA-256 of the compact JSON, keys sorted at every level, of
//! `{"event_name": "<event snake_case>", "hooks": [{"async": false, "command":
//! C, "statusMessage": S (only if set), "timeout": T (default 600), "type":
//! "command"}], "matcher": M (only if set and the event takes one: not for
//! UserPromptSubmit or Stop)}`; the path is not in it. E.g. command
//! `/tmp/cx/hk/gen.sh PostToolUse`, no matcher → hashed text
//! `{"event_name":"post_tool_use","hooks":[{"async":false,"command":"/tmp/cx/hk/gen.sh PostToolUse","timeout":600,"type":"command"}]}`
//! → `sha256:26be818d…a880a`, exactly what `hooks/list` reported; checked
//! too with a matcher, a timeout of 30 and a statusMessage
//! (`trust_entries_computed_here_match_hooks_list_and_run_the_hooks`).
//!
//! Hook input (stdin, one JSON line): `session_id` (= the thread id),
//! `transcript_path` (`$CODEX_HOME/sessions/Y/M/D/rollout-…-<id>.jsonl`),
//! `cwd`, `hook_event_name`, `model`, `permission_mode`
//! ("bypassPermissions"); SessionStart `source` ("startup"); the others
//! `turn_id`; UserPromptSubmit `prompt`; PostToolUse `tool_name` ("Bash"),
//! `tool_input` (`{"command": …}`), `tool_response` (the command's output),
//! `tool_use_id` (the call id); Stop `stop_hook_active`,
//! `last_assistant_message`.
//!
//! Hook output, per event (exit 0 unless said):
//! - `{"hookSpecificOutput":{"hookEventName":E,"additionalContext":T}}`:
//!   SessionStart → a `developer` message T after `<environment_context>`,
//!   before the user's prompt; UserPromptSubmit → a `developer` message T
//!   right after the prompt; PostToolUse → a `developer` message T between
//!   the `function_call` and its `function_call_output`. T arrives byte for
//!   byte (newlines kept) up to 2,500 "tokens" (10,000 bytes passed whole);
//!   a longer one (30,000 bytes) is cut to about 10,000 characters, head and
//!   tail, framed "Warning: truncated output (original token count: 7500)"
//!   and "Full hook output saved to: /tmp/hook_outputs/<id>/<id>.txt". On
//!   Stop this shape is a failed hook (no effect).
//! - Stop `{"decision":"block","reason":T}` → the model is asked again at
//!   once, with a `user` message `<hook_prompt hook_run_id="stop:<display
//!   order>:<hooks.json path>">T</hook_prompt>` after its answer; the next
//!   Stop input has `stop_hook_active: true`.
//! - Empty stdout → nothing ("Completed"), on every event.
//! - Plain text → SessionStart and UserPromptSubmit: a `developer` message
//!   with the text (trailing newline trimmed), like additionalContext;
//!   PostToolUse: dropped ("Completed"); Stop: a failed hook, nothing.
//! - Exit 2 + stderr E → SessionStart: failed, nothing; UserPromptSubmit:
//!   the prompt is blocked, the model is never asked (`exec` still exits
//!   0); PostToolUse: the `function_call_output` becomes E (the command's
//!   real output is lost); Stop: like a block with reason E.
//! - Exit 1 + stderr → failed, nothing, on every event.
//!
//! Queue. `codex queue --thread <id> --message TEXT` (≈ 0.13–0.19 s) prints
//! `Queued message <uuid> for thread <id>.` and exits 0; with no Codex
//! running the message waits in `$CODEX_HOME/queue_1.sqlite`
//! (`queued_items`). `codex exec resume <id>` without a prompt does nothing
//! ("No prompt provided via stdin.", exit 1) and leaves it queued. `codex
//! exec resume --skip-git-repo-check <id> "PROMPT"` runs the first queued
//! message as a turn (`turn_trigger: "queue"`), the user message TEXT, and
//! steers PROMPT into that same turn (the model was asked with [TEXT], then
//! again with [TEXT, PROMPT]; the first answer dropped). A second queued
//! message is taken off the queue as exec ends and its turn aborted at
//! once: the model sees it on the next resume, as history followed by a
//! `<turn_aborted>` user message — or never: when the abort comes before
//! Codex wrote it to the thread it is gone from the queue and the history
//! alike (seen in 1 of 8 full runs of this file, 0 of 12 sequential tries).
//! So only the first queued message is safe across `exec resume`: whatever
//! queues for a thread nobody runs must queue one message (one batch) and
//! not count it delivered until the model took it (the hooks of that
//! resume can deliver instead).
//! Interactive: `codex` (TUI) starts an app-server daemon per CODEX_HOME
//! (`codex app-server --listen unix:// --managed-daemon`, copied with its
//! resources, 424 MB, into `$CODEX_HOME/packages/app-server-daemon`, pid in
//! `$CODEX_HOME/app-server-daemon/daemon.pid`; it outlives the TUI: stop it
//! with `codex app-server daemon stop`). No thread exists until the first
//! prompt. `codex queue` into the idle TUI starts a turn: the model was
//! asked 0.2 s after the queue call began. With `[features]
//! daemon_auto_start = false` the TUI runs in-process and still picks the
//! message up, but only after 3.7–9.9 s (it polls).
//!
//! What each test proves (the first nine with shell-script hooks, so the
//! harness stands without our verb):
//! - `exec_runs_a_scripted_turn_and_commands_see_the_thread_id`: a scripted
//!   turn with an `exec_command` call runs; the request shape above; the
//!   command sees `CODEX_THREAD_ID` = `CODEX_SESSION_ID` = the thread id.
//! - `context_hooks_reach_the_next_request_as_developer_messages`: where
//!   SessionStart / UserPromptSubmit / PostToolUse additionalContext lands
//!   (exact text, newlines and tabs kept); the hook input fields, `session_id`
//!   = the thread id.
//! - `trust_entries_computed_here_match_hooks_list_and_run_the_hooks`:
//!   untrusted hooks are skipped silently; keys and hashes computed by
//!   support/codex.rs equal `hooks/list`'s (matcher, timeout, statusMessage,
//!   two handlers in a group); written to config.toml they make the hooks
//!   trusted and run without the bypass flag; a changed command is
//!   "modified" and no longer runs.
//! - `stop_block_runs_the_model_again_with_the_reason`: the `<hook_prompt>`
//!   user message, `stop_hook_active` false then true, and an empty stdout
//!   ending the chain.
//! - `empty_stdout_and_exit_1_put_nothing_before_the_model`,
//!   `plain_text_reaches_the_model_only_from_session_start_and_prompt_submit`,
//!   `exit_2_blocks_replaces_or_reprompts`: the table above.
//! - `queue_into_a_finished_thread_is_delivered_on_resume`: `codex queue`
//!   into a thread nobody runs asks no model; a resume without a prompt
//!   leaves it queued; a resume with one shows it first; of two queued, the
//!   first is shown and the second at most once (it can be lost, above).
//! - `queue_wakes_an_idle_interactive_tui`: an idle interactive Codex in a
//!   tmux server of the test's own starts a turn with the queued message
//!   (measured 0.2 s from the call to the model request; the test allows 3 s).
//! - `our_hook_verb_hands_mail_to_codex_on_each_event_with_receipts`:
//!   hooks.json runs the built binary's `hook codex <Event>` (trusted
//!   through computed config.toml entries, no bypass flag): SessionStart
//!   `--name rev` gives the thread the mailbox `rev` (its commands, keyed
//!   `codex:<thread id>`, are the same session); mail sent while a command
//!   runs arrives as the exact `[inter-session msg=<id> from="bob"] text`
//!   developer message after it (receipt `hook:codex:PostToolUse`), mail
//!   sent as the model ends its turn blocks the Stop and comes back in the
//!   `<hook_prompt>` (`hook:codex:Stop`), mail waiting for a resume comes in
//!   SessionStart's context (`hook:codex:SessionStart`), and without a
//!   SessionStart hook right after the prompt (`hook:codex:UserPromptSubmit`);
//!   each once.
//! - `stop_wait_keeps_an_idle_codex_listening_and_mail_wakes_it`: `hook codex
//!   Stop --wait 5s` holds a finished turn open; mail sent then reaches the
//!   model (measured 0.11 s after the send; the test allows 3 s), receipt
//!   `hook:codex:Stop`; with no more mail the run ends after the wait.
//! - `setup_codex_wires_hooks_the_real_codex_trusts_and_runs`: `inter-session
//!   setup codex --name setup-rev` writes hooks.json and the trust entries;
//!   Codex runs them with no bypass flag (SessionStart names the mailbox,
//!   PostToolUse hands mail over); `--remove` leaves config.toml as it was
//!   and no hook of ours runs.
//! - `push_deliverer_wakes_an_idle_tui_with_the_exact_line`: hooks.json's
//!   `hook codex SessionStart --name rev --push` starts the thread's
//!   deliverer (`deliver codex`) in the interactive TUI, not under a
//!   one-shot `codex exec`; mail sent to the idle TUI is queued by it and
//!   comes as the exact line, the new user message of the next request
//!   (measured 0.15 s from the send; the test allows 5 s), receipt
//!   `codex-queue`, once.
//!
//! Where hooks run, and how long a thread stays loaded (0.171.0, measured):
//! under `codex exec` a hook's parent is that `codex exec` process; in the
//! interactive TUI it is the app-server daemon (`codex app-server --listen
//! unix:// --managed-daemon`), whose own parent is the first TUI of that
//! CODEX_HOME. SessionStart's input is the same in both (`source:
//! "startup"`). The daemon holds a loaded thread's rollout file
//! (`transcript_path`) open; after the thread's TUI quits it keeps it open
//! for about a minute (a message queued meanwhile still runs as a turn,
//! headless), then closes it. A deliverer started with `--transcript` ends
//! once nothing holds that file open. The `<uuid>` that `codex queue`
//! prints is the message's `queued_items.id` (checked on a finished
//! thread): a deliverer queues its next batch only once that row is gone.
//!
//! The CLI is installed by the tests into `target/codex` with npm when
//! missing (support/codex.rs); without npm or the registry each test skips
//! loudly (need `codex`), and the TUI test also needs tmux.

#[path = "support/codex.rs"]
mod codex;
#[path = "support/fake_codex.rs"]
mod fake_codex;
mod support;

use codex::*;
use fake_codex::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const BYPASS: &str = "--dangerously-bypass-hook-trust";

/// The pinned CLI, a scripted model and a Codex home for it, or None (the
/// test skipped loudly).
fn setup(script: Script) -> Option<(FakeCodexModel, CodexHome)> {
    let bin = codex()?;
    let model = FakeCodexModel::start(script);
    let home = CodexHome::new(&bin, &model);
    Some((model, home))
}

/// A hook script `name` in the test's folder: it appends its stdin (one
/// JSON line) to `inputs.jsonl` and writes its environment to `<name>.env`,
/// then runs `body` (sh) with `$input` set.
fn hook_script(home: &CodexHome, name: &str, body: &str) -> PathBuf {
    let path = home.tmp.path().join(format!("{name}.sh"));
    let inputs = home.tmp.path().join("inputs.jsonl");
    let env = home.tmp.path().join(format!("{name}.env"));
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\nprintf '%s\\n' \"$input\" >> {}\nenv > {}\n{body}\n",
        shell_quote(&inputs.display().to_string()),
        shell_quote(&env.display().to_string())
    );
    std::fs::write(&path, script).expect("hook script");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod hook");
    path
}

/// A hook script that prints the bytes of `stdout` and `stderr` (kept in
/// files beside it, so no quoting can change them) and exits `code`; a Stop
/// hook (`once`) does nothing when `stop_hook_active` is true.
fn fixed_hook(
    home: &CodexHome,
    name: &str,
    stdout: &str,
    stderr: &str,
    code: i32,
    once: bool,
) -> PathBuf {
    let dir = home.tmp.path();
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    std::fs::write(&out, stdout).expect("hook stdout file");
    std::fs::write(&err, stderr).expect("hook stderr file");
    let guard = if once {
        "case \"$input\" in *'\"stop_hook_active\":true'*) exit 0;; esac\n"
    } else {
        ""
    };
    hook_script(
        home,
        name,
        &format!(
            "{guard}cat {}\ncat {} >&2\nexit {code}",
            shell_quote(&out.display().to_string()),
            shell_quote(&err.display().to_string())
        ),
    )
}

/// `{"hookSpecificOutput":{"hookEventName":E,"additionalContext":T}}`.
fn context_json(event: &str, text: &str) -> String {
    json!({"hookSpecificOutput": {"hookEventName": event, "additionalContext": text}}).to_string()
}

/// Every hook input recorded so far, in order.
fn hook_inputs(home: &CodexHome) -> Vec<Value> {
    std::fs::read_to_string(home.tmp.path().join("inputs.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("hook input {l:?}: {e}")))
        .collect()
}

fn inputs_of(home: &CodexHome, event: &str) -> Vec<Value> {
    hook_inputs(home)
        .into_iter()
        .filter(|v| v["hook_event_name"] == event)
        .collect()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Position of the first message (role, text) in `r`'s messages.
fn pos(r: &Request, role: &str, text: &str) -> Option<usize> {
    r.messages()
        .iter()
        .position(|(ro, t)| ro == role && t == text)
}

/// Whether `needle` appears anywhere in any request Codex sent.
fn anywhere(model: &FakeCodexModel, needle: &str) -> bool {
    model
        .recorded()
        .iter()
        .any(|r| r.body.to_string().contains(needle))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

// ---------------------------------------------------------------------------

#[test]
fn exec_runs_a_scripted_turn_and_commands_see_the_thread_id() {
    let Some((model, home)) = setup(Script::steps(vec![
        step(Turn::exec(
            "echo \"tid=$CODEX_THREAD_ID sid=$CODEX_SESSION_ID\"",
        )),
        step(Turn::end("all done")),
    ])) else {
        return;
    };
    let run = home.exec("run the probe", &[]).ok();
    let thread = run.thread_id.clone();
    assert!(is_uuid(&thread), "thread id {thread:?}: {}", run.show());
    assert!(
        run.events.iter().any(|e| e["type"] == "item.completed"
            && e["item"]["type"] == "agent_message"
            && e["item"]["text"] == "all done"),
        "the last answer in exec's events: {}",
        run.show()
    );

    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 2, "one command, one answer:\n{}", model.dump());
    let (r0, r1) = (&reqs[0], &reqs[1]);
    assert_eq!(r0.body["stream"], true);
    assert_eq!(r0.thread_id(), thread, "thread-id header");
    assert_eq!(r0.body["prompt_cache_key"], thread.as_str());
    let tool = r0.tool(SHELL_TOOL).expect("the exec_command tool");
    assert_eq!(tool["type"], "function");
    assert!(
        tool["parameters"]["required"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("cmd"))),
        "exec_command requires cmd: {tool}"
    );
    assert!(tool["parameters"]["properties"]["cmd"].is_object());
    // The prompt is the last item of the first request, a user message
    // after the environment context; the system prompt is a developer message.
    assert_eq!(
        r0.messages().last(),
        Some(&("user".to_string(), "run the probe".to_string())),
        "{}",
        r0.outline()
    );
    assert!(r0.texts_of("user")[0].starts_with("<environment_context>"));
    assert!(r0.texts_of("developer")[0].contains("Codex"));
    // The command ran in Codex's environment and saw the thread id.
    let call = r1
        .input()
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("the call in the next request");
    assert_eq!(call["name"], SHELL_TOOL);
    let out = r1.last_tool_output();
    assert!(
        out.contains(&format!("tid={thread} sid={thread}")),
        "the command's output: {out:?}"
    );
    assert!(out.contains("Process exited with code 0"), "{out:?}");
}

#[test]
fn context_hooks_reach_the_next_request_as_developer_messages() {
    let Some((model, home)) = setup(Script::steps(vec![
        step(Turn::exec("echo tool-ran")),
        step(Turn::end("done")),
    ])) else {
        return;
    };
    let texts = [
        ("SessionStart", "ctx from SessionStart\nsecond line ✓"),
        ("UserPromptSubmit", "ctx from UserPromptSubmit"),
        ("PostToolUse", "ctx from PostToolUse\t[tab kept]"),
    ];
    let mut hooks = Vec::new();
    for (event, text) in texts {
        let h = fixed_hook(&home, event, &context_json(event, text), "", 0, false);
        hooks.push((event, path_str(&h)));
    }
    let refs: Vec<(&str, &str)> = hooks.iter().map(|(e, c)| (*e, c.as_str())).collect();
    home.write_hooks(&CodexHome::hooks_doc(&refs));

    let run = home.exec("the prompt", &[BYPASS]).ok();
    let thread = run.thread_id.clone();
    let r0 = model.wait_main(0, WAIT).expect("request 0");
    let r1 = model.wait_main(1, WAIT).expect("request 1");

    // SessionStart: after the environment context, before the prompt;
    // UserPromptSubmit: right after the prompt (the last item).
    let ss = pos(&r0, "developer", texts[0].1).unwrap_or_else(|| panic!("{}", r0.outline()));
    let prompt = pos(&r0, "user", "the prompt").expect("prompt");
    let ups = pos(&r0, "developer", texts[1].1).unwrap_or_else(|| panic!("{}", r0.outline()));
    assert_eq!((ss + 1, prompt + 1), (prompt, ups), "{}", r0.outline());
    assert_eq!(
        r0.input().last().map(|i| &i["role"]),
        Some(&json!("developer"))
    );
    // PostToolUse: between the call and its output.
    let new = r1.new_items();
    assert_eq!(new.len(), 2, "{}", r1.outline());
    assert_eq!(new[0]["role"], "developer");
    assert_eq!(content_text(&new[0]["content"]), texts[2].1);
    assert_eq!(new[1]["type"], "function_call_output");
    assert!(r1.last_tool_output().contains("tool-ran"));

    // The hook inputs: session_id is the thread id.
    let inputs = hook_inputs(&home);
    let events: Vec<&str> = inputs
        .iter()
        .map(|v| v["hook_event_name"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(events, ["SessionStart", "UserPromptSubmit", "PostToolUse"]);
    for v in &inputs {
        assert_eq!(v["session_id"], thread.as_str(), "{v}");
        assert_eq!(v["cwd"], path_str(&home.work).as_str(), "{v}");
        assert_eq!(v["model"], "gpt-5", "{v}");
        let transcript = v["transcript_path"].as_str().expect("transcript_path");
        assert!(transcript.ends_with(&format!("{thread}.jsonl")), "{v}");
    }
    assert_eq!(inputs[0]["source"], "startup");
    assert_eq!(inputs[1]["prompt"], "the prompt");
    assert!(inputs[1]["turn_id"].is_string());
    assert_eq!(inputs[2]["tool_name"], "Bash");
    assert_eq!(inputs[2]["tool_input"]["command"], "echo tool-ran");
    assert_eq!(inputs[2]["tool_response"], "tool-ran\n");
    assert!(inputs[2]["tool_use_id"].is_string());
    // Hooks get Codex's environment but no session variable: the input's
    // session_id is all that tells whose hook it is.
    for (event, _) in texts {
        let env = std::fs::read_to_string(home.tmp.path().join(format!("{event}.env")))
            .expect("the hook's environment");
        assert!(
            env.lines()
                .any(|l| l == format!("CODEX_HOME={}", path_str(&home.codex_home))),
            "{env}"
        );
        assert!(
            !env.contains("CODEX_THREAD_ID") && !env.contains("CODEX_SESSION_ID"),
            "{event}: {env}"
        );
    }
}

#[test]
fn trust_entries_computed_here_match_hooks_list_and_run_the_hooks() {
    let Some((model, home)) = setup(Script::new(|_| Turn::end("ok"))) else {
        return;
    };
    let ups = fixed_hook(
        &home,
        "ups",
        &context_json("UserPromptSubmit", "TRUSTED-CTX"),
        "",
        0,
        false,
    );
    let ss = fixed_hook(&home, "ss", "", "", 0, false);
    let stop = fixed_hook(&home, "stop", "", "", 0, false);
    // Matchers (kept for SessionStart, dropped for Stop), a timeout, a
    // status message and two handlers in one group: all in the hash or key.
    home.write_hooks(&json!({"hooks": {
        "SessionStart": [{"matcher": "startup|resume", "hooks": [
            {"type": "command", "command": path_str(&ss), "timeout": 30,
             "statusMessage": "checking mail"}]}],
        "UserPromptSubmit": [{"hooks": [
            {"type": "command", "command": path_str(&ups)}]}],
        "Stop": [{"matcher": "ignored", "hooks": [
            {"type": "command", "command": path_str(&stop)},
            {"type": "command", "command": "true"}]}],
    }}));

    // Untrusted: skipped, silently.
    let run = home.exec("first", &[]).ok();
    assert!(hook_inputs(&home).is_empty(), "an untrusted hook ran");
    assert!(!anywhere(&model, "TRUSTED-CTX"));
    assert!(
        !run.stderr().contains("hook"),
        "untrusted hooks are skipped without a word: {}",
        run.show()
    );

    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(home.hooks_path()).unwrap()).unwrap();
    let ours = trust_entries(&home.hooks_path(), &doc);
    let listed = home.hooks_list();
    let theirs: Vec<(String, String, String)> = listed
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap_or_default().to_string(),
                h["currentHash"].as_str().unwrap_or_default().to_string(),
                h["trustStatus"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(theirs.len(), 4, "{listed:?}");
    for (key, hash) in &ours {
        let found = theirs.iter().find(|(k, _, _)| k == key);
        assert_eq!(
            found.map(|(_, h, s)| (h.as_str(), s.as_str())),
            Some((hash.as_str(), "untrusted")),
            "hooks/list for {key}: {listed:#?}"
        );
    }
    let hooks = path_str(&home.hooks_path());
    let mut keys: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            format!("{hooks}:session_start:0:0"),
            format!("{hooks}:stop:0:0"),
            format!("{hooks}:stop:0:1"),
            format!("{hooks}:user_prompt_submit:0:0"),
        ]
    );

    // Trusted through config.toml: listed as trusted, and they run.
    home.trust_hooks();
    for h in home.hooks_list() {
        assert_eq!(h["trustStatus"], "trusted", "{h}");
    }
    let run = home.exec("second", &[]).ok();
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "second").is_some())
        .expect("the second run's request");
    assert!(
        pos(&r, "developer", "TRUSTED-CTX").is_some(),
        "{}",
        r.outline()
    );
    let events: Vec<Value> = hook_inputs(&home)
        .iter()
        .map(|v| v["hook_event_name"].clone())
        .collect();
    assert_eq!(
        events,
        [
            json!("SessionStart"),
            json!("UserPromptSubmit"),
            json!("Stop")
        ],
        "{}",
        run.show()
    );

    // A changed command is "modified" and no longer runs.
    let mut doc = doc;
    doc["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"] =
        json!(format!("{} ", path_str(&ups)));
    home.write_hooks(&doc);
    let status: Vec<Value> = home
        .hooks_list()
        .iter()
        .filter(|h| h["eventName"] == "userPromptSubmit")
        .map(|h| h["trustStatus"].clone())
        .collect();
    assert_eq!(status, [json!("modified")]);
    home.exec("third", &[]).ok();
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "third").is_some())
        .expect("the third run's request");
    // (Each exec is a new thread: no history of the earlier runs.)
    assert!(
        pos(&r, "developer", "TRUSTED-CTX").is_none(),
        "a modified hook ran: {}",
        r.outline()
    );
}

#[test]
fn stop_block_runs_the_model_again_with_the_reason() {
    let Some((model, home)) = setup(Script::steps(vec![
        step(Turn::end("first answer")),
        step(Turn::end("second answer")),
    ])) else {
        return;
    };
    let reason = "[inter-session msg=X from=\"bob\"] hello\nsecond line";
    let stop = fixed_hook(
        &home,
        "stop",
        &json!({"decision": "block", "reason": reason}).to_string(),
        "",
        0,
        true,
    );
    home.write_hooks(&CodexHome::hooks_doc(&[("Stop", &path_str(&stop))]));
    let run = home.exec("go", &[BYPASS]).ok();
    let thread = run.thread_id.clone();

    let reqs = model.main_requests();
    assert_eq!(
        reqs.len(),
        2,
        "one block, one more answer:\n{}",
        model.dump()
    );
    let new = reqs[1].new_messages();
    let prefix = "<hook_prompt hook_run_id=\"stop:0:";
    assert_eq!(new.len(), 1, "{}", reqs[1].outline());
    assert_eq!(new[0].0, "user");
    assert_eq!(
        new[0].1,
        format!(
            "{prefix}{}\">{reason}</hook_prompt>",
            path_str(&home.hooks_path())
        )
    );
    // After the model's first answer.
    let msgs = reqs[1].messages();
    assert_eq!(
        msgs[msgs.len() - 2],
        ("assistant".to_string(), "first answer".to_string())
    );

    let stops = inputs_of(&home, "Stop");
    assert_eq!(stops.len(), 2, "{stops:?}");
    assert_eq!(stops[0]["stop_hook_active"], false);
    assert_eq!(stops[0]["last_assistant_message"], "first answer");
    assert_eq!(stops[1]["stop_hook_active"], true);
    assert_eq!(stops[1]["last_assistant_message"], "second answer");
    for s in &stops {
        assert_eq!(s["session_id"], thread.as_str());
        assert!(s["turn_id"].is_string());
    }
}

/// Every event's hook printing `stdout`/`stderr` and exiting `code` (Stop
/// only while `stop_hook_active` is false); one command, one answer.
fn all_events(home: &CodexHome, stdout: &str, stderr: &str, code: i32) {
    let mut hooks = Vec::new();
    for event in ["SessionStart", "UserPromptSubmit", "PostToolUse", "Stop"] {
        let out = stdout.replace("EVENT", event);
        let err = stderr.replace("EVENT", event);
        let h = fixed_hook(home, event, &out, &err, code, event == "Stop");
        hooks.push((event, path_str(&h)));
    }
    let refs: Vec<(&str, &str)> = hooks.iter().map(|(e, c)| (*e, c.as_str())).collect();
    home.write_hooks(&CodexHome::hooks_doc(&refs));
}

fn two_steps() -> Script {
    Script::steps(vec![
        step(Turn::exec("echo real-$((40 + 2))")),
        step(Turn::end("done")),
    ])
}

/// The run's two requests carry no hook text: the prompt ends request 0
/// and the command's output ends request 1.
fn assert_untouched(model: &FakeCodexModel, prompt: &str, what: &str) {
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 2, "{what}: no rerun:\n{}", model.dump());
    assert_eq!(
        reqs[0].messages().last(),
        Some(&("user".to_string(), prompt.to_string())),
        "{what}: {}",
        reqs[0].outline()
    );
    let new = reqs[1].new_items();
    assert_eq!(new.len(), 1, "{what}: {}", reqs[1].outline());
    assert!(reqs[1].last_tool_output().contains("real-42"));
    let users = reqs[1].texts_of("user").len();
    let devs = reqs[1].texts_of("developer").len();
    assert_eq!(
        (users, devs),
        (2, 2),
        "{what}: only the environment, the prompt, the system prompt and the skills list: {}",
        reqs[1].outline()
    );
}

#[test]
fn empty_stdout_and_exit_1_put_nothing_before_the_model() {
    // Empty stdout, exit 0: "nothing" on every event.
    let Some((model, home)) = setup(two_steps()) else {
        return;
    };
    all_events(&home, "", "", 0);
    home.exec("quiet hooks", &[BYPASS]).ok();
    assert_untouched(&model, "quiet hooks", "empty stdout");
    assert_eq!(hook_inputs(&home).len(), 4, "each hook ran once");

    // Exit 1 with stderr: a failed hook, nothing reaches the model.
    let Some((model, home)) = setup(two_steps()) else {
        return;
    };
    all_events(&home, "", "FAILED-EVENT", 1);
    let run = home.exec("failing hooks", &[BYPASS]).ok();
    assert_untouched(&model, "failing hooks", "exit 1");
    assert!(!anywhere(&model, "FAILED-"), "{}", model.dump());
    assert_eq!(hook_inputs(&home).len(), 4, "{}", run.show());
}

#[test]
fn plain_text_reaches_the_model_only_from_session_start_and_prompt_submit() {
    let Some((model, home)) = setup(two_steps()) else {
        return;
    };
    all_events(&home, "PLAIN EVENT\n", "", 0);
    home.exec("plain hooks", &[BYPASS]).ok();
    let reqs = model.main_requests();
    assert_eq!(
        reqs.len(),
        2,
        "Stop's plain text blocks nothing:\n{}",
        model.dump()
    );
    let r1 = &reqs[1];
    assert!(
        pos(r1, "developer", "PLAIN SessionStart").is_some(),
        "{}",
        r1.outline()
    );
    assert!(
        pos(r1, "developer", "PLAIN UserPromptSubmit").is_some(),
        "{}",
        r1.outline()
    );
    assert!(!anywhere(&model, "PLAIN PostToolUse"), "{}", model.dump());
    assert_eq!(r1.new_items().len(), 1, "{}", r1.outline());
    assert!(!anywhere(&model, "PLAIN Stop"));
}

#[test]
fn exit_2_blocks_replaces_or_reprompts() {
    // SessionStart, PostToolUse and Stop exit 2 with stderr.
    let Some((model, home)) = setup(Script::steps(vec![
        step(Turn::exec("echo real-$((40 + 2))")),
        step(Turn::end("done")),
        step(Turn::end("again")),
    ])) else {
        return;
    };
    let mut hooks = Vec::new();
    for event in ["SessionStart", "PostToolUse", "Stop"] {
        let h = fixed_hook(
            &home,
            event,
            "",
            &format!("E2 {event}\n"),
            2,
            event == "Stop",
        );
        hooks.push((event, path_str(&h)));
    }
    let refs: Vec<(&str, &str)> = hooks.iter().map(|(e, c)| (*e, c.as_str())).collect();
    home.write_hooks(&CodexHome::hooks_doc(&refs));
    home.exec("exit two", &[BYPASS]).ok();
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 3, "{}", model.dump());
    assert!(!anywhere(&model, "E2 SessionStart"), "{}", model.dump());
    // PostToolUse: the command's output is replaced by the stderr.
    let out = reqs[1].last_tool_output();
    assert_eq!(out.trim_end(), "E2 PostToolUse", "{}", reqs[1].outline());
    assert!(!anywhere(&model, "real-42"));
    // Stop: the stderr is the reason of a block.
    let new = reqs[2].new_messages();
    assert_eq!(new.len(), 1, "{}", reqs[2].outline());
    assert!(
        new[0].0 == "user"
            && new[0].1.starts_with("<hook_prompt hook_run_id=\"stop:")
            && new[0].1.contains(">E2 Stop")
            && new[0].1.ends_with("</hook_prompt>"),
        "{new:?}"
    );

    // UserPromptSubmit exit 2: the prompt is blocked, the model never asked.
    let Some((model, home)) = setup(two_steps()) else {
        return;
    };
    let h = fixed_hook(&home, "ups", "", "E2 UserPromptSubmit\n", 2, false);
    home.write_hooks(&CodexHome::hooks_doc(&[(
        "UserPromptSubmit",
        &path_str(&h),
    )]));
    let run = home.exec("blocked prompt", &[BYPASS]).ok();
    assert!(model.main_requests().is_empty(), "{}", model.dump());
    assert_eq!(
        inputs_of(&home, "UserPromptSubmit").len(),
        1,
        "{}",
        run.show()
    );
}

#[test]
fn queue_into_a_finished_thread_is_delivered_on_resume() {
    let Some((model, home)) = setup(Script::new(|_| Turn::end("ok"))) else {
        return;
    };
    let thread = home.exec("first", &[]).ok().thread_id;
    assert!(is_uuid(&thread));
    assert_eq!(model.main_requests().len(), 1);

    let started = Instant::now();
    let out = home.queue(&thread, "QUEUED ONE");
    let took = started.elapsed();
    assert!(out.status.success(), "codex queue: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("Queued message ")
            && said.trim_end().ends_with(&format!("for thread {thread}.")),
        "{said:?}"
    );
    eprintln!("codex queue took {took:?}");
    // Nothing runs the thread: the model is not asked.
    assert_eq!(model.main_requests().len(), 1, "{}", model.dump());

    // A resume without a prompt does nothing and leaves it queued.
    let run = home.resume(&thread, None, &[]);
    assert_eq!(run.output.status.code(), Some(1), "{}", run.show());
    assert!(
        run.stderr().contains("No prompt provided via stdin"),
        "{}",
        run.show()
    );
    assert_eq!(model.main_requests().len(), 1, "{}", model.dump());

    // With a prompt: the queued message reaches the model first, as a user
    // message, then the prompt.
    let run = home.resume(&thread, Some("go on"), &[]).ok();
    assert_eq!(run.thread_id, thread);
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "go on").is_some())
        .expect("the resume's request");
    let queued = pos(&r, "user", "QUEUED ONE").unwrap_or_else(|| panic!("{}", r.outline()));
    assert!(
        queued < pos(&r, "user", "go on").unwrap(),
        "{}",
        r.outline()
    );
    assert_eq!(r.thread_id(), thread);

    // Two queued before one resume: the first is run (with the prompt);
    // the second is taken off the queue as exec ends and its turn aborted.
    // It reaches the model on the next resume only when Codex wrote it to
    // the thread before the abort: a race (lost in about 1 of 8 runs under
    // load), so only "never twice" is asserted for it.
    for text in ["QUEUED TWO", "QUEUED THREE"] {
        assert!(home.queue(&thread, text).status.success());
    }
    home.resume(&thread, Some("p2"), &[]).ok();
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "p2").is_some())
        .expect("the p2 resume's request");
    let two = pos(&r, "user", "QUEUED TWO").unwrap_or_else(|| panic!("{}", r.outline()));
    assert!(two < pos(&r, "user", "p2").unwrap(), "{}", r.outline());
    home.resume(&thread, Some("p3"), &[]).ok();
    let last = model.last_main().expect("a request");
    assert!(pos(&last, "user", "p3").is_some(), "{}", last.outline());
    let three = last
        .texts_of("user")
        .iter()
        .filter(|t| *t == "QUEUED THREE")
        .count();
    eprintln!(
        "the second of two queued messages {} the model",
        if three == 1 {
            "reached"
        } else {
            "never reached (lost)"
        }
    );
    assert!(three <= 1, "{}", last.outline());
    for text in ["QUEUED ONE", "QUEUED TWO"] {
        let n = last.texts_of("user").iter().filter(|t| *t == text).count();
        assert_eq!(n, 1, "{text}: {}", last.outline());
    }
}

#[test]
fn queue_wakes_an_idle_interactive_tui() {
    let Some((model, home)) = setup(Script::new(|r| Turn::end(&format!("answer {}", r.index))))
    else {
        return;
    };
    if !support::have_tmux() {
        return;
    }
    let tui = Tui::start(&home, &[]);
    tui.type_text("hello from the test");
    // An Enter right after typing can be taken as part of a paste: press it
    // again until the prompt is sent.
    let mut first = None;
    for _ in 0..5 {
        tui.enter();
        first = model.wait_for(Duration::from_secs(3), |r| {
            pos(r, "user", "hello from the test").is_some()
        });
        if first.is_some() {
            break;
        }
    }
    let first = first.unwrap_or_else(|| {
        panic!(
            "the typed prompt never reached the model:\n{}",
            tui.screen()
        )
    });
    let thread = first.thread_id();
    assert!(is_uuid(&thread), "{thread:?}");
    tui.wait_screen(WAIT, "the answer, idle", |s| {
        s.contains(&format!("answer {}", first.index)) && s.contains("Ask Codex to do anything")
    });

    let started = Instant::now();
    let out = home.queue(&thread, "WAKE UP");
    assert!(out.status.success(), "{out:?}");
    let woke = model
        .wait_for(WAIT, |r| pos(r, "user", "WAKE UP").is_some())
        .unwrap_or_else(|| {
            panic!(
                "the queued message never reached the model:\n{}",
                tui.screen()
            )
        });
    let after = woke.at.duration_since(started);
    eprintln!("codex queue into the idle TUI: model asked {after:?} after the call began");
    assert!(after < Duration::from_secs(3), "took {after:?}");
    assert_eq!(woke.thread_id(), thread);
    tui.wait_screen(WAIT, "the woken turn's answer", |s| {
        s.contains(&format!("answer {}", woke.index))
    });
    drop(tui);
    drop(home);
}

// ---------------------------------------------------------------------------
// Our verb in the real Codex: hooks.json runs `<built binary> hook codex
// <Event>`, the mailbox is the thread's (`codex:<thread id>`).

/// The built binary against `data` as session key `key`, with none of the
/// caller's inter-session or host variables.
fn ours(data: &Path, key: &str, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(support::BIN);
    for (k, _) in std::env::vars() {
        if ["CLAUDE", "INTER_SESSION", "CODEX", "GEMINI"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
    c.env("INTER_SESSION_DATA_DIR", data)
        .env("INTER_SESSION_KEY", key)
        .args(args)
        .stdin(std::process::Stdio::null());
    run_limited(c, Duration::from_secs(20), "inter-session")
}

/// Mail from `from` to `to`; its id.
fn send_mail(data: &Path, from: &str, to: &str, text: &str) -> String {
    let out = ours(
        data,
        from,
        &[
            "--from", from, "--force", "mail", "send", "--to", to, "--text", text,
        ],
    );
    assert!(out.status.success(), "send: {out:?}");
    support::sent_id(&String::from_utf8_lossy(&out.stdout))
}

/// How message `id` reached its reader (`mail status --json`), or its status.
fn receipt(data: &Path, id: &str) -> String {
    let out = ours(
        data,
        "probe",
        &["--from", "probe", "mail", "status", id, "--json"],
    );
    assert!(out.status.success(), "mail status: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("mail status --json");
    let r = &v[0];
    r["delivered_via"]
        .as_str()
        .or(r["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The line a message is shown as (SPEC §4).
fn mail_line(id: &str, from: &str, text: &str) -> String {
    format!("[inter-session msg={id} from=\"{from}\"] {text}")
}

/// hooks.json running our verb for `events` (`extra` args per event).
fn verb_hooks(home: &CodexHome, events: &[(&str, &str)]) {
    let bin = shell_quote(support::BIN);
    let cmds: Vec<(String, String)> = events
        .iter()
        .map(|(e, extra)| {
            (
                e.to_string(),
                format!(
                    "{bin} hook codex {e}{}",
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(" {extra}")
                    }
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = cmds.iter().map(|(e, c)| (e.as_str(), c.as_str())).collect();
    home.write_hooks(&CodexHome::hooks_doc(&refs));
}

#[test]
fn our_hook_verb_hands_mail_to_codex_on_each_event_with_receipts() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().join("data");
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The model's first request: mail arrives while it works; its second:
    // more mail as it finishes the turn.
    let (d1, d2, i1, i2) = (data.clone(), data.clone(), ids.clone(), ids.clone());
    let Some((model, home)) = setup(Script::steps(vec![
        step_fn(move |_| {
            i1.lock()
                .unwrap()
                .push(send_mail(&d1, "bob", "rev", "during the tool"));
            Turn::exec("echo working")
        }),
        step_fn(move |_| {
            i2.lock()
                .unwrap()
                .push(send_mail(&d2, "bob", "rev", "at the end of the turn"));
            Turn::end("first done")
        }),
        step(Turn::end("second done")),
    ])) else {
        return;
    };
    let home = home.with("INTER_SESSION_DATA_DIR", &path_str(&data));
    verb_hooks(
        &home,
        &[
            ("SessionStart", "--name rev"),
            ("UserPromptSubmit", ""),
            ("PostToolUse", ""),
            ("Stop", ""),
        ],
    );
    // Trust entries, as a setup command would write them (no bypass flag).
    home.trust_hooks();

    // Turn 1: SessionStart gives the thread its mailbox 'rev'; mail sent
    // while the command runs comes after it (PostToolUse), mail sent as the
    // model finishes blocks the Stop and runs the model again.
    let run = home.exec("start", &[]).ok();
    let thread = run.thread_id.clone();
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 3, "{}", model.dump());
    let ctx = reqs[0].texts_of("developer");
    assert!(
        ctx.iter().any(|t| t.contains("connected as 'rev'")),
        "SessionStart's word: {}",
        reqs[0].outline()
    );
    let (tool_id, stop_id) = {
        let ids = ids.lock().unwrap();
        (ids[0].clone(), ids[1].clone())
    };
    let new = reqs[1].new_items();
    assert_eq!(new.len(), 2, "{}", reqs[1].outline());
    assert_eq!(new[0]["role"], "developer");
    assert_eq!(
        content_text(&new[0]["content"]),
        mail_line(&tool_id, "bob", "during the tool")
    );
    assert_eq!(receipt(&data, &tool_id), "hook:codex:PostToolUse");
    let new = reqs[2].new_messages();
    assert_eq!(
        new,
        [(
            "user".to_string(),
            format!(
                "<hook_prompt hook_run_id=\"stop:3:{}\">{}</hook_prompt>",
                path_str(&home.hooks_path()),
                mail_line(&stop_id, "bob", "at the end of the turn")
            )
        )],
        "{}",
        reqs[2].outline()
    );
    assert_eq!(receipt(&data, &stop_id), "hook:codex:Stop");
    // The thread's own commands are the same mailbox (CODEX_THREAD_ID).
    let out = ours(&data, &format!("codex:{thread}"), &["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(v["name"], "rev", "{v}");

    // Mail waiting when the thread resumes: SessionStart hands it over.
    let resume_id = send_mail(&data, "bob", "rev", "for the resume");
    home.resume(&thread, Some("next"), &[]).ok();
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "next").is_some())
        .expect("the resume's request");
    let line = mail_line(&resume_id, "bob", "for the resume");
    // One developer message: SessionStart's word, then the mail line.
    let at = r
        .messages()
        .iter()
        .position(|(ro, t)| ro == "developer" && t.lines().any(|l| l == line))
        .unwrap_or_else(|| panic!("{}", r.outline()));
    assert!(at < pos(&r, "user", "next").unwrap(), "{}", r.outline());
    assert_eq!(receipt(&data, &resume_id), "hook:codex:SessionStart");

    // Without a SessionStart hook, UserPromptSubmit hands it over, right
    // after the prompt.
    verb_hooks(&home, &[("UserPromptSubmit", ""), ("Stop", "")]);
    home.trust_hooks();
    let prompt_id = send_mail(&data, "bob", "rev", "for the prompt");
    home.resume(&thread, Some("again"), &[]).ok();
    let r = model
        .wait_for(WAIT, |r| pos(r, "user", "again").is_some())
        .expect("the second resume's request");
    let line = mail_line(&prompt_id, "bob", "for the prompt");
    assert_eq!(
        pos(&r, "developer", &line),
        pos(&r, "user", "again").map(|p| p + 1),
        "{}",
        r.outline()
    );
    assert_eq!(receipt(&data, &prompt_id), "hook:codex:UserPromptSubmit");
    // Each message reached the model once.
    let last = model.last_main().expect("a request");
    for id in [&tool_id, &stop_id, &resume_id, &prompt_id] {
        let n = last
            .messages()
            .iter()
            .filter(|(_, t)| t.contains(&format!("msg={id} ")))
            .count();
        assert_eq!(n, 1, "{id}: {}", last.outline());
    }
}

/// A PostToolUse hook killed before it printed, then one whose output could
/// not be handed over (its stdout fails), leave the mail pending: the model
/// sees nothing of it until the third run hands it over, once.
#[test]
fn a_killed_hook_or_output_not_taken_leaves_the_mail_to_the_next_run() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().join("data");
    let id = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (d1, i1) = (data.clone(), id.clone());
    // Before each request after a tool: how the mail stands.
    let after_tool = |next: Turn| {
        let (data, id, seen) = (data.clone(), id.clone(), seen.clone());
        step_fn(move |_| {
            let id = id.lock().unwrap().clone();
            seen.lock().unwrap().push(receipt(&data, &id));
            next.clone()
        })
    };
    let Some((model, home)) = setup(Script::steps(vec![
        step_fn(move |_| {
            *i1.lock().unwrap() = send_mail(&d1, "bob", "rev", "outlives two failed hooks");
            Turn::exec("echo one")
        }),
        after_tool(Turn::exec("echo two")),
        after_tool(Turn::exec("echo three")),
        after_tool(Turn::end("done")),
    ])) else {
        return;
    };
    let home = home.with("INTER_SESSION_DATA_DIR", &path_str(&data));
    let wrapper = support::failing_twice_hook(
        home.tmp.path(),
        &format!("{} hook codex PostToolUse", shell_quote(support::BIN)),
    );
    let start = format!(
        "{} hook codex SessionStart --name rev",
        shell_quote(support::BIN)
    );
    home.write_hooks(&CodexHome::hooks_doc(&[
        ("SessionStart", start.as_str()),
        ("PostToolUse", &shell_quote(&path_str(&wrapper))),
    ]));
    home.trust_hooks();
    home.exec("start", &[]).ok();

    let id = id.lock().unwrap().clone();
    let line = mail_line(&id, "bob", "outlives two failed hooks");
    let reqs = model.main_requests();
    assert_eq!(reqs.len(), 4, "{}", model.dump());
    let read = |p: &str| std::fs::read_to_string(home.tmp.path().join(p)).unwrap_or_default();
    assert_eq!(read("killed").trim(), "137", "the first run was killed");
    assert_eq!(
        read("refused").trim(),
        "1",
        "the second run failed: {}",
        read("refused.err")
    );
    // After each failed run the mail is still pending and the model saw none
    // of it; the third run hands it over, once.
    assert_eq!(
        *seen.lock().unwrap(),
        ["pending", "pending", "hook:codex:PostToolUse"]
    );
    for r in &reqs[..3] {
        assert!(
            !r.body.to_string().contains(&format!("msg={id} ")),
            "{}",
            r.outline()
        );
    }
    let shown: Vec<_> = reqs[3]
        .messages()
        .into_iter()
        .filter(|(_, t)| t.contains(&format!("msg={id} ")))
        .collect();
    assert_eq!(
        shown,
        [("developer".to_string(), line)],
        "{}",
        reqs[3].outline()
    );
}

#[test]
fn stop_wait_keeps_an_idle_codex_listening_and_mail_wakes_it() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().join("data");
    let Some((model, home)) = setup(Script::steps(vec![
        step(Turn::end("idle now")),
        step(Turn::end("read it")),
    ])) else {
        return;
    };
    let home = home.with("INTER_SESSION_DATA_DIR", &path_str(&data));
    verb_hooks(
        &home,
        &[("SessionStart", "--name idle"), ("Stop", "--wait 5s")],
    );
    let mut c = home.cmd(&[
        "exec",
        "--skip-git-repo-check",
        "--json",
        BYPASS,
        "wait for mail",
    ]);
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("spawn codex exec");
    let first = model.wait_main(0, WAIT).expect("the first request");
    // The mailbox exists once SessionStart ran (before the first request).
    let sent_at = Instant::now();
    let id = send_mail(&data, "bob", "idle", "wake up");
    let woke = model
        .wait_for(WAIT, |r| r.index > first.index)
        .unwrap_or_else(|| panic!("no second request:\n{}", model.dump()));
    let took = woke.at.duration_since(sent_at);
    eprintln!("Stop --wait: send → model {took:?}");
    let new = woke.new_messages();
    assert_eq!(new.len(), 1, "{}", woke.outline());
    assert!(
        new[0].1.ends_with(&format!(
            "{}</hook_prompt>",
            mail_line(&id, "bob", "wake up")
        )),
        "{new:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(receipt(&data, &id), "hook:codex:Stop");
    // The second Stop waits its 5 s for more, finds none, and the run ends.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "codex exec did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert_eq!(model.main_requests().len(), 2, "{}", model.dump());
}

/// `inter-session setup codex` writes hooks and trust entries that the real
/// Codex runs without the bypass flag: SessionStart registers the name given
/// to setup, mail sent during a command reaches the model after it
/// (PostToolUse), and `setup codex --remove` takes it all out again (Codex
/// then runs no hook of ours: the mail waits).
#[test]
fn setup_codex_wires_hooks_the_real_codex_trusts_and_runs() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().join("data");
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (d1, i1) = (data.clone(), ids.clone());
    let Some((model, home)) = setup(Script::steps(vec![
        step_fn(move |_| {
            i1.lock()
                .unwrap()
                .push(send_mail(&d1, "bob", "setup-rev", "via setup's hooks"));
            Turn::exec("echo working")
        }),
        step(Turn::end("done")),
        step(Turn::end("done again")),
    ])) else {
        return;
    };
    let home = home.with("INTER_SESSION_DATA_DIR", &path_str(&data));
    let setup_cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(support::BIN);
        for (k, _) in std::env::vars() {
            if ["CLAUDE", "INTER_SESSION", "CODEX", "GEMINI"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                c.env_remove(k);
            }
        }
        c.env("INTER_SESSION_DATA_DIR", &data)
            .env("CODEX_HOME", &home.codex_home)
            .env("HOME", &home.home)
            .arg("setup")
            .arg("codex")
            .args(args)
            .stdin(std::process::Stdio::null());
        let out = run_limited(c, Duration::from_secs(20), "setup codex");
        assert!(out.status.success(), "setup codex {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = setup_cmd(&["--name", "setup-rev"]);
    assert!(said.contains("PostToolUse hook: trusted"), "{said}");
    let config_before = std::fs::read_to_string(home.config_path()).expect("config");

    // No bypass flag: Codex runs the hooks because setup trusted them.
    let run = home.exec("start", &[]).ok();
    let reqs = model.main_requests();
    assert!(reqs.len() >= 2, "{}", model.dump());
    assert!(
        reqs[0]
            .texts_of("developer")
            .iter()
            .any(|t| t.contains("connected as 'setup-rev'")),
        "{}",
        reqs[0].outline()
    );
    let id = ids.lock().unwrap()[0].clone();
    let line = mail_line(&id, "bob", "via setup's hooks");
    assert!(
        reqs[1].texts_of("developer").iter().any(|t| t == &line),
        "{}",
        reqs[1].outline()
    );
    assert_eq!(receipt(&data, &id), "hook:codex:PostToolUse");

    // Removed: the user's config as it was before setup, no hook of ours
    // runs, mail waits.
    let said = setup_cmd(&["--remove"]);
    assert!(said.contains("Stop hook: removed"), "{said}");
    let config_after = std::fs::read_to_string(home.config_path()).expect("config");
    assert!(!config_after.contains("hooks.state"), "{config_after}");
    assert!(
        config_before.starts_with(config_after.trim_end()),
        "{config_after}"
    );
    let later = send_mail(&data, "bob", "setup-rev", "after remove");
    home.resume(&run.thread_id, Some("again"), &[]).ok();
    assert!(!anywhere(&model, &mail_line(&later, "bob", "after remove")));
    assert_eq!(receipt(&data, &later), "pending");
}

/// Wait until message `id`'s receipt is `via`: the deliverer marks a batch
/// once `codex queue` has exited 0, and Codex may ask the model before that.
fn wait_receipt(data: &Path, id: &str, via: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = receipt(data, id);
        if now == via {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message {id}: receipt {now:?}, never {via:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether mailbox `name` is online (`list --json`).
fn online(data: &Path, name: &str) -> bool {
    let out = ours(data, "probe", &["list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .any(|s| s["name"] == name && s["state"] == "online")
}

#[test]
fn push_deliverer_wakes_an_idle_tui_with_the_exact_line() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().join("data");
    let Some((model, home)) = setup(Script::new(|r| Turn::end(&format!("answer {}", r.index))))
    else {
        return;
    };
    if !support::have_tmux() {
        return;
    }
    let bin = path_str(&home.bin);
    let home = home
        .with("INTER_SESSION_DATA_DIR", &path_str(&data))
        .with("INTER_SESSION_CODEX_BIN", &bin);
    verb_hooks(
        &home,
        &[
            ("SessionStart", "--name rev --push"),
            ("UserPromptSubmit", ""),
            ("PostToolUse", ""),
            ("Stop", ""),
        ],
    );
    home.trust_hooks();
    let logs = data.join("logs");

    // A one-shot `codex exec` starts no deliverer (its SessionStart hook
    // runs under `codex exec`).
    let run = home.exec("one shot", &[]).ok();
    assert!(
        !logs
            .join(format!("deliver-codex-{}.log", run.thread_id))
            .exists(),
        "a deliverer was started for codex exec"
    );

    let tui = Tui::start(&home, &[]);
    tui.type_text("hello from the test");
    let mut first = None;
    for _ in 0..5 {
        tui.enter();
        first = model.wait_for(Duration::from_secs(3), |r| {
            pos(r, "user", "hello from the test").is_some()
        });
        if first.is_some() {
            break;
        }
    }
    let first =
        first.unwrap_or_else(|| panic!("the prompt never reached the model:\n{}", tui.screen()));
    let thread = first.thread_id();
    tui.wait_screen(WAIT, "the answer, idle", |s| {
        s.contains(&format!("answer {}", first.index)) && s.contains("Ask Codex to do anything")
    });
    // SessionStart --push started the thread's deliverer: the mailbox is online.
    let deadline = Instant::now() + WAIT;
    while !online(&data, "rev") {
        assert!(
            Instant::now() < deadline,
            "the deliverer never came up; log: {:?}",
            std::fs::read_to_string(logs.join(format!("deliver-codex-{thread}.log")))
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let sent = Instant::now();
    let id = send_mail(&data, "bob", "rev", "wake up and read this");
    let line = mail_line(&id, "bob", "wake up and read this");
    let woke = model
        .wait_for(WAIT, |r| {
            r.index > first.index && pos(r, "user", &line).is_some()
        })
        .unwrap_or_else(|| {
            panic!(
                "the mail never reached the model:\n{}\nlog: {:?}",
                model.dump(),
                std::fs::read_to_string(logs.join(format!("deliver-codex-{thread}.log")))
            )
        });
    let took = woke.at.duration_since(sent);
    eprintln!("deliver codex: send → model {took:?}");
    assert_eq!(woke.thread_id(), thread);
    // The line is the new user message of that request, exactly.
    assert_eq!(
        woke.new_messages().first(),
        Some(&("user".to_string(), line.clone())),
        "{}",
        woke.outline()
    );
    wait_receipt(&data, &id, "codex-queue");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    tui.wait_screen(WAIT, "the woken turn's answer", |s| {
        s.contains(&format!("answer {}", woke.index))
    });
    // Two more in a row: each batch is queued once Codex took the last one
    // off its queue; both reach the model, each once.
    let id2 = send_mail(&data, "bob", "rev", "second");
    let id3 = send_mail(&data, "bob", "rev", "third");
    for (i, text) in [(&id2, "second"), (&id3, "third")] {
        let line = mail_line(i, "bob", text);
        model
            .wait_for(WAIT, |r| {
                r.messages()
                    .iter()
                    .any(|(ro, t)| ro == "user" && t.lines().any(|l| l == line))
            })
            .unwrap_or_else(|| panic!("{text} never reached the model:\n{}", model.dump()));
        wait_receipt(&data, i, "codex-queue");
    }
    tui.wait_screen(WAIT, "idle again", |s| {
        s.contains("Ask Codex to do anything")
    });
    std::thread::sleep(Duration::from_secs(1));
    let last = model.last_main().expect("a request");
    for i in [&id, &id2, &id3] {
        let n = last
            .messages()
            .iter()
            .filter(|(_, t)| t.contains(&format!("msg={i} ")))
            .count();
        assert_eq!(n, 1, "{i}: {}", last.outline());
    }
    // Disconnect ends the deliverer.
    let out = ours(&data, &format!("codex:{thread}"), &["disconnect"]);
    assert!(out.status.success(), "{out:?}");
    drop(tui);
    drop(home);
}
