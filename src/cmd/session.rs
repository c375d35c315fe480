//! This session: `status`, `rename`, `relabel`, `disconnect`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::{me_acting, me_if_any, open};
use crate::identity::{self, pid_alive};
use crate::line::{field, safe_label, safe_name};
use crate::store::{Session, State, Verbs};

pub fn status(from: Option<&str>, json: bool, wait: Option<&str>) -> Result<i32> {
    let wait = wait.map(super::parse_age).transpose()?;
    let store = open()?;
    let mut session = me_if_any(store.as_ref(), from)?;
    // The plugin's monitor starts as the skill loads; give it a moment. It
    // never starts under `claude -p` (CLAUDE_CODE_SESSION_ATTENDED=0).
    let unattended = std::env::var("CLAUDE_CODE_SESSION_ATTENDED").is_ok_and(|v| v == "0");
    if let Some(secs) = wait.filter(|_| !unattended) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        // Online, and its row says by whom (the lock comes a moment first).
        let served = |s: &Session| s.state == State::Online && store.is_online(s.id);
        while !session.as_ref().is_some_and(served) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            session = me_if_any(store.as_ref(), from)?;
        }
    }
    let database = store.location();
    let Some(s) = session else {
        if json {
            println!("{}", json!({ "connected": false, "database": database }));
        } else {
            println!("not connected\ndatabase: {}", field(&database));
        }
        return Ok(0);
    };
    let delivery = Delivery::of(store.as_ref(), &s);
    if json {
        println!(
            "{}",
            json!({
                "connected": true, "name": s.name, "label": s.label, "state": s.state,
                "monitor_pid": s.monitor_pid, "delivery": delivery.tag(),
                "pending": s.pending, "cwd": s.cwd,
                "project": s.project, "since": s.since, "database": database,
            })
        );
        return Ok(0);
    }
    println!("name: {}", safe_name(&s.name));
    if !s.label.is_empty() {
        println!("label: {}", safe_label(&s.label));
    }
    println!("state: {}", s.state.as_str());
    if let Some(pid) = s.monitor_pid {
        println!("monitor pid: {pid}");
    }
    println!("delivery: {}", delivery.says());
    println!("pending: {}", s.pending);
    println!("database: {}", field(&database));
    Ok(0)
}

/// Who hands a session's mail to its model right now.
enum Delivery {
    /// The Claude Code plugin's monitor (`inbox watch --auto`): it never
    /// expires, nothing to re-arm.
    PluginMonitor,
    /// Another monitor (a model's Monitor, a terminal): it may expire.
    Monitor,
    /// No monitor, but the host's hooks (a door was opened for this key).
    Hooks,
    /// Nothing: the mail waits for a monitor or `inbox check`.
    Waits,
}

impl Delivery {
    fn of(store: &dyn crate::store::Mailbox, s: &Session) -> Delivery {
        if store.is_online(s.id) {
            let local = s.host == identity::this_host();
            let auto = local
                && s.monitor_pid.is_some_and(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--auto"))
                });
            return if auto {
                Delivery::PluginMonitor
            } else {
                Delivery::Monitor
            };
        }
        let door = s.key.as_deref().is_some_and(|k| {
            crate::datadir::path().is_ok_and(|d| crate::door::path(&d, k).is_file())
        });
        if door {
            Delivery::Hooks
        } else {
            Delivery::Waits
        }
    }

    fn tag(&self) -> &'static str {
        match self {
            Delivery::PluginMonitor => "plugin-monitor",
            Delivery::Monitor => "monitor",
            Delivery::Hooks => "hooks",
            Delivery::Waits => "none",
        }
    }

    fn says(&self) -> &'static str {
        match self {
            Delivery::PluginMonitor => {
                "the plugin's monitor (it never expires: start no Monitor, re-arm nothing)"
            }
            Delivery::Monitor => "a monitor (a Monitor expires: re-arm it on its notice)",
            Delivery::Hooks => {
                "hooks (no monitor runs; the plugin's hooks hand mail over at the next prompt, \
                 tool call or doorbell)"
            }
            Delivery::Waits => "none (mail waits: start a monitor, or `inter-session inbox check`)",
        }
    }
}

pub fn rename(from: Option<&str>, force: bool, new: &str) -> Result<i32> {
    identity::validate_name(new)?;
    let store = open()?;
    let acting = me_acting(store.as_ref(), from, force, "rename")?;
    let s = &acting.session;
    store.rename(s.id, new)?;
    acting.tell(store.as_ref())?;
    println!(
        "renamed '{}' -> '{new}' ({} pending mail follows)",
        safe_name(&s.name),
        s.pending
    );
    Ok(0)
}

pub fn relabel(from: Option<&str>, force: bool, text: &str) -> Result<i32> {
    let label = identity::validate_label(text)?;
    let store = open()?;
    let acting = me_acting(store.as_ref(), from, force, "relabel")?;
    let s = &acting.session;
    store.relabel(s.id, &label)?;
    acting.tell(store.as_ref())?;
    if !s.project.is_empty() {
        store.remember_label(&s.project, &label)?;
    }
    let name = safe_name(&s.name);
    if label.is_empty() {
        println!("label of '{name}' cleared");
    } else {
        println!("label of '{name}' set to \"{label}\"");
    }
    Ok(0)
}

pub fn disconnect(from: Option<&str>, force: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let acting = me_acting(store.as_ref(), from, force, "disconnect")?;
    // Told first: a mailbox that has left takes no mail.
    acting.tell(store.as_ref())?;
    let s = acting.session;
    let pid = store.disconnect(s.id)?;
    let mut stopped = false;
    if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: plain kill(2) on a pid we recorded for this session's monitor.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while store.is_online(s.id) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if store.is_online(s.id) && pid_alive(i64::from(pid)) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        stopped = true;
    }
    if json {
        println!(
            "{}",
            json!({ "name": s.name, "state": "left", "stopped_monitor_pid": pid })
        );
    } else if stopped {
        println!(
            "disconnected '{}' (monitor pid {} stopped)",
            safe_name(&s.name),
            pid.context("pid")?
        );
    } else {
        println!("disconnected '{}'", safe_name(&s.name));
    }
    Ok(0)
}
