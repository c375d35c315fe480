//! What reaches a terminal or an LLM from the data. First the monitor's
//! stdout lines (SPEC §4): the `[inter-session msg=…]` header, the sanitising
//! that keeps a message body on one safe line, the 500-unit length limit
//! (counted in UTF-16 code units, as Claude Code counts), truncation with its
//! `cont` line, and the `queued=` age format; `clean_lines` for a whole text
//! that keeps its line breaks (`peer read`). `safe` holds the safe forms
//! every other output uses.
//!
//! A header never trusts its fields: a name, label or id read back from the
//! database that breaks its rule is shown escaped behind a `?` (e.g.
//! `from="?bob\u{22}\u{5d}"`), so it can neither close its quotes nor pass
//! for a real name. In a text that keeps its lines, a line that would read as
//! one of our own lines (`[inter-session …`, compared loosely) is quoted with
//! a leading `> `.
//!
//! This module only builds strings. It does not write, pace or flush output,
//! decide when a message counts as queued, or NFC-normalise anything: a body
//! is kept exactly as sent, minus what is unsafe.

use crate::store::Message;

/// Max length of one monitor line, in UTF-16 code units (Claude Code cuts lines at 500).
pub const MAX_LINE_UNITS: usize = 500;

/// What a line break in a body turns into (U+21B5 DOWNWARDS ARROW WITH CORNER LEFTWARDS).
pub const NEWLINE_MARK: char = '\u{21B5}';

const ESC: char = '\u{1B}';
const BEL: char = '\u{07}';
/// 8-bit C1 forms: CSI and STRING TERMINATOR.
const C1_CSI: char = '\u{9B}';
const C1_ST: char = '\u{9C}';

/// Number of UTF-16 code units in s (an emoji counts 2).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The longest prefix of `s` that is at most `max_units` UTF-16 code units,
/// cut on a code point boundary (a surrogate pair is never split).
pub fn truncate_units(s: &str, max_units: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > max_units {
            return &s[..i];
        }
    }
    s
}

/// Same count the truncated=N field uses: the ORIGINAL text's length in Unicode code points.
pub fn char_count(text: &str) -> usize {
    text.chars().count()
}

/// Make text single-line and safe (rules below).
///
/// In order: terminal escape sequences are removed whole; `\r\n`, `\n`, `\r`,
/// U+2028 and U+2029 each become one `↵`; every other control character
/// (Cc) except TAB is dropped; format characters (Cf, which includes the bidi
/// controls and zero-width characters) are dropped. Nothing else is changed.
/// The result contains no line break, no ESC and no control but TAB, so it
/// can never start a line of its own. The function is idempotent.
pub fn sanitize(text: &str) -> String {
    clean(text, NEWLINE_MARK)
}

/// A whole text with its lines kept, for a terminal (`peer read`, clap's
/// errors): `sanitize` with each line break kept as one `\n`; the same
/// escapes, controls (but TAB) and format characters go. `safe_text` also
/// quotes lines that read as ours.
pub fn clean_lines(text: &str) -> String {
    clean(text, '\n')
}

/// The rules of `sanitize`, with each line break turned into `brk`.
fn clean(text: &str, brk: char) -> String {
    // Two passes rather than one so that the rules apply in the stated order:
    // "\r\x1b[0m\n" is one line break once its colour code is gone.
    let stripped = strip_escapes(text);
    let mut out = String::with_capacity(stripped.len());
    let mut chars = stripped.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(brk);
            }
            '\n' | '\u{2028}' | '\u{2029}' => out.push(brk),
            '\t' => out.push('\t'),
            // Zl and Zp hold only U+2028 and U+2029 (Unicode 16), both mapped
            // above, so they need no rule of their own here.
            c if is_control(c) || is_format(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// General category Cc: C0, DEL and C1.
pub fn is_control(c: char) -> bool {
    c < ' ' || ('\u{7F}'..='\u{9F}').contains(&c)
}

/// General category Cf (the Unicode 15 table), written out by hand to avoid
/// a dependency for about twenty ranges. Two ranges are taken whole although
/// they contain unassigned code points (U+2065, U+E0000, U+E0002–U+E001F):
/// those are reserved for the same purpose and dropping them loses nothing.
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Removes ESC-introduced and 8-bit CSI sequences, leaving everything else.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ESC => skip_after_esc(&mut chars),
            C1_CSI => skip_csi(&mut chars),
            c => out.push(c),
        }
    }
    out
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Consumes what follows an ESC that has already been consumed.
///
/// A sequence that does not take the expected shape ends where the shape
/// breaks, and what follows is kept as ordinary text: a stray ESC in front of
/// a line break must not swallow the break. The loop (not recursion) handles
/// an ESC that cuts a string sequence short and starts a new one, so a body
/// of many nested introducers cannot exhaust the stack.
fn skip_after_esc(chars: &mut Chars) {
    loop {
        match chars.peek().copied() {
            Some('[') => {
                chars.next();
                skip_csi(chars);
                return;
            }
            Some(']') => {
                chars.next();
                if !skip_string(chars, true) {
                    return;
                }
            }
            Some('P' | 'X' | '^' | '_') => {
                chars.next();
                if !skip_string(chars, false) {
                    return;
                }
            }
            // nF sequences such as `ESC ( B`: intermediates, then one final.
            Some(' '..='/') => {
                while matches!(chars.peek(), Some(' '..='/')) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('0'..='~')) {
                    chars.next();
                }
                return;
            }
            // Every other two-character `ESC x`.
            Some('0'..='~') => {
                chars.next();
                return;
            }
            // A lone ESC: it alone is dropped.
            _ => return,
        }
    }
}

/// CSI body: parameter and intermediate bytes (0x20–0x3F, taken in any
/// order, as terminals do), then one final byte 0x40–0x7E.
fn skip_csi(chars: &mut Chars) {
    while matches!(chars.peek(), Some(' '..='?')) {
        chars.next();
    }
    if matches!(chars.peek(), Some('@'..='~')) {
        chars.next();
    }
}

/// OSC/DCS/SOS/PM/APC body, up to and including its terminator: `ESC \`,
/// the 8-bit ST, or (OSC only) BEL. An unterminated string runs to the end
/// of the text, as a terminal would swallow it. Returns true when an ESC
/// that is not part of `ESC \` ended the string: that ESC has been consumed
/// and starts a new sequence, again as in a terminal.
fn skip_string(chars: &mut Chars, bel_ends: bool) -> bool {
    while let Some(c) = chars.next() {
        match c {
            ESC => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                    return false;
                }
                return true;
            }
            C1_ST => return false,
            BEL if bel_ends => return false,
            _ => {}
        }
    }
    false
}

/// "4m", "3h12m", "2d5h" style age, from seconds. (<60 s: "45s"; minutes only: "4m"; hours: "3h12m" (minutes omitted if 0: "3h"); days: "2d5h" ("2d" if 0 h)).
///
/// Each form rounds down: 119 s is "1m", the unit below the second shown is
/// never printed.
pub fn format_age(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    if secs < MIN {
        format!("{secs}s")
    } else if secs < HOUR {
        format!("{}m", secs / MIN)
    } else if secs < DAY {
        two_units(secs / HOUR, 'h', secs % HOUR / MIN, 'm')
    } else {
        two_units(secs / DAY, 'd', secs % DAY / HOUR, 'h')
    }
}

fn two_units(big: u64, big_unit: char, small: u64, small_unit: char) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// The header fields of one message line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// ULID.
    pub id: &'a str,
    /// Sender name, checked again by `format_header` (see `safe_name`).
    pub from: &'a str,
    /// Sender label, "" for none, checked again (see `safe_label`).
    pub label: &'a str,
    /// Parent message id for a reply.
    pub re: Option<&'a str>,
    /// Some(age) only when the message is printed > 60 s after it was sent; caller decides.
    pub queued_secs: Option<u64>,
    /// A task's queue: the line says `task=<id> queue=<queue>` instead of `msg=<id>`.
    pub queue: Option<&'a str>,
}

/// `msg=<id>`, or `task=<id>` for a task.
fn id_field(id: &str, task: bool) -> String {
    format!("{}={}", if task { "task" } else { "msg" }, safe_id(id))
}

/// The bracketed header, with `truncated=N` when `truncated` is given.
///
/// Each field is checked again here (`safe_id`, `safe_name`, `safe_label`):
/// they come from the database, which a hostile peer of a shared mailbox
/// can write without our validation, so a field that breaks its rule is
/// shown escaped behind a `?` and can never close its quotes or forge a
/// header.
pub fn format_header(h: &Header, truncated: Option<usize>) -> String {
    let mut s = String::with_capacity(96);
    s.push_str("[inter-session ");
    s.push_str(&id_field(h.id, h.queue.is_some()));
    if let Some(q) = h.queue {
        s.push_str(" queue=");
        s.push_str(&safe_name(q));
    }
    s.push_str(" from=\"");
    s.push_str(&safe_name(h.from));
    s.push('"');
    if !h.label.is_empty() {
        s.push_str(" \"");
        s.push_str(&safe_label(h.label));
        s.push('"');
    }
    if let Some(re) = h.re {
        s.push_str(" re=");
        s.push_str(&safe_id(re));
    }
    if let Some(age) = h.queued_secs {
        s.push_str(" queued=");
        s.push_str(&format_age(age));
    }
    if let Some(n) = truncated {
        s.push_str(" truncated=");
        s.push_str(&n.to_string());
    }
    s.push(']');
    s
}

/// The second line of a truncated message (or task), pointing at the full text.
pub fn cont_line(id: &str, n: usize, task: bool) -> String {
    let field = id_field(id, task);
    let id = safe_id(id);
    let line =
        format!("[inter-session {field} cont] full text {n} chars: inter-session inbox read {id}");
    truncate_units(&line, MAX_LINE_UNITS).to_string()
}

/// The monitor's line(s) for one message: 1 line, or 2 lines when truncated. No trailing newlines.
///
/// An empty body (or one that sanitises to nothing) gives the header alone,
/// with no trailing space.
pub fn format_message(h: &Header, text: &str) -> Vec<String> {
    format_message_prefix(h, text, char_count(text))
}

/// Like `format_message` for a body of which only `prefix` was loaded (the
/// monitor does not read a 10 MiB body to print 500 units of it): when the
/// prefix is shorter than `total_chars` code points, the line is always cut.
pub fn format_message_prefix(h: &Header, prefix: &str, total_chars: usize) -> Vec<String> {
    let body = sanitize(prefix);
    let whole = char_count(prefix) >= total_chars;
    let mut line = format_header(h, None);
    if !body.is_empty() {
        line.push(' ');
        line.push_str(&body);
    }
    if whole && utf16_len(&line) <= MAX_LINE_UNITS {
        return vec![line];
    }

    let n = total_chars;
    let mut first = format_header(h, Some(n));
    first.push(' ');
    let room = MAX_LINE_UNITS.saturating_sub(utf16_len(&first));
    first.push_str(truncate_units(&body, room));
    // Only an absurd header (a stored label of 60 characters, each shown
    // escaped) could still be over; cutting it keeps the limit a hard
    // guarantee.
    let first = truncate_units(&first, MAX_LINE_UNITS).to_string();
    vec![first, cont_line(h.id, n, h.queue.is_some())]
}

/// The clock the `queued=` ages are measured on: now, moved forward by
/// `INTER_SESSION_CLOCK_OFFSET_S` seconds (for tests of `queued=`).
pub fn clock() -> chrono::DateTime<chrono::Utc> {
    let offset = std::env::var("INTER_SESSION_CLOCK_OFFSET_S")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    chrono::Utc::now() + chrono::Duration::seconds(offset)
}

/// The line(s) a stored message prints as at `now` (the monitor and `inbox
/// check` share them), with `queued=` when it waited over a minute. The text
/// may be only the loaded prefix; `m.chars` says how long the whole is.
pub fn message_lines(m: &Message, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let queued_secs = chrono::DateTime::parse_from_rfc3339(&m.created_at)
        .ok()
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds())
        .filter(|age| *age > 60)
        .and_then(|age| u64::try_from(age).ok());
    let header = Header {
        id: &m.id,
        from: &m.sender,
        label: &m.sender_label,
        re: m.in_reply_to.as_deref(),
        queued_secs,
        queue: m.queue.as_deref(),
    };
    format_message_prefix(&header, &m.text, usize::try_from(m.chars).unwrap_or(0))
}

/// How long ago a stored time was (`3m`, `2h5m`), or None when it is not one.
pub fn since(at: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(at).ok()?;
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    Some(format_age(u64::try_from(secs).unwrap_or(0)))
}

/// `s` as one shell word, whatever it holds: single quotes keep everything
/// literal, and a single quote itself is closed, escaped and reopened.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

mod safe;
pub use safe::*;

#[cfg(test)]
mod tests;
