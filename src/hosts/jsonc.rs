//! JSON with comments, as host settings files allow (`//` and `/* */`
//! outside strings; trailing commas are not accepted).

use anyhow::{Context, Result};
use serde_json::Value;

/// `text` without its comments (each replaced by spaces, so positions in
/// errors still point at the right line and column).
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                    out.push(' ');
                }
            }
            ('/', Some('*')) => {
                chars.next();
                out.push_str("  ");
                let mut last = ' ';
                for n in chars.by_ref() {
                    out.push(if n == '\n' { '\n' } else { ' ' });
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Parse a settings file's text (an empty file is `{}`).
pub fn parse(text: &str, what: &str) -> Result<Value> {
    let clean = strip_comments(text);
    if clean.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_str(&clean).with_context(|| format!("could not parse {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_go_strings_stay() {
        let v = parse(
            "{ // a note\n \"a\": \"x // not a comment\", /* b */ \"b\": \"/* kept */\" }",
            "t",
        )
        .expect("parse");
        assert_eq!(v["a"], "x // not a comment");
        assert_eq!(v["b"], "/* kept */");
        assert!(parse("{\"a\": 1,,}", "t").is_err());
        assert!(parse("  ", "t").expect("empty").is_object());
    }
}
