//! The console's HTML: escaping, the page frame, the style sheet. Every text that reaches a
//! page goes through [`esc`]: mail is written by attackers (subjects, addresses, file names,
//! RFC 2047 words that decode to `<script>`), and so are the query parameters.

use std::fmt::Write;

use super::users::Role;

/// The style sheet, served as `/static/console.css` (the CSP allows no inline style).
pub const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}\
header a{color:#fff}header form{margin-left:auto}main{padding:1em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
.err{color:#a00}.ok{color:#070}pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.5em}\
label{display:inline-block;margin:.2em 1em .2em 0}.html{border:1px solid #ccc;padding:.5em}";

/// `s` with `&`, `<`, `>`, `"`, `'` as entities and control characters (but tab and newline)
/// as U+FFFD: safe in element text and in quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Who is looking at a page: for the header's links and the logout form.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub role: Role,
    pub csrf: &'a str,
}

/// A whole page: the header (navigation for the role, logout) and `body` (already escaped).
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{} - handoff archive console</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css\"></head><body><header><strong>handoff archive console</strong>",
        esc(title)
    );
    if let Some(v) = viewer {
        match v.role {
            Role::ArchiveAdmin => {
                out.push_str("<a href=\"/\">Summary</a><a href=\"/search\">Search</a>")
            }
            Role::Auditor => out.push_str("<a href=\"/audit\">Audit log</a>"),
        }
        out.push_str("<a href=\"/password\">Password</a>");
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/logout\"><span>{} ({})</span> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            esc(v.name),
            v.role.as_str(),
            esc(v.csrf)
        );
    }
    let _ = write!(
        out,
        "</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// The login form.
pub fn login(csrf: &str, message: Option<&str>) -> String {
    let mut body = String::new();
    if let Some(m) = message {
        let _ = write!(body, "<p class=\"err\" id=\"error\">{}</p>", esc(m));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <p><label>User <input name=\"user\" autocomplete=\"username\" required maxlength=\"64\"></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required maxlength=\"1024\"></label></p>\
         <p><label>One-time code <input name=\"code\" autocomplete=\"one-time-code\" inputmode=\"numeric\" maxlength=\"16\"></label> (if you use a second factor)</p>\
         <p><button type=\"submit\" id=\"login\">Log in</button></p></form>",
        esc(csrf)
    );
    page("Log in", None, &body)
}

/// A short page for an error status (403, 404, 400…).
pub fn error(viewer: Option<&Viewer<'_>>, title: &str, detail: &str) -> String {
    page(
        title,
        viewer,
        &format!("<p class=\"err\">{}</p>", esc(detail)),
    )
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn url_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(
            esc("a\u{1b}[31m\r\nb\u{0}"),
            "a\u{fffd}[31m\u{fffd}\nb\u{fffd}"
        );
        let p = page("<b>", None, "");
        assert!(p.contains("<h1>&lt;b&gt;</h1>"), "{p}");
        assert_eq!(url_param("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
