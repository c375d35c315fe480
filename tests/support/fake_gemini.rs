//! A scripted Gemini API on 127.0.0.1, for end-to-end tests that run the
//! real Gemini CLI against it (`GOOGLE_GEMINI_BASE_URL`, SPEC §12).
//!
//! It speaks just enough HTTP/1.1 (std::net, one thread per connection,
//! `Connection: close` on every answer) and the Gemini API's generate
//! protocol:
//! - `POST /v1beta/models/<model>:streamGenerateContent?alt=sse` is answered
//!   with one SSE event `data: {"candidates":[{"content":{"role":"model",
//!   "parts":[…]},"finishReason":"STOP","index":0}],"usageMetadata":…}`;
//! - `POST /v1beta/models/<model>:generateContent` with the same body as
//!   plain JSON;
//! - `POST /v1beta/models/<model>:countTokens` with `{"totalTokens": N}`;
//! - anything else a Google-style 404.
//!
//! Every request is recorded (path and parsed body) so a test can assert on
//! what the model was shown. Requests of the agent's main loop (those that
//! offer the `run_shell_command` tool) are answered by the test's
//! [`Script`]. Any other request is a side request the CLI makes for itself
//! (0.61.0: a loop check on `gemini-3-flash-preview:generateContent` every
//! ~10 turns of one prompt, asking for JSON by `responseJsonSchema`); it gets
//! a JSON answer that fills that schema with neutral values (strings empty,
//! numbers 0, `next_speaker` "user", …), or a short text, and never
//! advances the script.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The tool every main-loop request offers: what tells main from side.
pub const SHELL_TOOL: &str = "run_shell_command";

/// One part of a scripted model answer.
#[derive(Clone, Debug)]
pub enum Part {
    Text(String),
    Call { name: String, args: Value },
}

/// One scripted model answer (finish reason `STOP`; a turn holding a
/// function call makes the CLI run it and ask again).
#[derive(Clone, Debug)]
pub struct Turn {
    pub parts: Vec<Part>,
}

impl Turn {
    /// A text answer that ends the turn.
    pub fn end(text: &str) -> Turn {
        Turn {
            parts: vec![Part::Text(text.to_string())],
        }
    }

    /// A call of function `name` with `args`.
    pub fn call(name: &str, args: Value) -> Turn {
        Turn {
            parts: vec![Part::Call {
                name: name.to_string(),
                args,
            }],
        }
    }

    /// `run_shell_command` running `command` (in the foreground: its output
    /// is the function response).
    pub fn shell(command: &str) -> Turn {
        Turn::call(SHELL_TOOL, json!({"command": command}))
    }

    /// `run_shell_command` running `command` in the background
    /// (`is_background: true`): the CLI answers at once with "Command moved
    /// to background (PID: N)", and what happens at its end depends on
    /// `tools.shell.backgroundCompletionBehavior`.
    pub fn background(command: &str) -> Turn {
        Turn::call(
            SHELL_TOOL,
            json!({"command": command, "is_background": true,
                   "description": "wait in the background"}),
        )
    }

    /// The same turn, led by a text part.
    pub fn saying(mut self, text: &str) -> Turn {
        self.parts.insert(0, Part::Text(text.to_string()));
        self
    }

    fn content(&self) -> Value {
        let parts: Vec<Value> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => json!({"text": t}),
                Part::Call { name, args } => {
                    json!({"functionCall": {"name": name, "args": args}})
                }
            })
            .collect();
        json!({"role": "model", "parts": parts})
    }
}

/// One request the CLI sent, as recorded.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Path and query, as sent.
    pub path: String,
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
    pub body: Value,
}

impl Request {
    /// The conversation (`contents`), oldest first.
    pub fn contents(&self) -> &[Value] {
        self.body["contents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every text the model is shown in the conversation (text parts, and
    /// the `output`/`error` of function responses), in order, one part per
    /// line.
    pub fn transcript(&self) -> String {
        texts(self.contents())
    }

    /// What is new since the model's last answer: the contents after the
    /// last `model` content (function responses, injected context, a new
    /// user turn).
    pub fn new_contents(&self) -> &[Value] {
        let c = self.contents();
        let start = c
            .iter()
            .rposition(|m| m["role"] == "model")
            .map_or(0, |i| i + 1);
        &c[start..]
    }

    /// The text of [`Request::new_contents`], one part per line.
    pub fn new_text(&self) -> String {
        texts(self.new_contents())
    }

    /// Every new part that is plain text, in order (the user's prompt, a
    /// `<hook_context>`, an AfterAgent reason, a steering update).
    pub fn new_user_texts(&self) -> Vec<String> {
        self.new_contents()
            .iter()
            .filter(|c| c["role"] == "user")
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["text"].as_str().map(str::to_string))
            .collect()
    }

    /// The `response` objects of the function responses new in this
    /// request, in order.
    pub fn function_responses(&self) -> Vec<Value> {
        self.new_contents()
            .iter()
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.get("functionResponse").map(|f| f["response"].clone()))
            .collect()
    }

    /// The `output` (or, failing that, `error`) of the last function
    /// response, failing if there is none.
    pub fn last_tool_output(&self) -> String {
        let r = self
            .function_responses()
            .pop()
            .unwrap_or_else(|| panic!("no function response in request {}", self.index));
        r["output"]
            .as_str()
            .or_else(|| r["error"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// The system instruction's text.
    pub fn system_text(&self) -> String {
        self.body["systemInstruction"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The names of the functions offered.
    pub fn tool_names(&self) -> Vec<String> {
        tool_names(&self.body)
    }

    /// The declaration of function `name` (its `parametersJsonSchema` tells
    /// the argument names), Null if not offered.
    pub fn tool(&self, name: &str) -> Value {
        declarations(&self.body)
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or_default()
    }
}

fn declarations(body: &Value) -> impl Iterator<Item = &Value> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["functionDeclarations"].as_array().into_iter().flatten())
}

fn tool_names(body: &Value) -> Vec<String> {
    declarations(body)
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect()
}

/// The text of one part: text, a function response's output or error, a
/// function call as `name(args)`.
pub fn part_text(p: &Value) -> String {
    if let Some(t) = p["text"].as_str() {
        return t.to_string();
    }
    if let Some(r) = p.get("functionResponse") {
        let r = &r["response"];
        return r["output"]
            .as_str()
            .or_else(|| r["error"].as_str())
            .map_or_else(|| r.to_string(), str::to_string);
    }
    if let Some(c) = p.get("functionCall") {
        return format!("{}({})", c["name"].as_str().unwrap_or("?"), c["args"]);
    }
    String::new()
}

fn texts(contents: &[Value]) -> String {
    contents
        .iter()
        .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
        .map(|p| part_text(&p))
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

    /// Steps taken in order; after them, every request ends the turn with
    /// "noted <index>" (distinct answers: the CLI's loop check never sees
    /// a repetition).
    pub fn steps(steps: Vec<Step>) -> Script {
        Script {
            steps: steps.into(),
            fallback: Box::new(|r| Turn::end(&format!("noted {}", r.index))),
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
    stop: AtomicBool,
}

/// The server; it stops accepting when dropped.
pub struct FakeGemini {
    port: u16,
    shared: Arc<Shared>,
}

impl FakeGemini {
    pub fn start(script: Script) -> FakeGemini {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            script: Mutex::new(script),
            main_count: AtomicUsize::new(0),
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
                        eprintln!("fake gemini: connection error: {e}");
                    }
                });
            }
        });
        FakeGemini { port, shared }
    }

    /// What `GOOGLE_GEMINI_BASE_URL` is set to.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far, side requests included.
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

    /// The latest main-loop request (its contents hold the whole
    /// conversation so far).
    pub fn last_main(&self) -> Option<Request> {
        self.main_requests().pop()
    }

    /// When main request `index` arrived.
    pub fn arrived_at(&self, index: usize) -> Option<Instant> {
        self.shared
            .log
            .lock()
            .expect("log")
            .iter()
            .find(|r| r.index == Some(index))
            .map(|r| r.at)
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

    /// A readable summary of every request (main: its new content), for
    /// failure messages.
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
                        "--- main request {i} ({} contents), new:\n{}\n",
                        req.contents().len(),
                        clip(&req.new_text(), 4000)
                    ));
                }
                None => out.push_str(&format!("--- side request {}\n", r.path)),
            }
        }
        out
    }
}

impl Drop for FakeGemini {
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

/// The method of a `/v1beta/models/<model>:<method>` path (query dropped).
fn model_method(path: &str) -> Option<&str> {
    let route = path.split('?').next()?;
    let rest = route.strip_prefix("/v1beta/models/")?;
    rest.rsplit_once(':').map(|(_, m)| m)
}

fn serve(conn: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let method = model_method(&req.path).map(str::to_string);
    match (req.method.as_str(), method.as_deref()) {
        ("POST", Some("countTokens")) => {
            record(sh, &req.path, body, None);
            respond(
                &mut out,
                "200 OK",
                "application/json",
                br#"{"totalTokens": 1000}"#,
            )?;
        }
        ("POST", Some(m @ ("streamGenerateContent" | "generateContent"))) => {
            let main =
                m == "streamGenerateContent" && tool_names(&body).iter().any(|t| t == SHELL_TOOL);
            let content = if main {
                let index = sh.main_count.fetch_add(1, Ordering::SeqCst);
                // The script sees the request only after it is recorded, so a
                // test waiting on the log never misses it.
                record(sh, &req.path, body.clone(), Some(index));
                let req = Request { index, body };
                sh.script.lock().expect("script").answer(&req).content()
            } else {
                let answer = side_answer(&body);
                record(sh, &req.path, body, None);
                answer
            };
            let answer = json!({
                "candidates": [{"content": content, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 10,
                                  "totalTokenCount": 110},
                "modelVersion": "fake-gemini",
            });
            if m == "streamGenerateContent" {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                            Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
                out.write_all(format!("{head}data: {answer}\r\n\r\n").as_bytes())?;
                out.flush()?;
            } else {
                respond(
                    &mut out,
                    "200 OK",
                    "application/json",
                    answer.to_string().as_bytes(),
                )?;
            }
        }
        _ => {
            record(sh, &req.path, body, None);
            respond(
                &mut out,
                "404 Not Found",
                "application/json",
                br#"{"error":{"code":404,"message":"not here","status":"NOT_FOUND"}}"#,
            )?;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

/// A side request's answer: JSON filling its `responseJsonSchema` (or
/// `responseSchema`), else a short text.
fn side_answer(body: &Value) -> Value {
    let cfg = &body["generationConfig"];
    let schema = [&cfg["responseJsonSchema"], &cfg["responseSchema"]]
        .into_iter()
        .find(|s| s.is_object());
    let text = match schema {
        Some(s) => fill_schema(s, "").to_string(),
        None => "ok".to_string(),
    };
    json!({"role": "model", "parts": [{"text": text}]})
}

/// A neutral value of `schema` (every property, required or not).
fn fill_schema(schema: &Value, name: &str) -> Value {
    if let Some(options) = schema["enum"].as_array() {
        // The choice that hands the turn back, where there is one.
        return options
            .iter()
            .find(|o| *o == "user")
            .or_else(|| options.first())
            .cloned()
            .unwrap_or_default();
    }
    let kind = schema["type"].as_str().unwrap_or("").to_ascii_lowercase();
    match kind.as_str() {
        "object" => {
            let mut m = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (k, v) in props {
                    m.insert(k.clone(), fill_schema(v, k));
                }
            }
            Value::Object(m)
        }
        "array" => json!([]),
        "number" | "integer" => json!(0),
        "boolean" => json!(false),
        _ if name == "next_speaker" => json!("user"),
        _ => json!(""),
    }
}

fn record(sh: &Shared, path: &str, body: Value, index: Option<usize>) {
    let mut log = sh.log.lock().expect("log");
    log.push(Recorded {
        path: path.to_string(),
        body,
        index,
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
