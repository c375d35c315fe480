//! The safe forms every output but the monitor's lines uses (issue 18):
//! `field` for one value on one line (a table cell, a `status` value),
//! `visible` for an error message (what would act on a terminal written
//! `\u{…}`), `safe_text` for a message text that keeps its lines (header-like
//! lines quoted), `safe_name`, `safe_label` and `safe_id` for stored values a
//! hostile writer of a shared database may have put there, and display
//! widths for aligned tables.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_normalization::UnicodeNormalization;

use super::{clean_lines, is_control, is_format, sanitize};
use crate::identity;

/// One value on one line of a table, a `key: value` listing or an error
/// line: `sanitize`, and TAB a space too (a tab would move the columns).
pub fn field(text: &str) -> String {
    sanitize(text).replace('\t', " ")
}

/// An error message for a terminal: every control character but `\n`,
/// every format character and U+2028/U+2029 written `\u{hex}` (as
/// `escape_debug` writes them), so that what was wrong with an input stays
/// visible while nothing in it acts on the terminal. Errors quote what they
/// were given; `'1h\u{1b}[31m'` says more than a silently cleaned `'1h'`.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\n' && (is_control(c) || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// What a line of a text shown whole starts with when it would read as one
/// of our own lines (see `looks_like_ours`).
pub const QUOTE_MARK: &str = "> ";

/// A message text for a terminal or an LLM (`inbox read`, `mail ask`):
/// `clean_lines`, and each line that would read as one of our own lines
/// quoted with `QUOTE_MARK`. `--raw` is there for the exact bytes.
pub fn safe_text(text: &str) -> String {
    let lines = clean_lines(text);
    let mut out = String::with_capacity(lines.len());
    for line in lines.split_inclusive('\n') {
        if looks_like_ours(line) {
            out.push_str(QUOTE_MARK);
        }
        out.push_str(line);
    }
    out
}

/// Whether a line would read as an `[inter-session …]` line: after leading
/// white space it starts with `[inter-session`, compared loosely (NFKC, any
/// case, everything but letters, digits, `[` and `>` skipped), so that
/// `［Inter Session` and `- [inter_session` count too. Quoting one line too
/// many costs nothing; one too few could pass for a header. A line that
/// starts with `>` is quoted already.
pub fn looks_like_ours(line: &str) -> bool {
    const KEY: &str = "[intersession";
    let mut key = line
        .trim_start()
        .chars()
        .take(64)
        .nfkc()
        .filter(|c| c.is_alphanumeric() || matches!(c, '[' | '>'))
        .flat_map(char::to_lowercase);
    KEY.chars().all(|k| key.next() == Some(k))
}

/// A stored name as output shows it: itself when it follows the name rule
/// (SPEC §3), else `escaped` (a `?`, then its first 40 characters with every
/// one but ASCII letters, digits, `-`, `_` and `.` written `\u{…}`).
pub fn safe_name(name: &str) -> Cow<'_, str> {
    if identity::is_valid_name(name) {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(escaped(name, identity::MAX_NAME_LEN, plain_ascii))
    }
}

/// A stored label as output shows it: itself when it follows the label rule
/// (SPEC §3: at most 60 characters, no control, format or separator but
/// space, no `"`, `[`, `]`), else `escaped` (a `\` in it written too).
pub fn safe_label(label: &str) -> Cow<'_, str> {
    let valid = label.chars().count() <= identity::MAX_LABEL_CHARS
        && label.chars().all(identity::label_char_ok);
    if valid {
        Cow::Borrowed(label)
    } else {
        Cow::Owned(escaped(label, identity::MAX_LABEL_CHARS, |c| {
            c != '\\' && identity::label_char_ok(c)
        }))
    }
}

/// A stored message id as output shows it: itself when it is 1 to 64 ASCII
/// letters, digits, `-` or `_` (a ULID is 26), else `escaped`.
pub fn safe_id(id: &str) -> Cow<'_, str> {
    const MAX_ID: usize = 64;
    if !id.is_empty() && id.len() <= MAX_ID && id.chars().all(|c| c != '.' && plain_ascii(c)) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(escaped(id, MAX_ID, |c| c != '.' && plain_ascii(c)))
    }
}

pub(super) fn plain_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `?`, then the first `max` characters of `s`, each one `keep` refuses
/// written `\u{hex}`, then `…` when there were more. The `?` cannot start a
/// valid name or id, so the result never passes for one.
pub(super) fn escaped(s: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::from("?");
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('\u{2026}');
            break;
        }
        if keep(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    out
}

/// Widest a table cell may be, in terminal columns; longer ones end in `…`.
pub const MAX_CELL_COLUMNS: usize = 80;

/// Columns a terminal gives `c`, as table alignment needs it: 0 for
/// combining marks, 2 for East Asian wide and fullwidth characters and the
/// emoji blocks, else 1. The main ranges of Unicode's East Asian Width
/// table written out by hand (no dependency for a dozen ranges); controls
/// and format characters never reach it (cells are `field`s first).
pub fn char_width(c: char) -> usize {
    if unicode_normalization::char::is_combining_mark(c) {
        return 0;
    }
    let wide = matches!(
        c,
        '\u{1100}'..='\u{115F}'
            | '\u{231A}'..='\u{231B}'
            | '\u{2329}'..='\u{232A}'
            | '\u{2E80}'..='\u{303E}'
            | '\u{3041}'..='\u{33FF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{A000}'..='\u{A4CF}'
            | '\u{A960}'..='\u{A97F}'
            | '\u{AC00}'..='\u{D7A3}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{FE10}'..='\u{FE19}'
            | '\u{FE30}'..='\u{FE6F}'
            | '\u{FF00}'..='\u{FF60}'
            | '\u{FFE0}'..='\u{FFE6}'
            | '\u{1F300}'..='\u{1F64F}'
            | '\u{1F680}'..='\u{1F6FF}'
            | '\u{1F900}'..='\u{1F9FF}'
            | '\u{1FA70}'..='\u{1FAFF}'
            | '\u{20000}'..='\u{2FFFD}'
            | '\u{30000}'..='\u{3FFFD}'
    );
    if wide {
        2
    } else {
        1
    }
}

/// Columns a terminal gives `s` (see `char_width`).
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// A table cell: `field(text)`, cut to `MAX_CELL_COLUMNS` columns with `…`.
pub fn cell(text: &str) -> String {
    let text = field(text);
    if width(&text) <= MAX_CELL_COLUMNS {
        return text;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += char_width(c);
        // One column is kept for the `…`.
        if used >= MAX_CELL_COLUMNS {
            break;
        }
        out.push(c);
    }
    out.push('\u{2026}');
    out
}
