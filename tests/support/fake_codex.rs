//! A scripted OpenAI Responses API on 127.0.0.1, for end-to-end tests that
//! run the real Codex CLI against it (SPEC §12: `model_provider = "fake"`
//! with `base_url = "http://127.0.0.1:PORT/v1"`, `wire_api = "responses"`).
//!
//! It speaks just enough HTTP/1.1 (std::net, one thread per connection,
//! `Connection: close` on every answer). Codex 0.171 POSTs `/v1/responses`
//! with `stream: true` and reads Server-Sent Events; this server answers
//! `response.created`, one `response.output_item.done` per output item (an
//! assistant `message`, or a `function_call` — e.g. to Codex's shell tool
//! `exec_command`, whose arguments are `{"cmd": …}`), and
//! `response.completed`. Anything else gets a 404 (and is recorded).
//!
//! Every request is recorded (path, headers, parsed body) so a test can
//! assert on what the model was shown. Requests of the agent's main loop
//! (those that offer the `exec_command` tool) are answered by the test's
//! [`Script`]; any other request (Codex's own side queries, e.g. the TUI's
//! "generate a concise title" request, which offers no tools) gets a short
//! text answer and never advances the script.
//!
//! What Codex sends (0.171.0, measured): `input` is the whole conversation
//! as Responses items — `message` items with `role` `developer` / `user` /
//! `assistant` and `content` `[{"type":"input_text"|"output_text","text":…}]`,
//! `function_call` items (`name`, `arguments` as a JSON string, `call_id`)
//! and `function_call_output` items (`call_id`, `output` as a string).
//! Headers `thread-id` and `session-id` carry the thread id.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The shell tool of Codex 0.171 (its `parameters` require `cmd`).
pub const SHELL_TOOL: &str = "exec_command";

/// One output item of a scripted model response.
#[derive(Clone, Debug)]
pub enum Item {
    /// An assistant message.
    Text(String),
    /// A call of tool `name` with `arguments` (sent as a JSON string).
    Call { name: String, arguments: Value },
}

/// One scripted model response. When it holds a function call, Codex runs
/// the tool and asks again; a response of text only ends the turn.
#[derive(Clone, Debug)]
pub struct Turn {
    pub items: Vec<Item>,
}

impl Turn {
    /// A text answer that ends the turn.
    pub fn end(text: &str) -> Turn {
        Turn {
            items: vec![Item::Text(text.to_string())],
        }
    }

    /// A call of tool `name` with `arguments`.
    pub fn call(name: &str, arguments: Value) -> Turn {
        Turn {
            items: vec![Item::Call {
                name: name.to_string(),
                arguments,
            }],
        }
    }

    /// Codex's shell tool running `cmd` (Codex runs it as `bash -lc CMD`
    /// in the session's working folder).
    pub fn exec(cmd: &str) -> Turn {
        Turn::call(SHELL_TOOL, json!({ "cmd": cmd }))
    }

    /// The same turn, led by a text item.
    pub fn saying(mut self, text: &str) -> Turn {
        self.items.insert(0, Item::Text(text.to_string()));
        self
    }
}

/// One request Codex sent, as recorded.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    /// Index among main requests (0 for the first), if main.
    pub index: Option<usize>,
    pub at: Instant,
}

/// A main-loop request, as a script sees it.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0 for the first main request of this server.
    pub index: usize,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub at: Instant,
}

impl Request {
    /// The `input` items (the whole conversation so far).
    pub fn input(&self) -> &[Value] {
        self.body["input"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The thread id this request belongs to (header `thread-id`).
    pub fn thread_id(&self) -> String {
        self.headers
            .get("thread-id")
            .cloned()
            .or_else(|| {
                self.body["client_metadata"]["thread_id"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// Every `message` item as (role, text), in order.
    pub fn messages(&self) -> Vec<(String, String)> {
        messages(self.input())
    }

    /// The texts of the messages with `role`, in order.
    pub fn texts_of(&self, role: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|(r, _)| r == role)
            .map(|(_, t)| t)
            .collect()
    }

    /// Items after the model's last output (its last assistant message or
    /// function call): what is new in this request.
    pub fn new_items(&self) -> &[Value] {
        let input = self.input();
        let start = input
            .iter()
            .rposition(|i| i["role"] == "assistant" || i["type"] == "function_call")
            .map_or(0, |i| i + 1);
        &input[start..]
    }

    /// The (role, text) of the messages among `new_items`.
    pub fn new_messages(&self) -> Vec<(String, String)> {
        messages(self.new_items())
    }

    /// The outputs of the function calls answered in this request, in order.
    pub fn tool_outputs(&self) -> Vec<String> {
        self.input()
            .iter()
            .filter(|i| i["type"] == "function_call_output")
            .map(|i| output_text(&i["output"]))
            .collect()
    }

    /// The output of the last function call, failing if there is none.
    pub fn last_tool_output(&self) -> String {
        self.tool_outputs()
            .pop()
            .unwrap_or_else(|| panic!("no function_call_output in request {}", self.index))
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(&self.body)
    }

    /// The tool definition named `name`.
    pub fn tool(&self, name: &str) -> Option<&Value> {
        self.body["tools"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)
    }

    /// One line per input item (type, role, text clipped), for failure
    /// messages.
    pub fn outline(&self) -> String {
        self.input()
            .iter()
            .map(|i| {
                let what = match i["type"].as_str() {
                    Some("message") => format!(
                        "message {}: {}",
                        i["role"].as_str().unwrap_or("?"),
                        clip(&content_text(&i["content"]), 300)
                    ),
                    Some("function_call") => format!(
                        "function_call {} {}",
                        i["name"].as_str().unwrap_or("?"),
                        clip(i["arguments"].as_str().unwrap_or(""), 300)
                    ),
                    Some("function_call_output") => {
                        format!(
                            "function_call_output: {}",
                            clip(&output_text(&i["output"]), 300)
                        )
                    }
                    Some(t) => t.to_string(),
                    None => "?".to_string(),
                };
                format!("  {what}\n")
            })
            .collect()
    }
}

fn messages(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .filter(|i| i["type"] == "message")
        .map(|i| {
            (
                i["role"].as_str().unwrap_or_default().to_string(),
                content_text(&i["content"]),
            )
        })
        .collect()
}

/// The text of a message's `content` (a string or a list of parts).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of a `function_call_output`'s `output` (a string, or parts).
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        other => content_text(other),
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
pub struct FakeCodexModel {
    port: u16,
    shared: Arc<Shared>,
}

impl FakeCodexModel {
    pub fn start(script: Script) -> FakeCodexModel {
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
                        eprintln!("fake codex model: connection error: {e}");
                    }
                });
            }
        });
        FakeCodexModel { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What Codex's `model_providers.<id>.base_url` must be.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.log.lock().expect("log").clone()
    }

    /// The main-loop requests so far.
    pub fn main_requests(&self) -> Vec<Request> {
        self.recorded().into_iter().filter_map(as_main).collect()
    }

    /// The latest main-loop request.
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
                let r = log[checked].clone();
                checked += 1;
                if let Some(req) = as_main(r) {
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

    /// Wait for the main request with this index.
    pub fn wait_main(&self, index: usize, timeout: Duration) -> Option<Request> {
        self.wait_for(timeout, |r| r.index == index)
    }

    /// A readable outline of every request, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for r in self.recorded() {
            let (method, path) = (r.method.clone(), r.path.clone());
            match as_main(r) {
                Some(req) => out.push_str(&format!(
                    "--- main request {} ({} items):\n{}",
                    req.index,
                    req.input().len(),
                    req.outline()
                )),
                None => out.push_str(&format!("--- side request {method} {path}\n")),
            }
        }
        out
    }
}

fn as_main(r: Recorded) -> Option<Request> {
    r.index.map(|index| Request {
        index,
        headers: r.headers,
        body: r.body,
        at: r.at,
    })
}

impl Drop for FakeCodexModel {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn clip(s: &str, max: usize) -> String {
    let s = s.replace('\n', "↵");
    if s.chars().count() <= max {
        return s;
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}…")
}

struct HttpRequest {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
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
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if let Some(enc) = headers.get("content-encoding").filter(|e| *e != "identity") {
        return Err(std::io::Error::other(format!(
            "compressed request bodies ({enc}) are not supported"
        )));
    }
    let mut body = Vec::new();
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
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
        let length = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(HttpRequest {
        method,
        path,
        headers,
        body,
    }))
}

fn serve(conn: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let route = req.path.split('?').next().unwrap_or_default().to_string();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    if req.method == "POST" && route == "/v1/responses" {
        let main = tool_names(&body).iter().any(|t| t == SHELL_TOOL);
        let turn = if main {
            let index = sh.main_count.fetch_add(1, Ordering::SeqCst);
            // The script sees the request only after it is recorded, so a
            // test waiting on the log never misses it.
            let at = record(sh, &req, body.clone(), Some(index));
            let request = Request {
                index,
                headers: req.headers.clone(),
                body,
                at,
            };
            sh.script.lock().expect("script").answer(&request)
        } else {
            record(sh, &req, body, None);
            Turn::end("Fake title")
        };
        write_stream(&mut out, &turn, sh)?;
    } else {
        record(sh, &req, body, None);
        respond(
            &mut out,
            "404 Not Found",
            br#"{"error":{"type":"not_found","message":"not here"}}"#,
        )?;
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

fn record(sh: &Shared, req: &HttpRequest, body: Value, index: Option<usize>) -> Instant {
    let at = Instant::now();
    let mut log = sh.log.lock().expect("log");
    log.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        headers: req.headers.clone(),
        body,
        index,
        at,
    });
    sh.changed.notify_all();
    at
}

fn respond(out: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn write_stream(out: &mut TcpStream, turn: &Turn, sh: &Shared) -> std::io::Result<()> {
    let n = sh.ids.fetch_add(1, Ordering::SeqCst);
    let response_id = format!("resp_fake{n:08}");
    let mut s = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
    );
    let mut event = |data: Value| {
        let name = data["type"].as_str().unwrap_or_default().to_string();
        s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    event(json!({"type": "response.created", "response": {"id": response_id}}));
    for (i, item) in turn.items.iter().enumerate() {
        let item = match item {
            Item::Text(t) => json!({
                "type": "message", "role": "assistant", "id": format!("msg_fake{n:08}_{i}"),
                "content": [{"type": "output_text", "text": t}],
            }),
            Item::Call { name, arguments } => json!({
                "type": "function_call", "name": name, "arguments": arguments.to_string(),
                "call_id": format!("call_fake{n:08}_{i}"),
            }),
        };
        event(json!({"type": "response.output_item.done", "output_index": i, "item": item}));
    }
    event(json!({"type": "response.completed", "response": {
        "id": response_id,
        "usage": {"input_tokens": 100, "input_tokens_details": null,
                  "output_tokens": 10, "output_tokens_details": null, "total_tokens": 110},
    }}));
    out.write_all(s.as_bytes())?;
    out.flush()
}
