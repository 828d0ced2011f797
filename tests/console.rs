//! The archive console over HTTP, against the real `handoff serve` on 127.0.0.1 (hyper's
//! client): login, sessions and their cookie, CSRF, lockout, security headers, every route
//! refusing the wrong role (audited), department scopes, search, a hostile message rendered
//! inert, the .eml download byte-identical to `archive export`, TLS required off loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap};
use hyper::{Method, Request, StatusCode};

use handoff::journal::record::MessageMeta;
use handoff::journal::writer::{DEFAULT_SEGMENT_BYTES, Writer};
use handoff::journal::{Body, Entry, Kind};

use crate::daemon::{Daemon, free_port, wait_for};

pub const PASSWORD: &str = "correct horse battery staple";

/// RFC 2047 for `<script>alert(1)</script>`: the subject decodes to markup.
const HOSTILE_SUBJECT: &str = "=?utf-8?b?PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==?=";

/// (day of January 2026, department, subject, body): one message each.
fn messages(pixel: u16) -> Vec<(u32, &'static str, String)> {
    let plain = |s: &str| {
        format!("From: a@example.net\r\nTo: b@corp.example\r\nSubject: {s}\r\n\r\nbody of {s}\r\n")
    };
    vec![
        (2, "sales", plain("invoice quarterly")),
        (3, "sales/emea", plain("invoice emea")),
        (4, "hr", plain("salary review")),
        (
            5,
            "sales",
            format!(
                "From: a@example.net\r\nTo: b@corp.example\r\nSubject: {HOSTILE_SUBJECT}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/html\r\n\r\n\
                 <p id=\"inmail\">hello<script>document.title='pwned'</script>\
                 <img src=\"http://127.0.0.1:{pixel}/pixel.gif\"></p>\r\n--XX\r\n\
                 Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"../\\\"<b>evil.txt\"\r\n\r\nx\r\n--XX--\r\n"
            ),
        ),
    ]
}

/// A daemon with the console on a free loopback port, a journal of [`messages`], and three
/// users: `admin` (all mail), `sales` (the sales department), `auditor`.
pub struct Console {
    pub d: Daemon,
    pub port: u16,
    /// Record ids by subject word: `invoice quarterly` → id.
    pub ids: BTreeMap<String, String>,
    pub pixel: u16,
}

impl Console {
    pub fn start() -> Console {
        Console::start_with("")
    }

    pub fn start_with(extra: &str) -> Console {
        let port = free_port();
        let pixel = free_port();
        let policy = format!(
            "[console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"console-users.toml\"\n{extra}"
        );
        let mut d = Daemon::prepare(&policy, None, None);
        let journal = d.journal_dir();
        let (mut w, _) = Writer::open(&journal, DEFAULT_SEGMENT_BYTES).unwrap();
        let mut ids = BTreeMap::new();
        for (i, (day, dept, body)) in messages(pixel).into_iter().enumerate() {
            let meta = MessageMeta {
                time: format!("2026-01-{day:02}T10:00:00Z"),
                accounts: vec!["b@corp.example".into()],
                departments: vec![dept.to_string()],
                ..crate::support::message_meta("a@example.net")
            };
            let mut e = [Entry::new(
                Kind::Message,
                &meta,
                Body::Bytes(body.into_bytes()),
            )];
            let id = w.append(&mut e).unwrap().0[0].to_string();
            ids.insert(
                ["quarterly", "emea", "salary", "hostile"][i].to_string(),
                id,
            );
        }
        drop(w);
        add_users(
            &d,
            &[
                ("admin", "archive_admin", None),
                ("sales", "archive_admin", Some("sales")),
                ("auditor", "auditor", None),
            ],
        );
        d.spawn(&[]);
        let c = Console {
            d,
            port,
            ids,
            pixel,
        };
        wait_for(Duration::from_secs(10), "the console to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        c
    }

    pub fn client(&self) -> Client {
        Client::new(self.port)
    }

    /// A client logged in as `user` (after the indexer has indexed every message).
    pub fn login(&self, user: &str) -> Client {
        let mut c = self.client();
        let r = c.login(user, PASSWORD);
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        c
    }

    /// The audit trail's console records: (user, command, query) as `archive audit --json`.
    pub fn audit(&self) -> Vec<(String, String, serde_json::Value)> {
        let (code, out, err) = self
            .d
            .cli(&["archive", "audit", "--json", "--command", "console"]);
        assert_eq!(code, 0, "{err}");
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        v.into_iter()
            .map(|e| {
                (
                    e["user"].as_str().unwrap().to_string(),
                    e["command"].as_str().unwrap().to_string(),
                    e["query"].clone(),
                )
            })
            .collect()
    }
}

/// Adds console users (name, role, department) with [`PASSWORD`], through `console user add`.
pub fn add_users(d: &Daemon, users: &[(&str, &str, Option<&str>)]) {
    for &(name, role, dept) in users {
        let mut args = vec![
            "console",
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
        ];
        if let Some(dep) = dept {
            args.extend(["--department", dep]);
        }
        let out = cli_with_stdin(d, &args, &format!("{PASSWORD}\n"));
        assert_eq!(out.0, 0, "console user add {name}: {out:?}");
    }
}

fn cli_with_stdin(d: &Daemon, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(args)
        .arg("--config")
        .arg(d.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `name="csrf" value="…"` of the page's first form.
    pub fn csrf(&self) -> String {
        let t = self.text();
        let at = t
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + 19;
        t[at..at + 64].to_string()
    }
}

/// An HTTP/1.1 client (hyper) that keeps the console's session cookie, like a browser.
pub struct Client {
    port: u16,
    pub cookie: Option<String>,
    rt: tokio::runtime::Runtime,
    /// HTTPS, trusting this connector's roots, to `localhost`.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            port,
            cookie: None,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            tls: None,
        }
    }

    /// A client that speaks HTTPS, trusting only the certificate in PEM file `ca`.
    pub fn https(port: u16, ca: &std::path::Path) -> Client {
        Client {
            tls: Some(tls_trusting(ca)),
            ..Client::new(port)
        }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None)
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", handoff::console::html::url_param(v)))
            .collect();
        self.send(Method::POST, path, Some(body.join("&")))
    }

    pub fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Resp {
        let port = self.port;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{port}"));
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, format!("handoff_console={c}"));
        }
        if form.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let tls = self.tls.clone();
        let resp = self.rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let resp = match tls {
                None => {
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    sender.send_request(req).await.unwrap()
                }
                Some(connector) => {
                    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                    let stream = connector.connect(name, stream).await.unwrap();
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .unwrap();
                    tokio::spawn(conn);
                    sender.send_request(req).await.unwrap()
                }
            };
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes().to_vec();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        });
        if let Some(set) = resp
            .headers
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
        {
            let value = set
                .strip_prefix("handoff_console=")
                .and_then(|v| v.split(';').next())
                .unwrap_or("");
            self.cookie = (!value.is_empty()).then(|| value.to_string());
        }
        resp
    }

    pub fn login(&mut self, user: &str, password: &str) -> Resp {
        let form = self.get("/login");
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post(
            "/login",
            &[("csrf", &csrf), ("user", user), ("password", password)],
        )
    }
}

pub const JANUARY: &str = "since=2026-01-01&until=2026-01-31";

/// The ids the API search finds, after waiting for the daemon's indexer to index all 4.
fn wait_indexed(c: &mut Client) {
    wait_for(Duration::from_secs(20), "the indexer", || {
        let r = c.get(&format!("/api/search?{JANUARY}"));
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        (v["total"] == 4).then_some(())
    });
}

#[test]
fn console_login_session_cookie_csrf_and_headers() {
    let k = Console::start();
    let mut c = k.client();
    // Not logged in: pages send to the login, the API answers 401.
    let r = c.get("/search");
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    assert_eq!(c.get("/api/search").status, StatusCode::UNAUTHORIZED);

    let form = c.get("/login");
    let set = form.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    let h = &form.headers;
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("script-src"),
        "no script source at all: {csp}"
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    let anonymous = c.cookie.clone().unwrap();
    let csrf = form.csrf();

    // No or a wrong CSRF token: refused, whatever the password.
    let r = c.post("/login", &[("user", "admin"), ("password", PASSWORD)]);
    assert!(r.status.is_client_error(), "{}", r.status);
    let r = c.post(
        "/login",
        &[
            ("csrf", &"0".repeat(64)),
            ("user", "admin"),
            ("password", PASSWORD),
        ],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A wrong password.
    let r = c.post(
        "/login",
        &[
            ("csrf", &csrf),
            ("user", "admin"),
            ("password", "wrong password!!"),
        ],
    );
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("Wrong user name or password"));
    // The right one: a new session id (the one from before the login is worth nothing).
    let r = c.post(
        "/login",
        &[("csrf", &csrf), ("user", "admin"), ("password", PASSWORD)],
    );
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/"));
    let session = c.cookie.clone().unwrap();
    assert_ne!(session, anonymous);
    let r = c.get("/");
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("Archive summary"), "{}", r.text());
    let mut fixated = k.client();
    fixated.cookie = Some(anonymous);
    assert_eq!(fixated.get("/").status, StatusCode::SEE_OTHER);

    // Logout needs the session's CSRF token.
    let page_csrf = r.csrf();
    let r = c.post("/logout", &[("csrf", &"f".repeat(64))]);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get("/").status, StatusCode::OK, "still logged in");
    let r = c.post("/logout", &[("csrf", &page_csrf)]);
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/login"));
    let mut old = k.client();
    old.cookie = Some(session);
    assert_eq!(
        old.get("/").status,
        StatusCode::SEE_OTHER,
        "the session ended"
    );

    // All of it audited, failures included.
    let audit = k.audit();
    let commands: Vec<&str> = audit.iter().map(|a| a.1.as_str()).collect();
    for want in [
        "console+denied",
        "console+login-failed",
        "console+login",
        "console+summary",
        "console+logout",
    ] {
        assert!(commands.contains(&want), "{want} not in {commands:?}");
    }
    let failed = audit
        .iter()
        .find(|a| a.1 == "console+login-failed")
        .unwrap();
    assert_eq!(failed.0, "console:admin");
    assert_eq!(failed.2["source"], "127.0.0.1");
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains("wrong password"),
        "no password in the journal"
    );
}

#[test]
fn console_locks_a_name_out_after_repeated_failures() {
    let k = Console::start();
    let mut c = k.client();
    for _ in 0..5 {
        assert_eq!(
            c.login("admin", "not the password").status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked: even the right password is refused for now, and so from another client.
    let r = c.login("admin", PASSWORD);
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(
        k.client().login("admin", PASSWORD).status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another name is not locked.
    assert_eq!(
        k.client().login("auditor", PASSWORD).status,
        StatusCode::SEE_OTHER
    );
    let audit = k.audit();
    let count = |cmd: &str| audit.iter().filter(|a| a.1 == cmd).count();
    assert_eq!(count("console+login-failed"), 5);
    assert_eq!(count("console+login-locked"), 2);
}

#[test]
fn console_routes_refuse_the_wrong_role_and_scope_and_audit_it() {
    let k = Console::start();
    let mut admin = k.login("admin");
    wait_indexed(&mut admin);
    let salary = k.ids["salary"].clone();
    let mut auditor = k.login("auditor");
    for path in [
        "/".to_string(),
        format!("/search?{JANUARY}"),
        format!("/api/search?{JANUARY}"),
        format!("/message/{salary}"),
        format!("/message/{salary}/eml"),
        format!("/api/message/{salary}"),
    ] {
        let r = auditor.get(&path);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "auditor {path}");
        assert!(!r.text().contains("salary review"), "{path}");
    }
    assert_eq!(admin.get("/audit").status, StatusCode::FORBIDDEN);
    assert_eq!(auditor.get("/audit").status, StatusCode::OK);

    // The sales officer sees sales and its sub-departments, never hr.
    let mut sales = k.login("sales");
    let r = sales.get(&format!("/api/search?{JANUARY}"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["total"], 3, "{v}");
    assert!(!r.text().contains("salary"), "{v}");
    let r = sales.get(&format!("/search?{JANUARY}&department=hr&sub=on"));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for path in [
        format!("/message/{salary}"),
        format!("/message/{salary}/eml"),
        format!("/api/message/{salary}"),
    ] {
        let r = sales.get(&path);
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!r.text().contains("salary review"));
    }
    let emea = &k.ids["emea"];
    assert_eq!(
        sales.get(&format!("/message/{emea}")).status,
        StatusCode::OK
    );

    let audit = k.audit();
    let denied: Vec<_> = audit.iter().filter(|a| a.1 == "console+denied").collect();
    assert_eq!(
        denied.iter().filter(|a| a.0 == "console:auditor").count(),
        6,
        "{denied:#?}"
    );
    assert_eq!(
        denied.iter().filter(|a| a.0 == "console:admin").count(),
        1,
        "{denied:#?}"
    );
    assert_eq!(
        denied.iter().filter(|a| a.0 == "console:sales").count(),
        4,
        "{denied:#?}"
    );
    assert!(denied.iter().all(|a| a.2["role"].is_string()));
}

#[test]
fn console_searches_shows_a_hostile_message_inert_and_downloads_it_byte_for_byte() {
    let k = Console::start();
    let mut c = k.login("admin");
    wait_indexed(&mut c);
    // Bad input: 400, never a crash.
    for bad in [
        "/search?since=2026-01-01".to_string(),
        format!("/search?{JANUARY}&page=0"),
        format!("/search?{JANUARY}&bogus=1"),
        format!("/search?{JANUARY}&text={}", "a".repeat(600)),
        format!("/search?{JANUARY}&x={}", "a".repeat(5000)),
        "/message/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/message/1-0%00".to_string(),
    ] {
        assert_eq!(c.get(&bad).status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(c.get("/message/999-0").status, StatusCode::NOT_FOUND);

    let r = c.get(&format!("/search?{JANUARY}&text=invoice&in_subject=on"));
    assert_eq!(r.status, StatusCode::OK);
    let t = r.text();
    assert!(t.contains("<p id=\"total\">2 messages</p>"), "{t}");
    // Newest first.
    let (q, e) = (
        t.find("invoice quarterly").unwrap(),
        t.find("invoice emea").unwrap(),
    );
    assert!(e < q, "{t}");
    let r = c.get(&format!("/search?{JANUARY}&department=sales&sub=on"));
    assert!(
        r.text().contains("<p id=\"total\">3 messages</p>"),
        "{}",
        r.text()
    );
    let r = c.get(&format!("/search?{JANUARY}&department=sales"));
    assert!(
        r.text().contains("<p id=\"total\">2 messages</p>"),
        "exact: {}",
        r.text()
    );
    let r = c.get(&format!("/search?{JANUARY}"));
    assert!(!r.text().contains("<script>"), "the subject is escaped");
    assert!(
        r.text().contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        r.text()
    );

    let id = &k.ids["hostile"];
    let r = c.get(&format!("/message/{id}"));
    assert_eq!(r.status, StatusCode::OK);
    let t = r.text();
    if std::env::var_os("CONSOLE_DUMP").is_some() {
        eprintln!("{t}");
    }
    assert!(!t.contains("<script"), "{t}");
    assert!(
        !t.contains(&format!(":{}/pixel", k.pixel)),
        "no remote image: {t}"
    );
    assert!(
        t.contains("<div class=\"html\" id=\"html\"><p>hello"),
        "the sanitized HTML is shown: {t}"
    );
    assert!(
        t.contains("<td>../&quot;&lt;b&gt;evil.txt</td>"),
        "the attachment name escaped: {t}"
    );
    assert!(
        t.contains("<p id=\"subject\">&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        "{t}"
    );
    assert!(t.contains("id=\"integrity\""));

    let r = c.get(&format!("/message/{id}/eml"));
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION],
        format!("attachment; filename=\"{id}.eml\"")
    );
    let out = k.d.path("export");
    let (code, _, err) = k.d.cli(&[
        "archive",
        "export",
        "--id",
        id,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read(out.join(format!("{id}.eml"))).unwrap();
    assert_eq!(
        r.body, exported,
        "the download is byte-identical to `archive export`"
    );

    let audit = k.audit();
    let search = audit.iter().find(|a| a.1 == "console+search").unwrap();
    assert_eq!(search.0, "console:admin");
    assert_eq!(search.2["role"], "archive_admin");
    assert!(
        audit
            .iter()
            .any(|a| a.1 == "console+view" && a.2["id"] == id.as_str())
    );
    assert!(
        audit
            .iter()
            .any(|a| a.1 == "console+download" && a.2["id"] == id.as_str())
    );
}

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1 (openssl):
/// (CA certificate, server certificate, server key) paths.
fn certificates(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (tests/setup.sh installs it)");
        assert!(ok.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &ec[..],
        &[
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    ]
    .concat());
    run(&[
        &["req"],
        &ec[..],
        &[
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "req.csr",
        ],
    ]
    .concat());
    std::fs::write(
        p("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "cert.pem",
    ]);
    [p("ca.pem"), p("cert.pem"), p("key.pem")]
}

#[test]
fn console_serves_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let [ca, cert, key] = certificates(certs.path());
    let k = Console::start_with(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let mut c = Client::https(k.port, &ca);
    let r = c.login("admin", PASSWORD);
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(c.get("/").text().contains("Archive summary"));
    // Plain HTTP gets no page (the TLS handshake fails; the connection is closed, maybe
    // before the request is even written).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", k.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("200 OK") && !answer.contains("csrf"),
        "{answer}"
    );
}

#[test]
fn console_refuses_to_start_off_loopback_without_tls() {
    let port = free_port();
    let policy = format!("[console]\nlisten = \"0.0.0.0:{port}\"\nusers = \"u.toml\"\n");
    let d = Daemon::prepare(&policy, None, None);
    let (code, _, err) = d.cli(&["check"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a loopback address"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["serve", "--config"])
        .arg(d.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
    // A users file others can read stops the daemon too.
    let port = free_port();
    let policy = format!("[console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"u.toml\"\n");
    let d = Daemon::prepare(&policy, None, None);
    let users = d.path("u.toml");
    std::fs::write(&users, "").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&users).unwrap().permissions(),
        0o644,
    );
    std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["serve", "--config"])
        .arg(d.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_auditor_filters_and_downloads_the_audit_log() {
    let k = Console::start();
    let mut admin = k.login("admin");
    wait_indexed(&mut admin);
    let salary = k.ids["salary"].clone();
    assert_eq!(
        admin.get(&format!("/message/{salary}")).status,
        StatusCode::OK
    );
    let mut auditor = k.login("auditor");
    let r = auditor.get("/login");
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/audit"));
    let r = auditor.get("/audit?user=console:admin&command=console&keyword=view");
    assert_eq!(r.status, StatusCode::OK);
    let t = r.text();
    assert!(t.contains(&salary) && t.contains("console+view"), "{t}");
    assert!(!t.contains("console+search"), "the keyword filters: {t}");
    let r = auditor.get("/audit?user=console:admin&format=csv");
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let csv = r.text();
    assert!(
        csv.starts_with("id,time,user,action,hits,details\n"),
        "{csv}"
    );
    assert!(csv.contains("console:admin,console+view,1,"), "{csv}");
    assert_eq!(
        auditor.get("/audit?format=pdf").status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        auditor.get("/audit?since=yesterday").status,
        StatusCode::BAD_REQUEST
    );
    // Reading the log is recorded too; an admin cannot download it.
    assert_eq!(admin.get("/audit?format=csv").status, StatusCode::FORBIDDEN);
    let audit = k.audit();
    assert!(
        audit
            .iter()
            .any(|a| a.0 == "console:auditor" && a.1 == "console+audit-download")
    );
    assert!(
        audit
            .iter()
            .any(|a| a.0 == "console:auditor" && a.1 == "console+audit")
    );
}

// ---- authentication: TOTP, API tokens, the password page, TLS reload, roles × routes ----

/// A raw HTTP/1.1 request with `Authorization: Bearer token` (and no cookie): (status, body).
fn bearer(port: u16, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|b| b.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The current TOTP code for a base32 secret.
fn totp_now(secret: &str) -> String {
    use handoff::console::totp;
    let key = totp::unbase32(secret).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("{:06}", totp::hotp(&key, totp::step(now), 6))
}

impl Client {
    fn login_code(&mut self, user: &str, password: &str, code: &str) -> Resp {
        let csrf = self.get("/login").csrf();
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("user", user),
                ("password", password),
                ("code", code),
            ],
        )
    }
}

#[test]
fn console_totp_is_asked_once_per_code_and_required_when_configured() {
    let k = Console::start_with("require_totp = true\n");
    // Password right, no second factor: refused, audited, not a lockout.
    let mut c = k.client();
    let r = c.login("admin", PASSWORD);
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(
        r.text().contains("requires a second factor"),
        "{}",
        r.text()
    );
    assert_eq!(c.get("/").status, StatusCode::SEE_OTHER);

    let (code, uri, err) = k.d.cli(&["console", "user", "totp", "admin"]);
    assert_eq!(code, 0, "{err}");
    let uri = uri.trim();
    assert!(
        uri.starts_with("otpauth://totp/handoff:admin?secret=") && uri.contains("&issuer=handoff"),
        "{uri}"
    );
    let secret = uri
        .split_once("secret=")
        .unwrap()
        .1
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let file = std::fs::read_to_string(k.d.path("console-users.toml")).unwrap();
    assert!(file.contains(&format!("totp = \"{secret}\"")), "{file}");
    let (_, list, _) = k.d.cli(&["console", "user", "list"]);
    assert!(
        list.contains("admin\tarchive_admin\tall departments\ttotp\t-"),
        "{list}"
    );

    // No code, a wrong code: the same answer as a wrong password.
    let mut c = k.client();
    for code in ["", "000000x", "12345"] {
        let r = c.login_code("admin", PASSWORD, code);
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{code:?}");
        assert!(r.text().contains("Wrong user name or password"));
    }
    // The right code.
    let now = totp_now(&secret);
    let r = c.login_code("admin", PASSWORD, &now);
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/"),
        "{}",
        r.text()
    );
    assert_eq!(c.get("/").status, StatusCode::OK);
    // The same code again (another browser): a replay, refused.
    let mut d = k.client();
    let r = d.login_code("admin", PASSWORD, &now);
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code is good once");
    // Wrong codes count toward the lockout (the success above cleared the name's count):
    // five failures lock the name, right code or not.
    for _ in 0..4 {
        let r = d.login_code("admin", PASSWORD, "999999");
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = d.login_code("admin", PASSWORD, &totp_now(&secret));
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    // Without require_totp's users: the auditor has no second factor and is refused.
    assert_eq!(
        k.client().login("auditor", PASSWORD).status,
        StatusCode::FORBIDDEN
    );
    let (code, _, err) = k.d.cli(&["console", "user", "totp", "admin", "--remove"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !std::fs::read_to_string(k.d.path("console-users.toml"))
            .unwrap()
            .contains("totp")
    );

    let audit = k.audit();
    let count = |cmd: &str| audit.iter().filter(|a| a.1 == cmd).count();
    assert_eq!(count("console+login-refused"), 2, "{audit:#?}");
    assert_eq!(count("console+login-failed"), 8, "{audit:#?}");
    assert_eq!(count("console+login-locked"), 1, "{audit:#?}");
    let login = audit.iter().find(|a| a.1 == "console+login").unwrap();
    assert_eq!(login.2["totp"], true);
    assert!(
        audit
            .iter()
            .any(|a| a.1 == "console+login-failed" && a.2["factor"] == "totp")
    );
    assert!(!serde_json::to_string(&audit).unwrap().contains(&secret));
}

#[test]
fn console_api_tokens_authenticate_api_calls_only() {
    let k = Console::start();
    let mut admin = k.login("admin");
    wait_indexed(&mut admin);
    let (code, token, err) = k.d.cli(&["console", "user", "token", "admin"]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let file = std::fs::read_to_string(k.d.path("console-users.toml")).unwrap();
    assert!(!file.contains(&token), "only the hash is kept");
    assert!(file.contains("token = \"sha256:"), "{file}");
    let (code, auditor_token, err) = k.d.cli(&["console", "user", "token", "auditor"]);
    assert_eq!(code, 0, "{err}");
    let auditor_token = auditor_token.trim().to_string();

    let (status, body) = bearer(k.port, &format!("/api/search?{JANUARY}"), &token);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 4, "{v}");
    let salary = &k.ids["salary"];
    let (status, body) = bearer(k.port, &format!("/api/message/{salary}"), &token);
    assert_eq!(status, 200);
    assert!(body.contains("salary review"), "{body}");
    // The auditor's token has the auditor's role: 403, audited.
    let (status, body) = bearer(k.port, &format!("/api/message/{salary}"), &auditor_token);
    assert_eq!(status, 403);
    assert!(!body.contains("salary review"));
    // A wrong token: 401, audited; a page never takes a token.
    let (status, _) = bearer(k.port, &format!("/api/search?{JANUARY}"), &"0".repeat(64));
    assert_eq!(status, 401);
    let (status, _) = bearer(k.port, &format!("/search?{JANUARY}"), &token);
    assert_eq!(status, 303, "pages want a session");
    let (status, _) = bearer(k.port, "/", &token);
    assert_eq!(status, 303);
    // An export with the token needs no CSRF token: the zip of the one message.
    let auth = format!("Bearer {token}");
    let r = k.client().post_json_with(
        "/api/export",
        &serde_json::json!({ "ids": [salary] }),
        &[("authorization", &auth)],
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.body.starts_with(b"PK\x03\x04"), "a zip");
    // The same request from a session without the CSRF token is refused.
    let r = admin.post_json("/api/export", &serde_json::json!({ "ids": [salary] }));
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Revoked: refused from then on.
    let (code, _, err) = k.d.cli(&["console", "user", "token", "admin", "--revoke"]);
    assert_eq!(code, 0, "{err}");
    let (status, _) = bearer(k.port, &format!("/api/search?{JANUARY}"), &token);
    assert_eq!(status, 401);
    let (code, _, err) = k.d.cli(&["console", "user", "token", "admin", "--revoke"]);
    assert!(code != 0 && err.contains("has no API token"), "{err}");
    let (code, _, err) = k.d.cli(&["console", "user", "token", "nobody"]);
    assert!(code != 0 && err.contains("no user `nobody`"), "{err}");
    assert!(!k.d.log_text().contains(&token), "the token is in no log");

    let audit = k.audit();
    let by = |user: &str, cmd: &str| audit.iter().filter(|a| a.0 == user && a.1 == cmd).count();
    assert!(by("console:admin", "console+search") >= 2, "{audit:#?}");
    assert_eq!(by("console:admin", "console+view"), 1, "{audit:#?}");
    assert_eq!(by("console:auditor", "console+denied"), 1, "{audit:#?}");
    assert_eq!(by("console:", "console+token-failed"), 2, "{audit:#?}");
    assert!(!serde_json::to_string(&audit).unwrap().contains(&token));
}

#[test]
fn console_password_page_changes_the_password_and_ends_other_sessions() {
    let k = Console::start();
    let mut a = k.login("auditor");
    let mut b = k.login("auditor");
    let page = a.get("/password");
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("Change password"));
    let csrf = page.csrf();
    let new = "another long passphrase";
    let form = |csrf: &str, current: &str, new: &str, again: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("current", current.to_string()),
            ("new", new.to_string()),
            ("again", again.to_string()),
        ]
    };
    let post = |c: &mut Client, f: Vec<(&str, String)>| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.post("/password", &f)
    };
    let r = post(&mut a, form(&"0".repeat(64), PASSWORD, new, new));
    assert_eq!(r.status, StatusCode::FORBIDDEN, "CSRF");
    let r = post(&mut a, form(&csrf, "not the password", new, new));
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post(
        &mut a,
        form(&csrf, PASSWORD, new, "something else entirely"),
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("differ"));
    let r = post(&mut a, form(&csrf, PASSWORD, "short", "short"));
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("at least 12 characters"), "{}", r.text());
    assert_eq!(
        b.get("/audit").status,
        StatusCode::OK,
        "nothing changed yet"
    );
    let r = post(&mut a, form(&csrf, PASSWORD, new, new));
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Password changed"));
    // This session goes on; the other one ended.
    assert_eq!(a.get("/audit").status, StatusCode::OK);
    assert_eq!(b.get("/audit").status, StatusCode::SEE_OTHER);
    assert_eq!(
        k.client().login("auditor", PASSWORD).status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        k.client().login("auditor", new).status,
        StatusCode::SEE_OTHER
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(k.d.path("console-users.toml"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let audit = k.audit();
    let count = |cmd: &str| {
        audit
            .iter()
            .filter(|a| a.1 == cmd && a.0 == "console:auditor")
            .count()
    };
    assert_eq!(count("console+password"), 1, "{audit:#?}");
    assert_eq!(count("console+password-failed"), 1, "{audit:#?}");
    assert_eq!(count("console+denied"), 1, "{audit:#?}");
    assert!(
        !serde_json::to_string(&audit)
            .unwrap()
            .contains("another long")
    );
}

/// The certificate the console at `port` presents (DER), trusting the CA in `ca`; `None` when
/// the handshake fails.
fn served_certificate(port: u16, ca: &std::path::Path) -> Option<Vec<u8>> {
    let connector = tls_trusting(ca);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, stream).await.ok()?;
        let certs = tls.get_ref().1.peer_certificates()?;
        Some(certs.first()?.to_vec())
    })
}

#[test]
fn console_reloads_its_certificate_on_sighup_and_keeps_it_when_the_new_one_is_bad() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let [ca1, cert1, key1] = certificates(one.path());
    let [ca2, cert2, key2] = certificates(two.path());
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let k = Console::start_with(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let der = |p: &std::path::Path| {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_file(p).unwrap().to_vec()
    };
    assert_eq!(served_certificate(k.port, &ca1), Some(der(&cert1)));
    assert_eq!(
        served_certificate(k.port, &ca2),
        None,
        "not trusted by CA 2"
    );

    // Replaced, then SIGHUP: the new pair is served.
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    k.d.signal("HUP");
    wait_for(Duration::from_secs(10), "the new certificate", || {
        served_certificate(k.port, &ca2)
    });
    assert_eq!(served_certificate(k.port, &ca2), Some(der(&cert2)));
    assert_eq!(served_certificate(k.port, &ca1), None);

    // A certificate that does not go with the key: the old pair stays, the log says why.
    std::fs::copy(&cert1, &cert).unwrap();
    k.d.signal("HUP");
    wait_for(Duration::from_secs(10), "the reload to fail", || {
        k.d.log_text()
            .contains("TLS reload failed, keeping the certificate in use")
            .then_some(())
    });
    assert_eq!(served_certificate(k.port, &ca2), Some(der(&cert2)));
    // Garbage too.
    std::fs::write(&cert, "not a certificate").unwrap();
    k.d.signal("HUP");
    wait_for(Duration::from_secs(10), "the second failed reload", || {
        (k.d.log_text().matches("TLS reload failed").count() >= 2).then_some(())
    });
    assert_eq!(served_certificate(k.port, &ca2), Some(der(&cert2)));
    let mut c = Client::https(k.port, &ca2);
    assert_eq!(c.login("admin", PASSWORD).status, StatusCode::SEE_OTHER);
}

#[test]
fn console_every_route_refuses_every_wrong_role_and_every_post_checks_csrf() {
    let k = Console::start();
    let mut admin = k.login("admin");
    wait_indexed(&mut admin);
    let mut auditor = k.login("auditor");
    let id = k.ids["quarterly"].clone();
    // (path, the roles allowed): every other role gets 403 and a `denied` audit record.
    let routes: Vec<(String, &[&str])> = vec![
        ("/".into(), &["admin"]),
        (format!("/search?{JANUARY}"), &["admin"]),
        (format!("/message/{id}"), &["admin"]),
        (format!("/message/{id}/eml"), &["admin"]),
        (format!("/api/search?{JANUARY}"), &["admin"]),
        (format!("/api/message/{id}"), &["admin"]),
        ("/audit".into(), &["auditor"]),
        ("/password".into(), &["admin", "auditor"]),
    ];
    let mut want_denied: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (path, allowed) in &routes {
        for (name, c) in [("admin", &mut admin), ("auditor", &mut auditor)] {
            let r = c.get(path);
            if allowed.contains(&name) {
                assert_eq!(r.status, StatusCode::OK, "{name} {path}: {}", r.text());
            } else {
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{name} {path}");
                let plain = path.split('?').next().unwrap();
                want_denied
                    .entry(name)
                    .or_default()
                    .push(format!("GET {plain}"));
            }
        }
        // Nobody logged in: the login page, or 401 for the API.
        let r = k.client().get(path);
        let want = match path.starts_with("/api/") {
            true => StatusCode::UNAUTHORIZED,
            false => StatusCode::SEE_OTHER,
        };
        assert_eq!(r.status, want, "anonymous {path}");
    }
    let audit = k.audit();
    for (name, want) in &want_denied {
        let got: Vec<String> = audit
            .iter()
            .filter(|a| a.0 == format!("console:{name}") && a.1 == "console+denied")
            .map(|a| a.2["request"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(&got, want, "{name}");
        for a in audit.iter().filter(|a| a.1 == "console+denied") {
            assert!(
                a.2["role"].is_string() && a.2["source"] == "127.0.0.1",
                "{a:?}"
            );
        }
    }

    // Every POST wants the session's CSRF token: missing or wrong, 403 and audited, and
    // nothing happens.
    let before = k.audit().len();
    let long = "x".repeat(20);
    for (path, fields) in [
        ("/logout", vec![]),
        (
            "/password",
            vec![("current", PASSWORD), ("new", &long), ("again", &long)],
        ),
    ] {
        for c in [&mut admin, &mut auditor] {
            for csrf in [None, Some("0".repeat(64))] {
                let mut f = fields.clone();
                if let Some(t) = &csrf {
                    f.push(("csrf", t));
                }
                let r = c.post(path, &f);
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{path} {csrf:?}");
            }
        }
    }
    let mut anonymous = k.client();
    anonymous.get("/login");
    let r = anonymous.post("/login", &[("user", "admin"), ("password", PASSWORD)]);
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get("/").status, StatusCode::OK, "still logged in");
    assert_eq!(auditor.get("/audit").status, StatusCode::OK);
    assert_eq!(
        k.client().login("admin", PASSWORD).status,
        StatusCode::SEE_OTHER,
        "password unchanged"
    );
    let audit = k.audit();
    let csrf_denials = audit[before..]
        .iter()
        .filter(|a| a.1 == "console+denied" && a.2["detail"] == "missing or wrong CSRF token")
        .count();
    assert_eq!(csrf_denials, 9, "{:#?}", &audit[before..]);
}

// ---- exports, attachment downloads, the summary's journal head ----

impl Client {
    /// POSTs a JSON body (the API's export), with the session cookie.
    pub fn post_json(&mut self, path: &str, json: &serde_json::Value) -> Resp {
        self.post_json_with(path, json, &[])
    }

    /// [`Client::post_json`] with more request headers (an `Authorization: Bearer`).
    pub fn post_json_with(
        &mut self,
        path: &str,
        json: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let port = self.port;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{port}"))
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, format!("handoff_console={c}"));
        }
        let req = req.body(Full::new(Bytes::from(json.to_string()))).unwrap();
        self.rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let resp = sender.send_request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes().to_vec(),
            }
        })
    }
}

/// An export's zip, checked: every `.eml` listed in `manifest.json` and in `SHA256SUMS` with
/// the SHA-256 of its bytes, nothing else in it. Returns the manifest and the files by id.
pub fn unzip_export(zip: &[u8]) -> (serde_json::Value, BTreeMap<String, Vec<u8>>) {
    use sha2::Digest;
    use std::io::Read;
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a whole zip");
    let mut files = BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        files.insert(f.name().unwrap().to_string(), bytes);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&files.remove("manifest.json").expect("manifest.json")).unwrap();
    let sums = String::from_utf8(files.remove("SHA256SUMS").expect("SHA256SUMS")).unwrap();
    assert_eq!(manifest["format"], "handoff-export/1");
    let listed = manifest["messages"].as_array().unwrap();
    assert_eq!(manifest["count"], listed.len());
    assert_eq!(listed.len(), files.len(), "{manifest:#}");
    assert_eq!(sums.lines().count(), files.len(), "{sums}");
    let mut by_id = BTreeMap::new();
    for m in listed {
        let (id, file) = (m["id"].as_str().unwrap(), m["file"].as_str().unwrap());
        assert_eq!(file, format!("{id}.eml"));
        let bytes = files.remove(file).expect("each listed file is in the zip");
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        assert_eq!(m["sha256"], sha.as_str(), "{id}");
        assert_eq!(m["size"], bytes.len());
        assert!(sums.contains(&format!("{sha}  {file}\n")), "{sums}");
        assert_eq!(m["record_hash"].as_str().unwrap().len(), 64);
        by_id.insert(id.to_string(), bytes);
    }
    (manifest, by_id)
}

/// The search's hit ids through the API (page 1: the fixtures have fewer than 50).
pub fn hit_ids(c: &mut Client, query: &str) -> std::collections::BTreeSet<String> {
    let r = c.get(&format!("/api/search?{query}"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn console_exports_a_result_set_and_a_selection_as_a_zip_with_a_checkable_manifest() {
    let k = Console::start();
    let mut c = k.login("admin");
    wait_indexed(&mut c);
    let page = c.get(&format!("/search?{JANUARY}&text=invoice"));
    let t = page.text();
    assert!(t.contains("Export all 2 results"), "{t}");
    assert!(t.contains("form=\"export-selected\""), "{t}");
    let csrf = page.csrf();

    // Every result of a search, its fields as the page's hidden inputs send them.
    let all = [
        ("csrf", csrf.as_str()),
        ("export", "all"),
        ("since", "2026-01-01"),
        ("until", "2026-01-31"),
    ];
    let r = c.post("/export", &all);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/zip");
    let cd = r.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"handoff-export-"),
        "{cd}"
    );
    let (manifest, files) = unzip_export(&r.body);
    let hits = hit_ids(&mut c, JANUARY);
    assert_eq!(hits.len(), 4);
    assert_eq!(
        files
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        hits
    );
    assert_eq!(manifest["exported_by"]["user"], "admin");
    assert_eq!(manifest["exported_by"]["role"], "archive_admin");
    assert_eq!(manifest["selection"]["query"]["since"], "2026-01-01");
    assert!(manifest["exported_at"].as_str().unwrap().starts_with("20"));
    // Each file is what `archive export` writes.
    let ids: Vec<&str> = files.keys().map(String::as_str).collect();
    let out = k.d.path("cli-export");
    let mut args = vec!["archive", "export", "--out", out.to_str().unwrap()];
    for id in &ids {
        args.extend(["--id", id]);
    }
    let (code, _, err) = k.d.cli(&args);
    assert_eq!(code, 0, "{err}");
    for (id, bytes) in &files {
        assert_eq!(
            &std::fs::read(out.join(format!("{id}.eml"))).unwrap(),
            bytes,
            "{id}"
        );
    }

    // A selection (a duplicate counted once), and a search narrowed by a keyword.
    let (q, e) = (k.ids["quarterly"].clone(), k.ids["emea"].clone());
    let r = c.post(
        "/export",
        &[
            ("csrf", &csrf),
            ("export", "selected"),
            ("id", &q),
            ("id", &e),
            ("id", &q),
        ],
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (manifest, files) = unzip_export(&r.body);
    assert_eq!(files.len(), 2);
    assert_eq!(manifest["selection"]["ids"], serde_json::json!([q, e]));
    let r = c.post(
        "/export",
        &[&all[..], &[("text", "salary"), ("in_subject", "on")]].concat(),
    );
    let (_, files) = unzip_export(&r.body);
    assert_eq!(files.keys().collect::<Vec<_>>(), [&k.ids["salary"]]);

    // Refused before anything is sent.
    let no_csrf = c.post("/export", &[("export", "selected"), ("id", &q)]);
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let wrong = c.post(
        "/export",
        &[
            ("csrf", &"0".repeat(64)),
            ("export", "selected"),
            ("id", &q),
        ],
    );
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    for bad in [
        vec![("csrf", csrf.as_str()), ("export", "selected")],
        vec![("csrf", &csrf), ("export", "selected"), ("id", "../etc")],
        vec![("csrf", &csrf), ("export", "all"), ("since", "2026-01-01")],
        vec![("csrf", &csrf), ("export", "all"), ("bogus", "1")],
        vec![("csrf", &csrf), ("export", "everything")],
    ] {
        let r = c.post("/export", &bad);
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text());
    }
    let r = c.post(
        "/export",
        &[("csrf", &csrf), ("export", "selected"), ("id", "999-0")],
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // An offset inside a record is no record, whatever lies there.
    let inside = format!("{}-{}", q.split('-').next().unwrap(), 1);
    let r = c.post(
        "/export",
        &[("csrf", &csrf), ("export", "selected"), ("id", &inside)],
    );
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The API: the same export, the same rules.
    let r = c.post_json(
        "/api/export",
        &serde_json::json!({ "csrf": csrf, "query": { "since": "2026-01-01", "until": "2026-01-31", "text": "invoice" } }),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (_, files) = unzip_export(&r.body);
    assert_eq!(files.len(), 2);
    let r = c.post_json(
        "/api/export",
        &serde_json::json!({ "csrf": csrf, "ids": [k.ids["hostile"]] }),
    );
    let (_, files) = unzip_export(&r.body);
    assert_eq!(files.keys().collect::<Vec<_>>(), [&k.ids["hostile"]]);
    // A body far over the forms' 4 KiB: the API takes long id lists.
    let many = vec![q.clone(); 1000];
    let r = c.post_json(
        "/api/export",
        &serde_json::json!({ "csrf": csrf, "ids": many }),
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(unzip_export(&r.body).1.len(), 1);
    let r = c.post_json("/api/export", &serde_json::json!({ "ids": [q] }));
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token");
    let r = c.post_json(
        "/api/export",
        &serde_json::json!({ "csrf": csrf, "ids": [q], "query": {} }),
    );
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        k.client()
            .post_json("/api/export", &serde_json::json!({ "ids": [q] }))
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Audited before the zip, with the query or the ids and the count.
    let audit = k.audit();
    let exports: Vec<_> = audit.iter().filter(|a| a.1 == "console+export").collect();
    assert_eq!(exports.len(), 6, "{exports:#?}");
    assert_eq!(exports[0].2["query"]["since"], "2026-01-01");
    assert_eq!(exports[0].2["count"], 4);
    assert_eq!(exports[1].2["ids"], serde_json::json!([q, e]));
    assert_eq!(exports[1].2["count"], 2);
    assert!(exports.iter().all(|a| a.0 == "console:admin"));
}

#[test]
fn console_export_keeps_to_the_role_and_the_department_scope() {
    let k = Console::start();
    let mut admin = k.login("admin");
    wait_indexed(&mut admin);
    let mut sales = k.login("sales");
    let csrf = sales.get("/search").csrf();
    // A whole result set: only the scope's mail (sales and sales/emea, not hr).
    let r = sales.post(
        "/export",
        &[
            ("csrf", &csrf),
            ("export", "all"),
            ("since", "2026-01-01"),
            ("until", "2026-01-31"),
        ],
    );
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (manifest, files) = unzip_export(&r.body);
    assert_eq!(files.len(), 3);
    assert!(!files.contains_key(&k.ids["salary"]));
    assert_eq!(
        manifest["exported_by"]["departments"],
        serde_json::json!(["sales"])
    );
    // A department outside the scope, or a foreign id in a selection: 403, nothing sent.
    let r = sales.post(
        "/export",
        &[
            ("csrf", &csrf),
            ("export", "all"),
            ("since", "2026-01-01"),
            ("until", "2026-01-31"),
            ("department", "hr"),
        ],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (q, salary) = (k.ids["quarterly"].clone(), k.ids["salary"].clone());
    let r = sales.post(
        "/export",
        &[
            ("csrf", &csrf),
            ("export", "selected"),
            ("id", &q),
            ("id", &salary),
        ],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.text().contains("salary review"));
    let r = sales.post_json(
        "/api/export",
        &serde_json::json!({ "csrf": csrf, "ids": [salary] }),
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // An auditor exports nothing.
    let mut auditor = k.login("auditor");
    let a_csrf = auditor.get("/audit").csrf();
    let r = auditor.post(
        "/export",
        &[("csrf", &a_csrf), ("export", "selected"), ("id", &q)],
    );
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let audit = k.audit();
    let denied: Vec<_> = audit
        .iter()
        .filter(|a| a.1 == "console+denied" && a.0 == "console:sales")
        .collect();
    assert_eq!(denied.len(), 3, "{denied:#?}");
    assert!(
        denied
            .iter()
            .any(|a| a.2["detail"]["id"] == salary.as_str()),
        "{denied:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.0 == "console:auditor" && a.1 == "console+denied")
    );
    let exports: Vec<_> = audit.iter().filter(|a| a.1 == "console+export").collect();
    assert_eq!(exports.len(), 1, "only the allowed export: {exports:#?}");
    assert_eq!(exports[0].2["count"], 3);
}

#[test]
fn console_downloads_an_attachment_as_an_inert_file_with_a_safe_name() {
    let k = Console::start();
    let mut c = k.login("admin");
    wait_indexed(&mut c);
    let id = k.ids["hostile"].clone();
    let page = c.get(&format!("/message/{id}")).text();
    let link = format!("/message/{id}/attachment/0");
    assert!(page.contains(&format!("href=\"{link}\"")), "{page}");
    let r = c.get(&link);
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/octet-stream");
    assert_eq!(
        r.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"__b_evil.txt\""
    );
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(String::from_utf8_lossy(&r.body).trim_end(), "x");
    assert_eq!(
        c.get(&format!("/message/{id}/attachment/1")).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get(&format!("/message/{id}/attachment/-1")).status,
        StatusCode::BAD_REQUEST
    );
    // Another department's attachment, or an auditor: 403.
    let salary = k.ids["salary"].clone();
    let mut sales = k.login("sales");
    assert_eq!(
        sales.get(&format!("/message/{salary}/attachment/0")).status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(k.login("auditor").get(&link).status, StatusCode::FORBIDDEN);
    let audit = k.audit();
    assert!(
        audit.iter().any(|a| a.0 == "console:admin"
            && a.1 == "console+download"
            && a.2["id"] == id.as_str()
            && a.2["attachment"] == 0),
        "{audit:#?}"
    );
}

#[test]
fn console_summary_shows_the_journal_head_and_the_index_lag() {
    let k = Console::start();
    let mut c = k.login("admin");
    wait_indexed(&mut c);
    let t = c.get("/").text();
    for row in [
        "Last record written",
        "Journal head",
        "Newest archived message (indexed)",
        "<th>Index</th><td>up to date",
    ] {
        assert!(t.contains(row), "{row}: {t}");
    }
    assert!(
        t.contains("2026-01-05T10:00:00Z"),
        "the newest message: {t}"
    );
    // The head is the one `archive verify` computes by walking the whole chain (the summary's
    // own audit record is the last record).
    let (code, out, err) = k.d.cli(&["archive", "verify", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let head = v["journal"]["head"].as_str().unwrap();
    assert!(t.contains(&format!("hash {head}")), "{head}: {t}");
}

/// Peak resident memory of `pid` while `f` runs, in KiB above what it was before (sampled
/// every 2 ms from /proc/PID/status).
fn rss_growth_kib<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let rss = move || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let before = rss();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !d2.load(std::sync::atomic::Ordering::SeqCst) {
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    });
    let out = f();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    (out, peak.saturating_sub(before))
}

#[test]
fn console_export_of_10000_messages_streams_in_bounded_memory() {
    // CONSOLE_EXPORT_N: another number of messages (for profiling).
    let n_messages: usize = std::env::var("CONSOLE_EXPORT_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // No indexer: the export of ids reads the journal only, and the daemon's memory is the
    // export's.
    let (d, mut c, ids) = unindexed(|w| {
        let mut ids = Vec::with_capacity(n_messages);
        // About 20 KB each, 200 MB in all: a text part and a base64 attachment that differs per
        // message (deflate cannot make it vanish).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for batch in 0..n_messages / 500 {
            let mut entries: Vec<Entry> = (0..500)
            .map(|i| {
                let n = batch * 500 + i;
                let mut blob = String::with_capacity(15_000);
                while blob.len() < 14_000 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    blob.push_str(&format!("{seed:016x}"));
                    if blob.len() % 76 < 16 {
                        blob.push_str("\r\n");
                    }
                }
                let body = format!(
                    "From: a@example.net\r\nTo: b@corp.example\r\nSubject: message {n}\r\nMIME-Version: 1.0\r\n\
                     Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n\
                     {}\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"d{n}.bin\"\r\n\r\n{blob}\r\n--B--\r\n",
                    "quarterly figures ".repeat(200)
                );
                let meta = MessageMeta {
                    time: "2026-01-02T10:00:00Z".into(),
                    departments: vec!["sales".into()],
                    ..crate::support::message_meta("a@example.net")
                };
                Entry::new(Kind::Message, &meta, Body::Bytes(body.into_bytes()))
            })
            .collect();
            ids.extend(
                w.append(&mut entries)
                    .unwrap()
                    .0
                    .iter()
                    .map(|id| id.to_string()),
            );
        }
        ids
    });
    let csrf = c.get("/").csrf();
    let started = std::time::Instant::now();
    let (r, growth) = rss_growth_kib(d.pid(), || {
        c.post_json(
            "/api/export",
            &serde_json::json!({ "csrf": csrf, "ids": ids }),
        )
    });
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (manifest, files) = unzip_export(&r.body);
    assert_eq!(files.len(), n_messages);
    assert_eq!(manifest["count"], n_messages);
    let bytes: usize = files.values().map(Vec::len).sum();
    eprintln!(
        "export of {n_messages} messages ({} MB of .eml, {} MB zipped) in {:.1} s: the daemon's RSS rose by {} MiB at most",
        bytes / 1_000_000,
        r.body.len() / 1_000_000,
        took.as_secs_f64(),
        growth / 1024
    );
    // The messages are 200 MB; the export holds one of them, a few chunks, and a line of the
    // manifest per message.
    assert!(
        growth < 64 * 1024,
        "the daemon's RSS rose by {growth} KiB during the export"
    );
}

/// A daemon with the console and without the indexer (`[storage] indexer = false`), its
/// journal written by `seed` (which returns the ids it wrote), and a client logged in as
/// `admin` (all mail).
fn unindexed(seed: impl FnOnce(&mut Writer) -> Vec<String>) -> (Daemon, Client, Vec<String>) {
    let port = free_port();
    let policy = format!(
        "indexer = false\n[console]\nlisten = \"127.0.0.1:{port}\"\nusers = \"console-users.toml\"\n"
    );
    let mut d = Daemon::prepare(&policy, None, None);
    let (mut w, _) = Writer::open(&d.journal_dir(), DEFAULT_SEGMENT_BYTES).unwrap();
    let ids = seed(&mut w);
    drop(w);
    let out = cli_with_stdin(
        &d,
        &[
            "console",
            "user",
            "add",
            "admin",
            "--role",
            "archive_admin",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(out.0, 0, "{out:?}");
    d.spawn(&[]);
    wait_for(Duration::from_secs(10), "the console to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut c = Client::new(port);
    assert_eq!(c.login("admin", PASSWORD).status, StatusCode::SEE_OTHER);
    (d, c, ids)
}

#[test]
fn console_summary_tells_how_far_the_index_is_behind() {
    // Nobody indexes: the index stays empty while the journal holds three messages.
    let (_d, mut c, _) = unindexed(|w| {
        let mut entries: Vec<Entry> = (0..3)
            .map(|i| {
                let meta = crate::support::message_meta("a@example.net");
                let body = format!("Subject: {i}\r\n\r\nbody\r\n").into_bytes();
                Entry::new(Kind::Message, &meta, Body::Bytes(body))
            })
            .collect();
        w.append(&mut entries).unwrap();
        Vec::new()
    });
    let t = c.get("/").text();
    assert!(t.contains("<th>Index</th><td>3 messages behind ("), "{t}");
    assert!(
        t.contains("<th>Newest archived message (indexed)</th><td>none</td>"),
        "{t}"
    );
}

/// A TLS connector that trusts only the certificates in PEM file `ca`.
fn tls_trusting(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
