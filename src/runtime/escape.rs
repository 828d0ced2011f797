//! Text from the wire (addresses, decoded subjects, whatever answers on a port) made safe to print
//! on a terminal or in a log line: control characters (ESC drives the terminal, CR/LF start a
//! forged line) and invisible or direction-changing characters are written as escapes, so what an
//! operator reads is what was sent. The JSON log needs none of this (serde escapes strings); the
//! human log, `archive search` and `handoff status` print through here.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character that is not plainly printable escaped the way Rust writes it (`\n`,
/// `\r`, `\t`, `\u{1b}`, `\u{202e}`), and `\` doubled so an escape cannot be forged. Printable
/// Unicode (accents, CJK) stays as it is. For tab-separated output, where a tab is escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    if s.chars().enumerate().all(|(i, c)| plain(c, i == 0)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s, false);
    Cow::Owned(out)
}

/// `s` as one `key=value` value of a log line: as it is when it is a plain word, otherwise in
/// double quotes, escaped as by [`escape`] with `"` escaped too. So a value with a space or `=`
/// (a quoted local part such as `"a outcome=accepted"@corp.example`) cannot forge a field.
pub fn field(s: &str) -> Cow<'_, str> {
    let word = !s.is_empty()
        && s.chars()
            .enumerate()
            .all(|(i, c)| plain(c, i == 0) && !c.is_whitespace() && !matches!(c, '=' | '"'));
    if word {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 10);
    out.push('"');
    push_escaped(&mut out, s, true);
    out.push('"');
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, s: &str, quoted: bool) {
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if quoted => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if plain(c, i == 0) => out.push(c),
            c => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
}

/// Whether `c` prints as itself: not a control, format (bidi, zero-width) or separator
/// character. A combining mark is plain after another character (it joins it), not first.
fn plain(c: char, first: bool) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c) && c != '\\';
    }
    if c.escape_debug().len() == 1 {
        return true;
    }
    // `char::escape_debug` escapes grapheme extenders, `str::escape_debug` only at the start.
    !first && ['a', c].iter().collect::<String>().escape_debug().count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        for s in [
            "a@corp.example",
            "Grüße aus Köln",
            "中文主题",
            "e\u{301}t\u{301}e\u{301}",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
        assert!(matches!(field("a+tag@corp.example"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_invisibles_are_escaped() {
        let cases = [
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
            ),
            ("a\r\nb\tc", "a\\r\\nb\\tc"),
            ("x\\u{1b}", "x\\\\u{1b}"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("\u{301}first", "\\u{301}first"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}c1\u{9b}", "del\\u{7f}c1\\u{9b}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn a_field_with_space_equals_or_quote_is_quoted() {
        let cases = [
            ("", "\"\""),
            ("a b@x", "\"a b@x\""),
            ("a=b@x", "\"a=b@x\""),
            ("\"q\"@x", "\"\\\"q\\\"@x\""),
            (
                "\"a outcome=accepted\"@x",
                "\"\\\"a outcome=accepted\\\"@x\"",
            ),
            ("a\r\nINFO forged@x", "\"a\\r\\nINFO forged@x\""),
            ("esc\u{1b}[31m@x", "\"esc\\u{1b}[31m@x\""),
        ];
        for (raw, want) in cases {
            assert_eq!(field(raw), want, "{raw:?}");
        }
    }
}
