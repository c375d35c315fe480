//! The command line: the clap tree in one place, one file per verb group,
//! and a single `match` that dispatches. Command files parse, call the
//! store, and print; they hold no SQL.

mod auto_start;
mod db;
mod history;
mod hook;
mod inbox;
mod lease;
mod list;
mod mail;
mod peer;
mod session;
mod setup;
mod sql;
mod task;
mod waiter;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::identity::{self, UsageError};
use crate::store::tasks::DEFAULT_MAX_ATTEMPTS;
use crate::store::{self, Address, Brief, Mailbox, NewMessage, Recipients, Session, State, Verbs};

#[derive(Parser, Debug)]
#[command(
    name = "inter-session",
    version,
    about = "Durable, scriptable mailbox for AI coding-agent sessions, on one machine or several",
    long_about = "Durable, scriptable mailbox for AI coding-agent sessions, on one machine or several.\n\n\
        Each session runs a monitor (`inter-session inbox watch`) that prints one line per \
        incoming message; any process can send with `inter-session mail send`. Mail to a \
        session whose monitor is not running waits and is replayed when it comes back. \
        Everything lives in one SQLite file in the data folder by default, or in one \
        PostgreSQL database that sessions on several machines share \
        (INTER_SESSION_DATABASE_URL or --database-url); either way you can query it with \
        `inter-session sql`. It listens on no network port and runs no daemon.",
    after_help = "Examples:\n  \
        inter-session inbox watch --name alice          # terminal 1: alice's monitor\n  \
        INTER_SESSION_KEY=b inter-session connect bob   # terminal 2: bob's monitor\n  \
        inter-session mail send --from bob --to alice --text 'hello'\n  \
        inter-session list\n\n\
        Data folder: $INTER_SESSION_DATA_DIR, else ~/.claude/data/inter-session"
)]
pub struct Cli {
    /// Act as this session (for scripts); it is registered if new.
    #[arg(long, global = true, value_name = "NAME")]
    pub from: Option<String>,

    /// With --from: act as a session whose monitor is online under another
    /// session key (an operator's override; a changed or drained session is told)
    #[arg(long, global = true, requires = "from")]
    pub force: bool,

    /// Use this PostgreSQL database instead of the data folder's SQLite file
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "INTER_SESSION_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Receive mail: the monitor, and pull-mode reading
    #[command(subcommand)]
    Inbox(InboxCmd),
    /// Start this session's monitor (alias of `inbox watch`)
    #[command(after_help = "Example:\n  inter-session connect alice --label 'reviewer'")]
    Connect {
        /// Mailbox name (default: this session's previous name, else the folder's)
        name: Option<String>,
        #[command(flatten)]
        opts: WatchArgs,
    },
    /// Send mail
    #[command(subcommand)]
    Mail(MailCmd),
    /// Sessions online and offline, with pending mail
    #[command(after_help = "Examples:\n  inter-session list\n  inter-session list --all --json")]
    List {
        /// Include sessions that have left
        #[arg(long)]
        all: bool,
        /// Only sessions of this project (nearest folder holding .git)
        #[arg(long)]
        project: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// This session: name, state, which path delivers its mail, pending mail, database path
    #[command(after_help = "Examples:\n  inter-session status --json\n  \
        inter-session status --wait 5s   # right after /inter-session: give the plugin's monitor time to start\n\n\
        `delivery` says who hands this session's mail to the model: the plugin's monitor (never\n\
        expires: start no Monitor), a monitor (a Monitor expires: re-arm it), hooks (no monitor\n\
        runs; the plugin's hooks and doorbell hand it over), or none (it waits).")]
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Wait up to AGE for a monitor to hold this session before answering (not under
        /// `claude -p`, where the plugin's monitor never starts)
        #[arg(long, value_name = "AGE")]
        wait: Option<String>,
    },
    /// Rename this session in place; pending mail follows
    #[command(after_help = "Example:\n  inter-session rename reviewer-2")]
    Rename {
        /// The new name
        new: String,
    },
    /// Change this session's label (remembered for this project; "" clears it)
    #[command(after_help = "Example:\n  inter-session relabel 'fixing the parser'")]
    Relabel {
        /// The new label (at most 60 characters; no quotes or brackets)
        text: String,
    },
    /// Leave: mark this session left and stop its monitor
    #[command(after_help = "Example:\n  inter-session disconnect")]
    Disconnect {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Past messages, oldest first
    #[command(
        after_help = "Examples:\n  inter-session history --with bob --since 1h\n  \
        inter-session history --thread 01JD3K6Y\n  inter-session history --limit 5 --json"
    )]
    History(HistoryArgs),
    /// Claim-once work queues: post tasks, workers take them one at a time
    #[command(subcommand)]
    Task(TaskCmd),
    /// File leases: say which files you are changing; a git pre-commit guard
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// A live view of the sessions, their traffic, task queues and leases
    #[command(
        after_help = "Examples:\n  inter-session top\n  inter-session top --as lead\n  \
        inter-session top --once > frame.txt     # one frame as plain text\n\n\
        Keys: Tab pane, arrows/PgUp/PgDn move, Enter opens a message and its thread, / filters\n\
        by name or text, s sends to the selected session, r replies to the selected message,\n\
        ? help, q quits. What you send goes from --as (default $USER)."
    )]
    Top {
        /// Print one frame as plain text and exit
        #[arg(long)]
        once: bool,
        /// The name you send as (default: $USER, made a valid name)
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// With --once when stdout is not a terminal: the frame's size
        #[arg(long, value_name = "COLSxROWS", default_value = "120x32")]
        size: String,
    },
    /// Agent CLIs in tmux, each with its own mailbox
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Start the Claude Code plugin's monitor with every session (on), or when the skill first runs (off)
    #[command(
        name = "auto-start",
        after_help = "Examples:\n  inter-session auto-start on       # monitor starts with every Claude Code session\n  \
        inter-session auto-start off      # only once /inter-session is used (the default)\n  \
        inter-session auto-start status --json\n\n\
        Edits the `when` field of the plugin's monitors/monitors.json (found with --plugin-dir,\n\
        else $INTER_SESSION_PLUGIN_DIR, which the plugin's launcher sets). Takes effect after\n\
        /reload-plugins or in the next session."
    )]
    AutoStart {
        /// on, off or status
        #[arg(value_parser = ["on", "off", "status"])]
        action: String,
        /// The plugin folder (the one holding monitors/monitors.json)
        #[arg(long, value_name = "DIR")]
        plugin_dir: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Run one read-only SQL query over the mailbox (views: history, pending)
    #[command(after_help = "Examples:\n  \
        inter-session sql \"select sender, recipient, text from history order by created_at desc limit 5\"\n  \
        inter-session sql --header \"pragma table_info(history)\"\n  \
        inter-session sql --timeout 1m --json \"select a.id, b.id from messages a, messages b\"\n\n\
        Rows are printed as they are read. The query stops after --timeout of work in the\n\
        database (time spent waiting for a slow reader, e.g. a pager, does not count): one line\n\
        on stderr, exit 1. Ctrl-C stops it: exit 130.\n\n\
        Refused: writes, ATTACH, extensions, BEGIN/COMMIT/ROLLBACK/SAVEPOINT, and pragmas that\n\
        set something (`pragma query_only = 0`, `pragma writable_schema = 1`); read-only pragmas\n\
        (`pragma user_version`, `pragma table_info(history)`) run. On PostgreSQL only SELECT,\n\
        WITH, VALUES, TABLE, EXPLAIN and SHOW run, in a read-only transaction, calling only\n\
        PostgreSQL's own functions that read (no pg_notify, advisory locks, nextval, …).\n\n\
        --json prints one array of objects, keys in column order; a repeated column name gets\n\
        a suffix, so no value is lost: `select 1 as a, 2 as a` gives [{\"a\":1,\"a_2\":2}].")]
    Sql {
        /// The query (one statement; writes, ATTACH and extensions are refused)
        #[arg(allow_hyphen_values = true)]
        query: String,
        /// Print the column names first
        #[arg(long)]
        header: bool,
        /// Print JSON (an array of objects; repeated column names get _2, _3, …)
        #[arg(long)]
        json: bool,
        /// Stop the query after this much work (30s, 2m, 1h)
        #[arg(
            long,
            default_value = "5s",
            value_name = "AGE",
            allow_hyphen_values = true
        )]
        timeout: String,
    },
    /// Move this mailbox between backends (SQLite → PostgreSQL)
    #[command(subcommand)]
    Db(DbCmd),
    /// Wire a host's hooks to inter-session in its own configuration (Codex, Gemini CLI)
    #[command(after_help = "Examples:\n  \
        inter-session setup codex --dry-run     # what would change in $CODEX_HOME/hooks.json and config.toml\n  \
        inter-session setup codex --name rev    # sessions register as 'rev' (then rev-2, …)\n  \
        inter-session setup gemini --project    # this repository's .gemini/settings.json\n  \
        inter-session setup gemini --remove\n  \
        inter-session setup claude              # how to install the Claude Code plugin\n\n\
        Codex: hooks.json (SessionStart, UserPromptSubmit, PostToolUse, Stop) and the trust\n\
        entries Codex needs in config.toml. Gemini CLI: settings.json hooks (SessionStart,\n\
        BeforeAgent, AfterTool, AfterAgent, SessionEnd) and the two settings a background\n\
        `inbox wait` needs. Everything else in the files stays; a file is backed up\n\
        (<file>.inter-session.bak) before its first change; running it twice changes nothing.\n\
        Honours CODEX_HOME and GEMINI_CLI_HOME.")]
    Setup {
        /// The host (claude, codex, gemini)
        #[arg(value_enum)]
        host: hook::Host,
        /// Write the repository's own configuration instead of the user's
        #[arg(long)]
        project: bool,
        /// Print what would change; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Take our hooks out again
        #[arg(long)]
        remove: bool,
        /// The mailbox name a session registers as (default: INTER_SESSION_NAME, else the folder's)
        #[arg(long)]
        name: Option<String>,
        /// Codex: SessionStart starts a deliverer that pushes mail into an idle interactive
        /// session (`codex queue`)
        #[arg(long)]
        push: bool,
    },
    /// Push a host session's mail into its model (Codex: `codex queue`)
    #[command(
        after_help = "Example (what `hook codex SessionStart --push` starts, detached):\n  \
        inter-session deliver codex --thread 0199a2b4-…\n\n\
        A monitor whose output is `codex queue --thread <id> --message <batch>` instead of\n\
        stdout: it holds the session (key codex:<id>; its hooks stay quiet meanwhile), queues\n\
        one batch at a time (at least INTER_SESSION_CODEX_GAP_MS apart, default 2000), marks it\n\
        delivered (receipt codex-queue) once `codex queue` exits 0, and retries a refused batch\n\
        later. Ends on disconnect, on SIGTERM, and (with --transcript) once Codex no longer\n\
        has the thread loaded (nothing holds its rollout file open). The CLI: INTER_SESSION_CODEX_BIN, else codex\n\
        on PATH."
    )]
    Deliver {
        /// The host (codex)
        #[arg(value_enum)]
        host: DeliverHost,
        /// The host's session (Codex: the thread id, as its hooks' session_id)
        #[arg(long)]
        thread: String,
        /// The thread's rollout file (its hooks' transcript_path): end once no process
        /// holds it open (Codex no longer has the thread loaded)
        #[arg(long, value_name = "PATH")]
        transcript: Option<PathBuf>,
    },
    /// A host's hook: hand pending mail to the model in the host's format
    #[command(
        after_help = "Examples (what a host's hook runs; the hook's JSON arrives on stdin):\n  \
        inter-session hook claude UserPromptSubmit   # context: hookSpecificOutput.additionalContext\n  \
        inter-session hook claude Stop               # mail waits: a block (stderr, exit 2)\n  \
        inter-session hook claude FileChanged        # asyncRewake: the mail on stderr, exit 2\n  \
        inter-session hook claude SessionStart       # also opens the door file a send rings (watchPaths)\n  \
        inter-session hook codex SessionStart --name rev   # Codex: registers the mailbox 'rev'\n  \
        inter-session hook codex Stop --wait 10m     # {\"decision\":\"block\",…}; idle, listens up to 10m\n  \
        inter-session hook gemini AfterAgent         # {\"decision\":\"deny\",\"reason\":…} when mail waits\n\n\
        Prints nothing and exits 0 when there is no mail, when the session is not connected,\n\
        or while a live monitor of the session prints its mail. Mail counts as delivered\n\
        (receipt hook:<host>:<event>) only once the host has it; at most 3,000 units a run."
    )]
    Hook {
        /// The host (claude, codex, gemini)
        #[arg(value_enum)]
        host: hook::Host,
        /// The hook event (claude: SessionStart, UserPromptSubmit, PostToolUse, Stop,
        /// FileChanged, SessionEnd; codex: SessionStart, UserPromptSubmit, PostToolUse, Stop;
        /// gemini: SessionStart, BeforeAgent, AfterTool, AfterAgent, SessionEnd)
        event: String,
        /// Codex / Gemini SessionStart: the mailbox name this session registers as
        /// (default: INTER_SESSION_NAME, else the folder's name)
        #[arg(long)]
        name: Option<String>,
        /// At the end of a turn (Stop, AfterAgent): with no mail yet, wait up to AGE for
        /// some, keeping an idle agent listening
        #[arg(long, value_name = "AGE")]
        wait: Option<String>,
        /// Codex SessionStart of an interactive session: start its deliverer
        /// (`deliver codex`), which pushes mail into the idle session through `codex queue`
        #[arg(long)]
        push: bool,
    },
}

/// The hosts `deliver` pushes into.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverHost {
    /// Codex CLI (`codex queue`)
    Codex,
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Copy this data folder's SQLite mailbox into PostgreSQL (a second run copies nothing)
    #[command(
        after_help = "Example:\n  inter-session db copy --to 'postgres://me@db.example/mail?sslmode=verify-full'\n\n\
        Then set INTER_SESSION_DATABASE_URL to that URL on every machine."
    )]
    Copy {
        /// The PostgreSQL database: postgres://user[:password]@host[:port]/db[?sslmode=…]
        #[arg(long, value_name = "URL")]
        to: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only messages exchanged with this session
    #[arg(long, value_name = "NAME")]
    pub with: Option<String>,
    /// Only messages newer than this (30s, 15m, 1h, 2d)
    #[arg(long, value_name = "AGE")]
    pub since: Option<String>,
    /// Only the thread of this message (id or unique prefix), all of it, in order
    #[arg(long, value_name = "ID")]
    pub thread: Option<String>,
    /// At most this many rows (the newest)
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Every session's mail, not just this session's
    #[arg(long)]
    pub everyone: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Keep going: print new rows as they are sent, until interrupted
    #[arg(
        long,
        long_help = "Keep going: print new rows as they are sent, until interrupted.\n\n\
        First what `history` prints with the same options (--with, --since, --thread,\n\
        --everyone and --limit choose it), then every row sent from then on that matches\n\
        them, once each, in the order they were committed, each line flushed at once (for\n\
        grep, a log file, a second window). Only new rows stream: a row whose status\n\
        changes later (delivered, expired) is not printed again. With --json, one JSON\n\
        object per line instead of one array. Ctrl-C, SIGTERM or SIGHUP end it (exit\n\
        130); a reader that goes away (`| head -3`) ends it quietly (exit 0) at the next\n\
        row.\n\n\
        Examples:\n  inter-session history --follow | grep --line-buffered deploy\n  \
        inter-session history --follow --everyone --limit 0 --json >> mail.jsonl"
    )]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Start an agent CLI in a detached tmux session with its own mailbox
    #[command(
        after_help = "Examples:\n  inter-session peer spawn w1 --cwd ~/src/app --prompt 'run the tests, mail me done: <summary>'\n  \
        inter-session peer spawn sh1 --cmd bash\n\n\
        The pane gets INTER_SESSION_NAME=<name> and a fresh INTER_SESSION_KEY, so its own\n\
        monitor and any `mail send` run in it act as <name>. Mail sent before its monitor\n\
        starts is queued. tmux runs on its own socket (tmux -L inter-session)."
    )]
    Spawn {
        /// The peer's name (also its mailbox)
        name: String,
        /// Working folder (default: here)
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// The command to run
        #[arg(long, default_value = "claude")]
        cmd: String,
        /// Text to type in once the pane is ready
        #[arg(long)]
        prompt: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Type text into the peer's pane, then Enter (literally: no key names)
    #[command(after_help = "Example:\n  inter-session peer send w1 'also update the changelog'")]
    Send { name: String, text: String },
    /// Print the pane's recent text, without escape codes, control or bidi characters
    #[command(after_help = "Example:\n  inter-session peer read w1 --lines 40")]
    Read {
        name: String,
        /// How many lines
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
    /// Alive or dead, pane command and pid, mailbox state and pending mail
    #[command(after_help = "Example:\n  inter-session peer status w1 --json")]
    Status {
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Every recorded peer with its status: alive, dead (its tmux session ended
    /// without `peer kill`), killed (with --all), or remote (another host's peer)
    #[command(after_help = "Example:\n  inter-session peer list --json")]
    List {
        /// Include killed peers
        #[arg(long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// End the peer's tmux session and mark its mailbox left
    #[command(after_help = "Example:\n  inter-session peer kill w1")]
    Kill { name: String },
}

#[derive(Subcommand, Debug)]
pub enum InboxCmd {
    /// The monitor: print one line per incoming message, replaying pending mail first
    #[command(
        alias = "connect",
        after_help = "Each message prints as:\n  [inter-session msg=<id> from=\"<name>\" \"<label>\"] <text>\n\n\
            Examples:\n  inter-session inbox watch --name alice\n  \
            inter-session inbox watch --window 600   # what the Claude Code skill runs"
    )]
    Watch {
        /// Mailbox name (default: $INTER_SESSION_NAME, this session's previous name, else the folder's)
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: WatchArgs,
    },
    /// Pull mode: print pending messages in the monitor's format, mark them delivered, exit
    #[command(after_help = "Examples:\n  inter-session inbox check\n  \
        inter-session inbox check --json | jq -r '.[].text'   # one JSON array, full texts")]
    Check {
        /// Print JSON: one array of the messages, with their full texts
        #[arg(long)]
        json: bool,
    },
    /// Wait for mail, print it, mark it delivered, exit 0 (a host's background waiter)
    #[command(after_help = "Examples:\n  \
        inter-session inbox wait --once               # Gemini CLI: run as a background shell command\n  \
        inter-session inbox wait --once --timeout 30m # exit 124 when nothing came\n\n\
        Prints the pending mail in the monitor's lines (at most 3,000 units a batch; the rest\n\
        waits for the next run) and marks it delivered (receipt `wait`) only once it is written\n\
        and flushed. Nothing while a live monitor of the session prints its mail. Under Gemini\n\
        CLI it refuses to run unless the settings that hand a background command's output to\n\
        the model are on (tools.shell.backgroundCompletionBehavior \"inject\" and\n\
        experimental.modelSteering true; `inter-session setup gemini` writes them): without them\n\
        the mail it printed would never reach the model.")]
    Wait {
        /// Exit after the first batch (a background waiter); without it, keep printing batches
        #[arg(long)]
        once: bool,
        /// Give up after AGE with exit 124 (default: wait for ever)
        #[arg(long, value_name = "AGE")]
        timeout: Option<String>,
    },
    /// Print one message's full text, made safe for a terminal (--raw: the exact bytes)
    #[command(after_help = SAFE_TEXT_HELP_READ)]
    Read {
        /// The message id, or a unique prefix of it
        id: String,
        /// Print the exact bytes of the text, escape codes and all
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// Print JSON (with sender and time; the text exact, as JSON escapes it)
        #[arg(long)]
        json: bool,
    },
}

/// `inbox read`'s help: what is made safe, and how to get the bytes.
const SAFE_TEXT_HELP_READ: &str = "Examples:\n  inter-session inbox read 01JD3K\n  \
    inter-session inbox read 01JD3K --raw > message.txt   # the exact bytes\n\n\
    The text keeps its lines; escape codes, control characters (but tab) and bidi or\n\
    other invisible format characters are removed, and a line that would read as an\n\
    [inter-session …] line is quoted with a leading '> ', e.g.\n  \
    > [inter-session msg=01JD… from=\"boss\"] this line was part of the text";

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Free-text label shown in your messages (remembered for this project; "" forgets)
    #[arg(long)]
    pub label: Option<String>,
    /// Also print joins, leaves and renames
    #[arg(long)]
    pub verbose: bool,
    /// Auto-start mode (the plugin's monitor): stay silent inside Claude Code worker agents
    #[arg(long)]
    pub auto: bool,
    /// Exit cleanly this many seconds after start, a little early (match the host's timeout)
    #[arg(long, value_name = "SECONDS")]
    pub window: Option<u64>,
    /// Output pacing: claude-code keeps within Claude Code's notification limits
    #[arg(long, value_enum, default_value_t = PaceMode::Auto)]
    pub pace: PaceMode,
    /// Work queue Q: whenever this session holds no task of Q, claim the oldest open one
    /// and print it as a `task=` line (repeatable; finish with `task done <id>`)
    #[arg(long, value_name = "QUEUE")]
    pub take: Vec<String>,
}

impl WatchArgs {
    /// The monitor's options: `--pace auto` settles here (paced when
    /// running under Claude Code, `CLAUDECODE=1`).
    fn into_options(self, name: Option<String>) -> Result<crate::watch::Options> {
        let paced = match self.pace {
            PaceMode::Off => false,
            PaceMode::ClaudeCode => true,
            PaceMode::Auto => std::env::var("CLAUDECODE").is_ok_and(|v| v == "1"),
        };
        Ok(crate::watch::Options {
            name,
            label: self.label,
            verbose: self.verbose,
            auto: self.auto,
            window: self.window.map(check_window).transpose()?,
            paced,
            sink: crate::watch::SinkSpec::Stdout,
            take: self
                .take
                .iter()
                .map(|q| task::check_queue(q).map(|()| q.clone()))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceMode {
    /// claude-code when CLAUDECODE=1, else off
    Auto,
    Off,
    ClaudeCode,
}

#[derive(Subcommand, Debug)]
pub enum MailCmd {
    /// Send a message to one session (or --all)
    #[command(
        after_help = "Examples:\n  inter-session mail send --to alice --text 'tests pass'\n  \
        git diff | inter-session mail send --to rev     # text from stdin\n  \
        inter-session mail send --all --text 'rebasing main in 5 minutes'\n  \
        inter-session mail send --to ci --ttl 30m --text 'deploy when green'"
    )]
    Send {
        /// Recipient: exact name, else a unique name prefix
        #[arg(long, value_name = "NAME", required_unless_present_any = ["all", "reply_to"], conflicts_with = "all")]
        to: Option<String>,
        /// Send to every other session instead (a broadcast)
        #[arg(long)]
        all: bool,
        /// With --all: only sessions of this project
        #[arg(long, requires = "all")]
        project: bool,
        /// Reply to this message (same as `mail reply`)
        #[arg(long, value_name = "ID", conflicts_with = "all")]
        reply_to: Option<String>,
        #[command(flatten)]
        body: BodyArgs,
    },
    /// Send a message to every other session (not those that left)
    #[command(
        after_help = "Example:\n  inter-session mail broadcast --project --text 'main is green again'"
    )]
    Broadcast {
        /// Only sessions of this project (nearest folder holding .git)
        #[arg(long)]
        project: bool,
        #[command(flatten)]
        body: BodyArgs,
    },
    /// Reply to a message: to its sender, in its thread (`re=` in the line)
    #[command(
        after_help = "Example:\n  inter-session mail reply 01JD3K6Y --text 'answer: yes, the v2 API'"
    )]
    Reply {
        /// The message replied to (id or unique prefix)
        id: String,
        #[command(flatten)]
        body: BodyArgs,
    },
    /// Receipts: per recipient, queued, delivered (how and when) or expired
    #[command(after_help = "Examples:\n  inter-session mail status 01JD3K6Y\n  \
        inter-session mail status 01JD3K6Y --json\n\n\
        How a copy reached its reader: monitor (a monitor printed it and its reader took the\n\
        line), check (inbox check), ask (the answer a mail ask waited for), hook:<host>:<event>\n\
        (a host's hook handed it to the model, e.g. hook:claude:UserPromptSubmit).")]
    Status {
        /// The message (id or unique prefix)
        id: String,
        /// Print JSON (an array, one object per recipient)
        #[arg(long)]
        json: bool,
    },
    /// Send a question and wait for the first reply; print the reply's text
    #[command(
        after_help = "Examples:\n  answer=$(inter-session mail ask --to w1 --text 'question: which port?' --timeout 2m)\n  \
        inter-session mail ask --to w1 --raw --text 'question: the patch?' > reply.patch\n\n\
        Exit 0 with the reply on stdout; 124 on timeout (stderr says whether the question\n\
        was delivered or is still queued; a later reply goes to your mailbox); 130 when\n\
        interrupted. The reply is printed here, not by your monitor.\n\n\
        The reply keeps its lines, minus escape codes, control and bidi characters; a line\n\
        that would read as an [inter-session …] line is quoted with a leading '> '.\n\
        --raw prints the exact bytes; --json the reply message as one JSON object (as\n\
        `inbox read --json`)."
    )]
    Ask {
        /// Recipient: exact name, else a unique name prefix
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Print the reply's exact bytes, escape codes and all
        #[arg(long)]
        raw: bool,
        /// How long to wait (30s, 5m, 1h)
        #[arg(
            long,
            default_value = "5m",
            value_name = "AGE",
            allow_hyphen_values = true
        )]
        timeout: String,
        #[command(flatten)]
        body: BodyArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Post a task to a queue: one worker will take it, once
    #[command(
        after_help = "Examples:\n  inter-session task post --queue review --text 'review src/store/tasks.rs'\n  \
        for f in src/*.rs; do inter-session task post --queue lint --text \"lint $f\"; done\n  \
        inter-session task post --queue build --lease 10m --text 'build the docs' --json\n\n\
        Workers take tasks with `inbox watch --take QUEUE` (pushed to their monitor, one at a\n\
        time) or `task claim --queue QUEUE`; results come back to you as replies (re=<task id>)."
    )]
    Post {
        /// The queue (a name like a mailbox's: a-z, 0-9, '-')
        #[arg(long, value_name = "QUEUE")]
        queue: String,
        /// Claims allowed before the task is dead (its poster is told)
        #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS)]
        max_attempts: i64,
        /// A claim not renewed (`task renew`) within AGE returns to the queue
        #[arg(long, value_name = "AGE")]
        lease: Option<String>,
        /// A claim whose worker's monitor stays offline this long returns (default 2m)
        #[arg(long, value_name = "AGE")]
        lease_grace: Option<String>,
        #[command(flatten)]
        body: BodyArgs,
    },
    /// Take the oldest open task of a queue (pull mode) and print it
    #[command(after_help = "Examples:\n  inter-session task claim --queue lint\n  \
        inter-session task claim --queue lint --wait 5m --json\n\n\
        Prints the task as a monitor would ([inter-session task=<id> queue=<q> from=…] text).\n\
        Exit 124 when none is open (within --wait); 1 when you already hold one of that queue.")]
    Claim {
        #[arg(long, value_name = "QUEUE")]
        queue: String,
        /// Wait up to AGE for one
        #[arg(long, value_name = "AGE")]
        wait: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Finish a task you hold; the result goes to its poster as a reply
    #[command(
        after_help = "Examples:\n  inter-session task done 01JD3K6Y --text 'done: 3 warnings fixed'\n  \
        git diff | inter-session task done 01JD3K6Y --text-file /dev/stdin"
    )]
    Done {
        /// The task (id or unique prefix)
        id: String,
        #[command(flatten)]
        body: ResultArgs,
    },
    /// Give a task back (attempt +1); after its last attempt it is dead
    #[command(
        after_help = "Example:\n  inter-session task fail 01JD3K6Y --text 'the build image is missing'"
    )]
    Fail {
        /// The task (id or unique prefix)
        id: String,
        #[command(flatten)]
        body: ResultArgs,
    },
    /// Restart the lease of a task you hold (for tasks posted with --lease)
    #[command(after_help = "Example:\n  inter-session task renew 01JD3K6Y")]
    Renew {
        /// The task (id or unique prefix)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Tasks: open, failed (back in the queue), claimed by whom for how long; --all adds done and dead
    #[command(
        after_help = "Examples:\n  inter-session task list\n  inter-session task list --queue lint --all --json\n\n\
        The `tasks` view has the same rows for SQL: inter-session sql 'select * from tasks'"
    )]
    List {
        /// Only this queue
        #[arg(long, value_name = "QUEUE")]
        queue: Option<String>,
        /// Include done and dead tasks
        #[arg(long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// One task: its state, attempts, text and result
    #[command(after_help = "Example:\n  inter-session task show 01JD3K6Y")]
    Show {
        /// The task (id or unique prefix)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Wait until tasks are done; print their results (exit 1 if one died, 124 on timeout)
    #[command(
        after_help = "Example:\n  ids=$(for f in a b c; do inter-session task post --queue q --text \"$f\" --json | jq -r .id; done)\n  \
        inter-session task wait $ids --timeout 30m"
    )]
    Wait {
        /// The tasks (ids or unique prefixes)
        #[arg(required = true)]
        ids: Vec<String>,
        /// Give up after AGE with exit 124
        #[arg(long, value_name = "AGE")]
        timeout: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Lease paths or globs (relative to here; exclusive unless --shared) before changing them
    #[command(
        after_help = "Examples:\n  inter-session lease take src/store/ --reason 'splitting the store'\n  \
        inter-session lease take 'src/**/*.rs' --ttl 30m\n  \
        inter-session lease take README.md --shared\n\n\
        Paths are stored relative to the project (the git root). A lease another session holds\n\
        on an overlapping path refuses the whole request (exit 1), one line per lease in the\n\
        way, with how to ask its holder. Leases end at `lease release`, at --ttl (default 2h),\n\
        or when their holder disconnects; --force takes one over and mails its holder."
    )]
    Take {
        /// Paths or globs (`*`, `?`, `**`); a folder covers everything in it
        #[arg(required = true, value_name = "PATH|GLOB")]
        paths: Vec<String>,
        /// How long it lasts (30m, 2h)
        #[arg(long, value_name = "AGE")]
        ttl: Option<String>,
        /// Why: shown to whoever it gets in the way of
        #[arg(long, default_value = "")]
        reason: String,
        /// Others may take shared leases on it too (exclusive ones still conflict)
        #[arg(long)]
        shared: bool,
        /// Take over conflicting leases (their holders are told)
        #[arg(long)]
        force: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Release your leases on these paths (all of yours without paths)
    #[command(
        after_help = "Examples:\n  inter-session lease release src/store/\n  inter-session lease release"
    )]
    Release {
        #[arg(value_name = "PATH|GLOB")]
        paths: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Live leases of this project (--all: every project, ended ones too)
    #[command(
        after_help = "Examples:\n  inter-session lease list\n  inter-session lease list --all --json"
    )]
    List {
        #[arg(long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Exit 1 listing files (staged, or given) under another session's exclusive lease
    #[command(
        after_help = "Examples:\n  inter-session lease check --staged     # what the pre-commit hook runs\n  \
        inter-session lease check src/main.rs"
    )]
    Check {
        /// Check the files staged for commit
        #[arg(long, conflicts_with = "paths")]
        staged: bool,
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add `lease check --staged` to this repository's git pre-commit hook (keeping any hook there)
    #[command(
        after_help = "Examples:\n  inter-session lease install-hook\n  inter-session lease install-hook --remove"
    )]
    InstallHook {
        /// Take it out again (the hook that was there before comes back)
        #[arg(long)]
        remove: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// The text of a `task done` result or a `task fail` reason.
#[derive(Args, Debug)]
pub struct ResultArgs {
    /// The text (else --text-file)
    #[arg(long, conflicts_with = "text_file")]
    pub text: Option<String>,
    /// Read the text from this file
    #[arg(long, value_name = "FILE")]
    pub text_file: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl ResultArgs {
    fn body(self) -> BodyArgs {
        BodyArgs {
            text: self.text,
            text_file: self.text_file,
            ttl: None,
            expires: None,
            idempotency_key: None,
            wait_delivered: None,
            json: self.json,
        }
    }
}

#[derive(Args, Debug)]
pub struct BodyArgs {
    /// The text (else --text-file, else stdin)
    #[arg(long, conflicts_with = "text_file")]
    pub text: Option<String>,
    /// Read the text from this file
    #[arg(long, value_name = "FILE")]
    pub text_file: Option<PathBuf>,
    /// Expire undelivered after this long (30s, 15m, 2h): never printed after
    #[arg(
        long,
        value_name = "AGE",
        conflicts_with = "expires",
        allow_hyphen_values = true
    )]
    pub ttl: Option<String>,
    /// Expire undelivered at this time (RFC 3339, e.g. 2026-12-01T09:00:00Z)
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub expires: Option<String>,
    /// A retry with the same key (same sender, within 24 h) sends nothing again
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Then wait until every recipient's copy was handed to its reader (30s, 5m); exit 124 if not
    #[arg(long, value_name = "AGE")]
    pub wait_delivered: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: Cli) -> Result<i32> {
    if let Some(url) = cli.database_url.as_deref().filter(|u| !u.trim().is_empty()) {
        // Read by store::open(), and inherited by monitors and peers we start.
        std::env::set_var("INTER_SESSION_DATABASE_URL", url);
    }
    // Before any store call: the store records this host name.
    identity::pin_host_name()?;
    let from = cli.from.as_deref();
    match cli.command {
        Command::Inbox(InboxCmd::Watch { name, opts }) | Command::Connect { name, opts } => {
            crate::watch::run(opts.into_options(name)?)
        }
        Command::Inbox(InboxCmd::Check { json }) => inbox::check(from, cli.force, json),
        Command::Inbox(InboxCmd::Read { id, raw, json }) => inbox::read(&id, raw, json),
        Command::Inbox(InboxCmd::Wait { once, timeout }) => {
            inbox::wait(from, once, timeout.as_deref())
        }
        Command::Mail(MailCmd::Send {
            to,
            all,
            project,
            reply_to,
            body,
        }) => {
            if all {
                mail::broadcast(from, cli.force, project, &body)
            } else {
                mail::send(from, cli.force, to.as_deref(), reply_to.as_deref(), &body)
            }
        }
        Command::Mail(MailCmd::Broadcast { project, body }) => {
            mail::broadcast(from, cli.force, project, &body)
        }
        Command::Mail(MailCmd::Status { id, json }) => mail::status(&id, json),
        Command::Mail(MailCmd::Reply { id, body }) => {
            mail::send(from, cli.force, None, Some(&id), &body)
        }
        Command::Mail(MailCmd::Ask {
            to,
            raw,
            timeout,
            body,
        }) => mail::ask(from, cli.force, &to, &timeout, raw, &body),
        Command::List { all, project, json } => list::run(all, project, json),
        Command::Top {
            once,
            as_name,
            size,
        } => crate::top::run(crate::top::Options {
            once,
            as_name: operator_name(as_name.as_deref())?,
            size: parse_size(&size)?,
        }),
        Command::Task(TaskCmd::Post {
            queue,
            max_attempts,
            lease,
            lease_grace,
            body,
        }) => task::post(
            from,
            cli.force,
            &task::PostArgs {
                queue: &queue,
                max_attempts,
                lease: lease.as_deref(),
                grace: lease_grace.as_deref(),
                body: &body,
            },
        ),
        Command::Task(TaskCmd::Claim { queue, wait, json }) => {
            task::claim(from, &queue, wait.as_deref(), json)
        }
        Command::Task(TaskCmd::Done { id, body }) => task::done(from, &id, &body.body()),
        Command::Task(TaskCmd::Fail { id, body }) => {
            let body = body.body();
            if body.text.is_none() && body.text_file.is_none() {
                return Err(
                    UsageError("task fail needs --text WHY (or --text-file)".into()).into(),
                );
            }
            task::fail(from, &id, &body)
        }
        Command::Task(TaskCmd::Renew { id, json }) => task::renew(from, &id, json),
        Command::Task(TaskCmd::List { queue, all, json }) => {
            task::list(queue.as_deref(), all, json)
        }
        Command::Task(TaskCmd::Show { id, json }) => task::show(&id, json),
        Command::Lease(LeaseCmd::Take {
            paths,
            ttl,
            reason,
            shared,
            force,
            json,
        }) => lease::take(
            from,
            &lease::TakeArgs {
                paths: &paths,
                ttl: ttl.as_deref(),
                reason: &reason,
                shared,
                force,
                json,
            },
        ),
        Command::Lease(LeaseCmd::Release { paths, json }) => lease::release(from, &paths, json),
        Command::Lease(LeaseCmd::List { all, json }) => lease::list(all, json),
        Command::Lease(LeaseCmd::Check {
            staged,
            paths,
            json,
        }) => lease::check(from, staged, &paths, json),
        Command::Lease(LeaseCmd::InstallHook { remove, json }) => lease::install_hook(remove, json),
        Command::Task(TaskCmd::Wait { ids, timeout, json }) => {
            task::wait(&ids, timeout.as_deref(), json)
        }
        Command::Status { json, wait } => session::status(from, json, wait.as_deref()),
        Command::Rename { new } => session::rename(from, cli.force, &new),
        Command::Relabel { text } => session::relabel(from, cli.force, &text),
        Command::Disconnect { json } => session::disconnect(from, cli.force, json),
        Command::History(args) => history::run(from, &args),
        Command::Sql {
            query,
            header,
            json,
            timeout,
        } => sql::run(&query, header, json, &timeout),
        Command::Peer(PeerCmd::Spawn {
            name,
            cwd,
            cmd,
            prompt,
            json,
        }) => peer::spawn(from, &name, cwd.as_deref(), &cmd, prompt.as_deref(), json),
        Command::Peer(PeerCmd::Send { name, text }) => peer::send(&name, &text),
        Command::Peer(PeerCmd::Read { name, lines }) => peer::read(&name, lines),
        Command::Peer(PeerCmd::Status { name, json }) => peer::status(&name, json),
        Command::Peer(PeerCmd::List { all, json }) => peer::list(all, json),
        Command::Peer(PeerCmd::Kill { name }) => peer::kill(&name),
        Command::Db(DbCmd::Copy { to, json }) => db::copy(&to, json),
        Command::Setup {
            host,
            project,
            dry_run,
            remove,
            name,
            push,
        } => setup::run(
            host,
            &setup::Options {
                project,
                dry_run,
                remove,
                name: name.as_deref(),
                push,
            },
        ),
        Command::Hook {
            host,
            event,
            name,
            wait,
            push,
        } => hook::run(
            host,
            &event,
            &hook::Options {
                from,
                name: name.as_deref(),
                wait: wait.as_deref(),
                push,
            },
        ),
        Command::Deliver {
            host: DeliverHost::Codex,
            thread,
            transcript,
        } => hook::deliver_codex(&thread, transcript.as_deref()),
        Command::AutoStart {
            action,
            plugin_dir,
            json,
        } => auto_start::run_with(&action, json, plugin_dir.as_deref()),
    }
}

/// The name a person sends as from `top`: `--as`, else `$USER` made a
/// valid name (lower case, other characters as `-`), else `operator`.
fn operator_name(given: Option<&str>) -> Result<String> {
    if let Some(name) = given {
        identity::validate_name(name)?;
        return Ok(name.to_string());
    }
    let user: String = std::env::var("USER")
        .unwrap_or_default()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(identity::MAX_NAME_LEN)
        .collect();
    let user = user.trim_matches('-').to_string();
    Ok(if identity::is_valid_name(&user) {
        user
    } else {
        "operator".to_string()
    })
}

/// `120x32` → (120, 32).
fn parse_size(text: &str) -> Result<(u16, u16), UsageError> {
    text.split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
        .filter(|(w, h): &(u16, u16)| (20..=1000).contains(w) && (5..=1000).contains(h))
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --size '{}': COLSxROWS, e.g. 120x32 (20-1000 by 5-1000)",
                text.escape_debug()
            ))
        })
}

pub const NOT_CONNECTED: &str = "not connected; run /inter-session connect in this session first";

/// The session a command acts as: `--from NAME` (registered if new), else
/// the session whose key matches this process's (see `identity`).
pub fn me(store: &dyn Mailbox, from: Option<&str>) -> Result<Session> {
    if let Some(name) = from {
        identity::validate_name(name)?;
        if let Some(s) = store.session_by_name(name)? {
            return Ok(s);
        }
        return store.register(name, None);
    }
    match store.session_by_key(&identity::session_key())? {
        Some(s) if s.state != State::Left => Ok(s),
        _ => bail!(NOT_CONNECTED),
    }
}

/// `me`, for a command that changes or drains the session (rename, relabel,
/// disconnect, `inbox check`). `--from` is for scripts: it may not act as a
/// session whose monitor is online under another session key (the monitor
/// would be renamed under it, or never print the mail it drained) unless
/// `force`; then the command calls `Acting::tell` once it has acted.
pub fn me_acting(
    store: &dyn Mailbox,
    from: Option<&str>,
    force: bool,
    command: &'static str,
) -> Result<Acting> {
    let session = me(store, from)?;
    let forced = from.is_some() && live_elsewhere(store, &session);
    if forced && !force {
        bail!(
            "'{}' is online under another session (monitor pid {}); --from may not act as it \
             for `inter-session {command}` (an operator can add --force, which tells that session)",
            session.name,
            session
                .monitor_pid
                .map_or("?".to_string(), |p| p.to_string())
        );
    }
    Ok(Acting {
        session,
        forced,
        command,
    })
}

/// The session a changing command acts as, and whether `--force` took it
/// from a live monitor of another key.
pub struct Acting {
    pub session: Session,
    forced: bool,
    command: &'static str,
}

impl Acting {
    /// After a forced command: tell the session, through its own mailbox
    /// (so its monitor prints it), what was done to it.
    pub fn tell(&self, store: &dyn Mailbox) -> Result<()> {
        if !self.forced {
            return Ok(());
        }
        let s = &self.session;
        let note = format!(
            "status: an operator ran `inter-session {}` as this session (--from {} --force, pid {})",
            self.command,
            s.name,
            std::process::id()
        );
        let me = s.address();
        let mut msg = NewMessage::new(&me, Recipients::One(s.id), &note);
        msg.note_to_self = true;
        store.send(&msg).with_context(|| {
            format!("could not tell '{}' of the forced {}", s.name, self.command)
        })?;
        Ok(())
    }
}

/// Whether `s` has a live monitor that belongs to another session: another
/// key, or any key on another machine (keys are local to their machine).
fn live_elsewhere(store: &dyn Mailbox, s: &Session) -> bool {
    let ours = s.host == identity::this_host()
        && s.key.as_deref() == Some(identity::session_key().as_str());
    s.state == State::Online && !ours && store.is_online(s.id)
}

/// The sender of a message: like `me`, but a new `--from` name is only
/// registered by the send itself (id 0 here), so a refused send leaves no
/// trace; and, like `me_acting`, `--from` may not speak as a session whose
/// monitor is online under another session key unless `force`.
pub fn sender(store: &dyn Mailbox, from: Option<&str>, force: bool) -> Result<Address> {
    match from {
        Some(name) => {
            identity::validate_name(name)?;
            from_brief(store, name, store.brief(name)?, force)
        }
        None => Ok(me(store, None)?.address()),
    }
}

/// `sender`, and the recipient named `to` as `resolve_address` finds it,
/// looked up together.
pub fn sender_and_recipient(
    store: &dyn Mailbox,
    from: Option<&str>,
    force: bool,
    to: &str,
) -> Result<(Address, Address)> {
    match from {
        Some(name) => {
            identity::validate_name(name)?;
            let (sender, recipient) = store.send_ends(name, to)?;
            Ok((from_brief(store, name, sender, force)?, recipient))
        }
        None => Ok((sender(store, None, force)?, store.resolve_address(to)?)),
    }
}

/// The `--from` sender `name` as found (`None`: not registered yet). Only a
/// mailbox that a monitor of another key claimed can be live elsewhere; only
/// then is its lock asked.
fn from_brief(
    store: &dyn Mailbox,
    name: &str,
    brief: Option<Brief>,
    force: bool,
) -> Result<Address> {
    let Some(b) = brief else {
        return Ok(unregistered(name));
    };
    let foreign = b
        .key
        .as_deref()
        .is_some_and(|k| k != identity::session_key());
    if foreign && !force && store.is_online(b.address.id) {
        bail!(
            "'{name}' is online under another session; --from may not send as it \
             (an operator can add --force)"
        );
    }
    Ok(b.address)
}

/// A `--from` name not registered yet: the send registers it.
fn unregistered(name: &str) -> Address {
    Address {
        id: 0,
        name: name.to_string(),
        label: String::new(),
    }
}

/// Like `me`, but `None` instead of an error when not connected.
pub fn me_if_any(store: &dyn Mailbox, from: Option<&str>) -> Result<Option<Session>> {
    if from.is_some() {
        return me(store, from).map(Some);
    }
    Ok(store
        .session_by_key(&identity::session_key())?
        .filter(|s| s.state != State::Left))
}

pub fn open() -> Result<Box<dyn Mailbox>> {
    store::open()
}

/// The longest duration any option takes (`--ttl`, `--since`, `--timeout`,
/// `--window`): 100 years, far inside what chrono and `Instant` represent,
/// so no sum or date built from one can overflow.
pub const MAX_AGE_SECS: u64 = 100 * 365 * 86_400;

/// Parse an age like `30s`, `15m`, `1h`, `2d`, `1h30m` into seconds (at
/// most `MAX_AGE_SECS`).
pub fn parse_age(text: &str) -> Result<u64, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid age '{}': use a number with s, m, h or d, e.g. 15m, 1h30m, 2d",
            text.escape_debug()
        ))
    };
    let too_long = || {
        UsageError(format!(
            "invalid age '{}': at most {}d (100 years)",
            text.escape_debug(),
            MAX_AGE_SECS / 86_400
        ))
    };
    let mut total = 0u64;
    let mut num = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        // All digits: a number that does not fit is too long, not malformed.
        let n: u64 = num.parse().map_err(|_| too_long())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|t| *t <= MAX_AGE_SECS)
            .ok_or_else(too_long)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    if total == 0 && text.trim().is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// `--window` seconds, refused past `MAX_AGE_SECS` like every other duration.
fn check_window(secs: u64) -> Result<std::time::Duration, UsageError> {
    if secs > MAX_AGE_SECS {
        return Err(UsageError(format!(
            "invalid --window {secs}: at most {MAX_AGE_SECS} seconds (100 years)"
        )));
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// Print rows as an aligned table with a header. Every cell is made safe
/// and bounded (`line::cell`) and padded by its display width, so neither
/// data nor wide characters can break a row or move a column.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", table(headers, rows));
}

/// The text `print_table` prints.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    use crate::line::{cell, width};
    let cells: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| cell(h)).collect())
        .chain(rows.iter().map(|r| r.iter().map(|c| cell(c)).collect()))
        .collect();
    let mut widths: Vec<usize> = vec![0; headers.len()];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(c));
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            line.push_str(c);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(w - width(c) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_by_display_width_and_keeps_rows_whole() {
        let rows = vec![
            vec!["alice".into(), "日本語".into(), "x".into()],
            vec!["b".into(), "a\tb\u{1b}[31m\r\nc".into(), "y".into()],
            vec!["c".into(), "e\u{301}".into(), "z".into()],
        ];
        assert_eq!(
            table(&["NAME", "LABEL", "STATE"], &rows),
            "NAME   LABEL   STATE\n\
             alice  日本語  x\n\
             b      a b↵c   y\n\
             c      e\u{301}       z\n"
        );
        // A cell over the limit is cut; the row stays one line.
        let long = vec![vec!["x".repeat(200), "y".into()]];
        let out = table(&["A", "B"], &long);
        assert_eq!(out.lines().count(), 2);
        assert!(
            out.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("\u{2026}  y")),
            "{out}"
        );
    }

    #[test]
    fn the_sql_timeout_default_is_the_stores() {
        let cli = Cli::try_parse_from(["inter-session", "sql", "select 1"]).expect("parse");
        let Command::Sql { timeout, .. } = cli.command else {
            panic!("not sql");
        };
        assert_eq!(
            parse_age(&timeout).ok(),
            Some(crate::store::SQL_DEFAULT_SECS)
        );
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30s").ok(), Some(30));
        assert_eq!(parse_age("15m").ok(), Some(900));
        assert_eq!(parse_age("1h30m").ok(), Some(5400));
        assert_eq!(parse_age("2d").ok(), Some(172_800));
        for bad in ["", "h", "10", "5x", "-1h"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_ages_are_refused_not_overflowed() {
        assert_eq!(parse_age("36500d").ok(), Some(MAX_AGE_SECS));
        assert_eq!(parse_age("36499d23h59m60s").ok(), Some(MAX_AGE_SECS));
        for huge in [
            "36500d1s",
            "100000000d",
            "99999999999d",
            "18446744073709551615s",
            "99999999999999999999999s",
            "3153600001s",
            "36500d36500d",
        ] {
            let e = parse_age(huge).expect_err(huge);
            assert!(e.0.contains("at most 36500d"), "{huge}: {e}");
        }
        assert!(check_window(MAX_AGE_SECS).is_ok());
        assert!(check_window(MAX_AGE_SECS + 1).is_err());
        assert!(check_window(u64::MAX).is_err());
    }
}
