//! IMAP4rev1 (RFC 3501) as far as the import and the restore speak it, with no I/O: mailbox
//! names in modified UTF-7 (section 5.1.3), quoting, the literals a line announces, and the
//! untagged responses read into tokens and then into what they say (LIST, FETCH, the response
//! codes of SELECT/EXAMINE and APPEND).
//!
//! The connection ([`super::client`]) reads lines and literals off the wire; a response comes
//! here as its text pieces and its literals (by index), so a 50 MiB message body never has to
//! be in memory to be parsed.

use jiff::Timestamp;

/// Longest response line (between literals) we accept: Dovecot's own lines are far shorter
/// (its `imap_max_line_length` is 64 KiB for commands), and a line is held in memory.
pub const MAX_LINE: usize = 64 * 1024;

/// What is wrong with a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("unterminated quoted string in `{0}`")]
    Unterminated(String),
    #[error("unexpected `{0}`")]
    Unexpected(String),
}

/// One token of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An atom or number, as written (`FETCH`, `12`, `BODY[]`, `\HasChildren`, `NIL`).
    Atom(String),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    Open,
    Close,
    /// The response's literal number N (0-based).
    Literal(usize),
}

/// Tokenizes one text piece of a response (the text between literals), appending to `out`.
/// A `{N}` at the end of the piece is not a token: the literal that follows it is.
pub fn tokenize(text: &[u8], out: &mut Vec<Token>) -> Result<(), ProtoError> {
    let text = strip_literal_marker(text);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b' ' | b'\r' | b'\n' => i += 1,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match text.get(i) {
                        None => {
                            return Err(ProtoError::Unterminated(
                                String::from_utf8_lossy(text).into_owned(),
                            ));
                        }
                        Some(b'\\') if i + 1 < text.len() => {
                            s.push(text[i + 1]);
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Quoted(s));
            }
            _ => {
                // An atom; brackets hold spaces and parentheses (`BODY[HEADER.FIELDS (DATE)]`).
                let start = i;
                let mut depth = 0usize;
                while i < text.len() {
                    match text[i] {
                        b'[' => depth += 1,
                        b']' => depth = depth.saturating_sub(1),
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    i += 1;
                }
                out.push(Token::Atom(
                    String::from_utf8_lossy(&text[start..i]).into_owned(),
                ));
            }
        }
    }
    Ok(())
}

/// The size of the literal a line announces at its end (`{123}` or the LITERAL+ `{123+}`,
/// RFC 7888), before its CRLF.
pub fn literal_len(line: &[u8]) -> Option<u64> {
    let line = trim_crlf(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn strip_literal_marker(text: &[u8]) -> &[u8] {
    let t = trim_crlf(text);
    match literal_len(t) {
        Some(_) => {
            // literal_len found a `{`: cut there.
            let open = t.iter().rposition(|&b| b == b'{').unwrap_or(t.len());
            &t[..open]
        }
        None => t,
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A tagged response's outcome: `OK`, `NO`, `BAD`, and the text after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub ok: bool,
    pub status: String,
    pub text: String,
}

/// Reads a tagged completion line (`A1 OK [..] text`) for `tag`; `None` when the line is not
/// one (an untagged or continuation response).
pub fn tagged(line: &[u8], tag: &str) -> Option<Tagged> {
    let line = String::from_utf8_lossy(trim_crlf(line));
    let rest = line.strip_prefix(tag)?.strip_prefix(' ')?;
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = status.to_ascii_uppercase();
    Some(Tagged {
        ok: status == "OK",
        status,
        text: text.to_string(),
    })
}

/// The number in a response code such as `[UIDVALIDITY 3857529045]` or `[UIDNEXT 12]` in a
/// status line's text.
pub fn code_number(line: &[u8], code: &str) -> Option<u64> {
    let line = String::from_utf8_lossy(line);
    let upper = line.to_ascii_uppercase();
    let at = upper.find(&format!("[{code} "))? + code.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `* N EXISTS`: N.
pub fn exists(tokens: &[Token]) -> Option<u32> {
    match tokens {
        [Token::Atom(star), Token::Atom(n), Token::Atom(word)]
            if star == "*" && word.eq_ignore_ascii_case("EXISTS") =>
        {
            n.parse().ok()
        }
        _ => None,
    }
}

/// A mailbox as LIST names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name on the wire (modified UTF-7), to select it by.
    pub raw: String,
    /// The hierarchy delimiter, if any.
    pub delimiter: Option<char>,
    /// `\Noselect` or `\NonExistent`: a level of the hierarchy that holds no messages.
    pub noselect: bool,
}

/// `* LIST (flags) "delim" name`, the name quoted, an atom or a literal (`literals` holds the
/// response's literals, in order).
pub fn list(tokens: &[Token], literals: &[Vec<u8>]) -> Option<Listed> {
    let [Token::Atom(star), Token::Atom(word), Token::Open, rest @ ..] = tokens else {
        return None;
    };
    if star != "*" || !word.eq_ignore_ascii_case("LIST") {
        return None;
    }
    let close = rest.iter().position(|t| *t == Token::Close)?;
    let noselect = rest[..close].iter().any(|t| {
        matches!(t, Token::Atom(a) if a.eq_ignore_ascii_case("\\Noselect")
            || a.eq_ignore_ascii_case("\\NonExistent"))
    });
    let delimiter = match rest.get(close + 1)? {
        Token::Quoted(d) => d.first().map(|&b| b as char),
        Token::Atom(nil) if nil.eq_ignore_ascii_case("NIL") => None,
        _ => return None,
    };
    let name = match rest.get(close + 2)? {
        Token::Quoted(n) => n.clone(),
        Token::Atom(a) => a.clone().into_bytes(),
        Token::Literal(i) => literals.get(*i)?.clone(),
        _ => return None,
    };
    Some(Listed {
        raw: String::from_utf8(name).ok()?,
        delimiter,
        noselect,
    })
}

/// What a FETCH response says of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    pub seq: u32,
    pub uid: Option<u32>,
    pub internal_date: Option<Timestamp>,
    /// The literal holding `BODY[]`.
    pub body: Option<usize>,
}

/// `* N FETCH (UID u INTERNALDATE "…" BODY[] {n} …)`; `None` for any other response.
pub fn fetch(tokens: &[Token]) -> Option<Fetched> {
    let [
        Token::Atom(star),
        Token::Atom(seq),
        Token::Atom(word),
        Token::Open,
        rest @ ..,
    ] = tokens
    else {
        return None;
    };
    if star != "*" || !word.eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let mut f = Fetched {
        seq: seq.parse().ok()?,
        ..Fetched::default()
    };
    let mut i = 0;
    while i + 1 < rest.len() {
        let Token::Atom(name) = &rest[i] else {
            i += 1;
            continue;
        };
        let name = name.to_ascii_uppercase();
        match (name.as_str(), &rest[i + 1]) {
            ("UID", Token::Atom(n)) => f.uid = n.parse().ok(),
            ("INTERNALDATE", Token::Quoted(d)) => {
                f.internal_date = internal_date(&String::from_utf8_lossy(d));
            }
            ("BODY[]" | "RFC822", Token::Literal(l)) => f.body = Some(*l),
            (_, Token::Open) => {
                // A parenthesized value (FLAGS): skip to its end.
                let mut depth = 0usize;
                i += 1;
                while i < rest.len() {
                    match rest[i] {
                        Token::Open => depth += 1,
                        Token::Close => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        i += 2;
    }
    Some(f)
}

/// An INTERNALDATE (`date-time`, RFC 3501 section 9: `" 5-Dec-2026 21:12:18 +0000"`).
pub fn internal_date(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    jiff::fmt::strtime::parse("%d-%b-%Y %H:%M:%S %z", s)
        .ok()?
        .to_timestamp()
        .ok()
}

/// A timestamp as an INTERNALDATE, for APPEND.
pub fn format_internal_date(t: Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    // A constant format of a valid timestamp: it formats.
    jiff::fmt::strtime::format("%d-%b-%Y %H:%M:%S +0000", &z).unwrap_or_default()
}

/// A string as an IMAP quoted string; `None` when it cannot be one (CR, LF, NUL or 8-bit:
/// those go as literals).
pub fn quote(s: &str) -> Option<String> {
    if s.bytes()
        .any(|b| matches!(b, b'\r' | b'\n' | 0) || b >= 0x80)
    {
        return None;
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Some(q)
}

/// Decodes a mailbox name from modified UTF-7 (RFC 3501 section 5.1.3: `&`…`-` holds UTF-16
/// in a base64 with `,` for `/`; `&-` is `&`). `None` for a name that is not valid.
pub fn utf7_decode(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find('-')?;
        let b64 = &after[..end];
        if b64.is_empty() {
            out.push('&');
        } else {
            let bytes = decode_b64(b64)?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Encodes a mailbox name in modified UTF-7.
pub fn utf7_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&encode_b64(&bytes));
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            match c {
                '&' => out.push_str("&-"),
                c => out.push(c),
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn encode_b64(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(B64[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B64[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf7_both_ways() {
        for (raw, name) in [
            ("INBOX", "INBOX"),
            ("Entw&APw-rfe", "Entwürfe"),
            ("&ZeVnLIqe-", "日本語"),
            ("Tom &- Jerry", "Tom & Jerry"),
            ("Archiv/2024/&AMQ-rger", "Archiv/2024/Ärger"),
            ("&2D3eAA-", "😀"),
        ] {
            assert_eq!(utf7_decode(raw).as_deref(), Some(name), "{raw}");
            assert_eq!(utf7_encode(name), raw, "{name}");
        }
        assert_eq!(utf7_decode("bad&AMQ"), None);
        assert_eq!(utf7_decode("bad&A*Q-"), None);
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {12}\r\n"), Some(12));
        assert_eq!(literal_len(b"x {0}"), Some(0));
        assert_eq!(literal_len(b"x {12+}\r\n"), Some(12));
        assert_eq!(literal_len(b"x {}\r\n"), None);
        assert_eq!(literal_len(b"x {1a}\r\n"), None);
        assert_eq!(literal_len(b"* OK done\r\n"), None);
    }

    fn tokens(pieces: &[&[u8]]) -> Vec<Token> {
        let mut out = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            tokenize(p, &mut out).unwrap();
            if i + 1 < pieces.len() {
                out.push(Token::Literal(i));
            }
        }
        out
    }

    #[test]
    fn fetch_responses() {
        let t = tokens(&[
            b"* 7 FETCH (UID 42 FLAGS (\\Seen (x)) INTERNALDATE \" 5-Dec-2026 21:12:18 +0100\" RFC822.SIZE 12 BODY[] {12}\r\n",
            b")\r\n",
        ]);
        let f = fetch(&t).unwrap();
        assert_eq!(f.seq, 7);
        assert_eq!(f.uid, Some(42));
        assert_eq!(f.body, Some(0));
        assert_eq!(f.internal_date.unwrap().to_string(), "2026-12-05T20:12:18Z");
        assert_eq!(fetch(&tokens(&[b"* 3 EXISTS\r\n"])), None);
        assert_eq!(exists(&tokens(&[b"* 3 EXISTS\r\n"])), Some(3));
    }

    #[test]
    fn list_responses() {
        let t = tokens(&[b"* LIST (\\HasNoChildren) \"/\" \"Entw&APw-rfe\"\r\n"]);
        let l = list(&t, &[]).unwrap();
        assert_eq!(l.raw, "Entw&APw-rfe");
        assert_eq!(l.delimiter, Some('/'));
        assert!(!l.noselect);
        let t = tokens(&[b"* LIST (\\Noselect) \".\" {5}\r\n", b"\r\n"]);
        let l = list(&t, &[b"A\"B c".to_vec()]).unwrap();
        assert_eq!(l.raw, "A\"B c");
        assert!(l.noselect);
        let t = tokens(&[b"* LIST () NIL INBOX\r\n"]);
        assert_eq!(list(&t, &[]).unwrap().delimiter, None);
    }

    #[test]
    fn tagged_lines_and_codes() {
        let t = tagged(
            b"a3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
            "a3",
        )
        .unwrap();
        assert!(!t.ok);
        assert_eq!(t.text, "[AUTHENTICATIONFAILED] Authentication failed.");
        assert_eq!(tagged(b"a31 OK x", "a3"), None);
        assert_eq!(
            code_number(
                b"* OK [UIDVALIDITY 1796505138] UIDs valid\r\n",
                "UIDVALIDITY"
            ),
            Some(1796505138)
        );
        assert_eq!(
            code_number(b"a OK [APPENDUID 17 9] done", "APPENDUID"),
            Some(17)
        );
    }

    #[test]
    fn quoting_and_dates() {
        assert_eq!(quote("a \"b\" \\c").unwrap(), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(quote("a\r\nb"), None);
        assert_eq!(quote("ä"), None);
        let t: Timestamp = "2024-03-01T08:09:10Z".parse().unwrap();
        assert_eq!(format_internal_date(t), "01-Mar-2024 08:09:10 +0000");
        assert_eq!(internal_date(&format_internal_date(t)), Some(t));
    }
}
