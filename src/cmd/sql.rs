//! `sql`: one read-only query over the mailbox.

use anyhow::Result;

use super::open;

pub fn run(query: &str, header: bool, json: bool) -> Result<i32> {
    let store = open()?;
    let result = store.query_readonly(query)?;
    if json {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = result
            .rows
            .into_iter()
            .map(|row| result.columns.iter().cloned().zip(row).collect())
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(0);
    }
    // Like the sqlite3 shell: `|`-separated, no header unless asked.
    if header {
        println!("{}", result.columns.join("|"));
    }
    for row in result.rows {
        let cells: Vec<String> = row
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("|"));
    }
    Ok(0)
}
