//! A scripted Anthropic Messages API on 127.0.0.1, for end-to-end tests that
//! run the real Claude Code CLI against it (`ANTHROPIC_BASE_URL`, SPEC §9).
//!
//! It speaks just enough HTTP/1.1 (std::net, one thread per connection,
//! `Connection: close` on every answer) and the Messages API's streaming
//! protocol: `POST /v1/messages` (Claude Code adds `?beta=true`) is answered
//! with the SSE events `message_start`, `content_block_start` /
//! `content_block_delta` / `content_block_stop` per text or `tool_use` block,
//! `message_delta` (with the stop reason) and `message_stop`; a request
//! without `stream: true` gets the same message as one JSON body.
//! `POST /v1/messages/count_tokens` gets a token count; anything else a 404.
//!
//! Every request is recorded (path and parsed body) so a test can assert on
//! what the model was shown. Requests of the agent's main loop (those that
//! offer the `Bash` tool) are answered by the test's [`Script`]; any other
//! request (a side query Claude Code makes for itself, e.g. a title) gets a
//! short text answer and never advances the script.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One content block of a scripted assistant message.
#[derive(Clone, Debug)]
pub enum Block {
    Text(String),
    ToolUse { name: String, input: Value },
}

/// One scripted assistant message. Its stop reason is `tool_use` when it
/// holds a tool call, else `end_turn`.
#[derive(Clone, Debug)]
pub struct Turn {
    pub blocks: Vec<Block>,
}

impl Turn {
    /// A text answer that ends the turn.
    pub fn end(text: &str) -> Turn {
        Turn {
            blocks: vec![Block::Text(text.to_string())],
        }
    }

    /// A call of tool `name` with `input`.
    pub fn tool(name: &str, input: Value) -> Turn {
        Turn {
            blocks: vec![Block::ToolUse {
                name: name.to_string(),
                input,
            }],
        }
    }

    /// `ToolSearch` loading the deferred `Monitor` tool.
    pub fn load_monitor() -> Turn {
        Turn::tool(
            "ToolSearch",
            json!({"query": "select:Monitor", "max_results": 5}),
        )
    }

    /// `Monitor` running `command`.
    pub fn monitor(command: &str, timeout_ms: u64) -> Turn {
        Turn::tool(
            "Monitor",
            json!({
                "command": command,
                "description": "inter-session messages",
                "timeout_ms": timeout_ms,
            }),
        )
    }

    /// `Bash` running `command`.
    pub fn bash(command: &str) -> Turn {
        Turn::tool(
            "Bash",
            json!({"command": command, "description": "run a command", "timeout": 120000}),
        )
    }

    /// The same turn, led by a text block.
    pub fn saying(mut self, text: &str) -> Turn {
        self.blocks.insert(0, Block::Text(text.to_string()));
        self
    }

    fn stop_reason(&self) -> &'static str {
        if self
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
        {
            "tool_use"
        } else {
            "end_turn"
        }
    }
}

/// One request Claude Code sent, as recorded.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub body: Value,
    /// A request of the agent's main loop (offers the `Bash` tool).
    pub main: bool,
    /// Index among main requests (0 for the first), if main.
    pub index: Option<usize>,
    pub at: Instant,
}

/// A main-loop request, as a script sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0 for the first main request of this server.
    pub index: usize,
    pub body: Value,
}

impl Request {
    pub fn messages(&self) -> &[Value] {
        self.body["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every text the model is shown in the messages (text blocks and
    /// tool results), in order, one block per line.
    pub fn transcript(&self) -> String {
        texts(self.messages())
    }

    /// What is new since the model's last answer: the text of the messages
    /// after the last assistant message (tool results, notifications, a new
    /// user turn).
    pub fn new_text(&self) -> String {
        let msgs = self.messages();
        let start = msgs
            .iter()
            .rposition(|m| m["role"] == "assistant")
            .map_or(0, |i| i + 1);
        texts(&msgs[start..])
    }

    /// The system prompt's text.
    pub fn system_text(&self) -> String {
        match &self.body["system"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(&self.body)
    }

    /// The results of the tool calls answered in this request:
    /// (text, is_error), in order.
    pub fn tool_results(&self) -> Vec<(String, bool)> {
        let msgs = self.messages();
        let start = msgs
            .iter()
            .rposition(|m| m["role"] == "assistant")
            .map_or(0, |i| i + 1);
        let mut out = Vec::new();
        for m in &msgs[start..] {
            for b in m["content"].as_array().into_iter().flatten() {
                if b["type"] == "tool_result" {
                    out.push((
                        content_text(&b["content"]),
                        b["is_error"].as_bool().unwrap_or(false),
                    ));
                }
            }
        }
        out
    }

    /// The text of the last tool result, failing if there is none.
    pub fn last_tool_result(&self) -> String {
        self.tool_results()
            .pop()
            .unwrap_or_else(|| panic!("no tool result in request {}", self.index))
            .0
    }
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

/// The text of a message's or a tool result's `content` (a string or a list
/// of blocks), blocks joined by newlines.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().unwrap_or_default().to_string(),
                Some("tool_result") => content_text(&b["content"]),
                Some("tool_use") => b["input"].to_string(),
                _ => String::new(),
            })
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn texts(msgs: &[Value]) -> String {
    msgs.iter()
        .map(|m| content_text(&m["content"]))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One scripted answer, computed from the request it answers.
pub type Step = Box<dyn FnMut(&Request) -> Turn + Send>;

/// What the model answers to each main-loop request: the steps in order, one
/// per request, then the fallback for every later request.
pub struct Script {
    steps: VecDeque<Step>,
    fallback: Step,
}

impl Script {
    /// A script whose every answer comes from `f`.
    pub fn new(f: impl FnMut(&Request) -> Turn + Send + 'static) -> Script {
        Script {
            steps: VecDeque::new(),
            fallback: Box::new(f),
        }
    }

    /// Steps taken in order; after them, every request ends the turn.
    pub fn steps(steps: Vec<Step>) -> Script {
        Script {
            steps: steps.into(),
            fallback: Box::new(|_| Turn::end("noted")),
        }
    }

    /// Replace the fallback that answers every request after the steps.
    pub fn then(mut self, f: impl FnMut(&Request) -> Turn + Send + 'static) -> Script {
        self.fallback = Box::new(f);
        self
    }

    fn answer(&mut self, req: &Request) -> Turn {
        match self.steps.pop_front() {
            Some(mut step) => step(req),
            None => (self.fallback)(req),
        }
    }
}

/// A step that always gives `turn`.
pub fn step(turn: Turn) -> Step {
    Box::new(move |_| turn.clone())
}

/// A step computed from the request.
pub fn step_fn(f: impl FnMut(&Request) -> Turn + Send + 'static) -> Step {
    Box::new(f)
}

struct Shared {
    log: Mutex<Vec<Recorded>>,
    changed: Condvar,
    script: Mutex<Script>,
    main_count: AtomicUsize,
    ids: AtomicUsize,
    stop: AtomicBool,
}

/// The server; it stops accepting when dropped.
pub struct FakeModel {
    port: u16,
    shared: Arc<Shared>,
}

impl FakeModel {
    pub fn start(script: Script) -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            script: Mutex::new(script),
            main_count: AtomicUsize::new(0),
            ids: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = Arc::clone(&sh);
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &sh) {
                        eprintln!("fake model: connection error: {e}");
                    }
                });
            }
        });
        FakeModel { port, shared }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.log.lock().expect("log").clone()
    }

    /// The main-loop requests so far.
    pub fn main_requests(&self) -> Vec<Request> {
        self.recorded()
            .into_iter()
            .filter_map(|r| {
                r.index.map(|index| Request {
                    index,
                    body: r.body,
                })
            })
            .collect()
    }

    /// The latest main-loop request (its messages hold the whole
    /// conversation so far).
    pub fn last_main(&self) -> Option<Request> {
        self.main_requests().pop()
    }

    /// Wait until some main-loop request satisfies `pred` and return the
    /// first that does; None after `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Request) -> bool) -> Option<Request> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log");
        let mut checked = 0;
        loop {
            while checked < log.len() {
                let r = &log[checked];
                checked += 1;
                if let Some(index) = r.index {
                    let req = Request {
                        index,
                        body: r.body.clone(),
                    };
                    if pred(&req) {
                        return Some(req);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            log = self
                .shared
                .changed
                .wait_timeout(log, left.min(Duration::from_millis(500)))
                .expect("log")
                .0;
        }
    }

    /// When main request `index` arrived (None if it has not).
    pub fn arrived_at(&self, index: usize) -> Option<Instant> {
        self.shared
            .log
            .lock()
            .expect("log")
            .iter()
            .find(|r| r.index == Some(index))
            .map(|r| r.at)
    }

    /// A readable summary of every main request's new content, for failure
    /// messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for r in self.recorded() {
            match r.index {
                Some(i) => {
                    let req = Request {
                        index: i,
                        body: r.body,
                    };
                    out.push_str(&format!(
                        "--- main request {i} ({} messages), new:\n{}\n",
                        req.messages().len(),
                        clip(&req.new_text(), 4000)
                    ));
                }
                None => out.push_str(&format!(
                    "--- side request {} (tools {:?})\n",
                    r.path,
                    tool_names(&r.body)
                )),
            }
        }
        out
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

struct HttpRequest {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let Some((k, v)) = h.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = v.parse().unwrap_or(0);
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if k == "content-encoding" && v != "identity" {
            return Err(std::io::Error::other(format!(
                "compressed request bodies ({v}) are not supported"
            )));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(HttpRequest { method, path, body }))
}

fn serve(conn: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let route = req.path.split('?').next().unwrap_or_default().to_string();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    if req.method != "POST" {
        respond(&mut out, "404 Not Found", "application/json", b"{}")?;
        return Ok(());
    }
    match route.as_str() {
        "/v1/messages/count_tokens" => {
            record(sh, &req.path, body, false);
            respond(
                &mut out,
                "200 OK",
                "application/json",
                br#"{"input_tokens": 1000}"#,
            )?;
        }
        "/v1/messages" => {
            let main = tool_names(&body).iter().any(|t| t == "Bash");
            let stream = body["stream"].as_bool().unwrap_or(false);
            let model = body["model"]
                .as_str()
                .unwrap_or("claude-sonnet-4-5")
                .to_string();
            let turn = if main {
                let index = sh.main_count.fetch_add(1, Ordering::SeqCst);
                // The script sees the request only after it is recorded, so a
                // test waiting on the log never misses it.
                record_main(sh, &req.path, body.clone(), index);
                let req = Request { index, body };
                sh.script.lock().expect("script").answer(&req)
            } else {
                record(sh, &req.path, body, false);
                Turn::end("ok")
            };
            let id = sh.ids.fetch_add(1, Ordering::SeqCst);
            if stream {
                write_stream(&mut out, &turn, &model, id, sh)?;
            } else {
                let msg = message_json(&turn, &model, id, sh);
                respond(
                    &mut out,
                    "200 OK",
                    "application/json",
                    msg.to_string().as_bytes(),
                )?;
            }
        }
        _ => {
            record(sh, &req.path, body, false);
            respond(
                &mut out,
                "404 Not Found",
                "application/json",
                br#"{"type":"error","error":{"type":"not_found_error","message":"not here"}}"#,
            )?;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

fn record(sh: &Shared, path: &str, body: Value, main: bool) {
    let mut log = sh.log.lock().expect("log");
    log.push(Recorded {
        path: path.to_string(),
        body,
        main,
        index: None,
        at: Instant::now(),
    });
    sh.changed.notify_all();
}

fn record_main(sh: &Shared, path: &str, body: Value, index: usize) {
    let mut log = sh.log.lock().expect("log");
    log.push(Recorded {
        path: path.to_string(),
        body,
        main: true,
        index: Some(index),
        at: Instant::now(),
    });
    sh.changed.notify_all();
}

fn respond(out: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn tool_id(sh: &Shared) -> String {
    format!("toolu_fake{:016}", sh.ids.fetch_add(1, Ordering::SeqCst))
}

fn usage() -> Value {
    json!({"input_tokens": 100, "output_tokens": 10,
           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
}

fn message_json(turn: &Turn, model: &str, id: usize, sh: &Shared) -> Value {
    let content: Vec<Value> = turn
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { name, input } => {
                json!({"type": "tool_use", "id": tool_id(sh), "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": format!("msg_fake{id:08}"), "type": "message", "role": "assistant",
        "model": model, "content": content, "stop_reason": turn.stop_reason(),
        "stop_sequence": null, "usage": usage(),
    })
}

fn write_stream(
    out: &mut TcpStream,
    turn: &Turn,
    model: &str,
    id: usize,
    sh: &Shared,
) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    let mut s = String::from(head);
    let mut event = |name: &str, data: Value| {
        s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_fake{id:08}"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage(),
        }}),
    );
    for (i, b) in turn.blocks.iter().enumerate() {
        match b {
            Block::Text(t) => {
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                           "content_block": {"type": "text", "text": ""}}),
                );
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i,
                           "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Block::ToolUse { name, input } => {
                event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i,
                           "content_block": {"type": "tool_use", "id": tool_id(sh),
                                             "name": name, "input": {}}}),
                );
                event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i,
                           "delta": {"type": "input_json_delta",
                                     "partial_json": input.to_string()}}),
                );
            }
        }
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        );
    }
    event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": turn.stop_reason(), "stop_sequence": null},
               "usage": {"output_tokens": 10}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    out.write_all(s.as_bytes())?;
    out.flush()
}
