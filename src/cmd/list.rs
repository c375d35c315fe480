//! `list`: every session with its live state and pending mail.

use anyhow::{Context, Result};

use super::{open, print_table};
use crate::identity;
use crate::line::{safe_label, safe_name};

pub fn run(all: bool, project: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let mut sessions = store.sessions(all)?;
    if project {
        let cwd = std::env::current_dir().context("could not read the current directory")?;
        let here = identity::project_of(&cwd).display().to_string();
        sessions.retain(|s| s.project == here);
    }
    if json {
        println!("{}", serde_json::to_string(&sessions)?);
        return Ok(0);
    }
    if sessions.is_empty() {
        println!("no sessions yet; start one with: inter-session inbox watch --name NAME");
        return Ok(0);
    }
    // A PostgreSQL mailbox (not a file path) serves several machines: say
    // where each session runs.
    let several_hosts = store.backend().spans_hosts();
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            // Every cell is made safe by print_table; a name or label that
            // breaks its rule (a row written past our validation) is shown
            // escaped as in a message header.
            let mut row = vec![
                safe_name(&s.name).into_owned(),
                safe_label(&s.label).into_owned(),
                s.state.as_str().to_string(),
                s.pending.to_string(),
                s.cwd.clone(),
                s.since.clone(),
            ];
            if several_hosts {
                row.insert(4, s.host.clone());
            }
            row
        })
        .collect();
    if several_hosts {
        print_table(
            &["NAME", "LABEL", "STATE", "PENDING", "HOST", "CWD", "SINCE"],
            &rows,
        );
    } else {
        print_table(
            &["NAME", "LABEL", "STATE", "PENDING", "CWD", "SINCE"],
            &rows,
        );
    }
    Ok(0)
}
