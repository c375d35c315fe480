//! `inter-session top`: a live terminal view for the person in charge
//! (SPEC §5): sessions, the traffic between them, task queues and leases, a
//! rate chart and the oldest undelivered message's age.
//!
//! It wakes on the store's own change notification (file notification or
//! LISTEN), never a busy loop: a change reloads everything; a slow tick
//! (every few seconds) re-reads only the sessions, whose liveness can change
//! without a commit (a monitor killed), and redraws the ages. Everything
//! shown comes from the database and is made one safe line first. It writes
//! nothing but the messages a person sends from it. The terminal is given
//! back as it was on `q`, Ctrl-C, SIGTERM, SIGHUP and panic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::crossterm::event::{
    self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::{Frame, Terminal};

use crate::line::{self, field, safe_id, safe_label, safe_name, sanitize};
use crate::store::{HistoryFilter, Mailbox, NewMessage, Recipients, State, Verbs, Wake};

/// How `top` is run.
pub struct Options {
    /// Print one frame as plain text and exit.
    pub once: bool,
    /// The name the person sends as (`--as`, default `$USER`).
    pub as_name: String,
    /// The frame size for `--once` when stdout is not a terminal.
    pub size: (u16, u16),
}

/// Rows of traffic kept (the newest).
const FEED_ROWS: usize = 400;
/// How often the sessions are re-read and the ages redrawn when idle.
const TICK: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
struct SessionView {
    name: String,
    label: String,
    state: Option<State>,
    pending: i64,
    host: String,
    project: String,
    /// When it last sent or got a message (among the recent traffic).
    last: Option<String>,
    /// A tmux peer: its pane's state.
    peer: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct FeedItem {
    id: String,
    at: String,
    from: String,
    /// A recipient, or `all (N)` for a broadcast.
    to: String,
    re: Option<String>,
    kind: String,
    status: String,
    text: String,
}

#[derive(Debug, Clone, Default)]
struct QueueView {
    queue: String,
    open: i64,
    claimed: i64,
    done: i64,
    dead: i64,
}

#[derive(Debug, Clone, Default)]
struct LeaseView {
    pattern: String,
    holder: String,
    exclusive: bool,
    since: String,
}

#[derive(Debug, Clone, Default)]
struct Snapshot {
    location: String,
    sessions: Vec<SessionView>,
    traffic: Vec<FeedItem>,
    queues: Vec<QueueView>,
    leases: Vec<LeaseView>,
    /// Messages per minute over the last hour, oldest first.
    rate: Vec<u64>,
    oldest_pending: Option<String>,
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cell_int(v: &serde_json::Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Everything on screen, read fresh (read-only queries only).
fn load(store: &dyn Mailbox) -> Result<Snapshot> {
    let now = chrono::Utc::now();
    let now_s = time_text(now);
    let rows = store.history(&HistoryFilter {
        limit: FEED_ROWS,
        ..Default::default()
    })?;
    let task_ids: HashSet<String> = store
        .query_readonly("SELECT id FROM tasks ORDER BY seq DESC LIMIT 400")
        .map(|r| r.rows.iter().map(|c| cell_text(&c[0])).collect())
        .unwrap_or_default();
    // One feed line per message: a broadcast's rows become `all (N)`.
    let mut traffic: Vec<FeedItem> = Vec::new();
    let mut last: HashMap<String, String> = HashMap::new();
    let mut counts: HashMap<String, (usize, usize, usize)> = HashMap::new();
    for r in &rows {
        last.insert(r.sender.clone(), r.created_at.clone());
        last.insert(r.recipient.clone(), r.created_at.clone());
        let c = counts.entry(r.id.clone()).or_default();
        c.0 += 1;
        match r.status.as_str() {
            "delivered" => c.1 += 1,
            "expired" => c.2 += 1,
            _ => {}
        }
        if traffic.last().is_some_and(|f| f.id == r.id) {
            continue;
        }
        traffic.push(FeedItem {
            id: r.id.clone(),
            at: r.created_at.clone(),
            from: r.sender.clone(),
            to: r.recipient.clone(),
            re: r.in_reply_to.clone(),
            kind: if task_ids.contains(&r.id) {
                "task".into()
            } else {
                r.kind.clone()
            },
            status: String::new(),
            text: r.text.clone(),
        });
    }
    for f in &mut traffic {
        let (n, delivered, expired) = counts.get(&f.id).copied().unwrap_or_default();
        if f.kind == "broadcast" {
            f.to = format!("all ({n})");
        }
        f.status = if delivered == n {
            "delivered".into()
        } else if expired > 0 && delivered + expired == n {
            "expired".into()
        } else if n > 1 {
            format!("pending {}/{n}", n - delivered - expired)
        } else {
            "pending".into()
        };
    }
    let peers: HashMap<String, crate::store::Peer> = store
        .peers(false)?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let here = crate::identity::this_host();
    let sessions = session_views(store, |name| {
        let peer = peers.get(name).map(|p| {
            if p.host != here {
                format!("tmux on {}", p.host)
            } else {
                match crate::tmux::pane_info(&p.tmux_socket, &p.tmux_session) {
                    Ok(i) => format!("tmux: {}", i.command),
                    Err(_) => "tmux: gone".to_string(),
                }
            }
        });
        (last.get(name).cloned(), peer)
    })?;
    let mut queues: BTreeMap<String, QueueView> = BTreeMap::new();
    if let Ok(r) =
        store.query_readonly("SELECT queue, state, count(*) FROM tasks GROUP BY queue, state")
    {
        for row in &r.rows {
            let q = cell_text(&row[0]);
            let e = queues.entry(q.clone()).or_insert_with(|| QueueView {
                queue: q,
                ..Default::default()
            });
            let n = cell_int(&row[2]);
            match cell_text(&row[1]).as_str() {
                "open" => e.open += n,
                "claimed" => e.claimed += n,
                "done" => e.done += n,
                _ => e.dead += n,
            }
        }
    }
    let leases = store
        .query_readonly(&format!(
            "SELECT l.pattern, s.name, l.exclusive, l.created_at FROM leases l \
             JOIN sessions s ON s.id = l.holder_id \
             WHERE l.released_at IS NULL AND l.expires_at > '{now_s}' AND s.state <> 'left' \
             ORDER BY l.id"
        ))
        .map(|r| {
            r.rows
                .iter()
                .map(|c| LeaseView {
                    pattern: cell_text(&c[0]),
                    holder: cell_text(&c[1]),
                    exclusive: cell_int(&c[2]) != 0,
                    since: cell_text(&c[3]),
                })
                .collect()
        })
        .unwrap_or_default();
    let hour_ago = now - chrono::Duration::hours(1);
    let mut rate = vec![0u64; 60];
    if let Ok(r) = store.query_readonly(&format!(
        "SELECT created_at FROM messages WHERE seq > \
         (SELECT COALESCE(max(seq), 0) - 20000 FROM messages) AND created_at >= '{}'",
        time_text(hour_ago)
    )) {
        for c in &r.rows {
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(&cell_text(&c[0])) {
                let mins = (t.with_timezone(&chrono::Utc) - hour_ago).num_minutes();
                if let Ok(i) = usize::try_from(mins) {
                    if let Some(b) = rate.get_mut(i) {
                        *b += 1;
                    }
                }
            }
        }
    }
    let oldest_pending = store
        .query_readonly(&format!(
            "SELECT min(m.created_at) FROM deliveries d JOIN messages m ON m.seq = d.message_seq \
             WHERE d.delivered_at IS NULL AND (m.expires_at IS NULL OR m.expires_at > '{now_s}')"
        ))
        .ok()
        .and_then(|r| r.rows.first().map(|c| cell_text(&c[0])))
        .filter(|s| !s.is_empty());
    Ok(Snapshot {
        location: store.location(),
        sessions,
        traffic,
        queues: queues.into_values().collect(),
        leases,
        rate,
        oldest_pending,
    })
}

/// The age of a stored time, `3m`, or `-`.
fn age(at: Option<&str>) -> String {
    at.and_then(line::since).unwrap_or_else(|| "-".into())
}

/// `HH:MM:SS` of a stored time.
fn clock_of(at: &str) -> String {
    at.get(11..19).map_or_else(|| field(at), field)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pane {
    Sessions,
    Traffic,
    Work,
}

#[derive(Debug, Clone)]
enum Mode {
    Normal,
    Filter(String),
    Compose {
        to: String,
        to_id: i64,
        reply: Option<String>,
        text: String,
    },
    Detail {
        lines: Vec<String>,
        scroll: u16,
    },
    Help,
}

struct App {
    as_name: String,
    snap: Snapshot,
    pane: Pane,
    /// Selected row per pane (sessions, traffic from the newest, work).
    sel: [usize; 3],
    filter: String,
    mode: Mode,
    status: String,
    quit: bool,
}

impl App {
    fn sessions(&self) -> Vec<&SessionView> {
        let f = self.filter.to_lowercase();
        self.snap
            .sessions
            .iter()
            .filter(|s| {
                f.is_empty()
                    || s.name.to_lowercase().contains(&f)
                    || s.label.to_lowercase().contains(&f)
            })
            .collect()
    }

    /// Newest first.
    fn traffic(&self) -> Vec<&FeedItem> {
        let f = self.filter.to_lowercase();
        self.snap
            .traffic
            .iter()
            .rev()
            .filter(|m| {
                f.is_empty()
                    || m.from.to_lowercase().contains(&f)
                    || m.to.to_lowercase().contains(&f)
                    || m.text.to_lowercase().contains(&f)
            })
            .collect()
    }

    fn pane_index(&self) -> usize {
        match self.pane {
            Pane::Sessions => 0,
            Pane::Traffic => 1,
            Pane::Work => 2,
        }
    }

    fn pane_len(&self) -> usize {
        match self.pane {
            Pane::Sessions => self.sessions().len(),
            Pane::Traffic => self.traffic().len(),
            Pane::Work => self.snap.queues.len() + self.snap.leases.len(),
        }
    }

    fn clamp(&mut self) {
        for (i, len) in [
            self.sessions().len(),
            self.traffic().len(),
            self.snap.queues.len() + self.snap.leases.len(),
        ]
        .into_iter()
        .enumerate()
        {
            self.sel[i] = self.sel[i].min(len.saturating_sub(1));
        }
    }

    fn move_by(&mut self, delta: isize) {
        let len = self.pane_len();
        let i = self.pane_index();
        let cur = isize::try_from(self.sel[i]).unwrap_or(0);
        let max = isize::try_from(len.saturating_sub(1)).unwrap_or(0);
        self.sel[i] = usize::try_from((cur + delta).clamp(0, max)).unwrap_or(0);
    }

    /// One key; the store is used for sends and for opening a message.
    fn key(&mut self, store: &dyn Mailbox, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c {
            self.quit = true;
            return;
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(store, k),
            Mode::Help => {}
            Mode::Detail { lines, scroll } => {
                let scroll = match k.code {
                    KeyCode::Down | KeyCode::Char('j') => scroll.saturating_add(1),
                    KeyCode::Up | KeyCode::Char('k') => scroll.saturating_sub(1),
                    KeyCode::PageDown | KeyCode::Char(' ') => scroll.saturating_add(10),
                    KeyCode::PageUp => scroll.saturating_sub(10),
                    KeyCode::Char('q') | KeyCode::Esc | KeyCode::Enter => return,
                    _ => scroll,
                };
                self.mode = Mode::Detail { lines, scroll };
            }
            Mode::Filter(mut text) => match k.code {
                KeyCode::Enter => {
                    self.filter = text;
                    self.clamp();
                }
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    text.pop();
                    self.filter.clone_from(&text);
                    self.clamp();
                    self.mode = Mode::Filter(text);
                }
                KeyCode::Char(c) if !c.is_control() => {
                    text.push(c);
                    self.filter.clone_from(&text);
                    self.clamp();
                    self.mode = Mode::Filter(text);
                }
                _ => self.mode = Mode::Filter(text),
            },
            Mode::Compose {
                to,
                to_id,
                reply,
                mut text,
            } => match k.code {
                KeyCode::Enter => self.send(store, to_id, &to, reply.as_deref(), &text),
                KeyCode::Esc => self.status = "not sent".into(),
                KeyCode::Backspace => {
                    text.pop();
                    self.mode = Mode::Compose {
                        to,
                        to_id,
                        reply,
                        text,
                    };
                }
                KeyCode::Char(c) if !c.is_control() => {
                    text.push(c);
                    self.mode = Mode::Compose {
                        to,
                        to_id,
                        reply,
                        text,
                    };
                }
                _ => {
                    self.mode = Mode::Compose {
                        to,
                        to_id,
                        reply,
                        text,
                    }
                }
            },
        }
    }

    fn normal_key(&mut self, store: &dyn Mailbox, k: KeyEvent) {
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
            KeyCode::Tab => {
                self.pane = match self.pane {
                    Pane::Sessions => Pane::Traffic,
                    Pane::Traffic
                        if !self.snap.queues.is_empty() || !self.snap.leases.is_empty() =>
                    {
                        Pane::Work
                    }
                    _ => Pane::Sessions,
                }
            }
            KeyCode::BackTab => {
                self.pane = match self.pane {
                    Pane::Traffic => Pane::Sessions,
                    Pane::Work => Pane::Traffic,
                    Pane::Sessions
                        if !self.snap.queues.is_empty() || !self.snap.leases.is_empty() =>
                    {
                        Pane::Work
                    }
                    Pane::Sessions => Pane::Traffic,
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::Home => self.move_by(-(isize::MAX / 2)),
            KeyCode::End => self.move_by(isize::MAX / 2),
            KeyCode::Char('/') => self.mode = Mode::Filter(self.filter.clone()),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('s') => self.compose_to_selected(store),
            KeyCode::Char('r') => self.reply_to_selected(store),
            KeyCode::Enter => self.open_selected(store),
            _ => {}
        }
    }

    fn selected_session(&self) -> Option<SessionView> {
        let list = self.sessions();
        list.get(self.sel[0]).map(|s| (*s).clone())
    }

    fn selected_message(&self) -> Option<FeedItem> {
        let list = self.traffic();
        list.get(self.sel[1]).map(|m| (*m).clone())
    }

    fn compose_to_selected(&mut self, store: &dyn Mailbox) {
        let Some(s) = self.selected_session() else {
            self.status = "no session selected".into();
            return;
        };
        match store.session_by_name(&s.name) {
            Ok(Some(found)) if found.state != State::Left => {
                self.mode = Mode::Compose {
                    to: found.name,
                    to_id: found.id,
                    reply: None,
                    text: String::new(),
                }
            }
            Ok(_) => self.status = format!("{} has left: it takes no mail", safe_name(&s.name)),
            Err(e) => self.status = field(&format!("{e:#}")),
        }
    }

    fn reply_to_selected(&mut self, store: &dyn Mailbox) {
        if self.pane != Pane::Traffic {
            self.status = "select a message in the traffic pane (Tab) to reply".into();
            return;
        }
        let Some(m) = self.selected_message() else {
            self.status = "no message selected".into();
            return;
        };
        let found = store.message(&m.id).and_then(|msg| {
            let id = msg.sender_id.context("the message has no sender mailbox")?;
            let s = store
                .session_by_id(id)?
                .context("its sender's mailbox is gone")?;
            Ok((msg, s))
        });
        match found {
            Ok((msg, s)) if s.state != State::Left => {
                self.mode = Mode::Compose {
                    to: s.name,
                    to_id: s.id,
                    reply: Some(msg.id),
                    text: String::new(),
                }
            }
            Ok((_, s)) => {
                self.status = format!("{} has left: it takes no mail", safe_name(&s.name))
            }
            Err(e) => self.status = field(&format!("{e:#}")),
        }
    }

    fn send(&mut self, store: &dyn Mailbox, to_id: i64, to: &str, reply: Option<&str>, text: &str) {
        if text.trim().is_empty() {
            self.status = "empty text: nothing sent".into();
            return;
        }
        let result = (|| -> Result<String> {
            let me = crate::cmd::sender(store, Some(&self.as_name), false)?;
            let parent = reply.map(|id| store.message(id)).transpose()?;
            let mut msg = NewMessage::new(&me, Recipients::One(to_id), text);
            msg.reply_to = parent.as_ref();
            let sent = store.send(&msg)?;
            let how = sent.recipients.first().map_or("queued", |r| r.status);
            Ok(format!("sent {} -> {} ({how})", sent.id, safe_name(to)))
        })();
        self.status = match result {
            Ok(s) => s,
            Err(e) => format!("not sent: {}", field(&format!("{e:#}"))),
        };
    }

    fn open_selected(&mut self, store: &dyn Mailbox) {
        if self.pane != Pane::Traffic {
            return;
        }
        let Some(m) = self.selected_message() else {
            return;
        };
        let result = (|| -> Result<Vec<String>> {
            let msg = store.message(&m.id)?;
            let mut lines = vec![
                format!("message {}", safe_id(&msg.id)),
                format!("from    {}", safe_name(&msg.sender)),
                format!("to      {}", field(&m.to)),
                format!("sent    {}", field(&msg.created_at)),
                format!("status  {}", field(&m.status)),
                String::new(),
            ];
            lines.extend(line::clean_lines(&msg.text).lines().map(str::to_string));
            let thread = store.history(&HistoryFilter {
                thread: Some(msg.thread_id.clone()),
                limit: 200,
                ..Default::default()
            })?;
            let mut seen = HashSet::new();
            let ids: Vec<_> = thread
                .iter()
                .filter(|r| seen.insert(r.id.clone()))
                .collect();
            if ids.len() > 1 {
                lines.push(String::new());
                lines.push(format!("thread ({} messages)", ids.len()));
                for r in ids {
                    lines.push(format!(
                        "{} {} {} -> {}: {}",
                        if r.id == msg.id { ">" } else { " " },
                        clock_of(&r.created_at),
                        safe_name(&r.sender),
                        safe_name(&r.recipient),
                        sanitize(&r.text)
                    ));
                }
            }
            Ok(lines)
        })();
        match result {
            Ok(lines) => self.mode = Mode::Detail { lines, scroll: 0 },
            Err(e) => self.status = field(&format!("{e:#}")),
        }
    }
}

fn state_style(s: Option<State>) -> Style {
    match s {
        Some(State::Online) => Style::default().fg(Color::Green),
        Some(State::Offline) => Style::default().fg(Color::Yellow),
        Some(State::Left) | None => Style::default().fg(Color::DarkGray),
    }
}

fn pane_block(title: &str, active: bool) -> Block<'static> {
    let style = if active {
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::bordered()
        .title(Span::styled(format!(" {title} "), style))
        .border_style(if active {
            Style::default().fg(Color::Cyan)
        } else {
            Style::default().fg(Color::DarkGray)
        })
}

fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_head(f, app, head);
    draw_foot(f, app, foot);
    let has_work = !app.snap.queues.is_empty() || !app.snap.leases.is_empty();
    if body.width >= 130 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(42), Constraint::Percentage(58)])
                .areas(body);
        let work_h = if has_work {
            u16::try_from(app.snap.queues.len() + app.snap.leases.len() + 3)
                .unwrap_or(u16::MAX)
                .min(left.height / 2)
        } else {
            0
        };
        let [sessions, work] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(work_h)]).areas(left);
        let rate_h = if right.height >= 16 { 5 } else { 0 };
        let [traffic, rate] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(rate_h)]).areas(right);
        draw_sessions(f, app, sessions);
        draw_traffic(f, app, traffic);
        if work_h > 0 {
            draw_work(f, app, work);
        }
        if rate_h > 0 {
            draw_rate(f, app, rate);
        }
    } else {
        let n = u16::try_from(app.sessions().len().max(1) + 3).unwrap_or(u16::MAX);
        let sessions_h = n.min(body.height / 2).max(3.min(body.height));
        let work_h = if has_work && body.height >= 18 {
            u16::try_from(app.snap.queues.len() + app.snap.leases.len() + 2)
                .unwrap_or(u16::MAX)
                .min(body.height / 4)
        } else {
            0
        };
        let rate_h = if body.height >= 26 { 5 } else { 0 };
        let [sessions, traffic, work, rate] = Layout::vertical([
            Constraint::Length(sessions_h),
            Constraint::Min(0),
            Constraint::Length(work_h),
            Constraint::Length(rate_h),
        ])
        .areas(body);
        draw_sessions(f, app, sessions);
        draw_traffic(f, app, traffic);
        if work_h > 0 {
            draw_work(f, app, work);
        }
        if rate_h > 0 {
            draw_rate(f, app, rate);
        }
    }
    match &app.mode {
        Mode::Detail { lines, scroll } => draw_popup(
            f,
            "message (↑↓ scroll, Esc close)",
            lines.iter().map(|l| Line::from(l.clone())).collect(),
            *scroll,
        ),
        Mode::Help => draw_popup(f, "keys (any key closes)", help_lines(), 0),
        _ => {}
    }
}

fn help_lines() -> Vec<Line<'static>> {
    [
        "Tab / Shift-Tab   next / previous pane",
        "↑ ↓ PgUp PgDn     move (j k too)",
        "Enter             open the selected message and its thread",
        "/                 filter sessions and traffic by name or text",
        "s                 send to the selected session",
        "r                 reply to the selected message",
        "?                 this help",
        "q  Ctrl-C         quit",
        "",
        "Messages you send go from your --as name (default $USER).",
    ]
    .iter()
    .map(|s| Line::from(*s))
    .collect()
}

fn draw_popup(f: &mut Frame, title: &str, lines: Vec<Line<'static>>, scroll: u16) {
    let area = f.area();
    let w = area.width.saturating_sub(4).max(10).min(area.width);
    let h = area.height.saturating_sub(2).max(3).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(Text::from(lines))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(pane_block(title, true)),
        r,
    );
}

fn draw_head(f: &mut Frame, app: &App, area: Rect) {
    let online = app
        .snap
        .sessions
        .iter()
        .filter(|s| s.state == Some(State::Online))
        .count();
    let active = app
        .snap
        .sessions
        .iter()
        .filter(|s| s.state != Some(State::Left))
        .count();
    let mut spans = vec![
        Span::styled(
            "inter-session top",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("  {} sessions, {online} online", active)),
        Span::raw("  oldest undelivered: "),
    ];
    match &app.snap.oldest_pending {
        Some(at) => spans.push(Span::styled(
            age(Some(at)),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None => spans.push(Span::raw("none")),
    }
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!("  filter /{}", field(&app.filter)),
            Style::default().fg(Color::Magenta),
        ));
    }
    spans.push(Span::styled(
        format!("  {}", field(&app.snap.location)),
        Style::default().fg(Color::DarkGray),
    ));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_foot(f: &mut Frame, app: &App, area: Rect) {
    let line = match &app.mode {
        Mode::Filter(t) => Line::from(vec![
            Span::styled("filter /", Style::default().fg(Color::Magenta)),
            Span::raw(field(t)),
            Span::styled(
                "▏ Enter keep, Esc clear",
                Style::default().fg(Color::DarkGray),
            ),
        ]),
        Mode::Compose {
            to, reply, text, ..
        } => Line::from(vec![
            Span::styled(
                match reply {
                    Some(id) => format!(
                        "reply to {} (re={}) as {}: ",
                        safe_name(to),
                        safe_id(id),
                        safe_name(&app.as_name)
                    ),
                    None => format!("to {} as {}: ", safe_name(to), safe_name(&app.as_name)),
                },
                Style::default().fg(Color::Cyan),
            ),
            Span::raw(field(text)),
            Span::styled(
                "▏ Enter send, Esc cancel",
                Style::default().fg(Color::DarkGray),
            ),
        ]),
        _ if !app.status.is_empty() => Line::from(Span::raw(field(&app.status))),
        _ => Line::from(Span::styled(
            "Tab pane  ↑↓ move  Enter open  / filter  s send  r reply  ? help  q quit",
            Style::default().fg(Color::DarkGray),
        )),
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_sessions(f: &mut Frame, app: &App, area: Rect) {
    let block = pane_block("sessions", app.pane == Pane::Sessions);
    let list = app.sessions();
    if list.is_empty() {
        let text = if app.snap.sessions.is_empty() {
            "No sessions yet. Start one: `inter-session inbox watch --name alice` in a terminal, \
             or /inter-session in Claude Code."
        } else {
            "No session matches the filter (/ to change it)."
        };
        f.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
            area,
        );
        return;
    }
    let multi_host = app
        .snap
        .sessions
        .iter()
        .map(|s| s.host.as_str())
        .collect::<HashSet<_>>()
        .len()
        > 1;
    // Narrow, the first columns only.
    let keep = match area.width {
        0..=49 => 3,
        50..=79 => 5,
        _ => usize::MAX,
    };
    let rows: Vec<Row> = list
        .iter()
        .map(|s| {
            let state = s.state.map_or("?", State::as_str);
            let mut cells = vec![
                Span::raw(safe_name(&s.name).into_owned()),
                Span::styled(state.to_string(), state_style(s.state)),
                Span::styled(
                    s.pending.to_string(),
                    if s.pending > 0 {
                        Style::default().fg(Color::Red)
                    } else {
                        Style::default()
                    },
                ),
                Span::raw(age(s.last.as_deref())),
                Span::raw(safe_label(&s.label).into_owned()),
                Span::styled(
                    s.peer.as_deref().map(field).unwrap_or_default(),
                    Style::default().fg(Color::Blue),
                ),
                Span::raw(field(
                    std::path::Path::new(&s.project)
                        .file_name()
                        .map_or(s.project.as_str(), |n| n.to_str().unwrap_or("")),
                )),
            ];
            if multi_host {
                cells.push(Span::raw(field(&s.host)));
            }
            cells.truncate(keep);
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Min(8),
        Constraint::Length(12),
        Constraint::Length(12),
    ];
    let mut header = vec!["NAME", "STATE", "PEND", "LAST", "LABEL", "PEER", "PROJECT"];
    if multi_host {
        widths.push(Constraint::Length(10));
        header.push("HOST");
    }
    widths.truncate(keep);
    header.truncate(keep);
    if keep == 3 {
        widths[0] = Constraint::Min(8);
    }
    render_table(
        f,
        area,
        Table::new(rows, widths),
        Some(header),
        block,
        Some(app.sel[0]),
    );
}

/// A pane's table: bold header (if any), the selected row reversed.
fn render_table(
    f: &mut Frame,
    area: Rect,
    table: Table,
    header: Option<Vec<&str>>,
    block: Block,
    selected: Option<usize>,
) {
    let mut table = table
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(block);
    if let Some(h) = header {
        table = table.header(Row::new(h).style(Style::default().add_modifier(Modifier::BOLD)));
    }
    let mut state = TableState::default();
    state.select(selected);
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_traffic(f: &mut Frame, app: &App, area: Rect) {
    let block = pane_block("traffic (newest first)", app.pane == Pane::Traffic);
    let list = app.traffic();
    if list.is_empty() {
        let text = if app.snap.traffic.is_empty() {
            "No messages yet. Send one: `inter-session mail send --to <name> --text '…'` (or s here)."
        } else {
            "No message matches the filter."
        };
        f.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
            area,
        );
        return;
    }
    let narrow = area.width < 70;
    let rows: Vec<Row> = list
        .iter()
        .map(|m| {
            let status_style = match m.status.as_str() {
                "delivered" => Style::default().fg(Color::Green),
                "expired" => Style::default().fg(Color::DarkGray),
                _ => Style::default().fg(Color::Yellow),
            };
            let mut route = format!("{} → {}", safe_name(&m.from), field(&m.to));
            if let Some(re) = &m.re {
                route.push_str(&format!(" re={}", safe_id(re).get(..8).unwrap_or("")));
            }
            let mut cells = vec![
                Span::raw(clock_of(&m.at)),
                Span::raw(route),
                Span::raw(field(&m.kind)),
                Span::styled(field(&m.status), status_style),
                Span::raw(sanitize(&m.text)),
            ];
            if narrow {
                cells.drain(2..4);
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(26),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Min(10),
    ];
    let mut header = vec!["TIME", "FROM → TO", "KIND", "STATUS", "TEXT"];
    if narrow {
        widths.drain(2..4);
        header.drain(2..4);
        widths[1] = Constraint::Length(area.width.saturating_sub(14) / 2);
    }
    render_table(
        f,
        area,
        Table::new(rows, widths),
        Some(header),
        block,
        Some(app.sel[1]),
    );
}

fn draw_work(f: &mut Frame, app: &App, area: Rect) {
    let block = pane_block("tasks and leases", app.pane == Pane::Work);
    let mut rows: Vec<Row> = app
        .snap
        .queues
        .iter()
        .map(|q| {
            let mut spans = vec![Span::raw(format!(
                "{} open, {} claimed, {} done",
                q.open, q.claimed, q.done
            ))];
            if q.dead > 0 {
                spans.push(Span::styled(
                    format!(", {} dead", q.dead),
                    Style::default().fg(Color::Red),
                ));
            }
            Row::new(vec![
                ratatui::widgets::Cell::from(format!("queue {}", safe_name(&q.queue))),
                ratatui::widgets::Cell::from(Line::from(spans)),
            ])
        })
        .collect();
    rows.extend(app.snap.leases.iter().map(|l| {
        Row::new(vec![
            Span::raw(format!("lease {}", field(&l.pattern))),
            Span::raw(format!(
                "{} ({}, {})",
                safe_name(&l.holder),
                if l.exclusive { "exclusive" } else { "shared" },
                age(Some(&l.since))
            )),
        ])
    }));
    let table = Table::new(
        rows,
        [Constraint::Percentage(40), Constraint::Percentage(60)],
    );
    let selected = (app.pane == Pane::Work).then_some(app.sel[2]);
    render_table(f, area, table, None, block, selected);
}

fn draw_rate(f: &mut Frame, app: &App, area: Rect) {
    let total: u64 = app.snap.rate.iter().sum();
    let peak = app.snap.rate.iter().copied().max().unwrap_or(0);
    let block = pane_block(
        &format!("messages a minute, last hour: {total} in all, peak {peak}"),
        false,
    );
    f.render_widget(Sparkline::default().data(&app.snap.rate).block(block), area);
}

/// The frame as plain text (`--once`), lines trimmed at the right.
fn frame_text(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.y..area.y + area.height {
        let mut line = String::new();
        for x in area.x..area.x + area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Put the terminal back as it was (raw mode off, main screen, cursor).
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        event::DisableMouseCapture,
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// Restores the terminal when dropped (every way out of `live`).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

enum Ev {
    Term(Event),
    Wake(Wake),
}

pub fn run(opts: Options) -> Result<i32> {
    let store = crate::store::open()?;
    let snap = load(store.as_ref())?;
    let mut app = App {
        as_name: opts.as_name.clone(),
        snap,
        pane: Pane::Sessions,
        sel: [0; 3],
        filter: String::new(),
        mode: Mode::Normal,
        status: String::new(),
        quit: false,
    };
    if opts.once {
        let (w, h) = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            terminal::size().unwrap_or(opts.size)
        } else {
            opts.size
        };
        let mut t = Terminal::new(TestBackend::new(w.max(20), h.max(5)))?;
        t.draw(|f| draw(f, &app))?;
        let text = frame_text(t.backend().buffer());
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        return Ok(0);
    }
    live(store.as_ref(), &mut app)
}

fn live(store: &dyn Mailbox, app: &mut App) -> Result<i32> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!("top needs a terminal; `inter-session top --once` prints one frame as text");
    }
    let (tx, rx) = channel::<Ev>();
    let (wtx, wrx) = channel::<Wake>();
    let _subscription = store.subscribe_all(wtx.clone())?;
    crate::signals::install_signals(wtx)?;
    forward(wrx, tx.clone());
    // Restore on panic too, before the message is printed.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    terminal::enable_raw_mode().context("could not put the terminal in raw mode")?;
    let _restore = Restore;
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        event::EnableMouseCapture,
        cursor::Hide
    )?;
    // Before the key reader starts: clearing asks the terminal where its
    // cursor is, and that answer must not go to the key reader.
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    std::thread::spawn(move || {
        while let Ok(e) = event::read() {
            if tx.send(Ev::Term(e)).is_err() {
                break;
            }
        }
    });
    let mut next_tick = Instant::now() + TICK;
    loop {
        term.draw(|f| draw(f, app))?;
        let ev = rx.recv_timeout(next_tick.saturating_duration_since(Instant::now()));
        let mut reload = false;
        match ev {
            Ok(Ev::Term(Event::Key(k))) => app.key(store, k),
            Ok(Ev::Term(Event::Mouse(m))) => match m.kind {
                MouseEventKind::ScrollDown => app.move_by(1),
                MouseEventKind::ScrollUp => app.move_by(-1),
                _ => {}
            },
            Ok(Ev::Term(_)) => {}
            Ok(Ev::Wake(Wake::Signal(_))) => break,
            Ok(Ev::Wake(_)) => {
                // Several notifications in a row are one reload.
                while let Ok(more) = rx.try_recv() {
                    match more {
                        Ev::Wake(Wake::Signal(_)) => return Ok(0),
                        Ev::Term(Event::Key(k)) => app.key(store, k),
                        _ => {}
                    }
                }
                reload = store.changed().unwrap_or(true);
            }
            Err(RecvTimeoutError::Timeout) => {
                next_tick = Instant::now() + TICK;
                // Liveness changes without a commit (a monitor killed).
                if let Ok(s) = load_sessions(store, &app.snap) {
                    app.snap.sessions = s;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if app.quit {
            break;
        }
        if reload {
            match load(store) {
                Ok(s) => {
                    app.snap = s;
                    app.clamp();
                }
                Err(e) => {
                    app.status = format!("could not read the mailbox: {}", field(&format!("{e:#}")))
                }
            }
        }
    }
    Ok(0)
}

/// The sessions again, with what the last full load knew of each.
fn load_sessions(store: &dyn Mailbox, snap: &Snapshot) -> Result<Vec<SessionView>> {
    let before: HashMap<&str, &SessionView> =
        snap.sessions.iter().map(|s| (s.name.as_str(), s)).collect();
    session_views(store, |name| {
        let old = before.get(name);
        (
            old.and_then(|o| o.last.clone()),
            old.and_then(|o| o.peer.clone()),
        )
    })
}

/// Every session (left ones too), with its last activity and tmux peer
/// state as `extra` says for its name.
fn session_views(
    store: &dyn Mailbox,
    mut extra: impl FnMut(&str) -> (Option<String>, Option<String>),
) -> Result<Vec<SessionView>> {
    Ok(store
        .sessions(true)?
        .into_iter()
        .map(|s| {
            let (last, peer) = extra(&s.name);
            SessionView {
                last,
                peer,
                name: s.name,
                label: s.label,
                state: Some(s.state),
                pending: s.pending,
                host: s.host,
                project: s.project,
            }
        })
        .collect())
}

fn forward(rx: Receiver<Wake>, tx: Sender<Ev>) {
    std::thread::spawn(move || {
        for w in rx {
            if tx.send(Ev::Wake(w)).is_err() {
                break;
            }
        }
    });
}
