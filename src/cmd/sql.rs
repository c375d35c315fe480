//! `sql`: one read-only query over the mailbox, its rows printed as they
//! are read, within a time limit.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use super::{open, parse_age};
use crate::identity::UsageError;
use crate::store::{SqlLimits, SqlSink, SqlStopped};

pub fn run(query: &str, header: bool, json: bool, timeout: &str) -> Result<i32> {
    if is_empty_query(query) {
        return Err(UsageError(
            "empty query: give one SQL statement, e.g. \"select * from history\"".into(),
        )
        .into());
    }
    let secs = parse_age(timeout)?;
    if secs == 0 {
        return Err(UsageError(format!(
            "invalid --timeout '{}': it must be longer than 0",
            timeout.escape_debug()
        ))
        .into());
    }
    let limits = SqlLimits::new(Duration::from_secs(secs));
    // Ctrl-C stops the query (SQLite checks the flag as it works;
    // PostgreSQL's statement is cancelled on the server) instead of killing
    // us mid-row; a second one, while something else blocks (a full pipe,
    // a locked database), exits at once.
    let sigint = signal_hook::consts::SIGINT;
    signal_hook::flag::register_conditional_shutdown(sigint, 130, limits.stop.clone())
        .and_then(|_| signal_hook::flag::register(sigint, limits.stop.clone()))
        .map_err(|e| anyhow::anyhow!("could not install the Ctrl-C handler: {e}"))?;
    let store = open()?;
    let stdout = std::io::stdout();
    let mut out = Printer {
        out: stdout.lock(),
        header,
        json,
        columns: Vec::new(),
        rows: 0,
    };
    let result = store
        .query_stream(query, &limits, &mut out)
        .and_then(|()| out.finish());
    match result {
        Ok(()) => Ok(0),
        // The reader went away (`sql … | head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        Err(e) => {
            out.cut_short();
            if matches!(
                e.downcast_ref::<SqlStopped>(),
                Some(SqlStopped::Interrupted)
            ) {
                eprintln!("inter-session: {e}");
                return Ok(130);
            }
            Err(e)
        }
    }
}

/// Rows as they come: `|`-separated like the sqlite3 shell, or one JSON
/// array with one object per line.
struct Printer<W: Write> {
    out: W,
    header: bool,
    json: bool,
    /// JSON keys: the column names made distinct.
    columns: Vec<String>,
    rows: u64,
}

impl<W: Write> SqlSink for Printer<W> {
    fn columns(&mut self, names: &[String]) -> Result<()> {
        if self.json {
            self.columns = distinct_names(names)
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
        } else if self.header {
            let names: Vec<String> = names.iter().map(|n| crate::line::field(n)).collect();
            writeln!(self.out, "{}", names.join("|"))?;
        }
        Ok(())
    }

    fn row(&mut self, values: Vec<serde_json::Value>) -> Result<()> {
        if self.json {
            // Written by hand to keep the columns in query order.
            let mut line = String::from(if self.rows == 0 { "[{" } else { ",\n{" });
            for (i, (key, value)) in self.columns.iter().zip(&values).enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(key);
                line.push(':');
                line.push_str(&serde_json::to_string(value)?);
            }
            line.push('}');
            self.out.write_all(line.as_bytes())?;
        } else {
            let cells: Vec<String> = values
                .into_iter()
                .map(|v| match v {
                    serde_json::Value::Null => String::new(),
                    // Data never reaches a terminal raw: one safe line per
                    // row (`--json` keeps the exact values).
                    serde_json::Value::String(s) => crate::line::field(&s),
                    other => other.to_string(),
                })
                .collect();
            writeln!(self.out, "{}", cells.join("|"))?;
        }
        self.rows += 1;
        // Each row reaches the reader now, not when the query ends.
        self.out.flush()?;
        Ok(())
    }
}

impl<W: Write> Printer<W> {
    /// After an error: end the half-written JSON line (left unclosed, so
    /// that a partial result never parses as a whole one) so the error
    /// line stands on its own.
    fn cut_short(&mut self) {
        if self.json && self.rows > 0 {
            let _ = self.out.write_all(b"\n");
        }
        let _ = self.out.flush();
    }

    fn finish(&mut self) -> Result<()> {
        if self.json {
            self.out
                .write_all(if self.rows == 0 { b"[]\n" } else { b"]\n" })?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// JSON keys for these column names: a repeated name gets the first free
/// `_2`, `_3`, … suffix (`select 1 as a, 2 as a` gives `a` and `a_2`), so
/// no value is lost and no other column's name is taken.
pub fn distinct_names(names: &[String]) -> Vec<String> {
    use std::collections::HashSet;
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if seen.insert(name) {
            out.push(name.clone());
            continue;
        }
        let mut k = 2u64;
        while taken.contains(&format!("{name}_{k}")) {
            k += 1;
        }
        let key = format!("{name}_{k}");
        taken.insert(key.clone());
        out.push(key);
    }
    out
}

/// Nothing but white space, comments and semicolons.
pub fn is_empty_query(q: &str) -> bool {
    let mut rest = q;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            // An unclosed comment runs to the end, as in SQLite.
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return rest.is_empty();
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repeated_column_names_stay_distinct() {
        assert_eq!(distinct_names(&names(&["a", "a"])), names(&["a", "a_2"]));
        assert_eq!(
            distinct_names(&names(&["a", "a", "a"])),
            names(&["a", "a_2", "a_3"])
        );
        // A real `a_2` keeps its name; the repeat takes the next free one.
        assert_eq!(
            distinct_names(&names(&["a", "a", "a_2"])),
            names(&["a", "a_3", "a_2"])
        );
        assert_eq!(
            distinct_names(&names(&["x", "y", "x", "y"])),
            names(&["x", "y", "x_2", "y_2"])
        );
        assert_eq!(distinct_names(&names(&["", ""])), names(&["", "_2"]));
    }

    #[test]
    fn empty_queries() {
        for q in [
            "",
            "   ",
            "\n\t",
            ";",
            " ; ;",
            "-- a comment",
            "-- a\n-- b\n",
            "/* c */",
            "/* unclosed",
            "/* c */ ; -- d",
        ] {
            assert!(is_empty_query(q), "{q:?}");
        }
        for q in [
            "select 1",
            "-- c\nselect 1",
            "/* c */ pragma user_version",
            "x",
        ] {
            assert!(!is_empty_query(q), "{q:?}");
        }
    }

    #[test]
    fn json_rows_are_one_document() {
        let mut p = Printer {
            out: Vec::new(),
            header: false,
            json: true,
            columns: Vec::new(),
            rows: 0,
        };
        p.columns(&names(&["a", "a"])).unwrap();
        p.row(vec![1.into(), "x".into()]).unwrap();
        p.row(vec![serde_json::Value::Null, 2.5.into()]).unwrap();
        p.finish().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p.out).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"a": 1, "a_2": "x"}, {"a": null, "a_2": 2.5}])
        );
        let mut empty = Printer {
            out: Vec::new(),
            header: false,
            json: true,
            columns: Vec::new(),
            rows: 0,
        };
        empty.columns(&names(&["a"])).unwrap();
        empty.finish().unwrap();
        assert_eq!(empty.out, b"[]\n");
    }
}
