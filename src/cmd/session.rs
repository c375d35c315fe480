//! This session: `status`, `rename`, `relabel`, `disconnect`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::{me_acting, me_if_any, open};
use crate::identity::{self, pid_alive};
use crate::line::{field, safe_label, safe_name};
use crate::store::Verbs;

pub fn status(from: Option<&str>, json: bool) -> Result<i32> {
    let store = open()?;
    let session = me_if_any(store.as_ref(), from)?;
    let database = store.location();
    match session {
        None if json => println!("{}", json!({ "connected": false, "database": database })),
        None => println!("not connected\ndatabase: {}", field(&database)),
        Some(s) if json => println!(
            "{}",
            json!({
                "connected": true, "name": s.name, "label": s.label, "state": s.state,
                "monitor_pid": s.monitor_pid, "pending": s.pending, "cwd": s.cwd,
                "project": s.project, "since": s.since, "database": database,
            })
        ),
        Some(s) => {
            println!("name: {}", safe_name(&s.name));
            if !s.label.is_empty() {
                println!("label: {}", safe_label(&s.label));
            }
            println!("state: {}", s.state.as_str());
            if let Some(pid) = s.monitor_pid {
                println!("monitor pid: {pid}");
            }
            println!("pending: {}", s.pending);
            println!("database: {}", field(&database));
        }
    }
    Ok(0)
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
