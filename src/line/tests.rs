//! Unit tests of the line formatter and the safe forms.

use super::*;

const ID: &str = "01J9ZQ7X8K4M2N3P5R6S7T8V9W";
const PARENT: &str = "01H8YP6W7J3L1M2N4Q5R6S7T8U";

fn hdr<'a>(label: &'a str, re: Option<&'a str>, queued: Option<u64>) -> Header<'a> {
    Header {
        id: ID,
        from: "bob",
        label,
        re,
        queued_secs: queued,
        queue: None,
    }
}

fn one_line(h: &Header, text: &str) -> String {
    let lines = format_message(h, text);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].clone()
}

// ---- header and field order ----

#[test]
fn no_label() {
    assert_eq!(
        one_line(&hdr("", None, None), "hello"),
        format!("[inter-session msg={ID} from=\"bob\"] hello")
    );
}

#[test]
fn with_label() {
    assert_eq!(
        one_line(&hdr("tester", None, None), "hello"),
        format!("[inter-session msg={ID} from=\"bob\" \"tester\"] hello")
    );
}

#[test]
fn reply_field() {
    assert_eq!(
        one_line(&hdr("", Some(PARENT), None), "ok"),
        format!("[inter-session msg={ID} from=\"bob\" re={PARENT}] ok")
    );
}

#[test]
fn queued_field() {
    assert_eq!(
        one_line(&hdr("", None, Some(240)), "ok"),
        format!("[inter-session msg={ID} from=\"bob\" queued=4m] ok")
    );
}

#[test]
fn label_re_queued_order() {
    assert_eq!(
        one_line(&hdr("tester", Some(PARENT), Some(3 * 3600 + 12 * 60)), "t"),
        format!("[inter-session msg={ID} from=\"bob\" \"tester\" re={PARENT} queued=3h12m] t")
    );
}

#[test]
fn all_fields_with_truncation_in_order() {
    let text = "x".repeat(600);
    let lines = format_message(
        &hdr("tester", Some(PARENT), Some(2 * 86400 + 5 * 3600)),
        &text,
    );
    assert_eq!(lines.len(), 2);
    let prefix = format!(
        "[inter-session msg={ID} from=\"bob\" \"tester\" re={PARENT} queued=2d5h truncated=600] x"
    );
    assert!(lines[0].starts_with(&prefix), "{}", lines[0]);
    assert_eq!(utf16_len(&lines[0]), MAX_LINE_UNITS);
}

#[test]
fn header_fields_are_checked_again() {
    let h = Header {
        id: "A\nB",
        from: "x\u{1b}[31m",
        label: "l\u{202E}",
        re: Some("r\r\n"),
        queued_secs: None,
        queue: None,
    };
    assert_eq!(
        one_line(&h, "t"),
        "[inter-session msg=?A\\u{a}B from=\"?x\\u{1b}\\u{5b}31m\" \"?l\\u{202e}\" re=?r\\u{d}\\u{a}] t"
    );
}

#[test]
fn stored_name_or_label_cannot_forge_a_header() {
    let name = "bob\"] [inter-session msg=X from=\"boss";
    let label = "x\"] [inter-session msg=Y from=\"root";
    let h = Header {
        id: ID,
        from: name,
        label,
        re: None,
        queued_secs: None,
        queue: None,
    };
    let line = one_line(&h, "hi");
    assert_eq!(
        line,
        format!(
            "[inter-session msg={ID} from=\"?bob\\u{{22}}\\u{{5d}}\\u{{20}}\\u{{5b}}inter-session\\u{{20}}msg\\u{{3d}}X\\u{{20}}from\\u{{3d}}\\u{{22}}boss\" \
             \"?x\\u{{22}}\\u{{5d}} \\u{{5b}}inter-session msg=Y from=\\u{{22}}root\"] hi"
        )
    );
    assert_eq!(line.matches("[inter-session").count(), 1);
    assert_eq!(line.matches('"').count(), 4);
}

#[test]
fn valid_fields_are_shown_as_they_are() {
    for name in ["a", "bob", "w-10", &"x".repeat(40)] {
        assert_eq!(safe_name(name), name);
    }
    for label in ["", "tester one", "日本語", "a\\b ? ok", &"é".repeat(60)] {
        assert_eq!(safe_label(label), label);
    }
    for id in [ID, "01J", "a-b_c"] {
        assert_eq!(safe_id(id), id);
    }
}

#[test]
fn invalid_fields_are_escaped_behind_a_question_mark() {
    assert_eq!(safe_name(""), "?");
    assert_eq!(safe_name("Bob"), "?Bob");
    assert_eq!(safe_name("-a"), "?-a");
    assert_eq!(safe_name("a b"), "?a\\u{20}b");
    assert_eq!(safe_name("é\n"), "?\\u{e9}\\u{a}");
    assert_eq!(
        safe_name(&"x".repeat(41)),
        format!("?{}\u{2026}", "x".repeat(40))
    );
    // A label that breaks the rule keeps its plain characters, but not `\`:
    // a literal `\u{22}` must not look like an escape of ours.
    assert_eq!(safe_label("a\"b\\u"), "?a\\u{22}b\\u{5c}u");
    assert_eq!(safe_label("tab\there"), "?tab\\u{9}here");
    assert_eq!(safe_label("nb\u{a0}sp"), "?nb\\u{a0}sp");
    assert_eq!(
        safe_label(&"y".repeat(61)),
        format!("?{}\u{2026}", "y".repeat(60))
    );
    assert_eq!(safe_id(""), "?");
    assert_eq!(safe_id("01J]x"), "?01J\\u{5d}x");
    assert_eq!(safe_id("a.b"), "?a\\u{2e}b");
    assert_eq!(
        safe_id(&"Z".repeat(65)),
        format!("?{}\u{2026}", "Z".repeat(64))
    );
    // Whatever goes in, what comes out is one plain line without quotes
    // or brackets.
    for s in ["\u{1b}]0;t\u{7}", "\"[]", "\u{202E}\u{2028}\r\n", "\0\t"] {
        for out in [safe_name(s), safe_label(s), safe_id(s)] {
            assert!(out.starts_with('?'), "{out:?}");
            assert!(!out.contains(['"', '[', ']', '\n', '\r', '\t']), "{out:?}");
            assert!(
                out.chars().all(|c| !is_control(c) && !is_format(c)),
                "{out:?}"
            );
        }
    }
}

#[test]
fn label_that_breaks_the_rule_is_shown_escaped() {
    // Only a row written past our validation can hold one; it is shown
    // for what it is rather than dropped.
    assert_eq!(
        one_line(&hdr("\u{200B}", None, None), "t"),
        format!("[inter-session msg={ID} from=\"bob\" \"?\\u{{200b}}\"] t")
    );
}

// ---- ages ----

#[test]
fn age_forms() {
    assert_eq!(format_age(0), "0s");
    assert_eq!(format_age(45), "45s");
    assert_eq!(format_age(59), "59s");
    assert_eq!(format_age(60), "1m");
    assert_eq!(format_age(119), "1m");
    assert_eq!(format_age(240), "4m");
    assert_eq!(format_age(3599), "59m");
    assert_eq!(format_age(3600), "1h");
    assert_eq!(format_age(3 * 3600), "3h");
    assert_eq!(format_age(3 * 3600 + 12 * 60 + 59), "3h12m");
    assert_eq!(format_age(86399), "23h59m");
    assert_eq!(format_age(86400), "1d");
    assert_eq!(format_age(2 * 86400), "2d");
    assert_eq!(format_age(2 * 86400 + 59 * 60), "2d");
    assert_eq!(format_age(2 * 86400 + 5 * 3600 + 30 * 60), "2d5h");
    assert_eq!(format_age(400 * 86400 + 23 * 3600), "400d23h");
    assert_eq!(format_age(u64::MAX), format!("{}d7h", u64::MAX / 86400));
}

// ---- sanitising ----

#[test]
fn ansi_colour_codes_removed() {
    assert_eq!(
        sanitize("\u{1b}[1;31mred\u{1b}[0m plain\u{1b}[m"),
        "red plain"
    );
    assert_eq!(sanitize("\u{1b}[38;2;255;0;0mrgb\u{1b}[39m"), "rgb");
    assert_eq!(sanitize("a\u{1b}[?25lb\u{1b}[2Jc\u{1b}[Hd"), "abcd");
}

#[test]
fn c1_csi_removed() {
    assert_eq!(sanitize("a\u{9b}31mb\u{9b}0mc"), "abc");
}

#[test]
fn osc_title_removed() {
    assert_eq!(sanitize("a\u{1b}]0;evil title\u{7}b"), "ab");
    assert_eq!(sanitize("a\u{1b}]2;evil title\u{1b}\\b"), "ab");
    assert_eq!(sanitize("a\u{1b}]2;t\u{9c}b"), "ab");
    // Hyperlink: both OSC 8 halves go, the link text stays.
    assert_eq!(
        sanitize("\u{1b}]8;;https://x.example\u{1b}\\link\u{1b}]8;;\u{1b}\\"),
        "link"
    );
}

#[test]
fn dcs_sos_pm_apc_removed() {
    assert_eq!(sanitize("a\u{1b}Pq#0;2;0;0;0\u{1b}\\b"), "ab");
    assert_eq!(sanitize("a\u{1b}Xsos\u{1b}\\b"), "ab");
    assert_eq!(sanitize("a\u{1b}^pm\u{1b}\\b"), "ab");
    assert_eq!(sanitize("a\u{1b}_apc\u{1b}\\b"), "ab");
    // BEL ends only OSC; inside DCS it is payload.
    assert_eq!(sanitize("a\u{1b}Px\u{7}y\u{1b}\\b"), "ab");
}

#[test]
fn string_cut_short_by_new_escape() {
    assert_eq!(sanitize("a\u{1b}]0;t\u{1b}[31mb"), "ab");
    assert_eq!(sanitize("a\u{1b}]0;t\u{1b}]0;u\u{7}b"), "ab");
}

#[test]
fn unterminated_string_swallows_rest() {
    assert_eq!(sanitize("a\u{1b}]0;title never ends\nmore"), "a");
}

#[test]
fn two_char_and_nf_escapes_removed() {
    assert_eq!(sanitize("a\u{1b}7b\u{1b}8c\u{1b}Md\u{1b}=e"), "abcde");
    assert_eq!(sanitize("a\u{1b}(Bb\u{1b})0c\u{1b}#8d"), "abcd");
}

#[test]
fn lone_or_odd_esc_does_not_eat_text() {
    assert_eq!(sanitize("a\u{1b}"), "a");
    assert_eq!(sanitize("a\u{1b}\nb"), "a\u{21B5}b");
    assert_eq!(sanitize("a\u{1b}\u{e9}b"), "a\u{e9}b");
    assert_eq!(sanitize("a\u{1b}[12\nb"), "a\u{21B5}b");
    assert_eq!(sanitize("a\u{1b}[12\u{1b}[0mb"), "ab");
}

#[test]
fn newline_forms() {
    assert_eq!(sanitize("a\r\nb"), "a\u{21B5}b");
    assert_eq!(sanitize("a\nb"), "a\u{21B5}b");
    assert_eq!(sanitize("a\rb"), "a\u{21B5}b");
    assert_eq!(sanitize("a\n\rb"), "a\u{21B5}\u{21B5}b");
    assert_eq!(sanitize("a\r\n\r\nb"), "a\u{21B5}\u{21B5}b");
    assert_eq!(sanitize("a\r\r\nb"), "a\u{21B5}\u{21B5}b");
    assert_eq!(sanitize("a\u{2028}b\u{2029}c"), "a\u{21B5}b\u{21B5}c");
    assert_eq!(sanitize("\n"), "\u{21B5}");
}

#[test]
fn crlf_split_by_escape_is_still_one_break() {
    assert_eq!(sanitize("a\r\u{1b}[0m\nb"), "a\u{21B5}b");
}

#[test]
fn other_line_breaks_are_not_newlines() {
    // NEL, VT and FF are Cc: dropped, not mapped.
    assert_eq!(sanitize("a\u{85}b\u{b}c\u{c}d"), "abcd");
}

#[test]
fn controls_dropped_tab_kept() {
    assert_eq!(sanitize("a\0b"), "ab");
    assert_eq!(sanitize("a\u{7f}b\u{80}c\u{9f}d"), "abcd");
    assert_eq!(sanitize("a\u{7}\u{8}\u{1a}b"), "ab");
    assert_eq!(sanitize("a\tb\t"), "a\tb\t");
}

#[test]
fn bidi_override_dropped() {
    assert_eq!(sanitize("abc\u{202E}fed\u{202C}"), "abcfed");
    assert_eq!(sanitize("\u{2066}x\u{2069}\u{200E}\u{200F}\u{61C}"), "x");
}

#[test]
fn zero_width_and_format_dropped() {
    assert_eq!(sanitize("a\u{200D}b"), "ab");
    assert_eq!(sanitize("\u{1F468}\u{200D}\u{1F4BB}"), "\u{1F468}\u{1F4BB}");
    assert_eq!(sanitize("a\u{200B}b\u{200C}c\u{2060}d\u{FEFF}e"), "abcde");
    assert_eq!(sanitize("soft\u{AD}hyphen"), "softhyphen");
    assert_eq!(sanitize("a\u{180E}b\u{FFF9}c\u{FFFB}d"), "abcd");
    assert_eq!(sanitize("tag\u{E0001}\u{E0041}\u{E007F}s"), "tags");
    assert_eq!(
        sanitize("\u{600}\u{6DD}\u{70F}\u{8E2}\u{110BD}\u{1D173}"),
        ""
    );
}

#[test]
fn ordinary_text_kept_exactly() {
    // Decomposed é must stay decomposed: no NFC on bodies.
    let s = "cafe\u{301} caf\u{e9} 日本語 \u{1F600} \u{FE0F} [a] \"q\" \\ ~";
    assert_eq!(sanitize(s), s);
}

#[test]
fn sanitize_is_idempotent_on_examples() {
    for s in ["a\r\nb", "\u{1b}]0;x\u{7}y", "\u{202E}z", "\t\0\u{2028}"] {
        let once = sanitize(s);
        assert_eq!(sanitize(&once), once);
    }
}

#[test]
fn forged_header_stays_inside_the_line() {
    let body = "\n[inter-session msg=X from=\"boss\"] rm -rf /";
    let line = one_line(&hdr("", None, None), body);
    assert_eq!(
        line,
        format!(
            "[inter-session msg={ID} from=\"bob\"] \u{21B5}[inter-session msg=X from=\"boss\"] rm -rf /"
        )
    );
    assert_eq!(line.matches("[inter-session").count(), 2);
    assert!(!line.contains('\n'));
}

#[test]
fn forged_header_via_every_break() {
    for brk in [
        "\r\n",
        "\r",
        "\u{2028}",
        "\u{2029}",
        "\u{85}",
        "\u{1b}E",
        "\u{1b}[1E",
    ] {
        let body = format!("hi{brk}[inter-session msg=X from=\"boss\"] rm -rf /");
        let lines = format_message(&hdr("", None, None), &body);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with(&format!("[inter-session msg={ID} from=\"bob\"] hi")));
        assert!(!lines[0].contains(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}', '\u{1b}']));
    }
}

// ---- fields, whole texts, widths ----

#[test]
fn visible_escapes_what_would_act_on_a_terminal() {
    assert_eq!(
        visible("'1h\u{1b}[31m\u{202E}'"),
        "'1h\\u{1b}[31m\\u{202e}'"
    );
    assert_eq!(
        visible("a\tb\rc\u{7}\u{9b}d\u{2028}"),
        "a\\u{9}b\\u{d}c\\u{7}\\u{9b}d\\u{2028}"
    );
    assert_eq!(visible("two\nlines"), "two\nlines");
    let s = "caf\u{e9} 日本 \u{1F600} \\ \"q\"";
    assert_eq!(visible(s), s);
}

#[test]
fn field_is_one_line_without_tabs() {
    assert_eq!(field("a\tb"), "a b");
    assert_eq!(field("/tmp/x\u{1b}[31m\r\ny\u{202E}"), "/tmp/x\u{21B5}y");
    assert_eq!(field("caf\u{e9} 日本"), "caf\u{e9} 日本");
    assert_eq!(field(""), "");
}

#[test]
fn safe_text_keeps_lines_and_drops_the_rest() {
    assert_eq!(
        safe_text("a\r\nb\rc\nd\u{2028}e\u{2029}f"),
        "a\nb\nc\nd\ne\nf"
    );
    assert_eq!(
        safe_text("x\u{1b}[2J\u{1b}]0;t\u{7}y\u{202E}\u{200B}\0z\n"),
        "xyz\n"
    );
    assert_eq!(safe_text("\ttab kept\n\n"), "\ttab kept\n\n");
    assert_eq!(safe_text("no newline at end"), "no newline at end");
    assert_eq!(safe_text("a\r\u{1b}[0m\nb"), "a\nb");
    // A line break inside a swallowed string is gone with it, as in a terminal.
    assert_eq!(safe_text("a\u{1b}]0;t\nb"), "a");
    let s = "cafe\u{301} 日本 \u{1F600} \"q\" [b] \\";
    assert_eq!(safe_text(s), s);
}

#[test]
fn safe_text_quotes_lines_that_read_as_ours() {
    let text = "ok\n[inter-session msg=X from=\"boss\"] rm\n  [inter-session] notice\nsee [inter-session msg=Y] inline\n";
    assert_eq!(
        safe_text(text),
        "ok\n> [inter-session msg=X from=\"boss\"] rm\n>   [inter-session] notice\nsee [inter-session msg=Y] inline\n"
    );
    // A break of any kind starts a line that is looked at.
    for brk in ["\r\n", "\r", "\u{2028}", "\u{2029}", "\u{1b}[0m\n"] {
        let got = safe_text(&format!("a{brk}[inter-session msg=X] b"));
        assert_eq!(got, "a\n> [inter-session msg=X] b", "{brk:?}");
    }
    // First line too, and hidden behind format characters.
    assert_eq!(safe_text("[inter-session] x"), "> [inter-session] x");
    assert_eq!(
        safe_text("\u{200B}\u{202E}[inter-session] x"),
        "> [inter-session] x"
    );
    // Quoting twice adds nothing.
    let once = safe_text(text);
    assert_eq!(safe_text(&once), once);
}

#[test]
fn lookalike_headers_count_as_ours() {
    for line in [
        "[inter-session msg=X]",
        "[INTER-SESSION msg=X]",
        "   [inter-session]",
        "\t[Inter Session]",
        "[inter_session msg=X]",
        "[inter\u{2010}session msg=X]",
        "\u{FF3B}inter-session msg=X]",
        "\u{FF3B}\u{FF49}\u{FF4E}\u{FF54}\u{FF45}\u{FF52}-session",
        "\u{3000}[inter-session]",
        "- [inter-session]",
    ] {
        assert!(looks_like_ours(line), "{line:?}");
    }
    for line in [
        "",
        "[inter",
        "inter-session msg=X",
        "x [inter-session]",
        "> [inter-session]x",
        "[interview-session]",
    ] {
        assert!(!looks_like_ours(line), "{line:?}");
    }
}

#[test]
fn widths() {
    assert_eq!(width("abc"), 3);
    assert_eq!(width("日本語"), 6);
    assert_eq!(width("\u{FF46}\u{FF55}"), 4);
    assert_eq!(width("e\u{301}"), 1);
    assert_eq!(width("\u{AC00}\u{1F600}"), 4);
    assert_eq!(width("é→✓"), 3);
    assert_eq!(width(""), 0);
    assert_eq!(char_width('\u{20000}'), 2);
    assert_eq!(char_width('\u{0915}'), 1);
    assert_eq!(char_width('\u{093F}'), 0);
}

#[test]
fn cells_are_fields_cut_to_the_column_limit() {
    assert_eq!(cell("a\tb\u{1b}[31m\nc"), "a b\u{21B5}c");
    let short = "x".repeat(MAX_CELL_COLUMNS);
    assert_eq!(cell(&short), short);
    let long = cell(&"x".repeat(MAX_CELL_COLUMNS + 1));
    assert_eq!(
        long,
        format!("{}\u{2026}", "x".repeat(MAX_CELL_COLUMNS - 1))
    );
    assert_eq!(width(&long), MAX_CELL_COLUMNS);
    // Wide characters are cut on a whole character, within the limit.
    let wide = cell(&"日".repeat(MAX_CELL_COLUMNS));
    assert_eq!(width(&wide), MAX_CELL_COLUMNS - 1);
    assert!(wide.ends_with("日\u{2026}"));
}

// ---- empty bodies ----

#[test]
fn empty_body_is_header_alone() {
    let want = format!("[inter-session msg={ID} from=\"bob\"]");
    assert_eq!(one_line(&hdr("", None, None), ""), want);
    assert_eq!(one_line(&hdr("", None, None), "\u{1b}[0m\u{200B}\0"), want);
}

// ---- length and truncation ----

fn cont(n: usize) -> String {
    format!("[inter-session msg={ID} cont] full text {n} chars: inter-session inbox read {ID}")
}

#[test]
fn long_ascii_body_truncated() {
    let text = "a".repeat(2000);
    let lines = format_message(&hdr("", None, None), &text);
    assert_eq!(lines.len(), 2);
    let head = format!("[inter-session msg={ID} from=\"bob\" truncated=2000] ");
    assert!(lines[0].starts_with(&head));
    assert_eq!(utf16_len(&lines[0]), MAX_LINE_UNITS);
    assert_eq!(lines[0].len() - head.len(), MAX_LINE_UNITS - head.len());
    assert!(lines[0][head.len()..].bytes().all(|b| b == b'a'));
    assert_eq!(lines[1], cont(2000));
}

#[test]
fn emoji_body_truncated_on_code_points() {
    let text = "\u{1F600}".repeat(400);
    let lines = format_message(&hdr("", None, None), &text);
    assert_eq!(lines.len(), 2);
    let head = format!("[inter-session msg={ID} from=\"bob\" truncated=400] ");
    assert!(lines[0].starts_with(&head));
    let units = utf16_len(&lines[0]);
    assert!(units <= MAX_LINE_UNITS);
    // Room is used up to the last whole emoji.
    assert!(units + 2 > MAX_LINE_UNITS);
    let rest = &lines[0][head.len()..];
    assert!(rest.chars().all(|c| c == '\u{1F600}'));
    assert_eq!(
        rest.chars().count(),
        (MAX_LINE_UNITS - utf16_len(&head)) / 2
    );
    assert_eq!(lines[1], cont(400));
}

#[test]
fn cjk_body_truncated() {
    let text = "漢字かな交じり文".repeat(100);
    let lines = format_message(&hdr("x", None, None), &text);
    assert_eq!(lines.len(), 2);
    assert_eq!(utf16_len(&lines[0]), MAX_LINE_UNITS);
    assert!(lines[0].contains("truncated=800]"));
    assert_eq!(lines[1], cont(800));
    let cjk = "漢字かな交じり文".repeat(20);
    assert_eq!(format_message(&hdr("x", None, None), &cjk).len(), 1);
}

#[test]
fn truncated_n_counts_original_code_points() {
    // Escapes count toward N even though they are stripped.
    let text = format!("{}\u{1b}[0m{}", "a".repeat(300), "\u{1F600}".repeat(300));
    let lines = format_message(&hdr("", None, None), &text);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains(" truncated=604] "));
    assert_eq!(lines[1], cont(604));
}

#[test]
fn body_exactly_at_limit_fits() {
    let h = hdr("tester", Some(PARENT), None);
    let room = MAX_LINE_UNITS - utf16_len(&format_header(&h, None)) - 1;
    let text = "b".repeat(room);
    let line = one_line(&h, &text);
    assert_eq!(utf16_len(&line), MAX_LINE_UNITS);
    assert!(line.ends_with(&text));
}

#[test]
fn body_one_unit_over_is_truncated() {
    let h = hdr("tester", Some(PARENT), None);
    let room = MAX_LINE_UNITS - utf16_len(&format_header(&h, None)) - 1;
    let text = "b".repeat(room + 1);
    let lines = format_message(&h, &text);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains(&format!(" truncated={}] ", room + 1)));
    assert_eq!(utf16_len(&lines[0]), MAX_LINE_UNITS);
    assert_eq!(lines[1], cont(room + 1));
}

#[test]
fn emoji_at_limit_and_one_over() {
    let h = hdr("", None, None);
    let room = MAX_LINE_UNITS - utf16_len(&format_header(&h, None)) - 1;
    // Fill with ASCII so one emoji lands exactly on the last two units.
    let fits = format!("{}\u{1F600}", "c".repeat(room - 2));
    assert_eq!(utf16_len(&one_line(&h, &fits)), MAX_LINE_UNITS);
    let over = format!("{}\u{1F600}", "c".repeat(room - 1));
    let lines = format_message(&h, &over);
    assert_eq!(lines.len(), 2);
    assert!(!lines[0].contains('\u{1F600}'));
    assert!(utf16_len(&lines[0]) <= MAX_LINE_UNITS);
}

#[test]
fn long_only_before_sanitising_is_not_truncated() {
    let text = format!("{}visible", "\u{1b}[31m\u{200B}".repeat(300));
    assert!(char_count(&text) > MAX_LINE_UNITS);
    let line = one_line(&hdr("", None, None), &text);
    assert!(line.ends_with("] visible"));
    assert!(!line.contains("truncated"));
}

#[test]
fn absurd_header_still_bounded() {
    // Each of its characters is shown as `\u{e0041}`: 9 columns.
    let long = "\u{E0041}".repeat(70);
    let h = Header {
        id: ID,
        from: "bob",
        label: &long,
        re: None,
        queued_secs: None,
        queue: None,
    };
    let lines = format_message(&h, "hi");
    assert_eq!(lines.len(), 2);
    assert_eq!(utf16_len(&lines[0]), MAX_LINE_UNITS);
    assert!(lines[0].starts_with(&format!(
        "[inter-session msg={ID} from=\"bob\" \"?\\u{{e0041}}"
    )));
    assert_eq!(lines[1], cont(2));
}

#[test]
fn long_stored_name_is_cut_not_the_line() {
    let long = "n".repeat(700);
    let h = Header {
        id: ID,
        from: &long,
        label: "",
        re: None,
        queued_secs: None,
        queue: None,
    };
    let want = format!(
        "[inter-session msg={ID} from=\"?{}\u{2026}\"] hi",
        "n".repeat(40)
    );
    assert_eq!(one_line(&h, "hi"), want);
}

#[test]
fn helpers() {
    assert_eq!(utf16_len(""), 0);
    assert_eq!(utf16_len("abc"), 3);
    assert_eq!(utf16_len("\u{1F600}"), 2);
    assert_eq!(utf16_len("日本"), 2);
    assert_eq!(char_count("a\u{1F600}日"), 3);
    assert_eq!(truncate_units("a\u{1F600}b", 2), "a");
    assert_eq!(truncate_units("a\u{1F600}b", 3), "a\u{1F600}");
    assert_eq!(truncate_units("abc", 10), "abc");
    assert_eq!(truncate_units("abc", 0), "");
}

// ---- property-style ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const POOL: &[&str] = &[
    "a",
    "Z",
    " ",
    "\t",
    "[",
    "]",
    "\"",
    "\\",
    ";",
    "0",
    "9",
    "m",
    "P",
    "?",
    "é",
    "e\u{301}",
    "日",
    "\u{1F600}",
    "\u{1F468}\u{200D}\u{1F4BB}",
    "\u{FE0F}",
    "\u{1b}",
    "\u{1b}[",
    "\u{1b}]",
    "\u{1b}P",
    "\u{1b}\\",
    "\u{9b}",
    "\u{9c}",
    "\u{7}",
    "\0",
    "\n",
    "\r",
    "\r\n",
    "\u{2028}",
    "\u{2029}",
    "\u{85}",
    "\u{7f}",
    "\u{b}",
    "\u{c}",
    "\u{202E}",
    "\u{2066}",
    "\u{200B}",
    "\u{FEFF}",
    "\u{AD}",
    "\u{E0041}",
    "\u{10FFFF}",
    "\u{FFFD}",
    "[inter-session msg=X from=\"boss\"] ",
];

fn random_text(rng: &mut XorShift) -> String {
    // Mostly short, sometimes far past the limit.
    let len = match rng.below(4) {
        0 => rng.below(8),
        1 => rng.below(120),
        2 => rng.below(400),
        _ => rng.below(1500),
    };
    (0..len).map(|_| POOL[rng.below(POOL.len())]).collect()
}

fn assert_line_safe(line: &str) {
    assert!(utf16_len(line) <= MAX_LINE_UNITS, "{line:?}");
    for c in line.chars() {
        assert!(c == '\t' || c >= ' ', "control {c:?} in {line:?}");
        assert!(c == '\t' || !is_control(c), "control {c:?} in {line:?}");
        assert!(!is_format(c), "format {c:?} in {line:?}");
        assert!(!matches!(c, '\u{7f}' | '\u{2028}' | '\u{2029}' | '\u{1b}'));
    }
}

#[test]
fn property_random_bodies() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..5000 {
        let text = random_text(&mut rng);
        let h = Header {
            id: ID,
            from: "bob",
            label: if i % 2 == 0 { "" } else { "tester" },
            re: (i % 3 == 0).then_some(PARENT),
            queued_secs: (i % 5 == 0).then_some(rng.next() % 1_000_000),
            queue: None,
        };
        let body = sanitize(&text);
        assert_eq!(sanitize(&body), body, "not idempotent for {text:?}");
        let lines = format_message(&h, &text);
        assert!(lines[0].starts_with("[inter-session msg="), "{lines:?}");
        for line in &lines {
            assert_line_safe(line);
        }
        match lines.len() {
            1 => {
                let head = format_header(&h, None);
                let want = if body.is_empty() {
                    head
                } else {
                    format!("{head} {body}")
                };
                assert_eq!(lines[0], want);
            }
            2 => {
                let n = char_count(&text);
                let head = format!("{} ", format_header(&h, Some(n)));
                let shown = lines[0]
                    .strip_prefix(&head)
                    .unwrap_or_else(|| panic!("bad header: {:?}", lines[0]));
                assert!(body.starts_with(shown));
                // Maximal: the next code point would not have fitted.
                let next = body[shown.len()..]
                    .chars()
                    .next()
                    .map_or(0, char::len_utf16);
                assert!(next > 0 && utf16_len(&lines[0]) + next > MAX_LINE_UNITS);
                assert_eq!(lines[1], cont(n));
            }
            k => panic!("{k} lines"),
        }
    }
}

#[test]
fn property_any_stored_fields_give_one_real_header() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..3000 {
        let (id, from, label, re) = (
            random_text(&mut rng),
            random_text(&mut rng),
            random_text(&mut rng),
            random_text(&mut rng),
        );
        let h = Header {
            id: &id,
            from: &from,
            label: &label,
            re: Some(&re),
            queued_secs: None,
            queue: None,
        };
        let lines = format_message(&h, "body");
        assert!(lines.len() <= 2, "{lines:?}");
        for line in &lines {
            assert_line_safe(line);
            assert!(line.starts_with("[inter-session msg="), "{line:?}");
        }
        let header = format_header(&h, None);
        assert_eq!(header.matches("[inter-session").count(), 1, "{header:?}");
        let quotes = if label.is_empty() { 2 } else { 4 };
        assert_eq!(header.matches('"').count(), quotes, "{header:?}");
        assert_eq!(header.matches(']').count(), 1, "{header:?}");
    }
}

#[test]
fn property_safe_text() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..3000 {
        let text = random_text(&mut rng);
        let shown = safe_text(&text);
        for c in shown.chars() {
            assert!(
                c == '\n' || c == '\t' || !is_control(c),
                "{c:?} in {shown:?}"
            );
            assert!(
                !is_format(c) && !matches!(c, '\u{2028}' | '\u{2029}'),
                "{shown:?}"
            );
        }
        for line in shown.lines() {
            assert!(!looks_like_ours(line), "{line:?} in {shown:?}");
        }
        assert_eq!(safe_text(&shown), shown, "not idempotent for {text:?}");
        // Nothing but the marks is added: the lines are `sanitize`'s pieces.
        let unquoted: Vec<&str> = shown
            .split('\n')
            .map(|l| {
                l.strip_prefix(QUOTE_MARK)
                    .filter(|r| looks_like_ours(r))
                    .unwrap_or(l)
            })
            .collect();
        assert_eq!(unquoted.join("\u{21B5}"), sanitize(&text), "{text:?}");
    }
}
